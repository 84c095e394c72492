"""A generated fence mutant applied in process, to a world of `tests/harness/fenceworld.py`.

The generated run (`python -m tests.mutants --generated`) applies a mutant to the source
file of a scratch copy, whose tests then install it as `schema` prints it. The fast
checks do the same in process: the mutated source file is executed as a module of its
own and what it would print is run first in a scenario's rolled-back transaction: the
mutated function (`CREATE OR REPLACE FUNCTION`), or the mutated policies (`DROP POLICY`,
`CREATE POLICY`), filled in for the world exactly as `schema` fills them. A mutant of a
statement the supervisor runs itself (the status read, Corda's lock row) is a mutated
`FenceSql` or `make_takeable` / `look` instead (`Applied`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.lease import fence_check, fence_sql, ownership
from supervisor.lease.ownership import OwnedTables, column_types
from tests.harness.fenceworld import World
from tests.mutants.fencegen import FenceMutant
from tests.mutants.runner import REPO

#: the module constant of each function body
BODIES = {"confirm": (fence_check, "CONFIRM_BODY"), "lock": (fence_sql, "LOCK_BODY"),
          "end": (fence_sql, "END_BODY"), "bind": (fence_sql, "BIND_BODY")}


@dataclass
class Applied:
    """What a mutant changes in process: statements to run first in the scenario's
    transaction, and the supervisor's own callables it replaces."""

    pre: list[str] = field(default_factory=list)
    fence_sql: type | None = None  # a mutated FenceSql (the status read)
    take: Callable[..., Any] | None = None  # a mutated make_takeable
    look: Callable[..., Any] | None = None  # a mutated look


def mutated_module(m: FenceMutant) -> types.ModuleType:
    """The mutant's source file, mutated, executed as a module of its own."""
    source = (REPO / m.file).read_text()
    assert source.count(m.literal.segment) == 1, m.key
    text = source.replace(m.literal.segment, m.replacement(), 1)
    name = f"mutated_{m.file.replace('/', '_').removesuffix('.py')}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # its dataclasses need it while they are made
    try:
        exec(compile(text, m.file, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


def _columns(w: World) -> dict[str, list[tuple[str, str]]]:
    """Each table's columns, as `schema` gives them to the confirm check."""
    f, t = w.fence, OwnedTables.of(w.one.schema, w.one.table)
    return {f.lease_table.as_string(None): column_types(t.create_lease),
            f.member_table.as_string(None): column_types(t.create_member),
            f.history_table.as_string(None): column_types(t.create_history),
            f.access_table.as_string(None): column_types(t.create_access),
            f.binding.as_string(None): column_types(f.create_binding)}


def _fence_ddl(module: types.ModuleType, w: World) -> list[str]:
    return list(module.fence_ddl(module.FenceSql(w.one.schema, w.one.table), owner=w.one.owner,
                                 fencer=w.one.fencer, node_group=w.one.group,
                                 supervisor_role=w.one.supervisor, columns=_columns(w)))


def _policies(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith(("DROP POLICY", "CREATE POLICY"))]


def apply(m: FenceMutant, w: World) -> Applied:
    """The mutant in process (see the module docstring)."""
    if m.statement in BODIES:
        module, constant = BODIES[m.statement]
        full = getattr(module, constant)
        assert full.count(m.literal.template) == 1, m.key
        values = fence_sql._values_for(w.fence, owner=w.one.owner, fencer=w.one.fencer,
                                       node_group=w.one.group, columns=_columns(w))
        body = full.replace(m.literal.template, m.mutated)
        return Applied(pre=[fence_sql._fill(body, values)])
    module = mutated_module(m)
    if m.file == "supervisor/lease/ownership.py":
        ddl = module.owner_ddl(module.OwnedTables.of(w.one.schema, w.one.table),
                               owner=w.one.owner, supervisor_role=w.one.supervisor,
                               lease_name=w.one.lease_name, schema=w.one.schema)
        return Applied(pre=_policies(ddl))
    if m.statement == "read":
        return Applied(fence_sql=module.FenceSql)
    if m.file == "supervisor/lease/fence_sql.py":
        return Applied(pre=_policies(_fence_ddl(module, w)))
    assert m.file == "supervisor/lease/cordarow.py", m.key
    return Applied(take=module.make_takeable, look=module.look)


def unmutated_policies(w: World) -> list[str]:
    """The policies as `schema` prints them (what a policy mutant replaces)."""
    ddl = ownership.owner_ddl(OwnedTables.of(w.one.schema, w.one.table), owner=w.one.owner,
                              supervisor_role=w.one.supervisor, lease_name=w.one.lease_name,
                              schema=w.one.schema)
    return _policies(list(ddl)) + _policies(_fence_ddl(fence_sql, w))
