"""The exit statuses of every command: one cause, one status.

| status | cause |
|---|---|
| 0 | done (`status`: a live holder) |
| 1 | a wait that ran out (`handover --wait`) |
| 2 | usage: an unknown command or option |
| 3 | no live holder (`status`, `handover`) |
| 4 | refused: the operation would do harm (`handover` nobody could take) |
| 69 | the database cannot be reached (`EX_UNAVAILABLE`) |
| 78 | configuration, credentials or privileges: the file, line, key or GRANT named (`EX_CONFIG`) |
| 141 | the output pipe closed early (`status \\| head`), as for any Unix tool |

`run` exits 0 after a SIGTERM, 78 before it contends on a configuration, credential
or privilege problem, and waits an unreachable database out (never 69).
"""

from __future__ import annotations

import sys

from supervisor.config import EX_CONFIG, Config
from supervisor.core.row import LeaseUnavailable
from supervisor.lease.startup import database_config_problem

EXIT_FAILED = 1
EXIT_NO_HOLDER = 3
EXIT_REFUSED = 4
EX_UNAVAILABLE = 69
EXIT_PIPE_CLOSED = 141

__all__ = ["EXIT_FAILED", "EXIT_NO_HOLDER", "EXIT_PIPE_CLOSED", "EXIT_REFUSED", "EX_CONFIG",
           "EX_UNAVAILABLE", "database_exit", "fail"]


def database_exit(error: LeaseUnavailable, config: Config) -> tuple[int, str]:
    """The status and message for a database call that failed: 78 when the
    configuration or the database's set-up must change (login, privilege, TLS), else
    69 (unreachable: it may come back)."""
    problem = database_config_problem(error, config)
    if problem is not None:
        return EX_CONFIG, f"configuration error: {problem}"
    return EX_UNAVAILABLE, f"database unavailable: {error}"


def fail(error: LeaseUnavailable, config: Config) -> int:
    """Print `database_exit`'s message to stderr; its status."""
    code, message = database_exit(error, config)
    print(f"corda-ha-supervisor: {message}", file=sys.stderr)
    return code
