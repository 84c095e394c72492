"""The database side of fencing, as the DDL text `schema` prints: the binding table and
the functions (see `supervisor.lease.dbfence` for the protocol).

- `<table>_fence_binding`: which node role runs on which machine of which lease, and
  which epoch locked it out. One row per role (the key): a role is bound to one lease
  and one machine at most, and a machine of a lease to one role. Only a DBA binds
  (`<table>_fence_bind(role, lease, machine)`, printed by `schema`; EXECUTE for nobody
  else); the supervisor reads its own lease's rows.
- `<table>_fence_confirm(lease, role, machine)`: NULL, or what is wrong, naming the fix.
  First, from the catalogs only (which the caller cannot alter): the caller
  (`session_user`) is no superuser, cannot act as a role with SUPERUSER, CREATEROLE or
  BYPASSRLS, owns (or is a member of the owner of) none of the schema, tables and
  functions, has no CREATE on the schema and no TRIGGER or REFERENCES on the tables;
  the tables are as built (plain tables owned by the owner role, row-level security
  on, no trigger, no rule, no inheritance, no policy but ours, every column of the type
  `schema` creates, nothing they hold depending on anything but built-in objects and
  these tables); the functions are owned by the fencer. Only then does it read a
  table: the caller may act for `lease` (access table), `role` is bound to `lease` on
  `machine`, every role bound to `lease` exists, is no superuser and is in the node
  group, at least one *other* role is bound, and (PostgreSQL 16+) the fencer holds
  ADMIN OPTION on each.
- `<table>_fence_lock(lease, epoch, instance, role, machine)`: confirm, then (holder
  of `lease` at `epoch`, checked under FOR SHARE on the lease row for this statement
  only) `NOLOGIN` for every other role bound to `lease`, `LOGIN` for `role`.
- `<table>_fence_end(lease, epoch, instance, role, machine, wait_ms)`: confirm, then
  (holder check without a row lock) ends the sessions of every other role bound to
  `lease` that cannot log in, re-checking the holder and the role right before each
  signal, and waits up to `wait_ms` in all for them to exit; a role that can log in
  again is reported ("can log in"), its sessions left alone.

The three are SECURITY DEFINER functions of the fencer role (`NOLOGIN CREATEROLE`,
member of `pg_signal_backend`) with `search_path = pg_catalog, pg_temp` and
schema-qualified names; the supervisor's role gets EXECUTE on them only.
"""

from __future__ import annotations

import re

from psycopg import sql

from supervisor.lease.ownership import (
    ACCESS_POLICY,
    SELF_POLICY,
    column_types,
    create_role_if_missing,
    dollar_quoted,
    ident,
    literal,
    q,
)

#: SQLSTATE of the fence functions when the caller does not hold the lease at that epoch.
NOT_HOLDER = "55000"
#: SQLSTATE of the fence functions when the confirm check found a problem (the message).
REFUSED = "CHA01"
#: The fencer's own policies: read every row; lock the lease row (FOR SHARE needs an
#: UPDATE policy) and update the binding rows.
FENCER_POLICY = "corda_ha_fencer"
FENCER_LOCK_POLICY = "corda_ha_fencer_lock"
#: Objects with a lower OID were created by initdb (built in).
FIRST_NORMAL_OID = 16384

CONFIRM_ARGS = "(text, name, text)"
LOCK_ARGS = "(text, bigint, text, name, text)"
END_ARGS = "(text, bigint, text, name, text, bigint)"
BIND_ARGS = "(name, text, text)"
#: The functions of the register path that `schema` removes.
OLD_FUNCTIONS = (("fence_register", "(text, name, text)"),
                 ("fence", "(text, bigint, text, name, text, bigint)"))

_BINDING_COLUMNS = """CREATE TABLE IF NOT EXISTS {} (
    node_role name PRIMARY KEY,
    lease_name text NOT NULL,
    machine_name text NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    locked_by_epoch bigint,
    locked_at timestamptz,
    UNIQUE (lease_name, machine_name)
)"""


