"""`corda-ha-supervisor schema`: what a DBA runs, once, for a configuration: the lease
tables owned by a trusted owner role, row privileges and row-level security for the
supervisor's role, this lease's access row and, with `fencing`, the database fence's
roles, functions and this host's binding. Printed, never run by the supervisor."""

from __future__ import annotations

import textwrap

from psycopg import sql

from supervisor.config import Config
from supervisor.lease.cordarow import CORDA_TABLE
from supervisor.lease.fence import FenceSql, fence_ddl, roles_ddl
from supervisor.lease.ownership import OwnedTables, column_types, owner_ddl


def schema_script(config: Config) -> str:
    """What a DBA runs (as a superuser) for this configuration: the lease tables owned by
    the owner role (`database.ownerRole`), row privileges and row-level security for the
    supervisor's role (`database.user`, or `corda_ha` when not set), this lease's access
    row and, with `fencing`, the fencing objects and this host's binding. One transaction;
    running it again changes nothing (and fixes an install whose tables the supervisor's
    role created)."""
    db = config.database
    tables = OwnedTables.of(db.schema, db.table)
    corda = (sql.Identifier(db.schema, CORDA_TABLE) if db.schema
             else sql.Identifier(CORDA_TABLE))
    role = sql.Identifier(supervisor_role(config)).as_string(None)
    where = db.schema or "the role's search_path schema (e.g. public)"
    lines = [
        f"-- corda-ha-supervisor {config.source}: lease tables of lease {db.lease_name!r}",
        f"-- in {where}.",
        "-- Run as a superuser (psql -v ON_ERROR_STOP=1 -f ...): one transaction; running it",
        "-- again (e.g. for the other host) changes nothing.",
        f"-- The supervisor's role, if it does not exist: CREATE ROLE {role} LOGIN PASSWORD "
        "'...';",
        "-- It gets row privileges only, and sees only the rows of the leases that",
        f"-- {tables.access.as_string(None)} names for it; the tables belong to "
        f"{sql.Identifier(db.owner_role).as_string(None)}, which nobody logs in as.",
        "BEGIN;",
    ]
    lines += [_statement(s) for s in owner_ddl(
        tables, owner=db.owner_role, supervisor_role=supervisor_role(config),
        lease_name=db.lease_name, schema=db.schema)]
    lines += ["",
              "-- with Corda's own guard on (node.conf mutualExclusionConfiguration), once Corda",
              "-- created its table: lets the holder make the old node's row takeable so a",
              "-- node started after a failover or handover does not wait waitInterval out",
              f"-- GRANT SELECT, UPDATE ON {corda.as_string(None)} TO {role};"]
    if config.fencing.enabled:
        lines += fencing_script(config)
    return "\n".join([*lines, "COMMIT;"]) + "\n"


def supervisor_role(config: Config) -> str:
    """The role `schema` grants to: `database.user`, or `corda_ha` when not set."""
    return config.database.supervisor_role


def _statement(text: str) -> str:
    """One statement as printed: its lines indented under the first, and a `;`."""
    first, *rest = text.strip().splitlines()
    return "\n".join([first.rstrip(), *textwrap.dedent("\n".join(rest)).splitlines()]) + ";"


def fencing_script(config: Config) -> list[str]:
    """The fencing part of `schema_script` (see `supervisor.lease.fence`)."""
    db, fencing = config.database, config.fencing
    assert fencing.node_role is not None
    fence = FenceSql(db.schema, db.table)
    group, fencer = fencing.node_group, fencing.fencer_role

    def ident(name: str) -> str:
        return sql.Identifier(name).as_string(None)

    tables = OwnedTables.of(db.schema, db.table)
    columns = {fence.lease_table.as_string(None): column_types(tables.create_lease),
               fence.member_table.as_string(None): column_types(tables.create_member),
               fence.history_table.as_string(None): column_types(tables.create_history),
               fence.access_table.as_string(None): column_types(tables.create_access),
               fence.binding.as_string(None): column_types(fence.create_binding)}
    roles = roles_ddl(node_group=group, fencer=fencer, node_roles=[fencing.node_role])
    machine = config.lease.machine_name
    return [
        "",
        f"-- database fencing (fencing.nodeRole = {fencing.node_role}). The roles, if they do",
        f"-- not exist yet: {ident(group)} holds the privileges on Corda's schema (give it",
        "-- CREATE and USAGE there, or make it the schema's owner); every host's node role is",
        "-- a member of it and acts as it (SET role), so the tables Corda creates at its first",
        "-- start belong to the group and the other host's node can use them after a",
        "-- failover. Each host's node needs a login role of its own.",
        *[f"-- {line};" for line in roles[:-2]],
        "-- (each host's node role: CREATE ROLE ... LOGIN PASSWORD '...' IN ROLE "
        f"{ident(group)};",
        f"--  ALTER ROLE ... SET role = '{group}';)",
        f"-- {ident(fencer)} owns the fence functions and may lock the node roles bound to a",
        "-- lease out and end their sessions; nobody logs in as it. PostgreSQL 14 or later;",
        "-- fencing refuses to run while the supervisor's role may create objects in the",
        f"-- schema ({fence.schema_name}): on PostgreSQL 14 also REVOKE CREATE ON SCHEMA "
        f"{fence.schema.as_string(None)} FROM PUBLIC; (15's default).",
        *[_statement(s) for s in fence_ddl(
            fence, owner=db.owner_role, fencer=fencer, node_group=group,
            supervisor_role=supervisor_role(config), columns=columns)],
        "",
        f"-- this host's binding: node role {fencing.node_role} runs on machine {machine!r} of",
        f"-- lease {db.lease_name!r}. A role is bound to one lease and one machine at most;",
        "-- binding it again elsewhere is an error. On PostgreSQL 16 and later this also",
        f"-- grants the role to {ident(fencer)} WITH ADMIN OPTION (CREATEROLE alters only",
        "-- the roles it administers).",
        _statement(fence.bind(node_role=fencing.node_role, lease=db.lease_name,
                              machine=machine)),
    ]
