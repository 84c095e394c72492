"""The README keeps up with the code: every log event the supervisor emits has a row in
the troubleshooting table, and the table names no event the code does not emit."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# structlog calls (`log.info("event", ...)`, any logger named *log), the core's
# `self.log("event")` and `Log("event")`, and an event dict written by hand (logs.py).
_CALL = re.compile(r'''(?:\b\w*log\.(?:debug|info|warning|error|exception|critical)'''
                   r'''|\bself\.log|\bLog)\(\s*"([a-z][a-z0-9_]*)"''')
_DICT = re.compile(r'''"event":\s*"([a-z][a-z0-9_]*)"''')


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


def documented_events() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Troubleshooting by log event"):]
    section = section[:section.index("\n## ")]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = re.sub(r"\([^)]*\)", "", line.split("|")[1])  # drop the field lists
            names |= set(re.findall(r"`([a-z][a-z0-9_]*)`", first))
    return names


def test_every_emitted_event_is_in_the_troubleshooting_table() -> None:
    emitted = emitted_events()
    assert len(emitted) > 40  # the scan works
    missing = {e: sorted(f) for e, f in emitted.items() if e not in documented_events()}
    assert not missing, f"events without a README row: {missing}"


def test_the_table_names_no_event_that_is_never_emitted() -> None:
    extra = documented_events() - set(emitted_events())
    assert not extra, f"README rows for events the code does not emit: {sorted(extra)}"
