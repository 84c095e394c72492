"""The chaos nodes' database writes and database fencing.

Every node writes all the time as its host's own node role (tests/harness/db_writer.py, like
a Corda node's connection pool: reconnect and retry at once), straight to the
database through a link of proxies no fault touches. After each episode the runner
counts *late writes*: rows of an epoch committed after the first row of a later
epoch (an old node's write landing once the new node ran), by commit timestamp.

`fencing=True`: the supervisors run with `fencing { nodeRole = ... }` and log in as a
least-privilege role, the lease tables and fence functions are installed as `schema`
prints them (for each host, with its binding), and any late write is an invariant
violation. `fencing=False`: the same writes, counted, no fencing: the difference is
what fencing buys. A lossy database failover can lose rows and reuse an epoch; the
count may then miss a late write, never invent one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psycopg

from supervisor.cli.schema import schema_script
from supervisor.config import load_config
from supervisor.lease.fence import roles_ddl
from tests.chaos.db import ChaosDb, HostLink
from tests.harness.db_writer import create_table

if TYPE_CHECKING:
    from tests.chaos.patroni import PatroniChaosDb

#: "off": nodes do not write; "fenced" / "unfenced": they write, with / without fencing.
Writes = Literal["off", "fenced", "unfenced"]
TABLE = "chaos_writes"
LEASE_TABLE = "corda_ha_lease"  # the chaos hosts' default


class ChaosWrites:
    """Roles, the writes table and (with `fencing`) the fence functions of one run."""

    def __init__(self, db: ChaosDb | PatroniChaosDb, hosts: list[str], run_id: str, *,
                 fencing: bool, lease_name: str) -> None:
        self.db = db
        self.fencing = fencing
        self.lease_name = lease_name
        self.suffix = run_id[:8]
        self.group = f"chaos_nodes_{self.suffix}"
        self.fencer = f"chaos_fencer_{self.suffix}"
        self.owner = f"chaos_owner_{self.suffix}"
        self.supervisor = f"chaos_sup_{self.suffix}"
        self.roles = {h: f"chaos_node_{h}_{self.suffix}" for h in hosts}
        self.link: HostLink = db.link()  # never faulted: the nodes' own path
        self.late_total = 0
        self.written = 0

    def set_up(self) -> None:
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:
            for line in roles_ddl(node_group=self.group, fencer=self.fencer,
                                  node_roles=list(self.roles.values())):
                conn.execute(line.encode())
            if self.fencing:
                conn.execute(f"CREATE ROLE {self.supervisor} LOGIN".encode())
                with tempfile.TemporaryDirectory() as tmp:
                    for host in self.roles:  # what `schema` prints for each host
                        path = Path(tmp) / f"{host}.conf"
                        path.write_text(self._schema_conf(host))
                        conn.execute(schema_script(load_config(str(path))).encode())
                # the DBA's step once Corda created its table (printed by `schema`)
                conn.execute(f"GRANT SELECT, UPDATE ON node_mutual_exclusion "
                             f"TO {self.supervisor}".encode())
        create_table(self.db.dsn, TABLE, self.group)

    def _schema_conf(self, host: str) -> str:
        return (f'mutualExclusionConfiguration {{ on = true, machineName = "{host}", '
                "updateInterval = 500, waitInterval = 2000 }\n"
                f'database {{ url = "{self.db.dsn}", table = {LEASE_TABLE}, '
                f'leaseName = "{self.lease_name}" }}\nnode {{ command = ["/bin/true"] }}\n'
                + self.conf(host))

    def node_args(self, host: str, log: str) -> list[str]:
        dsn = self.db.host_dsn(self.link).replace("postgres@", f"{self.roles[host]}@", 1)
        return ["--write", dsn, "--write-table", TABLE, "--write-log", log]

    def conf(self, host: str) -> str:
        if not self.fencing:
            return ""
        return (f"\nfencing {{ nodeRole = {self.roles[host]}, nodeGroup = {self.group}, "
                f"fencerRole = {self.fencer} }}\n"
                f"database {{ user = {self.supervisor}, ownerRole = {self.owner} }}\n")

    def late_writes(self) -> tuple[int, int, str]:
        """(late writes since the last call, writes since the last call, which late:
        "host epoch: n" items). Raises psycopg errors (the caller reports them)."""
        with psycopg.connect(self.db.dsn, autocommit=True, connect_timeout=5) as conn:
            counted = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
            written = int(counted[0]) if counted else 0
            rows = conn.execute(
                f"""WITH w AS (SELECT host, epoch::bigint AS epoch,
                                      pg_xact_commit_timestamp(xmin) AS ct
                               FROM {TABLE} WHERE epoch <> ''),
                         firsts AS (SELECT epoch, min(ct) AS first FROM w GROUP BY epoch)
                    SELECT w.host, w.epoch, count(*) FROM w
                    WHERE EXISTS (SELECT 1 FROM firsts f
                                  WHERE f.epoch > w.epoch AND f.first < w.ct)
                    GROUP BY w.host, w.epoch ORDER BY w.epoch""").fetchall()
        total = sum(int(r[2]) for r in rows)
        new, self.late_total = max(0, total - self.late_total), total
        more, self.written = max(0, written - self.written), written
        return new, more, ", ".join(f"{h} epoch {e}: {n}" for h, e, n in rows)
