"""The metrics the alert rules and the dashboard need beyond the status gauges
(supervisor/observe/metrics.py): `corda_ha_supervisor_info` (machine_name from the
status view, lease when given), `corda_ha_kill_after_seconds` (W - M from the view)
and `corda_ha_fencing_ready` (from the view's `fencing.problem`)."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import generate_latest

from supervisor.observe.http import StatusView
from supervisor.observe.metrics import Metrics

pytestmark = pytest.mark.timeout(20)


def view(**kw: object) -> StatusView:
    base: dict[str, object] = dict(
        state="active", machine_name="host-a", holder="host-a", epoch=3, node_pid=99,
        lease_held=True, node_running=True, lease_enabled=True,
        last_loop_turn=time.monotonic(), extra={})
    base.update(kw)
    return StatusView(**base)  # type: ignore[arg-type]


def lines(m: Metrics, name: str) -> list[str]:
    text = generate_latest(m.registry).decode()
    return [ln for ln in text.splitlines() if ln.split("{")[0].split(" ")[0] == name]


def value(m: Metrics, name: str) -> float:
    found = m.registry.get_sample_value(name)
    assert found is not None, name
    return found


def test_info_names_the_machine_from_the_view() -> None:
    m = Metrics(process_metrics=False)  # as the daemon makes it
    assert lines(m, "corda_ha_supervisor_info") == ["corda_ha_supervisor_info 1.0"]
    m.update(view())
    assert lines(m, "corda_ha_supervisor_info") == [
        'corda_ha_supervisor_info{machine_name="host-a"} 1.0']


def test_info_carries_the_lease_name_when_given() -> None:
    m = Metrics(process_metrics=False, lease="party-a")
    assert lines(m, "corda_ha_supervisor_info") == [
        'corda_ha_supervisor_info{lease="party-a"} 1.0']
    m.update(view(machine_name="host-b"))
    assert lines(m, "corda_ha_supervisor_info") == [
        'corda_ha_supervisor_info{lease="party-a",machine_name="host-b"} 1.0']


def test_kill_after_is_w_minus_m_once_held_and_kept() -> None:
    m = Metrics(process_metrics=False)
    assert math.isnan(value(m, "corda_ha_kill_after_seconds"))
    # a standby: no renewal, no deadline
    m.update(view(state="standby", lease_held=False, epoch=None, holder="host-b"))
    assert math.isnan(value(m, "corda_ha_kill_after_seconds"))
    # holding: age 0.4 s, the kill deadline 1.4 s ahead -> W - M = 1.8 s
    m.update(view(extra={"last_renewal_age": 0.4, "kill_deadline_in": 1.4}))
    assert value(m, "corda_ha_kill_after_seconds") == pytest.approx(1.8)
    m.update(view(extra={"last_renewal_age": 1.1, "kill_deadline_in": 0.7}))
    assert value(m, "corda_ha_kill_after_seconds") == pytest.approx(1.8)
    # the lease is gone: the interval is still the configured one
    m.update(view(state="standby", lease_held=False, epoch=None, extra={}))
    assert value(m, "corda_ha_kill_after_seconds") == pytest.approx(1.8)


def test_kill_after_ignores_what_is_not_a_number() -> None:
    m = Metrics(process_metrics=False)
    m.update(view(extra={"last_renewal_age": 0.4, "kill_deadline_in": True}))
    m.update(view(extra={"last_renewal_age": 0.4, "kill_deadline_in": None}))
    assert math.isnan(value(m, "corda_ha_kill_after_seconds"))


@pytest.mark.parametrize(("fencing", "expected"), [
    (None, math.nan),  # fencing off
    ({"node_role": "corda_node_a", "required": True, "problem": None}, 1.0),
    ({"node_role": "corda_node_a", "required": True,
      "problem": "not checked yet (waiting for the database)"}, 0.0),
    ({"node_role": "corda_node_a", "required": False, "problem": "missing privilege"}, 0.0),
])
def test_fencing_ready_follows_the_problem(fencing: object, expected: float) -> None:
    m = Metrics(process_metrics=False)
    m.update(view(extra={"fencing": {"problem": "x"}}))  # a value before, to be replaced
    m.update(view(extra={"fencing": fencing}))
    got = value(m, "corda_ha_fencing_ready")
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_fencing_ready_is_nan_before_any_view() -> None:
    assert math.isnan(value(Metrics(process_metrics=False), "corda_ha_fencing_ready"))
