"""A database set up for fencing tests: a node group, node roles, a fencer role, an owner
role, a least-privilege supervisor role and a lease table of its own, all with a unique
suffix, installed exactly as `corda-ha-supervisor schema` prints it (for each host of
the pair: the script runs once per host, as a DBA would, so it also runs twice).

`FenceDb.second_pair` adds another pair to the same table (its own lease name,
supervisor role and node roles, hosts c and d), again as `schema` prints it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from supervisor.cli.schema import schema_script
from supervisor.config import Config, load_config
from supervisor.lease import PostgresLeaseStore, fence
from supervisor.lease.fence import roles_ddl
from supervisor.node.machine import this_process
from tests.harness.config import lease, seconds, supervisor_config
from tests.harness.db_writer import create_table
from tests.harness.pgserver import PgServer


@dataclass
class FenceDb:
    server: PgServer
    suffix: str
    table: str  # the lease table
    group: str
    fencer: str
    owner: str  # owns the lease tables; nobody logs in as it
    supervisor: str  # the supervisors' least-privilege login role
    writes: str  # the "Corda" table the nodes write to, owned by the group
    schema: str | None = None  # of the lease tables (and Corda's); None: the search path
    lease_name: str = "corda-node"
    hosts: tuple[str, str] = ("a", "b")

    def node_role(self, host: str) -> str:
        return f"node_{host}_{self.suffix}"

    def dsn(self, role: str) -> str:
        return f"postgresql://{role}@{self.server.host}:{self.server.port}/postgres"

    def conf(self, host: str, *, required: bool = True, fencing: bool = True,
             wait: int = 2000, update: int = 500, node_role: str | None = None) -> str:
        """A complete supervisor config text for `host` (node command left to the caller:
        `node { command = ... }` is appended by the caller or the harness)."""
        return supervisor_config(
            lease=lease(host, update, wait),
            database={"url": f"postgresql://{self.server.host}:{self.server.port}/postgres",
                      "user": self.supervisor, "table": self.table, "schema": self.schema or None,
                      "ownerRole": self.owner, "leaseName": self.lease_name,
                      "operationTimeout": seconds(1), "connectTimeout": seconds(2)},
            fencing={"nodeRole": node_role or self.node_role(host), "required": required,
                     "nodeGroup": self.group, "fencerRole": self.fencer} if fencing else None)

    def load(self, tmp_path: Path, host: str, *, required: bool = True,
             fencing: bool = True, node_role: str | None = None) -> Config:
        path = tmp_path / f"{host}-{self.suffix}-{self.lease_name}.conf"
        path.write_text(self.conf(host, required=required, fencing=fencing,
                                  node_role=node_role)
                        + supervisor_config(node={"command": ["/bin/true"]}))
        return load_config(str(path))

    def script(self, tmp_path: Path, host: str, *, node_role: str | None = None) -> str:
        """What `schema` prints for `host`."""
        return schema_script(self.load(tmp_path, host, node_role=node_role))

    def install(self, tmp_path: Path, host: str, *, node_role: str | None = None) -> None:
        """Run what `schema` prints for `host`, as a DBA (a superuser)."""
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            conn.execute(self.script(tmp_path, host, node_role=node_role).encode())

    def can_log_in(self, role: str) -> bool:
        rows = self.server.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                   (role,))
        return bool(rows and rows[0][0])

    def second_pair(self, tmp_path: Path) -> FenceDb:
        """Another pair (hosts c and d, lease "pair-2", its own supervisor role) in the
        same lease table, node group and fencer role, installed as `schema` prints it."""
        other = dataclasses.replace(self, lease_name="pair-2", hosts=("c", "d"),
                                    supervisor=f"sup2_{self.suffix}")
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            for host in other.hosts:
                conn.execute(f"CREATE ROLE {other.node_role(host)} LOGIN IN ROLE "
                             f"{self.group}".encode())
            conn.execute(f"CREATE ROLE {other.supervisor} LOGIN".encode())
        for host in other.hosts:
            other.install(tmp_path, host)
        return other

    def drop(self) -> None:
        """Best effort: roles are cluster-wide and outlive the test otherwise."""
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            for role in (*[f"node_{h}_{self.suffix}" for h in "abcd"], self.supervisor,
                         f"sup2_{self.suffix}", self.fencer, self.owner, self.group):
                try:
                    conn.execute(f"DROP OWNED BY {role} CASCADE")
                    conn.execute(f"DROP ROLE IF EXISTS {role}")
                except psycopg.Error:
                    pass


class FenceHost:
    """One host's store and fencing calls, as the daemon makes them."""

    def __init__(self, config: Config, w: float = 2.0) -> None:
        self.config = config
        self.identity = this_process(config.lease.machine_name)
        self.store = PostgresLeaseStore(config.database, self.identity, w)
        db = config.database
        self.sql = fence.FenceSql(db.schema, db.table)
        assert config.fencing.node_role is not None
        self.role = config.fencing.node_role

    async def check(self) -> str | None:
        return await fence.check(self.store.call, self.sql, lease=self.store.lease_name,
                                   role=self.role, machine=self.identity.machine_name,
                                   timeout=5)

    async def take(self) -> int:
        snap = await self.store.observe(5)
        epoch = await self.store.acquire(snap.version if snap.exists else None,
                                         server=snap.server, timeout=5)
        assert epoch is not None
        return epoch

    async def fence(self, epoch: int, timeout: float = 5) -> fence.FenceResult:
        return await fence.fence_database(
            self.store.call, self.sql, lease=self.store.lease_name, epoch=epoch,
            instance=self.identity.instance, role=self.role,
            machine=self.identity.machine_name, timeout=timeout)


def set_up(server: PgServer, tmp_path: Path, *, schema: str | None = None,
           lease_name: str = "corda-node") -> FenceDb:
    """Create the roles, then run what `schema` prints for host a and for host b (of
    lease `lease_name`), as a DBA would. With `schema`: the lease tables go there, and
    the node group gets CREATE and USAGE on it (where Corda creates its tables)."""
    suffix = uuid.uuid4().hex[:8]
    db = FenceDb(server=server, suffix=suffix, table=f"lease_{suffix}",
                 group=f"nodes_{suffix}", fencer=f"fencer_{suffix}", owner=f"owner_{suffix}",
                 supervisor=f"sup_{suffix}", writes=f"writes_{suffix}", schema=schema,
                 lease_name=lease_name)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for line in roles_ddl(node_group=db.group, fencer=db.fencer,
                              node_roles=[db.node_role("a"), db.node_role("b")]):
            conn.execute(line.encode())
        if schema is not None:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
            conn.execute(f'GRANT CREATE, USAGE ON SCHEMA "{schema}" TO {db.group}'.encode())
        conn.execute(f"CREATE ROLE {db.supervisor} LOGIN".encode())
    for host in db.hosts:
        db.install(tmp_path, host)
    create_table(server.dsn, db.writes, db.group)
    return db


@pytest.fixture
def fdb(pg_server: PgServer, tmp_path: Path, lease_name: str) -> Iterator[FenceDb]:
    """A fencing database for this test's lease (`set_up`), dropped after it; skipped on
    an external database (roles cannot be created there)."""
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    db = set_up(pg_server, tmp_path, lease_name=lease_name)
    try:
        yield db
    finally:
        db.drop()
