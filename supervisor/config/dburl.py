"""The database URL: Corda JDBC URL, libpq URI or conninfo -> conninfo without secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

import psycopg
import psycopg.conninfo

from supervisor.config.model import ConfigError

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
class ParsedUrl:
    conninfo: str
    user: str | None = None
    password: str | None = None
    schema: str | None = None


_PASSWORD_KV_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_URI_RE = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")
_PASSWORD_QUERY_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_conninfo(text: str) -> str:
    """Hide any password in a libpq URI or conninfo string (or a message quoting one)."""
    text = _PASSWORD_URI_RE.sub(r"\1***@", text)
    text = _PASSWORD_QUERY_RE.sub(r"\1***", text)
    return _PASSWORD_KV_RE.sub(r"\1***", text)


def _check_libpq(conninfo: str, key: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigError(f"not a valid libpq connection string: {redact_conninfo(str(exc))}",
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


def _convert_jdbc(url: str, key: str, warnings: list[str]) -> ParsedUrl:
    prefix = "jdbc:postgresql:"
    if not url.startswith(prefix):
        raise ConfigError("only PostgreSQL JDBC URLs (jdbc:postgresql://host:port/db) are "
                          "supported", key=key)
    rest = url[len(prefix):].split("#", 1)[0]
    body = rest[2:] if rest.startswith("//") else "/" + rest.lstrip("/")
    location, _, query = body.partition("?")
    netloc, _, path = location.partition("/")
    hosts, user, password = _split_userinfo(netloc)
    result = ParsedUrl("", user, password)
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


def _convert_uri(url: str) -> ParsedUrl:
    _, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0]
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    hosts, user, password = _split_userinfo(netloc)
    result = ParsedUrl("", user, password)
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


def _convert_kv(url: str, key: str) -> ParsedUrl:
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"not a valid libpq connection string: {redact_conninfo(str(exc))}",
                          key=key) from None
    if "user" not in params and "password" not in params:
        return ParsedUrl(url)  # keep the operator's spelling
    user = params.pop("user", None)
    password = params.pop("password", None)
    return ParsedUrl(psycopg.conninfo.make_conninfo("", **cast(dict[str, Any], params)),
                str(user) if user else None, str(password) if password else None)


def convert_url(url: str, key: str, warnings: list[str]) -> ParsedUrl:
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
