"""Prometheus metrics the daemon updates and `/metrics` serves.

Contract: every method is cheap, non-blocking and thread-safe (prometheus
metrics lock internally), so the loop calls them inline. Each `Metrics` owns a
fresh `CollectorRegistry` unless one is given (so tests can create many), with
the process and platform collectors (resident memory, CPU, fds) registered.

Attributes are named after the exported metrics (`lease_renewals_total`, ...),
so the daemon may also use them directly (`m.lease_renewals_total.inc()`).

Metric names (all prefixed `corda_ha_`): `state` (enum), `lease_held`,
`epoch`, `node_running`, `node_restarts_total`, `lease_renewals_total`,
`lease_renewal_failures_total`, `lease_acquisitions_total`,
`last_renewal_age_seconds` (computed at scrape time, so it keeps growing when
the loop hangs; NaN before the first renewal), `can_take_over`,
`database_reachable`, `database_privilege_missing`, `database_failures_in_a_row`,
`log_records_dropped_total`
(log records the queue in front of stdout dropped because the sink stalled,
process-wide; read from `supervisor.observe.logs.dropped_log_records()` at scrape time),
`lease_statement_seconds` (a histogram per `op`: how long each lease statement took to
answer), `kill_after_seconds` (W - M, from the status view while the lease is held; NaN until
then), `fencing_ready` (1 when the fencing check found no problem, 0 while it reports
one, NaN without fencing) and `supervisor_info` (labels `machine_name`, from the
status view, and `lease`, the lease name when given: it groups the hosts of one pair
for the alert rules in config/prometheus-alerts.yml).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeGuard

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from supervisor import clock
from supervisor.observe.logs import dropped_log_records

if TYPE_CHECKING:
    from supervisor.observe.http import StatusView

STATES = ("starting", "standby", "active", "backoff", "paused", "stopping", "cooldown",
          "disabled")

_NS = "corda_ha"
#: lease statement latency buckets (seconds): a LAN round trip to a statement that waited
#: for a lock or a failover
STATEMENT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _LogDrops(Collector):
    """`corda_ha_log_records_dropped_total`, read at scrape time."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            f"{_NS}_log_records_dropped",
            "Log records dropped (not written) because the log sink stalled.",
            value=dropped_log_records())


