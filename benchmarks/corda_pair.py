"""Restart loop versus supervisor, both with Corda's own guard on:
`python -m benchmarks.corda_pair [--runs N] [--json FILE]`.

The way to run hot-cold today without a supervisor: each host runs the node in a
restart loop (`while true; do java ...; done`) and relies on Corda's own guard
(`node_mutual_exclusion`): the cold node keeps failing to become the master, sleeping
waitInterval and exiting, until the hot node's row goes stale. Against it: two
supervisors (node.conf as the one source, readiness by Corda's registered line).

Both run the JVM stand-in (tests/jvm/CordaStandIn.java: Corda's RunOnceService
behaviour) with updateInterval 0.5 s, waitInterval 2 s and a 0.5 s boot delay, on a
throwaway PostgreSQL. Each run kills the active host outright (every process of it:
for the supervisor, the supervisor, its guard and the node) and measures the time
until the other host's node is ready (its P2P port answers with its name). Prints
p50 and max for both and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.harness import jvmnode
from tests.harness.cluster import cluster
from tests.harness.cordapair import CordaHost, add_corda_host
from tests.harness.haproxy import ask
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import reaping

W = 2.0


def wait_answer(port: int, name: str, timeout: float, since: float | None = None) -> float:
    """Seconds from `since` (default: now) until 127.0.0.1:port answers `name` (polled
    every 5 ms)."""
    t0 = time.monotonic() if since is None else since
    while time.monotonic() - t0 < timeout:
        if ask("127.0.0.1", port, timeout=0.5) == name:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise TimeoutError(f"{name} not ready within {timeout} s")


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant at once (a host that dies)."""
    with contextlib.suppress(psutil.Error):
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=5)


def restart_loop(server: PgServer, root: Path, runs: int) -> list[float]:
    """Both hosts in `while true; do java ...; done`; kill the active host's loop and node."""
    schema = f"loop_{uuid.uuid4().hex[:8]}"
    server.execute(f'CREATE SCHEMA "{schema}"')
    times: list[float] = []
    with reaping() as reaper:
        hosts: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

        def start(name: str) -> None:
            conf = jvmnode.NodeConf.for_dsn(server.dsn, name, update_ms=500, wait_ms=int(W * 1000),
                                            p2p_port=hosts[name][1] if name in hosts
                                            else free_port())
            conf.jdbc_url += f"?currentSchema={schema}"
            conf.write(root / name / "node.conf")
            cmd = " ".join(f"'{a}'" for a in jvmnode.command("--boot-delay", "500"))
            loop = reaper.popen(["sh", "-c", f"while true; do {cmd}; sleep 0.2; done"],
                                cwd=str(root / name), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
            hosts[name] = (loop, conf.p2p_port)

        (root / "a").mkdir(parents=True)
        (root / "b").mkdir(parents=True)
        start("a")
        wait_answer(hosts["a"][1], "a", 60)
        start("b")
        active, other = "a", "b"
        for i in range(runs):
            time.sleep(2 * W)  # the cold loop keeps failing meanwhile, as in production
            died = time.monotonic()
            kill_tree(hosts[active][0].pid)
            took = wait_answer(hosts[other][1], other, 60, since=died)
            times.append(took)
            print(f"restart loop run {i + 1}/{runs}: {other}'s node ready {took:.3f} s after "
                  f"{active} died")
            start(active)  # the host comes back, in its loop
            active, other = other, active
    return times


def supervisors(server: PgServer, root: Path, runs: int) -> list[float]:
    """Two supervisors; kill the active host (supervisor, guard and node at once)."""
    schema = f"sup_{uuid.uuid4().hex[:8]}"
    server.execute(f'CREATE SCHEMA "{schema}"')
    times: list[float] = []
    with cluster(root, server.dsn, "unused") as c:
        hosts: dict[str, CordaHost] = {}
        ports: dict[str, tuple[int, int]] = {}

        def start(name: str) -> CordaHost:
            host = add_corda_host(c, name, schema)
            assert host.node_conf is not None
            if name in ports:
                host.node_conf.p2p_port, host.node_conf.rpc_port = ports[name]
            ports[name] = (host.node_conf.p2p_port, host.node_conf.rpc_port or 0)
            host.start()
            hosts[name] = host
            return host

        start("a").wait_event("node_ready", 60)
        start("b").wait_event("lease_seen", 30, match=lambda e: e["holder"] == "a")
        active, other = "a", "b"
        for i in range(runs):
            time.sleep(2 * W)
            died = time.monotonic()
            kill_tree(hosts[active].supervisor_pid())
            took = wait_answer(ports[other][0], other, 60, since=died)
            times.append(took)
            print(f"supervisor run {i + 1}/{runs}: {other}'s node ready {took:.3f} s after "
                  f"{active} died")
            back = start(active)
            back.wait_event("lease_seen", 30, match=_held_by(other))
            active, other = other, active
    return times


def _held_by(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["holder"] == name


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "max": max(values),
            "min": min(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    reason = jvmnode.missing()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 69
    server = PgServer.from_environment()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "W_s": W,
                              "boot_delay_s": 0.5}
    try:
        with tempfile.TemporaryDirectory(prefix="corda-ha-pair-") as tmp:
            result["restart_loop"] = summary(restart_loop(server, Path(tmp) / "loop", args.runs))
            result["supervisor"] = summary(supervisors(server, Path(tmp) / "sup", args.runs))
    finally:
        server.destroy()
    loop, sup = result["restart_loop"], result["supervisor"]
    print(f"\n{'death of the active host -> other node ready':<46}{'p50':>9}{'max':>9}")
    print(f"{'restart loop + Corda guard':<46}{loop['p50']:>8.3f}s{loop['max']:>8.3f}s")
    print(f"{'supervisor + Corda guard':<46}{sup['p50']:>8.3f}s{sup['max']:>8.3f}s")
    print(f"ratio (loop / supervisor): p50 {loop['p50'] / sup['p50']:.2f}, "
          f"max {loop['max'] / sup['max']:.2f}; W = {W} s, boot delay 0.5 s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
