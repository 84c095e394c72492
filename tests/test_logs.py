"""configure_logging: JSON lines, console, stdlib records through the same pipeline, redaction."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest
import structlog

from supervisor.logs import configure_logging, get_logger, redact_text

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
    root.setLevel(level)
    structlog.reset_defaults()


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


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
        text = stream.getvalue()
        assert "node_started" in text and "pid" in text and "1234" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text.splitlines()[0])


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
    text = out.getvalue()
    assert SECRET not in text
    assert "hunter2" not in text
    assert text.count("***") >= 12
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
