"""Configuration: one HOCON file per host -> frozen dataclasses.

All durations are float seconds after loading. `load_config` raises
`ConfigError` (never anything else) for any problem in the file; the CLI turns
it into a message and exit status 78 (EX_CONFIG).

Public API: `load_config`, `parse_duration`, `redacted_dict`, `dump_config`, the
dataclasses below, `ConfigError`, `EX_CONFIG`. See config/supervisor.conf for the layout.

Every duration key accepts an integer meaning milliseconds (Corda's form, for all
keys, not only updateInterval/waitInterval) or a HOCON duration (`20s`, `"1.5s"`,
`1500 ms`, `2 minutes`); `parse_duration` is the single place that normalises them.
Unknown keys anywhere are errors. The database password never reaches `conninfo`,
`repr()`, warnings, error messages or `dump_config`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal, NoReturn, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

import psycopg
import psycopg.conninfo
from pyhocon import ConfigParser
from pyhocon.exceptions import ConfigMissingException, ConfigSubstitutionException
from pyparsing import ParseBaseException

from supervisor.timing import MIN_RENEWAL_WINDOW, stop_graces

EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration problem. `str()` names the file, the key and, when known, the line."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.key = key
        self.line = line
        where = path or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text)


@dataclass(frozen=True)
class LeaseConfig:
    """Corda's `mutualExclusionConfiguration`, in seconds."""

    enabled: bool  # `on`
    machine_name: str
    update_interval: float  # U
    wait_interval: float  # W, > U
    margin: float  # M: fencing slack, default min(2 s, W/10)


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the lease lives. `password` is never part of `repr()`."""

    conninfo: str  # libpq conninfo or URI, without the password
    user: str | None
    password: str | None = field(repr=False)
    schema: str | None
    table: str
    lease_name: str
    connect_timeout: float  # seconds; libpq rounds below 2 s up to 2 s
    operation_timeout: float  # hard, supervisor-owned bound on any single database call


@dataclass(frozen=True)
class NodeConfig:
    command: tuple[str, ...]
    working_directory: str
    environment: Mapping[str, str]
    stop_timeout: float  # S: SIGTERM -> SIGKILL grace
    # "auto" (a child cgroup per run under the supervisor's own cgroup, else process
    # groups), "off" (process groups only) or an absolute parent cgroup directory.
    cgroup: str = "auto"


@dataclass(frozen=True)
class RestartConfig:
    initial_delay: float
    multiplier: float
    max_delay: float
    reset_after: float  # a run this long resets the backoff
    max_crashes: int  # this many crashes within `window` -> release the lease and cool down
    window: float
    cooldown: float


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"]
    level: str  # DEBUG, INFO, WARNING, ERROR


@dataclass(frozen=True)
class Config:
    lease: LeaseConfig
    database: DatabaseConfig
    node: NodeConfig
    restart: RestartConfig
    health: HealthConfig
    logging: LoggingConfig
    source: str  # the file it came from
    warnings: tuple[str, ...] = ()  # non-fatal findings, logged at start


# --------------------------------------------------------------------------- durations

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
        raise ConfigError(f"{_DURATION_HINT}, got {_type_name(value)}", key=key)
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


# --------------------------------------------------------------------------- typed access

def _type_name(value: Any) -> str:
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


def _plain_key(key: str) -> str:
    """pyhocon keeps the quotes of quoted keys (`"on" = true`); drop them."""
    if len(key) >= 2 and key[0] == key[-1] == '"':
        return key[1:-1]
    return key


_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class _Block:
    """One object of the parsed tree, with typed getters that raise `ConfigError` naming
    the dotted key. A key set to `null` counts as absent."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = {_plain_key(k): v for k, v in data.items()}
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> NoReturn:
        raise ConfigError(message, key=self.key(name))

    def check_keys(self, allowed: Collection[str]) -> None:
        for name in self.data:
            if name in allowed:
                continue
            lowered = {a.lower(): a for a in allowed}
            close = ([lowered[name.lower()]] if name.lower() in lowered
                     else difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6))
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(name, f"unknown key{hint} (allowed here: {', '.join(sorted(allowed))})")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def block(self, name: str) -> _Block | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(name, f"expected an object {{ ... }}, got {_type_name(value)}")
        return _Block(value, self.key(name))

    def opt_str(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.fail(name, f"expected a string, got {_type_name(value)}")

    def get_str(self, name: str, default: str) -> str:
        value = self.opt_str(name)
        return default if value is None else value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        self.fail(name, f"expected a boolean (true/false, on/off, yes/no), got {_type_name(value)}")

    def get_int(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        self.fail(name, f"expected an integer, got {_type_name(value)}")

    def get_float(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                result = None
        if result is None or not math.isfinite(result):
            self.fail(name, f"expected a number, got {_type_name(value)}")
        return result

    def opt_duration(self, name: str) -> float | None:
        value = self.raw(name)
        return None if value is None else parse_duration(value, self.key(name))

    def duration(self, name: str, default: float, *, positive: bool = True) -> float:
        value = self.opt_duration(name)
        if value is None:
            return default
        if positive and value <= 0:
            self.fail(name, "must be greater than zero")
        return value


# --------------------------------------------------------------------------- database URL

# Parameters libpq understands in a URI query / conninfo (PostgreSQL 17 libpq).
_LIBPQ_PARAMS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "sslnegotiation", "requiressl", "sslcompression", "sslcert", "sslkey", "sslcertmode",
    "sslpassword", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib",
    "gssdelegation", "service", "target_session_attrs", "load_balance_hosts",
})

# pgjdbc parameters with a libpq spelling.
_JDBC_RENAMES = {
    "ApplicationName": "application_name",
    "gssEncMode": "gssencmode",
    "channelBinding": "channel_binding",
}

_JDBC_TARGET_SERVER_TYPES = {
    "any": "any",
    "primary": "read-write",
    "master": "read-write",
    "secondary": "standby",
    "preferSecondary": "prefer-standby",
}

_JDBC_TIMEOUTS = frozenset({"connectTimeout", "loginTimeout", "socketTimeout",
                            "cancelSignalTimeout"})


@dataclass
class _Url:
    conninfo: str
    user: str | None = None
    password: str | None = None
    schema: str | None = None


_PASSWORD_KV_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_URI_RE = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")
_PASSWORD_QUERY_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def _redact_conninfo(text: str) -> str:
    """Hide any password in a libpq URI or conninfo string (or a message quoting one)."""
    text = _PASSWORD_URI_RE.sub(r"\1***@", text)
    text = _PASSWORD_QUERY_RE.sub(r"\1***", text)
    return _PASSWORD_KV_RE.sub(r"\1***", text)


def _check_libpq(conninfo: str, key: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigError(f"not a valid libpq connection string: {_redact_conninfo(str(exc))}",
                          key=key) from None


def _split_userinfo(netloc: str) -> tuple[str, str | None, str | None]:
    """`user:pass@hosts` -> (hosts, user, password), percent-decoded."""
    if "@" not in netloc:
        return netloc, None, None
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return hosts, (unquote(user) or None), (unquote(password) if colon else None)


def _build_uri(hosts: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params, quote_via=quote, safe="")
    return f"postgresql://{hosts}/{path}" + (f"?{query}" if query else "")


def _convert_jdbc(url: str, key: str, warnings: list[str]) -> _Url:
    prefix = "jdbc:postgresql:"
    if not url.startswith(prefix):
        raise ConfigError("only PostgreSQL JDBC URLs (jdbc:postgresql://host:port/db) are "
                          "supported", key=key)
    rest = url[len(prefix):].split("#", 1)[0]
    body = rest[2:] if rest.startswith("//") else "/" + rest.lstrip("/")
    location, _, query = body.partition("?")
    netloc, _, path = location.partition("/")
    hosts, user, password = _split_userinfo(netloc)
    result = _Url("", user, password)
    hosts = hosts or "localhost"  # pgjdbc always uses TCP, localhost by default
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    ssl: str | None = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "user":
            result.user = value or None
        elif name == "password":
            result.password = value or None
        elif name == "currentSchema":
            result.schema = value or None
        elif name == "ssl":
            ssl = value
        elif name == "targetServerType" and value in _JDBC_TARGET_SERVER_TYPES:
            kept.append(("target_session_attrs", _JDBC_TARGET_SERVER_TYPES[value]))
        elif name == "tcpKeepAlive":
            kept.append(("keepalives", "1" if value.lower() == "true" else "0"))
        elif name in _JDBC_RENAMES:
            kept.append((_JDBC_RENAMES[name], value))
        elif name in _LIBPQ_PARAMS and name not in {"host", "hostaddr", "port", "dbname"}:
            kept.append((name, value))
        elif name in _JDBC_TIMEOUTS:
            warnings.append(f"{key}: JDBC parameter {name!r} ignored; the supervisor uses "
                            "database.connectTimeout and database.operationTimeout")
        else:
            dropped.append(name)
    if ssl is not None and ssl.lower() in {"true", ""} and not any(
            name == "sslmode" for name, _ in kept):
        kept.append(("sslmode", "verify-full"))  # pgjdbc's meaning of ssl=true
    if dropped:
        warnings.append(f"{key}: JDBC parameter(s) {', '.join(sorted(set(dropped)))} have no "
                        "libpq equivalent and were dropped")
    result.conninfo = _build_uri(hosts, path, kept)
    return result


def _convert_uri(url: str) -> _Url:
    _, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0]
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    hosts, user, password = _split_userinfo(netloc)
    result = _Url("", user, password)
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "user":
            result.user = value or None
        elif name == "password":
            result.password = value or None
        else:
            kept.append((name, value))
    result.conninfo = _build_uri(hosts, path, kept)
    return result


def _convert_kv(url: str, key: str) -> _Url:
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"not a valid libpq connection string: {_redact_conninfo(str(exc))}",
                          key=key) from None
    if "user" not in params and "password" not in params:
        return _Url(url)  # keep the operator's spelling
    user = params.pop("user", None)
    password = params.pop("password", None)
    return _Url(psycopg.conninfo.make_conninfo("", **cast(dict[str, Any], params)),
                str(user) if user else None, str(password) if password else None)


