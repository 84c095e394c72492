"""Which scenario (`fencecases.SCENARIOS`, `fencecases.CORDA`) kills which generated fence
mutant (`fencegen.py`).

`KILLS[statement][site][operator]` is the scenario in which that condition alone decides.
`EQUIVALENT` lists the mutants no behaviour tells apart from the code, with the reason;
`OUT_OF_REACH` those that differ only on a server or an object the suite cannot have,
with the reason. `tests/test_fence_generated_mutants.py` fails when a generated mutant is
in none of them, or when an entry names a mutant the generator no longer makes.
"""

from __future__ import annotations

OK = "ok"  # the confirm check of a sound world: a mutant that finds a problem there


def _ops(scenario: str, *ops: str) -> dict[str, str]:
    return dict.fromkeys(ops, scenario)


def _cond(true: str, flip: str, op: str, false: str | None = None) -> dict[str, str]:
    """A comparison: dropped (TRUE), flipped (`op`), as an OR alternative dropped."""
    out = {"true": true, f"op {op}": flip}
    if false is not None:
        out["false"] = false
    return out


def _bool(true: str, negated: str, false: str | None = None) -> dict[str, str]:
    """A bare boolean: dropped (TRUE), negated, as an OR alternative dropped."""
    out = {"true": true, "not": negated}
    if false is not None:
        out["false"] = false
    return out


def _dep_group(kind: str, objects: str, group: str, flip: str) -> dict[str, dict[str, str]]:
    """One `d.classid = '<kind>'::regclass AND d.objid IN (<objects of ours>)` group of
    the dependency check: the group dropped, its class flipped, its objects any."""
    return {f"d.classid = '{kind}'::regclass": {"op <>": flip},
            objects: {"true": "other-objects", "op NOT IN": "other-objects"},
            group: {"false": flip}}


_DEP_OBJECTS = "d.objid IN ( SELECT {} FROM {} WHERE {} = ANY (rels))"

