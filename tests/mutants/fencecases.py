"""The scenarios that kill the generated mutants of the fence's SQL (`fencegen.py`).

Each runs in the world of `tests/fenceworld.py` (two pairs as `schema` prints them, the
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
`tests/mutants/fencekills.py` says which scenario kills which mutant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fencecall import Failed
from tests.fenceworld import LEASE, LEASE2

Row = dict[str, Any]
W = 10.0
HOLDER: Row = dict(lease_name=LEASE, holder="a", instance="inst-a", epoch=5,
                   renewed_at=-1.0, expires_at=9.0)
PAIR2: Row = dict(lease_name=LEASE2, holder="c", instance="inst-c", epoch=3,
                  renewed_at=-1.0, expires_at=3600.0)
#: pair 2's row held by our process at our epoch: a statement that ignores the lease
#: name finds it
TWIN: Row = dict(PAIR2, instance="inst-a", epoch=5)
ARGS: dict[str, dict[str, Any]] = {
    "confirm": dict(lease=LEASE, role="{a}", machine="a"),
    "lock": dict(lease=LEASE, epoch=5, instance="inst-a", role="{a}", machine="a"),
    "end": dict(lease=LEASE, epoch=5, instance="inst-a", role="{a}", machine="a",
                wait_ms=1000),
    "bind": dict(role="{e}", lease=LEASE, machine="e"),
    "read": dict(lease=LEASE),
    "sql": {},
}
NOT_HOLDER = "55000"
REFUSED = "CHA01"
HOLDER_LOST = Failed(NOT_HOLDER, "not the holder of lease corda-node at epoch 5")
AGAIN = "(run what `corda-ha-supervisor schema` prints again)"
HISTORY = "{schema}.{table}_history"


def row(base: Row, **changes: Any) -> Row:
    return {**base, **changes}


@dataclass(frozen=True)
class Scenario:
    call: str
    setup: tuple[str, ...] = ()
    lease: Row | None = field(default_factory=lambda: HOLDER)
    lease2: Row | None = field(default_factory=lambda: PAIR2)
    args: dict[str, Any] = field(default_factory=dict)
    caller: str = "sup"
    sessions: tuple[str, ...] = ()
    clock: tuple[tuple[int, float, str | None], ...] = ((0, 0.0, None),)
    expect: Any = None
    login: dict[str, bool] = field(default_factory=dict)
    bindings: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
    ended: tuple[str, ...] = ()
    admin: tuple[str, ...] | None = None
    server: int = 15
    wait: bool = False  # the end call's deadline, driven (`fencecall.run_wait`)
    why: str = ""

    def arguments(self) -> dict[str, Any]:
        return {**ARGS[self.call], **self.args}


S = Scenario


def confirm(expect: str | None, *setup: str, **kw: Any) -> Scenario:
    return Scenario("confirm", setup, expect=expect, **kw)


TRG = ("CREATE FUNCTION {schema}.trg() RETURNS trigger LANGUAGE plpgsql AS "
       "$$ BEGIN RETURN NEW; END $$")
DEV = ("CREATE ROLE {dev}", TRG, "ALTER FUNCTION {schema}.trg() OWNER TO {dev}")
FN = "CREATE FUNCTION {schema}.f(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT $1'"
BOOL_FN = "CREATE FUNCTION {schema}.g() RETURNS boolean LANGUAGE sql AS 'SELECT true'"
OTHER_OBJECTS = (  # everything a table holds, for a table that is not ours
    *DEV, FN, BOOL_FN, "CREATE TYPE {schema}.mood AS ENUM ('x')", "CREATE SCHEMA {other}",
    "CREATE TABLE {schema}.other_t (id serial PRIMARY KEY, m {schema}.mood, "
    "t text CHECK ({schema}.f(t) <> 'x'))",
    "CREATE STATISTICS {other}.st ON id, t FROM {schema}.other_t",
    "CREATE POLICY p_other ON {schema}.other_t USING ({schema}.g())",
    "CREATE TRIGGER t_other BEFORE INSERT ON {schema}.other_t FOR EACH ROW "
    "EXECUTE FUNCTION {schema}.trg()",
    "CREATE TABLE {schema}.child_t () INHERITS ({schema}.other_t)")
TRIGGER_ON_HISTORY = ("CREATE TRIGGER t_x BEFORE INSERT ON {history_table} FOR EACH ROW "
                      "EXECUTE FUNCTION {schema}.trg()")


def _dependency(what: str, uses: str) -> str:
    return f"{what} uses {uses}, which is not built in: drop it, then {AGAIN}"


CONFIRM: dict[str, Scenario] = {
    "ok": confirm(None),
    "no-owner-role": confirm(
        f"the owner role {{owner}}, the fencer role {{fencer}} or the schema {{schema}} does "
        f"not exist: {AGAIN}", "ALTER ROLE {owner} RENAME TO {owner}_gone"),
    "no-fencer-role": confirm(
        f"the owner role {{owner}}, the fencer role {{fencer}} or the schema {{schema}} does "
        f"not exist: {AGAIN}", "ALTER ROLE {fencer} RENAME TO {fencer}_gone"),
    "no-schema": confirm(
        f"the owner role {{owner}}, the fencer role {{fencer}} or the schema {{schema}} does "
        f"not exist: {AGAIN}", "ALTER SCHEMA {schema} RENAME TO {other}",
        args={"schema": "{other}"}),
    "caller-superuser": confirm(
        "database.user {sup} is a superuser or has CREATEROLE or BYPASSRLS: it could alter "
        "what fencing relies on: ALTER ROLE {sup} NOSUPERUSER NOCREATEROLE NOBYPASSRLS (the "
        "supervisor needs only what `schema` grants)", "ALTER ROLE {sup} SUPERUSER"),
    "caller-createrole": confirm(
        "database.user {sup} is a superuser or has CREATEROLE or BYPASSRLS: it could alter "
        "what fencing relies on: ALTER ROLE {sup} NOSUPERUSER NOCREATEROLE NOBYPASSRLS (the "
        "supervisor needs only what `schema` grants)", "ALTER ROLE {sup} CREATEROLE"),
    "caller-bypassrls": confirm(
        "database.user {sup} is a superuser or has CREATEROLE or BYPASSRLS: it could alter "
        "what fencing relies on: ALTER ROLE {sup} NOSUPERUSER NOCREATEROLE NOBYPASSRLS (the "
        "supervisor needs only what `schema` grants)", "ALTER ROLE {sup} BYPASSRLS"),
    "caller-createrole-acting-as-fencer": confirm(
        "database.user {sup} is a superuser or has CREATEROLE or BYPASSRLS: it could alter "
        "what fencing relies on: ALTER ROLE {sup} NOSUPERUSER NOCREATEROLE NOBYPASSRLS (the "
        "supervisor needs only what `schema` grants)",
        "ALTER ROLE {sup} CREATEROLE", "GRANT {fencer} TO {sup}",
        why="its own attribute is named first, before a role it can act as"),
    "caller-acts-as-privileged": confirm(
        "database.user {sup} can act as {priv}, which is a superuser or has CREATEROLE or "
        "BYPASSRLS: REVOKE {priv} FROM {sup}",
        "CREATE ROLE {priv} CREATEROLE", "GRANT {priv} TO {sup}"),
    "caller-in-owner": confirm(
        "database.user {sup} is (a member of) the owner role {owner} or the fencer role "
        "{fencer}: REVOKE {owner}, {fencer} FROM {sup}", "GRANT {owner} TO {sup}"),
    "caller-in-fencer": confirm(
        "database.user {sup} is (a member of) the owner role {owner} or the fencer role "
        "{fencer}: REVOKE {owner}, {fencer} FROM {sup}",
        "ALTER ROLE {fencer} NOCREATEROLE", "GRANT {fencer} TO {sup}",
        why="a fencer without CREATEROLE: otherwise acting as a CREATEROLE role is named"),
    "caller-owns-schema": confirm(
        "database.user {sup} owns schema {schema} (or is a member of its owner {sup}): "
        "ALTER SCHEMA {schema} OWNER TO {owner}", "ALTER SCHEMA {schema} OWNER TO {sup}"),
    "table-missing": confirm(f"table {{member_table}} is missing: {AGAIN}",
                             "DROP TABLE {member_table}"),
    "caller-owns-table": confirm(
        f"database.user {{sup}} owns {HISTORY} (or is a member of its owner {{sup}}): ALTER "
        f"TABLE {HISTORY} OWNER TO {{owner}} {AGAIN}",
        "ALTER TABLE {history_table} OWNER TO {sup}"),
    "table-of-another-owner": confirm(
        f"{HISTORY} is owned by {{fencer}}, not by the owner role {{owner}}: ALTER TABLE "
        f"{HISTORY} OWNER TO {{owner}} {AGAIN}",
        "ALTER TABLE {history_table} OWNER TO {fencer}"),
    "view-in-place": confirm(
        f"{HISTORY} is not the plain table `schema` creates (relkind v): drop it, then "
        f"{AGAIN}", "DROP TABLE {history_table}",
        "CREATE VIEW {history_table} AS SELECT 1 AS x",
        "ALTER VIEW {history_table} OWNER TO {owner}"),
    "rls-off": confirm(
        f"row-level security is off on {HISTORY}: ALTER TABLE {HISTORY} ENABLE ROW LEVEL "
        f"SECURITY {AGAIN}", "ALTER TABLE {history_table} DISABLE ROW LEVEL SECURITY"),
    "caller-may-trigger": confirm(
        f"database.user {{sup}} may create triggers or foreign keys on {HISTORY}: REVOKE "
        f"TRIGGER, REFERENCES ON {HISTORY} FROM {{sup}}, PUBLIC",
        "GRANT TRIGGER ON {history_table} TO {sup}"),
    "caller-may-reference": confirm(
        f"database.user {{sup}} may create triggers or foreign keys on {HISTORY}: REVOKE "
        f"TRIGGER, REFERENCES ON {HISTORY} FROM {{sup}}, PUBLIC",
        "GRANT REFERENCES ON {history_table} TO {sup}"),
    "caller-may-create-in-schema": confirm(
        "database.user {sup} may create objects in schema {schema}: REVOKE CREATE ON SCHEMA "
        "{schema} FROM {sup}, PUBLIC", "GRANT CREATE ON SCHEMA {schema} TO {sup}"),
    "trigger-of-another": confirm(
        f"{HISTORY} has trigger t_x, which `schema` does not create: DROP TRIGGER t_x ON "
        f"{HISTORY}", *DEV, TRIGGER_ON_HISTORY),
    "audit-trigger": confirm(None, TRG, TRIGGER_ON_HISTORY,
                             why="a superuser's function, no WHEN: a DBA's audit trigger"),
    "trigger-of-the-owner": confirm(None, TRG, "ALTER FUNCTION {schema}.trg() OWNER TO {owner}",
                                    TRIGGER_ON_HISTORY),
    "audit-trigger-with-when": confirm(
        f"{HISTORY} has trigger t_x, which `schema` does not create: DROP TRIGGER t_x ON "
        f"{HISTORY}", TRG, "CREATE TRIGGER t_x BEFORE INSERT ON {history_table} FOR EACH ROW "
        "WHEN (NEW.how IS NOT NULL) EXECUTE FUNCTION {schema}.trg()"),
    "foreign-key-to-lease": confirm(
        "foreign key fk_t_l_fkey of {schema}.fk_t refers to {schema}.{table}: ALTER TABLE "
        "{schema}.fk_t DROP CONSTRAINT fk_t_l_fkey",
        "CREATE TABLE {schema}.fk_t (l text REFERENCES {lease_table} (lease_name))"),
    "constraint-trigger": confirm(
        f"{HISTORY} has trigger t_c, which `schema` does not create: DROP TRIGGER t_c ON "
        f"{HISTORY}", *DEV, "CREATE CONSTRAINT TRIGGER t_c AFTER INSERT ON {history_table} "
        "FOR EACH ROW EXECUTE FUNCTION {schema}.trg()"),
    "rule": confirm(
        f"{HISTORY} has rule r_x, which `schema` does not create: DROP RULE r_x ON {HISTORY}",
        "CREATE RULE r_x AS ON INSERT TO {history_table} DO ALSO NOTHING"),
    "inherited-from": confirm(
        f"{{schema}}.child_t inherits from {HISTORY}: ALTER TABLE {{schema}}.child_t NO "
        f"INHERIT {HISTORY}", "CREATE TABLE {schema}.child_t () INHERITS ({history_table})"),
    "inherits": confirm(
        f"{HISTORY} inherits from {{schema}}.parent_t: ALTER TABLE {HISTORY} NO INHERIT "
        "{schema}.parent_t", "CREATE TABLE {schema}.parent_t ()",
        "ALTER TABLE {history_table} INHERIT {schema}.parent_t"),
    "other-objects": confirm(None, *OTHER_OBJECTS,
                             why="a table of its own with every kind of thing a table holds, "
                                 "all of it on objects of its own: none of it is ours"),
    "policy-of-another": confirm(
        f"{HISTORY} has policy evil, which `schema` does not create: DROP POLICY evil ON "
        f"{HISTORY}", "CREATE POLICY evil ON {history_table} USING (true)"),
    "our-policy-name-on-another-table": confirm(
        "{schema}.{table}_access has policy corda_ha_access, which `schema` does not "
        "create: DROP POLICY corda_ha_access ON {schema}.{table}_access",
        "CREATE POLICY corda_ha_access ON {access_table} USING (true)"),
    "policy-missing": confirm(
        f"policy corda_ha_self on {{schema}}.{{table}}_access is missing: {AGAIN}",
        "DROP POLICY corda_ha_self ON {access_table}"),
    "policy-missing-on-one-table": confirm(
        f"policy corda_ha_access on {HISTORY} is missing: {AGAIN}",
        "DROP POLICY corda_ha_access ON {history_table}"),
    "column-of-its-own-type": confirm(
        f"column extra of {HISTORY} (of type {{schema}}.mood) is not one `schema` creates: "
        f"ALTER TABLE {HISTORY} DROP COLUMN extra", "CREATE TYPE {schema}.mood AS ENUM ('x')",
        "ALTER TABLE {history_table} ADD COLUMN extra {schema}.mood"),
    "column-retyped": confirm(
        f"column how of {HISTORY} has type character varying, not text: ALTER TABLE "
        f"{HISTORY} ALTER COLUMN how TYPE text",
        "ALTER TABLE {history_table} ALTER COLUMN how TYPE varchar"),
    "column-generated": confirm(
        f"column how of {HISTORY} has type text (generated), not text: ALTER TABLE "
        f"{HISTORY} ALTER COLUMN how TYPE text", "ALTER TABLE {history_table} DROP COLUMN how",
        "ALTER TABLE {history_table} ADD COLUMN how text GENERATED ALWAYS AS ('x') STORED"),
    "column-of-another-tables-name": confirm(
        None, "ALTER TABLE {history_table} ADD COLUMN node_role text",
        why="an added column of a built-in type is allowed; the binding table's node_role "
            "is of type name"),
    "column-of-an-initdb-domain": confirm(
        None, "ALTER TABLE {history_table} ADD COLUMN n information_schema.cardinal_number",
        why="information_schema's domain: made by initdb, not pinned (its dependency is "
            "recorded), built in all the same"),
    "default-uses-a-sequence": confirm(
        _dependency(f"default value for column how of table {HISTORY}",
                    "sequence {schema}.seq_t"), "CREATE SEQUENCE {schema}.seq_t",
        "ALTER TABLE {history_table} ALTER COLUMN how SET DEFAULT "
        "nextval('{schema}.seq_t')::text"),
    "statistics-in-another-schema": confirm(
        _dependency("statistics object {other}.st", "schema {other}"),
        "CREATE SCHEMA {other}", "CREATE STATISTICS {other}.st ON holder, epoch FROM "
        "{lease_table}"),
    "index-uses-a-function": confirm(
        _dependency("index {schema}.{table}_history_f_idx", "function {schema}.f(text)"), FN,
        "CREATE INDEX ON {history_table} ({schema}.f(how))"),
    "column-collation": confirm(
        _dependency(f"column how of table {HISTORY}", "collation {schema}.coll"),
        "CREATE COLLATION {schema}.coll FROM \"C\"",
        "ALTER TABLE {history_table} ALTER COLUMN how TYPE text COLLATE {schema}.coll"),
    "policy-uses-a-function": confirm(
        _dependency("policy corda_ha_self on table {schema}.{table}_access",
                    "function {schema}.g()"), BOOL_FN,
        "ALTER POLICY corda_ha_self ON {access_table} USING ({schema}.g())"),
    "check-uses-a-function": confirm(
        _dependency(f"constraint ck on table {HISTORY}", "function {schema}.f(text)"), FN,
        "ALTER TABLE {history_table} ADD CONSTRAINT ck CHECK ({schema}.f(how) <> 'x')"),
    "function-missing": confirm(f"function {{bind_fn}}(name, text, text) is missing: {AGAIN}",
                                "DROP FUNCTION {bind_fn}(name, text, text)"),
    "function-of-another-owner": confirm(
        "function {schema}.{table}_fence_bind(name,text,text) is owned by {fencer}, not by "
        "{owner}: ALTER FUNCTION {schema}.{table}_fence_bind(name,text,text) OWNER TO {owner}",
        "ALTER FUNCTION {bind_fn}(name, text, text) OWNER TO {fencer}"),
    "old-function": confirm(
        "the old fence function {schema}.{table}_fence_register(text,name,text) (any "
        "supervisor could register any role) is still there: DROP FUNCTION "
        f"{{schema}}.{{table}}_fence_register(text,name,text) {AGAIN}",
        "CREATE FUNCTION {schema}.{table}_fence_register(text, name, text) RETURNS void "
        "LANGUAGE sql AS ''"),
    "fencer-without-createrole": confirm(
        "the fencer role {fencer} cannot lock roles out: ALTER ROLE {fencer} CREATEROLE",
        "ALTER ROLE {fencer} NOCREATEROLE"),
    "fencer-without-signal": confirm(
        "the fencer role {fencer} cannot end sessions: GRANT pg_signal_backend TO {fencer}",
        "REVOKE pg_signal_backend FROM {fencer}"),
    "another-lease": confirm(
        "database.user {sup} may not act for lease 'pair-2': INSERT INTO {access_table} "
        "(lease_name, supervisor_role) VALUES ('pair-2', '{sup}') (printed by "
        "`corda-ha-supervisor schema`)", args=dict(lease=LEASE2, role="{c}", machine="c")),
    "another-supervisor": confirm(
        "database.user {sup2} may not act for lease 'corda-node': INSERT INTO {access_table} "
        "(lease_name, supervisor_role) VALUES ('corda-node', '{sup2}') (printed by "
        "`corda-ha-supervisor schema`)", caller="sup2"),
    "role-not-bound": confirm(
        "node role {a} is not bound to lease 'corda-node': a DBA runs, as `schema` prints "
        "it on this host: SELECT {bind_fn}('{a}', 'corda-node', 'a')",
        "DELETE FROM {binding} WHERE node_role = '{a}'", bindings={"a": None}),
    "role-of-another-lease": confirm(
        "node role {a} is bound to lease 'corda-node' on machine 'a', not to lease 'pair-2' "
        "on machine 'a': fencing.nodeRole or machineName is wrong, or both hosts' nodes use "
        "one role (each needs a role of its own)", caller="sup2",
        args=dict(lease=LEASE2)),
    "role-of-another-machine": confirm(
        "node role {a} is bound to lease 'corda-node' on machine 'a', not to lease "
        "'corda-node' on machine 'z': fencing.nodeRole or machineName is wrong, or both "
        "hosts' nodes use one role (each needs a role of its own)", args=dict(machine="z")),
    "no-node-group": confirm("the node group {group} does not exist: see `schema`",
                             "ALTER ROLE {group} RENAME TO {group}_gone"),
    "bound-role-missing": confirm(
        "node role {ghost} (bound to lease 'corda-node', machine 'g') does not exist",
        "INSERT INTO {binding} (node_role, lease_name, machine_name) VALUES "
        "('{ghost}', 'corda-node', 'g')", bindings={"ghost": (LEASE, "g", None, None)}),
    "bound-superuser": confirm(
        "node role {b} is a superuser: it cannot be fenced (ALTER ROLE {b} NOSUPERUSER)",
        "ALTER ROLE {b} SUPERUSER"),
    "bound-caller": confirm(
        "node role {sup} is database.user, the owner or the fencer role (or acts as one): "
        "bind the node's own login role",
        "INSERT INTO {binding} (node_role, lease_name, machine_name) VALUES "
        "('{sup}', 'corda-node', 's')", bindings={"{sup}": (LEASE, "s", None, None)}),
    "bound-member-of-owner": confirm(
        "node role {b} is database.user, the owner or the fencer role (or acts as one): "
        "bind the node's own login role", "GRANT {owner} TO {b}"),
    "bound-member-of-fencer": confirm(
        "node role {b} is database.user, the owner or the fencer role (or acts as one): "
        "bind the node's own login role", "GRANT {fencer} TO {b}"),
    "bound-outside-the-group": confirm(
        "node role {b} is not a member of the node group {group}: GRANT {group} TO {b}",
        "REVOKE {group} FROM {b}"),
    "other-pairs-role-outside-the-group": confirm(None, "REVOKE {group} FROM {d}"),
    "no-other-role": confirm(
        "no other node role is bound to lease 'corda-node': the other host's node must log "
        "in with a role of its own (not {a}, which this host's node uses), bound with what "
        "`schema` prints on that host; a role both nodes use cannot be fenced",
        "DELETE FROM {binding} WHERE node_role = '{b}'", bindings={"b": None}),
    # PostgreSQL 16+: CREATEROLE alters only the roles the fencer administers
    "ok@18": confirm(None, server=18),
    "admin-missing@18": confirm(
        "PostgreSQL 16 and later: the fencer role {fencer} may alter only the roles it "
        "administers: GRANT {b} TO {fencer} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
        "REVOKE {b} FROM {fencer}", server=18, admin=("a", "c", "d")),
    "admin-held-by-another@18": confirm(
        "PostgreSQL 16 and later: the fencer role {fencer} may alter only the roles it "
        "administers: GRANT {b} TO {fencer} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
        "REVOKE {b} FROM {fencer}", "GRANT {b} TO {owner} WITH ADMIN OPTION",
        server=18, admin=("a", "c", "d")),
    "member-without-admin@18": confirm(
        "PostgreSQL 16 and later: the fencer role {fencer} may alter only the roles it "
        "administers: GRANT {b} TO {fencer} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
        "REVOKE ADMIN OPTION FOR {b} FROM {fencer}", server=18, admin=("a", "c", "d")),
}

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


def _held(expires: float, renewed: float = -15.0) -> Row:
    return row(HOLDER, renewed_at=renewed, expires_at=expires)


LOCK: dict[str, Scenario] = {
    "lock": lock(**LOCKS_B),
    "lock-refused": lock(setup=("REVOKE {group} FROM {b}",), expect=OUT_OF_GROUP),
    "lock-twin-lease": lock(lease=_held(-5.0), lease2=TWIN, expect=HOLDER_LOST),
    "lock-other-instance": lock(lease=row(HOLDER, instance="inst-b"), expect=HOLDER_LOST),
    "lock-old-epoch": lock(args={"epoch": 4}, expect=Failed(
        NOT_HOLDER, "not the holder of lease corda-node at epoch 4")),
    "lock-expired": lock(lease=_held(-5.0), expect=HOLDER_LOST),
    "lock-expires-now": lock(lease=_held(0.0), expect=HOLDER_LOST),
    "lock-expired-0.5s": lock(lease=_held(-0.5), expect=HOLDER_LOST),
    "lock-expires-in-0.5s": lock(lease=_held(0.5), **LOCKS_B),
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
    "end-twin-lease": end(lease=_held(-5.0), lease2=TWIN, **FIRST_CHECK),
    "end-other-instance": end(lease=row(HOLDER, instance="inst-b"), **FIRST_CHECK),
    "end-old-epoch": end(args={"epoch": 4}, expect=Failed(
        NOT_HOLDER, "not the holder of lease corda-node at epoch 4")),
    "end-expired": end(lease=_held(-5.0), **FIRST_CHECK),
    "end-expires-now": end(lease=_held(0.0), **FIRST_CHECK),
    "end-expired-0.5s": end(lease=_held(-0.5), **FIRST_CHECK),
    "end-expires-in-0.5s": end(lease=_held(0.5), sessions=("b",), expect=[("b", "locked", 1)],
                               ended=("b",)),
    "end-can-log-in": end(setup=(), login={}, bindings={}, sessions=("b",),
                          expect=[("b", "can log in", 0)],
                          why="unlocked meanwhile (a newer holder): its session left alone"),
    "end-can-log-in-no-session": end(setup=(), login={}, bindings={},
                                     expect=[("b", "can log in", 0)]),
    "end-lease-runs-out-before-the-signal": end(
        lease=_held(0.5, -1.0), clock=((0, 0.0, None), (LATER, 1.0, None)),
        **B_SESSION_LEFT, why="valid at the first check, 0.5 s past at the one before the "
                              "signal"),
    "end-lease-expires-at-the-signal": end(
        lease=_held(0.5, -1.0), clock=((0, 0.0, None), (LATER, 0.5, None)), **B_SESSION_LEFT),
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


@dataclass(frozen=True)
class CordaScenario:
    """make_takeable (`call` "take", as the holder of `HOLDER` at `epoch`) or look, with
    Corda's rows `rows` (id, machine, seconds before T0 it was refreshed, version) and
    our lease row `lease` (other leases: `others`); `expect` is the answer, `after` the
    Corda rows afterwards when they changed (id -> seconds before T0)."""

    call: str
    rows: tuple[tuple[str, str, float, int], ...] = (("X", "other-host", 1.0, 7),)
    lease: Row | None = field(default_factory=lambda: HOLDER)
    others: tuple[Row, ...] = ()
    epoch: int = 5
    expect: Any = "made_takeable"
    after: dict[str, float] = field(default_factory=dict)
    w: float = W  # Corda's waitInterval
    why: str = ""


C = CordaScenario
SET_BACK = {"X": W + 1.0}  # refreshed waitInterval + 1 s before T0: takeable
OWN_FIRST = (("Y", "this-host", 1.0, 7), ("X", "other-host", 1.0, 7))

CORDA: dict[str, CordaScenario] = {
    "corda-made-takeable": C("take", after=SET_BACK),
    "corda-twin-lease": C("take", lease=_held(-5.0), others=(TWIN,), expect="not_holder"),
    "corda-other-instance": C("take", lease=row(HOLDER, instance="inst-b"),
                              expect="not_holder"),
    "corda-old-epoch": C("take", epoch=4, expect="not_holder"),
    "corda-expired": C("take", lease=_held(-5.0), expect="not_holder"),
    "corda-expires-now": C("take", lease=_held(0.0), expect="not_holder"),
    "corda-expired-0.5s": C("take", lease=_held(-0.5), expect="not_holder"),
    "corda-expires-in-0.5s": C("take", lease=_held(0.5), after=SET_BACK),
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
