"""The timing rule (docs/design.md, "The timing rule"): derived intervals, pure arithmetic.

Let `t` be the local time (`supervisor.clock`: CLOCK_BOOTTIME, which counts a
suspend) at which the last successful renewal (or the acquisition) was *sent*.
Nobody else may take the lease before `t + W`.

- `t + W - M` (**kill**): the node's whole process group / cgroup is SIGKILLed.
  This is the safety deadline; nothing ever moves it later.
- `t + W - M - G` (**term**): a node whose lease is being lost gets SIGTERM, with
  the grace `G = min(S, W - M - U - R)`. `R` (the renewal allowance) is the time
  a renewal sent at `t + U` may take before the stop has to begin:
  `R = min(operationTimeout, (W - M - U) / 2)`. So in steady state, with every
  renewal answered within `R`, the term deadline is never reached, whatever S is.
- Planned stops (shutdown, handover) give the full `S`: the holder keeps renewing
  while its node stops; only if renewals fail meanwhile does the kill deadline
  cut the grace short.

`W - M - U` must leave room for one renewal attempt (`MIN_RENEWAL_WINDOW`), else
the configuration is refused (see `supervisor.config`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The least `W - M - U` we accept: time for one renewal round trip after it is due.
MIN_RENEWAL_WINDOW = 0.1


@dataclass(frozen=True)
class StopGraces:
    """Derived from U, W, M, S and the operation timeout, all in seconds."""

    renewal_window: float  # W - M - U: how late the renewal due at t + U may be answered
    renewal_allowance: float  # R
    loss_grace: float  # G: SIGTERM -> SIGKILL for a node whose lease is being lost
    planned_grace: float  # S: SIGTERM -> SIGKILL for a planned stop (renewals go on)
    term_after: float  # W - M - G: SIGTERM this long after the last renewal was sent
    kill_after: float  # W - M: SIGKILL this long after the last renewal was sent


@dataclass(frozen=True)
class Pace:
    """How often the core acts, derived from U, W and the operation timeout (seconds):
    the one place these formulas live."""

    poll_interval: float  # a standby reads the row: min(U/2, W/4), at least 50 ms
    retry_interval: float  # pause after a failed call: min(U/4, 1 s), at least 50 ms
    renew_hedge: float  # a renewal without an answer this long is raced on a fresh
    #                     connection: min(operationTimeout, U/8), at least 20 ms
    renew_retry: float  # pause after a failed renewal: min(U/20, 250 ms), at least 10 ms
    handover_cooldown: float  # a host that handed over sits out 2 W


def pace(update_interval: float, wait_interval: float, operation_timeout: float) -> Pace:
    """See `Pace`."""
    u, w = update_interval, wait_interval
    return Pace(poll_interval=max(0.05, min(u / 2, w / 4)),
                retry_interval=max(0.05, min(u / 4, 1.0)),
                renew_hedge=max(0.02, min(operation_timeout, u / 8)),
                renew_retry=max(0.01, min(u / 20, 0.25)),
                handover_cooldown=2 * w)


def stop_graces(update_interval: float, wait_interval: float, margin: float,
                stop_timeout: float, operation_timeout: float) -> StopGraces:
    """The timing rule's intervals. Never raises; validation is the caller's job
    (`renewal_window < MIN_RENEWAL_WINDOW` means no renewal could ever fit)."""
    window = wait_interval - margin - update_interval
    allowance = max(0.0, min(operation_timeout, window / 2))
    grace = max(0.0, min(stop_timeout, window - allowance))
    kill_after = wait_interval - margin
    return StopGraces(renewal_window=window, renewal_allowance=allowance, loss_grace=grace,
                      planned_grace=stop_timeout, term_after=kill_after - grace,
                      kill_after=kill_after)
