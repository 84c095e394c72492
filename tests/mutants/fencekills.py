"""Which scenario (`fencecases.SCENARIOS`, `fencecases.CORDA`) kills which generated fence
mutant (`fencegen.py`).

`KILLS[statement][site][operator]` is the scenario in which that condition alone decides.
`EQUIVALENT` lists the mutants no behaviour tells apart from the code, with the reason;
`OUT_OF_REACH` those that differ only on a server or an object the suite cannot have,
with the reason. `tests/test_fence_generated_mutants.py` fails when a generated mutant is
in none of them, or when an entry names a mutant the generator no longer makes.
"""

from __future__ import annotations

from tests.mutants.fencecheckkills import CONFIRM, boolean, cond, ops

_HOLDER = {  # the holder check (lock, end and the end call's first): each condition alone
    "l.lease_name = p_lease": ("{}-twin-lease", "{}"),
    "l.instance = p_instance": ("{}-other-instance", "{}"),
    "l.epoch = p_epoch": ("{}-old-epoch", "{}"),
}


def _holder(call: str) -> dict[str, dict[str, str]]:
    out = {site: {"true": true.format(call), "op <>": flip.format(call)}
           for site, (true, flip) in _HOLDER.items()}
    out["l.expires_at > clock_timestamp()"] = {
        "true": f"{call}-expired", "op >=": f"{call}-expires-now", "op <": call,
        "clock -1s": f"{call}-expired-0.5s", "clock +1s": f"{call}-expires-in-0.5s"}
    out["problem IS NOT NULL"] = {"true": call, "op IS NULL": call,
                                  "branch never": f"{call}-refused"}
    out["DECLARE problem"] = {"null": f"{call}-refused"}
    out["NOT FOUND"] = {"branch never": f"{call}-expired"}
    return out


LOCK: dict[str, dict[str, str]] = {
    **_holder("lock"),
    "FOUND": boolean("lock-expired", "lock"),
    "g.rolname = b.node_role": cond("lock", "lock", "<>"),
    "b.lease_name = p_lease": cond("lock", "lock", "<>"),
    ":= node_role": ops("lock", "old", "null"),
    ":= sessions": ops("lock", "old", "null"),
    "r.name = p_role": {**cond("lock", "lock", "<>"), "branch never": "lock"},
    # the other roles' ELSIF first, then our own role's IF (the order sites are found)
    "r.can_login": {"true": "lock-again", "not": "lock", "branch never": "lock",
                    "true #2": "lock-own-role-locked-out", "not #2": "lock",
                    "branch never #2": "lock"},
    ":= action": {"old": "lock", "null": "lock",  # 'can log in'
                  "old #2": "lock-own-role-locked-out",  # 'unlocked'
                  "null #2": "lock-own-role-locked-out",
                  "old #3": "lock", "null #3": "lock",  # 'locked'
                  "old #4": "lock-again", "null #4": "lock-again"},  # 'still locked'
    "b.node_role = r.name": {  # our own binding cleared, then the other's locked
        "true": "lock-other-pair-locked-out", "op <>": "lock-other-pair-locked-out",
        "true #2": "lock", "op <> #2": "lock"},
    "SET locked_by_epoch": {"old": "lock-own-role-locked-out", "old #2": "lock",
                            "null": "lock"},
    "SET locked_at": {"old": "lock-own-role-locked-out", "old #2": "lock", "null": "lock"},
}

