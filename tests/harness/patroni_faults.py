"""Faults of a throwaway Patroni cluster (tests/harness/patroni.py) beyond a switchover
and a killed postmaster, and HAProxy in front of it:

- etcd frozen (`freeze_etcd`, SIGSTOP; `thaw_etcd`): no member can renew Patroni's
  leader lock; the primary demotes itself (Patroni without `failsafe_mode`) and no
  member is read-write until etcd answers again;
- Patroni paused (`pause`, `resume`: `patronictl pause/resume --wait`) and the primary
  restarted by hand as the server's user (`restart_by_hand`): `pg_ctl restart -m fast`,
  or its postmaster SIGKILLed and started again by `pg_ctl start` with the options
  Patroni started it with (`postmaster.opts`); Patroni, paused, does neither itself;
- Patroni frozen on a member (`freeze_patroni`: its daemon SIGSTOPped, its PostgreSQL
  left as it is: a primary stays read-write, a zombie once another is promoted);
- a zone partition (`Zones`, on a `proxied` cluster): each member and each supervisor
  host sits in a zone, etcd in one of them; `split()` blackholes every path between
  the zones (a member's way to etcd, replication and Patroni's member checks, a host's
  way to the other zone's members), `heal()` resets what they held and opens them;
- `PatroniHaProxy`: HAProxy with one `listen` section whose servers are the members,
  checked by `GET /primary` on their REST API: the config of docs/operations.md ("The
  lease database on Patroni").

Every process started here carries the cluster's tag (`TAG_ENV`), so the cluster's
`destroy()` reaps it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import psutil
import psycopg

from tests.harness.faultproxy import FaultProxy
from tests.harness.haproxy import Backend, HaProxy
from tests.harness.patroni import PATRONICTL, SCOPE, TAG_ENV, PatroniCluster, tagged
from tests.harness.proc import Reaper, wait_until

# -- etcd ------------------------------------------------------------------------------


def freeze_etcd(c: PatroniCluster) -> None:
    assert c.etcd is not None
    os.kill(c.etcd.pid, signal.SIGSTOP)


def thaw_etcd(c: PatroniCluster) -> None:
    assert c.etcd is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(c.etcd.pid, signal.SIGCONT)


# -- pause, restart by hand --------------------------------------------------------------


def _ctl(c: PatroniCluster, *args: str, timeout: float = 60.0) -> str:
    r = subprocess.run([PATRONICTL, "-c", str(c.members[0].config), *args],
                       capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **{TAG_ENV: c.tag}))
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def pause(c: PatroniCluster) -> None:
    """`patronictl pause --wait`: every member in maintenance mode."""
    _ctl(c, "pause", SCOPE, "--wait")


def resume(c: PatroniCluster) -> None:
    _ctl(c, "resume", SCOPE, "--wait")


def _as_server_user(c: PatroniCluster, argv: list[str]) -> list[str]:
    cmd = ["env", f"{TAG_ENV}={c.tag}", *argv]
    return ["runuser", "-u", c.run_as, "--", *cmd] if c.run_as else cmd


def read_write(dsn: str) -> bool:
    """Whether `dsn`'s server answers and accepts writes now."""
    with contextlib.suppress(psycopg.Error), psycopg.connect(
            dsn, autocommit=True, connect_timeout=1) as conn:
        row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])
    return False


