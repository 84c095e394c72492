"""Command line: `run`, `status`, `check-config`, `handover`.

Exit statuses: 0 ok; 1 failure (e.g. handover timed out); 2 usage; 3 no live
holder (`status`, `handover`); 69 database unavailable (EX_UNAVAILABLE);
78 bad configuration (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from supervisor import __version__
from supervisor.config import EX_CONFIG, Config, ConfigError, dump_config, load_config
from supervisor.lease import Identity, LeaseSnapshot, LeaseUnavailable, PostgresLeaseStore

DEFAULT_CONFIG = "/etc/corda-ha-supervisor/supervisor.conf"
EX_UNAVAILABLE = 69
EXIT_NO_HOLDER = 3


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
    with_config(sub.add_parser(
        "check-config", help="validate the configuration and print it (password redacted)",
        description="Exit 0 when valid, 78 when not."))
    handover = with_config(sub.add_parser(
        "handover", help="ask the current holder to stop its node and release the lease",
        description="Sets the handover flag on the lease row. The holder stops its node, "
                    "releases the lease and cools down, so another host takes over."))
    handover.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                          help="return once another host holds the lease; fail (exit 1) "
                               "after SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        return 0
    if command == "run":
        return run(config)
    if not config.lease.enabled:
        print("corda-ha-supervisor: the lease is off in this configuration (on = false)",
              file=sys.stderr)
        return EX_CONFIG
    if command == "status":
        return asyncio.run(status(config, as_json=args.json))
    if command == "handover":
        return asyncio.run(handover(config, wait=args.wait))
    raise AssertionError(command)


def run(config: Config) -> int:
    from supervisor.daemon import Daemon
    from supervisor.logs import EXIT_FLUSH_TIMEOUT, configure_logging, flush_logs

    configure_logging(config.logging.format, config.logging.level)
    try:
        return asyncio.run(Daemon(config).run())
    finally:
        flush_logs(EXIT_FLUSH_TIMEOUT)  # the last lines (supervisor_exiting); bounded


def describe(snapshot: LeaseSnapshot | None) -> dict[str, object]:
    """The lease as the `status` command shows it; ages by the database clock."""
    if snapshot is None or not snapshot.exists:
        return {"holder": None, "live": False, "epoch": None}

    def seconds(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else round((a - b).total_seconds(), 3)

    live = snapshot.holder is not None and snapshot.expires_at is not None \
        and snapshot.expires_at > snapshot.db_now
    return {
        "lease_name": snapshot.lease_name,
        "holder": snapshot.holder,
        "holder_host": snapshot.holder_host,
        "holder_pid": snapshot.holder_pid,
        "epoch": snapshot.epoch,
        "live": live,
        "renewed_ago": seconds(snapshot.db_now, snapshot.renewed_at),
        "expires_in": seconds(snapshot.expires_at, snapshot.db_now),
        "acquired_at": snapshot.acquired_at.isoformat() if snapshot.acquired_at else None,
        "handover_requested": snapshot.handover_requested_at is not None,
    }


def _store(config: Config) -> PostgresLeaseStore:
    identity = Identity.for_this_process(config.lease.machine_name)
    return PostgresLeaseStore(config.database, identity, config.lease.wait_interval)


async def _observe(store: PostgresLeaseStore, timeout: float) -> LeaseSnapshot | None:
    await store.ensure_schema(timeout)
    return await store.observe(timeout)


def local_view(config: Config, timeout: float = 2.0) -> tuple[dict[str, Any] | None, str | None]:
    """This host's supervisor's `/status` (its state, database view, whether it could
    take over), or (None, why not). Bounded by `timeout`; never raises."""
    health = config.health
    if not health.enabled:
        return None, "health endpoint disabled (health.enabled = false)"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(health.host, health.host)
    netloc = f"[{host}]" if ":" in host else host
    url = f"http://{netloc}:{health.port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        return None, f"{url} answered {e.code}"
    except (OSError, ValueError) as e:
        return None, f"no supervisor answering at {url}: {e}"
    return (body, None) if isinstance(body, dict) else (None, f"{url}: unexpected answer")


def _describe_local(view: dict[str, Any] | None, error: str | None) -> str:
    if view is None:
        return f"this host: {error}"
    lines = [f"this host: {view.get('machine_name')} state={view.get('state')} "
             f"epoch={view.get('epoch')}"]
    if "can_take_over" in view:
        can = "yes" if view["can_take_over"] else "NO"
        lines.append(f"  could take over now: {can} ({view.get('can_take_over_reason')})")
    db = view.get("database")
    if isinstance(db, dict):
        if db.get("reachable"):
            lines.append(f"  database: reachable (server {db.get('server')})")
        else:
            lines.append(f"  database: UNREACHABLE for {db.get('failing_for')} s, "
                         f"{db.get('failures_in_a_row')} failures in a row; last error: "
                         f"{db.get('last_error')}")
    if view.get("machine_name_conflict"):
        lines.append(f"  CONFIGURATION ERROR: {view['machine_name_conflict']}")
    return "\n".join(lines)


async def status(config: Config, *, as_json: bool) -> int:
    store = _store(config)
    timeout = max(config.database.operation_timeout, config.database.connect_timeout)
    view, view_error = await asyncio.to_thread(local_view, config)
    try:
        snapshot = await _observe(store, timeout)
    except LeaseUnavailable as e:
        if as_json:
            print(json.dumps({"database_error": str(e), "this_host": view,
                              "this_host_error": view_error}, indent=2))
        else:
            print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
            print(_describe_local(view, view_error))
        return EX_UNAVAILABLE
    finally:
        await store.close()
    info = describe(snapshot)
    if as_json:
        print(json.dumps({**info, "this_host": view, "this_host_error": view_error}, indent=2))
    else:
        if info["holder"] is None:
            print("no holder: the lease is free")
        else:
            state = "live" if info["live"] else "EXPIRED"
            print(f"holder: {info['holder']} (host {info['holder_host']}, pid "
                  f"{info['holder_pid']})\nepoch: {info['epoch']}\nstate: {state}\nrenewed: "
                  f"{info['renewed_ago']} s ago\nexpires in: {info['expires_in']} s"
                  + ("\nhandover: requested" if info["handover_requested"] else ""))
        print(_describe_local(view, view_error))
    return 0 if info["live"] else EXIT_NO_HOLDER


async def handover(config: Config, *, wait: float | None) -> int:
    store = _store(config)
    timeout = max(config.database.operation_timeout, config.database.connect_timeout)
    try:
        await store.ensure_schema(timeout)
        before = await store.request_handover(timeout)
        if before.holder is None:
            print("corda-ha-supervisor: nobody holds the lease; nothing to hand over",
                  file=sys.stderr)
            return EXIT_NO_HOLDER
        print(f"handover requested from {before.holder} (epoch {before.epoch})")
        if wait is None:
            return 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                now = await store.observe(timeout)
            except LeaseUnavailable:
                now = None
            if (now is not None and now.holder is not None and now.holder != before.holder
                    and now.epoch > before.epoch and not now.expired):
                print(f"now held by {now.holder} (epoch {now.epoch})")
                return 0
            await asyncio.sleep(0.1)
        print(f"corda-ha-supervisor: no other host took the lease within {wait} s",
              file=sys.stderr)
        return 1
    except LeaseUnavailable as e:
        print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        await store.close()
