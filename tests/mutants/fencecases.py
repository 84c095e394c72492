"""The scenarios that kill the generated mutants of the fence's SQL (`fencegen.py`).

Each runs in the world of `tests/harness/fenceworld.py` (two pairs as `schema` prints them, the
database clock held at `T0`; times here are seconds relative to it), in a transaction
that is rolled back: `setup` (statements of the DBA, with the world's names as `{a}`,
`{sup}`, `{history_table}`, ...), then one call, by `caller`, whose arguments default to
`ARGS`. `expect` is what the call answers: the confirm check's problem (None: sound),
the lock or end call's rows `(role, action, sessions)`, bind's answer, a statement's
rows, or `Failed(sqlstate, message)`; names in messages written as `{key}`. What it
leaves is checked too: `login` (node roles whose LOGIN differs from the set-up, where
every one can log in), `bindings` (rows that differ: `(lease, machine, locked by epoch,
locked at)`, or None for no row), `ended` (the sessions, connected before, that it
ended), `admin` (PostgreSQL 16+, where the `server` is 18: the roles the fencer
administers, when not a, b, c and d). Corda's lock row scenarios (`CORDA`) are the
store's own statements on a schema of their own (`tests/test_fence_predicates.py`).
The confirm check's scenarios are in `fencecheckcases.py`, the shape of a scenario in
`fencescenario.py`; `tests/mutants/fencekills.py` says which scenario kills which mutant.
"""

from __future__ import annotations

from typing import Any

from tests.harness.fencecall import Failed
from tests.harness.fenceworld import LEASE, LEASE2
from tests.mutants.fencecheckcases import CONFIRM
from tests.mutants.fencescenario import (
    HOLDER,
    HOLDER_LOST,
    NOT_HOLDER,
    REFUSED,
    TWIN,
    CordaScenario,
    Scenario,
    W,
    held,
    row,
)

__all__ = ["CONFIRM", "CORDA", "SCENARIOS", "CordaScenario", "Scenario", "W"]

LOCKED_A_BY_4 = ("ALTER ROLE {a} NOLOGIN", "UPDATE {binding} SET locked_by_epoch = 4, "
                 "locked_at = {T0} - interval '100 s' WHERE node_role = '{a}'")
LOCKED_B_BY_4 = ("ALTER ROLE {b} NOLOGIN", "UPDATE {binding} SET locked_by_epoch = 4, "
                 "locked_at = {T0} - interval '100 s' WHERE node_role = '{b}'")
LOCKED_B = ("ALTER ROLE {b} NOLOGIN", "UPDATE {binding} SET locked_by_epoch = 5, "
            "locked_at = {T0} WHERE node_role = '{b}'")  # what the lock call left
LOCKED_D = ("ALTER ROLE {d} NOLOGIN", "UPDATE {binding} SET locked_by_epoch = 3, "
            "locked_at = {T0} - interval '50 s' WHERE node_role = '{d}'")
B_LOCKED_BY_5 = {"b": (LEASE, "b", 5, 0.0)}
LOCKS_B: dict[str, Any] = dict(expect=[("a", "can log in", 0), ("b", "locked", 0)],
                              login={"b": False}, bindings=B_LOCKED_BY_5)
OUT_OF_GROUP = Failed(REFUSED, "node role {b} is not a member of the node group {group}: "
                               "GRANT {group} TO {b}")


def lock(**kw: Any) -> Scenario:
    return Scenario("lock", **kw)