def _convert_url(url: str, key: str, warnings: list[str]) -> _Url:
    """Corda JDBC URL, libpq URI or conninfo -> conninfo without user and password."""
    url = url.strip()
    if not url:
        raise ConfigError("must not be empty", key=key)
    if url.startswith("jdbc:"):
        result = _convert_jdbc(url, key, warnings)
    elif url.startswith(("postgresql://", "postgres://")):
        result = _convert_uri(url)
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        raise ConfigError("unsupported URL scheme; use postgresql://..., a conninfo string "
                          "(host=... dbname=...) or jdbc:postgresql://...", key=key)
    else:
        result = _convert_kv(url, key)
    _check_libpq(result.conninfo, key)
    return result


# --------------------------------------------------------------------------- line lookup

def _mask_text(text: str) -> str:
    """Blank out comments and string values (keeping quoted keys and newlines), so that a
    scan for key names does not match inside them."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch == '"':
            if text.startswith('"""', i):
                end = text.find('"""', i + 3)
                end = n if end < 0 else end + 3
            else:
                end = i + 1
                while end < n and text[end] not in '"\n':
                    end += 2 if text[end] == "\\" else 1
                end = min(end + 1, n)
            literal = text[i:end]
            after = text[end:].lstrip(" \t")
            if after[:1] in {"=", ":", "{", "."} or after.startswith("+="):
                out.append(literal)  # a quoted key
            else:
                out.append("".join(c if c == "\n" else " " for c in literal))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _key_line(text: str, key: str | None) -> int | None:
    """Best-effort line (1-based) of a dotted key in the HOCON text; None if not found.

    Tries each occurrence of the first path segment, last first (a later assignment wins
    in HOCON), and looks for each following segment after the previous one; a line is given
    only when every segment was found."""
    if not key or not text:
        return None
    masked = _mask_text(text)
    patterns = [re.compile(r'(?<![\w-])"?' + re.escape(segment) + r'"?(?=\s*(?:[.=:{]|\+=))')
                for segment in key.split(".")]
    for first in reversed(list(patterns[0].finditer(masked))):
        pos = first.start()
        for pattern in patterns[1:]:
            match = pattern.search(masked, pos)
            if match is None:
                break
            pos = match.start()
        else:
            return masked.count("\n", 0, pos) + 1
    return None


