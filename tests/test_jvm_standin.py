"""The Corda-like JVM stand-in (tests/jvm/CordaStandIn.java) behaves as Corda's
RunOnceService and node do, against the suite's PostgreSQL: the mutual-exclusion row,
"failed to become the master node" + sleep W + exit 1, the compare-and-swap take-over
of a stale row, the boot delay before the P2P port and the registered line, the
shutdown hook, and exit 1 when the row is taken or the database is down. Each test
has its own schema (JDBC currentSchema), so the row is its own."""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyhocon import ConfigFactory

from tests.harness import jvmnode
from tests.harness.faultproxy import FaultProxy
from tests.harness.haproxy import ask
from tests.harness.jvmnode import FAILED_MASTER, REGISTERED, NodeConf, StandIn
from tests.harness.nodescan import scan_nodes
from tests.harness.paths import FAKE_NODE
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import Reaper, wait_until

pytestmark = pytest.mark.timeout(90)

U_MS, W_MS = 300, 2000
W = W_MS / 1000


@pytest.fixture(autouse=True)
def _need_jvm() -> None:
    jvmnode.require()


@pytest.fixture
def schema(pg_server: PgServer) -> Iterator[str]:
    name = f"mx_{uuid.uuid4().hex[:12]}"
    pg_server.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        pg_server.execute(f"DROP SCHEMA {name} CASCADE")


class Nodes:
    """Starts stand-ins of this test (own schema, records, lock) and reads the row."""

    def __init__(self, root: Path, pg: PgServer, schema: str, reaper: Reaper) -> None:
        self.root = root
        self.pg = pg
        self.schema = schema
        self.reaper = reaper
        self.records = root / "records"
        self.lock = root / "nodes.lock"

    def conf(self, machine: str, dsn: str | None = None, **kw: Any) -> NodeConf:
        conf = NodeConf.for_dsn(dsn or self.pg.dsn, machine, update_ms=U_MS, wait_ms=W_MS,
                                **kw)
        conf.jdbc_url += f"?currentSchema={self.schema}"
        return conf

    def start(self, machine: str, *args: str, dsn: str | None = None,
              env: dict[str, str] | None = None, **kw: Any) -> StandIn:
        return jvmnode.start(self.reaper, self.root / f"{machine}-{uuid.uuid4().hex[:6]}",
                             *args, conf=self.conf(machine, dsn, **kw),
                             record_dir=self.records, lock=self.lock, env=env)

    def row(self) -> tuple[str, str, datetime.datetime, int] | None:
        rows = self.pg.execute(f"SELECT machine_name, pid, mutual_exclusion_timestamp, version "
                               f"FROM {self.schema}.node_mutual_exclusion")
        if not rows:
            return None
        name, pid, ts, version = rows[0]
        return str(name), str(pid), ts, int(version)

    def overlaps(self) -> list[str]:
        path = Path(f"{self.lock}.overlaps")
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def nodes(tmp_path: Path, pg_server: PgServer, schema: str, reaper: Reaper) -> Nodes:
    return Nodes(tmp_path, pg_server, schema, reaper)


def registered(node: StandIn, timeout: float = 30) -> None:
    node.wait_line(REGISTERED.pattern, timeout)


def test_first_node_takes_the_row_and_opens_its_port_after_the_boot_delay(
        nodes: Nodes) -> None:
    port = free_port()
    t0 = time.monotonic()
    a = nodes.start("a", "--boot-delay", "1000", p2p_port=port, env={"CORDA_HA_EPOCH": "7"})
    a.wait_line("No other node running before", 30)
    wait_until(lambda: a.record()["master"] is not None, 10, message="a's guard taken")
    answer = ask("127.0.0.1", port, timeout=0.5)
    early = time.monotonic() - a.record()["master"]  # both CLOCK_MONOTONIC
    assert answer is None or early >= 1.0, f"P2P port open {early:.2f}s into the boot delay"
    m = a.wait_line(REGISTERED.pattern, 30)
    started = time.monotonic() - t0
    assert m["name"] == "a"
    rec = a.record()
    assert rec["registered"] - rec["master"] >= 1.0, "the port opened before the boot delay"
    assert rec["epoch"] == "7" and rec["corda_machine_name"] == "a" and rec["p2p_port"] == port
    assert a.find(r"epoch 7\b"), "the epoch from CORDA_HA_EPOCH is not in the log"
    assert ask("127.0.0.1", port) == "a"
    row = nodes.row()
    assert row is not None and row[:2] == ("a", str(a.pid))
    # the row is refreshed every updateInterval
    first = row[3]
    wait_until(lambda: (r := nodes.row()) is not None and r[3] >= first + 2, 10,
               message="the row refreshed twice")
    assert nodes.overlaps() == []
    print(f"JVM start to registered line: {started:.2f} s (boot delay 1.0 s); "
          f"the log says {m['sec']} s")