LOCK: dict[str, Scenario] = {
    "lock": lock(**LOCKS_B),
    "lock-refused": lock(setup=("REVOKE {group} FROM {b}",), expect=OUT_OF_GROUP),
    "lock-twin-lease": lock(lease=held(-5.0), lease2=TWIN, expect=HOLDER_LOST),
    "lock-other-instance": lock(lease=row(HOLDER, instance="inst-b"), expect=HOLDER_LOST),
    "lock-old-epoch": lock(args={"epoch": 4}, expect=Failed(
        NOT_HOLDER, "not the holder of lease corda-node at epoch 4")),
    "lock-expired": lock(lease=held(-5.0), expect=HOLDER_LOST),
    "lock-expires-now": lock(lease=held(0.0), expect=HOLDER_LOST),
    "lock-expired-0.5s": lock(lease=held(-0.5), expect=HOLDER_LOST),
    "lock-expires-in-0.5s": lock(lease=held(0.5), **LOCKS_B),
    "lock-own-role-locked-out": lock(
        setup=LOCKED_A_BY_4, expect=[("a", "unlocked", 0), ("b", "locked", 0)],
        login={"b": False}, bindings=B_LOCKED_BY_5,
        why="our own role, locked out by the other host's fence at epoch 4, unlocked"),
    "lock-other-pair-locked-out": lock(setup=LOCKED_D, login={"b": False, "d": False},
                                       expect=LOCKS_B["expect"],
                                       bindings={**B_LOCKED_BY_5, "d": (LEASE2, "d", 3, -50.0)}),
    "lock-again": lock(setup=LOCKED_B_BY_4, expect=[("a", "can log in", 0),
                                                   ("b", "still locked", 0)],
                       login={"b": False}, bindings={"b": (LEASE, "b", 4, -100.0)}),
}


def end(**kw: Any) -> Scenario:
    kw.setdefault("setup", LOCKED_B)
    kw.setdefault("login", {"b": False})
    kw.setdefault("bindings", B_LOCKED_BY_5)
    return Scenario("end", **kw)


ENDS_B: dict[str, Any] = dict(sessions=("a", "b", "c"), expect=[("b", "locked", 1)],
                              ended=("b",))
#: the holder check before a signal decides: b's session is left
B_SESSION_LEFT: dict[str, Any] = dict(sessions=("b",), expect=HOLDER_LOST)
#: no session: only the first holder check decides (the one before a signal never runs)
FIRST_CHECK: dict[str, Any] = dict(expect=HOLDER_LOST)
LATER = 2  # the end call's clock reads before its check right before a signal


def _at_read(action: str) -> tuple[tuple[int, float, str | None], ...]:
    """The clock at T0 throughout; `action` runs at the end call's second read: while
    its first holder check reads the clock (after it compared the rest of the row)."""
    return ((0, 0.0, None), (1, 0.0, action))


END: dict[str, Scenario] = {
    "end": end(**ENDS_B),
    "end-refused": end(setup=(*LOCKED_B, "REVOKE {group} FROM {b}"), sessions=("b",),
                       expect=OUT_OF_GROUP),
    "end-twin-lease": end(lease=held(-5.0), lease2=TWIN, **FIRST_CHECK),
    "end-other-instance": end(lease=row(HOLDER, instance="inst-b"), **FIRST_CHECK),
    "end-old-epoch": end(args={"epoch": 4}, expect=Failed(
        NOT_HOLDER, "not the holder of lease corda-node at epoch 4")),
    "end-expired": end(lease=held(-5.0), **FIRST_CHECK),
    "end-expires-now": end(lease=held(0.0), **FIRST_CHECK),
    "end-expired-0.5s": end(lease=held(-0.5), **FIRST_CHECK),
    "end-expires-in-0.5s": end(lease=held(0.5), sessions=("b",), expect=[("b", "locked", 1)],
                               ended=("b",)),
    "end-can-log-in": end(setup=(), login={}, bindings={}, sessions=("b",),
                          expect=[("b", "can log in", 0)],
                          why="unlocked meanwhile (a newer holder): its session left alone"),
    "end-can-log-in-no-session": end(setup=(), login={}, bindings={},
                                     expect=[("b", "can log in", 0)]),
    "end-lease-runs-out-before-the-signal": end(
        lease=held(0.5, -1.0), clock=((0, 0.0, None), (LATER, 1.0, None)),
        **B_SESSION_LEFT, why="valid at the first check, 0.5 s past at the one before the "
                              "signal"),
    "end-lease-expires-at-the-signal": end(
        lease=held(0.5, -1.0), clock=((0, 0.0, None), (LATER, 0.5, None)), **B_SESSION_LEFT),
    "end-taken-over-before-the-signal": end(
        clock=_at_read("UPDATE {lease_table} SET instance = 'inst-x' "
                       "WHERE lease_name = 'corda-node'"), **B_SESSION_LEFT),
    "end-next-epoch-before-the-signal": end(
        clock=_at_read("UPDATE {lease_table} SET epoch = 6 WHERE lease_name = 'corda-node'"),
        **B_SESSION_LEFT),
    "end-runs-out-beside-a-twin": end(
        lease2=TWIN, clock=_at_read("UPDATE {lease_table} SET expires_at = {T0} - "
                                    "interval '1 s' WHERE lease_name = 'corda-node'"),
        **B_SESSION_LEFT),
    "end-waits-for-the-deadline": end(
        sessions=("b",), wait=True,
        expect=("returned at the deadline", [("b", "locked", 1)]),
        why="a signalled session that does not exit (its backend stopped): the call waits "
            "until the database clock reaches T0 + wait_ms, not a microsecond less"),
}

