"""supervisor.config: a HOCON file -> Config. The defaults, Corda's enterprise layout,
the environment and HOSTNAME, unknown keys (with a suggestion and the line), bad values,
parse errors, the example configs, the node's cgroup, the owner role. Durations and the
timing rule's limits: tests/test_config_timing.py; the database URL and passwords:
tests/test_config_database.py. The inputs are literal HOCON (tests/harness/config.py's
BASE): the tests count their lines."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config import (
    EX_CONFIG,
    ConfigError,
    config_from_json,
    config_to_json,
    dump_config,
    load_config,
    redacted_dict,
)
from tests.harness.config import BASE, config_error, load_text, write_text
from tests.harness.paths import REPO

# ------------------------------------------------------------------ basics


def test_base_config_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE)
    assert config.lease.enabled is True
    assert config.lease.machine_name == "host-a"
    assert config.lease.update_interval == 0.5
    assert config.lease.wait_interval == 2.0
    assert config.lease.margin == pytest.approx(0.2)  # min(2 s, W/10)
    assert config.database.conninfo == "postgresql://localhost/corda"
    assert config.database.table == "corda_ha_lease"
    assert config.database.lease_name == "corda-node"
    assert config.database.schema is None
    assert config.database.connect_timeout == 5.0
    assert config.database.operation_timeout == 0.5  # min(5 s, U)
    assert config.node.command == ("/bin/true",)
    assert config.node.working_directory == os.getcwd()
    assert dict(config.node.environment) == {}
    assert config.node.stop_timeout == 1.0
    r = config.restart
    assert (r.initial_delay, r.multiplier, r.max_delay, r.reset_after, r.max_crashes, r.window,
            r.cooldown) == (1.0, 2.0, 60.0, 120.0, 5, 300.0, 300.0)
    assert (config.health.enabled, config.health.host, config.health.port) == (
        True, "127.0.0.1", 8080)
    assert (config.logging.format, config.logging.level) == ("auto", "INFO")
    assert config.source == str(tmp_path / "supervisor.conf")
    assert config.warnings == ()


def test_ex_config_is_78() -> None:
    assert EX_CONFIG == 78


def test_everything_set(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
enterpriseConfiguration {
  mutualExclusionConfiguration {
    on = true, machineName = "m1", updateInterval = 1s, waitInterval = 10s, fencingMargin = 500ms
  }
}
database {
  url = "host=db port=5433 dbname=corda", user = corda, password = pw, schema = ha,
  table = lease_t, leaseName = pair-1, connectTimeout = 3s, operationTimeout = 800ms
}
node {
  command = [java, -jar, corda.jar, 8080], workingDirectory = "WORKDIR"
  environment { A = x, B = 2, C = true, "D.E" = y }, stopTimeout = 4s
}
restart { initialDelay = 0, multiplier = 1.5, maxDelay = 10s, resetAfter = 30s, maxCrashes = 3,
          window = 60s, cooldown = 0 }
health { enabled = false, host = "0.0.0.0", port = 0 }
logging { format = JSON, level = debug }
""".replace("WORKDIR", str(tmp_path)))
    assert config.lease.margin == 0.5
    assert config.database.conninfo == "host=db port=5433 dbname=corda"
    assert (config.database.user, config.database.password) == ("corda", "pw")
    assert (config.database.schema, config.database.table, config.database.lease_name) == (
        "ha", "lease_t", "pair-1")
    assert (config.database.connect_timeout, config.database.operation_timeout) == (3.0, 0.8)
    assert config.node.command == ("java", "-jar", "corda.jar", "8080")
    assert config.node.working_directory == str(tmp_path)
    assert dict(config.node.environment) == {"A": "x", "B": "2", "C": "true", "D.E": "y"}
    assert config.restart.initial_delay == 0.0 and config.restart.cooldown == 0.0
    assert config.restart.multiplier == 1.5 and config.restart.max_crashes == 3
    assert not config.health.enabled and config.health.port == 0
    assert (config.logging.format, config.logging.level) == ("json", "DEBUG")
    assert config.warnings == ()