class _Statements(Collector):
    """`corda_ha_db_statements_total{op}`: database calls sent, read at scrape time
    from a mapping the lease store keeps (op -> count)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(f"{_NS}_db_statements",
                                     "Database calls sent by this supervisor, by operation.",
                                     labels=["op"])
        for op, n in sorted(dict(self._counts()).items()):
            family.add_metric([op], n)
        yield family


class Metrics:
    """The supervisor's metrics, registered in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 machine_name: str | None = None, lease: str | None = None,
                 process_metrics: bool = True) -> None:
        own = registry is None
        self.registry = CollectorRegistry() if registry is None else registry
        if own and process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        r = self.registry
        self._lease_and_node_metrics(r)
        self.database_reachable = Gauge(
            "database_reachable", "1 while the last lease call got an answer.",
            namespace=_NS, registry=r)
        self.database_privilege_missing = Gauge(
            "database_privilege_missing", "1 while the database answers but refuses this "
            "supervisor's role a privilege the lease needs.", namespace=_NS, registry=r)
        self.database_failures_in_a_row = Gauge(
            "database_failures_in_a_row", "Lease calls failed in a row (0 when healthy).",
            namespace=_NS, registry=r)
        self.kill_after_seconds = Gauge(
            "kill_after_seconds", "W - M: the node is killed this long after the last "
            "successful renewal was sent (NaN until this host held the lease).",
            namespace=_NS, registry=r)
        self.fencing_ready = Gauge(
            "fencing_ready", "1 when the database fencing check found no problem, 0 while "
            "it reports one (see /status fencing.problem), NaN without fencing.",
            namespace=_NS, registry=r)
        self.lease_statement_seconds = Histogram(
            "lease_statement_seconds", "How long a lease statement took to answer, from "
            "sending it on the lease statements' own connection (op: observe, acquire, "
            "renew, ...).", ["op"], namespace=_NS, registry=r, buckets=STATEMENT_BUCKETS)
        self.timing_settings = Gauge(
            "timing_settings", "Distinct (updateInterval, waitInterval, margin, version) "
            "the pair's live members publish: 1 when they agree, more on a mismatch "
            "(log event timing_mismatch), 0 before the member table was read.",
            namespace=_NS, registry=r)
        self.supervisor_info = Info(
            "supervisor", "Static facts about this supervisor: machine_name, and lease "
            "(the lease name: one per pair) when known.", namespace=_NS, registry=r)
        r.register(_LogDrops())
        self._last_renewal: float | None = None
        self._restarts_seen = 0
        self._facts: dict[str, str] = {}
        self._lease = lease
        self.epoch.set(math.nan)
        self.kill_after_seconds.set(math.nan)
        self.fencing_ready.set(math.nan)
        self.state.state("starting")
        self._publish_facts(machine_name)

    def _lease_and_node_metrics(self, r: CollectorRegistry) -> None:
        """The state, the lease's and the node's metrics (registered in this order)."""
        self.state = Enum("state", "Supervisor state.", namespace=_NS, states=list(STATES),
                          registry=r)
        self.lease_held = Gauge("lease_held", "1 while this host holds the lease.",
                                namespace=_NS, registry=r)
        self.epoch = Gauge("epoch", "Fencing epoch of the lease as last seen (NaN if none).",
                           namespace=_NS, registry=r)
        self.node_running = Gauge("node_running", "1 while the node process runs.",
                                  namespace=_NS, registry=r)
        self.node_restarts_total = Counter(
            "node_restarts", "Node restarts after a crash.", namespace=_NS, registry=r)
        self.lease_renewals_total = Counter(
            "lease_renewals", "Successful lease renewals.", namespace=_NS, registry=r)
        self.lease_renewal_failures_total = Counter(
            "lease_renewal_failures", "Failed lease renewals (error, timeout, lost).",
            namespace=_NS, registry=r)
        self.lease_acquisitions_total = Counter(
            "lease_acquisitions", "Lease acquisitions.", namespace=_NS, registry=r)
        self.last_renewal_age_seconds = Gauge(
            "last_renewal_age_seconds", "Seconds since the last successful renewal was sent.",
            namespace=_NS, registry=r)
        self.last_renewal_age_seconds.set_function(self._renewal_age)
        self.can_take_over = Gauge(
            "can_take_over", "1 while this host is a standby that could take the lease over "
            "now (database reachable, no configuration conflict).", namespace=_NS, registry=r)

    def _publish_facts(self, machine_name: str | None) -> None:
        facts = {} if machine_name is None else {"machine_name": machine_name}
        if self._lease is not None:
            facts["lease"] = self._lease
        if facts != self._facts:
            self._facts = facts
            self.supervisor_info.info(facts)

    def time_lease_statement(self, op: str, seconds: float) -> None:
        """One lease statement answered after `seconds` (`corda_ha_lease_statement_seconds`)."""
        self.lease_statement_seconds.labels(op=op).observe(seconds)

    def count_statements(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Publish the lease store's statement counts as `corda_ha_db_statements_total`."""
        self.registry.register(_Statements(counts))

    def _renewal_age(self) -> float:
        last = self._last_renewal
        return math.nan if last is None else max(0.0, clock.now() - last)

    def set_state(self, state: str) -> None:
        """Record the current state; unknown names are ignored (never raises)."""
        if state in STATES:
            self.state.state(state)

    def update(self, view: StatusView) -> None:
        """Copy the gauges from a status snapshot (call with each `HealthServer.update`).

        Also reads the optional `view.extra` keys `last_renewal_age` (seconds
        at `view.last_loop_turn`; sets the renewal-age base), `kill_deadline_in` (with
        `last_renewal_age`: their sum is W - M), `restarts` (the core's crash-restart
        count; increases are added to `node_restarts_total`), `database` and `fencing`
        (a dict whose `problem` is None when fencing works; None without fencing).
        """
        self._publish_facts(view.machine_name)
        self.set_state(view.state)
        self.lease_held.set(1 if view.lease_held else 0)
        self.node_running.set(1 if view.node_running else 0)
        self.epoch.set(math.nan if view.epoch is None else view.epoch)
        age = view.extra.get("last_renewal_age")
        if not view.lease_held:
            self._last_renewal = None
        elif _number(age):
            self._last_renewal = view.last_loop_turn - float(age)
            left = view.extra.get("kill_deadline_in")
            if _number(left):
                self.kill_after_seconds.set(round(float(age) + float(left), 3))
        fencing = view.extra.get("fencing")
        self.fencing_ready.set(math.nan if not isinstance(fencing, dict)
                               else 0 if fencing.get("problem") is not None else 1)
        self.can_take_over.set(1 if view.extra.get("can_take_over") else 0)
        database = view.extra.get("database")
        if isinstance(database, dict):
            self.database_reachable.set(1 if database.get("reachable") else 0)
            self.database_privilege_missing.set(1 if database.get("missing_privilege") else 0)
            failures = database.get("failures_in_a_row")
            if isinstance(failures, int):
                self.database_failures_in_a_row.set(failures)
        settings = view.extra.get("timing_settings")
        if _number(settings):
            self.timing_settings.set(settings)
        restarts = view.extra.get("restarts")
        if isinstance(restarts, int) and not isinstance(restarts, bool):
            if restarts > self._restarts_seen:
                self.node_restarts_total.inc(restarts - self._restarts_seen)
            self._restarts_seen = restarts


def _number(value: object) -> TypeGuard[int | float]:
    """A number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