def test_another_machine_fails_to_become_master_sleeps_w_and_exits_1(nodes: Nodes) -> None:
    a = nodes.start("a")
    registered(a)
    b = nodes.start("b")
    line = b.wait_line(f"{FAILED_MASTER}|{REGISTERED.pattern}", 30)
    failed_at = time.monotonic()
    assert FAILED_MASTER in line.string, "b became a second master"
    assert b.find(r"Try again in PT2S"), b.output()
    assert b.wait_exit(W + 30) == 1
    slept = time.monotonic() - failed_at
    assert slept >= W - 0.05, f"b exited {slept:.2f}s after failing, before W"
    assert b.record()["master"] is None and b.record()["registered"] is None
    assert b.find(REGISTERED.pattern) is None
    row = nodes.row()
    assert row is not None and row[:2] == ("a", str(a.pid)), "b changed a's row"
    assert a.proc.poll() is None, "a stopped"


def test_a_stale_row_of_a_dead_node_is_taken_by_compare_and_swap_after_w(
        nodes: Nodes) -> None:
    """a is SIGKILLed; b, restarted in a loop as `while true; do java ...; done` would,
    fails while a's row is fresh and takes it with one compare-and-swap on a's version
    once it is W old (measured on the database's clock by a trigger)."""
    a = nodes.start("a")
    registered(a)
    table = f"{nodes.schema}.node_mutual_exclusion"
    nodes.pg.execute(f"CREATE TABLE {nodes.schema}.changes (at TIMESTAMP, old_machine TEXT, "
                     "old_version BIGINT, old_ts TIMESTAMP, new_machine TEXT, "
                     "new_version BIGINT)")
    nodes.pg.execute(f"""
        CREATE FUNCTION {nodes.schema}.log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.machine_name <> OLD.machine_name THEN
            INSERT INTO {nodes.schema}.changes VALUES (clock_timestamp()::timestamp,
              OLD.machine_name, OLD.version, OLD.mutual_exclusion_timestamp,
              NEW.machine_name, NEW.version);
          END IF;
          RETURN NEW;
        END $$""")
    nodes.pg.execute(f"CREATE TRIGGER log_change AFTER UPDATE ON {table} FOR EACH ROW "
                     f"EXECUTE FUNCTION {nodes.schema}.log_change()")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait_exit(10)
    killed = time.monotonic()
    failures = 0
    for _ in range(5):
        b = nodes.start("b")
        line = b.wait_line(f"{FAILED_MASTER}|{REGISTERED.pattern}", 30)
        if REGISTERED.search(line.string):
            break
        failures += 1
        assert b.wait_exit(W + 30) == 1
    else:
        raise AssertionError("b never took the stale row")
    took = time.monotonic() - killed
    assert b.find(r"Node last run on different machine:a PID: " + str(a.pid))
    row = nodes.row()
    assert row is not None and row[:2] == ("b", str(b.pid))
    changes = nodes.pg.execute(f"SELECT at, old_machine, old_version, old_ts, new_machine, "
                               f"new_version FROM {nodes.schema}.changes")
    assert len(changes) == 1, changes
    at, old_machine, old_version, old_ts, new_machine, new_version = changes[0]
    assert (old_machine, new_machine, new_version) == ("a", "b", old_version + 1)
    stale_for = (at - old_ts).total_seconds()
    assert stale_for > W, f"b took a's row {stale_for:.3f}s after a's last refresh (W={W})"
    assert nodes.overlaps() == []
    print(f"kill -9 to b registered: {took:.2f} s with {failures} failed start(s) "
          f"(W {W} s); row age at take-over {stale_for:.2f} s")


def test_sigterm_runs_the_shutdown_hook(nodes: Nodes) -> None:
    port = free_port()
    a = nodes.start("a", "--stop-delay", "3000", p2p_port=port)
    registered(a)
    before = nodes.row()
    os.kill(a.pid, signal.SIGTERM)
    a.wait_line(r"Shutting down \(signal\)", 10)
    # the hook closes the P2P port first, then does its (pretend) shutdown work
    wait_until(lambda: ask("127.0.0.1", port, timeout=0.5) is None, 2,
               message="the P2P port closed by the hook")
    assert a.proc.poll() is None, "the stop delay is over already: too slow to tell"
    assert a.wait_exit(30) == 0
    assert a.find("Node stopped"), a.output()  # wait_exit waited for the output's end
    rec = a.record()
    assert rec["stop"] is not None and rec["exit"] == 0
    # Corda leaves its row behind (the next node on another machine waits W)
    after = nodes.row()
    assert after is not None and before is not None and after[:2] == before[:2]


