"""Logging: structlog in front, one stdlib handler behind.

Contract:
- `configure_logging()` installs a single handler on the root logger that
  renders every record, from structlog or from plain `logging` (psycopg logs
  through the stdlib logger "psycopg"), with the same processors: JSON lines
  (`event`, `level`, `timestamp` ISO 8601 UTC, `logger`, plus the event's
  fields) or the console renderer.
- Every rendered record passes through `redact()`: the value of any field named
  like password/passwd/pwd/secret becomes "***", and in every string
  (including the event text and formatted tracebacks) `password=...` and the
  password in `scheme://user:password@` are replaced by "***".
- Levels: the root logger gets `level`. psycopg sets its own logger to
  WARNING on import unless already set; that is kept (its DEBUG output is
  per-packet), so psycopg warnings and errors appear, its chatter does not.
- Calling it again replaces the handler (idempotent); loggers obtained before
  keep working. Output is serialised by the handler's lock (thread-safe).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

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

_HANDLER_MARK = "_corda_ha_supervisor_handler"
_configure_lock = threading.Lock()


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


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _shared_processors() -> list[Processor]:
    """Run for both structlog events and foreign stdlib records."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (default: sys.stdout).

    `fmt`: "json", "console" or "auto" (console on a terminal, else JSON).
    `level`: a stdlib level name (DEBUG, INFO, WARNING, ERROR); records below it
    are dropped, from either source. Raises ValueError for an unknown fmt/level.
    """
    out = sys.stdout if stream is None else stream
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    console = fmt == "console" or (fmt == "auto" and _is_tty(out))

    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    else:
        renderer = structlog.processors.JSONRenderer()

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    with _configure_lock:
        # Add the new handler before removing the old one: a record emitted
        # meanwhile may be written twice, but is never lost.
        root.addHandler(handler)
        for old in list(root.handlers):
            if old is not handler and getattr(old, _HANDLER_MARK, False):
                root.removeHandler(old)
                old.close()
        root.setLevel(numeric)
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                *_shared_processors(),
                structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            context_class=dict,
            # Not cached: a logger first used before configure_logging() must
            # still pick up this configuration.
            cache_logger_on_first_use=False,
        )


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger named `name` (the stdlib logger name), with `initial` fields bound."""
    if name:
        return structlog.stdlib.get_logger(name, **initial)
    return structlog.stdlib.get_logger(**initial)


__all__ = ["REDACTED", "configure_logging", "get_logger", "redact", "redact_text"]
