"""The database side of fencing, as the DDL text `schema` prints: the binding table and
the functions (see `supervisor.lease.fence` for the protocol).

- `<table>_fence_binding`: which node role runs on which machine of which lease, and
  which epoch locked it out. One row per role (the key): a role is bound to one lease
  and one machine at most, and a machine of a lease to one role. Only a DBA binds
  (`<table>_fence_bind(role, lease, machine)`, printed by `schema`; EXECUTE for nobody
  else); the supervisor reads its own lease's rows.
- `<table>_fence_confirm(lease, role, machine)`: NULL, or what is wrong, naming the fix
  (`supervisor.lease.fence_check`): first, from the catalogs only, that the caller
  can alter nothing the functions read; then its access to the lease and the bindings.
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

from supervisor.lease.fence_check import CONFIRM_BODY
from supervisor.lease.ownership import (
    ACCESS_POLICY,
    SELF_POLICY,
    create_role_if_missing,
    dollar_quoted,
    guard_tables,
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
           guard_tables([f.binding], [f.binding], owner),
           f.create_binding,
           f"ALTER TABLE {binding} OWNER TO {ident(owner)}",
           f"REVOKE ALL ON {binding} FROM PUBLIC, {role}",
           f"REVOKE CREATE ON SCHEMA {q(f.schema)} FROM {role}",
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
        FOR s IN SELECT a.pid FROM pg_stat_activity a
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
            sessions := sessions + 1;
        END LOOP;
        IF (SELECT g.rolcanlogin FROM pg_roles g WHERE g.rolname = r.name) THEN
            action := 'can log in';
        END IF;
        RETURN NEXT;
    END LOOP;
    -- wait (p_wait_ms in all) for the signalled sessions to exit; one that has not is
    -- found, and signalled, again by the caller's next call (only pid and usename of
    -- another role's session are visible to the fencer)
    WHILE cardinality(pids) > 0 AND clock_timestamp() < deadline LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (pids));
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
