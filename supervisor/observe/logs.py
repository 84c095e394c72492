"""Logging: structlog in front, one non-blocking queue handler behind.

Contract:
- `configure_logging()` installs a single handler on the root logger that
  renders every record, from structlog or from plain `logging` (psycopg logs
  through the stdlib logger "psycopg"), with the same processors: JSON lines
  (`event`, `level`, `timestamp` ISO 8601 UTC, `logger`, plus the event's
  fields) or the console renderer.
- Every rendered record passes through `redact()` (`supervisor.observe.logfields`):
  the value of any field named like password/passwd/pwd/secret becomes "***", and in every string
  (including the event text and formatted tracebacks) `password=...` and the
  password in `scheme://user:password@` are replaced by "***".
- Levels: the root logger gets `level`. psycopg sets its own logger to
  WARNING on import unless already set; that is kept (its DEBUG output is
  per-packet), so psycopg warnings and errors appear, its chatter does not.
- Calling it again replaces the handler (idempotent); loggers obtained before
  keep working. The old handler writes what it had queued, within about a second.
- Nothing blocks the caller (docs/design.md: a stalled journald must not stop
  renewals). A record is rendered in the calling thread (CPU only) and put in
  a bounded queue (at most `queue_records` records and `queue_bytes`
  characters); one daemon writer thread writes the queue to the stream, in
  order, whole lines only. When the queue is full the record is dropped and
  counted (`dropped_log_records()`); once the writer has caught up it writes
  one `log_records_dropped` warning (`count`, `since`), whatever the level.
  Output therefore appears shortly after the call, not during it: call
  `flush_logs(timeout)` to wait for it (bounded; the CLI does before exiting,
  and `logging.shutdown()` at exit waits at most `EXIT_FLUSH_TIMEOUT`).
- Under journald (stdout is the stream named by `$JOURNAL_STREAM`), each line
  starts with its syslog priority, `<3>` for errors, `<4>` for warnings, `<6>`
  info, `<7>` debug (systemd's `SyslogLevelPrefix=`, on by default), so that
  `journalctl -p err` shows the supervisor's errors. Elsewhere lines are plain.
- A stream with a file descriptor (stdout) is written with `os.write` on that
  descriptor, so a writer blocked on a full pipe holds no Python-level lock
  (not the lock of `sys.stdout`'s buffer). Errors while rendering or writing
  never reach stderr (it may be the same stalled sink): the records count as
  dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from supervisor.observe.logfields import REDACTED, milliseconds, redact, redact_text

QUEUE_RECORDS = 10_000  # default bound of the log queue, in records ...
QUEUE_BYTES = 4 * 1024 * 1024  # ... and in characters of rendered text
EXIT_FLUSH_TIMEOUT = 2.0  # longest `flush_logs()` wait of the CLI at exit
_CLOSE_WAIT = 1.0  # longest wait of a replaced or closed handler for its writer
_BATCH = 256  # records per write

_HANDLER_MARK = "_corda_ha_supervisor_handler"
_configure_lock = threading.Lock()


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


class _Drops:
    """Process-wide count of dropped records (for the metric); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    def add(self, n: int) -> None:
        with self._lock:
            self._total += n

    @property
    def total(self) -> int:
        return self._total


_DROPS = _Drops()


class _Flush:
    """Queue marker: set once everything queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class _Sink:
    """Writes whole text batches to a stream; by `os.write` when it has a descriptor."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.fd: int | None = None
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):
            fd = None
        if fd is not None and fd >= 0:
            self.fd = fd

    def prepare(self) -> None:
        """Push out what the stream buffered before we bypass it (may block: writer only)."""
        if self.fd is not None:
            with contextlib.suppress(Exception):
                self.stream.flush()

    def write(self, text: str) -> None:
        if self.fd is None:
            self.stream.write(text)
            self.stream.flush()
            return
        data = memoryview(text.encode(self.encoding, "backslashreplace"))
        while data:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:  # someone made the descriptor non-blocking
                select.select([], [self.fd], [], 1.0)
                continue
            data = data[n:]