CONFIRM: dict[str, dict[str, str]] = {
    **{f"DECLARE {v}": {"null": OK} for v in (
        "me", "owner_name", "fencer_name", "group_name", "schema_name", "owner_id",
        "fencer_id", "nsp", "rels")},
    "DECLARE again": {"null": "no-owner-role"},
    "DECLARE names": {"null": "table-missing"},
    "DECLARE others": {"null": "no-other-role"},
    "owner_id IS NULL": _cond(OK, OK, "IS NOT NULL", "no-owner-role"),
    "fencer_id IS NULL": _cond(OK, OK, "IS NOT NULL", "no-fencer-role"),
    "nsp IS NULL": _cond(OK, OK, "IS NOT NULL", "no-schema"),
    "owner_id IS NULL OR fencer_id IS NULL OR nsp IS NULL": {"branch never": "no-owner-role"},
    "r.rolsuper": _bool(OK, OK, "caller-superuser"),
    "r.rolcreaterole": _bool(OK, OK, "caller-createrole"),
    "r.rolbypassrls": _bool(OK, OK, "caller-bypassrls"),
    "pg_has_role(me, r.oid, 'MEMBER')": _bool(OK, OK),
    "r.rolname <> me": _cond("caller-createrole-acting-as-fencer",
                             "caller-createrole-acting-as-fencer", "="),
    "FOUND": {"not": "caller-superuser", "true #2": OK, "not #2": OK, "true #3": "role-not-bound",
              "not #3": OK, "branch never": "caller-acts-as-privileged"},
    "x.rolname = me": _cond("caller-acts-as-privileged", "caller-superuser", "<>"),
    "FOUND AND x.rolname = me": {"branch never": "caller-superuser"},
    "pg_has_role(me, owner_id, 'MEMBER')": _bool(OK, OK, "caller-in-owner"),
    "pg_has_role(me, fencer_id, 'MEMBER')": _bool(OK, OK, "caller-in-fencer"),
    "pg_has_role(me, owner_id, 'MEMBER') OR pg_has_role(me, fencer_id, 'MEMBER')":
        {"branch never": "caller-in-owner"},
    "n.oid = nsp": _cond("caller-owns-schema", "caller-owns-schema", "<>"),
    "pg_has_role(me, x.nspowner, 'MEMBER')": {**_bool(OK, OK),
                                              "branch never": "caller-owns-schema"},
    "t.rel IS NULL": _cond(OK, OK, "IS NOT NULL"),
    "c.oid = ANY (rels)": _cond(OK, OK, "<>"),
    "pg_has_role(me, x.relowner, 'MEMBER')": {**_bool(OK, OK),
                                              "branch never": "caller-owns-table"},
    "x.relowner <> owner_id": {**_cond(OK, OK, "="), "branch never": "table-of-another-owner"},
    "x.relkind <> 'r'": {**_cond(OK, OK, "="), "branch never": "view-in-place"},
    "x.relrowsecurity": _bool("rls-off", OK),
    "NOT x.relrowsecurity": {"branch never": "rls-off"},
    "has_table_privilege(me, x.rel, 'TRIGGER')": _bool(OK, OK, "caller-may-trigger"),
    "has_table_privilege(me, x.rel, 'REFERENCES')": _bool(OK, OK, "caller-may-reference"),
    "has_table_privilege(me, x.rel, 'TRIGGER') OR has_table_privilege(me, x.rel, "
    "'REFERENCES')": {"branch never": "caller-may-trigger"},
    "has_schema_privilege(me, nsp, 'CREATE')": {**_bool(OK, OK),
                                                "branch never": "caller-may-create-in-schema"},
    # triggers
    "c.oid = t.tgconstraint": _cond("foreign-key-to-lease", "foreign-key-to-lease", "<>"),
    "f.oid = t.tgfoid": _cond("audit-trigger", "audit-trigger", "<>"),
    "o.oid = f.proowner": _cond("audit-trigger", "audit-trigger", "<>"),
    "t.tgrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>"),
    "t.tgisinternal": _bool("audit-trigger", "audit-trigger", "foreign-key-to-lease"),
    "t.tgqual IS NOT NULL": _cond("audit-trigger", "audit-trigger", "IS NULL",
                                  "audit-trigger-with-when"),
    "o.rolsuper": _bool("trigger-of-another", "audit-trigger", "audit-trigger"),
    "f.proowner = owner_id": _cond("trigger-of-another", "trigger-of-the-owner", "<>",
                                   "trigger-of-the-owner"),
    "x.tgisinternal": _bool("constraint-trigger", "foreign-key-to-lease"),
    "x.conname IS NOT NULL": {"op IS NULL": "foreign-key-to-lease"},
    "x.tgisinternal AND x.conname IS NOT NULL": {"branch never": "foreign-key-to-lease"},
    "r.ev_class = ANY (rels)": _cond(OK, OK, "<>"),
    "i.inhrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>", "inherits"),
    "i.inhparent = ANY (rels)": _cond("other-objects", "other-objects", "<>",
                                      "inherited-from"),
    # policies
    "p.polrelid = ANY (rels)": {**_cond("other-objects", "other-objects", "<>"),
                                "true #2": "other-objects", "op <> #2": "other-objects"},
    "EXISTS ( SELECT 1 FROM @POLICIES@ AS e(rel, name) WHERE e.rel = p.polrelid AND e.name "
    "= p.polname)": _bool("policy-of-another", OK),
    "e.rel = p.polrelid": _cond("our-policy-name-on-another-table", OK, "<>"),
    "e.name = p.polname": _cond("policy-of-another", OK, "<>"),
    "EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = e.rel AND p.polname = e.name)":
        _bool("policy-missing", OK),
    "p.polrelid = e.rel": _cond("policy-missing-on-one-table", OK, "<>"),
    "p.polname = e.name": _cond("policy-missing", OK, "<>"),
    # columns
    "e.rel = a.attrelid": _cond("column-of-another-tables-name",
                                "column-of-another-tables-name", "<>"),
    "e.name = a.attname": _cond(OK, OK, "<>"),
    "a.attrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>"),
    "a.attnum > 0": {"op <": "column-of-its-own-type"},
    "a.attisdropped": _bool("column-of-its-own-type", "column-of-its-own-type"),
    "a.atttypid >= @BUILT_IN@": {"true": OK, "false": "column-of-its-own-type", "op <": OK},
    "a.atttypid <> coalesce(e.kind::oid, a.atttypid)": _cond(OK, OK, "=", "column-retyped"),
    "a.attgenerated <> ''": _cond(OK, OK, "=", "column-generated"),
    "x.expected IS NULL": {**_cond("column-retyped", "column-of-its-own-type", "IS NOT NULL"),
                           "branch never": "column-of-its-own-type"},
    "x.attgenerated <> ''": _cond("column-retyped", "column-retyped", "="),
    # dependencies
    "d.refobjid >= @BUILT_IN@": {"true": "column-of-an-initdb-domain",
                                 "op <": "default-uses-a-sequence"},
    "d.refclassid = 'pg_class'::regclass": {"op <>": OK},
    "d.refobjid = ANY (rels)": _cond("default-uses-a-sequence", "default-uses-a-sequence",
                                     "<>"),
    "d.refclassid = 'pg_namespace'::regclass": {"op <>": OK},
    "d.refobjid = nsp": _cond("statistics-in-another-schema", "statistics-in-another-schema",
                              "<>"),
    "d.refclassid = 'pg_constraint'::regclass": {"op <>": OK},
    "d.refobjid IN ( SELECT c.oid FROM pg_constraint c WHERE c.conrelid = ANY (rels))":
        {"op NOT IN": OK},
    "(d.classid = 'pg_class'::regclass AND (d.objid = ANY (rels) OR d.objid IN ( SELECT "
    "i.indexrelid FROM pg_index i WHERE i.indrelid = ANY (rels))))":
        {"false": "index-uses-a-function"},
    "d.classid = 'pg_class'::regclass": {"op <>": "column-collation"},
    "d.objid = ANY (rels)": _cond("other-objects", "other-objects", "<>", "column-collation"),
    "d.objid IN ( SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = ANY (rels))":
        {"true": "other-objects", "op NOT IN": "other-objects",
         "false": "index-uses-a-function"},
    **_dep_group("pg_policy", _DEP_OBJECTS.format("p.oid", "pg_policy p", "p.polrelid"),
                 "(d.classid = 'pg_policy'::regclass AND " +
                 _DEP_OBJECTS.format("p.oid", "pg_policy p", "p.polrelid") + ")",
                 "policy-uses-a-function"),
    **_dep_group("pg_attrdef", _DEP_OBJECTS.format("a.oid", "pg_attrdef a", "a.adrelid"),
                 "(d.classid = 'pg_attrdef'::regclass AND " +
                 _DEP_OBJECTS.format("a.oid", "pg_attrdef a", "a.adrelid") + ")",
                 "default-uses-a-sequence"),
    **_dep_group("pg_constraint", _DEP_OBJECTS.format("c.oid", "pg_constraint c",
                                                      "c.conrelid"),
                 "(d.classid = 'pg_constraint'::regclass AND " +
                 _DEP_OBJECTS.format("c.oid", "pg_constraint c", "c.conrelid") + ")",
                 "check-uses-a-function"),
    **_dep_group("pg_statistic_ext", _DEP_OBJECTS.format("s.oid", "pg_statistic_ext s",
                                                         "s.stxrelid"),
                 "(d.classid = 'pg_statistic_ext'::regclass AND " +
                 _DEP_OBJECTS.format("s.oid", "pg_statistic_ext s", "s.stxrelid") + ")",
                 "statistics-in-another-schema"),
    "i.indrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>"),
    "a.adrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>"),
    "c.conrelid = ANY (rels)": {"true #2": "other-objects", "op <> #2": "other-objects"},
    "s.stxrelid = ANY (rels)": _cond("other-objects", "other-objects", "<>"),
    # functions
    "p.oid = e.fn": _cond(OK, OK, "<>"),
    "p.oid IS NULL": _cond(OK, OK, "IS NOT NULL", "function-missing"),
    "p.proowner <> (SELECT r.oid FROM pg_roles r WHERE r.rolname = e.owner_name)":
        _cond(OK, OK, "=", "function-of-another-owner"),
    "r.rolname = e.owner_name": _cond(OK, OK, "<>"),
    "x.fn IS NULL": {**_cond("function-of-another-owner", "function-missing", "IS NOT NULL"),
                     "branch never": "function-missing"},
    "to_regprocedure(o.name) IS NOT NULL": _cond(OK, OK, "IS NULL"),
    # the fencer
    "(SELECT r.rolcreaterole FROM pg_roles r WHERE r.oid = fencer_id)":
        _bool("fencer-without-createrole", OK),
    "NOT (SELECT r.rolcreaterole FROM pg_roles r WHERE r.oid = fencer_id)":
        {"branch never": "fencer-without-createrole"},
    "pg_has_role(fencer_id, 'pg_signal_backend', 'USAGE')": _bool("fencer-without-signal", OK),
    "NOT pg_has_role(fencer_id, 'pg_signal_backend', 'USAGE')":
        {"branch never": "fencer-without-signal"},
    "r.oid = fencer_id": _cond(OK, OK, "<>"),
    # the lease's access and bindings
    "EXISTS (SELECT 1 FROM ONLY @ACCESS@ a WHERE a.lease_name = p_lease AND "
    "a.supervisor_role = me)": _bool("another-lease", OK),
    "NOT EXISTS (SELECT 1 FROM ONLY @ACCESS@ a WHERE a.lease_name = p_lease AND "
    "a.supervisor_role = me)": {"branch never": "another-lease"},
    "a.lease_name = p_lease": _cond("another-lease", OK, "<>"),
    "a.supervisor_role = me": _cond("another-supervisor", OK, "<>"),
    "b.node_role = p_role": _cond("role-not-bound", OK, "<>"),
    "NOT FOUND": {"branch never": "role-not-bound"},
    "x.lease_name <> p_lease": _cond(OK, OK, "=", "role-of-another-lease"),
    "x.machine_name <> p_machine": _cond(OK, OK, "=", "role-of-another-machine"),
    "x.lease_name <> p_lease OR x.machine_name <> p_machine":
        {"branch never": "role-of-another-machine"},
    "EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = group_name)":
        _bool("no-node-group", OK),
    "NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = group_name)":
        {"branch never": "no-node-group"},
    "r.rolname = group_name": _cond("no-node-group", "no-node-group", "<>"),
    "r.rolname = b.node_role": _cond(OK, OK, "<>"),
    "b.lease_name = p_lease": _cond("other-pairs-role-outside-the-group",
                                    "other-pairs-role-outside-the-group", "<>"),
    "x.oid IS NULL": {**_cond(OK, OK, "IS NOT NULL"), "branch never": "bound-role-missing"},
    "x.rolsuper": {**_bool(OK, OK), "branch never": "bound-superuser"},
    "x.node_role = me": _cond(OK, OK, "<>", "bound-caller"),
    "x.oid IN (owner_id, fencer_id)": {"true": OK, "op NOT IN": OK},
    "pg_has_role(x.oid, owner_id, 'MEMBER')": _bool(OK, OK, "bound-member-of-owner"),
    "pg_has_role(x.oid, fencer_id, 'MEMBER')": _bool(OK, OK, "bound-member-of-fencer"),
    "x.node_role = me OR x.oid IN (owner_id, fencer_id) OR pg_has_role(x.oid, owner_id, "
    "'MEMBER') OR pg_has_role(x.oid, fencer_id, 'MEMBER')": {"branch never": "bound-caller"},
    "pg_has_role(x.oid, group_name, 'MEMBER')": _bool("bound-outside-the-group", OK),
    "NOT pg_has_role(x.oid, group_name, 'MEMBER')": {"branch never": "bound-outside-the-group"},
    "current_setting('server_version_num')::integer >= 160000": {"true": OK, "op <": OK},
    "EXISTS ( SELECT 1 FROM pg_auth_members m WHERE m.roleid = x.oid AND m.member = "
    "fencer_id AND m.admin_option)": _bool("admin-missing@18", "ok@18"),
    "m.roleid = x.oid": _cond("admin-missing@18", "admin-missing@18", "<>"),
    "m.member = fencer_id": _cond("admin-held-by-another@18", "ok@18", "<>"),
    "m.admin_option": _bool("member-without-admin@18", "ok@18"),
    "current_setting('server_version_num')::integer >= 160000 AND NOT EXISTS ( SELECT 1 FROM "
    "pg_auth_members m WHERE m.roleid = x.oid AND m.member = fencer_id AND m.admin_option)":
        {"branch never": "admin-missing@18"},
    "x.node_role <> p_role": {**_cond("no-other-role", "no-other-role", "="),
                              "branch never": OK},
    ":= others": {"old": OK},
    "others = 0": {**_cond(OK, OK, "<>"), "branch never": "no-other-role"},
    "r.rolname = owner_name": _cond(OK, OK, "<>"),
    "r.rolname = fencer_name": _cond(OK, OK, "<>"),
    "n.nspname = schema_name": _cond(OK, OK, "<>"),
}

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
    "FOUND": _bool("lock-expired", "lock"),
    "g.rolname = b.node_role": _cond("lock", "lock", "<>"),
    "b.lease_name = p_lease": _cond("lock", "lock", "<>"),
    ":= node_role": _ops("lock", "old", "null"),
    ":= sessions": _ops("lock", "old", "null"),
    "r.name = p_role": {**_cond("lock", "lock", "<>"), "branch never": "lock"},
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
    "FOUND": _bool("end-expired", "end"),
    "DECLARE deadline": _ops(_WAIT, "null", "bound x2", "bound dropped"),
    "b.lease_name = p_lease": _cond("end", "end", "<>"),
    "b.node_role <> p_role": _cond("end", "end", "="),
    ":= node_role": _ops("end", "old", "null"),
    ":= sessions": _ops("end", "old", "null", "old #2", "null #2"),
    ":= action": {"old": "end", "null": "end",  # 'locked', for each role
                  "old #3": "end-can-log-in-no-session",  # 'can log in' after the loop
                  "null #3": "end-can-log-in-no-session"},
    "a.usename = r.name": _cond("end", "end", "<>"),
    # right before each signal, then after the sessions: can the role log in again?
    "(SELECT g.rolcanlogin FROM pg_roles g WHERE g.rolname = r.name)": {
        "true": "end", "not": "end", "branch never": "end-can-log-in",
        "true #2": "end", "not #2": "end", "branch never #2": "end-can-log-in-no-session"},
    "g.rolname = r.name": _ops("end", "true", "op <>", "true #2", "op <> #2"),
    # the holder again, right before each signal
    "EXISTS (SELECT 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = "
    "p_instance AND l.epoch = p_epoch AND l.expires_at > clock_timestamp())":
        _bool(_RUNS_OUT, "end"),
    "NOT EXISTS (SELECT 1 FROM ONLY @LEASE@ l WHERE l.lease_name = p_lease AND l.instance = "
    "p_instance AND l.epoch = p_epoch AND l.expires_at > clock_timestamp())":
        {"branch never": _RUNS_OUT},
    ":= pids": _ops(_WAIT, "old", "null"),
    "cardinality(pids) > 0": {"op <": _WAIT},
    "clock_timestamp() < deadline": _ops(_WAIT, "true", "op <=", "op >", "clock -1s",
                                         "clock +1s"),
    "cardinality(pids) > 0 AND clock_timestamp() < deadline": {"branch never": _WAIT},
    # a mutant that waits for sessions that are gone waits for the deadline: the clock
    # is held, so the call is cancelled
    "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (pids))": _bool("end", _WAIT),
    "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (pids))":
        {"branch never": "end"},
    "a.pid = ANY (pids)": _cond("end", "end", "<>"),
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
    "EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role)": _bool("bind-no-role", "bind"),
    "NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role)":
        {"branch never": "bind-no-role"},
    "r.rolname = p_role": _cond("bind-no-role", "bind-no-role", "<>"),
    **{f"VALUES {c}": {"null": "bind"} for c in ("node_role", "lease_name", "machine_name")},
    "f.node_role = p_role": _cond("bind", "bind", "<>"),
    "FOUND": _bool("bind-taken-machine", "bind"),
    "NOT FOUND": {"branch never": "bind-taken-machine"},
    "b.lease_name <> p_lease": _cond("bind-again", "bind-again", "=", "bind-to-another-lease"),
    "b.machine_name <> p_machine": _cond("bind-again", "bind-again", "=",
                                         "bind-to-another-machine"),
    "b.lease_name <> p_lease OR b.machine_name <> p_machine":
        {"branch never": "bind-to-another-machine"},
    "f.lease_name = p_lease": _cond("bind-taken-machine-of-pair-2",
                                    "bind-taken-machine-of-pair-2", "<>"),
    "f.machine_name = p_machine": _cond("bind-taken-machine-of-pair-2",
                                        "bind-taken-machine-of-pair-2", "<>"),
    "current_setting('server_version_num')::integer >= 160000":
        {"true": "bind", "op <": "bind@18", "branch never": "bind@18"},
}