# --------------------------------------------------------------------------- parsing

def _parser_with_environ(environ: Mapping[str, str]) -> Any:
    """A pyhocon parser class whose `${VAR}` fallback reads `environ`, not `os.environ`."""

    # Overrides pyhocon's private `_resolve_variable` (same body, other mapping); tested by
    # tests/test_config.py::test_optional_substitution_reads_only_given_environ. pyhocon's
    # self-reference fix-up (`a = ${a}` at top level) still reads os.environ; no key of
    # ours can be used that way (unknown top-level keys are errors).
    class _EnvironParser(ConfigParser):  # type: ignore[misc]
        @classmethod
        def _resolve_variable(cls, config: Any, substitution: Any) -> tuple[bool, Any]:
            variable = substitution.variable
            try:
                return True, config.get(variable)
            except ConfigMissingException:
                value = environ.get(variable)
                if value is None:
                    if substitution.optional:
                        return False, None
                    line = substitution.instring.count("\n", 0, substitution.loc) + 1
                    raise ConfigSubstitutionException(
                        f"Cannot resolve variable ${{{variable}}} (line: {line})") from None
                return True, value

    return _EnvironParser


_LINE_IN_MESSAGE_RE = re.compile(r"\(line:\s*(\d+)")


def _parse(path: str, text: str, environ: Mapping[str, str]) -> Mapping[str, Any]:
    parser = _parser_with_environ(environ)
    try:
        tree = parser().parse(text, os.path.dirname(path))
    except ParseBaseException as exc:
        found = getattr(exc, "found", None)
        found = "end of file" if found == "end of text" else found
        expected = str(exc.msg).replace("end of text", "end of file")
        detail = f"{expected}, found {found}" if found else expected
        raise ConfigError(f"syntax error: {detail} (column {exc.col})", path=path,
                          line=exc.lineno) from None
    except ConfigSubstitutionException as exc:
        message = str(exc)
        match = _LINE_IN_MESSAGE_RE.search(message)
        hint = ("; use ${?VAR} for an optional environment variable"
                if "Cannot resolve variable" in message else "")
        raise ConfigError(f"{message}{hint}", path=path,
                          line=int(match[1]) if match else None) from None
    except Exception as exc:  # pyhocon raises assorted exceptions (includes, cycles, ...)
        raise ConfigError(f"cannot parse: {type(exc).__name__}: {exc}", path=path) from None
    if not isinstance(tree, Mapping):
        raise ConfigError("the file must contain an object (key = value pairs), not a list",
                          path=path)
    return cast(Mapping[str, Any], tree)