E_ROLE = ("CREATE ROLE {e} LOGIN IN ROLE {group}",)
X_ON_A_OF_PAIR2 = ("CREATE ROLE {x} LOGIN IN ROLE {group}",
                   "INSERT INTO {binding} (node_role, lease_name, machine_name) "
                   "VALUES ('{x}', 'pair-2', 'a')")


def bind(**kw: Any) -> Scenario:
    return Scenario("bind", caller="dba", **kw)


BIND: dict[str, Scenario] = {
    "bind": bind(setup=E_ROLE, login={"e": True}, bindings={"e": (LEASE, "e", None, None)}),
    "bind-no-role": bind(args={"role": "{ghost}"}, expect=Failed(
        "P0001", "node role {ghost} does not exist: create it first (see the comments "
                 "above)")),
    "bind-taken-machine": bind(setup=E_ROLE, login={"e": True}, args={"machine": "a"},
                               expect=Failed("P0001", "machine a of lease corda-node is bound "
                                             "to node role {a} already: one role per machine; "
                                             "to change it, DELETE FROM {binding} WHERE "
                                             "node_role = '{a}' first")),
    "bind-taken-machine-of-pair-2": bind(
        setup=(*E_ROLE, *X_ON_A_OF_PAIR2), login={"e": True, "x": True},
        bindings={"x": (LEASE2, "a", None, None)}, args={"lease": LEASE2, "machine": "a"},
        expect=Failed("P0001", "machine a of lease pair-2 is bound to node role {x} already: "
                      "one role per machine; to change it, DELETE FROM {binding} WHERE "
                      "node_role = '{x}' first"),
        why="machine a is bound in both leases; pair 2's binding is the one in the way"),
    "bind-again": bind(args={"role": "{a}", "machine": "a"},
                       why="`schema` run again for the same host"),
    "bind-to-another-lease": bind(
        args={"role": "{a}", "lease": LEASE2, "machine": "a"},
        expect=Failed("P0001", "node role {a} is bound to lease corda-node on machine a "
                      "already: each host's node needs a login role of its own; to move it, "
                      "DELETE FROM {binding} WHERE node_role = '{a}' first")),
    "bind-to-another-machine": bind(
        args={"role": "{a}", "machine": "z"},
        expect=Failed("P0001", "node role {a} is bound to lease corda-node on machine a "
                      "already: each host's node needs a login role of its own; to move it, "
                      "DELETE FROM {binding} WHERE node_role = '{a}' first")),
    "bind@18": bind(setup=E_ROLE, login={"e": True}, bindings={"e": (LEASE, "e", None, None)},
                    server=18, admin=("a", "b", "c", "d", "e")),
}


