"""All benchmarks side by side: `python -m benchmarks [--runs N] [--steady S] [--json F]`.

For each timing profile (lab: U = 0.5 s, W = 2 s, S = 0.5 s; corda: U = 2 s, W = 4 s,
S = 3 s, Corda's 20:40 ratio with a JVM-sized stop, scaled down 10x), on a throwaway
PostgreSQL (or CORDA_HA_TEST_DSN), with two supervisors and the stand-in node:

- failover after kill -9 of the active supervisor (to the other node running), handover
  after SIGTERM, crash-to-restart: seconds, and as a multiple of W;
- database statements per minute sent by the holder and by the standby in steady state
  (from their `corda_ha_db_statements_total`);
- memory of the active supervisor and its guard: RSS, and PSS/USS (RSS counts the
  interpreter's and the libraries' pages that both processes share).

Prints one table with a column per profile; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from benchmarks.failover import PROFILES, measure
from tests.harness.cluster import cluster, start_pair
from tests.harness.host import http_get
from tests.harness.pgserver import PgServer

_STATEMENT = re.compile(rb'^corda_ha_db_statements_total\{op="[^"]+"\} ([0-9.e+]+)$', re.M)


def statements(port: int) -> float:
    code, body = http_get(port, "/metrics")
    assert code == 200
    return sum(float(v) for v in _STATEMENT.findall(body))


def memory(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss": info.rss / 2**20, "pss": info.pss / 2**20, "uss": info.uss / 2**20}


def steady(server: PgServer, root: Path, profile: str, seconds: float) -> dict[str, Any]:
    kw = PROFILES[profile]
    with cluster(root / uuid.uuid4().hex[:8], server.dsn, f"bench-{uuid.uuid4().hex}") as c:
        a, b = start_pair(c, None, None, **kw)
        time.sleep(2 * kw["wait_ms"] / 1000)  # settled: renewing / polling, members known
        ports = a.health_port(), b.health_port()
        before = [statements(p) for p in ports]
        t0 = time.monotonic()
        time.sleep(seconds)
        after = [statements(p) for p in ports]
        minutes = (time.monotonic() - t0) / 60
        sup = psutil.Process(a.supervisor_pid())
        guard = next(p for p in sup.children() if "supervisor.node.guard" in " ".join(p.cmdline()))
        return {
            "holder_statements_per_min": (after[0] - before[0]) / minutes,
            "standby_statements_per_min": (after[1] - before[1]) / minutes,
            "supervisor_mib": memory(sup.pid),
            "guard_mib": memory(guard.pid),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="failovers etc. per profile")
    parser.add_argument("--steady", type=float, default=30.0,
                        help="seconds of steady state for the statement counts")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    server = PgServer.from_environment()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "platform": platform.platform(),
                                          "python": platform.python_version()}}
    try:
        with tempfile.TemporaryDirectory(prefix="corda-ha-bench-") as tmp:
            for profile in PROFILES:
                result[profile] = {"timings": measure(server, Path(tmp), profile, args.runs),
                                   "steady": steady(server, Path(tmp), profile, args.steady)}
    finally:
        server.destroy()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def print_table(result: dict[str, Any]) -> None:
    profiles = list(PROFILES)
    rows: list[tuple[str, list[str]]] = []

    def timing(label: str, key: str) -> None:
        cells = []
        for p in profiles:
            t = result[p]["timings"]
            w = t["intervals"]["wait_s"]
            cells.append(f"{t[key]['p50']:.3f} s = {t[key]['p50'] / w:.2f} W "
                         f"(max {t[key]['max'] / w:.2f} W)")
        rows.append((label, cells))

    rows.append(("intervals (U / W / S)", [
        "{update_s:g} / {wait_s:g} / {stop_timeout_s:g} s".format(**result[p]["timings"]
                                                                   ["intervals"])
        for p in profiles]))
    timing("failover after kill -9 (p50)", "kill9_failover_s")
    timing("handover after SIGTERM (p50)", "sigterm_handover_s")
    timing("crash to restart (p50)", "crash_to_restart_s")
    for who in ("holder", "standby"):
        rows.append((f"statements / min, {who}", [
            f"{result[p]['steady'][f'{who}_statements_per_min']:.0f}" for p in profiles]))
    for proc in ("supervisor", "guard"):
        rows.append((f"{proc} memory RSS / PSS / USS", [
            "{rss:.1f} / {pss:.1f} / {uss:.1f} MiB".format(**result[p]["steady"][f"{proc}_mib"])
            for p in profiles]))
    rows.append(("supervisor + guard RSS / PSS", [
        "{:.1f} / {:.1f} MiB".format(
            result[p]["steady"]["supervisor_mib"]["rss"] + result[p]["steady"]["guard_mib"]["rss"],
            result[p]["steady"]["supervisor_mib"]["pss"] + result[p]["steady"]["guard_mib"]["pss"])
        for p in profiles]))
    width = max(len(r[0]) for r in rows)
    cols = [max(len(p), *(len(r[1][i]) for r in rows)) for i, p in enumerate(profiles)]
    print(f"{'figure':<{width}}  " + "  ".join(f"{p:<{c}}" for p, c in zip(profiles, cols,
                                                                          strict=True)))
    for label, cells in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{v:<{c}}" for v, c in zip(cells, cols,
                                                                          strict=True)))
    print(f"runs per figure: {result[profiles[0]]['timings']['kill9_failover_s']['n']}; "
          f"machine: {result['machine']}; medians across runs: "
          "p50 is the median")


if __name__ == "__main__":
    raise SystemExit(main())
