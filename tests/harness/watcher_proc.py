"""The overlap watcher's sampling process:
`python -m tests.harness.watcher_proc INTERVAL MAX_GAP`.

Runs apart from the test process (no GIL shared with the test's threads) and, where
allowed (root), under SCHED_FIFO, so that it samples on time on a loaded machine.

stdin, one line each time the set changes: `{"name": "record dir", ...}` (JSON).
stdout, JSON lines: `{"overlap": t, "alive": {...}}` at once for every sample that
saw more than one node; `{"stall": s, "before": [...], "after": [...]}` for every two
samples further apart than MAX_GAP, with the nodes (`"host:pid"`) each saw and
`"touched"`: the nodes whose record (`<pid>.json` in a host's record directory, written
at a node's start and again at its graceful stop) was written in between;
`{"samples": n, "max_gap": s, "rt": bool}` every 0.2 s and once more at the end (stdin
EOF).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from tests.harness.nodescan import scan_nodes


def main() -> int:
    interval, allowed = float(sys.argv[1]), float(sys.argv[2])
    rt = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        rt = False
    dirs: dict[str, str] = {}
    buf = b""
    samples = 0
    max_gap = 0.0
    last: float | None = None
    seen: list[str] = []
    wall_last = time.time()
    reported = time.monotonic()
    out = sys.stdout

    def report() -> None:
        out.write(json.dumps({"samples": samples, "max_gap": max_gap, "rt": rt}) + "\n")
        out.flush()

    while True:
        ready, _, _ = select.select([0], [], [], interval)
        if ready:
            data = os.read(0, 65536)
            if not data:
                report()
                return 0
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    dirs = dict(json.loads(line))
        alive = scan_nodes(dirs)
        now = time.monotonic()
        wall = time.time()
        nodes = sorted(f"{host}:{pid}" for host, pids in alive.items() for pid in pids)
        if last is not None:
            max_gap = max(max_gap, now - last)
            if now - last > allowed:
                out.write(json.dumps({"stall": now - last, "before": seen, "after": nodes,
                                      "touched": touched(dirs, wall_last, wall)}) + "\n")
                out.flush()
        last, seen, wall_last = now, nodes, wall
        samples += 1
        if sum(len(v) for v in alive.values()) > 1:
            out.write(json.dumps({"overlap": now, "alive": alive}) + "\n")
            out.flush()
        if samples == 1 or now - reported >= 0.2:  # the first report says "running"
            reported = now
            report()


def touched(dirs: dict[str, str], since: float, until: float) -> list[str]:
    """The nodes (`"host:pid"`) whose record was written within [since, until] (wall
    clock, as file times are), with a little room for the clocks' granularity."""
    found = []
    for host, directory in dirs.items():
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            try:
                mtime = entry.stat().st_mtime
            except OSError:
                continue
            if since - 0.01 <= mtime <= until + 0.01:
                found.append(f"{host}:{entry.name[:-5]}")
    return sorted(found)


if __name__ == "__main__":
    sys.exit(main())
