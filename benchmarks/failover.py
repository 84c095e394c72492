"""Failover benchmark: `python -m benchmarks.failover [--runs N] [--profile P] [--json FILE]`.

Starts a throwaway PostgreSQL (or uses CORDA_HA_TEST_DSN) and two supervisors
with a stand-in node, at one or both timing profiles:

- `lab`: U = 0.5 s, W = 2 s, stopTimeout = 0.5 s (as in the tests);
- `corda`: U = 2 s, W = 4 s, stopTimeout = 3 s (Corda's 20:40 ratio with a
  JVM-sized stop, scaled down 10x);

then measures, N times each:

- kill -9 of the active supervisor -> its node gone, the other host's node running;
- SIGTERM of the active supervisor -> the other host's node running (handover);
- SIGKILL of the node -> the node running again (crash-to-restart, backoff 0.2 s);
- resident memory of the active supervisor and of its guard.

Prints a table and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from tests.harness.cluster import cluster, start_pair
from tests.harness.pgserver import PgServer
from tests.harness.proc import pid_alive, wait_until

PROFILES = {
    "lab": {"update_ms": 500, "wait_ms": 2000, "stop_ms": 500},
    "corda": {"update_ms": 2000, "wait_ms": 4000, "stop_ms": 3000},
}


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "p50": statistics.median(values),
            "max": max(values)}


def kill_9(root: Path, dsn: str, kw: dict[str, int]) -> tuple[float, float]:
    with cluster(root / uuid.uuid4().hex[:8], dsn, f"bench-{uuid.uuid4().hex}") as c:
        a, b = start_pair(c, None, None, **kw)
        (node_a,) = a.live_nodes()
        t0 = time.monotonic()
        a.signal(signal.SIGKILL)
        wait_until(lambda: not pid_alive(node_a), 5, interval=0.002)
        gone = time.monotonic() - t0
        wait_until(lambda: b.live_nodes(), 10, interval=0.002)
        return gone, time.monotonic() - t0


def sigterm(root: Path, dsn: str, kw: dict[str, int]) -> float:
    with cluster(root / uuid.uuid4().hex[:8], dsn, f"bench-{uuid.uuid4().hex}") as c:
        a, b = start_pair(c, None, None, **kw)
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        wait_until(lambda: b.live_nodes(), 10, interval=0.002)
        return time.monotonic() - t0


def crash_restart(root: Path, dsn: str, kw: dict[str, int]) -> tuple[float, float, float]:
    with cluster(root / uuid.uuid4().hex[:8], dsn, f"bench-{uuid.uuid4().hex}") as c:
        a, _ = start_pair(c, None, None, **kw)
        assert a.proc is not None
        sup = psutil.Process(a.proc.pid)
        time.sleep(2 * kw["wait_ms"] / 1000)  # let it settle in `active` before measuring
        guards = [p for p in sup.children() if "supervisor.node.guard" in " ".join(p.cmdline())]
        rss_sup = sup.memory_info().rss / 2**20
        rss_guard = guards[0].memory_info().rss / 2**20 if guards else float("nan")
        (node_a,) = a.live_nodes()
        t0 = time.monotonic()
        os.kill(node_a, signal.SIGKILL)
        wait_until(lambda: [p for p in a.live_nodes() if p != node_a], 10, interval=0.002)
        return time.monotonic() - t0, rss_sup, rss_guard


def measure(server: PgServer, root: Path, profile: str, runs: int) -> dict[str, object]:
    kw = PROFILES[profile]
    w = kw["wait_ms"] / 1000
    gone, failover, handover, restart, rss, rss_guard = [], [], [], [], [], []
    for i in range(runs):
        g, f = kill_9(root, server.dsn, kw)
        gone.append(g)
        failover.append(f)
        handover.append(sigterm(root, server.dsn, kw))
        r, m, mg = crash_restart(root, server.dsn, kw)
        restart.append(r)
        rss.append(m)
        rss_guard.append(mg)
        print(f"{profile} run {i + 1}/{runs}: kill -9 failover {f:.3f}s, "
              f"handover {handover[-1]:.3f}s, restart {r:.3f}s, rss {m:.1f} MiB",
              file=sys.stderr)
    return {
        "intervals": {"update_s": kw["update_ms"] / 1000, "wait_s": w,
                      "stop_timeout_s": kw["stop_ms"] / 1000, "margin_s": min(2.0, w / 10)},
        "kill9_node_gone_s": summary(gone),
        "kill9_failover_s": summary(failover),
        "kill9_failover_in_W": summary([f / w for f in failover]),
        "sigterm_handover_s": summary(handover),
        "crash_to_restart_s": summary(restart),
        "supervisor_rss_mib": summary(rss),
        "guard_rss_mib": summary(rss_guard),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", choices=[*PROFILES, "both"], default="both")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    profiles = list(PROFILES) if args.profile == "both" else [args.profile]
    server = PgServer.from_environment()
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()}}
    try:
        with tempfile.TemporaryDirectory(prefix="corda-ha-bench-") as tmp:
            for profile in profiles:
                result[profile] = measure(server, Path(tmp), profile, args.runs)
    finally:
        server.destroy()
    for profile in profiles:
        figures = result[profile]
        assert isinstance(figures, dict)
        print(f"\nprofile {profile}: {figures['intervals']}")
        print(f"{'figure':<28}{'min':>10}{'p50':>10}{'max':>10}")
        for key, value in figures.items():
            if key == "intervals":
                continue
            print(f"{key:<28}{value['min']:>10.3f}{value['p50']:>10.3f}{value['max']:>10.3f}")
    print(f"machine: {result['machine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
