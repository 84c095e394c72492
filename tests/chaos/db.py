"""The chaos suite's database: a PostgreSQL primary, a streaming replica, fault proxies.

- The servers run under libfaketime when it is installed, so that the
  `clock_jump` fault can move the database clock (`FAKETIME_TIMESTAMP_FILE`,
  `FAKETIME_NO_CACHE=1`; the monotonic clock is left alone). Primary and
  replica share the timestamp file: they keep one clock.
- With `replica=True` (and `pg_basebackup` installed) the primary has an
  asynchronous streaming replica (tests/harness/pgserver.py `create_replica`) that
  streams through a `FaultProxy` (`replication`), so a fault can make it miss
  writes. Without it, `replica` is None and faults that need one are skipped.
- The servers sit in two *slots* (0 and 1). Each host reaches the database
  through a `HostLink`: one `FaultProxy` per slot, named in one libpq multi-host
  URL with `target_session_attrs=read-write` (`host_dsn`), so a host follows a
  promotion by itself and a fault cuts a host off from every server at once.
- `promote()` stops the primary (immediate) and promotes the replica: the slots
  swap roles. `reseed()` then makes a new replica of the new primary (through the
  replication proxy, retargeted) in the dead server's slot, and points every
  host's proxy for that slot at it. `server` is always the current primary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

from tests.harness.faultproxy import FaultProxy, Mode
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import INSTALL_HINT, PgServer, PgServerError

FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1",
                 "/usr/local/lib/faketime/libfaketime.so.1")


CORDA_TABLE_DDL = """CREATE TABLE node_mutual_exclusion (
    mutual_exclusion_id char(1) PRIMARY KEY, machine_name varchar(255) NOT NULL,
    pid varchar(255) NOT NULL, mutual_exclusion_timestamp timestamp NOT NULL,
    version bigint)"""


def find_faketime() -> str | None:
    """Path of libfaketime.so.1, or None when it is not installed."""
    return next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)


class HostLink:
    """One host's proxies, one per server slot; a mode applies to all of them."""

    def __init__(self, proxies: list[FaultProxy]) -> None:
        self.proxies = proxies

    @property
    def mode(self) -> Mode:
        return self.proxies[0].mode

    def set_mode(self, mode: Mode) -> None:
        for p in self.proxies:
            p.set_mode(mode)

    def close(self) -> None:
        for p in self.proxies:
            with contextlib.suppress(Exception):
                p.close()


