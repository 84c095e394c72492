"""The documentation keeps up with the code.

- Every log event the supervisor emits has a row in the event table of
  docs/operations.md, and the table names no event the code does not emit; the
  changelog of renamed events names old events the code no longer emits and new ones
  it does.
- README.md is a front door: at most `README_MAX_LINES` lines, the test command line
  exactly as CI greps for it, a link to every document.
- Every path under supervisor/, tests/ or benchmarks/ that a document cites exists, so
  does every module it runs with `python -m`, and every relative link. The transition
  table of docs/design.md is the code's (supervisor/core/transitions.py).
- No "issue" followed by a number in supervisor/, tests/ or the documents (state the
  rule instead), no commit hashes in the documents, and the code cites the design as
  docs/design.md.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DESIGN = REPO / "docs/design.md"
README_MAX_LINES = 260
#: CI (`.ci/run`) greps README.md for this exact line.
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest"

# structlog calls (`log.info("event", ...)`, `log.log(level, "event", ...)`, any logger
# named *log), the core's
# `self.log("event")` and `Log("event")`, and an event dict written by hand (logs.py).
_CALL = re.compile(r'''(?:\b\w*log\.(?:debug|info|warning|error|exception|critical)\('''
                   r'''|\b\w*log\.log\([^,()]+(?:\([^()]*\))?[^,()]*,|\bself\.log\(|\bLog\()'''
                   r'''\s*"([a-z][a-z0-9_]*)"''')
_DICT = re.compile(r'''"event":\s*"([a-z][a-z0-9_]*)"''')
# a path in a document: supervisor/..., tests/..., benchmarks/... (not part of a longer
# path or URL); a pytest node id's `::test` part is not part of the path
_PATH = re.compile(r"(?<![\w./-])((?:supervisor|tests|benchmarks)/[\w./*-]*)")
_MODULE = re.compile(r"python -m ((?:supervisor|tests|benchmarks)(?:\.\w+)*)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_ISSUE = re.compile(r"\bissues?\s*(?:#|no\.?\s*)?\d", re.IGNORECASE)
_HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def documents() -> list[Path]:
    """README.md, docs/*.md and benchmarks/*.md."""
    return [README, *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "benchmarks").glob("*.md"))]


def emitted_events() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / "supervisor").rglob("*.py"):
        if path.name == "guard.py":  # its "event" lines are the status-pipe protocol
            continue
        text = path.read_text()
        for pattern in (_CALL, _DICT) if path.name == "logs.py" else (_CALL,):
            for m in pattern.finditer(text):
                found.setdefault(m.group(1), set()).add(path.name)
    return found


def section(path: Path, heading: str) -> str:
    """The text under `heading` (a line of its own) up to the next heading of its level
    or higher."""
    text = path.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + 1
    ends = [m.start() for m in re.finditer(r"\n(#+) ", text[start + 1:])
            if len(m.group(1)) <= len(level)]
    return text[start:start + 1 + ends[0]] if ends else text[start:]


def table_events(text: str) -> set[str]:
    """The event names in the first column of a markdown table (field lists dropped)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = re.sub(r"\([^)]*\)", "", line.split("|")[1])
            names |= set(re.findall(r"`([a-z][a-z0-9_]*)`", first))
    return names


def documented_events() -> set[str]:
    """The event table: "## Log events" up to its first subsection (the changelog)."""
    text = section(REPO / "docs" / "operations.md", "## Log events")
    return table_events(text.split("\n#", 1)[0])


def renamed_events() -> list[tuple[str, str]]:
    """(before, now) from the changelog of renamed log events."""
    text = section(REPO / "docs" / "operations.md", "### Changelog of renamed log events")
    return re.findall(r"^\| `([a-z_]+)` \| `([a-z_]+)` \|$", text, re.M)


def cited_paths(text: str) -> set[str]:
    found = set()
    for m in _PATH.finditer(text):
        path = m.group(1).rstrip(".,;:")
        if "*" not in path:
            found.add(path)
    return found


def test_every_emitted_event_is_in_the_event_table() -> None:
    emitted = emitted_events()
    assert len(emitted) > 40  # the scan works
    missing = {e: sorted(f) for e, f in emitted.items() if e not in documented_events()}
    assert not missing, f"events without a row in docs/operations.md: {missing}"


def test_the_event_table_names_no_event_that_is_never_emitted() -> None:
    extra = documented_events() - set(emitted_events())
    assert not extra, f"docs/operations.md rows for events the code does not emit: {sorted(extra)}"


def test_the_changelog_of_renamed_events_matches_the_code() -> None:
    renamed = renamed_events()
    assert len(renamed) >= 6  # the table is read
    emitted = set(emitted_events())
    wrong = [(old, new) for old, new in renamed if old in emitted or new not in emitted]
    assert not wrong, f"renamed events: old still emitted or new not emitted: {wrong}"


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the "
        "reference into docs/")
    assert TEST_COMMAND in lines, f"README.md no longer shows the line: {TEST_COMMAND}"
    text = "\n".join(lines)
    required = [*sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "figures.md"]
    unlinked = [p.relative_to(REPO).as_posix() for p in required
                if f"]({p.relative_to(REPO).as_posix()})" not in text]
    assert not unlinked, f"README.md links none of: {unlinked}"


def test_every_path_a_document_cites_exists() -> None:
    missing = []
    for doc in documents():
        text = doc.read_text()
        for path in sorted(cited_paths(text)):
            if not (REPO / path).exists():
                missing.append(f"{doc.relative_to(REPO)}: {path}")
        for module in sorted(set(_MODULE.findall(text))):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{doc.relative_to(REPO)}: python -m {module}")
        for target in sorted(set(_LINK.findall(text))):
            if "://" not in target and not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(REPO)}: link {target}")
    assert not missing, "documents cite what does not exist:\n" + "\n".join(missing)


def test_no_issue_numbers_and_no_commit_hashes() -> None:
    sources = [p for d in ("supervisor", "tests") for p in (REPO / d).rglob("*")
               if p.is_file() and p.suffix in (".py", ".java", ".md", ".txt", ".cfg")]
    found = []
    for path in [*sources, *documents()]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _ISSUE.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    for doc in documents():
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if _HASH.search(line):
                found.append(f"{doc.relative_to(REPO)}:{n}: a commit hash? {line.strip()}")
    assert not found, "state the rule, not an issue number or a commit:\n" + "\n".join(found)


def test_code_cites_the_design_by_its_path() -> None:
    bare = re.compile(r"(?<![\w/])design\.md")
    found = [f"{p.relative_to(REPO)}:{n}" for d in ("supervisor", "tests")
             for p in (REPO / d).rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, f"cite the design by its path, docs/design.md: {found}"


def design_transitions() -> dict[str, set[str]]:
    """The from/to pairs of the transition table in docs/design.md, "States"."""
    table: dict[str, set[str]] = {}
    current: str | None = None
    for line in section(DESIGN, "## States").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.startswith("|"):
            continue
        if re.fullmatch(r"`[a-z]+`", cells[0]):
            current = cells[0].strip("`")
            table.setdefault(current, set())
        if current is not None and re.fullmatch(r"`[a-z]+`", cells[1]):
            table[current].add(cells[1].strip("`"))
    return table


def test_the_transition_table_of_the_design_is_the_codes() -> None:
    from supervisor.core.transitions import ALLOWED

    code = {str(s): {str(t) for t in to} for s, to in ALLOWED.items()}
    assert design_transitions() == code, "docs/design.md, States: copy the table of " \
        "supervisor/core/transitions.py"


def test_the_checks_catch_what_they_are_for() -> None:
    """The patterns themselves, on text made to break each rule."""
    issue = "issue"  # spelled apart, so that this file passes its own scan
    assert _ISSUE.search(f"Start-up errors ({issue} 7 item 5)")
    assert _ISSUE.search(f"Chaos suite ({issue}s 3, 6)")
    assert _ISSUE.search(f"{issue.title()} #6, item 5")
    assert not _ISSUE.search("an issue the operator can fix in 5 s")
    assert _HASH.search("fresh-clone run on bd9071d: 936 passed")
    assert not _HASH.search("seed 1745657320, epoch 12, deadbeef-free")
    assert cited_paths("see `supervisor/core.py`, and tests/x.py::test_y.") == {
        "supervisor/core.py", "tests/x.py"}
    assert not cited_paths("https://example.com/supervisor/x.py, my_tests/y.py")
    events = table_events("| `a_b` (`field`) / `c` | x `d` |\n| `e` | |")
    assert events == {"a_b", "c", "e"}
