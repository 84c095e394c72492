"""Durations: every form a HOCON file may hold -> float seconds (`parse_duration`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from fractions import Fraction
from typing import Any

from supervisor.config.model import ConfigError

_UNIT_FACTORS: dict[str, Fraction] = {}
for _names, _factor in (
    (("ns", "nano", "nanos", "nanosecond", "nanoseconds"), Fraction(1, 10**9)),
    (("us", "µs", "micro", "micros", "microsecond", "microseconds"), Fraction(1, 10**6)),
    (("ms", "milli", "millis", "millisecond", "milliseconds"), Fraction(1, 1000)),
    (("s", "second", "seconds"), Fraction(1)),
    (("m", "minute", "minutes"), Fraction(60)),
    (("h", "hour", "hours"), Fraction(3600)),
    (("d", "day", "days"), Fraction(86400)),
    (("w", "week", "weeks"), Fraction(7 * 86400)),
):
    for _name in _names:
        _UNIT_FACTORS[_name] = _factor

_DURATION_RE = re.compile(r"^\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-zµ]*)\s*$")

_DURATION_HINT = ("expected a duration: integer milliseconds (20000) or a value with a unit "
                  "(20s, \"1.5s\", 1500 ms, 2m, 20 seconds)")


def parse_duration(value: Any, key: str) -> float:
    """Any duration form found in a parsed HOCON tree -> float seconds (>= 0).

    Accepts `datetime.timedelta` (pyhocon's unquoted `20s`), dateutil's `relativedelta`
    (pyhocon with python-dateutil installed; months and years are refused), a bare
    int/float meaning milliseconds (Corda's form), and strings: a number with a unit
    (ns, us, ms, s, m, h, d, w or the long names, fractions allowed: `1.5s`) or a bare
    number meaning milliseconds (what `${?ENV}` gives). Raises `ConfigError` naming `key`
    for anything else, for negative values and for non-finite numbers.
    """
    seconds: Fraction
    if isinstance(value, bool):
        raise ConfigError(f"{_DURATION_HINT}, got a boolean", key=key)
    if isinstance(value, timedelta):
        seconds = Fraction(value.days * 86400 + value.seconds) + Fraction(value.microseconds,
                                                                            10**6)
    elif type(value).__name__ == "relativedelta":
        seconds = _relativedelta_seconds(value, key)
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"{_DURATION_HINT}, got {value!r}", key=key)
        seconds = Fraction(value) / 1000
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ConfigError(f"{_DURATION_HINT}, got {value!r}", key=key)
        unit = match["unit"]
        factor = _UNIT_FACTORS.get(unit) or _UNIT_FACTORS.get(unit.lower())
        if unit == "":
            factor = Fraction(1, 1000)
        if factor is None:
            raise ConfigError(f"unknown duration unit {unit!r} in {value!r}; use one of "
                              "ns, us, ms, s, m, h, d, w", key=key)
        seconds = Fraction(match["num"]) * factor
    else:
        raise ConfigError(f"{_DURATION_HINT}, got {type_name(value)}", key=key)
    if seconds < 0:
        raise ConfigError(f"must not be negative, got {float(seconds)} s", key=key)
    return float(seconds)


def _relativedelta_seconds(value: Any, key: str) -> Fraction:
    if getattr(value, "years", 0) or getattr(value, "months", 0):
        raise ConfigError("months and years are not fixed durations; use days or smaller units",
                          key=key)
    for absolute in ("year", "month", "day", "hour", "minute", "second", "microsecond",
                     "weekday"):
        if getattr(value, absolute, None) is not None:
            raise ConfigError(f"{_DURATION_HINT}, got an absolute date field", key=key)
    return (Fraction(int(getattr(value, "days", 0) or 0)) * 86400
            + Fraction(int(getattr(value, "hours", 0) or 0)) * 3600
            + Fraction(int(getattr(value, "minutes", 0) or 0)) * 60
            + Fraction(getattr(value, "seconds", 0) or 0)
            + Fraction(int(getattr(value, "microseconds", 0) or 0), 10**6))


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, timedelta) or type(value).__name__ == "relativedelta":
        return "a duration"
    return type(value).__name__