class ChaosDb:
    """See the module docstring."""

    def __init__(self, *, replica: bool = True) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise PgServerError(INSTALL_HINT)
        self.faketime = find_faketime()
        self.offset = 0.0
        # the timestamp file must be readable by the server's user (postgres)
        self._dir = tempfile.mkdtemp(prefix="corda-ha-chaos-ft-")
        os.chmod(self._dir, 0o755)
        self.ts_file = os.path.join(self._dir, "faketime")
        self._write_offset()
        env: dict[str, str] = {}
        if self.faketime is not None:
            env = {"LD_PRELOAD": self.faketime, "FAKETIME_TIMESTAMP_FILE": self.ts_file,
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        with_replica = replica and os.access(os.path.join(bindir, "pg_basebackup"), os.X_OK)
        primary = PgServer.create(bindir, env=env, replication=with_replica)
        # Corda's own guard table, as Corda creates it, with an old row of no machine of
        # the run: each holder prepares it before a node start (the side_stall fault
        # locks it)
        primary.execute(CORDA_TABLE_DDL)
        primary.execute("INSERT INTO node_mutual_exclusion VALUES ('X', 'nobody', '1', "
                        "now() - interval '1 hour', 1)")
        self.slots: list[PgServer | None] = [primary, None]
        self.primary_slot = 0
        self.links: list[HostLink] = []
        self.replication: FaultProxy | None = None
        self.retired: list[PgServer] = []  # old primaries after a promotion
        self.failovers = 0
        self.promoted_at: list[float] = []  # monotonic times of the promotions
        if with_replica:
            self.replication = FaultProxy(primary.host, primary.port)
            self.slots[1] = primary.create_replica(
                via=(self.replication.host, self.replication.port))

    # -- the servers ----------------------------------------------------------------------

    @property
    def server(self) -> PgServer:
        """The current primary."""
        s = self.slots[self.primary_slot]
        assert s is not None
        return s

    @property
    def replica(self) -> PgServer | None:
        return self.slots[1 - self.primary_slot]

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def link(self) -> HostLink:
        """A new host's proxies (one per slot, also for an empty slot)."""
        proxies = []
        for s in self.slots:
            target = s if s is not None else self.server
            proxies.append(FaultProxy(target.host, target.port))
        link = HostLink(proxies)
        self.links.append(link)
        return link

    def host_dsn(self, link: HostLink) -> str:
        """The libpq URL a host uses: through its proxies, writable server only."""
        if self.replica is None and self.failovers == 0:
            return self.server.dsn_via("127.0.0.1", link.proxies[self.primary_slot].port)
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in link.proxies)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    # -- faults -----------------------------------------------------------------------------

    def promote(self) -> None:
        """Stop the primary (immediate) and promote the replica; the slots swap."""
        replica = self.replica
        if replica is None:
            raise RuntimeError("no replica to promote")
        old = self.server
        self.promoted_at.append(time.monotonic())  # writes sent before may be lost
        old.stop("immediate")
        self.slots[self.primary_slot] = None  # never started again (two primaries)
        self.retired.append(old)
        replica.promote()
        self.primary_slot = 1 - self.primary_slot
        self.failovers += 1

    def reseed(self, timeout: float = 60.0) -> float:
        """A new replica of the current primary in the other slot (the old server
        there is destroyed); every host's proxy for that slot points at it.
        Returns the seconds it took."""
        t0 = time.monotonic()
        slot = 1 - self.primary_slot
        for old in [*self.retired, self.slots[slot]]:
            if old is not None:
                old.destroy()
        self.retired, self.slots[slot] = [], None
        assert self.replication is not None
        self.replication.target_host, self.replication.target_port = (self.server.host,
                                                                      self.server.port)
        self.replication.set_mode("pass")
        new = self.server.create_replica(via=(self.replication.host, self.replication.port),
                                         timeout=timeout)
        self.slots[slot] = new
        for link in self.links:
            link.proxies[slot].target_host = new.host
            link.proxies[slot].target_port = new.port
        return time.monotonic() - t0

    def _write_offset(self) -> None:
        tmp = self.ts_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.offset:+.3f}s\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.ts_file)

    def clock_offset(self) -> float:
        """The database clock minus ours, in seconds (measured)."""
        before = time.time()
        ((db,),) = self.server.execute("SELECT extract(epoch FROM clock_timestamp())")
        return float(db) - (before + time.time()) / 2

    def jump(self, seconds: float) -> None:
        """Move the database clock by `seconds` (forward when positive)."""
        if self.faketime is None:
            raise RuntimeError("libfaketime is not installed")
        self.offset += seconds
        self._write_offset()

    def lease_back(self, lease_name: str, seconds: float) -> int:
        """Set the lease row's renewed_at and expires_at back by `seconds`."""
        rows = self.server.execute(
            "UPDATE corda_ha_lease SET renewed_at = renewed_at - make_interval(secs => %s),"
            " expires_at = expires_at - make_interval(secs => %s) WHERE lease_name = %s"
            " RETURNING epoch", (seconds, seconds, lease_name))
        return len(rows)

    def lease_holder(self, lease_name: str) -> str | None:
        """The holder named in the current primary's lease row."""
        rows = self.server.execute(
            "SELECT holder FROM corda_ha_lease WHERE lease_name = %s", (lease_name,))
        return None if not rows else rows[0][0]

    def ensure_up(self) -> None:
        """Start any server that is down; give up on a replica that will not start."""
        for s in self.slots:
            if s is None:
                continue
            try:
                s.execute("SELECT 1")
            except Exception:
                with contextlib.suppress(PgServerError):
                    s.start()
        if self.replication is not None:
            self.replication.set_mode("pass")

    def destroy(self) -> None:
        for link in self.links:
            link.close()
        if self.replication is not None:
            with contextlib.suppress(Exception):
                self.replication.close()
        for s in [*self.slots, *self.retired]:
            if s is not None:
                s.destroy()
        shutil.rmtree(self._dir, ignore_errors=True)
