"""Start-up errors an operator can act on (issue 7): a database login or privilege
problem is a configuration error (exit 78, naming the key to fix), while a database
that is merely unreachable is waited out (it may come back).

libpq reports connection failures without an SQLSTATE, so those are recognised by
their (English) server messages; privilege errors carry SQLSTATE 42501.
"""

from __future__ import annotations

import re

from supervisor.config import Config
from supervisor.lease import LeaseUnavailable

_ROLE_MISSING = re.compile(r'role "([^"]+)" does not exist')
_DB_MISSING = re.compile(r'database "([^"]+)" does not exist')
_TLS = ("certificate verify failed", "SSL error", "server does not support SSL",
        "does not match host name", "root certificate file", "SSL SYSCALL",
        "sslmode value", "certificate", "SSL connection")


def database_config_problem(error: LeaseUnavailable, config: Config) -> str | None:
    """A message naming what to fix when `error` is one the configuration (or the
    database's set-up) must fix; None when it may go away by itself (waited out)."""
    db = config.database
    text = str(error)
    user = db.user or "(libpq default: the OS user)"
    if "password authentication failed" in text or "no password supplied" in text \
            or "authentication failed" in text:
        return (f"the database refused the login of database.user = {user}: check the user "
                f"and the password from {db.password_source}")
    if m := _ROLE_MISSING.search(text):
        return f"database.user {m.group(1)!r} does not exist on the database server"
    if m := _DB_MISSING.search(text):
        return f"the database {m.group(1)!r} named in database.url does not exist"
    if "no pg_hba.conf entry" in text:
        return ("the database server does not admit this host and user (pg_hba.conf); "
                f"database.user = {user}, database.url = {db.conninfo}")
    if any(marker in text for marker in _TLS):
        return ("TLS to the database failed (database.url: sslmode, sslrootcert, the "
                f"server's host name): {text}")
    if error.sqlstate == "42501":
        return (f"database.user = {user} lacks a privilege on the lease tables ({text}). "
                f"Have a DBA run what `corda-ha-supervisor schema --config {config.source}` "
                "prints (CREATE TABLE and the GRANTs for this role)")
    return None
