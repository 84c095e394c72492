"""The command line against a real PostgreSQL and real supervisors.

`python -m supervisor status | handover | check-config | --version | --help`,
each run as its own process, as an operator would. U = 0.5 s, W = 2 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from supervisor import __version__
from supervisor.cli import command as cli
from tests.harness.bounds import GIVE_UP, wait_within, within
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, start_pair
from tests.harness.config import Raw, Value, lease, ms, seconds, supervisor_config, write_config
from tests.harness.host import STOP_MS, W, log_seconds
from tests.harness.loadprobe import LoadWatch
from tests.harness.paths import REPO
from tests.harness.pgserver import free_port
from tests.harness.proc import pid_alive, wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(90)

PASSWORD = "s3cret-Passw0rd"
CONNECT_TIMEOUT = 2.0  # what Host.write_config sets (database.connectTimeout)


def write_conf(path: Path, **database: Value) -> Path:
    """A minimal valid config (lease on, U = 0.5 s, W = 2 s) with the given database
    settings."""
    return write_config(path, lease=lease("cli"), database=database,
                        node={"command": ["/bin/true"], "stopTimeout": ms(500)})



def timed_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, float, str]:
    """`cli.main(args)` in this process: (exit status, seconds, stdout + stderr). The time
    runs from the command's start, without the interpreter start-up a subprocess adds."""
    capsys.readouterr()
    t0 = time.monotonic()
    code = cli.main(list(args))
    took = time.monotonic() - t0
    out = capsys.readouterr()
    return code, took, out.out + out.err


def no_health(conf: Path) -> Path:
    """The same config without the health endpoint (`status` then asks no local supervisor:
    only the database bound is timed)."""
    conf.write_text(conf.read_text() + supervisor_config(health={"enabled": False}))
    return conf


