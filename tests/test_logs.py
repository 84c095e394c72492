"""configure_logging: JSON lines, console, stdlib records through the same pipeline, redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from supervisor.observe.logs import (
    QueueHandler,
    configure_logging,
    dropped_log_records,
    flush_logs,
    get_logger,
    redact_text,
)

REPO = str(Path(__file__).resolve().parent.parent)

pytestmark = pytest.mark.timeout(10)

SECRET = "hunter2-Xy9"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def text(stream: io.StringIO) -> str:
    """What the stream holds once the log writer has caught up."""
    assert flush_logs(5.0)
    return stream.getvalue()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in text(stream).splitlines()]


def test_json_lines_with_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    get_logger("supervisor.core").info("lease_acquired", epoch=5, machine_name="hostA")
    [rec] = lines(out)
    assert rec["event"] == "lease_acquired"
    assert rec["level"] == "info"
    assert rec["logger"] == "supervisor.core"
    assert rec["epoch"] == 5
    assert rec["machine_name"] == "hostA"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", str(rec["timestamp"]))


def test_durations_are_rounded_to_the_millisecond() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    get_logger("supervisor.core").info("stop_graces", loss_grace=0.1 + 1.6, wait=2,
                                       gaps=[0.30000000000000004], nested={"age": 1 / 3})
    [rec] = lines(out)
    assert (rec["loss_grace"], rec["wait"], rec["gaps"], rec["nested"]) == (
        1.7, 2, [0.3], {"age": 0.333})


def test_bound_fields_and_default_name() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    get_logger(machine_name="hostA").bind(epoch=3).warning("lease_lost", reason="renew=0 rows")
    [rec] = lines(out)
    assert rec["logger"] == __name__
    assert (rec["machine_name"], rec["epoch"], rec["level"]) == ("hostA", 3, "warning")


def test_auto_is_json_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging("auto", "INFO", out)
    get_logger("x").info("hello", a=1)
    assert lines(out)[0]["a"] == 1


def test_console_on_a_tty_and_when_asked() -> None:
    for fmt, stream in (("auto", TTY()), ("console", io.StringIO())):
        configure_logging(fmt, "INFO", stream)
        get_logger("x").info("node_started", pid=1234)
        out = text(stream)
        assert "node_started" in out and "pid" in out and "1234" in out
        with pytest.raises(json.JSONDecodeError):
            json.loads(out.splitlines()[0])


def test_stdlib_psycopg_record_as_json() -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", out)
    logging.getLogger("psycopg.pool").warning("connection %s lost: %s", "c1", "EOF")
    [rec] = lines(out)
    assert rec["event"] == "connection c1 lost: EOF"
    assert rec["level"] == "warning"
    assert rec["logger"] == "psycopg.pool"
    assert "timestamp" in rec


def test_stdlib_exception_is_rendered() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("psycopg").exception("failed")
        get_logger("s").exception("failed_too")
    first, second = lines(out)
    assert "RuntimeError: boom" in str(first["exception"])
    assert "RuntimeError: boom" in str(second["exception"])


def test_level_filtering_for_both_sources() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", out)
    log = get_logger("s")
    log.debug("d")
    log.info("i")
    log.warning("w")
    logging.getLogger("thirdparty").info("ti")
    logging.getLogger("psycopg").error("pe")
    assert [r["event"] for r in lines(out)] == ["w", "pe"]
    configure_logging("json", "DEBUG", out)
    log.debug("d2")
    logging.getLogger("thirdparty").debug("td")
    assert [r["event"] for r in lines(out)][-2:] == ["d2", "td"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_password_redacted_everywhere(fmt: str) -> None:
    out = io.StringIO()
    configure_logging(fmt, "DEBUG", out)
    log = get_logger("s")
    log.info("config", password=SECRET, db_password=SECRET, client_secret=SECRET, passwd=SECRET)
    log.info("connecting", conninfo=f"host=db port=5432 user=corda password={SECRET} dbname=x")
    log.info("connecting", conninfo=f"host=db password='{SECRET} with space' dbname=x")
    log.info("connecting", url=f"postgresql://corda:{SECRET}@db:5432/corda?sslmode=require")
    log.info("connecting", url=f"jdbc:postgresql://db/corda?user=corda&password={SECRET}&ssl=1")
    log.info(f"event text with password={SECRET}")
    log.info("nested", settings={"database": {"password": SECRET, "url": f"x://u:{SECRET}@h"}},
             argv=["--dsn", f"password={SECRET}"])
    logging.getLogger("psycopg").warning("connect to %s failed", f"postgres://u:{SECRET}@h/db")
    logging.getLogger("psycopg").warning("conninfo: host=h password=%s", SECRET)
    try:
        raise ValueError(f"bad dsn password={SECRET}")
    except ValueError:
        log.exception("failed")
    rendered = text(out)
    assert SECRET not in rendered
    assert "hunter2" not in rendered
    assert rendered.count("***") >= 12
    if fmt == "json":
        recs = lines(out)
        assert recs[0]["password"] == "***"
        assert recs[1]["conninfo"] == "host=db port=5432 user=corda password=*** dbname=x"
        assert recs[3]["url"] == "postgresql://corda:***@db:5432/corda?sslmode=require"
        assert recs[4]["url"] == "jdbc:postgresql://db/corda?user=corda&password=***&ssl=1"


def test_redact_text_leaves_harmless_strings_alone() -> None:
    for s in ["postgresql://db:5432/corda", "host=db user=corda", "epoch=5 state=active",
              "https://example.com/a@b"]:
        assert redact_text(s) == s


def test_idempotent_reconfiguration() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("s")  # obtained before any configuration
    configure_logging("json", "INFO", first)
    configure_logging("json", "INFO", second)
    log.info("once")
    logging.getLogger("psycopg").warning("stdlib_once")
    assert [r["event"] for r in lines(second)] == ["once", "stdlib_once"]
    assert first.getvalue() == ""
    assert [r["event"] for r in lines(second)] == ["once", "stdlib_once"]
    ours = [h for h in logging.getLogger().handlers
            if getattr(h, "_corda_ha_supervisor_handler", False)]
    assert len(ours) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        configure_logging("xml", "INFO", io.StringIO())
    with pytest.raises(ValueError):
        configure_logging("json", "LOUD", io.StringIO())


def test_threads_never_interleave_lines() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    n_threads, per_thread = 8, 200

    def work(i: int) -> None:
        log = get_logger("t").bind(thread=i)
        for j in range(per_thread):
            if j % 2:
                log.info("tick", j=j, payload="x" * 100)
            else:
                # not "psycopg": importing psycopg sets that logger to WARNING
                logging.getLogger("thirdparty").info("stdlib tick %d %d", i, j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = lines(out)  # every line parses
    assert len(recs) == n_threads * per_thread


# --------------------------------------------------------------------------- a stalled sink
# docs/design.md: nothing on the loop may block; log output goes through a queue to a
# writer thread, so a stalled journald (a full stdout pipe) cannot stop renewals.


class BlockingStream(io.StringIO):
    """A sink whose write() blocks until `release` is set (a stalled journald)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()  # a write is in progress (and blocked)
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        self.release.wait(30)
        return super().write(s)


