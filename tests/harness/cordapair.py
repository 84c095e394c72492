"""A Corda-shaped pair for end-to-end tests: each host's supervisor config names only
the node (`node { command, workingDirectory, stopTimeout, readiness }` plus restart,
health and logging); the lease settings and the database come from that host's
Corda-style `node.conf`, which the JVM stand-in (tests/jvm/CordaStandIn.java) reads
too, with Corda's own guard on. Each pair gets a schema of its own (the JDBC URL's
`currentSchema`), so the lease row and Corda's `node_mutual_exclusion` row of one test
never meet another test's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.harness import jvmnode
from tests.harness.cluster import Cluster
from tests.harness.config import LAB_HEALTH, LAB_LOGGING, LAB_RESTART, ms, seconds, write_config
from tests.harness.host import Host
from tests.harness.pgserver import free_port

REGISTERED = "started up and registered"


@dataclass
class CordaHost(Host):
    """A Host whose node is the JVM stand-in configured by its own node.conf."""

    node_conf: jvmnode.NodeConf | None = None
    boot_ms: int = 500
    ready_timeout_s: int = 30
    extra_node_args: list[str] = field(default_factory=list)

    def write_config(self) -> None:
        assert self.node_conf is not None
        self.records.mkdir(parents=True, exist_ok=True)
        self.node_conf.write(self.root / "node.conf")
        command = jvmnode.command("--record", str(self.records), "--lock", str(self.lock_path),
                                  "--boot-delay", str(self.boot_ms), *self.extra_node_args)
        write_config(
            self.config_path,
            node={"command": command, "workingDirectory": str(self.root),
                  "stopTimeout": ms(self.stop_ms),
                  "readiness": {"logPattern": REGISTERED,
                                "startTimeout": seconds(self.ready_timeout_s)}},
            restart=LAB_RESTART,
            health=LAB_HEALTH,
            logging=LAB_LOGGING,
            extra=self.extra_conf)

def never_waited(host: CordaHost) -> None:
    """The node never hit Corda's guard: no "failed to become the master node"."""
    assert jvmnode.FAILED_MASTER not in host.output(), f"{host.name}: a wasted start"


def assert_corda_row_prepared(host: CordaHost, since: int = 0) -> None:
    """Before its node started, the holder found Corda's row of the old node takeable:
    made so, or already older than waitInterval (after W it may be)."""
    prepared = [e["event"] for e in host.lines[since:]
                if str(e.get("event", "")).startswith("corda_lock_row_")]
    assert prepared and prepared[-1] in ("corda_lock_row_made_takeable",
                                         "corda_lock_row_ready"), prepared


def assert_corda_row_left_to_corda(host: CordaHost, since: int = 0) -> None:
    """Without database fencing, the holder never set Corda's row back: it found it
    takeable already, or left it to Corda's own guard (saying how long it would wait)."""
    seen = [e for e in host.lines[since:] if str(e.get("event", "")).startswith("corda_lock_row_")]
    assert seen, f"{host.name}: Corda's row not looked at"
    assert not [e for e in seen if e["event"] == "corda_lock_row_made_takeable"], seen
    assert seen[-1]["event"] in ("corda_lock_row_left_alone", "corda_lock_row_ready"), seen


def add_corda_host(c: Cluster, name: str, schema: str, *, node_dsn: str | None = None,
                   update_ms: int = 500, wait_ms: int = 2000, **kw: Any) -> CordaHost:
    """A host `name` of `c` with its node.conf (machineName = name, U = `update_ms`,
    W = `wait_ms`, its own P2P and RPC ports), the pair's lease and Corda row in
    `schema`. The node logs in as `node_dsn` says (default: the cluster's database URL)."""
    conf = jvmnode.NodeConf.for_dsn(node_dsn or c.dsn, name, update_ms=update_ms,
                                    wait_ms=wait_ms, p2p_port=free_port(),
                                    rpc_port=free_port())
    conf.jdbc_url += f"?currentSchema={schema}"
    host = CordaHost(name=name, root=c.root / name, dsn=c.dsn, lease_name="corda-node",
                     tag=f"{name}-{uuid.uuid4().hex}", node_conf=conf, update_ms=update_ms,
                     wait_ms=wait_ms, **kw)
    c.hosts.append(host)
    return host