class Streamed:
    """`python -m supervisor ARGS` with unbuffered stdout; when each line arrived."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=REPO, stdin=subprocess.DEVNULL)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait(self, timeout: float) -> tuple[int, float, str, str]:
        """(exit status, when it exited, stdout, stderr)."""
        code = self.proc.wait(timeout)
        exited = time.monotonic()
        self._reader.join(5)
        assert self.proc.stderr is not None
        return code, exited, "".join(line for _, line in self.lines), self.proc.stderr.read()

    def when(self, fragment: str) -> float:
        return next(at for at, line in self.lines if fragment in line)


# --------------------------------------------------------------------------- status


def test_status_shows_the_live_holder(pair: Cluster) -> None:
    a, b = start_pair(pair)
    epoch = a.wait_event("lease_acquired", 1)["epoch"]

    r = run_cli("status", "--config", str(a.config_path))
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^holder: a\b", r.stdout, re.M)
    assert re.search(rf"^epoch: {epoch}$", r.stdout, re.M)
    assert re.search(r"^state: live$", r.stdout, re.M)

    for host in (a, b):  # the same answer from either host's config
        r = run_cli("status", "--config", str(host.config_path), "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        print(f"status --json via {host.name}: {info}")
        assert info["holder"] == "a"
        assert info["epoch"] == epoch
        assert info["live"] is True
        assert info["lease_name"] == a.lease_name
        assert info["holder_pid"] == a.proc.pid  # type: ignore[union-attr]
        assert info["handover_requested"] is False
        # ages by the database clock: renewed within the last U (+ slack), expiring within W
        assert 0 <= info["renewed_ago"] < W
        assert 0 < info["expires_in"] <= W
        assert info["renewed_ago"] + info["expires_in"] == pytest.approx(W, abs=0.01)


def test_status_without_any_supervisor_exits_3(pair: Cluster) -> None:
    host = pair.add("a")
    host.write_config()  # configured, never started: nobody ever touched this lease name
    r = run_cli("status", "--config", str(host.config_path))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "no holder" in r.stdout
    r = run_cli("status", "--config", str(host.config_path), "--json")
    assert r.returncode == 3, (r.stdout, r.stderr)
    info = json.loads(r.stdout)
    assert info["holder"] is None and info["live"] is False and info["epoch"] is None


def test_status_after_graceful_stop_exits_3(pair: Cluster) -> None:
    a = pair.add("a")
    a.start()
    a.wait_node_up(15)
    a.signal(signal.SIGTERM)
    assert a.exit_code(10) == 0
    r = run_cli("status", "--config", str(a.config_path), "--json")
    assert r.returncode == 3, (r.stdout, r.stderr)
    info = json.loads(r.stdout)
    assert info["holder"] is None and info["live"] is False
    assert info["epoch"] == a.events("lease_acquired")[0]["epoch"]  # the row keeps its epoch


def test_status_with_unreachable_database_exits_69_quickly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], load: LoadWatch) -> None:
    port = free_port()  # nothing listens there
    variants: dict[str, dict[str, Value]] = {
        "password key": {"url": f"postgresql://127.0.0.1:{port}/db", "user": "corda",
                         "password": PASSWORD},
        "password in url": {"url": f"postgresql://corda:{PASSWORD}@127.0.0.1:{port}/db"},
    }
    for name, db in variants.items():
        conf = write_conf(tmp_path / "unreachable.conf", **db,
                          connectTimeout=seconds(CONNECT_TIMEOUT))
        r = run_cli("status", "--config", str(conf), timeout=30)
        print(f"status, closed port ({name}): exit {r.returncode}: {r.stderr.strip()}")
        assert r.returncode == 69, (r.stdout, r.stderr)
        assert "database unavailable" in r.stderr
        assert PASSWORD not in r.stdout + r.stderr
        # the bound, timed from the command's start (no interpreter start-up)
        code, took, out = timed_in_process(capsys, "status", "--config", str(no_health(conf)))
        print(f"  in process: exit {code} after {took:.3f} s")
        assert code == 69 and PASSWORD not in out
        assert took < within(CONNECT_TIMEOUT, load, spawns=0, floor=1.0)


def test_status_with_silent_database_exits_69_within_connect_timeout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], load: LoadWatch) -> None:
    """A listener that accepts TCP but never answers: only the client-side bound helps.
    Timed in process, from the command's start: the bound is the connect timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
        port = silent.getsockname()[1]
        conf = write_conf(tmp_path / "silent.conf",
                          url=f"postgresql://corda:{PASSWORD}@127.0.0.1:{port}/db",
                          connectTimeout=seconds(CONNECT_TIMEOUT))
        r = run_cli("status", "--config", str(conf), timeout=30)
        code, took, out = timed_in_process(capsys, "status", "--config", str(no_health(conf)))
    print(f"status, silent server: exit {r.returncode}: {r.stderr.strip()}; in process: "
          f"exit {code} after {took:.3f} s")
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert PASSWORD not in r.stdout + r.stderr
    assert code == 69 and PASSWORD not in out
    assert CONNECT_TIMEOUT - 0.1 <= took < within(CONNECT_TIMEOUT, load, spawns=0, floor=1.0)


def test_status_with_wrong_password_exits_78_without_echoing_it(
        tmp_path: Path, pg_server: object) -> None:
    from tests.harness.pgserver import PgServer
    assert isinstance(pg_server, PgServer)
    wrong = "wr0ng-" + PASSWORD
    conf = write_conf(tmp_path / "wrongpw.conf",
                      url=f"postgresql://127.0.0.1:{pg_server.port}/postgres",
                      user=PgServer.password_user, password=wrong, connectTimeout=seconds(2))
    r = run_cli("status", "--config", str(conf), timeout=30)
    print(f"status, wrong password: exit {r.returncode}: {r.stderr.strip()}")
    # credentials are configuration (78, as `run` says for the same cause), not an
    # unreachable database (69)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert f"refused the login of database.user = {PgServer.password_user}" in r.stderr
    assert "the password from database.password" in r.stderr
    assert wrong not in r.stdout + r.stderr


# --------------------------------------------------------------------------- handover


