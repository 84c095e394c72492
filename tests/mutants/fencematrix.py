"""`python -m tests.mutants.fencematrix`: which scenarios kill which fence mutant, in process.

For writing scenarios, not a verdict (that is the generated run, on scratch copies):
each generated fence mutant (`--only PREFIX`: those whose key starts so) is applied in
process (`fenceapply.py`) in a world of its own on throwaway servers (PostgreSQL of the
system, and the embedded 18 when installed), and the scenarios of its family are run:
the function's or statement's own (`--named`: only the one `fencekills` names). It prints,
per mutant, the scenarios that killed it, the named one marked with `*`; `ALIVE` when
none did. Minutes for every mutant: scenarios that wait for a deadline take seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from supervisor.demo.postgres import embedded_bindir
from tests.harness import fencecall, fenceworld
from tests.harness.fenceworld import World
from tests.harness.pgserver import PgServer
from tests.mutants.fenceapply import apply
from tests.mutants.fencecases import BIND, CONFIRM, CORDA, END, LOCK, READ_AND_POLICIES
from tests.mutants.fencegen import FenceMutant, generate
from tests.mutants.fencekills import kills
from tests.test_fence_predicates import expected

FAMILIES: dict[str, dict[str, Any]] = {"confirm": CONFIRM, "lock": LOCK, "end": END,
                                       "bind": BIND, "read": READ_AND_POLICIES}
POLICY_SCENARIOS = {**READ_AND_POLICIES, "ok": CONFIRM["ok"], "lock": LOCK["lock"]}


def scenarios(m: FenceMutant) -> dict[str, Any]:
    if m.file.endswith("cordarow.py"):
        return CORDA
    return FAMILIES.get(m.statement, POLICY_SCENARIOS)


def killed(m: FenceMutant, name: str, sc: Any, worlds: dict[int, World]) -> bool:
    """Whether scenario `name` tells the mutant apart from the code."""
    if name in CORDA:
        applied = apply(m, worlds[15])
        answer, after = fencecall.run_corda(worlds[15].server, sc, take=applied.take or
                                            fencecall.make_takeable,
                                            look_at=applied.look or fencecall.look)
        return bool(answer != sc.expect or after != {r[0]: r[2] for r in sc.rows} | sc.after)
    if sc.server not in worlds:
        return False
    w = worlds[sc.server]
    applied = apply(m, w)
    with mock.patch.object(fencecall, "FenceSql", applied.fence_sql or fencecall.FenceSql):
        seen = (fencecall.run_wait if sc.wait else fencecall.run)(w, sc, applied.pre)
    return bool(seen != expected(w, sc))


@contextlib.contextmanager
def worlds(tmp: Path) -> Iterator[dict[int, World]]:
    with contextlib.ExitStack() as stack:
        out: dict[int, World] = {}
        servers = [(15, PgServer.from_environment())]
        newer = embedded_bindir()
        if newer is not None:
            servers.append((18, PgServer.create(str(newer.bindir))))
        for version, server in servers:
            stack.callback(server.destroy)
            (tmp / str(version)).mkdir()
            out[version] = stack.enter_context(fenceworld.world(server, tmp / str(version)))
        yield out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutants.fencematrix", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", metavar="PREFIX", help="mutant keys starting so")
    p.add_argument("--named", action="store_true", help="only the scenario fencekills names")
    args = p.parse_args(argv)
    named = kills()
    alive = 0
    with tempfile.TemporaryDirectory() as tmp, worlds(Path(tmp)) as ws:
        for m in generate():
            if not m.key.startswith(args.only):
                continue
            family = scenarios(m)
            if args.named:
                family = {k: v for k, v in {**family, **CORDA}.items() if k == named.get(m.key)}
            found = [name for name, sc in family.items() if killed(m, name, sc, ws)]
            alive += not found
            marks = [f"*{n}" if n == named.get(m.key) else n for n in found]
            print(f"{'ALIVE ' if not found else ''}{m.key}: {', '.join(marks)}", flush=True)
    return 1 if alive else 0


if __name__ == "__main__":
    sys.exit(main())