def test_relative_working_directory_is_made_absolute(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + 'node.workingDirectory = "some/dir"\n')
    assert config.node.working_directory == os.path.join(os.getcwd(), "some", "dir")
    assert any("workingDirectory" in w for w in config.warnings)


# ------------------------------------------------------------------ HOSTNAME / env


def test_hostname_resolves_without_environment(tmp_path: Path) -> None:
    text = BASE + "mutualExclusionConfiguration.machineName = ${HOSTNAME}\n"
    assert load_text(tmp_path, text, environ={}, hostname="box-1").lease.machine_name == "box-1"
    config = load_text(tmp_path, text, environ={"PATH": "/bin"}, hostname=None)
    assert config.lease.machine_name == socket.gethostname()


def test_environment_hostname_wins(tmp_path: Path) -> None:
    text = BASE + "mutualExclusionConfiguration.machineName = ${HOSTNAME}\n"
    config = load_text(tmp_path, text, environ={"HOSTNAME": "from-env"}, hostname="box-1")
    assert config.lease.machine_name == "from-env"


def test_machine_name_defaults_to_hostname(tmp_path: Path) -> None:
    text = BASE.replace('  machineName = "host-a"\n', "")
    assert load_text(tmp_path, text, hostname="box-2").lease.machine_name == "box-2"


def test_optional_substitution_reads_only_given_environ(tmp_path: Path) -> None:
    # PATH is in os.environ; with an explicit environ it must not leak in.
    text = BASE + "database.user = ${?PATH}\n"
    assert "PATH" in os.environ
    assert load_text(tmp_path, text, environ={}).database.user is None
    assert load_text(tmp_path, text, environ={"PATH": "u1"}).database.user == "u1"
    # environ=None means os.environ
    config = load_config(write_text(tmp_path, text), hostname="h")
    assert config.database.user == os.environ["PATH"]


def test_required_substitution_missing_names_line(tmp_path: Path) -> None:
    text = BASE + "database.password = ${NO_SUCH_VARIABLE_XYZ}\n"
    err = config_error(tmp_path, text)
    assert err.line == BASE.count("\n") + 1
    assert "NO_SUCH_VARIABLE_XYZ" in str(err) and "${?VAR}" in str(err)
    assert str(err).startswith(f"{tmp_path / 'supervisor.conf'}:{err.line}: ")


@pytest.mark.parametrize(("value", "enabled"), [
    ("on", True), ("off", False), ("yes", True), ("no", False), ("TRUE", True), ("false", False),
])
def test_boolean_strings_from_environment(tmp_path: Path, value: str, enabled: bool) -> None:
    text = BASE + "mutualExclusionConfiguration.on = ${?HA_ON}\n"
    assert load_text(tmp_path, text, environ={"HA_ON": value}).lease.enabled is enabled


# ------------------------------------------------------------------ layouts


def test_enterprise_layout(tmp_path: Path) -> None:
    text = """
enterpriseConfiguration {
  mutualExclusionConfiguration { on = true, machineName = ${HOSTNAME}, updateInterval = 20000,
                                 waitInterval = 40000 }
}
database { url = "postgresql://db/corda" }
node { command = ["/bin/true"], stopTimeout = 10s }
"""
    config = load_text(tmp_path, text, hostname="hx")
    assert (config.lease.machine_name, config.lease.update_interval,
            config.lease.wait_interval) == ("hx", 20.0, 40.0)


def test_both_layouts_is_an_error(tmp_path: Path) -> None:
    text = BASE + """
enterpriseConfiguration {
  mutualExclusionConfiguration { on = true, updateInterval = 1000, waitInterval = 3000 }
}
"""
    err = config_error(tmp_path, text)
    assert err.key == "mutualExclusionConfiguration"
    assert "both" in str(err)


