"""The `fencing` block (database fencing, `supervisor.lease.fence`) and the rule for
role names (`ROLE_NAME`, also for `database.ownerRole`)."""

from __future__ import annotations

import re

from supervisor.config.blocks import Block
from supervisor.config.model import DatabaseConfig, FencingConfig

FENCING_KEYS = ("nodeRole", "required", "nodeGroup", "fencerRole")
ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def parse_fencing(root: Block, database: DatabaseConfig,
                  corda_node_user: str | None) -> FencingConfig:
    """`fencing { nodeRole, required, nodeGroup, fencerRole }`; off when the block is
    absent. `nodeRole` defaults to Corda's `dataSource.user` from node.conf. Raises
    `ConfigError` naming the key."""
    block = root.block("fencing")
    if block is None:
        return FencingConfig()
    block.check_keys(FENCING_KEYS)
    role = block.opt_str("nodeRole") or corda_node_user
    if not role:
        block.fail("nodeRole", "missing: the login role this host's node uses (Corda's "
                               "dataSource.user), e.g. nodeRole = corda_node_a")
    names = {"nodeRole": role, "nodeGroup": block.get_str("nodeGroup", "corda_nodes"),
             "fencerRole": block.get_str("fencerRole", "corda_ha_fencer")}
    for key, name in names.items():
        if not ROLE_NAME.match(name):
            block.fail(key, f"not a plain role name: {name!r} (letters, digits, _ and $)")
    if database.user is not None and database.user == role:
        block.fail("nodeRole", f"is database.user ({role}): the supervisor must log in with "
                               "a role of its own, or the other host's fence locks it out too")
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name == database.owner_role:
            block.fail(key, f"is database.ownerRole ({name}): the role that owns the lease "
                            "tables must be a role of its own")
        if name == database.user:
            block.fail(key, f"is database.user ({name}): the supervisor must log in with a "
                            "role of its own")
        if name in seen:
            block.fail(key, f"is fencing.{seen[name]} too ({name}): each must be a role of "
                            "its own")
        seen[name] = key
    return FencingConfig(node_role=role, required=block.get_bool("required", True),
                         node_group=names["nodeGroup"], fencer_role=names["fencerRole"])