class QueueHandler(logging.Handler):
    """The root handler: render, enqueue without waiting, write in a daemon thread.

    `emit()` never waits on the stream: it renders the record, then either
    queues it or drops and counts it (queue full, or the handler closed).
    """

    def __init__(self, stream: TextIO, *, queue_records: int = QUEUE_RECORDS,
                 queue_bytes: int = QUEUE_BYTES, syslog_prefix: bool = False) -> None:
        super().__init__()
        self._sink = _Sink(stream)
        self._prefix = syslog_prefix
        self._max_records = max(1, queue_records)
        self._max_bytes = max(1, queue_bytes)
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the counters below; never held across I/O
        self._records = 0  # queued or being written
        self._bytes = 0
        self._dropped = 0  # by this handler, in total
        self._unreported = 0  # dropped since the last report
        self._since: datetime | None = None  # first unreported drop
        self._ahead = 0  # records queued before the first unreported drop, not yet written
        self._closed = False
        self._stuck = False  # a flush timed out and nothing was written since
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()

    # -- the caller's side ---------------------------------------------

    @property
    def dropped(self) -> int:
        """Records this handler dropped (queue full, closed, or a failed render or write)."""
        return self._dropped

    def _drop(self, n: int = 1) -> None:
        with self._lock:
            self._dropped += n
            if not self._unreported:
                self._ahead = self._records  # the report must follow these
            self._unreported += n
            if self._since is None:
                self._since = datetime.now(UTC)
        _DROPS.add(n)

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed or self._records >= self._max_records:
            self._drop()  # cheap: a full queue costs no rendering
            return
        try:
            text = self._line(record.levelno, self.format(record))
        except Exception:
            self._drop()
            return
        with self._lock:
            admit = (not self._closed and self._records < self._max_records
                     and self._bytes + len(text) <= self._max_bytes)
            if admit:
                self._records += 1
                self._bytes += len(text)
                self._items.put(text)  # SimpleQueue.put never blocks
        if not admit:
            self._drop()

    def _line(self, levelno: int, text: str) -> str:
        return f"<{syslog_priority(levelno)}>{text}\n" if self._prefix else text + "\n"

    def handleError(self, record: logging.LogRecord) -> None:
        self._drop()  # never print to stderr: it may be the same stalled sink

    def flush_within(self, timeout: float) -> bool:
        """Wait until every record queued before the call is written, at most
        `timeout` seconds. True when it was; False on timeout (the sink stalls)."""
        if not self._writer.is_alive():
            return self._records == 0
        if self._stuck:
            timeout = min(timeout, 0.05)  # it stalled already: don't wait again
        marker = _Flush()
        self._items.put(marker)
        done = marker.done.wait(max(0.0, timeout))
        if not done:
            self._stuck = True
        return done

    def flush(self) -> None:
        """Bounded (`EXIT_FLUSH_TIMEOUT`): `logging.shutdown()` calls it at exit."""
        self.flush_within(EXIT_FLUSH_TIMEOUT)

    def close(self) -> None:
        """Stop accepting records; the writer writes what is queued and ends.
        Waits for it at most about a second. Idempotent."""
        if not self._closed:
            self._closed = True
            self._items.put(_STOP)
            if self._writer is not threading.current_thread():
                self._writer.join(0.05 if self._stuck else _CLOSE_WAIT)
        super().close()

    # -- the writer thread ---------------------------------------------

    def _run(self) -> None:
        self._sink.prepare()
        while True:
            batch = [self._items.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._items.get_nowait())
                except queue.Empty:
                    break
            texts: list[str] = []
            for item in batch:
                if isinstance(item, str):
                    texts.append(item)
                    continue
                self._write(texts)
                texts = []
                self._report()
                if item is _STOP:
                    return
                if isinstance(item, _Flush):
                    item.done.set()
            self._write(texts)
            # Report once caught up or, under a load that never lets us catch up,
            # once every record queued before the first drop is out: the report
            # always follows the records that were admitted before it.
            if self._unreported and (self._items.empty() or self._ahead == 0):
                self._report()

    def _write(self, texts: list[str]) -> None:
        """Write `texts` as one batch; a failed write drops (and counts) them all."""
        if not texts:
            return
        size = sum(len(t) for t in texts)
        try:
            self._sink.write("".join(texts))
            ok = True
        except Exception:
            ok = False
        with self._lock:
            self._records -= len(texts)
            self._bytes -= size
            self._ahead = max(0, self._ahead - len(texts))
        if not ok:
            self._drop(len(texts))
            return
        self._stuck = False

    def _report(self) -> None:
        """Write one `log_records_dropped` warning if records were dropped since the last."""
        with self._lock:
            count, since = self._unreported, self._since
            self._unreported, self._since = 0, None
        if not count or since is None:
            return
        event = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "warning", {
            "event": "log_records_dropped", "count": count,
            "since": since.isoformat().replace("+00:00", "Z"),
            "level": "warning", "logger": __name__,
        })
        record = logging.makeLogRecord({
            "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
            "msg": event, "_logger": logging.getLogger(__name__), "_name": "warning"})
        try:
            self._sink.write(self._line(logging.WARNING, self.format(record)))
        except Exception:
            with self._lock:  # try again with the next report; not counted twice
                self._unreported += count
                self._since = since if self._since is None else min(since, self._since)


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a stdlib level (debug 7, info 6, warning 4, error 3, ...)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


