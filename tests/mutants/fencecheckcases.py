"""The confirm check's scenarios (`supervisor/lease/fence_check.py`): a world sound but for
one thing, and the problem the check names for it (see `fencecases.py`)."""

from __future__ import annotations

from typing import Any

from tests.mutants.fencescenario import AGAIN, HISTORY, LEASE, LEASE2, Scenario


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