class FenceSql:
    """Names and statements of the fencing objects of lease table `schema.table`. The
    names are schema-qualified always (the functions run with a fixed search_path);
    without `database.schema` the tables are those in `public`."""

    def __init__(self, schema: str | None, table: str) -> None:
        where = schema or "public"
        self.schema_name = where
        self.schema = sql.Identifier(where)

        def name(suffix: str) -> sql.Identifier:
            return sql.Identifier(where, f"{table}_{suffix}"[:63])

        self.lease_table = sql.Identifier(where, table)
        self.member_table = name("member")
        self.history_table = name("history")
        self.access_table = name("access")
        self.binding = name("fence_binding")
        self.confirm_fn = name("fence_confirm")
        self.lock_fn = name("fence_lock")
        self.end_fn = name("fence_end")
        self.bind_fn = name("fence_bind")
        self.old_registry = name("fence_role")
        self.old_functions = [q(name(fn)) + args for fn, args in OLD_FUNCTIONS]
        self.confirm = sql.SQL("SELECT {}(%(lease)s, %(role)s, %(machine)s)").format(
            self.confirm_fn)
        self.lock = sql.SQL(
            "SELECT node_role, action, sessions FROM {}(%(lease)s, %(epoch)s, %(instance)s, "
            "%(role)s, %(machine)s)").format(self.lock_fn)
        self.end = sql.SQL(
            "SELECT node_role, action, sessions FROM {}(%(lease)s, %(epoch)s, %(instance)s, "
            "%(role)s, %(machine)s, %(wait_ms)s)").format(self.end_fn)
        self.read = sql.SQL(
            """SELECT f.node_role, f.machine_name, r.rolcanlogin, f.locked_by_epoch,
                      f.locked_at,
                      (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = f.node_role)
               FROM {} f LEFT JOIN pg_roles r ON r.rolname = f.node_role
               WHERE f.lease_name = %(lease)s ORDER BY f.node_role""").format(self.binding)

    @property
    def tables(self) -> list[sql.Identifier]:
        """Every table the functions check (and the owner role owns)."""
        return [self.lease_table, self.member_table, self.history_table, self.access_table,
                self.binding]

    @property
    def create_binding(self) -> str:
        return _BINDING_COLUMNS.format(q(self.binding))

    def bind(self, *, node_role: str, lease: str, machine: str) -> str:
        """The DBA's statement that binds `node_role` to `lease` on `machine`."""
        return (f"SELECT {q(self.bind_fn)}({literal(node_role)}, {literal(lease)}, "
                f"{literal(machine)})")


def _regclass(table: sql.Identifier) -> str:
    return f"to_regclass({literal(q(table))})"


def _values(rows: list[str]) -> str:
    return "(VALUES " + ",\n            ".join(rows) + ")"


def _fill(template: str, values: dict[str, str]) -> str:
    """`template` with each @NAME@ replaced by `values[NAME]` (one pass)."""
    for value in values.values():
        dollar_quoted(value)  # refuses a value that would end the quoted body
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template)


