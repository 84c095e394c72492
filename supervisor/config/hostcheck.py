"""Checks that only the host that runs the node can make: its working directory and
its program exist, and so does the CA file that verifies the database server
(`sslrootcert` with `sslmode = verify-ca / verify-full`). `check-config` and `run` make
them (exit 78 on failure), so a host never takes the lease only to crash-loop on a
typo while the other waits."""

from __future__ import annotations

import os
import shutil

from psycopg.conninfo import conninfo_to_dict

from supervisor.config.hocon import key_line
from supervisor.config.model import Config, ConfigError


def check_host(config: Config) -> list[ConfigError]:
    """Every problem found (an empty list when the node can be started here)."""
    node = config.node
    problems: list[tuple[str, str]] = []
    directory = node.working_directory
    if not os.path.isdir(directory):
        problems.append(("node.workingDirectory",
                         f"{directory!r} does not exist or is not a directory"))
    program = node.command[0]
    if os.sep in program:
        path = program if os.path.isabs(program) else os.path.join(directory, program)
        if not os.path.isfile(path):
            problems.append(("node.command", f"the program {program!r} does not exist"
                             + ("" if os.path.isabs(program) else f" (as {path!r})")))
        elif not os.access(path, os.X_OK):
            problems.append(("node.command", f"the program {program!r} is not executable "
                                             "by this user"))
    else:
        search = node.environment.get("PATH", os.environ.get("PATH", os.defpath))
        if shutil.which(program, path=search) is None:
            problems.append(("node.command", f"the program {program!r} is not on PATH "
                                             f"({search}); give its absolute path"))
    if config.lease.enabled and (problem := _root_certificate_problem(config.database.conninfo)):
        problems.append(("database.url", problem))
    try:
        with open(config.source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        text = ""
    return [ConfigError(message, path=config.source, key=key, line=key_line(text, key))
            for key, message in problems]


def _root_certificate_problem(conninfo: str) -> str | None:
    """Why libpq cannot read the absolute `sslrootcert` file it must verify the server
    with (sslmode verify-*), or None. A relative path is left to libpq: it is relative
    to the supervisor's working directory, not this command's."""
    params = conninfo_to_dict(conninfo)
    mode, path = str(params.get("sslmode") or ""), str(params.get("sslrootcert") or "")
    if not mode.startswith("verify-") or not os.path.isabs(path):
        return None
    if not os.path.isfile(path):
        return (f"sslrootcert {path!r} does not exist or is not a file: with sslmode = "
                f"{mode} the server's certificate is verified against this CA file")
    if not os.access(path, os.R_OK):
        return f"sslrootcert {path!r} is not readable by this user (sslmode = {mode})"
    return None
