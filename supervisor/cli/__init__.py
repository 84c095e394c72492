"""The command line (`corda-ha-supervisor`): argument parsing and dispatch (`command`),
the operator's commands against the database (`operator`: status, handover, pause,
history) and the DBA's script (`schema`).

May import everything; nothing imports it but `supervisor.__main__`.
"""

from supervisor.cli.command import main

__all__ = ["main"]
