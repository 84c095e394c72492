"""Many pairs on one database: `python -m benchmarks.scale [--pairs 1,10,25,50]
[--steady S] [--json F] [--plot F]`.

For each N, N pairs of supervisors (two hosts each, the stand-in node, Corda's 1:2 ratio
scaled down: U = 2 s, W = 4 s, stop 3 s) contend for N leases in one throwaway
PostgreSQL (the suite's, `max_connections` raised to 1000). Once every pair has a node
running, a steady window of S seconds (default 30) measures:

- statements per second sent by all supervisors (`corda_ha_db_statements_total`);
- connections: per supervisor (max, mean) and in all (`pg_stat_activity`, by the
  `corda-ha-supervisor/<machine>` application name);
- CPU: the supervisors' (with their guards; the stand-in nodes left out) and the
  database's (every process of the server), in percent of one core, over the window;
- leases lost in the window (`lease_lost` events: a renewal not answered in time) and
  the pairs that did not have exactly one node at its end;
- lease statement latency p50/p99 as the supervisors see it, from their
  `corda_ha_lease_statement_seconds` histograms (interpolated within a bucket, as
  Prometheus' `histogram_quantile` does);

then one pair's failover while the others run: its holder's host is killed outright
(supervisor, guard and node) and the time is taken until the other host's node runs.

Prints a table, writes `--json` (default benchmarks/scale.json) and, where matplotlib is
installed (the `bench` extra), a PNG of the curves (`--plot`, default benchmarks/scale.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.harness.cluster import Cluster
from tests.harness.host import Host, http_get
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until

TIMING: dict[str, Any] = {"update_ms": 2000, "wait_ms": 4000, "stop_ms": 3000}
HERE = Path(__file__).parent
_SAMPLE = re.compile(rb'^(corda_ha_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+|NaN|\+Inf)$', re.M)
_LE = re.compile(rb'le="([^"]+)"')
_OP = re.compile(rb'op="([^"]+)"')


def scrape(port: int) -> dict[str, float]:
    """The statement counter's total (and per operation: key `op:<name>`) and the latency
    histogram's cumulative buckets (key `le:<bound>`) of one supervisor."""
    code, body = http_get(port, "/metrics")
    if code != 200:
        raise RuntimeError(f"/metrics on port {port}: HTTP {code}")
    out: dict[str, float] = {"statements": 0.0}
    for name, labels, value in _SAMPLE.findall(body):
        if name == b"corda_ha_db_statements_total":
            out["statements"] += float(value)
            op = _OP.search(labels or b"")
            if op is not None:
                key = f"op:{op.group(1).decode()}"
                out[key] = out.get(key, 0.0) + float(value)
        elif name == b"corda_ha_lease_statement_seconds_bucket":
            le = _LE.search(labels or b"")
            if le is not None:
                key = f"le:{le.group(1).decode()}"
                out[key] = out.get(key, 0.0) + float(value)
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """`histogram_quantile(q, ...)` over cumulative `buckets` {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return None


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def supervisor_procs(hosts: list[Host]) -> list[psutil.Process]:
    """Every supervisor and guard of `hosts` (not the stand-in nodes)."""
    out = []
    for h in hosts:
        for p in h.tree():
            with contextlib.suppress(psutil.Error):
                if "fake_node.py" not in " ".join(p.cmdline()):
                    out.append(p)
    return out


def server_procs(server: PgServer) -> list[psutil.Process]:
    with open(os.path.join(server.datadir, "postmaster.pid")) as f:
        postmaster = psutil.Process(int(f.readline()))
    return [postmaster, *postmaster.children(recursive=True)]


def connections(server: PgServer) -> dict[str, float]:
    rows = server.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE application_name LIKE 'corda-ha-supervisor/%' GROUP BY 1")
    counts = [int(n) for _, n in rows]
    return {"total": float(sum(counts)), "per_supervisor_max": float(max(counts, default=0)),
            "per_supervisor_mean": sum(counts) / len(counts) if counts else 0.0}


@contextlib.contextmanager
def pairs(server: PgServer, root: Path, n: int) -> Iterator[list[Cluster]]:
    clusters: list[Cluster] = []
    try:
        # pair by pair, as hosts come up in a real estate (100 interpreters started at
        # once on 2 cores only measure the start-up storm)
        for i in range(n):
            c = Cluster(root / f"pair{i}", server.dsn, f"scale-{uuid.uuid4().hex[:12]}")
            clusters.append(c)
            for name in ("a", "b"):
                c.add(f"p{i}{name}", **TIMING).start()
            one_node(c, 120)
        for c in clusters:
            for h in c.hosts:
                h.health_port(60)
        yield clusters
    finally:
        for c in clusters:
            with contextlib.suppress(Exception):
                c.close()


def nodes(c: Cluster) -> int:
    """How many nodes the pair runs right now."""
    return sum(len(h.live_nodes()) for h in c.hosts)


def one_node(c: Cluster, timeout: float) -> None:
    """Wait until exactly one of the pair's hosts runs a node; else say what each has."""
    try:
        wait_until(lambda: nodes(c) == 1, timeout,
                   message=f"{c.lease_name}: one node running")
    except AssertionError as e:
        seen = {h.name: (h.live_nodes(), h.state()) for h in c.hosts}
        raise AssertionError(f"{e}; nodes and supervisor state by host: {seen}") from None