_WAIT = "end-waits-for-the-deadline"
_RUNS_OUT = "end-lease-runs-out-before-the-signal"
END: dict[str, dict[str, str]] = {
    **_holder("end"),
    "FOUND": boolean("end-expired", "end"),
    "DECLARE deadline": ops(_WAIT, "null", "bound x2", "bound dropped"),
    "b.lease_name = p_lease": cond("end", "end", "<>"),
    "b.node_role <> p_role": cond("end", "end", "="),
    ":= node_role": ops("end", "old", "null"),
    ":= sessions": ops("end", "old", "null", "old #2", "null #2"),
    ":= action": {"old": "end", "null": "end",  # 'locked', for each role
                  "old #3": "end-can-log-in-no-session",  # 'can log in' after the loop
                  "null #3": "end-can-log-in-no-session"},
    "a.usename = r.name": cond("end", "end", "<>"),
    # right before each signal, then after the sessions: can the role log in again?
    "(SELECT g.rolcanlogin FROM pg_roles g WHERE g.rolname = r.name)": {
        "true": "end", "not": "end", "branch never": "end-can-log-in",
        "true #2": "end", "not #2": "end", "branch never #2": "end-can-log-in-no-session"},
    "g.rolname = r.name": ops("end", "true", "op <>", "true #2", "op <> #2"),
    # the holder again, right before each signal
    "EXISTS (SELECT 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = "
    "p_instance AND l.epoch = p_epoch AND l.expires_at > clock_timestamp())":
        boolean(_RUNS_OUT, "end"),
    "NOT EXISTS (SELECT 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = "
    "p_instance AND l.epoch = p_epoch AND l.expires_at > clock_timestamp())":
        {"branch never": _RUNS_OUT},
    ":= pids": ops(_WAIT, "old", "null"),
    "cardinality(pids) > 0": {"op <": _WAIT},
    "clock_timestamp() < deadline": ops(_WAIT, "true", "op <=", "op >", "clock -1s",
                                         "clock +1s"),
    "cardinality(pids) > 0 AND clock_timestamp() < deadline": {"branch never": _WAIT},
    # a mutant that waits for sessions that are gone waits for the deadline: the clock
    # is held, so the call is cancelled
    "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (pids))": boolean("end", _WAIT),
    "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (pids))":
        {"branch never": "end"},
    "a.pid = ANY (pids)": cond("end", "end", "<>"),
}
for _site, _kills in _holder("end").items():  # the same conditions right before a signal
    if _site.startswith("l."):
        END[_site] = {**_kills, **{f"{op} #2": k for op, k in {
            "true": "end-runs-out-beside-a-twin" if "lease_name" in _site else
            "end-taken-over-before-the-signal" if "instance" in _site else
            "end-next-epoch-before-the-signal" if "epoch" in _site else _RUNS_OUT,
            **({"op <>": "end"} if "expires" not in _site else {
                "op >=": "end-lease-expires-at-the-signal", "op <": "end",
                "clock -1s": _RUNS_OUT, "clock +1s": "end-expires-in-0.5s"})}.items()}}

BIND: dict[str, dict[str, str]] = {
    "EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role)": boolean("bind-no-role", "bind"),
    "NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role)":
        {"branch never": "bind-no-role"},
    "r.rolname = p_role": cond("bind-no-role", "bind-no-role", "<>"),
    **{f"VALUES {c}": {"null": "bind"} for c in ("node_role", "lease_name", "machine_name")},
    "f.node_role = p_role": cond("bind", "bind", "<>"),
    "FOUND": boolean("bind-taken-machine", "bind"),
    "NOT FOUND": {"branch never": "bind-taken-machine"},
    "b.lease_name <> p_lease": cond("bind-again", "bind-again", "=", "bind-to-another-lease"),
    "b.machine_name <> p_machine": cond("bind-again", "bind-again", "=",
                                         "bind-to-another-machine"),
    "b.lease_name <> p_lease OR b.machine_name <> p_machine":
        {"branch never": "bind-to-another-machine"},
    "f.lease_name = p_lease": cond("bind-taken-machine-of-pair-2",
                                    "bind-taken-machine-of-pair-2", "<>"),
    "f.machine_name = p_machine": cond("bind-taken-machine-of-pair-2",
                                        "bind-taken-machine-of-pair-2", "<>"),
    "current_setting('server_version_num')::integer >= 160000":
        {"true": "bind", "op <": "bind@18", "branch never": "bind@18"},
}

