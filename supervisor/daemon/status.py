"""What the daemon publishes about itself: the one-line status for systemd, the status
view for the HTTP endpoints and metrics, this supervisor's member row (pure functions
of the core's state and the daemon's facts), and the HTTP endpoint's start."""

from __future__ import annotations

from typing import Any

import structlog

from supervisor import __version__, core
from supervisor.config import Config
from supervisor.core import CoreState, NodePhase, Timing
from supervisor.core.candidacy import priority_wait
from supervisor.core.identity import Identity
from supervisor.lease import Member
from supervisor.observe.http import AddressUnavailable, HealthServer, StatusView
from supervisor.observe.metrics import Metrics

log = structlog.get_logger("supervisor.daemon")


def status_line(s: CoreState) -> str:
    """`state=active epoch=4 node_pid=123`: systemd's STATUS= and the ready message."""
    parts = [f"state={s.state}"]
    if s.lease.epoch is not None:
        parts.append(f"epoch={s.lease.epoch}")
    if s.node.pid is not None:
        parts.append(f"node_pid={s.node.pid}")
    return " ".join(parts)


def role(s: CoreState) -> str:
    """This host's role for the onRoleChange hook: active, standby or stopped."""
    if s.lease.epoch is not None:
        return "active"
    return "standby" if s.state is core.State.STANDBY else "stopped"


def status_view(s: CoreState, timing: Timing, identity: Identity, now: float,
                fencing: dict[str, Any] | None) -> StatusView:
    """The view `/status`, `/health` and the metrics are made of, as of `now`."""
    held = s.lease.epoch is not None
    extra: dict[str, object] = {"restarts": s.crashes.restarts, "instance": identity.instance,
                                "host": identity.host}
    if s.lease.renewed_sent_at is not None:
        extra["last_renewal_age"] = round(now - s.lease.renewed_sent_at, 3)
    kill_at = core.kill_deadline(s, timing)
    if kill_at is not None:
        extra["kill_deadline_in"] = round(kill_at - now, 3)
    if s.lease_enabled:
        can, why = core.takeover_readiness(s, now)
        extra["can_take_over"] = can
        extra["can_take_over_reason"] = why
        extra["database"] = {
            # a database that refuses a privilege answers: it is reachable
            "reachable": ((s.db.ok_at is not None and s.db.failures == 0)
                          or s.db.refused is not None),
            "missing_privilege": s.db.refused,
            "last_error": s.db.error,
            "failing_for": (None if s.db.error_since is None
                            else round(now - s.db.error_since, 3)),
            "failures_in_a_row": s.db.failures,
            "last_answer_age": None if s.db.ok_at is None else round(now - s.db.ok_at, 3),
            "server": s.lease.server,
        }
        extra["machine_identity"] = identity.machine
        extra["machine_name_conflict"] = s.name_conflict
        extra["paused"] = s.paused
        extra["candidate"] = {"nofailover": s.candidacy.nofailover,
                              "priority": s.candidacy.priority}
        extra["timing_settings"] = len(s.candidacy.settings)
        extra["priority_wait"] = priority_wait(s.candidacy, timing.update_interval)
        if s.candidacy.handover_due_at is not None:
            extra["handover_due_in"] = round(s.candidacy.handover_due_at - now, 3)
        extra["fencing"] = fencing
    return StatusView(
        state=str(s.state), machine_name=identity.machine_name,
        holder=identity.machine_name if held else s.lease.holder, epoch=s.lease.epoch,
        node_pid=s.node.pid, lease_held=held, node_running=s.node.phase is NodePhase.RUNNING,
        node_ready=s.node.ready, lease_enabled=s.lease_enabled, last_loop_turn=now,
        extra=extra)


def member(s: CoreState, identity: Identity, now: float, timing: Timing | None = None) -> Member:
    """What this supervisor registers about itself for `status` and `handover`: its
    state, whether it could take over, its candidacy and its timing settings."""
    can, why = core.takeover_readiness(s, now)
    published = None if timing is None else (
        round(timing.update_interval * 1000), round(timing.wait_interval * 1000),
        round(timing.margin * 1000))
    return Member(instance=identity.instance, machine_name=identity.machine_name,
                  machine_identity=identity.machine, host=identity.host, pid=identity.pid,
                  state=str(s.state), can_take_over=can, reason=why, version=__version__,
                  priority=s.candidacy.priority, nofailover=s.candidacy.nofailover,
                  timing_ms=published)


def start_health(config: Config, metrics: Metrics, loop_turn: float) -> HealthServer | None:
    """Bind the HTTP endpoint (None when it is off); when it cannot, log why, naming
    health.port, and return None."""
    h = config.health
    if not h.enabled:
        return None
    internal = None if h.internal_port is None else (h.internal_host, h.internal_port)
    server = HealthServer(h.host, h.port, liveness_timeout=max(5.0, 4 * loop_turn),
                          registry=metrics.registry, token=h.token, internal=internal)
    try:
        server.start()
    except AddressUnavailable as e:
        keys = ("health.internalHost / health.internalPort" if e.internal
                else "health.host / health.port")
        host, port = e.address
        log.error("health_port_unavailable", host=h.host, port=h.port,
                  internal_host=h.internal_host if internal else None,
                  internal_port=h.internal_port, error=e.strerror or str(e),
                  taken=f"{host}:{port}",
                  message=f"cannot listen on {host}:{port} ({keys}): {e.strerror or e}; "
                          f"choose another {keys} in {config.source}")
        return None
    log.info("health_listening", host=h.host, port=server.port,
             internal_host=h.internal_host if internal else None,
             internal_port=server.internal_port, token=h.token_file is not None)
    return server