def ours() -> QueueHandler:
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, QueueHandler)]
    return handler


def call_bounded(fn: object, limit: float) -> float:
    """Run `fn` in a thread; fail (instead of hanging) if it takes longer than `limit`."""
    assert callable(fn)
    took: list[float] = []

    def timed() -> None:
        start = time.monotonic()
        fn()
        took.append(time.monotonic() - start)

    t = threading.Thread(target=timed, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"logging blocked for more than {limit}s on a stalled sink"
    return took[0]


def test_logging_never_waits_for_a_stalled_sink_and_reports_drops() -> None:
    out = BlockingStream()
    configure_logging("json", "DEBUG", out, queue_records=50)
    log = get_logger("s")
    dropped_before = dropped_log_records()
    log.info("rec", n=0)
    assert out.entered.wait(5)  # the writer took record 0 and is stuck writing it

    def flood() -> None:
        for n in range(1, 300):
            log.debug("rec", n=n, payload="x" * 100)
            if n % 7 == 0:
                logging.getLogger("thirdparty").info("stdlib rec %d", n)

    took = call_bounded(flood, 10.0)
    # 299 + 42 records while stalled: 49 fit beside record 0 in the queue, the rest drop.
    assert ours().dropped == 299 + 42 - 49
    assert dropped_log_records() - dropped_before == 299 + 42 - 49
    assert out.getvalue() == ""  # still stalled: nothing was written (no flush here: a
    # flush marker would also make the writer report; this test wants the catch-up)

    out.release.set()
    # The writer reports the drops by itself once it has caught up (no flush needed).
    deadline = time.monotonic() + 10
    while "log_records_dropped" not in out.getvalue():
        assert time.monotonic() < deadline, "no drop report after the sink came back"
        time.sleep(0.01)
    recs = lines(out)
    assert [r["n"] for r in recs[:-1] if "n" in r] == list(range(0, recs[-2]["n"] + 1))  # type: ignore[operator]
    assert len(recs) == 50 + 1
    report = recs[-1]
    assert report["event"] == "log_records_dropped"
    assert report["count"] == 299 + 42 - 49
    assert report["level"] == "warning" and report["logger"] == "supervisor.observe.logs"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", str(report["since"]))
    assert "timestamp" in report
    print(f"{len(recs) - 1} records written, {report['count']} dropped; "
          f"{took * 1e6 / 341:.0f} us per call while stalled")

    # Caught up: the next records are written again, with no second report.
    log.info("after")
    assert [r["event"] for r in lines(out)][-1] == "after"
    assert [r["event"] for r in lines(out)].count("log_records_dropped") == 1

    from supervisor.observe.metrics import Metrics
    value = Metrics(process_metrics=False).registry.get_sample_value(
        "corda_ha_log_records_dropped_total")
    assert value == dropped_log_records() >= 299 + 42 - 49


def test_a_full_pipe_blocks_neither_logging_nor_flush() -> None:
    r, w = os.pipe()  # nobody reads: 64 KiB, then write() blocks
    sink = os.fdopen(w, "w")
    try:
        configure_logging("json", "INFO", sink, queue_records=100)
        log = get_logger("s")
        call_bounded(lambda: [log.info("rec", n=n, payload=f"password={SECRET} " + "x" * 1000)
                              for n in range(2000)], 10.0)
        dropped = ours().dropped
        assert dropped > 1000
        start = time.monotonic()
        assert flush_logs(0.3) is False  # the sink is stalled: give up after the timeout
        assert time.monotonic() - start < 2.0

        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 65536),
                                                                     b"")), daemon=True)
        reader.start()
        assert flush_logs(10.0)
        written = b"".join(chunks)  # the reader thread appends in order; it is still running
        assert flush_logs(1.0)
    finally:
        logging.getLogger().removeHandler(ours())
        sink.close()
    reader.join(5)
    raw = b"".join(chunks).decode()
    assert raw.startswith(written.decode())
    recs = [json.loads(line) for line in raw.splitlines()]
    assert recs[-1]["event"] == "log_records_dropped"
    assert [x["n"] for x in recs[:-1]] == list(range(len(recs) - 1))
    assert recs[-1]["count"] == dropped == 2000 - (len(recs) - 1)
    assert SECRET not in raw and "password=***" in raw  # redaction still applies
    print(f"pipe: {len(recs) - 1} written, {dropped} dropped")