@pytest.mark.parametrize("change", ["machine", "pid"])
def test_a_running_node_exits_1_when_its_row_names_another(nodes: Nodes, change: str) -> None:
    port = free_port()
    a = nodes.start("a", p2p_port=port)
    registered(a)
    column = "machine_name = 'intruder'" if change == "machine" else "pid = '1'"
    nodes.pg.execute(f"UPDATE {nodes.schema}.node_mutual_exclusion SET {column}, "
                     "version = version + 1")
    t0 = time.monotonic()
    assert a.wait_exit(30) == 1
    took = time.monotonic() - t0
    assert a.find(r"Expected a PID: \d+ but was .*Check if another node is running"), a.output()
    assert a.record()["exit"] == 1 and a.record()["stop"] is None
    assert ask("127.0.0.1", port, timeout=0.5) is None
    print(f"row taken ({change}): a exited after {took:.2f} s (updateInterval {U_MS} ms)")


def test_a_running_node_exits_1_when_the_database_goes_down(nodes: Nodes) -> None:
    with FaultProxy(nodes.pg.host, nodes.pg.port) as proxy:
        dsn = nodes.pg.dsn_via("127.0.0.1", proxy.port)
        a = nodes.start("a", dsn=dsn)
        registered(a)
        proxy.set_mode("reset")
        assert a.wait_exit(30) == 1
    assert a.find("Database connection down"), a.output()
    assert a.record()["exit"] == 1


def test_the_same_machine_takes_its_own_fresh_row_at_once(nodes: Nodes) -> None:
    """Corda's rule: a row naming this machine is updated whatever its age or pid."""
    a = nodes.start("a")
    registered(a)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait_exit(10)
    a2 = nodes.start("a")
    registered(a2)
    assert a2.find("Node last run on same machine:a")
    row = nodes.row()
    assert row is not None and row[:2] == ("a", str(a2.pid))


def test_node_conf_is_one_source_for_the_stand_in_and_pyhocon(tmp_path: Path) -> None:
    conf = NodeConf(machine_name="host-a", jdbc_url="jdbc:postgresql://db:5432/corda",
                    user="corda", password="pw", update_ms=700, wait_ms=3000, p2p_port=10002,
                    rpc_port=10003)
    parsed = ConfigFactory.parse_string(conf.render())
    mx = parsed["enterpriseConfiguration"]["mutualExclusionConfiguration"]
    assert (mx["on"], mx["machineName"], mx["updateInterval"], mx["waitInterval"]) == (
        True, "host-a", 700, 3000)
    assert parsed["dataSourceProperties"]["dataSource"]["url"] == "jdbc:postgresql://db:5432/corda"
    assert parsed["dataSourceProperties"]["dataSource"]["user"] == "corda"
    assert parsed["p2pAddress"] == "127.0.0.1:10002"
    assert parsed["rpcSettings"]["address"] == "127.0.0.1:10003"
    path = conf.write(tmp_path / "node.conf")
    assert (path.stat().st_mode & 0o777) == 0o600


HAND_WRITTEN = """// a node.conf as an operator writes it (Corda's documented layout)
myLegalName = "O=Bank A, L=London, C=GB"
p2pAddress = "127.0.0.1:%(p2p)d"   # the load balancer's address, in production
rpcSettings = {
    address : "127.0.0.1:%(rpc)d"
    adminAddress = "127.0.0.1:0"
}
dataSourceProperties = {
    dataSourceClassName = "org.postgresql.ds.PGSimpleDataSource"
    "dataSource.url" = "jdbc:postgresql://unused:5432/corda"
    dataSource.user = corda
}
rpcUsers = [ { username = "u", password = "p", permissions = [ ALL ] } ]
enterpriseConfiguration = {
    mutualExclusionConfiguration = {
        on = false
        machineName = "host-x"
        updateInterval = 5000
        waitInterval = 3000
    }
}
"""


