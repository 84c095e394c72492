"""A database set up for fencing tests: a node group, two node roles, a fencer role, a
least-privilege supervisor role and a lease table of its own, all with a unique suffix,
installed exactly as `corda-ha-supervisor schema` prints it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from supervisor.config import Config, load_config
from supervisor.lease.dbfence import roles_ddl
from supervisor.operator import schema_script
from tests.db_writer import create_table
from tests.pgserver import PgServer


@dataclass
class FenceDb:
    server: PgServer
    suffix: str
    table: str  # the lease table
    group: str
    fencer: str
    supervisor: str  # the supervisors' least-privilege login role
    writes: str  # the "Corda" table the nodes write to, owned by the group
    schema: str | None = None  # of the lease tables (and Corda's); None: the search path

    def node_role(self, host: str) -> str:
        return f"node_{host}_{self.suffix}"

    def dsn(self, role: str) -> str:
        return f"postgresql://{role}@{self.server.host}:{self.server.port}/postgres"

    def conf(self, host: str, *, required: bool = True, fencing: bool = True,
             wait: int = 2000, update: int = 500) -> str:
        """A complete supervisor config text for `host` (node command left to the caller:
        `node { command = ... }` is appended by the caller or the harness)."""
        where = f", schema = {self.schema}" if self.schema else ""
        block = (f"fencing {{ nodeRole = {self.node_role(host)}, required = "
                 f"{'true' if required else 'false'}, nodeGroup = {self.group}, "
                 f"fencerRole = {self.fencer} }}") if fencing else ""
        return f"""
mutualExclusionConfiguration {{ on = true, machineName = {host}, updateInterval = {update},
                                waitInterval = {wait} }}
database {{ url = "postgresql://{self.server.host}:{self.server.port}/postgres",
            user = {self.supervisor}, table = {self.table}{where},
            operationTimeout = 1s, connectTimeout = 2s }}
{block}
"""

    def load(self, tmp_path: Path, host: str, **kw: bool) -> Config:
        path = tmp_path / f"{host}-{self.suffix}.conf"
        path.write_text(self.conf(host, **kw) + 'node { command = ["/bin/true"] }\n')
        return load_config(str(path))

    def can_log_in(self, role: str) -> bool:
        rows = self.server.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                   (role,))
        return bool(rows and rows[0][0])

    def drop(self) -> None:
        """Best effort: roles are cluster-wide and outlive the test otherwise."""
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            for role in (self.node_role("a"), self.node_role("b"), self.supervisor,
                         self.fencer, self.group):
                try:
                    conn.execute(f"DROP OWNED BY {role} CASCADE")
                    conn.execute(f"DROP ROLE IF EXISTS {role}")
                except psycopg.Error:
                    pass


def set_up(server: PgServer, tmp_path: Path, *, schema: str | None = None) -> FenceDb:
    """Create the roles, then run what `schema` prints for host a (and b's fencing part),
    as a DBA would. With `schema`: the lease tables go there, and the node group gets
    CREATE and USAGE on it (where Corda creates its tables)."""
    suffix = uuid.uuid4().hex[:8]
    db = FenceDb(server=server, suffix=suffix, table=f"lease_{suffix}",
                 group=f"nodes_{suffix}", fencer=f"fencer_{suffix}",
                 supervisor=f"sup_{suffix}", writes=f"writes_{suffix}", schema=schema)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for line in roles_ddl(node_group=db.group, fencer=db.fencer,
                              node_roles=[db.node_role("a"), db.node_role("b")]):
            conn.execute(line.encode())
        if schema is not None:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
            conn.execute(f'GRANT CREATE, USAGE ON SCHEMA "{schema}" TO {db.group}'.encode())
        conn.execute(f"CREATE ROLE {db.supervisor} LOGIN".encode())
        script = schema_script(db.load(tmp_path, "a"))
        conn.execute(script.encode())
    create_table(server.dsn, db.writes, db.group)
    return db
