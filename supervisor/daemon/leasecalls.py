"""The lease actions of the core, carried out as tasks: each posts exactly one result
event within the action's bound plus `CALL_GRACE`, whatever the store does.

An action's `t` (`sent_at`) is taken when the statement is sent, never when its
answer arrives: a late answer must not move the kill deadline past what the row
allows (docs/design.md, "The timing rule").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from supervisor.core.identity import Identity
from supervisor.core.messages import (
    AcquireLease,
    Action,
    Event,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseOpKind,
    LeaseReleased,
    LeaseRenewed,
    ObserveLease,
    ReleaseLease,
    RenewLease,
    ScheduleSettled,
    SettleSchedule,
)
from supervisor.core.observation import observation
from supervisor.core.row import LeaseUnavailable, LeaseVersion
from supervisor.core.state import CoreState
from supervisor.lease import LeaseStore
from supervisor.lease.privileges import INSUFFICIENT_PRIVILEGE
from supervisor.node.machine import process_alive
from supervisor.observe.metrics import Metrics

#: Extra time a lease task gets beyond its own bound before it is given up on.
CALL_GRACE = 1.0

log = structlog.get_logger("supervisor.daemon")

LeaseAction = ObserveLease | AcquireLease | RenewLease | ReleaseLease | SettleSchedule

_OP_KIND: dict[type[Action], LeaseOpKind] = {
    ObserveLease: "observe", AcquireLease: "acquire", RenewLease: "renew",
    ReleaseLease: "release", SettleSchedule: "schedule",
}


class LeaseCalls:
    """Carries out lease actions against `store`; results go to `post`."""

    def __init__(self, store: LeaseStore, identity: Identity, clock: Callable[[], float],
                 post: Callable[[Event], None], metrics: Metrics) -> None:
        self.store = store
        self.identity = identity
        self.clock = clock
        self.post = post
        self.metrics = metrics
        self.schema_ready = False

    async def run(self, action: LeaseAction) -> None:
        """Posts exactly one result event, within the action's timeout plus CALL_GRACE."""
        kind = _OP_KIND[type(action)]
        sent_at = self.clock()
        task = asyncio.create_task(self._request(action, sent_at))
        done, _ = await asyncio.wait({task}, timeout=action.timeout + CALL_GRACE)
        if not done:
            task.cancel()
            self.post(LeaseCallFailed(kind, "timeout (store overran its bound)"))
            return
        try:
            event = task.result()
        except LeaseUnavailable as e:
            event = LeaseCallFailed(kind, str(e),
                                    missing_privilege=e.sqlstate == INSUFFICIENT_PRIVILEGE)
        except Exception as e:
            log.exception("lease_call_error", op=kind)
            event = LeaseCallFailed(kind, f"{type(e).__name__}: {e}")
        self._count(kind, event)
        self.post(event)

    async def _request(self, action: LeaseAction, sent_at: float) -> Event:
        store = self.store
        if not self.schema_ready:
            await store.ensure_schema(action.timeout)
            self.schema_ready = True
        match action:
            case ObserveLease(timeout=timeout):
                snap = await store.observe(timeout)
                return observation(snap, self.identity, process_alive)
            case AcquireLease(expected=expected, takeover=takeover, server=server,
                              timeout=timeout):
                version = None if expected is None else LeaseVersion(
                    expected.epoch, expected.instance, expected.renewed_at)  # type: ignore[arg-type]
                epoch = await store.acquire(version, takeover=takeover, server=server,
                                            timeout=timeout)
                if epoch is None:
                    return LeaseNotAcquired()
                return LeaseAcquired(epoch=epoch, sent_at=sent_at)
            case RenewLease(epoch=epoch, timeout=timeout, hedge_after=hedge):
                result = await store.renew(epoch, timeout, hedge_after=hedge)
                if result is None:
                    return LeaseLost()
                return LeaseRenewed(sent_at=sent_at, handover_requested=result.handover_requested,
                                    paused=result.paused, renewed_at=result.renewed_at,
                                    handover_in=result.handover_in,
                                    handover_at_to=result.handover_at_to)
            case SettleSchedule(epoch=epoch, proceed=proceed, to=to, timeout=timeout):
                return ScheduleSettled(await store.settle_schedule(epoch, proceed, to, timeout))
            case ReleaseLease(epoch=epoch, timeout=timeout):
                return LeaseReleased(await store.release(epoch, timeout))
        raise AssertionError(action)

    def _count(self, kind: str, event: Event) -> None:
        m = self.metrics
        if kind == "renew":
            if isinstance(event, LeaseRenewed):
                m.lease_renewals_total.inc()
            else:
                m.lease_renewal_failures_total.inc()
        elif kind == "acquire" and isinstance(event, LeaseAcquired):
            m.lease_acquisitions_total.inc()


def record_history(store: LeaseStore, old: CoreState, new: CoreState, event: Event) -> None:
    """Queue the lease history's rows for what `event` did (the listener writes them,
    never on the lease's own connection)."""
    if isinstance(event, LeaseAcquired) and new.lease.epoch == event.epoch:
        store.record_acquired(event.epoch, new.lease.acquire_how or "unknown",
                              new.lease.acquire_from)
    elif isinstance(event, LeaseReleased) and event.released and old.lease.release_epoch:
        store.record_ended(old.lease.release_epoch, "released")
    elif isinstance(event, LeaseLost) and old.lease.epoch is not None:
        store.record_ended(old.lease.epoch, "lost")