def test_handover_with_wait_moves_the_lease_to_b(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        pair.wait_member_ready("b")
        (node_a,) = a.live_nodes()
        epoch = a.wait_event("lease_acquired", 1)["epoch"]
        mark_a, mark_b = a.mark(), b.mark()
        t0 = time.monotonic()
        r = run_cli("handover", "--config", str(a.config_path), "--wait", "10", timeout=30)
        cli_took = time.monotonic() - t0
        print(r.stdout, r.stderr)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"handover requested from a (epoch {epoch})" in r.stdout
        assert re.search(rf"now held by b \(epoch {epoch + 1}\)", r.stdout)
        b_acquired = b.wait_event("lease_acquired", 1, since=mark_b)
        assert b_acquired["epoch"] == epoch + 1
        wait_until(lambda: b.live_nodes(), GIVE_UP, message="b's node to run")
        assert not pid_alive(node_a)
        assert a.live_nodes() == []
        rec = a.node_record(node_a)
        assert rec["stop"] is not None, "a's node was stopped gracefully (SIGTERM)"
        noticed = a.wait_event("handover_requested", 1, since=mark_a,
                               match=lambda e: e["epoch"] == epoch)
        a.wait_event("lease_released", 1, since=mark_a, match=lambda e: e["epoch"] == epoch)
        b_started = b.wait_event("node_started", 1, since=mark_b)
        a.wait_event("cooldown_started", 1, since=mark_a)
        assert a.state() == "cooldown"
        r = run_cli("status", "--config", str(b.config_path), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["holder"] == "b"
    watch.assert_never_two()
    # From the event the bound is about (a noticed the request) to b's node start, by the
    # supervisors' own log times: a's node stops (it exits at once on SIGTERM), a releases,
    # b is woken by NOTIFY and starts a guard and a node (two interpreters).
    moved = log_seconds(b_started) - log_seconds(noticed)
    limit = within(STOP_MS / 1000, load, spawns=2)
    print(f"handover: CLI returned after {cli_took:.3f}s (incl. interpreter start); b's node "
          f"started {moved:.3f}s after a noticed the request (limit {limit:.3f}s)")
    assert 0 < moved < limit


def test_handover_without_holder_exits_3(pair: Cluster) -> None:
    host = pair.add("a")
    host.write_config()
    r = run_cli("handover", "--config", str(host.config_path), "--wait", "1")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "nobody holds the lease" in r.stderr


def test_handover_with_single_host_times_out_and_holder_comes_back(pair: Cluster,
                                                                   load: LoadWatch) -> None:
    """Documented: the holder stops its node, releases and cools down for 2 W; with no
    other host, `--wait` fails (exit 1), and after the cooldown the holder takes the
    lease again (new epoch, node running again)."""
    with Watcher(pair.hosts) as watch:
        a = pair.add("a")
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        wait_until(lambda: a.live_nodes(), 2, message="a's node record")
        (node_a,) = a.live_nodes()
        epoch = a.wait_event("lease_acquired", 1)["epoch"]
        mark = a.mark()
        t0 = time.monotonic()
        cmd = Streamed("handover", "--force", "--config", str(a.config_path), "--wait", "1")
        code, exited, out, err = cmd.wait(30)
        print(out, err)
        assert code == 1, (out, err)
        assert "no other host took the lease within 1" in err
        # timed from the request (printed once the flag is set): --wait 1 plus at most
        # one last observe (operationTimeout 0.4 s) and a poll pause of 0.1 s
        cli_took = exited - cmd.when("handover requested from a")
        assert 1.0 <= cli_took < within(1.0 + 0.5, load, spawns=0, floor=1.0)
        # a stepped down: node stopped (gracefully), lease released, cooling down for 2 W
        wait_until(lambda: not pid_alive(node_a), 2, message="a's node to stop")
        a.wait_event("handover_requested", 2, since=mark)
        released = a.wait_event("lease_released", 2, since=mark)
        cooldown = a.wait_event("cooldown_started", 2, since=mark)
        assert cooldown["seconds"] == pytest.approx(2 * W)
        assert released["epoch"] == epoch
        # ... and after the cooldown takes the lease back
        back = a.wait_event("lease_acquired", GIVE_UP, since=mark)
        back_after = log_seconds(back) - log_seconds(released)  # by the supervisor's log times
        assert back["epoch"] == epoch + 1
        a.wait_event("cooldown_ended", 1, since=mark)
        wait_within(lambda: a.live_nodes(), 0.0, load, floor=3.0, what="a's node to run again")
        assert a.state() == "active"
        gap = time.monotonic() - t0
    watch.assert_never_two()
    print(f"handover --wait 1 alone: exit 1 after {cli_took:.3f}s; a took the lease back "
          f"~{back_after:.3f}s after releasing (cooldown {2 * W:.1f}s); no node for {gap:.3f}s")
    assert 2 * W - 0.1 <= back_after < within(2 * W, load, floor=2.0)


# --------------------------------------------------------------------------- check-config


@pytest.mark.parametrize("variant", ["password", "url-userinfo", "jdbc-query", "password-file",
                                     "env"])
def test_check_config_redacts_the_password(tmp_path: Path, variant: str) -> None:
    env: dict[str, str] = {}
    db: dict[str, Value]
    if variant == "password":
        db = {"url": "postgresql://db.example:5432/corda", "user": "corda",
              "password": PASSWORD}
    elif variant == "url-userinfo":
        db = {"url": f"postgresql://corda:{PASSWORD}@db.example:5432/corda"}
    elif variant == "jdbc-query":
        db = {"url": f"jdbc:postgresql://db.example:5432/corda?user=corda&password={PASSWORD}"
                     "&sslmode=require"}
    elif variant == "password-file":
        pw = tmp_path / "pw"
        pw.write_text(PASSWORD + "\n")
        db = {"url": "postgresql://db.example/corda", "user": "corda", "passwordFile": str(pw)}
    else:
        env = {"CORDA_TEST_DB_PASSWORD": PASSWORD}
        db = {"url": "postgresql://db.example/corda", "user": "corda",
              "password": Raw("${?CORDA_TEST_DB_PASSWORD}")}
    conf = write_conf(tmp_path / "ok.conf", **db)
    r = run_cli("check-config", "--config", str(conf), env=env)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["database"]["password"] == "***"
    assert PASSWORD not in r.stdout + r.stderr
    assert shown["database"]["user"] == "corda"
    assert "db.example" in shown["database"]["url"]
    assert shown["mutualExclusionConfiguration"]["on"] is True
    assert shown["source"] == str(conf)


@pytest.mark.parametrize("case", ["unknown-key", "wrong-type", "wait-not-above-update",
                                  "missing-file"])
def test_check_config_bad_file_exits_78_naming_file_and_key(tmp_path: Path, case: str) -> None:
    conf = tmp_path / "bad.conf"
    if case == "unknown-key":
        write_conf(conf, url="postgresql://h/db", password=PASSWORD, leaseNmae="x")
        key = "leaseNmae"
    elif case == "wrong-type":
        write_conf(conf, url="postgresql://h/db")
        conf.write_text(conf.read_text() + supervisor_config(
            health={"enabled": True, "host": "127.0.0.1", "port": "eighty"}))
        key = "port"
    elif case == "wait-not-above-update":
        write_config(conf, lease=lease("x", 2000, 2000),
                     database={"url": "postgresql://h/db", "password": PASSWORD},
                     node={"command": ["true"]})
        key = "waitInterval"
    else:
        key = "cannot read"  # no key to name: the reason instead
    r = run_cli("check-config", "--config", str(conf))
    print(r.stderr)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert str(conf) in r.stderr
    assert key in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    if case == "unknown-key":
        assert "leaseName" in r.stderr  # did you mean


@pytest.mark.parametrize("command", ["run", "status", "check-config", "handover"])
def test_help_for_every_subcommand(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")
    assert command in r.stdout and "--config" in r.stdout
    if command == "status":
        assert "--json" in r.stdout
    if command == "handover":
        assert "--wait" in r.stdout


def test_top_level_help_lists_every_subcommand() -> None:
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for command in ("run", "status", "check-config", "handover"):
        assert command in r.stdout


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == __version__


def test_status_on_a_lease_off_config_exits_78(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "off.conf", url="postgresql://h/db")
    conf.write_text(conf.read_text().replace("on = true", "on = false"))
    for command in ("status", "handover"):
        r = run_cli(command, "--config", str(conf))
        assert r.returncode == 78, (command, r.stdout, r.stderr)
        assert "on = false" in r.stderr