def fence_ddl(f: FenceSql, *, owner: str, fencer: str, node_group: str,
              supervisor_role: str, columns: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The fencer role, the binding table, the fencer's privileges and policies, and the
    functions, for the DBA (a superuser). `columns`: the type of each column of each
    table (by its SQL name) as `schema` creates it. Idempotent; drops the register path."""
    role, fencer_id = ident(supervisor_role), ident(fencer)
    binding, lease, access = q(f.binding), q(f.lease_table), q(f.access_table)
    own_rows = (f"lease_name IN (SELECT a.lease_name FROM {access} a "
                "WHERE a.supervisor_role = current_user)")
    confirm, lock, end = (q(f.confirm_fn) + CONFIRM_ARGS, q(f.lock_fn) + LOCK_ARGS,
                          q(f.end_fn) + END_ARGS)
    bind = q(f.bind_fn) + BIND_ARGS
    out = [create_role_if_missing(fencer, "NOLOGIN CREATEROLE"),
           f"ALTER ROLE {fencer_id} NOLOGIN CREATEROLE",
           f"GRANT pg_signal_backend TO {fencer_id}",
           *[f"DROP FUNCTION IF EXISTS {fn}" for fn in f.old_functions],
           f"DROP TABLE IF EXISTS {q(f.old_registry)}",
           f.create_binding,
           f"ALTER TABLE {binding} OWNER TO {ident(owner)}",
           f"REVOKE ALL ON {binding} FROM PUBLIC, {role}",
           f"ALTER TABLE {binding} ENABLE ROW LEVEL SECURITY",
           f"GRANT SELECT ON {binding} TO {role}",
           # the functions run as the fencer: it must reach the schema (PUBLIC may, in
           # `public`; in a schema of our own nobody may unless granted)
           f"GRANT USAGE ON SCHEMA {q(f.schema)} TO {fencer_id}",
           # FOR SHARE (the holder check) needs an UPDATE privilege on some column
           f"GRANT SELECT, UPDATE (lease_name) ON {lease} TO {fencer_id}",
           f"GRANT SELECT ON {access} TO {fencer_id}",
           f"GRANT SELECT, UPDATE (locked_by_epoch, locked_at) ON {binding} TO {fencer_id}",
           f"DROP POLICY IF EXISTS {ACCESS_POLICY} ON {binding}",
           f"CREATE POLICY {ACCESS_POLICY} ON {binding} FOR SELECT USING ({own_rows})"]
    for table in (lease, access, binding):
        out += [f"DROP POLICY IF EXISTS {FENCER_POLICY} ON {table}",
                f"CREATE POLICY {FENCER_POLICY} ON {table} FOR SELECT TO {fencer_id} "
                "USING (true)"]
    for table, check in ((lease, "false"), (binding, "true")):
        out += [f"DROP POLICY IF EXISTS {FENCER_LOCK_POLICY} ON {table}",
                f"CREATE POLICY {FENCER_LOCK_POLICY} ON {table} FOR UPDATE TO {fencer_id} "
                f"USING (true) WITH CHECK ({check})"]
    values = _values_for(f, owner=owner, fencer=fencer, node_group=node_group,
                         columns=columns)
    out += [_fill(CONFIRM_BODY, values), _fill(LOCK_BODY, values), _fill(END_BODY, values),
            _fill(BIND_BODY, values)]
    for fn, fn_owner in ((confirm, fencer), (lock, fencer), (end, fencer), (bind, owner)):
        out += [f"ALTER FUNCTION {fn} OWNER TO {ident(fn_owner)}",
                f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC"]
    out += [f"GRANT EXECUTE ON FUNCTION {fn} TO {role}" for fn in (confirm, lock, end)]
    return out


def _values_for(f: FenceSql, *, owner: str, fencer: str, node_group: str,
                columns: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """What the function templates' @NAME@ placeholders stand for."""
    rels = {q(t): _regclass(t) for t in f.tables}
    policies = {q(f.lease_table): (ACCESS_POLICY, FENCER_POLICY, FENCER_LOCK_POLICY),
                q(f.member_table): (ACCESS_POLICY,),
                q(f.history_table): (ACCESS_POLICY,),
                q(f.access_table): (SELF_POLICY, FENCER_POLICY),
                q(f.binding): (ACCESS_POLICY, FENCER_POLICY, FENCER_LOCK_POLICY)}
    ours = [f"({rels[t]}, {literal(p)}::name)" for t, names in policies.items()
            for p in names]
    typed = [f"({rels[t]}, {literal(c)}::name, {literal(kind)}::regtype)"
             for t, cols in columns.items() for c, kind in cols]
    functions = [(q(f.confirm_fn) + CONFIRM_ARGS, fencer), (q(f.lock_fn) + LOCK_ARGS, fencer),
                 (q(f.end_fn) + END_ARGS, fencer), (q(f.bind_fn) + BIND_ARGS, owner)]
    return {
        "SCHEMA": literal(f.schema_name), "OWNER": literal(owner), "FENCER": literal(fencer),
        "GROUP": literal(node_group), "LEASE": q(f.lease_table), "ACCESS": q(f.access_table),
        "BINDING": q(f.binding), "CONFIRM": q(f.confirm_fn), "BIND": q(f.bind_fn),
        "LOCK": q(f.lock_fn), "END": q(f.end_fn), "NOT_HOLDER": NOT_HOLDER,
        "REFUSED": REFUSED, "BUILT_IN": str(FIRST_NORMAL_OID),
        "RELS": "ARRAY[" + ", ".join(rels.values()) + "]",
        "REL_NAMES": "ARRAY[" + ", ".join(literal(t) for t in rels) + "]",
        "POLICIES": _values(ours), "COLUMNS": _values(typed),
        "FUNCTIONS": _values([f"({literal(fn)}, to_regprocedure({literal(fn)}), "
                              f"{literal(fn_owner)}::name)" for fn, fn_owner in functions]),
        "OLD_FUNCTIONS": "ARRAY[" + ", ".join(literal(fn) for fn in f.old_functions) + "]",
        "ACCESS_TEXT": literal(q(f.access_table)), "BIND_TEXT": literal(q(f.bind_fn)),
        "BINDING_TEXT": literal(q(f.binding)),
        "SCRIPT": literal("(run what `corda-ha-supervisor schema` prints again)"),
    }


def binding_columns(f: FenceSql) -> list[tuple[str, str]]:
    return column_types(f.create_binding)


def fence_body(name: str) -> str:
    """The template of one function (for tests and mutants): CONFIRM, LOCK, END, BIND."""
    return {"CONFIRM": CONFIRM_BODY, "LOCK": LOCK_BODY, "END": END_BODY,
            "BIND": BIND_BODY}[name]


# The caller and the objects, from the catalogs only; then the access and the bindings.
CONFIRM_BODY = "CREATE OR REPLACE FUNCTION @CONFIRM@(p_lease text, p_role name, " \
    "p_machine text)\nRETURNS text LANGUAGE plpgsql SECURITY DEFINER " \
    "SET search_path = pg_catalog, pg_temp AS " + dollar_quoted("""
DECLARE
    me name := session_user;
    owner_name name := @OWNER@;
    fencer_name name := @FENCER@;
    group_name name := @GROUP@;
    schema_name name := @SCHEMA@;
    again text := @SCRIPT@;
    owner_id oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_name);
    fencer_id oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = fencer_name);
    nsp oid := (SELECT n.oid FROM pg_namespace n WHERE n.nspname = schema_name);
    rels oid[] := @RELS@;
    names text[] := @REL_NAMES@;
    x record;
    others integer := 0;
BEGIN
    IF owner_id IS NULL OR fencer_id IS NULL OR nsp IS NULL THEN
        RETURN format('the owner role %I, the fencer role %I or the schema %I does not exist: %s',
                      owner_name, fencer_name, schema_name, again);
    END IF;
    -- the caller: nothing it is, or can act as, may alter what the functions read
    SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls INTO x FROM pg_roles r
        WHERE (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls)
          AND pg_has_role(me, r.oid, 'MEMBER') ORDER BY r.rolname <> me, r.rolname LIMIT 1;
    IF FOUND AND x.rolname = me THEN
        RETURN format('database.user %I is a superuser or has CREATEROLE or BYPASSRLS: it could '
                      'alter what fencing relies on: ALTER ROLE %I NOSUPERUSER NOCREATEROLE '
                      'NOBYPASSRLS (the supervisor needs only what `schema` grants)', me, me);
    ELSIF FOUND THEN
        RETURN format('database.user %I can act as %I, which is a superuser or has CREATEROLE or '
                      'BYPASSRLS: REVOKE %I FROM %I', me, x.rolname, x.rolname, me);
    END IF;
    IF pg_has_role(me, owner_id, 'MEMBER') OR pg_has_role(me, fencer_id, 'MEMBER') THEN
        RETURN format('database.user %I is (a member of) the owner role %I or the fencer role '
                      '%I: REVOKE %I, %I FROM %I', me, owner_name, fencer_name, owner_name,
                      fencer_name, me);
    END IF;
    SELECT n.nspname, n.nspowner INTO x FROM pg_namespace n WHERE n.oid = nsp;
    IF pg_has_role(me, x.nspowner, 'MEMBER') THEN
        RETURN format('database.user %I owns schema %I (or is a member of its owner %I): '
                      'ALTER SCHEMA %I OWNER TO %I', me, x.nspname,
                      pg_get_userbyid(x.nspowner), x.nspname, owner_name);
    END IF;
    IF has_schema_privilege(me, nsp, 'CREATE') THEN
        RETURN format('database.user %I may create objects in schema %I: REVOKE CREATE ON '
                      'SCHEMA %I FROM %I, PUBLIC', me, x.nspname, x.nspname, me);
    END IF;
    FOR x IN SELECT t.name FROM unnest(names, rels) AS t(name, rel) WHERE t.rel IS NULL LOOP
        RETURN format('table %s is missing: %s', x.name, again);
    END LOOP;
    FOR x IN SELECT c.oid::regclass AS rel, c.relkind, c.relowner, c.relrowsecurity
             FROM pg_class c WHERE c.oid = ANY (rels) ORDER BY c.relname LOOP
        IF pg_has_role(me, x.relowner, 'MEMBER') THEN
            RETURN format('database.user %I owns %s (or is a member of its owner %I): ALTER '
                          'TABLE %s OWNER TO %I %s', me, x.rel, pg_get_userbyid(x.relowner),
                          x.rel, owner_name, again);
        ELSIF x.relowner <> owner_id THEN
            RETURN format('%s is owned by %I, not by the owner role %I: ALTER TABLE %s OWNER TO '
                          '%I %s', x.rel, pg_get_userbyid(x.relowner), owner_name, x.rel,
                          owner_name, again);
        ELSIF x.relkind <> 'r' THEN
            RETURN format('%s is not the plain table `schema` creates (relkind %s): drop it, '
                          'then %s', x.rel, x.relkind, again);
        ELSIF NOT x.relrowsecurity THEN
            RETURN format('row-level security is off on %s: ALTER TABLE %s ENABLE ROW LEVEL '
                          'SECURITY %s', x.rel, x.rel, again);
        ELSIF has_table_privilege(me, x.rel, 'TRIGGER')
              OR has_table_privilege(me, x.rel, 'REFERENCES') THEN
            RETURN format('database.user %I may create triggers or foreign keys on %s: REVOKE '
                          'TRIGGER, REFERENCES ON %s FROM %I, PUBLIC', me, x.rel, x.rel, me);
        END IF;
    END LOOP;
    FOR x IN SELECT t.tgname, t.tgrelid::regclass AS rel, t.tgisinternal,
                    t.tgconstrrelid::regclass AS other, c.conname
             FROM pg_trigger t LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint
             WHERE t.tgrelid = ANY (rels) ORDER BY t.tgname LIMIT 1 LOOP
        IF x.tgisinternal AND x.conname IS NOT NULL THEN
            RETURN format('foreign key %I of %s refers to %s: ALTER TABLE %s DROP CONSTRAINT %I',
                          x.conname, x.other, x.rel, x.other, x.conname);
        END IF;
        RETURN format('%s has trigger %I, which `schema` does not create: DROP TRIGGER %I ON %s',
                      x.rel, x.tgname, x.tgname, x.rel);
    END LOOP;
    FOR x IN SELECT r.rulename, r.ev_class::regclass AS rel FROM pg_rewrite r
             WHERE r.ev_class = ANY (rels) ORDER BY r.rulename LIMIT 1 LOOP
        RETURN format('%s has rule %I, which `schema` does not create: DROP RULE %I ON %s',
                      x.rel, x.rulename, x.rulename, x.rel);
    END LOOP;
    FOR x IN SELECT i.inhrelid::regclass AS child, i.inhparent::regclass AS parent
             FROM pg_inherits i WHERE i.inhrelid = ANY (rels) OR i.inhparent = ANY (rels)
             LIMIT 1 LOOP
        RETURN format('%s inherits from %s: ALTER TABLE %s NO INHERIT %s', x.child, x.parent,
                      x.child, x.parent);
    END LOOP;
    FOR x IN SELECT p.polname, p.polrelid::regclass AS rel FROM pg_policy p
             WHERE p.polrelid = ANY (rels) AND NOT EXISTS (
                 SELECT 1 FROM @POLICIES@ AS e(rel, name)
                 WHERE e.rel = p.polrelid AND e.name = p.polname)
             ORDER BY p.polname LIMIT 1 LOOP
        RETURN format('%s has policy %I, which `schema` does not create: DROP POLICY %I ON %s',
                      x.rel, x.polname, x.polname, x.rel);
    END LOOP;
    FOR x IN SELECT e.rel::regclass AS rel, e.name FROM @POLICIES@ AS e(rel, name)
             WHERE NOT EXISTS (SELECT 1 FROM pg_policy p
                               WHERE p.polrelid = e.rel AND p.polname = e.name) LIMIT 1 LOOP
        RETURN format('policy %I on %s is missing: %s', x.name, x.rel, again);
    END LOOP;
    FOR x IN SELECT a.attrelid::regclass AS rel, a.attname, format_type(a.atttypid, NULL) AS kind,
                    e.kind AS expected, a.attgenerated
             FROM pg_attribute a LEFT JOIN @COLUMNS@ AS e(rel, name, kind)
                  ON e.rel = a.attrelid AND e.name = a.attname
             WHERE a.attrelid = ANY (rels) AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.atttypid >= @BUILT_IN@ OR a.atttypid <> coalesce(e.kind::oid, a.atttypid)
                    OR a.attgenerated <> '')
             ORDER BY 1, 2 LIMIT 1 LOOP
        IF x.expected IS NULL THEN
            RETURN format('column %I of %s (of type %s) is not one `schema` creates: ALTER TABLE '
                          '%s DROP COLUMN %I', x.attname, x.rel, x.kind, x.rel, x.attname);
        END IF;
        RETURN format('column %I of %s has type %s%s, not %s: ALTER TABLE %s ALTER COLUMN %I '
                      'TYPE %s', x.attname, x.rel, x.kind,
                      CASE WHEN x.attgenerated <> '' THEN ' (generated)' ELSE '' END,
                      x.expected, x.rel, x.attname, x.expected);
    END LOOP;
    -- whatever the tables hold (policies, defaults, constraints, indexes, statistics)
    -- uses only built-in objects and these tables
    FOR x IN SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS what,
                    pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) AS uses
             FROM pg_depend d
             WHERE d.refobjid >= @BUILT_IN@
               AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY (rels))
               AND NOT (d.refclassid = 'pg_namespace'::regclass AND d.refobjid = nsp)
               AND NOT (d.refclassid = 'pg_constraint'::regclass AND d.refobjid IN (
                        SELECT c.oid FROM pg_constraint c WHERE c.conrelid = ANY (rels)))
               AND ((d.classid = 'pg_class'::regclass AND (d.objid = ANY (rels) OR d.objid IN (
                        SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = ANY (rels))))
                    OR (d.classid = 'pg_policy'::regclass AND d.objid IN (
                        SELECT p.oid FROM pg_policy p WHERE p.polrelid = ANY (rels)))
                    OR (d.classid = 'pg_attrdef'::regclass AND d.objid IN (
                        SELECT a.oid FROM pg_attrdef a WHERE a.adrelid = ANY (rels)))
                    OR (d.classid = 'pg_constraint'::regclass AND d.objid IN (
                        SELECT c.oid FROM pg_constraint c WHERE c.conrelid = ANY (rels)))
                    OR (d.classid = 'pg_statistic_ext'::regclass AND d.objid IN (
                        SELECT s.oid FROM pg_statistic_ext s WHERE s.stxrelid = ANY (rels))))
             ORDER BY 1, 2 LIMIT 1 LOOP
        RETURN format('%s uses %s, which is not built in: drop it, then %s', x.what, x.uses,
                      again);
    END LOOP;
    FOR x IN SELECT e.name, p.oid::regprocedure AS fn, p.proowner, e.owner_name
             FROM @FUNCTIONS@ AS e(name, fn, owner_name) LEFT JOIN pg_proc p ON p.oid = e.fn
             WHERE p.oid IS NULL OR p.proowner <> (SELECT r.oid FROM pg_roles r
                                                    WHERE r.rolname = e.owner_name)
             LIMIT 1 LOOP
        IF x.fn IS NULL THEN
            RETURN format('function %s is missing: %s', x.name, again);
        END IF;
        RETURN format('function %s is owned by %I, not by %I: ALTER FUNCTION %s OWNER TO %I',
                      x.fn, pg_get_userbyid(x.proowner), x.owner_name, x.fn, x.owner_name);
    END LOOP;
    FOR x IN SELECT to_regprocedure(o.name) AS fn FROM unnest(@OLD_FUNCTIONS@) AS o(name)
             WHERE to_regprocedure(o.name) IS NOT NULL LIMIT 1 LOOP
        RETURN format('the old fence function %s (any supervisor could register any role) is '
                      'still there: DROP FUNCTION %s %s', x.fn, x.fn, again);
    END LOOP;
    IF NOT (SELECT r.rolcreaterole FROM pg_roles r WHERE r.oid = fencer_id) THEN
        RETURN format('the fencer role %I cannot lock roles out: ALTER ROLE %I CREATEROLE',
                      fencer_name, fencer_name);
    ELSIF NOT pg_has_role(fencer_id, 'pg_signal_backend', 'USAGE') THEN
        RETURN format('the fencer role %I cannot end sessions: GRANT pg_signal_backend TO %I',
                      fencer_name, fencer_name);
    END IF;
    -- only now a table: may the caller act for this lease, and what is bound to it
    IF NOT EXISTS (SELECT 1 FROM ONLY @ACCESS@ a
                   WHERE a.lease_name = p_lease AND a.supervisor_role = me) THEN
        RETURN format('database.user %I may not act for lease %L: INSERT INTO %s (lease_name, '
                      'supervisor_role) VALUES (%L, %L) (printed by `corda-ha-supervisor '
                      'schema`)', me, p_lease, @ACCESS_TEXT@, p_lease, me);
    END IF;
    SELECT b.lease_name, b.machine_name INTO x FROM ONLY @BINDING@ b WHERE b.node_role = p_role;
    IF NOT FOUND THEN
        RETURN format('node role %I is not bound to lease %L: a DBA runs, as `schema` prints '
                      'it on this host: SELECT %s(%L, %L, %L)', p_role, p_lease, @BIND_TEXT@,
                      p_role, p_lease, p_machine);
    ELSIF x.lease_name <> p_lease OR x.machine_name <> p_machine THEN
        RETURN format('node role %I is bound to lease %L on machine %L, not to lease %L on '
                      'machine %L: fencing.nodeRole or machineName is wrong, or both hosts'' '
                      'nodes use one role (each needs a role of its own)', p_role,
                      x.lease_name, x.machine_name, p_lease, p_machine);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = group_name) THEN
        RETURN format('the node group %I does not exist: see `schema`', group_name);
    END IF;
    FOR x IN SELECT b.node_role, b.machine_name, r.oid, r.rolsuper FROM ONLY @BINDING@ b
             LEFT JOIN pg_roles r ON r.rolname = b.node_role
             WHERE b.lease_name = p_lease ORDER BY b.node_role LOOP
        IF x.oid IS NULL THEN
            RETURN format('node role %I (bound to lease %L, machine %L) does not exist',
                          x.node_role, p_lease, x.machine_name);
        ELSIF x.rolsuper THEN
            RETURN format('node role %I is a superuser: it cannot be fenced (ALTER ROLE %I '
                          'NOSUPERUSER)', x.node_role, x.node_role);
        ELSIF x.node_role = me OR x.oid IN (owner_id, fencer_id)
              OR pg_has_role(x.oid, owner_id, 'MEMBER')
              OR pg_has_role(x.oid, fencer_id, 'MEMBER') THEN
            RETURN format('node role %I is database.user, the owner or the fencer role (or acts '
                          'as one): bind the node''s own login role', x.node_role);
        ELSIF NOT pg_has_role(x.oid, group_name, 'MEMBER') THEN
            RETURN format('node role %I is not a member of the node group %I: GRANT %I TO %I',
                          x.node_role, group_name, group_name, x.node_role);
        ELSIF current_setting('server_version_num')::integer >= 160000 AND NOT EXISTS (
                SELECT 1 FROM pg_auth_members m
                WHERE m.roleid = x.oid AND m.member = fencer_id AND m.admin_option) THEN
            RETURN format('PostgreSQL 16 and later: the fencer role %I may alter only the roles '
                          'it administers: GRANT %I TO %I WITH ADMIN OPTION, INHERIT FALSE, '
                          'SET FALSE', fencer_name, x.node_role, fencer_name);
        END IF;
        IF x.node_role <> p_role THEN
            others := others + 1;
        END IF;
    END LOOP;
    IF others = 0 THEN
        RETURN format('no other node role is bound to lease %L: the other host''s node must log '
                      'in with a role of its own (not %I, which this host''s node uses), bound '
                      'with what `schema` prints on that host; a role both nodes use cannot '
                      'be fenced', p_lease, p_role);
    END IF;
    RETURN NULL;
END """)

# NOLOGIN for the other roles bound to the lease, LOGIN for our own: one statement.
LOCK_BODY = "CREATE OR REPLACE FUNCTION @LOCK@(p_lease text, p_epoch bigint, " \
    "p_instance text, p_role name, p_machine text)\nRETURNS TABLE (node_role name, " \
    "action text, sessions integer)\nLANGUAGE plpgsql SECURITY DEFINER " \
    "SET search_path = pg_catalog, pg_temp AS " + dollar_quoted("""
DECLARE
    r record;
    problem text := @CONFIRM@(p_lease, p_role, p_machine);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '@REFUSED@', MESSAGE = problem;
    END IF;
    -- the holder, by the database clock; the row lock (until this statement commits)
    -- makes a new holder's acquisition come after these changes
    PERFORM 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = p_instance
        AND l.epoch = p_epoch AND l.expires_at > clock_timestamp() FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not the holder of lease % at epoch %', p_lease, p_epoch
            USING ERRCODE = '@NOT_HOLDER@';
    END IF;
    FOR r IN SELECT b.node_role AS name, g.rolcanlogin AS can_login
             FROM ONLY @BINDING@ b JOIN pg_roles g ON g.rolname = b.node_role
             WHERE b.lease_name = p_lease
             ORDER BY b.node_role FOR UPDATE OF b LOOP
        node_role := r.name;
        sessions := 0;
        IF r.name = p_role THEN
            IF r.can_login THEN
                action := 'can log in';
            ELSE
                EXECUTE format('ALTER ROLE %I LOGIN', r.name);
                action := 'unlocked';
            END IF;
            UPDATE ONLY @BINDING@ b SET locked_by_epoch = NULL, locked_at = NULL
                WHERE b.node_role = r.name;
        ELSIF r.can_login THEN
            EXECUTE format('ALTER ROLE %I NOLOGIN', r.name);
            action := 'locked';
            UPDATE ONLY @BINDING@ b SET locked_by_epoch = p_epoch, locked_at = clock_timestamp()
                WHERE b.node_role = r.name;
        ELSE
            action := 'still locked';
        END IF;
        RETURN NEXT;
    END LOOP;
END """)

# End the sessions of the other roles bound to the lease that cannot log in; no row lock.
END_BODY = "CREATE OR REPLACE FUNCTION @END@(p_lease text, p_epoch bigint, " \
    "p_instance text, p_role name, p_machine text, p_wait_ms bigint)\nRETURNS TABLE " \
    "(node_role name, action text, sessions integer)\nLANGUAGE plpgsql SECURITY DEFINER " \
    "SET search_path = pg_catalog, pg_temp AS " + dollar_quoted("""
DECLARE
    r record;
    s record;
    pids integer[] := '{}';
    starts timestamptz[] := '{}';
    deadline timestamptz := clock_timestamp() + p_wait_ms * interval '1 millisecond';
    problem text := @CONFIRM@(p_lease, p_role, p_machine);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '@REFUSED@', MESSAGE = problem;
    END IF;
    PERFORM 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = p_instance
        AND l.epoch = p_epoch AND l.expires_at > clock_timestamp();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not the holder of lease % at epoch %', p_lease, p_epoch
            USING ERRCODE = '@NOT_HOLDER@';
    END IF;
    PERFORM pg_stat_clear_snapshot();
    FOR r IN SELECT b.node_role AS name FROM ONLY @BINDING@ b
             WHERE b.lease_name = p_lease AND b.node_role <> p_role ORDER BY b.node_role LOOP
        node_role := r.name;
        sessions := 0;
        action := 'locked';
        FOR s IN SELECT a.pid, a.backend_start FROM pg_stat_activity a
                 WHERE a.usename = r.name ORDER BY a.pid LOOP
            -- right before each signal: still the holder, the role still locked out
            IF (SELECT g.rolcanlogin FROM pg_roles g WHERE g.rolname = r.name) THEN
                action := 'can log in';
                EXIT;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease
                           AND l.instance = p_instance AND l.epoch = p_epoch
                           AND l.expires_at > clock_timestamp()) THEN
                RAISE EXCEPTION 'not the holder of lease % at epoch %', p_lease, p_epoch
                    USING ERRCODE = '@NOT_HOLDER@';
            END IF;
            PERFORM pg_terminate_backend(s.pid);
            pids := pids || s.pid;
            starts := starts || s.backend_start;
            sessions := sessions + 1;
        END LOOP;
        IF (SELECT g.rolcanlogin FROM pg_roles g WHERE g.rolname = r.name) THEN
            action := 'can log in';
        END IF;
        RETURN NEXT;
    END LOOP;
    -- wait (p_wait_ms in all) for the signalled sessions to exit; one that has not is
    -- found, and signalled, again by the caller's next call
    WHILE cardinality(pids) > 0 AND clock_timestamp() < deadline LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                              JOIN unnest(pids, starts) AS t(pid, started)
                                ON a.pid = t.pid AND a.backend_start = t.started);
        PERFORM pg_sleep(0.005);
    END LOOP;
END """)

# The DBA's binding: one role, one lease, one machine (the keys); never moved here.
BIND_BODY = "CREATE OR REPLACE FUNCTION @BIND@(p_role name, p_lease text, " \
    "p_machine text)\nRETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp " \
    "AS " + dollar_quoted("""
DECLARE
    b record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role) THEN
        RAISE EXCEPTION 'node role % does not exist: create it first (see the comments '
            'above)', p_role;
    END IF;
    INSERT INTO @BINDING@ (node_role, lease_name, machine_name)
        VALUES (p_role, p_lease, p_machine) ON CONFLICT DO NOTHING;
    SELECT f.lease_name, f.machine_name INTO b FROM ONLY @BINDING@ f WHERE f.node_role = p_role;
    IF NOT FOUND THEN
        SELECT f.node_role INTO b FROM ONLY @BINDING@ f
            WHERE f.lease_name = p_lease AND f.machine_name = p_machine;
        RAISE EXCEPTION 'machine % of lease % is bound to node role % already: one role per '
            'machine; to change it, DELETE FROM % WHERE node_role = % first', p_machine,
            p_lease, b.node_role, @BINDING_TEXT@, quote_literal(b.node_role);
    ELSIF b.lease_name <> p_lease OR b.machine_name <> p_machine THEN
        RAISE EXCEPTION 'node role % is bound to lease % on machine % already: each host''s '
            'node needs a login role of its own; to move it, DELETE FROM % WHERE node_role = '
            '% first', p_role, b.lease_name, b.machine_name, @BINDING_TEXT@,
            quote_literal(p_role);
    END IF;
    IF current_setting('server_version_num')::integer >= 160000 THEN
        EXECUTE format('GRANT %I TO %I WITH ADMIN OPTION, INHERIT FALSE, SET FALSE', p_role,
                       @FENCER@);
    END IF;
END """)
