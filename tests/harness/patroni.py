"""A throwaway Patroni cluster for the test suite: one etcd (Debian's `etcd-server`) and
Patroni members (PyPI `patroni[etcd]`, the `test` extra), each managing its own
PostgreSQL on 127.0.0.1, like tests/harness/pgserver.py's server: in a fresh temporary
directory, on free ports, as the `postgres` user when we are root (PostgreSQL refuses
root; `runuser`), with `fsync = off`, trust authentication and the renewal audit
(tests/harness/renewal_audit.py) installed on the primary (it replicates).

Every process it starts (etcd, the Patroni daemons, the postmasters and their
children, which Patroni puts in sessions of their own) carries `TAG_ENV` in its
environment; `destroy()` SIGKILLs every tagged process in rounds and removes the
directory. It runs at interpreter exit too, and a later run sweeps a directory whose
owner died (SIGKILL) the same way (`sweep_stale`), so nothing is left over.

`PatroniCluster.create(bindir, synchronous=...)` returns once a leader answers
read-write and every replica streams (with `synchronous`, once one is the synchronous
standby). The lease database is reached as users do: `multi_host_url()` (libpq
`target_session_attrs=read-write`) or through HAProxy checking each member's REST API
`/primary` (`haproxy_backends()`, for tests/harness/haproxy.py).

Faults: `switchover(candidate)` (`patronictl switchover --force`, timed),
`kill_postmaster(name)` (SIGKILL of the primary's postmaster: with
`primary_start_timeout = 0` Patroni fails over instead of restarting it); the others
(etcd frozen, Patroni paused or frozen, a zone partition, HAProxy) are in
tests/harness/patroni_faults.py.

With `proxied=True` every path between the members goes through a fault proxy of its
own (`MemberLinks`, tests/harness/faultproxy.py): each member's way to etcd (Patroni's
`etcd3.use_proxies`, so it never bypasses it) and each member's PostgreSQL and REST API
as the other members reach them (its `connect_address`: replication, pg_rewind,
Patroni's member checks). A zone partition blackholes these.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.harness import needs, renewal_audit
from tests.harness.faultproxy import FaultProxy
from tests.harness.pgserver import PgServerError, free_port
from tests.harness.proc import wait_until
from tests.harness.sitecopy import importable_copy

TAG_ENV = "CORDA_HA_PATRONI_TAG"
_PREFIX = "corda-ha-patroni-"
PATRONICTL = str(Path(sys.executable).with_name("patronictl"))
SCOPE = "corda-ha-test"


def site_packages() -> str | None:
    """The directory our interpreter imports patroni from (None: not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("patroni")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent.parent)


@functools.cache
def server_python(run_as: str | None) -> list[str]:
    """How to run Patroni as the server's user: our interpreter when that user may run
    it, else the system's python3 of the same version (our interpreter may live under
    /root, e.g. pyenv) with our site-packages on PYTHONPATH, or, where that user cannot
    read them either (a virtualenv in a `mktemp -d` clone), with a copy of Patroni and
    what it requires (tests/harness/sitecopy.py)."""
    if run_as is None:
        return [sys.executable, "-m", "patroni"]
    if _imports(run_as, [sys.executable]):
        return [sys.executable, "-m", "patroni"]
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for path in (site_packages(), importable_copy("patroni", ("etcd", "psycopg3"))):
        command = ["env", f"PYTHONPATH={path}", system]
        if _imports(run_as, command):
            return [*command, "-m", "patroni"]
    return [*command, "-m", "patroni"]


def _imports(run_as: str, python: list[str]) -> bool:
    probe = ["runuser", "-u", run_as, "--", *python, "-c", "import patroni, psycopg, etcd"]
    return subprocess.run(probe, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL).returncode == 0


def missing() -> str | None:
    """Why a Patroni cluster cannot be built here (None: it can)."""
    if site_packages() is None:
        return "patroni is not installed (pip install 'patroni[etcd]', the test extra)"
    why = needs.missing("etcd", "Patroni's store")
    if why is not None:
        return why
    if os.geteuid() == 0:
        command = server_python("postgres")
        if not _imports("postgres", command[:-2]):
            return ("the postgres user cannot import patroni with this interpreter "
                    f"({' '.join(command[:-2])}), nor with a copy of it: install the "
                    "system's python3 of this version")
    return None