def lease_losses(hosts: list[Host]) -> int:
    """`lease_lost` events the hosts have logged so far."""
    return sum(len(h.events("lease_lost")) for h in hosts)


def failover(c: Cluster) -> float:
    """Kill the holder's whole host; seconds until the other host's node runs."""
    holder = next(h for h in c.hosts if h.live_nodes())
    other = next(h for h in c.hosts if h is not holder)
    procs = holder.tree()
    t0 = time.monotonic()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    wait_until(lambda: bool(other.live_nodes()), 60, interval=0.01,
               message=f"{other.name}'s node after {holder.name} was killed")
    return time.monotonic() - t0


def measure(server: PgServer, root: Path, n: int, steady: float) -> dict[str, Any]:
    with pairs(server, root, n) as clusters:
        hosts = [h for c in clusters for h in c.hosts]
        ports = [h.health_port() for h in hosts]
        time.sleep(2 * TIMING["wait_ms"] / 1000)  # settled: members known, renewing
        sup, db = supervisor_procs(hosts), server_procs(server)
        before = [scrape(p) for p in ports]
        lost_before = lease_losses(hosts)
        cpu0 = cpu_seconds(sup), cpu_seconds(db)
        t0 = time.monotonic()
        time.sleep(steady)
        conns = connections(server)
        after = [scrape(p) for p in ports]
        cpu1 = cpu_seconds(sup), cpu_seconds(db)
        elapsed = time.monotonic() - t0
        lost = lease_losses(hosts) - lost_before
        not_one = sum(1 for c in clusters if nodes(c) != 1)
        buckets: dict[float, float] = {}
        for b, a in zip(before, after, strict=True):
            for key, value in a.items():
                if key.startswith("le:"):
                    bound = float(key[3:])
                    buckets[bound] = buckets.get(bound, 0.0) + value - b.get(key, 0.0)
        statements = sum(a["statements"] - b["statements"] for b, a in zip(before, after,
                                                                          strict=True))
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        per_op: dict[str, float] = {}
        for b, a in zip(before, after, strict=True):
            for key, value in a.items():
                if key.startswith("op:"):
                    per_op[key[3:]] = per_op.get(key[3:], 0.0) + value - b.get(key, 0.0)
        return {
            "pairs": n, "supervisors": len(hosts), "steady_seconds": round(elapsed, 2),
            "statements_per_second": round(statements / elapsed, 1),
            "statements_per_second_by_op": {op: round(v / elapsed, 2)
                                            for op, v in sorted(per_op.items()) if v},
            "connections": conns,
            "leases_lost_in_window": lost,
            "pairs_without_one_node_at_end": not_one,
            "supervisors_cpu_percent": round(100 * (cpu1[0] - cpu0[0]) / elapsed, 1),
            "database_cpu_percent": round(100 * (cpu1[1] - cpu0[1]) / elapsed, 1),
            "lease_statement_p50_ms": None if p50 is None else round(1000 * p50, 2),
            "lease_statement_p99_ms": None if p99 is None else round(1000 * p99, 2),
            "failover_seconds": round(failover(clusters[0]), 3),
        }


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = [r["pairs"] for r in results]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("statements per second", ["statements_per_second"]),
        ("CPU, % of one core", ["supervisors_cpu_percent", "database_cpu_percent"]),
        ("lease statement latency, ms", ["lease_statement_p50_ms", "lease_statement_p99_ms"]),
        ("one pair's failover, s", ["failover_seconds"]),
    ]
    for ax, (title, keys) in zip(axes.flat, panels, strict=True):
        for key in keys:
            ax.plot(n, [r[key] if r[key] is not None else float("nan") for r in results],
                    marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("pairs on one database")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(results)} runs, U = 2 s, W = 4 s; {platform.node()}, "
                 f"{os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="1,10,25,50")
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=HERE / "scale.json")
    parser.add_argument("--plot", type=Path, default=HERE / "scale.png")
    args = parser.parse_args(argv)
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries found")
    server = PgServer.create(bindir)
    results = []
    try:
        server.execute("ALTER SYSTEM SET max_connections = 1000")
        server.restart()
        with tempfile.TemporaryDirectory(prefix="corda-ha-scale-") as root:
            for n in (int(x) for x in args.pairs.split(",")):
                r = measure(server, Path(root) / f"n{n}", n, args.steady)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        server.destroy()
    machine = {"host": platform.node(), "cpus": os.cpu_count(),
               "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
               "python": platform.python_version(), "load_at_end": os.getloadavg()}
    args.json.write_text(json.dumps({
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine, "timing": TIMING, "results": results}, indent=2) + "\n")
    print_table(results)
    if plot(results, args.plot):
        print(f"plot: {args.plot}")
    else:
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    cols = ["pairs", "statements_per_second", "supervisors_cpu_percent",
            "database_cpu_percent", "lease_statement_p50_ms", "lease_statement_p99_ms",
            "failover_seconds"]
    print("  ".join(f"{c:>14.14}" for c in [*cols, "conns total", "conns/sup max"]))
    for r in results:
        cells = [r[c] for c in cols] + [r["connections"]["total"],
                                         r["connections"]["per_supervisor_max"]]
        print("  ".join(f"{c!s:>14.14}" for c in cells))


if __name__ == "__main__":
    raise SystemExit(main())
