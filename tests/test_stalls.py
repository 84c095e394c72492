"""End to end: a stalled log sink must not stop the lease renewals.

Under systemd stdout is journald; a stalled journald (here: a stdout pipe nobody
reads) used to block the log write, the asyncio loop with it, the renewals with
that, and the guard then killed a healthy node at its deadline and the other host
took over. docs/design.md: log output goes through a queue to a writer thread.

U = 0.5 s, W = 2 s, M = 0.2 s (the harness's intervals), logging at DEBUG; the
active host's node prints a 4 KB line every 5 ms, so its supervisor logs about
0.8 MB/s and fills the 64 KiB pipe, then its log queue, within seconds.
"""

from __future__ import annotations

import fcntl
import itertools
import signal
import termios
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness.bounds import wait_within
from tests.harness.cluster import Cluster, start_pair
from tests.harness.host import Host, W
from tests.harness.loadprobe import LoadWatch
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(150)

M = 0.2  # fencing margin: min(2 s, W / 10)
STALL = 5 * W  # how long the sink stays stalled
CHATTER = ["--chatter", "4000"]


def pipe_fill(host: Host) -> tuple[int, int]:
    """(bytes waiting in the supervisor's stdout pipe, the pipe's capacity)."""
    assert host.proc is not None and host.proc.stdout is not None
    fd = host.proc.stdout.fileno()
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little"), fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_a_stalled_stdout_does_not_stop_renewals(pair: Cluster, pg_dsn: str,
                                                 lease_name: str, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch, psycopg.connect(pg_dsn, autocommit=True) as db:
        def row() -> tuple[Any, ...]:
            found = db.execute(
                "SELECT holder, epoch, renewed_at, clock_timestamp() FROM corda_ha_lease "
                "WHERE lease_name = %s", (lease_name,)).fetchone()
            assert found is not None
            return tuple(found)

        a, b = start_pair(pair, a_args=CHATTER, b_args=CHATTER)
        watch.hosts = pair.hosts
        assert pair.active(5) is a
        (node,) = a.live_nodes()
        holder, epoch, _, _ = row()
        assert holder == "a"

        # Stop reading a's stdout; wait until the pipe is full: at least half its
        # capacity (pages may be part-filled) and no longer growing for 1 s while
        # the node chatters, i.e. a's log writer is stuck in write().
        a.reading.clear()
        stalled_from = time.monotonic()
        seen: list[int] = []

        def full() -> bool:
            seen.append(pipe_fill(a)[0])
            recent = seen[-20:]
            return len(recent) == 20 and len(set(recent)) == 1 \
                and recent[0] >= pipe_fill(a)[1] // 2

        wait_until(full, 15, interval=0.05, message="a's stdout pipe to fill")
        filled_after = time.monotonic() - stalled_from - 1.0
        stuck_at = seen[-1]

        # For 5 W the sink stays stalled: the lease must keep being renewed by the
        # same holder and epoch, the same node keeps running, b stays standby.
        renewals: list[datetime] = []
        fills: set[int] = set()
        end = time.monotonic() + STALL
        while time.monotonic() < end:
            holder_now, epoch_now, renewed_at, db_now = row()
            if not renewals or renewed_at != renewals[-1]:
                renewals.append(renewed_at)
            why = (f"{time.monotonic() - stalled_from:.2f}s into the stall, last renewal "
                   f"{(db_now - renewals[-1]).total_seconds():.2f}s ago")
            assert (holder_now, epoch_now) == ("a", epoch), f"the lease changed hands; {why}"
            assert a.live_nodes() == [node], f"a's node was stopped; {why}"
            assert b.live_nodes() == [], f"b started a node; {why}"
            fills.add(pipe_fill(a)[0])
            time.sleep(0.05)
        gaps = [(y - x).total_seconds() for x, y in itertools.pairwise(renewals)]
        gaps.append((db_now - renewals[-1]).total_seconds())
        capacity = pipe_fill(a)[1]
        assert fills == {stuck_at}, "the sink did not stay stalled"

        # The sink comes back: the backlog is written, then one drop report.
        mark = a.mark()
        a.reading.set()
        report = a.wait_event("log_records_dropped", 30, since=0)
        assert report["count"] > 0
        assert a.live_nodes() == [node]
        assert not a.events("lease_lost") and not a.events("lease_renewal_overdue")

        # A planned stop still ends with its last lines written (flushed at exit).
        a.signal(signal.SIGTERM)
        assert a.exit_code(20) == 0
        wait_until(lambda: a.events("supervisor_exiting"), 10, message="a's last line")
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=10.0,
                    what="b to take over after a's stop")
    watch.assert_never_two()
    print(f"pipe ({stuck_at} of {capacity} B) full after {filled_after:.2f}s; "
          f"stalled {STALL:.0f}s with {len(renewals)} renewals seen, gaps max "
          f"{max(gaps):.3f}s mean {sum(gaps) / len(gaps):.3f}s (limit W - M = {W - M:.1f}s); "
          f"{report['count']} records dropped (since {report['since']}); "
          f"{mark} lines read before the stall")
    assert max(gaps) < W - M


def test_cluster_host_reads_by_default(tmp_path: Path) -> None:
    """The harness switch is on unless a test clears it."""
    host = Host(name="x", root=tmp_path, dsn="", lease_name="l", tag="t")
    assert host.reading.is_set()