class GatedStream(io.StringIO):
    """A sink that lets one write() through per `step()`; `entered()` waits for the next write."""

    def __init__(self) -> None:
        super().__init__()
        self._entered = threading.Semaphore(0)
        self._gate = threading.Semaphore(0)
        self.free = False

    def write(self, s: str) -> int:
        self._entered.release()
        if not self.free:
            assert self._gate.acquire(timeout=10), "the test never let this write through"
        return super().write(s)

    def entered(self) -> None:
        assert self._entered.acquire(timeout=5), "the writer did not start a write"

    def step(self) -> None:
        self._gate.release()

    def open(self) -> None:
        self.free = True
        self._gate.release()


def test_the_drop_report_follows_every_record_admitted_before_the_drop() -> None:
    """A writer that never catches up (the queue is never empty) still writes the
    report after the records queued before the first drop, not in their middle."""
    out = GatedStream()
    configure_logging("json", "INFO", out, queue_records=10)
    log = get_logger("s")
    log.info("rec", n=0)
    out.entered()  # writing [0]
    for n in range(1, 10):
        log.info("rec", n=n)
    out.step()
    out.entered()  # writing [1..9]: ten written since the queue was last empty
    log.info("rec", n=10)
    out.step()
    out.entered()  # writing [10]
    for n in range(11, 20):
        log.info("rec", n=n)
    assert ours().dropped == 0
    log.info("rec", n=20)  # the queue holds ten: dropped
    assert ours().dropped == 1
    out.open()
    assert flush_logs(10.0)
    events = [(r["event"], r.get("n")) for r in lines(out)]
    assert events == [("rec", n) for n in range(20)] + [("log_records_dropped", None)]