def restart_by_hand(c: PatroniCluster, name: str, how: str, timeout: float = 60.0) -> float:
    """Restart member `name`'s PostgreSQL outside Patroni (pause it first): `how` is
    "restart" (`pg_ctl restart -m fast`) or "kill" (SIGKILL of the postmaster, then
    `pg_ctl start` with the options of `postmaster.opts`, retried while the old
    backends still hold the shared memory). The seconds until it is read-write again."""
    m = c.member(name)
    pg_ctl = str(Path(c.bindir) / "pg_ctl")
    log = str(c.basedir / f"{name}-by-hand.log")
    start = time.monotonic()
    if how == "restart":
        r = subprocess.run(_as_server_user(c, [pg_ctl, "restart", "-D", str(m.datadir), "-m",
                                               "fast", "-w", "-t", "60", "-l", log]),
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (r.stdout, r.stderr)
    else:
        assert how == "kill", how
        args = shlex.split((m.datadir / "postmaster.opts").read_text())[1:]
        if "-D" in args:
            i = args.index("-D")
            del args[i:i + 2]
        c.kill_postmaster(name)
        command = _as_server_user(c, [pg_ctl, "start", "-D", str(m.datadir), "-w", "-t", "30",
                                      "-l", log, "-o", shlex.join(args)])

        def started() -> bool:
            return subprocess.run(command, capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL).returncode == 0

        wait_until(started, timeout, interval=0.05, message=f"{name} started by hand")
    wait_until(lambda: read_write(m.dsn), timeout, interval=0.01,
               message=f"{name} read-write after the restart by hand")
    return time.monotonic() - start


# -- Patroni frozen ------------------------------------------------------------------------


def patroni_daemon(c: PatroniCluster, name: str) -> list[psutil.Process]:
    """Member `name`'s Patroni daemon (and `runuser` around it), not its PostgreSQL."""
    config = str(c.member(name).config)
    out = []
    for p in tagged(c.tag):
        with contextlib.suppress(psutil.Error):
            if config in p.cmdline():
                out.append(p)
    assert out, f"no Patroni daemon of {name}"
    return out


def freeze_patroni(c: PatroniCluster, name: str) -> list[psutil.Process]:
    """SIGSTOP member `name`'s Patroni daemon; the processes (for `thaw`)."""
    procs = patroni_daemon(c, name)
    for p in procs:
        p.suspend()
    return procs


def thaw(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.resume()


# -- zones -----------------------------------------------------------------------------


class Zones:
    """A zone partition of a `proxied` cluster and the supervisor hosts.

    `members` maps each member to its zone, `hosts` each supervisor host to its zone,
    `etcd` is the zone etcd lives in. Each host reaches every member through a proxy of
    its own (`proxies`: host -> member -> proxy; made here and closed by `close()` when
    not given); `dsn(host, user)` is its libpq multi-host URL over them
    (`target_session_attrs=read-write`), its own zone's members first."""

    def __init__(self, c: PatroniCluster, members: dict[str, str], hosts: dict[str, str],
                 etcd: str, proxies: dict[str, dict[str, FaultProxy]] | None = None) -> None:
        assert c.proxied, "a zone partition needs PatroniCluster.create(proxied=True)"
        self.c, self.members, self.hosts, self.etcd = c, members, hosts, etcd
        self.own = proxies is None
        self.proxies = proxies or {
            h: {m.name: FaultProxy("127.0.0.1", m.pg_port) for m in c.members} for h in hosts}

    def dsn(self, host: str, user: str = "postgres") -> str:
        """`host`'s URL, its own zone's members first: libpq tries the hosts in order and
        spends the whole `connect_timeout` on one that does not answer at all (a
        partition), which is longer than the supervisor's operation timeout, so a host
        whose URL named the other zone's member first could reach no member at all."""
        order = sorted(self.c.members, key=lambda m: self.members[m.name] != self.hosts[host])
        hosts = ",".join(f"127.0.0.1:{self.proxies[host][m.name].port}" for m in order)
        return f"postgresql://{user}@{hosts}/postgres?target_session_attrs=read-write"

    def _cut(self) -> list[FaultProxy]:
        cut = [p for h, by_member in self.proxies.items() for m, p in by_member.items()
               if self.members[m] != self.hosts[h]]
        for m, links in self.c.links.items():
            if self.members[m] != self.etcd:
                cut.append(links.etcd)
            if any(z != self.members[m] for z in self.members.values()):
                cut += [links.pg, links.api]  # another zone reaches this member only so
        return cut

    def split(self) -> None:
        for p in self._cut():
            p.set_mode("blackhole")

    def heal(self) -> None:
        """Open every path again. The connections the partition held are reset first: a
        real partition this long ends them (TCP timeouts, keepalives), while the
        blackholed ones would stay silent for good (Patroni's etcd client keeps its
        connections and would talk into the void)."""
        for p in self._cut():
            p.set_mode("reset")
            p.set_mode("pass")

    def close(self) -> None:
        for by_member in self.proxies.values() if self.own else ():
            for p in by_member.values():
                p.close()

    def __enter__(self) -> Zones:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- HAProxy -----------------------------------------------------------------------------


class PatroniHaProxy(HaProxy):
    """HAProxy in front of the members' PostgreSQL, each checked by `GET /primary` on its
    REST API (docs/operations.md); `port` takes the lease connections."""

    BACKEND = "corda_ha_lease"

    def __init__(self, workdir: Path, c: PatroniCluster, *, inter_ms: int = 1000,
                 fall: int = 2, rise: int = 2, reaper: Reaper | None = None) -> None:
        super().__init__(workdir, [Backend(m.name, m.pg_port, m.api_port) for m in c.members],
                         inter_ms=inter_ms, fall=fall, rise=rise, reaper=reaper)

    @property
    def port(self) -> int:
        return self.p2p_port

    def render(self) -> str:
        servers = "".join(f"    server {b.name} {b.host}:{b.port} check port {b.health_port}\n"
                          for b in self.backends)
        # the lease connection idles U between renewals: the idle timeouts exceed it
        return f"""global
    maxconn 512
    stats socket {self.admin_socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen {self.BACKEND}
    bind 127.0.0.1:{self.port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter {self.inter_ms}ms fall {self.fall} rise {self.rise} \
on-marked-down shutdown-sessions
{servers}"""

    def dsn(self, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def up(self) -> list[str]:
        """The members haproxy routes to now."""
        return [name for name, state in self.server_states(self.BACKEND).items()
                if state.startswith("UP")]