def is_journal_stream(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journald stream systemd named in `$JOURNAL_STREAM`
    (`<st_dev>:<st_ino>` of the connected socket)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _formatter(console: bool, out: TextIO) -> structlog.stdlib.ProcessorFormatter:
    """Every record's processors, `redact` and `milliseconds` last before the renderer:
    the console renderer (colours on a terminal) or JSON lines."""
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    else:
        renderer = structlog.processors.JSONRenderer()

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            redact,
            milliseconds,
            renderer,
        ],
    )


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None, *,
                      queue_records: int = QUEUE_RECORDS,
                      queue_bytes: int = QUEUE_BYTES,
                      syslog_prefix: bool | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (default: sys.stdout).

    `fmt`: "json", "console" or "auto" (console on a terminal, else JSON).
    `level`: a stdlib level name (DEBUG, INFO, WARNING, ERROR); records below it
    are dropped, from either source. `queue_records` / `queue_bytes`: bounds of
    the queue in front of the stream. `syslog_prefix`: start each line with its
    syslog priority (None: when `stream` is journald's, see `is_journal_stream`).
    Raises ValueError for an unknown fmt/level.
    """
    out = sys.stdout if stream is None else stream
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    console = fmt == "console" or (fmt == "auto" and _is_tty(out))
    formatter = _formatter(console, out)
    if syslog_prefix is None:
        syslog_prefix = is_journal_stream(out)
    handler = QueueHandler(out, queue_records=queue_records, queue_bytes=queue_bytes,
                           syslog_prefix=syslog_prefix)
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


def _current() -> QueueHandler | None:
    for h in logging.getLogger().handlers:
        if isinstance(h, QueueHandler) and getattr(h, _HANDLER_MARK, False):
            return h
    return None


def flush_logs(timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
    """Wait until every record logged before the call is written, at most
    `timeout` seconds. True when written (or nothing is configured); False
    when the sink stalled. Never raises."""
    handler = _current()
    return True if handler is None else handler.flush_within(timeout)


def dropped_log_records() -> int:
    """Records dropped by any handler of this process since it started (a counter)."""
    return _DROPS.total


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger named `name` (the stdlib logger name), with `initial` fields bound."""
    if name:
        return structlog.stdlib.get_logger(name, **initial)
    return structlog.stdlib.get_logger(**initial)


__all__ = ["EXIT_FLUSH_TIMEOUT", "REDACTED", "QueueHandler", "configure_logging",
           "dropped_log_records", "flush_logs", "get_logger", "redact", "redact_text"]
