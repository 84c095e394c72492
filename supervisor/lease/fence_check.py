"""The confirm function of database fencing, as the DDL text `schema` prints: what every
fence call checks first (see `supervisor.lease.fence_sql`, which fills in the
@NAME@ placeholders).

From the catalogs only, which the caller cannot alter: the caller (`session_user`) is
no superuser and cannot act as a role with SUPERUSER, CREATEROLE or BYPASSRLS; it owns
(or is a member of the owner of) none of the schema, the tables and the functions, has
no CREATE on the schema and no TRIGGER or REFERENCES on the tables; the tables are as
`schema` builds them: plain tables owned by the owner role, row-level security on, no
trigger but those that run only code a superuser or the owner role wrote (a DBA's
audit trigger), no rule, no inheritance, only our policies (all of them), every column
of the type `schema` gives it, nothing they hold (policies, defaults, constraints, indexes,
statistics) depending on anything but built-in objects and these tables; the functions
are owned by the fencer (the bind function by the owner role) and the register path is
gone; the fencer has CREATEROLE and `pg_signal_backend`. Only then does it read a
table: the caller may act for the lease (the access table), this host's role is bound
to the lease on this machine, every role bound to the lease exists, is no superuser,
none of the other roles involved, a member of the node group and (PostgreSQL 16+)
administered by the fencer (ADMIN OPTION), and at least one *other* role is bound.
Each problem is one string that names the object and the fix.
"""

from __future__ import annotations

from supervisor.lease.ownership import dollar_quoted

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
    IF has_schema_privilege(me, nsp, 'CREATE') THEN
        RETURN format('database.user %I may create objects in schema %I: REVOKE CREATE ON '
                      'SCHEMA %I FROM %I, PUBLIC', me, schema_name, schema_name, me);
    END IF;
    -- A trigger whose function a superuser or the owner role owns, with no WHEN clause,
    -- runs code only they wrote (a DBA's audit trigger): it is allowed.
    FOR x IN SELECT t.tgname, t.tgrelid::regclass AS rel, t.tgisinternal,
                    t.tgconstrrelid::regclass AS other, c.conname
             FROM pg_trigger t LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint
             JOIN pg_proc f ON f.oid = t.tgfoid JOIN pg_roles o ON o.oid = f.proowner
             WHERE t.tgrelid = ANY (rels)
               AND (t.tgisinternal OR t.tgqual IS NOT NULL
                    OR NOT (o.rolsuper OR f.proowner = owner_id))
             ORDER BY t.tgname LIMIT 1 LOOP
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

