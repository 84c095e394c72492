"""The `candidate` block: the defaults without it; its two keys; errors that name the
file, line and key; it survives the hand-over to the daemon (JSON) and is dumped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import (
    CandidateConfig,
    Config,
    ConfigError,
    config_from_json,
    config_to_json,
    dump_config,
    load_config,
)

BASE = """
mutualExclusionConfiguration { on = true, machineName = a, updateInterval = 500,
                                waitInterval = 2000 }
database { url = "postgresql://db/corda", user = corda_ha }
node { command = ["/bin/true"] }
"""


def load(tmp_path: Path, extra: str) -> Config:
    path = tmp_path / "s.conf"
    path.write_text(BASE + extra)
    return load_config(str(path), environ={})


def error(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return str(info.value)


def test_defaults_without_the_block(tmp_path: Path) -> None:
    assert load(tmp_path, "").candidate == CandidateConfig(nofailover=False, priority=0)


def test_the_block(tmp_path: Path) -> None:
    config = load(tmp_path, "candidate { nofailover = true, priority = -7 }")
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
    message = error(tmp_path, extra)
    assert key in message and what in message and "s.conf" in message, message
