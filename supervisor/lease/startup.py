"""Start-up errors an operator can act on: a database login or privilege
problem, or a TLS verification failure, is a configuration error (exit 78, naming the
key to fix), while a database that is merely unreachable is waited out (it may come
back).

libpq reports connection failures without an SQLSTATE, so those are recognised by
their (English) libpq and server messages; privilege errors carry SQLSTATE 42501.
"""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict

from supervisor.config import Config
from supervisor.lease import LeaseUnavailable
from supervisor.lease.privileges import INSUFFICIENT_PRIVILEGE

_ROLE_MISSING = re.compile(r'role "([^"]+)" does not exist')
_DB_MISSING = re.compile(r'database "([^"]+)" does not exist')

# Definite TLS failures (libpq and OpenSSL texts) and what they mean. Deliberately not
# "SSL error" or "SSL SYSCALL" alone: a server that stops or restarts mid-handshake gives
# "SSL error: unexpected eof while reading" or "SSL SYSCALL error: EOF detected", and a
# database that is down is waited out, never exit 78.
_TLS_PROBLEMS = (
    ("certificate verify failed",
     "the server's certificate does not verify against the CA in sslrootcert (a wrong "
     "CA file, or a server certificate that has expired)"),
    ("does not match host name",
     "the server's certificate does not name the host that database.url connects to "
     "(sslmode = verify-full checks it)"),
    ("could not get server's host name from server certificate",
     "the server's certificate names no host (sslmode = verify-full needs one)"),
    ("root certificate file", "the CA file named by sslrootcert cannot be used"),
    ("server does not support SSL", "the server does not offer TLS, but sslmode requires it"),
    ("invalid sslmode value", "sslmode has no valid value"),
    ("alert unknown ca", "the server does not trust this host's client certificate (sslcert)"),
    ("alert certificate required", "the server requires a client certificate (sslcert, sslkey)"),
)


def tls_settings(conninfo: str) -> str:
    """`sslmode = ..., sslrootcert = ...` of a conninfo, libpq's defaults named when
    unset (for messages; a conninfo never holds the password)."""
    params = conninfo_to_dict(conninfo)
    mode = params.get("sslmode") or "prefer (libpq's default)"
    root = params.get("sslrootcert") or "not set (libpq's default ~/.postgresql/root.crt)"
    return f"sslmode = {mode}, sslrootcert = {root}"


def _tls_problem(text: str, config: Config) -> str | None:
    for marker, meaning in _TLS_PROBLEMS:
        if marker in text:
            return (f"TLS to the database failed: {meaning}; database.url has "
                    f"{tls_settings(config.database.conninfo)} ({text})")
    return None


def database_config_problem(error: LeaseUnavailable, config: Config) -> str | None:
    """A message naming what to fix when `error` is one the configuration (or the
    database's set-up) must fix; None when it may go away by itself (waited out)."""
    db = config.database
    text = str(error)
    user = db.user or "(libpq default: the OS user)"
    if "password authentication failed" in text or "no password supplied" in text \
            or "authentication failed" in text:
        return (f"the database refused the login of database.user = {user}: check the user "
                f"and {db.password_text}")
    if m := _ROLE_MISSING.search(text):
        return f"database.user {m.group(1)!r} does not exist on the database server"
    if m := _DB_MISSING.search(text):
        return f"the database {m.group(1)!r} named in database.url does not exist"
    if "no pg_hba.conf entry" in text:
        tls = (f" (it admits this client only over TLS: {tls_settings(db.conninfo)})"
               if "no encryption" in text else "")
        return ("the database server does not admit this host and user (pg_hba.conf)"
                f"{tls}; database.user = {user}, database.url = {db.conninfo}")
    if problem := _tls_problem(text, config):
        return problem
    if error.sqlstate == INSUFFICIENT_PRIVILEGE:
        return (f"database.user = {user} lacks a privilege on the lease tables ({text}). "
                f"Have a DBA run what `corda-ha-supervisor schema --config {config.source}` "
                "prints (CREATE TABLE and the GRANTs for this role)")
    return None