def test_missing_lease_block_is_an_error(tmp_path: Path) -> None:
    text = 'database { url = "postgresql://db/x" }\nnode { command = ["/bin/true"] }\n'
    err = config_error(tmp_path, text)
    assert err.key == "mutualExclusionConfiguration" and "on = false" in str(err)


def test_enterprise_configuration_other_keys_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + "enterpriseConfiguration { tuning { x = 1 } }\n")
    assert err.key == "enterpriseConfiguration.tuning"


def test_intervals_required_when_on(tmp_path: Path) -> None:
    text = BASE.replace("  updateInterval = 500\n", "")
    err = config_error(tmp_path, text)
    assert err.key == "mutualExclusionConfiguration.updateInterval"
    assert "required" in str(err)


def test_disabled_needs_no_database(tmp_path: Path) -> None:
    text = 'mutualExclusionConfiguration { on = false }\nnode { command = ["/bin/true"] }\n'
    config = load_text(tmp_path, text)
    assert config.lease.enabled is False
    assert config.database.conninfo == "" and config.database.password is None
    assert config.database.table == "corda_ha_lease"


def test_disabled_still_validates_database_block(tmp_path: Path) -> None:
    text = ('mutualExclusionConfiguration { on = false }\nnode { command = ["/bin/true"] }\n'
            "database { tabel = x }\n")
    err = config_error(tmp_path, text)
    assert err.key == "database.tabel" and "'table'" in str(err)


# ------------------------------------------------------------------ unknown keys


def test_unknown_top_level_key_with_suggestion_and_line(tmp_path: Path) -> None:
    text = BASE + "# a comment mentioning databse = 1\nhelth { port = 1 }\n"
    err = config_error(tmp_path, text)
    assert err.key == "helth"
    assert "did you mean 'health'?" in str(err)
    assert err.line == BASE.count("\n") + 2
    assert f"supervisor.conf:{err.line}: helth: unknown key" in str(err)


def test_unknown_nested_key_with_suggestion_and_line(tmp_path: Path) -> None:
    text = BASE.replace("  waitInterval = 2000\n", "  waitInterval = 2000\n  updateIntervall = 3\n")
    err = config_error(tmp_path, text)
    assert err.key == "mutualExclusionConfiguration.updateIntervall"
    assert "did you mean 'updateInterval'?" in str(err)
    assert err.line == 6


def test_unknown_key_case_suggestion(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + "node { stoptimeout = 5s }\n")
    assert "did you mean 'stopTimeout'?" in str(err)
    assert err.line == BASE.count("\n") + 1


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + "restart { zzz = 1 }\n")
    assert err.key == "restart.zzz" and "did you mean" not in str(err)
    assert "allowed here" in str(err)


def test_line_scan_ignores_strings_and_comments(tmp_path: Path) -> None:
    text = BASE + """\
database {
  # user = not this one
  url = "postgresql://localhost/corda?user=notthis"
  user = [1, 2]
}
"""
    err = config_error(tmp_path, text)
    assert err.key == "database.user"
    assert err.line == BASE.count("\n") + 4


def test_line_for_dotted_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + "health.port = 70000\n")
    assert err.key == "health.port" and err.line == BASE.count("\n") + 1


# ------------------------------------------------------------------ types / values


