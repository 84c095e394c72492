"""The fields of every log record (see `supervisor.observe.logs`, which runs these
structlog processors on every record, from structlog or plain `logging`).

Owns `redact` (the value of any field named like password/passwd/pwd/secret becomes
"***"; in every string `password=...` and the password in `scheme://user:password@`
are replaced by "***", see `redact_text`) and `milliseconds` (float fields rounded to
the millisecond).

May import: the stdlib and structlog.
"""

from __future__ import annotations

import re
from typing import Any

from structlog.typing import EventDict, WrappedLogger

REDACTED = "***"

_SECRET_KEY = re.compile(r"passw(?:or)?d|secret|(?:^|_)pwd$", re.IGNORECASE)
# password=value in conninfo / JDBC query strings / env dumps; value may be quoted.
_KV_SECRET = re.compile(
    r"""(?P<key>pass(?:word|wd)|secret|\bpwd)(?P<sep>\s*=\s*)"""
    r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'"]+)""",
    re.IGNORECASE,
)
# scheme://user:password@host
_URI_SECRET = re.compile(r"(?P<pre>://[^:/?#@\s]*):(?P<pw>[^@\s]*)@")


def redact_text(text: str) -> str:
    """Replace passwords inside conninfo strings and URIs with "***"."""
    if "=" in text:
        text = _KV_SECRET.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", text)
    if "://" in text:
        text = _URI_SECRET.sub(lambda m: f"{m['pre']}:{REDACTED}@", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v is not None
                    else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: hide secrets in field names and string values."""
    for key in list(event_dict):
        if key.startswith("_"):
            continue  # structlog internals (_record, _from_structlog)
        value = event_dict[key]
        if _SECRET_KEY.search(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


def _milliseconds(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _milliseconds(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_milliseconds(v) for v in value)
    return value


def milliseconds(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: every float field (durations, ages, deadlines in seconds)
    rounded to the millisecond, so no record shows `1.7000000000000002`."""
    for key, value in event_dict.items():
        if not key.startswith("_"):
            event_dict[key] = _milliseconds(value)
    return event_dict
