"""The `candidate` block: the defaults without it; its two keys; errors that name the
file, line and key; it survives the hand-over to the daemon (JSON) and is dumped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import (
    CandidateConfig,
    config_from_json,
    config_to_json,
    dump_config,
)
from tests.harness.config import error_with, load_with


def test_defaults_without_the_block(tmp_path: Path) -> None:
    assert load_with(tmp_path, "").candidate == CandidateConfig(nofailover=False, priority=0)


def test_the_block(tmp_path: Path) -> None:
    config = load_with(tmp_path, "candidate { nofailover = true, priority = -7 }")
    assert config.candidate == CandidateConfig(nofailover=True, priority=-7)
    assert config_from_json(config_to_json(config)).candidate == config.candidate
    assert json.loads(dump_config(config))["candidate"] == {"nofailover": True,
                                                           "priority": -7}


@pytest.mark.parametrize(("extra", "key", "what"), [
    ("candidate { priority = 1.5 }", "candidate.priority", "expected an integer"),
    ("candidate { priority = 5000 }", "candidate.priority", "from -1000 to 1000"),
    ("candidate { nofailover = maybe }", "candidate.nofailover", "expected a boolean"),
    ("candidate { prio = 1 }", "candidate.prio", "did you mean 'priority'"),
])
def test_errors_name_the_file_line_and_key(tmp_path: Path, extra: str, key: str,
                                           what: str) -> None:
    message = error_with(tmp_path, extra)
    assert key in message and what in message and "s.conf" in message, message