def sql(text: str, expect: Any, **kw: Any) -> Scenario:
    return Scenario("sql", args={"sql": text}, expect=expect, **kw)


READ_AND_POLICIES: dict[str, Scenario] = {
    "read": Scenario("read", setup=LOCKED_B, login={"b": False}, bindings=B_LOCKED_BY_5,
                     sessions=("a", "b"), expect=[("a", "a", True, None, None, 1),
                                                  ("b", "b", False, 5, 0.0, 1)]),
    "read-with-two-leases": Scenario(
        "read", setup=("INSERT INTO {access_table} VALUES ('pair-2', '{sup}')",),
        expect=[("a", "a", True, None, None, 0), ("b", "b", True, None, None, 0)],
        why="the supervisor role may act for pair 2 too: its bindings are not this lease's"),
    "sees-its-own-lease": sql("SELECT lease_name FROM {lease_table} ORDER BY 1",
                              [("corda-node",)]),
    "updates-its-own-lease": sql("UPDATE {lease_table} SET holder = holder RETURNING "
                                 "lease_name", [("corda-node",)]),
    "inserts-another-lease": sql(
        "INSERT INTO {lease_table} (lease_name) VALUES ('pair-3')",
        Failed("42501", 'new row violates row-level security policy for table "{table}"')),
    "sees-its-own-access": sql("SELECT lease_name, supervisor_role FROM {access_table} "
                               "ORDER BY 1", [("corda-node", "{sup}")]),
    "sees-its-own-bindings": sql("SELECT node_role FROM {binding} ORDER BY 1",
                                 [("a",), ("b",)]),
}

SCENARIOS: dict[str, Scenario] = {**CONFIRM, **LOCK, **END, **BIND, **READ_AND_POLICIES}


# ---------------------------------------------------------------- Corda's lock row

C = CordaScenario
SET_BACK = {"X": W + 1.0}  # refreshed waitInterval + 1 s before T0: takeable
OWN_FIRST = (("Y", "this-host", 1.0, 7), ("X", "other-host", 1.0, 7))

CORDA: dict[str, CordaScenario] = {
    "corda-made-takeable": C("take", after=SET_BACK),
    "corda-twin-lease": C("take", lease=held(-5.0), others=(TWIN,), expect="not_holder"),
    "corda-other-instance": C("take", lease=row(HOLDER, instance="inst-b"),
                              expect="not_holder"),
    "corda-old-epoch": C("take", epoch=4, expect="not_holder"),
    "corda-expired": C("take", lease=held(-5.0), expect="not_holder"),
    "corda-expires-now": C("take", lease=held(0.0), expect="not_holder"),
    "corda-expired-0.5s": C("take", lease=held(-0.5), expect="not_holder"),
    "corda-expires-in-0.5s": C("take", lease=held(0.5), after=SET_BACK),
    "corda-own-row-first": C("take", rows=OWN_FIRST, after=SET_BACK,
                             why="a second row (not Corda's 'X') of our machine, before X"),
    "corda-row-w-old": C("take", rows=(("X", "other-host", W, 7),), after=SET_BACK,
                         why="exactly waitInterval old: Corda's CAS needs it older"),
    "corda-row-w+0.5s-old": C("take", rows=(("X", "other-host", W + 0.5, 7),),
                              expect="takeable"),
    "corda-row-w-0.5s-old": C("take", rows=(("X", "other-host", W - 0.5, 7),),
                              after=SET_BACK),
    "corda-row-1.5w-old": C("take", rows=(("X", "other-host", 1.5 * W, 7),),
                            expect="takeable"),
    "corda-look": C("look", expect=("fresh", "other-host", 1.0)),
    "corda-look-own-row-first": C("look", rows=OWN_FIRST, expect=("fresh", "other-host", 1.0)),
}
