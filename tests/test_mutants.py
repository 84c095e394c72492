"""The mutant catalog cannot rot silently: every mutant still applies (its search text
occurs exactly once) and names tests that exist. And the tool itself works: a canary
mutant run in a scratch copy is caught, the unmutated copy passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.mutants.catalog import MUTANTS, by_name
from tests.mutants.runner import (
    REPO,
    Mutant,
    MutantError,
    PytestRun,
    judge,
    run_mutant,
    run_tests,
    scratch_copy,
)

pytestmark = pytest.mark.timeout(120)


def test_names_are_unique() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.todo is None], ids=lambda m: m.name)
def test_every_mutant_applies_exactly_once(mutant: Mutant) -> None:
    text = (REPO / mutant.file).read_text()
    assert text.count(mutant.search) == 1, (
        f"{mutant.name}: update its search text in tests/mutants/catalog.py")
    assert mutant.search != mutant.replace


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.todo is None], ids=lambda m: m.name)
def test_every_mutant_names_existing_fast_tests(mutant: Mutant) -> None:
    assert mutant.tests, f"{mutant.name}: no killing test"
    for node in mutant.tests:
        path, _, name = node.partition("::")
        assert (REPO / path).is_file(), node
        assert not path.endswith("test_chaos_short.py"), f"{node}: the chaos run is not fast"
        if name:
            function = re.sub(r"\[.*\]$", "", name)
            assert re.search(rf"^def {re.escape(function)}\(", (REPO / path).read_text(),
                             re.M), node


def test_apply_refuses_a_missing_or_ambiguous_search_text(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("a = 1\na = 1\nb = 2\n")
    Mutant("ok", "r", "f.py", "b = 2\n", "b = 3\n", ("t",)).apply(tmp_path)
    assert (tmp_path / "f.py").read_text().endswith("b = 3\n")
    with pytest.raises(MutantError, match="occurs 0 times"):
        Mutant("gone", "r", "f.py", "c = 1\n", "", ("t",)).apply(tmp_path)
    with pytest.raises(MutantError, match="occurs 2 times"):
        Mutant("twice", "r", "f.py", "a = 1\n", "", ("t",)).apply(tmp_path)
    with pytest.raises(MutantError, match="cannot read"):
        Mutant("nofile", "r", "g.py", "x", "y", ("t",)).apply(tmp_path)


def test_judge() -> None:
    m = by_name("kill_late")
    caught = PytestRun(1, 1.0, "F\nFAILED tests/test_x.py::test_y[a b] - AssertionError: no\n"
                             "1 failed in 1.0s\n")
    r = judge(m, caught)
    assert (r.outcome, r.killed_by, r.detail) == ("caught", "tests/test_x.py::test_y[a b]",
                                                  "AssertionError: no")
    assert judge(m, PytestRun(0, 1.0, "3 passed in 1.0s\n")).outcome == "escaped"
    assert judge(m, PytestRun(4, 1.0, "ERROR: not found\n")).outcome == "error"
    assert judge(m, PytestRun(1, 1.0, "ERROR    some.logger:x.py:1 boom\n")).outcome == "error"
    assert judge(m, PytestRun(None, 1.0, "")).outcome == "caught"


def test_scratch_copy_has_the_sources_and_no_venv(tmp_path: Path) -> None:
    root = scratch_copy(REPO, tmp_path / "copy")
    core = "supervisor/daemon/loop.py"
    assert (root / core).read_text() == (REPO / core).read_text()
    assert (root / "tests" / "mutants" / "catalog.py").is_file()
    assert not (root / ".venv").exists() and not (root / ".git").exists()


def test_a_canary_is_caught_and_the_unmutated_copy_passes(tmp_path: Path) -> None:
    """End to end: the subprocess started by the test imports the mutated copy."""
    canary = by_name("canary_supervisor_via_cli")
    r = run_mutant(canary, timeout=100)
    assert r.outcome == "caught", (r.detail, r.output)
    assert "mutant canary" in r.detail
    clean = run_tests(scratch_copy(REPO, tmp_path / "clean"), canary.tests, 100)
    assert clean.returncode == 0, clean.output
