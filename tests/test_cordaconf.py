"""Corda's node.conf as the one source: a supervisor file that names
only the node takes the lease settings and the database from node.conf; its own
settings win, with a warning, when both give them; errors name node.conf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import ConfigError, dump_config, load_config
from tests.harness.cli import run_cli
from tests.harness.config import NODE_CONF, ONLY_NODE, node_conf_setup


def test_a_file_naming_only_the_node_runs_from_node_conf(tmp_path: Path) -> None:
    config = load_config(str(node_conf_setup(tmp_path)), hostname="host-a", environ={})
    assert config.lease.enabled and config.lease.machine_name == "host-a"
    assert (config.lease.update_interval, config.lease.wait_interval) == (20.0, 40.0)
    db = config.database
    assert db.conninfo == "postgresql://db.example.com:5432/corda"
    assert (db.user, db.password, db.schema) == ("corda_node", "n0de-Secret", "party_a")
    assert config.node.corda_config == str(tmp_path / "node.conf")
    assert config.warnings == ()
    assert "n0de-Secret" not in dump_config(config)


def test_nested_datasource_keys_and_an_explicit_path(tmp_path: Path) -> None:
    nested = NODE_CONF.replace('"dataSource.url"', "dataSource.url").replace(
        '"dataSource.user"', "dataSource.user").replace('"dataSource.password"',
                                                        "dataSource.password")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "corda.conf").write_text(nested)
    path = tmp_path / "s.conf"
    path.write_text(ONLY_NODE % tmp_path + 'node.cordaConfig = "conf/corda.conf"\n')
    config = load_config(str(path), hostname="h", environ={})
    assert config.database.user == "corda_node"
    assert config.node.corda_config == str(tmp_path / "conf" / "corda.conf")


def test_own_settings_win_with_a_warning_when_they_differ(tmp_path: Path) -> None:
    path = node_conf_setup(tmp_path, extra="""
mutualExclusionConfiguration { on = true, machineName = host-a, updateInterval = 10000,
                                waitInterval = 40000 }
database { url = "postgresql://other-db/corda", user = "corda_node" }
""")
    config = load_config(str(path), hostname="host-a", environ={})
    assert config.lease.update_interval == 10.0
    assert config.database.conninfo == "postgresql://other-db/corda"
    text = " ".join(config.warnings)
    assert "updateInterval" in text and "database.url differs" in text
    assert str(tmp_path / "node.conf") in text


def test_an_error_in_node_conf_names_node_conf_its_key_and_line(tmp_path: Path) -> None:
    path = node_conf_setup(tmp_path, NODE_CONF.replace("waitInterval = 40000",
                                                       "waitInterval = 10000"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path), hostname="h", environ={})
    err = info.value
    assert err.path == str(tmp_path / "node.conf")
    assert err.key == "enterpriseConfiguration.mutualExclusionConfiguration.waitInterval"
    assert err.line == 8
    bad_url = NODE_CONF.replace("jdbc:postgresql://", "jdbc:oracle://")
    with pytest.raises(ConfigError) as info:
        load_config(str(node_conf_setup(tmp_path, bad_url)), hostname="h", environ={})
    assert info.value.path == str(tmp_path / "node.conf")
    assert info.value.key == "dataSourceProperties.dataSource.url" and info.value.line == 13


def test_without_node_conf_the_lease_is_still_required(tmp_path: Path) -> None:
    path = tmp_path / "s.conf"
    path.write_text(ONLY_NODE % tmp_path)
    with pytest.raises(ConfigError, match=r"node\.cordaConfig"):
        load_config(str(path), hostname="h", environ={})


def test_check_config_shows_where_it_came_from_without_the_password(tmp_path: Path) -> None:
    out = run_cli("check-config", "--offline", "--config", str(node_conf_setup(tmp_path)))
    assert out.returncode == 0, out
    data = json.loads(out.stdout)
    assert data["node"]["cordaConfig"] == str(tmp_path / "node.conf")
    assert data["database"]["user"] == "corda_node" and data["database"]["password"] == "***"
    assert "n0de-Secret" not in out.stdout + out.stderr


def test_the_node_only_example_runs_from_a_node_conf(tmp_path: Path) -> None:
    """config/node-only.conf (a real host's file that names only the node) with a Corda
    node.conf in its working directory is a complete configuration."""
    from tests.harness.paths import REPO

    text = (REPO / "config" / "node-only.conf").read_text()
    (tmp_path / "node.conf").write_text(NODE_CONF)
    path = tmp_path / "supervisor.conf"
    path.write_text(text.replace('"/opt/corda"', f'"{tmp_path}"').replace(
        '"/opt/corda/artemis"', f'"{tmp_path}/artemis"'))
    config = load_config(str(path), hostname="host-a", environ={})
    assert config.lease.machine_name == "host-a" and config.database.user == "corda_node"
    assert config.node.readiness is not None and config.node.stop_timeout == 60.0
    assert config.node.shared_directories == (f"{tmp_path}/artemis",)