def test_the_stand_in_reads_a_hand_written_node_conf(tmp_path: Path, reaper: Reaper) -> None:
    p2p, rpc = free_port(), free_port()
    workdir = tmp_path / "x"
    workdir.mkdir()
    (workdir / "node.conf").write_text(HAND_WRITTEN % {"p2p": p2p, "rpc": rpc})
    records = tmp_path / "records"
    node = jvmnode.start(reaper, workdir, record_dir=records)
    m = node.wait_line(REGISTERED.pattern, 30)
    assert m["name"] == "Bank A"
    rec = node.record()
    assert (rec["corda_machine_name"], rec["p2p_port"], rec["master"]) == ("host-x", p2p, None)
    assert ask("127.0.0.1", p2p) == "host-x" and ask("127.0.0.1", rpc) == "host-x"
    # flags override node.conf: with the guard on, Corda's own check of the intervals
    node = jvmnode.start(reaper, workdir, "--mutex", "true")
    assert node.wait_exit(30) == 2
    assert "Wait interval: 3000, Update interval: 5000" in node.output()


def test_config_errors_exit_2_and_never_print_the_password(tmp_path: Path,
                                                            reaper: Reaper) -> None:
    conf = NodeConf(machine_name="a", jdbc_url="jdbc:postgresql://127.0.0.1:1/x",
                    password="s3cret-pw", update_ms=2000, wait_ms=2000)
    node = jvmnode.start(reaper, tmp_path / "a", conf=conf)
    assert node.wait_exit(30) == 2
    assert "Node must wait longer than update rate" in node.output()
    assert "s3cret-pw" not in node.output()
    # an unreachable database at start: exit 1, password not printed
    conf.update_ms = 500
    node = jvmnode.start(reaper, tmp_path / "b", "--db-timeout", "1000", conf=conf)
    assert node.wait_exit(30) == 1
    assert "Database error at start" in node.output() and "s3cret-pw" not in node.output()


def test_the_watcher_scan_counts_the_stand_in_from_exec(tmp_path: Path, reaper: Reaper) -> None:
    records = tmp_path / "records"
    conf = NodeConf(machine_name="a", jdbc_url="jdbc:postgresql://unused/x", mutex_on=False)
    node = jvmnode.start(reaper, tmp_path / "a", "--boot-delay", "60000", conf=conf,
                         record_dir=records)
    # from its exec (Popen may return before the child has exec'd on a loaded machine),
    # long before any record or port: the boot delay is 60 s
    wait_until(lambda: scan_nodes({"h": str(records)})["h"] == [node.pid], 10,
               message="the scan to count the stand-in")
    assert not records.exists() or not list(records.glob("*.json"))
    assert scan_nodes({"other": str(tmp_path / "elsewhere")})["other"] == []
    os.killpg(node.pid, signal.SIGKILL)
    node.wait_exit(10)
    assert scan_nodes({"h": str(records)})["h"] == []


def test_the_stand_in_and_fake_node_locks_exclude_each_other(tmp_path: Path,
                                                            reaper: Reaper) -> None:
    """Both kinds of node take the same kind of lock, so the Watcher's exact overlap
    check works across them (in both orders)."""
    import subprocess
    import sys

    conf = NodeConf(machine_name="a", jdbc_url="jdbc:postgresql://unused/x", mutex_on=False)
    lock = tmp_path / "nodes.lock"
    records = tmp_path / "records"
    records.mkdir()
    py = reaper.popen([sys.executable, FAKE_NODE, "--record", str(records), "--lock",
                       str(lock)], stdout=subprocess.DEVNULL)
    wait_until(lambda: any(records.glob(f"{py.pid}.json")), 10)
    java = jvmnode.start(reaper, tmp_path / "j", conf=conf, record_dir=records, lock=lock)
    registered(java)
    lines = Path(f"{lock}.overlaps").read_text().splitlines()
    assert [(int(x.split()[0]), int(x.split()[2])) for x in lines] == [(java.pid, py.pid)]
    os.killpg(py.pid, signal.SIGKILL)
    py.wait(10)
    os.killpg(java.pid, signal.SIGKILL)
    java.wait_exit(10)

    java = jvmnode.start(reaper, tmp_path / "j2", conf=conf, record_dir=records, lock=lock)
    registered(java)
    py = reaper.popen([sys.executable, FAKE_NODE, "--record", str(records), "--lock",
                       str(lock)], stdout=subprocess.DEVNULL)
    wait_until(lambda: any(records.glob(f"{py.pid}.json")), 10)
    lines = Path(f"{lock}.overlaps").read_text().splitlines()
    assert (int(lines[-1].split()[0]), int(lines[-1].split()[2])) == (py.pid, java.pid)
