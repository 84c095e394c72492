"""The `fencing` block: off without it; nodeRole from node.conf's
dataSource.user when not given; never the supervisor's own login role; errors name the
file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import ConfigError, load_config
from tests.harness.config import error_with, load_with, node_conf_setup


def test_off_without_the_block(tmp_path: Path) -> None:
    assert not load_with(tmp_path, "").fencing.enabled


def test_the_block_and_its_defaults(tmp_path: Path) -> None:
    f = load_with(tmp_path, "fencing { nodeRole = corda_node_a }").fencing
    assert (f.node_role, f.required, f.node_group, f.fencer_role) == (
        "corda_node_a", True, "corda_nodes", "corda_ha_fencer")


@pytest.mark.parametrize("extra, key, words", [
    ("fencing { }", "fencing.nodeRole", "missing"),
    ("fencing { nodeRole = corda_ha }", "fencing.nodeRole", "is database.user"),
    ('fencing { nodeRole = "a b" }', "fencing.nodeRole", "not a plain role name"),
    ('fencing { nodeRole = x, nodeGroup = "g;drop" }', "fencing.nodeGroup",
     "not a plain role name"),
    ("fencing { nodeRole = x, required = maybe }", "fencing.required", ""),
    ("fencing { nodeRole = x, color = red }", "fencing.color", ""),
])
def test_errors_name_file_line_and_key(tmp_path: Path, extra: str, key: str,
                                       words: str) -> None:
    text = error_with(tmp_path, extra)
    assert f"s.conf:6: {key}:" in text and words in text


def test_node_role_defaults_to_node_conf_datasource_user(tmp_path: Path) -> None:
    path = node_conf_setup(tmp_path,
                           extra='database { url = "postgresql://db/corda", user = corda_ha }\n'
                                 "fencing { required = false }\n")
    config = load_config(str(path), hostname="host-a", environ={})
    assert config.fencing.node_role == "corda_node" and not config.fencing.required


def test_node_conf_as_the_supervisors_login_cannot_fence(tmp_path: Path) -> None:
    """Without a database block of its own the supervisor logs in as the node: the other
    host's fence would lock the supervisor out too."""
    path = node_conf_setup(tmp_path, extra="fencing { }\n")
    with pytest.raises(ConfigError, match=r"fencing\.nodeRole: is database\.user"):
        load_config(str(path), hostname="host-a", environ={})


@pytest.mark.parametrize("extra, key, words", [
    ("database.ownerRole = corda_nodes\nfencing { nodeRole = x }", "fencing.nodeGroup",
     "is database.ownerRole"),
    ("fencing { nodeRole = x, fencerRole = corda_ha }", "fencing.fencerRole",
     "is database.user"),
    ("fencing { nodeRole = x, fencerRole = x }", "fencing.fencerRole", "is fencing.nodeRole"),
    ("fencing { nodeRole = x, nodeGroup = x }", "fencing.nodeGroup", "is fencing.nodeRole"),
])
def test_each_role_is_a_role_of_its_own(tmp_path: Path, extra: str, key: str,
                                        words: str) -> None:
    """The owner, the fencer, the node group, the node role and the supervisor's login
    are five roles: one doing two jobs would let the supervisor alter what fencing reads
    or lock itself out."""
    text = error_with(tmp_path, extra)
    assert f"{key}:" in text and words in text