# --------------------------------------------------------------------------- schema

_TOP_KEYS = ("enterpriseConfiguration", "mutualExclusionConfiguration", "database", "node",
             "restart", "health", "logging")
_LEASE_KEYS = ("on", "machineName", "updateInterval", "waitInterval", "fencingMargin")
_DB_KEYS = ("url", "user", "password", "passwordFile", "schema", "table", "leaseName",
            "connectTimeout", "operationTimeout")
_NODE_KEYS = ("command", "workingDirectory", "environment", "stopTimeout", "cgroup")
_RESTART_KEYS = ("initialDelay", "multiplier", "maxDelay", "resetAfter", "maxCrashes", "window",
                 "cooldown")
_HEALTH_KEYS = ("enabled", "host", "port")
_LOGGING_KEYS = ("format", "level")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMATS = ("auto", "json", "console")
_RESERVED_ENV = ("CORDA_HA_EPOCH", "CORDA_HA_MACHINE_NAME", "CORDA_HA_NODE_KEY")

DEFAULT_TABLE = "corda_ha_lease"
DEFAULT_LEASE_NAME = "corda-node"


def _lease(root: _Block, hostname: str) -> LeaseConfig:
    enterprise = root.block("enterpriseConfiguration")
    nested: _Block | None = None
    if enterprise is not None:
        enterprise.check_keys(("mutualExclusionConfiguration",))
        nested = enterprise.block("mutualExclusionConfiguration")
    top = root.block("mutualExclusionConfiguration")
    if nested is not None and top is not None:
        root.fail("mutualExclusionConfiguration",
                  "given both at top level and under enterpriseConfiguration; keep one")
    block = nested or top
    if block is None:
        root.fail("mutualExclusionConfiguration",
                  "missing: add mutualExclusionConfiguration { on = true, machineName = "
                  "${HOSTNAME}, updateInterval = 20000, waitInterval = 40000 } (at top level or "
                  "under enterpriseConfiguration), or on = false to run without a lease")
    block.check_keys(_LEASE_KEYS)
    enabled = block.get_bool("on", True)
    machine_name = block.get_str("machineName", hostname).strip()
    if not machine_name:
        block.fail("machineName", "must not be empty")
    if enabled:
        for name in ("updateInterval", "waitInterval"):
            if not block.has(name):
                block.fail(name, "is required when on = true (milliseconds, e.g. 20000, or 20s)")
    update = block.duration("updateInterval", 20.0)
    wait = block.duration("waitInterval", 40.0)
    if wait <= update:
        block.fail("waitInterval", f"must be greater than updateInterval ({wait:g} s <= "
                                   f"{update:g} s), as Corda requires")
    margin = block.duration("fencingMargin", min(2.0, wait / 10))
    window = wait - margin - update
    if window < MIN_RENEWAL_WINDOW:
        name = "fencingMargin" if block.has("fencingMargin") else "waitInterval"
        block.fail(name, f"waitInterval - fencingMargin - updateInterval = {wait:g} s - "
                         f"{margin:g} s - {update:g} s = {window:.3g} s leaves no time for a "
                         f"renewal (at least {MIN_RENEWAL_WINDOW:g} s is needed): the node "
                         "would be killed before a renewal could be answered. Raise "
                         "waitInterval, or lower updateInterval or fencingMargin")
    return LeaseConfig(enabled=enabled, machine_name=machine_name, update_interval=update,
                       wait_interval=wait, margin=margin)


