"""The effective configuration for operators, with every secret masked."""

from __future__ import annotations

import json
import re
from typing import Any

from supervisor.config.dburl import redact_conninfo
from supervisor.config.model import Config, DatabaseConfig, NodeConfig
from supervisor.core.timing import stop_graces

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
        "database": _database_dump(db),
        "node": _node_dump(node),
        "restart": {
            "initialDelay": restart.initial_delay,
            "multiplier": restart.multiplier,
            "maxDelay": restart.max_delay,
            "resetAfter": restart.reset_after,
            "maxCrashes": restart.max_crashes,
            "window": restart.window,
            "cooldown": restart.cooldown,
        },
        "health": {"enabled": health.enabled, "host": health.host, "port": health.port,
                   "tokenFile": health.token_file, "internalHost": health.internal_host,
                   "internalPort": health.internal_port},
        "timing": _timing_summary(config),
        "logging": {"format": logging.format, "level": logging.level},
        "hooks": {"onRoleChange": list(config.hooks.on_role_change),
                  "preStop": list(config.hooks.pre_stop), "timeout": config.hooks.timeout},
        "fencing": ({"nodeRole": config.fencing.node_role, "required": config.fencing.required,
                     "nodeGroup": config.fencing.node_group,
                     "fencerRole": config.fencing.fencer_role}
                    if config.fencing.enabled else None),
        "candidate": {"nofailover": config.candidate.nofailover,
                      "priority": config.candidate.priority},
        "warnings": list(config.warnings),
    }


def _database_dump(db: DatabaseConfig) -> dict[str, Any]:
    """The `database` block: the password `"***"` when set, the conninfo's masked."""
    return {
        "url": redact_conninfo(db.conninfo),
        "user": db.user,
        "password": "***" if db.password else None,
        "schema": db.schema,
        "table": db.table,
        "leaseName": db.lease_name,
        "connectTimeout": db.connect_timeout,
        "operationTimeout": db.operation_timeout,
        "ownerRole": db.owner_role,
    }


def _node_dump(node: NodeConfig) -> dict[str, Any]:
    """The `node` block: `environment` values whose names look secret masked."""
    return {
        "command": list(node.command),
        "workingDirectory": node.working_directory,
        "environment": {k: ("***" if _SECRET_ENV_RE.search(k) else v)
                        for k, v in node.environment.items()},
        "stopTimeout": node.stop_timeout,
        "cgroup": node.cgroup,
        "cordaConfig": node.corda_config,
        "sharedDirectories": list(node.shared_directories),
        "sharedProbeTimeout": node.shared_probe_timeout,
        "readiness": None if node.readiness is None else {
            "port": node.readiness.port, "host": node.readiness.host,
            "logPattern": node.readiness.log_pattern,
            "startTimeout": node.readiness.start_timeout},
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
