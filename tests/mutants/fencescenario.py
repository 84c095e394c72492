"""The shape of a fence scenario (`fencecases.py`, `fencecheckcases.py`) and what they share:
the lease rows, the calls' default arguments, the answers that recur."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.harness.fencecall import Failed
from tests.harness.fenceworld import LEASE, LEASE2

Row = dict[str, Any]
W = 10.0
HOLDER: Row = dict(lease_name=LEASE, holder="a", instance="inst-a", epoch=5,
                   renewed_at=-1.0, expires_at=9.0)
PAIR2: Row = dict(lease_name=LEASE2, holder="c", instance="inst-c", epoch=3,
                  renewed_at=-1.0, expires_at=3600.0)
#: pair 2's row held by our process at our epoch: a statement that ignores the lease
#: name finds it
TWIN: Row = dict(PAIR2, instance="inst-a", epoch=5)
ARGS: dict[str, dict[str, Any]] = {
    "confirm": dict(lease=LEASE, role="{a}", machine="a"),
    "lock": dict(lease=LEASE, epoch=5, instance="inst-a", role="{a}", machine="a"),
    "end": dict(lease=LEASE, epoch=5, instance="inst-a", role="{a}", machine="a",
                wait_ms=1000),
    "bind": dict(role="{e}", lease=LEASE, machine="e"),
    "read": dict(lease=LEASE),
    "sql": {},
}
NOT_HOLDER = "55000"
REFUSED = "CHA01"
HOLDER_LOST = Failed(NOT_HOLDER, "not the holder of lease corda-node at epoch 5")
AGAIN = "(run what `corda-ha-supervisor schema` prints again)"
HISTORY = "{schema}.{table}_history"


def row(base: Row, **changes: Any) -> Row:
    return {**base, **changes}


@dataclass(frozen=True)
class Scenario:
    call: str
    setup: tuple[str, ...] = ()
    lease: Row | None = field(default_factory=lambda: HOLDER)
    lease2: Row | None = field(default_factory=lambda: PAIR2)
    args: dict[str, Any] = field(default_factory=dict)
    caller: str = "sup"
    sessions: tuple[str, ...] = ()
    clock: tuple[tuple[int, float, str | None], ...] = ((0, 0.0, None),)
    expect: Any = None
    login: dict[str, bool] = field(default_factory=dict)
    bindings: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
    ended: tuple[str, ...] = ()
    admin: tuple[str, ...] | None = None
    server: int = 15
    wait: bool = False  # the end call's deadline, driven (`fencecall.run_wait`)
    why: str = ""

    def arguments(self) -> dict[str, Any]:
        return {**ARGS[self.call], **self.args}


S = Scenario


def held(expires: float, renewed: float = -15.0) -> Row:
    return row(HOLDER, renewed_at=renewed, expires_at=expires)


@dataclass(frozen=True)
class CordaScenario:
    """make_takeable (`call` "take", as the holder of `HOLDER` at `epoch`) or look, with
    Corda's rows `rows` (id, machine, seconds before T0 it was refreshed, version) and
    our lease row `lease` (other leases: `others`); `expect` is the answer, `after` the
    Corda rows afterwards when they changed (id -> seconds before T0)."""

    call: str
    rows: tuple[tuple[str, str, float, int], ...] = (("X", "other-host", 1.0, 7),)
    lease: Row | None = field(default_factory=lambda: HOLDER)
    others: tuple[Row, ...] = ()
    epoch: int = 5
    expect: Any = "made_takeable"
    after: dict[str, float] = field(default_factory=dict)
    w: float = W  # Corda's waitInterval
    why: str = ""