def tagged(tag: str) -> list[psutil.Process]:
    """Every live process carrying `TAG_ENV=tag`."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get(TAG_ENV) == tag:
                found.append(p)
    return found


def reap(tag: str) -> None:
    """SIGKILL every process tagged `tag`, in rounds (a postmaster forks while we kill)."""
    for _ in range(10):
        procs = tagged(tag)
        if not procs:
            return
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=5)
    left = tagged(tag)
    assert not left, f"Patroni cluster processes survived: {left}"


def sweep_stale() -> None:
    """Reap and remove clusters of test runs whose process died."""
    for basedir in glob.glob(os.path.join(tempfile.gettempdir(), _PREFIX + "*")):
        try:
            owner = int(Path(basedir, "owner.pid").read_text().strip())
            tag = Path(basedir, "tag").read_text().strip()
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(owner):
            continue
        reap(tag)
        shutil.rmtree(basedir, ignore_errors=True)


@dataclass
class Member:
    """One Patroni member: its PostgreSQL and REST API addresses and its process."""

    name: str
    pg_port: int
    api_port: int
    config: Path
    datadir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def api(self, path: str, timeout: float = 1.0) -> tuple[int, dict[str, Any]]:
        """GET the REST API: (status, JSON body); (0, {}) when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}",
                                        timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            with contextlib.suppress(ValueError):
                return e.code, json.loads(e.read() or b"{}")
            return e.code, {}
        except (OSError, ValueError):
            return 0, {}

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None


@dataclass
class MemberLinks:
    """A proxied member's paths (see the module docstring): `etcd` (its Patroni to etcd),
    `pg` and `api` (the others to its PostgreSQL and REST API)."""

    etcd: FaultProxy
    pg: FaultProxy
    api: FaultProxy

    def all(self) -> list[FaultProxy]:
        return [self.etcd, self.pg, self.api]


