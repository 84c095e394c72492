"""The timing rule's arithmetic, exactly: `stop_graces` in each of its regimes, and every
interval `Timing.from_config` derives from a configuration (each clamp on both sides).
Pure: no database, no processes (a configuration file in a temporary directory)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from supervisor.config import load_config
from supervisor.core import Timing, backoff_delay
from supervisor.core.timing import StopGraces, stop_graces
from tests.harness.config import Value, lease, ms, seconds, supervisor_config, write_config
from tests.harness.coredriver import TIMING

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("u", "w", "m", "s", "op", "want"), [
    # R = (W - M - U) / 2 (below the operation timeout); G = S (below W - M - U - R)
    (0.5, 2.0, 0.2, 0.5, 1.0, StopGraces(1.3, 0.65, 0.5, 0.5, 1.3, 1.8)),
    # R = the operation timeout; G = W - M - U - R (below S)
    (2.0, 4.0, 0.4, 6.0, 0.5, StopGraces(1.6, 0.5, 1.1, 6.0, 2.5, 3.6)),
    # R = (W - M - U) / 2; G = W - M - U - R = R (below S)
    (20.0, 40.0, 2.0, 60.0, 10.0, StopGraces(18.0, 9.0, 9.0, 60.0, 29.0, 38.0)),
    # no room at all: R and G are 0, never negative
    (3.0, 2.0, 0.2, 1.0, 1.0, StopGraces(-1.2, 0.0, 0.0, 1.0, 1.8, 1.8)),
])
def test_stop_graces_in_each_regime(u: float, w: float, m: float, s: float, op: float,
                                    want: StopGraces) -> None:
    got = stop_graces(u, w, m, s, op)
    assert dataclasses.astuple(got) == pytest.approx(dataclasses.astuple(want), abs=1e-12)


def test_the_loss_grace_is_s_unless_the_lease_leaves_less() -> None:
    equal = stop_graces(0.5, 2.0, 0.2, 0.65, 0.5)  # G = min(S, 1.3 - 0.5) = S
    assert equal.loss_grace == pytest.approx(0.65) == equal.planned_grace
    assert stop_graces(2.0, 4.0, 0.4, 6.0, 0.5).loss_grace < 6.0


def timing(tmp_path: Path, update_ms: int, wait_ms: int, *, extra: str = "",
           **lease_more: Value) -> Timing:
    """The timing of a config with these intervals (operationTimeout 1 s, S = 3 s)."""
    path = write_config(tmp_path / "supervisor.conf",
                        lease=lease("a", update_ms, wait_ms, **lease_more),
                        database={"url": "postgresql://h/db", "operationTimeout": seconds(1)},
                        node={"command": ["/bin/true"], "stopTimeout": seconds(3)},
                        extra=extra)
    return Timing.from_config(load_config(str(path), hostname="h", environ={}))


def test_timing_from_a_configuration_with_everything_set(tmp_path: Path) -> None:
    t = timing(tmp_path, 2000, 10000, fencingMargin=ms(500), extra=supervisor_config(
        restart={"initialDelay": seconds(2), "multiplier": 3, "maxDelay": seconds(50),
                 "resetAfter": seconds(40), "maxCrashes": 7, "window": seconds(90),
                 "cooldown": seconds(25)},
        node={"readiness": {"port": 10002, "startTimeout": seconds(70)}}))
    g = stop_graces(2.0, 10.0, 0.5, 3.0, 1.0)
    assert t == Timing(
        update_interval=2.0, wait_interval=10.0, margin=0.5, stop_timeout=3.0,
        loss_grace=g.loss_grace, operation_timeout=1.0,
        poll_interval=1.0,  # U / 2, below W / 4
        retry_interval=0.5,  # U / 4, below 1 s
        renew_hedge=0.25,  # U / 8, below the operation timeout
        renew_retry=0.1,  # U / 20, below 0.25 s
        handover_cooldown=20.0, initial_delay=2.0, multiplier=3.0, max_delay=50.0,
        reset_after=40.0, max_crashes=7, crash_window=90.0, crash_cooldown=25.0,
        error_repeat=60.0, ready_timeout=70.0)


def test_timing_clamps_from_above(tmp_path: Path) -> None:
    t = timing(tmp_path, 9000, 12000)
    assert t.poll_interval == 3.0  # W / 4, below U / 2
    assert t.retry_interval == 1.0  # 1 s, below U / 4
    assert t.renew_hedge == 1.0  # the operation timeout, below U / 8
    assert t.renew_retry == 0.25  # 0.25 s, below U / 20
    assert t.margin == pytest.approx(1.2)  # default min(2 s, W / 10)
    assert t.ready_timeout is None  # no readiness check
    assert (t.initial_delay, t.multiplier, t.max_crashes) == (1.0, 2.0, 5)  # the defaults


def test_timing_clamps_from_below(tmp_path: Path) -> None:
    t = timing(tmp_path, 100, 400)  # U: 100 ms at least
    assert t.poll_interval == 0.05  # U / 2
    assert t.retry_interval == 0.05  # not below 50 ms (U / 4 = 25 ms)
    assert t.renew_hedge == 0.02  # not below 20 ms (U / 8 = 12.5 ms)
    assert t.renew_retry == 0.01  # not below 10 ms (U / 20 = 5 ms)


def test_backoff_delay_grows_until_its_cap() -> None:
    t = dataclasses.replace(TIMING, initial_delay=1.5, multiplier=2.0, max_delay=10.0)
    assert [backoff_delay(n, t) for n in (0, 1, 2, 3, 4, 50)] == [1.5, 1.5, 3.0, 6.0, 10.0,
                                                                  10.0]
    # the exponent is capped (64) so a long crash run never overflows: a multiplier close
    # to 1 shows the cap
    slow = dataclasses.replace(TIMING, initial_delay=1.0, multiplier=1.01, max_delay=1e9)
    assert backoff_delay(200, slow) == backoff_delay(65, slow) == 1.01 ** 64
    assert backoff_delay(64, slow) == 1.01 ** 63