def test_flush_logs_respects_its_timeout_and_the_next_waits_less() -> None:
    out = BlockingStream()
    configure_logging("json", "INFO", out)
    get_logger("s").info("stuck")
    assert out.entered.wait(5)
    start = time.monotonic()
    assert flush_logs(0.3) is False
    first = time.monotonic() - start
    assert 0.25 <= first < 2.0
    start = time.monotonic()
    assert flush_logs(5.0) is False  # known stalled: no second long wait at exit
    assert time.monotonic() - start < 1.0
    out.release.set()
    assert flush_logs(5.0)
    assert [r["event"] for r in lines(out)] == ["stuck"]


def test_a_record_that_fails_to_render_is_dropped_not_printed(
        capfd: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    before = dropped_log_records()
    # Only our handler (pytest's capture handlers on the root would raise themselves).
    isolated = logging.getLogger("isolated")
    isolated.propagate = False
    isolated.addHandler(ours())
    try:
        isolated.info("%d apples", "not a number")
        isolated.info("fine")
    finally:
        isolated.removeHandler(ours())
        isolated.propagate = True
    recs = lines(out)
    assert [r["event"] for r in recs] == ["fine", "log_records_dropped"]
    assert recs[1]["count"] == 1
    assert dropped_log_records() == before + 1
    assert capfd.readouterr().err == ""  # stderr may be the same stalled sink


EXIT_SCRIPT = """
import sys, time
from supervisor.observe.logs import configure_logging, flush_logs, get_logger
configure_logging("json", "INFO")
log = get_logger("s")
for n in range(3000):
    log.info("rec", n=n, payload="x" * 1000)
log.info("supervisor_exiting", code=0)
start = time.monotonic()
ok = flush_logs(0.5)
sys.stderr.write(f"flushed={ok} in {time.monotonic() - start:.2f}s\\n")
sys.stderr.flush()
"""


def test_process_exits_promptly_with_a_stalled_stdout(tmp_path: Path) -> None:
    """At exit the writer is stuck in write() on a full pipe: the flush gives up
    after its timeout and the interpreter still exits cleanly (no abort on a
    stdout lock held by the writer thread)."""
    proc = subprocess.Popen([sys.executable, "-c", EXIT_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO),
                            cwd=str(tmp_path))
    start = time.monotonic()
    try:
        # Do not read stdout until it has exited: the pipe stays full.
        assert proc.stderr is not None
        err_line = proc.stderr.readline().decode()
        deadline = time.monotonic() + 8.0
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - start
        assert proc.returncode == 0, (proc.returncode, err_line)
    finally:
        proc.kill()
        proc.communicate(timeout=5)
    assert err_line.startswith("flushed=False")
    print(f"exit with a stalled stdout after {took:.2f}s ({err_line.strip()})")
    assert took < 6.0


def test_normal_exit_writes_the_last_lines(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True,
                            env=dict(os.environ, PYTHONPATH=REPO), cwd=str(tmp_path),
                            timeout=30)
    assert result.returncode == 0
    recs = [json.loads(line) for line in result.stdout.decode().splitlines()]
    # The queue holds all 3001 records (3.3 MB < 4 MiB): none dropped, the last one written.
    assert [r.get("n") for r in recs[:-1]] == list(range(3000))
    assert recs[-1]["event"] == "supervisor_exiting"
    assert result.stderr.decode().startswith("flushed=True")


def test_journald_lines_carry_their_syslog_priority(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """Under journald (stdout is the stream `$JOURNAL_STREAM` names) every line starts
    with `<N>`, so `journalctl -p err` shows errors; elsewhere lines stay plain."""
    path = tmp_path / "journal"
    with open(path, "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("json", "DEBUG", stream=stream)
        log = get_logger("t")
        log.error("lease_lost", epoch=3)
        log.warning("lease_renewal_failed")
        log.info("lease_acquired")
        log.debug("lease_renewed")
        logging.getLogger("psycopg").error("server closed the connection")
        assert flush_logs(5.0)
    got = path.read_text().splitlines()
    assert [line[:3] for line in got] == ["<3>", "<4>", "<6>", "<7>", "<3>"]
    assert json.loads(got[0][3:])["event"] == "lease_lost"
    # another stream (a pipe, a file, a terminal): no prefix
    other = io.StringIO()
    configure_logging("json", "INFO", stream=other)
    get_logger("t").error("lease_lost")
    assert text(other).startswith("{")