@dataclass
class PatroniCluster:
    """etcd and the Patroni members (see the module docstring)."""

    basedir: Path
    tag: str
    bindir: str
    synchronous: bool
    dcs: dict[str, Any]
    etcd_port: int = 0
    members: list[Member] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    run_as: str | None = None
    proxied: bool = False
    links: dict[str, MemberLinks] = field(default_factory=dict)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def create(cls, bindir: str, *, synchronous: bool, members: int = 2,
               dcs: dict[str, Any] | None = None, timeout: float = 90.0,
               proxied: bool = False) -> PatroniCluster:
        """Start etcd and `members` Patroni members; return once the cluster is healthy.
        `dcs` overrides the bootstrap DCS settings (see `_dcs`); `proxied`: see the
        module docstring."""
        problem = missing()
        if problem is not None:
            raise PgServerError(problem)
        sweep_stale()
        basedir = Path(tempfile.mkdtemp(prefix=_PREFIX))
        tag = uuid.uuid4().hex
        (basedir / "owner.pid").write_text(str(os.getpid()))
        (basedir / "tag").write_text(tag)
        run_as = "postgres" if os.geteuid() == 0 else None
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            os.chown(basedir, pw.pw_uid, pw.pw_gid)
        c = cls(basedir, tag, bindir, synchronous, {**_dcs(synchronous), **(dcs or {})},
                run_as=run_as, proxied=proxied)
        atexit.register(c.destroy)
        try:
            c._start_etcd()
            for i in range(members):
                c._start_member(f"pg{i}")
            c.wait_healthy(timeout)
            leader = c.member(c.leader())
            with psycopg.connect(leader.dsn, autocommit=True, connect_timeout=5) as conn:
                renewal_audit.install(conn)
        except BaseException:
            c.destroy()
            raise
        return c

    def _spawn(self, argv: list[str], log: Path, *,
               as_server_user: bool) -> subprocess.Popen[bytes]:
        cmd = ["env", f"{TAG_ENV}={self.tag}", *argv]
        if as_server_user and self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.basedir,
                                    start_new_session=True)

    def _start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        data = self.basedir / "etcd"
        self.etcd = self._spawn(
            [needs.runnable("etcd") or "etcd", "--name", "e0", "--data-dir", str(data),
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"e0=http://127.0.0.1:{peer}",
             "--heartbeat-interval", "100", "--election-timeout", "1000"],
            self.basedir / "etcd.log", as_server_user=False)

        def up() -> bool:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.etcd_port}/health", timeout=1) as r:
                return bool(json.loads(r.read()).get("health") == "true")
            return False

        wait_until(up, 30, interval=0.1, message="etcd to answer")

    def _start_member(self, name: str) -> None:
        pg_port, api_port = free_port(), free_port()
        datadir = self.basedir / name
        config = self.basedir / f"{name}.yml"
        member_config = self._member_config(name, pg_port, api_port, datadir)
        if self.proxied:
            links = MemberLinks(FaultProxy("127.0.0.1", self.etcd_port),
                                FaultProxy("127.0.0.1", pg_port),
                                FaultProxy("127.0.0.1", api_port))
            self.links[name] = links
            member_config["etcd3"] = {"hosts": [f"127.0.0.1:{links.etcd.port}"],
                                      "use_proxies": True}
            member_config["postgresql"]["connect_address"] = f"127.0.0.1:{links.pg.port}"
            member_config["restapi"]["connect_address"] = f"127.0.0.1:{links.api.port}"
        config.write_text(json.dumps(member_config, indent=1))  # JSON is YAML
        m = Member(name, pg_port, api_port, config, datadir)
        self.members.append(m)
        self.start_member(name)

    def start_member(self, name: str) -> None:
        """Start (again) member `name`'s Patroni daemon."""
        m = self.member(name)
        m.proc = self._spawn([*server_python(self.run_as), str(m.config)],
                             self.basedir / f"{name}.log", as_server_user=True)

    def _member_config(self, name: str, pg_port: int, api_port: int,
                       datadir: Path) -> dict[str, Any]:
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust",
               "host replication all 127.0.0.1/32 trust"]
        return {
            "scope": SCOPE, "name": name,
            "log": {"level": "INFO", "dir": str(self.basedir), "file_num": 1,
                    "file_size": 50_000_000},
            "restapi": {"listen": f"127.0.0.1:{api_port}",
                        "connect_address": f"127.0.0.1:{api_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": self.dcs,
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"},
                           "no-sync"],
                "pg_hba": hba,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg_port}", "connect_address": f"127.0.0.1:{pg_port}",
                "data_dir": str(datadir), "bin_dir": self.bindir,
                "pgpass": str(self.basedir / f"{name}.pgpass"),
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.basedir)},
                "pg_hba": hba,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    # -- state --------------------------------------------------------------------------

    def member(self, name: str) -> Member:
        (m,) = [m for m in self.members if m.name == name]
        return m

    def leader(self, timeout: float = 10.0) -> str:
        """The member whose REST API says it is the read-write primary, asked again (for
        up to `timeout`) until exactly one says so: on a busy machine an API can miss its
        own 1 s answer timeout, and a paused Patroni reports a postmaster restarted by
        hand only at its next loop."""
        found: list[str] = []

        def one() -> bool:
            found[:] = [m.name for m in self.members if m.api("/primary")[0] == 200]
            return len(found) == 1

        try:
            wait_until(one, timeout, interval=0.1, message="one primary")
        except AssertionError:
            raise AssertionError(f"primaries by the REST API: {found}; roles "
                                 f"{self.roles()}") from None
        return found[0]

    def roles(self) -> dict[str, tuple[str, str]]:
        """Each member's (role, state) as its REST API says it; ("?", "?") when silent."""
        out = {}
        for m in self.members:
            code, body = m.api("/patroni")
            out[m.name] = ((str(body.get("role")), str(body.get("state"))) if code
                           else ("?", "?"))
        return out

    def healthy(self) -> bool:
        """One primary, every other member a streaming replica (with `synchronous`,
        one of them the synchronous standby)."""
        primaries = [m for m in self.members if m.api("/primary")[0] == 200]
        if len(primaries) != 1:
            return False
        replicas = [m for m in self.members if m is not primaries[0]]
        if not all(m.api("/replica")[0] == 200 for m in replicas):
            return False
        with psycopg.connect(primaries[0].dsn, autocommit=True, connect_timeout=2) as conn:
            rows = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
        states = [r[0] for r in rows]
        if len(states) < len(replicas):
            return False
        if not self.synchronous:
            return True
        # Patroni's own view (its sync key in the DCS): a switchover checks that one
        return (any(s in ("sync", "quorum") for s in states)
                and any(m.api("/sync")[0] == 200 for m in replicas))

    def wait_healthy(self, timeout: float) -> None:
        def ok() -> bool:
            with contextlib.suppress(psycopg.Error, AssertionError):
                return self.healthy()
            return False

        try:
            wait_until(ok, timeout, interval=0.1, message="the Patroni cluster to be healthy")
        except AssertionError as e:
            raise AssertionError(f"{e}; roles {self.roles()}\n{self.log_tail()}") from None

    def execute_on_primary(self, sql: str) -> list[tuple[Any, ...]]:
        """One statement on the primary (as the REST API names it), autocommit; rows."""
        with psycopg.connect(self.member(self.leader()).dsn, autocommit=True,
                             connect_timeout=5) as conn:
            cur = conn.execute(sql.encode())
            return list(cur.fetchall()) if cur.description is not None else []

    def multi_host_url(self) -> str:
        """What users write: every member, the read-write one chosen by libpq."""
        hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def dsns(self) -> list[str]:
        return [m.dsn for m in self.members]

    # -- faults --------------------------------------------------------------------------

    def switchover(self, candidate: str, timeout: float = 60.0) -> float:
        """`patronictl switchover --force` to `candidate`; the seconds until `candidate`
        answers `/primary`."""
        leader = self.leader()
        start = time.monotonic()
        r = subprocess.run(
            [PATRONICTL, "-c", str(self.member(leader).config), "switchover", SCOPE,
             "--leader", leader, "--candidate", candidate, "--force"],
            capture_output=True, text=True, timeout=timeout, env=self._ctl_env())
        assert r.returncode == 0 and "failed" not in r.stdout, (r.stdout, r.stderr)
        wait_until(lambda: self.member(candidate).api("/primary")[0] == 200,
                   timeout, interval=0.01, message=f"{candidate} to be the primary")
        return time.monotonic() - start

    def kill_postmaster(self, name: str) -> int:
        """SIGKILL member `name`'s postmaster; its pid."""
        pid = self.member(name).postmaster_pid()
        assert pid is not None, f"{name} has no postmaster.pid"
        os.kill(pid, signal.SIGKILL)
        return pid

    def _ctl_env(self) -> dict[str, str]:
        return dict(os.environ, **{TAG_ENV: self.tag})

    # -- teardown ------------------------------------------------------------------------

    def log_tail(self, n: int = 20) -> str:
        out = []
        for log in sorted(self.basedir.glob("*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {log.name}\n" + "".join(
                    log.read_text(errors="replace").splitlines(True)[-n:]))
        return "\n".join(out)

    def destroy(self) -> None:
        """SIGKILL every process of the cluster and remove its directory. Idempotent."""
        reap(self.tag)  # SIGKILL ends a stopped (SIGSTOP) process too
        for links in self.links.values():
            for proxy in links.all():
                proxy.close()
        for p in [self.etcd, *(m.proc for m in self.members)]:
            if p is not None:
                with contextlib.suppress(Exception):
                    p.wait(5)
        shutil.rmtree(self.basedir, ignore_errors=True)


def _dcs(synchronous: bool) -> dict[str, Any]:
    """The bootstrap DCS settings: Patroni's shortest timing (ttl 20 s, loop_wait 1 s,
    retry_timeout 3 s), failover at once when the primary's postmaster dies
    (`primary_start_timeout = 0`), pg_rewind for the old primary."""
    return {
        "ttl": 20, "loop_wait": 1, "retry_timeout": 3,
        "primary_start_timeout": 0,
        "maximum_lag_on_failover": 1048576,
        "synchronous_mode": synchronous,
        "postgresql": {
            "use_pg_rewind": True,
            "parameters": {
                "fsync": "off", "full_page_writes": "on", "wal_log_hints": "on",
                "wal_level": "replica", "hot_standby": "on", "max_wal_senders": 10,
                "max_replication_slots": 10, "wal_keep_size": "64MB",
                "max_connections": 200, "shared_buffers": "32MB",
                "track_commit_timestamp": "on", "wal_sender_timeout": "5s",
                "wal_receiver_timeout": "5s", "wal_retrieve_retry_interval": "200ms",
            },
        },
    }
