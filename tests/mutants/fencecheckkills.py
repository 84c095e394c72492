"""Which scenario kills which generated mutant of the confirm check (`fence_check.py`):
`CONFIRM[site][operator]` (see `fencekills.py`), and the helpers both use."""

from __future__ import annotations

OK = "ok"  # the confirm check of a sound world: a mutant that finds a problem there


def ops(scenario: str, *operators: str) -> dict[str, str]:
    return dict.fromkeys(operators, scenario)


def cond(true: str, flip: str, op: str, false: str | None = None) -> dict[str, str]:
    """A comparison: dropped (TRUE), flipped (`op`), as an OR alternative dropped."""
    out = {"true": true, f"op {op}": flip}
    if false is not None:
        out["false"] = false
    return out


def boolean(true: str, negated: str, false: str | None = None) -> dict[str, str]:
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
    "owner_id IS NULL": cond(OK, OK, "IS NOT NULL", "no-owner-role"),
    "fencer_id IS NULL": cond(OK, OK, "IS NOT NULL", "no-fencer-role"),
    "nsp IS NULL": cond(OK, OK, "IS NOT NULL", "no-schema"),
    "owner_id IS NULL OR fencer_id IS NULL OR nsp IS NULL": {"branch never": "no-owner-role"},
    "r.rolsuper": boolean(OK, OK, "caller-superuser"),
    "r.rolcreaterole": boolean(OK, OK, "caller-createrole"),
    "r.rolbypassrls": boolean(OK, OK, "caller-bypassrls"),
    "pg_has_role(me, r.oid, 'MEMBER')": boolean(OK, OK),
    "r.rolname <> me": cond("caller-createrole-acting-as-fencer",
                             "caller-createrole-acting-as-fencer", "="),
    "FOUND": {"not": "caller-superuser", "true #2": OK, "not #2": OK, "true #3": "role-not-bound",
              "not #3": OK, "branch never": "caller-acts-as-privileged"},
    "x.rolname = me": cond("caller-acts-as-privileged", "caller-superuser", "<>"),
    "FOUND AND x.rolname = me": {"branch never": "caller-superuser"},
    "pg_has_role(me, owner_id, 'MEMBER')": boolean(OK, OK, "caller-in-owner"),
    "pg_has_role(me, fencer_id, 'MEMBER')": boolean(OK, OK, "caller-in-fencer"),
    "pg_has_role(me, owner_id, 'MEMBER') OR pg_has_role(me, fencer_id, 'MEMBER')":
        {"branch never": "caller-in-owner"},
    "n.oid = nsp": cond("caller-owns-schema", "caller-owns-schema", "<>"),
    "pg_has_role(me, x.nspowner, 'MEMBER')": {**boolean(OK, OK),
                                              "branch never": "caller-owns-schema"},
    "t.rel IS NULL": cond(OK, OK, "IS NOT NULL"),
    "c.oid = ANY (rels)": cond(OK, OK, "<>"),
    "pg_has_role(me, x.relowner, 'MEMBER')": {**boolean(OK, OK),
                                              "branch never": "caller-owns-table"},
    "x.relowner <> owner_id": {**cond(OK, OK, "="), "branch never": "table-of-another-owner"},
    "x.relkind <> 'r'": {**cond(OK, OK, "="), "branch never": "view-in-place"},
    "x.relrowsecurity": boolean("rls-off", OK),
    "NOT x.relrowsecurity": {"branch never": "rls-off"},
    "has_table_privilege(me, x.rel, 'TRIGGER')": boolean(OK, OK, "caller-may-trigger"),
    "has_table_privilege(me, x.rel, 'REFERENCES')": boolean(OK, OK, "caller-may-reference"),
    "has_table_privilege(me, x.rel, 'TRIGGER') OR has_table_privilege(me, x.rel, "
    "'REFERENCES')": {"branch never": "caller-may-trigger"},
    "has_schema_privilege(me, nsp, 'CREATE')": {**boolean(OK, OK),
                                                "branch never": "caller-may-create-in-schema"},
    # triggers
    "c.oid = t.tgconstraint": cond("foreign-key-to-lease", "foreign-key-to-lease", "<>"),
    "f.oid = t.tgfoid": cond("audit-trigger", "audit-trigger", "<>"),
    "o.oid = f.proowner": cond("audit-trigger", "audit-trigger", "<>"),
    "t.tgrelid = ANY (rels)": cond("other-objects", "other-objects", "<>"),
    "t.tgisinternal": boolean("audit-trigger", "audit-trigger", "foreign-key-to-lease"),
    "t.tgqual IS NOT NULL": cond("audit-trigger", "audit-trigger", "IS NULL",
                                  "audit-trigger-with-when"),
    "o.rolsuper": boolean("trigger-of-another", "audit-trigger", "audit-trigger"),
    "f.proowner = owner_id": cond("trigger-of-another", "trigger-of-the-owner", "<>",
                                   "trigger-of-the-owner"),
    "x.tgisinternal": boolean("constraint-trigger", "foreign-key-to-lease"),
    "x.conname IS NOT NULL": {"op IS NULL": "foreign-key-to-lease"},
    "x.tgisinternal AND x.conname IS NOT NULL": {"branch never": "foreign-key-to-lease"},
    "r.ev_class = ANY (rels)": cond(OK, OK, "<>"),
    "i.inhrelid = ANY (rels)": cond("other-objects", "other-objects", "<>", "inherits"),
    "i.inhparent = ANY (rels)": cond("other-objects", "other-objects", "<>",
                                      "inherited-from"),
    # policies
    "p.polrelid = ANY (rels)": {**cond("other-objects", "other-objects", "<>"),
                                "true #2": "other-objects", "op <> #2": "other-objects"},
    "EXISTS ( SELECT 1 FROM @POLICIES@ AS e(rel, name) WHERE e.rel = p.polrelid AND e.name "
    "= p.polname)": boolean("policy-of-another", OK),
    "e.rel = p.polrelid": cond("our-policy-name-on-another-table", OK, "<>"),
    "e.name = p.polname": cond("policy-of-another", OK, "<>"),
    "EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = e.rel AND p.polname = e.name)":
        boolean("policy-missing", OK),
    "p.polrelid = e.rel": cond("policy-missing-on-one-table", OK, "<>"),
    "p.polname = e.name": cond("policy-missing", OK, "<>"),
    # columns
    "e.rel = a.attrelid": cond("column-of-another-tables-name",
                                "column-of-another-tables-name", "<>"),
    "e.name = a.attname": cond(OK, OK, "<>"),
    "a.attrelid = ANY (rels)": cond("other-objects", "other-objects", "<>"),
    "a.attnum > 0": {"op <": "column-of-its-own-type"},
    "a.attisdropped": boolean("column-of-its-own-type", "column-of-its-own-type"),
    "a.atttypid >= @BUILT_IN@": {"true": OK, "false": "column-of-its-own-type", "op <": OK},
    "a.atttypid <> coalesce(e.kind::oid, a.atttypid)": cond(OK, OK, "=", "column-retyped"),
    "a.attgenerated <> ''": cond(OK, OK, "=", "column-generated"),
    "x.expected IS NULL": {**cond("column-retyped", "column-of-its-own-type", "IS NOT NULL"),
                           "branch never": "column-of-its-own-type"},
    "x.attgenerated <> ''": cond("column-retyped", "column-retyped", "="),
    # dependencies
    "d.refobjid >= @BUILT_IN@": {"true": "column-of-an-initdb-domain",
                                 "op <": "default-uses-a-sequence"},
    "d.refclassid = 'pg_class'::regclass": {"op <>": OK},
    "d.refobjid = ANY (rels)": cond("default-uses-a-sequence", "default-uses-a-sequence",
                                     "<>"),
    "d.refclassid = 'pg_namespace'::regclass": {"op <>": OK},
    "d.refobjid = nsp": cond("statistics-in-another-schema", "statistics-in-another-schema",
                              "<>"),
    "d.refclassid = 'pg_constraint'::regclass": {"op <>": OK},
    "d.refobjid IN ( SELECT c.oid FROM pg_constraint c WHERE c.conrelid = ANY (rels))":
        {"op NOT IN": OK},
    "(d.classid = 'pg_class'::regclass AND (d.objid = ANY (rels) OR d.objid IN ( SELECT "
    "i.indexrelid FROM pg_index i WHERE i.indrelid = ANY (rels))))":
        {"false": "index-uses-a-function"},
    "d.classid = 'pg_class'::regclass": {"op <>": "column-collation"},
    "d.objid = ANY (rels)": cond("other-objects", "other-objects", "<>", "column-collation"),
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
    "i.indrelid = ANY (rels)": cond("other-objects", "other-objects", "<>"),
    "a.adrelid = ANY (rels)": cond("other-objects", "other-objects", "<>"),
    "c.conrelid = ANY (rels)": {"true #2": "other-objects", "op <> #2": "other-objects"},
    "s.stxrelid = ANY (rels)": cond("other-objects", "other-objects", "<>"),
    # functions
    "p.oid = e.fn": cond(OK, OK, "<>"),
    "p.oid IS NULL": cond(OK, OK, "IS NOT NULL", "function-missing"),
    "p.proowner <> (SELECT r.oid FROM pg_roles r WHERE r.rolname = e.owner_name)":
        cond(OK, OK, "=", "function-of-another-owner"),
    "r.rolname = e.owner_name": cond(OK, OK, "<>"),
    "x.fn IS NULL": {**cond("function-of-another-owner", "function-missing", "IS NOT NULL"),
                     "branch never": "function-missing"},
    "to_regprocedure(o.name) IS NOT NULL": cond(OK, OK, "IS NULL"),
    # the fencer
    "(SELECT r.rolcreaterole FROM pg_roles r WHERE r.oid = fencer_id)":
        boolean("fencer-without-createrole", OK),
    "NOT (SELECT r.rolcreaterole FROM pg_roles r WHERE r.oid = fencer_id)":
        {"branch never": "fencer-without-createrole"},
    "pg_has_role(fencer_id, 'pg_signal_backend', 'USAGE')": boolean("fencer-without-signal", OK),
    "NOT pg_has_role(fencer_id, 'pg_signal_backend', 'USAGE')":
        {"branch never": "fencer-without-signal"},
    "r.oid = fencer_id": cond(OK, OK, "<>"),
    # the lease's access and bindings
    "EXISTS (SELECT 1 FROM ONLY @ACCESS@ a WHERE a.lease_name = p_lease AND "
    "a.supervisor_role = me)": boolean("another-lease", OK),
    "NOT EXISTS (SELECT 1 FROM ONLY @ACCESS@ a WHERE a.lease_name = p_lease AND "
    "a.supervisor_role = me)": {"branch never": "another-lease"},
    "a.lease_name = p_lease": cond("another-lease", OK, "<>"),
    "a.supervisor_role = me": cond("another-supervisor", OK, "<>"),
    "b.node_role = p_role": cond("role-not-bound", OK, "<>"),
    "NOT FOUND": {"branch never": "role-not-bound"},
    "x.lease_name <> p_lease": cond(OK, OK, "=", "role-of-another-lease"),
    "x.machine_name <> p_machine": cond(OK, OK, "=", "role-of-another-machine"),
    "x.lease_name <> p_lease OR x.machine_name <> p_machine":
        {"branch never": "role-of-another-machine"},
    "EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = group_name)":
        boolean("no-node-group", OK),
    "NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = group_name)":
        {"branch never": "no-node-group"},
    "r.rolname = group_name": cond("no-node-group", "no-node-group", "<>"),
    "r.rolname = b.node_role": cond(OK, OK, "<>"),
    "b.lease_name = p_lease": cond("other-pairs-role-outside-the-group",
                                    "other-pairs-role-outside-the-group", "<>"),
    "x.oid IS NULL": {**cond(OK, OK, "IS NOT NULL"), "branch never": "bound-role-missing"},
    "x.rolsuper": {**boolean(OK, OK), "branch never": "bound-superuser"},
    "x.node_role = me": cond(OK, OK, "<>", "bound-caller"),
    "x.oid IN (owner_id, fencer_id)": {"true": OK, "op NOT IN": OK},
    "pg_has_role(x.oid, owner_id, 'MEMBER')": boolean(OK, OK, "bound-member-of-owner"),
    "pg_has_role(x.oid, fencer_id, 'MEMBER')": boolean(OK, OK, "bound-member-of-fencer"),
    "x.node_role = me OR x.oid IN (owner_id, fencer_id) OR pg_has_role(x.oid, owner_id, "
    "'MEMBER') OR pg_has_role(x.oid, fencer_id, 'MEMBER')": {"branch never": "bound-caller"},
    "pg_has_role(x.oid, group_name, 'MEMBER')": boolean("bound-outside-the-group", OK),
    "NOT pg_has_role(x.oid, group_name, 'MEMBER')": {"branch never": "bound-outside-the-group"},
    "current_setting('server_version_num')::integer >= 160000": {"true": OK, "op <": OK},
    "EXISTS ( SELECT 1 FROM pg_auth_members m WHERE m.roleid = x.oid AND m.member = "
    "fencer_id AND m.admin_option)": boolean("admin-missing@18", "ok@18"),
    "m.roleid = x.oid": cond("admin-missing@18", "admin-missing@18", "<>"),
    "m.member = fencer_id": cond("admin-held-by-another@18", "ok@18", "<>"),
    "m.admin_option": boolean("member-without-admin@18", "ok@18"),
    "current_setting('server_version_num')::integer >= 160000 AND NOT EXISTS ( SELECT 1 FROM "
    "pg_auth_members m WHERE m.roleid = x.oid AND m.member = fencer_id AND m.admin_option)":
        {"branch never": "admin-missing@18"},
    "x.node_role <> p_role": {**cond("no-other-role", "no-other-role", "="),
                              "branch never": OK},
    ":= others": {"old": OK},
    "others = 0": {**cond(OK, OK, "<>"), "branch never": "no-other-role"},
    "r.rolname = owner_name": cond(OK, OK, "<>"),
    "r.rolname = fencer_name": cond(OK, OK, "<>"),
    "n.nspname = schema_name": cond(OK, OK, "<>"),
}
