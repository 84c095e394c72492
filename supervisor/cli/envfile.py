"""The unit's environment file, for the operator's commands.

Under systemd the database password usually reaches the configuration through the
environment (`password = ${?CORDA_HA_DB_PASSWORD}`), from the root-only file the unit
names (`EnvironmentFile=-/etc/corda-ha-supervisor/env`). An operator's `status` or
`handover` on that host needs the same value, so the commands read that file too
(`--env-file` names another; `--env-file ''` none) before they load the
configuration, and say which variables they took from it (never their values). A
variable already set in the environment wins.

The syntax is the subset of systemd's `EnvironmentFile=` the shipped file uses:
`NAME=value` lines, `#` and `;` comments, blank lines, a value in single or double
quotes (double quotes take backslash escapes). Anything else is an error naming the
file and line (exit 78).
"""

from __future__ import annotations

import os
import re

from supervisor.config import ConfigError

#: The file the shipped unit reads (systemd/corda-ha-supervisor.service).
UNIT_ENV_FILE = "/etc/corda-ha-supervisor/env"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(text: str, path: str) -> dict[str, str]:
    """The variables of an environment file; `ConfigError` (file, line) when malformed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ConfigError("not a NAME=value line (systemd EnvironmentFile syntax)",
                              path=path, line=number)
        values[name] = _unquote(value.strip(), path, number)
    return values


def _unquote(value: str, path: str, line: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if value[:1] in ("'", '"'):
        raise ConfigError("unterminated quote", path=path, line=line)
    return value


def load(path: str | None, *, explicit: bool) -> tuple[list[str], str | None]:
    """Put the file's variables that are not set yet into `os.environ`: (their names,
    a note for the operator or None). A missing or unreadable default file is only a
    note; one named with `--env-file` must be readable (`ConfigError`)."""
    if not path:
        return [], None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError("--env-file: no such file", path=path) from None
        return [], None
    except OSError as e:
        if explicit:
            raise ConfigError(f"--env-file: cannot read it ({e.strerror})", path=path) from None
        return [], (f"the unit's environment file {path} is not readable by this user "
                    f"({e.strerror}): run the command as root (sudo), or export the "
                    "variables the configuration reads (e.g. CORDA_HA_DB_PASSWORD)")
    taken = []
    for name, value in parse(text, path).items():
        if name not in os.environ:
            os.environ[name] = value
            taken.append(name)
    note = (f"read {', '.join(taken)} from {path}" if taken else None)
    return taken, note