_OWN_LEASE = "sees-its-own-lease"
_OWN_BINDINGS = "sees-its-own-bindings"
OTHERS: dict[str, dict[str, dict[str, str]]] = {
    "read": {
        "r.rolname = f.node_role": _cond("read", "read", "<>"),
        "f.lease_name = %(lease)s": _cond("read-with-two-leases", "read", "<>"),
        "a.usename = f.node_role": _cond("read", "read", "<>"),
    },
    "own_rows": {
        "lease_name IN (SELECT a.lease_name FROM {q(self.access)} a WHERE a.supervisor_role "
        "= current_user)": {"true": _OWN_LEASE, "op NOT IN": _OWN_LEASE},
        "a.supervisor_role = current_user": {"op <>": _OWN_LEASE},
    },
    "access_policy": {
        "USING: {rows}": _bool(_OWN_LEASE, _OWN_LEASE),
        "WITH CHECK: {rows}": _bool("inserts-another-lease", "updates-its-own-lease"),
    },
    "self_policy": {
        "USING: supervisor_role = current_user": _cond("sees-its-own-access",
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
        "lease_name = %s": _cond("corda-twin-lease", "corda-made-takeable", "<>"),
        "instance = %s": _cond("corda-other-instance", "corda-made-takeable", "<>"),
        "epoch = %s": _cond("corda-old-epoch", "corda-made-takeable", "<>"),
        "expires_at > clock_timestamp()": {
            "true": "corda-expired", "op >=": "corda-expires-now", "op <": "corda-made-takeable",
            "clock -1s": "corda-expired-0.5s", "clock +1s": "corda-expires-in-0.5s"},
    },
    "make_takeable#2": {
        "mutual_exclusion_id = 'X'": _cond("corda-own-row-first", "corda-made-takeable", "<>"),
        "mutual_exclusion_timestamp + %s < clock_timestamp()": {
            "true": "corda-made-takeable", "op <=": "corda-row-w-old",
            "op >": "corda-made-takeable", "bound x2": "corda-row-1.5w-old",
            "bound dropped": "corda-made-takeable", "clock -1s": "corda-row-w+0.5s-old",
            "clock +1s": "corda-row-w-0.5s-old"},
    },
    "make_takeable#3": {
        "mutual_exclusion_id = 'X'": _cond("corda-own-row-first", "corda-made-takeable", "<>"),
        "version = %s": {"op <>": "corda-made-takeable"},
        "SET mutual_exclusion_timestamp": _ops(
            "corda-made-takeable", "old", "null", "bound x2", "bound dropped",
            "bound x2 #2", "bound dropped #2"),
    },
    "look": {"mutual_exclusion_id = 'X'": _cond("corda-look-own-row-first", "corda-look",
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
