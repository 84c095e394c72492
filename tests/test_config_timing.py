"""supervisor.config: durations in every form HOCON, Corda and the environment give them,
and the limits of the timing rule a config must keep (waitInterval above updateInterval,
room for one renewal, the fencing margin, the stop timeout's graces)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyhocon import ConfigFactory

from supervisor.config import (
    ConfigError,
    parse_duration,
    redacted_dict,
)
from tests.harness.config import BASE, config_error, load_text

# ------------------------------------------------------------------ durations


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


# ------------------------------------------------------------------ timing rules


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