_OWN_LEASE = "sees-its-own-lease"
_OWN_BINDINGS = "sees-its-own-bindings"
OTHERS: dict[str, dict[str, dict[str, str]]] = {
    "read": {
        "r.rolname = f.node_role": cond("read", "read", "<>"),
        "f.lease_name = %(lease)s": cond("read-with-two-leases", "read", "<>"),
        "a.usename = f.node_role": cond("read", "read", "<>"),
    },
    "own_rows": {
        "lease_name IN (SELECT a.lease_name FROM {q(self.access)} a WHERE a.supervisor_role "
        "= current_user)": {"true": _OWN_LEASE, "op NOT IN": _OWN_LEASE},
        "a.supervisor_role = current_user": {"op <>": _OWN_LEASE},
    },
    "access_policy": {
        "USING: {rows}": boolean(_OWN_LEASE, _OWN_LEASE),
        "WITH CHECK: {rows}": boolean("inserts-another-lease", "updates-its-own-lease"),
    },
    "self_policy": {
        "USING: supervisor_role = current_user": cond("sees-its-own-access",
                                                       "sees-its-own-access", "<>"),
    },
    "binding_policy": {
        "lease_name IN (SELECT a.lease_name FROM {access} a WHERE a.supervisor_role = "
        "current_user)": {"true": _OWN_BINDINGS, "op NOT IN": _OWN_BINDINGS},
        "a.supervisor_role = current_user": {"op <>": _OWN_BINDINGS},
    },
    "fencer_policy": {"USING: true": {"not": "lock"}},
    "fencer_lock_policy": {"USING: true": {"not": "lock"}, "WITH CHECK: {check}": {"not": "lock"}},
    "make_takeable#1": {
        "lease_name = %s": cond("corda-twin-lease", "corda-made-takeable", "<>"),
        "instance = %s": cond("corda-other-instance", "corda-made-takeable", "<>"),
        "epoch = %s": cond("corda-old-epoch", "corda-made-takeable", "<>"),
        "expires_at > clock_timestamp()": {
            "true": "corda-expired", "op >=": "corda-expires-now", "op <": "corda-made-takeable",
            "clock -1s": "corda-expired-0.5s", "clock +1s": "corda-expires-in-0.5s"},
    },
    "make_takeable#2": {
        "mutual_exclusion_id = 'X'": cond("corda-own-row-first", "corda-made-takeable", "<>"),
        "mutual_exclusion_timestamp + %s < clock_timestamp()": {
            "true": "corda-made-takeable", "op <=": "corda-row-w-old",
            "op >": "corda-made-takeable", "bound x2": "corda-row-1.5w-old",
            "bound dropped": "corda-made-takeable", "clock -1s": "corda-row-w+0.5s-old",
            "clock +1s": "corda-row-w-0.5s-old"},
    },
    "make_takeable#3": {
        "mutual_exclusion_id = 'X'": cond("corda-own-row-first", "corda-made-takeable", "<>"),
        "version = %s": {"op <>": "corda-made-takeable"},
        "SET mutual_exclusion_timestamp": ops(
            "corda-made-takeable", "old", "null", "bound x2", "bound dropped",
            "bound x2 #2", "bound dropped #2"),
    },
    "look": {"mutual_exclusion_id = 'X'": cond("corda-look-own-row-first", "corda-look",
                                                "<>")},
}

KILLS: dict[str, dict[str, dict[str, str]]] = {
    "confirm": CONFIRM, "lock": LOCK, "end": END, "bind": BIND, **OTHERS}

_OIDS = ("OIDs of every catalog come from one counter (a cluster whose counter has not "
         "wrapped): no object of another catalog has the OID of one of ours, so the class "
         "compared beside it never decides")
_OWN_ROLE = ("a role is a member of itself: pg_has_role(x.oid, owner_id, 'MEMBER') and "
             "pg_has_role(x.oid, fencer_id, 'MEMBER') already hold for the owner and the "
             "fencer role themselves")
_SELF_POLICY = ("the subquery reads the access table as the supervisor role, whose own "
                "policy there (corda_ha_self: supervisor_role = current_user) shows it only "
                "its own rows: the condition is implied (it stays: defence in depth)")
_CONSTRAINT_REFS = ("only a partition or an inheriting table depends on another table's "
                    "constraint, and the inheritance check before reports those: nothing of "
                    "ours that passes it depends on a constraint that is not ours")