def _identifier(block: _Block, name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value or "\x00" in value:
        block.fail(name, "must be a non-empty identifier")
    if len(value.encode()) > 63:
        block.fail(name, f"must be at most 63 bytes (PostgreSQL's identifier limit), got "
                         f"{len(value.encode())}")
    return value


def _read_password_file(block: _Block, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        block.fail("passwordFile", f"cannot read {path!r}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        block.fail("passwordFile", f"{path!r} is not UTF-8 text")
    password = text.rstrip("\r\n")
    if not password:
        block.fail("passwordFile", f"{path!r} is empty")
    return password


def _database(root: _Block, lease: LeaseConfig, warnings: list[str]) -> DatabaseConfig:
    block = root.block("database")
    if block is None:
        if lease.enabled:
            root.fail("database", "missing: the lease needs database { url = ... }")
        block = _Block({}, "database")
    block.check_keys(_DB_KEYS)
    url_text = block.opt_str("url")
    if url_text is None:
        if lease.enabled:
            block.fail("url", "is required (postgresql://host/db, host=... dbname=..., or "
                              "jdbc:postgresql://host:5432/db)")
        url = _Url("")
    else:
        url = _convert_url(url_text, block.key("url"), warnings)

    user = block.opt_str("user")
    if user is not None and url.user is not None and user != url.user:
        warnings.append(f"database.user {user!r} overrides the user {url.user!r} in the url")
    user = user or url.user

    password = block.opt_str("password") or None
    if block.has("password") and block.has("passwordFile"):
        block.fail("passwordFile", "give either password or passwordFile, not both")
    password_file = block.opt_str("passwordFile")
    if password_file is not None:
        password = _read_password_file(block, os.path.abspath(password_file))
    if password is not None and url.password is not None:
        warnings.append("database: the password in the url is ignored; password or "
                        "passwordFile is used")
    password = password or url.password

    schema = block.opt_str("schema")
    if schema is None:
        schema = url.schema
    elif url.schema is not None and url.schema != schema:
        warnings.append(f"database.schema {schema!r} overrides currentSchema {url.schema!r} "
                        "in the url")
    schema = _identifier(block, "schema" if block.has("schema") else "url", schema)
    table = _identifier(block, "table", block.get_str("table", DEFAULT_TABLE))
    assert table is not None
    lease_name = block.get_str("leaseName", DEFAULT_LEASE_NAME)
    if not lease_name.strip():
        block.fail("leaseName", "must not be empty")
    connect_timeout = block.duration("connectTimeout", 5.0)
    operation_timeout = block.duration("operationTimeout", min(5.0, lease.update_interval))
    if lease.enabled and operation_timeout > lease.update_interval:
        warnings.append(f"database.operationTimeout ({operation_timeout:g} s) is longer than "
                        f"updateInterval ({lease.update_interval:g} s): one slow call can delay "
                        "the next renewal")
    return DatabaseConfig(conninfo=url.conninfo, user=user, password=password, schema=schema,
                          table=table, lease_name=lease_name, connect_timeout=connect_timeout,
                          operation_timeout=operation_timeout)


def _node(root: _Block, warnings: list[str]) -> NodeConfig:
    block = root.block("node")
    if block is None:
        root.fail("node", 'missing: add node { command = ["/usr/bin/java", "-jar", "corda.jar"] }')
    block.check_keys(_NODE_KEYS)
    raw = block.raw("command")
    if raw is None:
        block.fail("command", 'is required, e.g. command = ["/usr/bin/java", "-jar", "corda.jar"]')
    if isinstance(raw, str):
        block.fail("command", "must be a list of strings, not a single string (no shell is "
                              f"involved); write it as command = {json.dumps(raw.split())}")
    if not isinstance(raw, list):
        block.fail("command", f"expected a list of strings, got {_type_name(raw)}")
    if not raw:
        block.fail("command", "must not be empty")
    command: list[str] = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            command.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            command.append(str(item))
        else:
            block.fail("command", f"element {index} must be a string, got {_type_name(item)}")
    if not command[0].strip():
        block.fail("command", "the program (element 0) must not be empty")

    directory = os.path.abspath(block.get_str("workingDirectory", os.getcwd()))
    if not os.path.isdir(directory):
        warnings.append(f"node.workingDirectory {directory!r} is not a directory (yet)")

    environment: dict[str, str] = {}
    env_block = block.block("environment")
    if env_block is not None:
        for name, value in env_block.data.items():
            if name in _RESERVED_ENV:
                env_block.fail(name, "is set by the supervisor and cannot be configured")
            if isinstance(value, bool):
                environment[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                environment[name] = str(value)
            elif value is None:
                continue
            else:
                env_block.fail(name, f"expected a string, got {_type_name(value)} (quote keys "
                                     "that contain dots)")
    stop_timeout = block.duration("stopTimeout", 30.0)
    return NodeConfig(command=tuple(command), working_directory=directory,
                      environment=MappingProxyType(environment), stop_timeout=stop_timeout,
                      cgroup=_node_cgroup(block, warnings))


def _node_cgroup(block: _Block, warnings: list[str]) -> str:
    """node.cgroup: auto | off | an absolute cgroup directory (true/false mean auto/off)."""
    raw = block.raw("cgroup")
    if raw is None:
        return "auto"
    if isinstance(raw, bool):
        return "auto" if raw else "off"
    if not isinstance(raw, str):
        block.fail("cgroup", f'expected auto, off or an absolute cgroup directory such as '
                             f'"/sys/fs/cgroup/corda", got {_type_name(raw)}')
    value = raw.strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    if value.lower() in _BOOLEANS:
        return "auto" if _BOOLEANS[value.lower()] else "off"
    if not os.path.isabs(value):
        block.fail("cgroup", f"expected auto, off or an absolute cgroup directory, got {raw!r}")
    value = os.path.normpath(value)
    if not os.path.isdir(value):
        warnings.append(f"node.cgroup {value!r} is not a directory (yet): node runs will be "
                        "held by their process group only")
    return value


def _restart(root: _Block) -> RestartConfig:
    block = root.block("restart") or _Block({}, "restart")
    block.check_keys(_RESTART_KEYS)
    initial = block.duration("initialDelay", 1.0, positive=False)
    multiplier = block.get_float("multiplier", 2.0)
    if multiplier < 1:
        block.fail("multiplier", f"must be at least 1, got {multiplier:g}")
    max_delay = block.duration("maxDelay", max(60.0, initial))
    if max_delay < initial:
        block.fail("maxDelay", f"must be at least initialDelay ({max_delay:g} s < {initial:g} s)")
    max_crashes = block.get_int("maxCrashes", 5)
    if max_crashes < 1:
        block.fail("maxCrashes", f"must be at least 1, got {max_crashes}")
    return RestartConfig(initial_delay=initial, multiplier=multiplier, max_delay=max_delay,
                         reset_after=block.duration("resetAfter", 120.0), max_crashes=max_crashes,
                         window=block.duration("window", 300.0),
                         cooldown=block.duration("cooldown", 300.0, positive=False))


def _health(root: _Block) -> HealthConfig:
    block = root.block("health") or _Block({}, "health")
    block.check_keys(_HEALTH_KEYS)
    port = block.get_int("port", 8080)
    if not 0 <= port <= 65535:
        block.fail("port", f"must be between 0 and 65535, got {port}")
    host = block.get_str("host", "127.0.0.1").strip()
    if not host:
        block.fail("host", "must not be empty")
    return HealthConfig(enabled=block.get_bool("enabled", True), host=host, port=port)


def _logging(root: _Block) -> LoggingConfig:
    block = root.block("logging") or _Block({}, "logging")
    block.check_keys(_LOGGING_KEYS)
    fmt = block.get_str("format", "auto").strip().lower()
    if fmt not in _FORMATS:
        block.fail("format", f"must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    level = block.get_str("level", "INFO").strip().upper()
    level = "WARNING" if level == "WARN" else level
    if level not in _LEVELS:
        block.fail("level", f"must be one of {', '.join(_LEVELS)}, got {level!r}")
    return LoggingConfig(format=cast(Literal["auto", "json", "console"], fmt), level=level)


def _build(tree: Mapping[str, Any], hostname: str, source: str) -> Config:
    root = _Block(tree, "")
    root.check_keys(_TOP_KEYS)
    warnings: list[str] = []
    lease = _lease(root, hostname)
    database = _database(root, lease, warnings)
    node = _node(root, warnings)
    restart = _restart(root)
    health = _health(root)
    logging = _logging(root)
    return Config(lease=lease, database=database, node=node, restart=restart, health=health,
                  logging=logging, source=source, warnings=tuple(warnings))


def load_config(path: str, *, hostname: str | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate one HOCON file; raise only `ConfigError`.

    `${VAR}` / `${?VAR}` are resolved from `environ` (default: `os.environ`), never from
    anything else. `${HOSTNAME}` resolves even when `environ` has no HOSTNAME: it then
    falls back to `hostname` (default: `socket.gethostname()`); that name is also the
    default `machineName`. Every duration key takes integer milliseconds or a HOCON
    duration (see `parse_duration`).
    """
    env = dict(os.environ if environ is None else environ)
    if not env.get("HOSTNAME"):
        env["HOSTNAME"] = hostname or socket.gethostname()
    source = os.path.abspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=path) from None
    tree = _parse(path, text, env)
    try:
        return _build(tree, env["HOSTNAME"], source)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, key=exc.key,
                          line=_key_line(text, exc.key)) from None


# --------------------------------------------------------------------------- output

_SECRET_ENV_RE = re.compile(r"pass|secret|token|credential|private|key", re.IGNORECASE)


def redacted_dict(config: Config) -> dict[str, Any]:
    """The effective configuration with HOCON key names and durations in float seconds.

    The database password is `"***"` when set (else None) and never appears; any password
    inside the conninfo, and `node.environment` values whose names look secret, are masked
    too."""
    lease, db, node = config.lease, config.database, config.node
    restart, health, logging = config.restart, config.health, config.logging
    return {
        "source": config.source,
        "mutualExclusionConfiguration": {
            "on": lease.enabled,
            "machineName": lease.machine_name,
            "updateInterval": lease.update_interval,
            "waitInterval": lease.wait_interval,
            "fencingMargin": lease.margin,
        },
        "database": {
            "url": _redact_conninfo(db.conninfo),
            "user": db.user,
            "password": "***" if db.password else None,
            "schema": db.schema,
            "table": db.table,
            "leaseName": db.lease_name,
            "connectTimeout": db.connect_timeout,
            "operationTimeout": db.operation_timeout,
        },
        "node": {
            "command": list(node.command),
            "workingDirectory": node.working_directory,
            "environment": {k: ("***" if _SECRET_ENV_RE.search(k) else v)
                            for k, v in node.environment.items()},
            "stopTimeout": node.stop_timeout,
            "cgroup": node.cgroup,
        },
        "restart": {
            "initialDelay": restart.initial_delay,
            "multiplier": restart.multiplier,
            "maxDelay": restart.max_delay,
            "resetAfter": restart.reset_after,
            "maxCrashes": restart.max_crashes,
            "window": restart.window,
            "cooldown": restart.cooldown,
        },
        "health": {"enabled": health.enabled, "host": health.host, "port": health.port},
        "timing": _timing_summary(config),
        "logging": {"format": logging.format, "level": logging.level},
        "warnings": list(config.warnings),
    }


def _timing_summary(config: Config) -> dict[str, Any] | None:
    """What the timing rule makes of this configuration (seconds), for operators."""
    lease = config.lease
    if not lease.enabled:
        return None
    g = stop_graces(lease.update_interval, lease.wait_interval, lease.margin,
                    config.node.stop_timeout, config.database.operation_timeout)
    return {
        "plannedStopGrace": g.planned_grace,
        "leaseLossGrace": round(g.loss_grace, 6),
        "renewalAllowance": round(g.renewal_allowance, 6),
        "sigtermAfterLastRenewal": round(g.term_after, 6),
        "sigkillAfterLastRenewal": round(g.kill_after, 6),
        "explained": (
            f"a planned stop (shutdown, handover) gives the node stopTimeout = "
            f"{g.planned_grace:g} s while renewals go on; a node whose lease is not renewed "
            f"gets SIGTERM {g.term_after:.3g} s after the last successful renewal was sent, "
            f"i.e. {g.loss_grace:.3g} s before SIGKILL at {g.kill_after:.3g} s"),
    }


def dump_config(config: Config) -> str:
    """`redacted_dict` as indented JSON (what `check-config` prints)."""
    return json.dumps(redacted_dict(config), indent=2, ensure_ascii=False)
