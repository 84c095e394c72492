"""Tests of supervisor.config: HOCON -> Config, durations, validation, redaction."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyhocon import ConfigFactory

from supervisor.config import (
    EX_CONFIG,
    ConfigError,
    config_from_json,
    config_to_json,
    dump_config,
    load_config,
    parse_duration,
    redacted_dict,
)
from tests.harness.config import BASE, config_error, load_text, write_text
from tests.harness.paths import REPO

# --------------------------------------------------------------------------- basics

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


# --------------------------------------------------------------------------- durations

@pytest.mark.parametrize(("text", "seconds"), [
    ("20000", 20.0),
    ("20s", 20.0),
    ('"20s"', 20.0),
    ("20 seconds", 20.0),
    ('"20 seconds"', 20.0),
    ("1500 ms", 1.5),
    ("1500ms", 1.5),
    ('"1500 ms"', 1.5),
    ("1.5s", 1.5),
    ('"1.5s"', 1.5),
    ("1.5 seconds", 1.5),
    ("2m", 120.0),
    ("2 minutes", 120.0),
    ('"0.5h"', 1800.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ('"2500"', 2.5),
    ("2500.5", 2.5005),
    ("250000us", 0.25),
    ('"250000000 ns"', 0.25),
])
def test_duration_forms_in_hocon(tmp_path: Path, text: str, seconds: float) -> None:
    config = load_text(tmp_path, BASE + f"node.stopTimeout = {text}\n")
    assert config.node.stop_timeout == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(("value", "seconds"), [("45s", 45.0), ("45000", 45.0), ("1.25 s", 1.25)])
def test_duration_from_environment(tmp_path: Path, value: str, seconds: float) -> None:
    text = BASE + "node.stopTimeout = 1s\nnode.stopTimeout = ${?STOP_TIMEOUT}\n"
    config = load_text(tmp_path, text, environ={"STOP_TIMEOUT": value})
    assert config.node.stop_timeout == seconds
    assert load_text(tmp_path, text).node.stop_timeout == 1.0  # absent: earlier value stays


def test_intervals_as_corda_milliseconds_and_hocon_durations(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + """
mutualExclusionConfiguration { updateInterval = 20000, waitInterval = "40s" }
node.stopTimeout = 10s
""")
    assert (config.lease.update_interval, config.lease.wait_interval) == (20.0, 40.0)
    assert config.lease.margin == 2.0


@pytest.mark.parametrize(("value", "seconds"), [
    (timedelta(seconds=20), 20.0),
    (timedelta(milliseconds=1500), 1.5),
    (20000, 20.0),
    (1.5, 0.0015),
    (0, 0.0),
    ("20s", 20.0),
    (" 20 s ", 20.0),
    ("1.5s", 1.5),
    (".5s", 0.5),
    ("3 millis", 0.003),
    ("2 hours", 7200.0),
    ("1 week", 604800.0),
    ("10 nanos", 1e-8),
    ("20S", 20.0),
    ("1500", 1.5),
])
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("value", [
    True, "abc", "5 parsecs", "s", "", "1.5.2s", [1], {"a": 1}, None, float("nan"),
    float("inf"), "-1s", -5, timedelta(seconds=-1),
])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "node.stopTimeout")
    assert info.value.key == "node.stopTimeout"
    assert "node.stopTimeout" in str(info.value)


@dataclass
class relativedelta:  # a stand-in named like dateutil's class
    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0
    microseconds: int = 0
    leapdays: int = 0
    year: int | None = None
    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    microsecond: int | None = None
    weekday: int | None = None


def test_parse_duration_relativedelta_stand_in() -> None:
    value = relativedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=500000)
    assert parse_duration(value, "k") == 86400 + 7200 + 180 + 4.5
    with pytest.raises(ConfigError, match="months"):
        parse_duration(relativedelta(months=1), "k")
    with pytest.raises(ConfigError, match="absolute"):
        parse_duration(relativedelta(year=2024), "k")


def test_parse_duration_real_relativedelta() -> None:
    rd = pytest.importorskip("dateutil.relativedelta")
    assert parse_duration(rd.relativedelta(seconds=90), "k") == 90.0
    assert parse_duration(rd.relativedelta(minutes=2, seconds=1), "k") == 121.0
    with pytest.raises(ConfigError):
        parse_duration(rd.relativedelta(years=1), "k")


@given(st.integers(min_value=0, max_value=10**12))
def test_parse_duration_milliseconds_round_trip(ms: int) -> None:
    expected = ms / 1000
    assert parse_duration(ms, "k") == expected
    assert parse_duration(str(ms), "k") == expected
    assert parse_duration(f"{ms}ms", "k") == expected
    assert parse_duration(f"{ms} milliseconds", "k") == expected


_UNITS = (("s", 1), ("ms", Fraction(1, 1000)), ("m", 60), ("h", 3600), (" seconds", 1),
          (" minutes", 60), (" ms", Fraction(1, 1000)))


@settings(max_examples=40)
@given(st.integers(min_value=0, max_value=10**6))
def test_parse_duration_agrees_with_pyhocon(n: int) -> None:
    tree = ConfigFactory.parse_string(
        "\n".join(f"k{i} = {n}{unit}" for i, (unit, _) in enumerate(_UNITS)))
    for i, (unit, factor) in enumerate(_UNITS):
        expected = float(n * Fraction(factor))
        assert parse_duration(tree[f"k{i}"], "x") == pytest.approx(expected, rel=1e-12)
        assert parse_duration(f"{n}{unit}", "x") == pytest.approx(expected, rel=1e-12)


@given(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False))
def test_parse_duration_fractional_seconds(d: object) -> None:
    text = f"{d}"
    assert parse_duration(f"{text}s", "k") == float(Fraction(text))
    assert parse_duration(f"{text} seconds", "k") == float(Fraction(text))


@pytest.mark.parametrize(("key", "value"), [
    ("mutualExclusionConfiguration.updateInterval", "0"),
    ("mutualExclusionConfiguration.fencingMargin", "0s"),
    ("node.stopTimeout", "0"),
    ("database.connectTimeout", "0s"),
    ("restart.window", "0"),
    ("restart.resetAfter", "-1s"),
])
def test_zero_or_negative_durations_rejected(tmp_path: Path, key: str, value: str) -> None:
    err = config_error(tmp_path, BASE + f"{key} = {value}\n")
    assert err.key == key


# --------------------------------------------------------------------------- HOSTNAME / env

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


# --------------------------------------------------------------------------- layouts

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


# --------------------------------------------------------------------------- unknown keys

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


# --------------------------------------------------------------------------- types / values

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


# --------------------------------------------------------------------------- timing rules

@pytest.mark.parametrize("wait", ["500", "400", "0.5s"])
def test_wait_must_exceed_update(tmp_path: Path, wait: str) -> None:
    err = config_error(tmp_path, BASE + f"mutualExclusionConfiguration.waitInterval = {wait}\n")
    assert err.key == "mutualExclusionConfiguration.waitInterval"
    assert "greater than updateInterval" in str(err)
    assert err.line == BASE.count("\n") + 1


def test_wait_must_exceed_update_line_in_block(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE.replace("waitInterval = 2000", "waitInterval = 400"))
    assert err.line == 5
    assert str(err).startswith(f"{tmp_path / 'supervisor.conf'}:5: "
                               "mutualExclusionConfiguration.waitInterval: ")


def test_large_stop_timeout_is_accepted_and_its_graces_explained(tmp_path: Path) -> None:
    """Corda's 20000/40000 with a 60 s stopTimeout is a valid configuration (a planned
    stop may take longer than a lost lease leaves): no warning, and check-config says
    what each kind of stop gives the node."""
    config = load_text(tmp_path, BASE.replace("updateInterval = 500", "updateInterval = 20000")
                  .replace("waitInterval = 2000", "waitInterval = 40000")
                  + "node.stopTimeout = 60s\n")
    assert config.warnings == ()
    timing = redacted_dict(config)["timing"]
    assert timing["plannedStopGrace"] == 60.0
    assert timing["leaseLossGrace"] == pytest.approx(13.0)
    assert timing["sigkillAfterLastRenewal"] == pytest.approx(38.0)
    assert "13 s before SIGKILL" in timing["explained"]


def test_no_timing_warning_when_disabled(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "mutualExclusionConfiguration.on = false\n"
                                   "node.stopTimeout = 60s\n")
    assert config.warnings == ()
    assert redacted_dict(config)["timing"] is None


@pytest.mark.parametrize("block", [
    "updateInterval = 20000, waitInterval = 21000",  # default M = 2 s eats the window
    "updateInterval = 1000, waitInterval = 1150",
])
def test_no_room_for_one_renewal_is_refused(tmp_path: Path, block: str) -> None:
    err = config_error(tmp_path, BASE.replace("updateInterval = 500\n  waitInterval = 2000",
                                       block.replace(", ", "\n  ")))
    assert err.key == "mutualExclusionConfiguration.waitInterval"
    assert "leaves no time for a renewal" in str(err)


def test_margin_must_be_below_slack(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + "mutualExclusionConfiguration.fencingMargin = 1.5s\n")
    assert err.key == "mutualExclusionConfiguration.fencingMargin"


def test_default_margin_capped_at_two_seconds(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "mutualExclusionConfiguration { updateInterval = 20s, "
                                   "waitInterval = 60s }\n")
    assert config.lease.margin == 2.0
    assert config.database.operation_timeout == 5.0


def test_operation_timeout_longer_than_update_warns(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "database.operationTimeout = 2s\n")
    assert any("operationTimeout" in w for w in config.warnings)


# --------------------------------------------------------------------------- database URL

@pytest.mark.parametrize(("url", "conninfo", "user", "password", "schema"), [
    ("jdbc:postgresql://db.example:5432/corda?sslmode=require",
     "postgresql://db.example:5432/corda?sslmode=require", None, None, None),
    ("jdbc:postgresql://db:5432/corda?sslmode=require&currentSchema=ha",
     "postgresql://db:5432/corda?sslmode=require", None, None, "ha"),
    ("jdbc:postgresql://db/corda?user=corda&password=s%40cret&sslrootcert=/etc/ca.pem",
     "postgresql://db/corda?sslrootcert=%2Fetc%2Fca.pem", "corda", "s@cret", None),
    ("jdbc:postgresql:corda", "postgresql://localhost/corda", None, None, None),
    ("jdbc:postgresql://h1:5432,h2:5432/corda?targetServerType=primary",
     "postgresql://h1:5432,h2:5432/corda?target_session_attrs=read-write", None, None, None),
    ("jdbc:postgresql://db/corda?ssl=true&ApplicationName=node1",
     "postgresql://db/corda?application_name=node1&sslmode=verify-full", None, None, None),
    ("postgresql://u:p%40ss@db:5432/corda?sslmode=disable",
     "postgresql://db:5432/corda?sslmode=disable", "u", "p@ss", None),
    ("postgres://db/corda?password=pw&user=u", "postgresql://db/corda", "u", "pw", None),
    ("host=db port=5432 dbname=corda user=u password='p w'", "dbname=corda host=db port=5432",
     "u", "p w", None),  # rebuilt by libpq (its option order) when user/password are removed
    ("host=db port=5432 dbname=corda", "host=db port=5432 dbname=corda", None, None, None),
])
def test_urls(tmp_path: Path, url: str, conninfo: str, user: str | None, password: str | None,
              schema: str | None) -> None:
    config = load_text(tmp_path, BASE + f"database.url = {json.dumps(url)}\n")
    assert config.database.conninfo == conninfo
    assert config.database.user == user
    assert config.database.password == password
    assert config.database.schema == schema
    assert "password" not in config.database.conninfo


def test_jdbc_only_parameters_dropped_with_warning(tmp_path: Path) -> None:
    url = "jdbc:postgresql://db/corda?prepareThreshold=0&sslmode=require&loginTimeout=5"
    config = load_text(tmp_path, BASE + f'database.url = "{url}"\n')
    assert config.database.conninfo == "postgresql://db/corda?sslmode=require"
    text = " ".join(config.warnings)
    assert "prepareThreshold" in text and "loginTimeout" in text


def test_explicit_schema_user_password_win_over_url(tmp_path: Path) -> None:
    url = "jdbc:postgresql://db/corda?currentSchema=a&user=u1&password=p1"
    config = load_text(tmp_path, BASE + f'database {{ url = "{url}", schema = b, user = u2, '
                                   "password = p2 }\n")
    assert (config.database.schema, config.database.user, config.database.password) == (
        "b", "u2", "p2")
    assert len(config.warnings) == 3
    assert not any("p1" in w or "p2" in w for w in config.warnings)


@pytest.mark.parametrize(("url", "fragment"), [
    ("jdbc:mysql://db/corda", "PostgreSQL JDBC"),
    ("mysql://db/corda", "unsupported URL scheme"),
    ("host=db password=hunter2 bogus", "not a valid libpq"),
    ("postgresql://db/corda?bogus=1", "not a valid libpq"),
    ("   ", "must not be empty"),
])
def test_bad_urls(tmp_path: Path, url: str, fragment: str) -> None:
    err = config_error(tmp_path, BASE + f"database.url = {json.dumps(url)}\n")
    assert err.key == "database.url"
    assert fragment in str(err)
    assert "hunter2" not in str(err)


# --------------------------------------------------------------------------- passwords

def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret\n")
    config = load_text(tmp_path, BASE + f'database.passwordFile = "{secret}"\n')
    assert config.database.password == "file-secret"


def test_password_file_missing(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + f'database.passwordFile = "{tmp_path / "nope"}"\n')
    assert err.key == "database.passwordFile"
    assert "cannot read" in str(err)
    assert err.line == BASE.count("\n") + 1


def test_password_file_empty(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    err = config_error(tmp_path, BASE + f'database.passwordFile = "{tmp_path / "pw"}"\n')
    assert err.key == "database.passwordFile" and "empty" in str(err)


def test_password_and_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    err = config_error(tmp_path, BASE + 'database { password = y, '
                       f'passwordFile = "{tmp_path / "pw"}" }}\n')
    assert "not both" in str(err)


def test_password_from_environment(tmp_path: Path) -> None:
    text = BASE + "database.password = ${?CORDA_HA_DB_PASSWORD}\n"
    config = load_text(tmp_path, text, environ={"CORDA_HA_DB_PASSWORD": "env-secret"})
    assert config.database.password == "env-secret"
    assert load_text(tmp_path, text).database.password is None


def test_password_never_shown(tmp_path: Path) -> None:
    secret = "Sup3r-S3cret-Value"
    for text in (
        BASE + "database.password = ${?PW}\n",
        BASE + f'database.url = "postgresql://u:{secret}@db/corda"\n',
        BASE + f'database.url = "jdbc:postgresql://db/corda?password={secret}&foo=1"\n',
        BASE + f'database.url = "host=db password={secret}"\n',
    ):
        config = load_text(tmp_path, text, environ={"PW": secret})
        assert config.database.password == secret
        for shown in (repr(config), str(config), repr(config.database), dump_config(config),
                      json.dumps(redacted_dict(config)), " ".join(config.warnings)):
            assert secret not in shown
        assert redacted_dict(config)["database"]["password"] == "***"


def test_redacted_dict_shape(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "node.environment { API_TOKEN = t0k, JAVA_OPTS = x }\n")
    data = json.loads(dump_config(config))
    assert data == redacted_dict(config)
    assert set(data) == {"source", "mutualExclusionConfiguration", "database", "node",
                         "restart", "health", "logging", "hooks", "fencing", "timing", "warnings"}
    assert data["mutualExclusionConfiguration"] == {
        "on": True, "machineName": "host-a", "updateInterval": 0.5, "waitInterval": 2.0,
        "fencingMargin": pytest.approx(0.2)}
    assert data["database"]["password"] is None
    assert data["database"]["leaseName"] == "corda-node"
    assert data["node"]["stopTimeout"] == 1.0
    assert data["node"]["environment"] == {"API_TOKEN": "***", "JAVA_OPTS": "x"}
    assert data["restart"]["maxCrashes"] == 5


# --------------------------------------------------------------------------- parse errors

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


# --------------------------------------------------------------------------- examples

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


# --------------------------------------------------------------------------- ownerRole

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