EQUIVALENT: dict[str, str] = {
    "confirm: FOUND [true]":
        "SELECT ... INTO x sets x to NULLs when it finds no row: x.rolname = me is NULL "
        "then, so the IF is not taken with or without FOUND",
    "confirm: x.conname IS NOT NULL [true]":
        "every internal trigger belongs to a constraint (foreign keys, deferrable unique "
        "and exclusion constraints): conname is never NULL for one",
    "confirm: a.attnum > 0 [true]":
        "system columns (attnum < 0) are of built-in types, never generated, and their "
        "names are reserved: no column `schema` creates matches one",
    "confirm: a.attnum > 0 [op >=]": "no column has attnum 0",
    **{f"confirm: d.refclassid = '{c}'::regclass [true]": _OIDS
       for c in ("pg_class", "pg_namespace", "pg_constraint")},
    **{f"confirm: d.classid = '{c}'::regclass [true]": _OIDS
       for c in ("pg_class", "pg_policy", "pg_attrdef", "pg_constraint", "pg_statistic_ext")},
    "confirm: d.refobjid IN ( SELECT c.oid FROM pg_constraint c WHERE c.conrelid = ANY "
    "(rels)) [true]": _CONSTRAINT_REFS,
    "confirm: c.conrelid = ANY (rels) [true]": _CONSTRAINT_REFS,
    "confirm: c.conrelid = ANY (rels) [op <>]": _CONSTRAINT_REFS,
    "confirm: x.oid IN (owner_id, fencer_id) [false]": _OWN_ROLE,
    "confirm: x.oid IN (owner_id, fencer_id) [item dropped: owner_id]": _OWN_ROLE,
    "confirm: x.oid IN (owner_id, fencer_id) [item dropped: fencer_id]": _OWN_ROLE,
    "confirm: := others [null]":
        "others is set only when another role is found, and then the answer is not 'no "
        "other role' either way: NULL = 0 is NULL, so the IF is not taken",
    "end: DECLARE pids [null]":
        "NULL || pid is {pid}, as '{}' || pid is; with nothing signalled cardinality(NULL) "
        "> 0 is NULL, as cardinality('{}') > 0 is false: no wait either way",
    "end: := action [old] #2":
        "the check after the session loop reads the same role in the same statement and "
        "sets 'can log in' again",
    "end: := action [null] #2":
        "the check after the session loop reads the same role in the same statement and "
        "sets 'can log in' again",
    "end: cardinality(pids) > 0 [true]":
        "with nothing signalled the loop's EXIT WHEN finds none of the (no) sessions and "
        "ends it before it sleeps",
    "end: cardinality(pids) > 0 [op >=]":
        "with nothing signalled the loop's EXIT WHEN finds none of the (no) sessions and "
        "ends it before it sleeps",
    "own_rows: a.supervisor_role = current_user [true]": _SELF_POLICY,
    "binding_policy: a.supervisor_role = current_user [true]": _SELF_POLICY,
    "fencer_lock_policy: WITH CHECK: {check} [true]":
        "it makes the lease table's check TRUE (the binding table's is TRUE already): no "
        "fence function updates the lease table (the fencer's UPDATE (lease_name) is there "
        "for FOR SHARE only): defence in depth against one that would",
    "make_takeable#3: version = %s [true]":
        "the row was read FOR UPDATE in the same transaction: nobody can change it, or its "
        "version, before this UPDATE",
}

_V16 = ("differs only on a server whose server_version_num is exactly 160000 "
        "(PostgreSQL 16.0); the suite has 15 and the embedded 18")
_OID_16384 = ("differs only for an object with OID exactly 16384, the first OID after "
              "initdb, which a test cluster gives to its role corda_ha_test "
              "(PgServer.create): a role, not a type or anything a table depends on")
OUT_OF_REACH: dict[str, str] = {
    "confirm: current_setting('server_version_num')::integer >= 160000 [op >]": _V16,
    "bind: current_setting('server_version_num')::integer >= 160000 [op >]": _V16,
    "confirm: a.atttypid >= @BUILT_IN@ [op >]": _OID_16384,
    "confirm: d.refobjid >= @BUILT_IN@ [op >]": _OID_16384,
}


#: SQLSTATEs of SQL that is not valid (syntax, an unknown name or type, a constant where
#: PostgreSQL wants an expression): a mutant killed by one of them is no kill but an error
#: of the generator, unless it is listed in `REFUSED_BY_DESIGN`
INVALID_SQL = {"42601": "SyntaxError", "42804": "DatatypeMismatch",
               "42883": "UndefinedFunction", "42703": "UndefinedColumn",
               "42P01": "UndefinedTable", "42702": "AmbiguousColumn",
               "42P18": "IndeterminateDatatype", "42P10": "InvalidColumnReference"}
REFUSED_BY_DESIGN: dict[str, str] = {
    "bind: current_setting('server_version_num')::integer >= 160000 [true]":
        "on PostgreSQL 15 the branch runs 16's GRANT ... WITH ADMIN OPTION, INHERIT FALSE, "
        "SET FALSE, which 15 refuses (42601): that refusal is what the mutant changes there "
        "(on 16+ the branch is taken anyway)",
}


def invalid(key: str, detail: str) -> bool:
    """Whether a kill's `detail` (why its scenario failed: the answer it got, or the error
    it raised) is SQL that is not valid."""
    return key not in REFUSED_BY_DESIGN and any(
        f"sqlstate='{code}'" in detail or f"psycopg.errors.{name}" in detail
        for code, name in INVALID_SQL.items())


def kills() -> dict[str, str]:
    """Mutant key -> scenario name, flattened (an operator "x #2": the key's " #2")."""
    out = {}
    for statement, by_site in KILLS.items():
        for site, by_op in by_site.items():
            for op, scenario in by_op.items():
                base, _, n = op.partition(" #")
                out[f"{statement}: {site} [{base}]" + (f" #{n}" if n else "")] = scenario
    return out