@pytest.mark.parametrize(("extra", "key", "fragment"), [
    ('health.port = "abc"', "health.port", "expected an integer"),
    ("health.port = 70000", "health.port", "between 0 and 65535"),
    ("health.port = -1", "health.port", "between 0 and 65535"),
    ("health.enabled = 3", "health.enabled", "expected a boolean"),
    ('health.enabled = "maybe"', "health.enabled", "expected a boolean"),
    ("health.host = [a]", "health.host", "expected a string"),
    ("database = 5", "database", "expected an object"),
    ("database.url = {a = 1}", "database.url", "expected a string"),
    ("restart.multiplier = 0.5", "restart.multiplier", "at least 1"),
    ("restart.multiplier = fast", "restart.multiplier", "expected a number"),
    ("restart.maxCrashes = 0", "restart.maxCrashes", "at least 1"),
    ("restart.maxCrashes = 1.5", "restart.maxCrashes", "expected an integer"),
    ("restart { initialDelay = 10s, maxDelay = 5s }", "restart.maxDelay", "at least"),
    ("logging.format = xml", "logging.format", "auto, json, console"),
    ("logging.level = verbose", "logging.level", "DEBUG, INFO, WARNING, ERROR"),
    ("node.stopTimeout = true", "node.stopTimeout", "duration"),
    ("node.stopTimeout = [1]", "node.stopTimeout", "duration"),
    ('node.command = "java -jar corda.jar"', "node.command",
     'command = ["java", "-jar", "corda.jar"]'),
    ("node.command = []", "node.command", "must not be empty"),
    ("node.command = [java, {a = 1}]", "node.command", "element 1"),
    ('node.command = [""]', "node.command", "must not be empty"),  # pyhocon drops ""
    ('node.command = ["  "]', "node.command", "element 0"),
    ("node.environment = [a]", "node.environment", "expected an object"),
    ("node.environment { X { Y = 1 } }", "node.environment.X", "expected a string"),
    ("node.environment { CORDA_HA_EPOCH = 1 }", "node.environment.CORDA_HA_EPOCH", "supervisor"),
    ("node.environment { CORDA_HA_NODE_KEY = x }", "node.environment.CORDA_HA_NODE_KEY",
     "supervisor"),
    ("node.cgroup = sometimes", "node.cgroup", "absolute cgroup directory"),
    ('node.cgroup = "sys/fs/cgroup"', "node.cgroup", "absolute cgroup directory"),
    ("node.cgroup = [auto]", "node.cgroup", "got a list"),
    ('database.table = ""', "database.table", "non-empty"),
    (f"database.table = {'t' * 64}", "database.table", "63 bytes"),
    (f"database.schema = {'s' * 64}", "database.schema", "63 bytes"),
    ('database.leaseName = " "', "database.leaseName", "must not be empty"),
    ('mutualExclusionConfiguration.machineName = ""', "mutualExclusionConfiguration.machineName",
     "must not be empty"),
    ("mutualExclusionConfiguration.on = 1", "mutualExclusionConfiguration.on",
     "expected a boolean"),
])
def test_bad_values(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    err = config_error(tmp_path, BASE + extra + "\n")
    assert err.key == key
    assert fragment in str(err)
    assert str(tmp_path / "supervisor.conf") in str(err)
    assert key in str(err)


def test_missing_command(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE.replace('command = ["/bin/true"], ', ""))
    assert err.key == "node.command" and "required" in str(err)


def test_missing_node_block(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE.replace(
        'node { command = ["/bin/true"], stopTimeout = 1s }\n', ""))
    assert err.key == "node" and err.line is None


def test_missing_url_when_on(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE.replace('database { url = "postgresql://localhost/corda" }',
                                       "database { user = x }"))
    assert err.key == "database.url"


def test_level_and_format_case_insensitive(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "logging { level = warn, format = Console }\n")
    assert (config.logging.level, config.logging.format) == ("WARNING", "console")


# ------------------------------------------------------------------ parse errors


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = BASE + "node {\n  stopTimeout = 5s\n"  # unclosed brace
    err = config_error(tmp_path, text)
    assert err.path == str(tmp_path / "supervisor.conf")
    assert err.line is not None and err.line >= BASE.count("\n") + 1
    assert str(err).startswith(f"{err.path}:{err.line}: syntax error")


def test_syntax_error_line_exact(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a = 1\nb = }\n")
    assert err.line == 2


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.conf"), environ={})
    assert "missing.conf" in str(info.value) and "cannot read" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_bytes(b"a = \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(path), environ={})


def test_top_level_list(tmp_path: Path) -> None:
    assert "object" in str(config_error(tmp_path, "[1, 2]\n"))


def test_bad_include(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'include required(file("/nonexistent/x.conf"))\n' + BASE)
    assert err.path == str(tmp_path / "supervisor.conf")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab={}[],:"$?.#\n 1s')), max_size=40))
def test_only_config_error_escapes(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    with contextlib.suppress(ConfigError):
        load_config(write_text(directory, text), environ={}, hostname="h")


# ------------------------------------------------------------------ examples


@pytest.mark.parametrize("name", ["supervisor.conf", "host-a.conf", "host-b.conf"])
def test_example_configs_load(name: str) -> None:
    config = load_config(str(REPO / "config" / name), hostname="example-host",
                         environ={"CORDA_HA_DB_PASSWORD": "pw"})
    assert config.lease.enabled
    assert config.lease.update_interval == 20.0 and config.lease.wait_interval == 40.0
    assert config.database.password == "pw"
    assert config.node.command[0] == "/usr/bin/java"
    assert config.node.working_directory == "/opt/corda"
    assert "pw" not in dump_config(config).replace("password", "")


def test_production_example_details() -> None:
    config = load_config(str(REPO / "config" / "supervisor.conf"), hostname="example-host",
                         environ={})
    assert config.lease.machine_name == "example-host"
    assert config.database.conninfo == "postgresql://db1.example.com:5432/corda?sslmode=require"
    assert config.database.schema == "corda_ha"
    assert config.node.stop_timeout == 60.0
    # Corda's 20/40 with a JVM-sized stop is valid: no timing warning; the graces are shown.
    assert not any("stopTimeout" in w or "waitInterval" in w for w in config.warnings)
    assert redacted_dict(config)["timing"]["leaseLossGrace"] == pytest.approx(13.0)


def test_two_host_examples_differ_only_in_machine_name_and_health_port() -> None:
    a = load_config(str(REPO / "config" / "host-a.conf"), environ={})
    b = load_config(str(REPO / "config" / "host-b.conf"), environ={})
    assert (a.lease.machine_name, b.lease.machine_name) == ("host-a", "host-b")
    assert a.database == b.database and a.node == b.node
    assert (a.health.host, a.health.port, b.health.port) == ("0.0.0.0", 8080, 8081)
    assert not any("stopTimeout" in w for w in a.warnings)


@pytest.mark.parametrize(("text", "value"), [
    ("", "auto"), ("node.cgroup = auto", "auto"), ("node.cgroup = AUTO", "auto"),
    ("node.cgroup = off", "off"), ("node.cgroup = false", "off"), ("node.cgroup = true", "auto"),
    ('node.cgroup = "/sys/fs/cgroup/corda/"', "/sys/fs/cgroup/corda"),
])
def test_node_cgroup(tmp_path: Path, text: str, value: str) -> None:
    config = load_text(tmp_path, BASE + text + "\n")
    assert config.node.cgroup == value
    assert redacted_dict(config)["node"]["cgroup"] == value
    if value.startswith("/"):
        assert any("node.cgroup" in w for w in config.warnings)  # no such directory here


# ------------------------------------------------------------------ ownerRole


def test_owner_role_default_override_and_dump(tmp_path: Path) -> None:
    """database.ownerRole: the role `schema` makes the owner of the lease tables."""
    assert load_text(tmp_path, BASE).database.owner_role == "corda_ha_owner"
    config = load_text(tmp_path, BASE + "database.ownerRole = ha_owner\n")
    assert config.database.owner_role == "ha_owner"
    assert redacted_dict(config)["database"]["ownerRole"] == "ha_owner"
    assert config_from_json(config_to_json(config)).database.owner_role == "ha_owner"


@pytest.mark.parametrize(("extra", "words"), [
    ('database.ownerRole = "a b"\n', "not a plain role name"),
    ("database { user = corda_ha, ownerRole = corda_ha }\n", "the supervisor's own login"),
    ("database.ownerRole = corda_ha\n", "the supervisor's own login"),  # schema's default
])
def test_owner_role_errors_name_the_key(tmp_path: Path, extra: str, words: str) -> None:
    err = config_error(tmp_path, BASE + extra)
    assert err.key == "database.ownerRole" and words in str(err)
