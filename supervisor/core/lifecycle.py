"""Rules for the node's life: started, exited (expected or a crash), crash backoff and
crash loop, shutdown of the supervisor."""

from __future__ import annotations

from supervisor.core.base import _Base
from supervisor.core.messages import NodeExited
from supervisor.core.state import (
    NodePhase,
    backoff_delay,
)
from supervisor.core.transitions import State, change


class NodeRules(_Base):
    """What happens when the node starts, exits or crashes, and on shutdown."""

    def on_node_started(self, pid: int) -> None:
        s = self.s
        if s.node.phase is NodePhase.STARTING:
            s.node.phase = NodePhase.RUNNING
        s.node.pid = pid
        self.log("node_started", pid=pid, epoch=s.lease.epoch)
        if self.t.ready_timeout is None:
            s.node.ready = True
        else:
            s.node.ready = False
            s.node.ready_deadline = self.now + self.t.ready_timeout

    def on_node_ready(self, pid: int) -> None:
        s = self.s
        if s.node.phase is NodePhase.NONE or pid != s.node.pid or s.node.ready:
            return
        s.node.ready = True
        s.node.ready_deadline = None
        self.log("node_ready", pid=pid, epoch=s.lease.epoch)

    def check_readiness(self) -> None:
        """A node that did not become ready within startTimeout is a failed start."""
        s = self.s
        if (s.node.ready_deadline is None or self.now < s.node.ready_deadline or s.node.ready
                or s.node.phase is NodePhase.NONE or s.node.stop_sent):
            return
        s.node.ready_deadline = None
        self.log("node_not_ready", "error", pid=s.node.pid, epoch=s.lease.epoch,
                 start_timeout=self.t.ready_timeout)
        s.node.kill_is_crash = True
        self.kill_node("not_ready")

    def on_node_exited(self, ev: NodeExited) -> None:
        s = self.s
        if s.node.phase is NodePhase.NONE:
            return
        expected = s.node.stop_sent and not s.node.kill_is_crash
        self.log("node_exited", "info" if expected else "error", pid=s.node.pid,
                 exit_code=ev.returncode, signal=ev.signal, runtime=round(ev.runtime, 3),
                 killed_by=ev.killed_by, expected=expected, epoch=s.lease.epoch)
        self.run_over(expected, ev.runtime)

    def on_node_start_refused(self, reason: str) -> None:
        """A check before the start failed: no node ran (a failed start, unless a stop
        was asked for meanwhile)."""
        s = self.s
        if s.node.phase is NodePhase.NONE:
            return
        expected = s.node.stop_sent and not s.node.kill_is_crash
        self.log("node_start_refused", "info" if expected else "error", reason=reason,
                 expected=expected, epoch=s.lease.epoch)
        self.run_over(expected, 0.0)

    def run_over(self, expected: bool, runtime: float) -> None:
        """The node's run is over (its last process gone, or it never started)."""
        s = self.s
        s.node.phase = NodePhase.NONE
        s.node.pid = None
        s.node.stop_sent = False
        s.node.kill_sent = False
        s.node.kill_is_crash = False
        s.node.ready = False
        s.node.ready_deadline = None
        if s.shutting_down:
            s.after_stop = "exit"
            change(s, State.STOPPING)
            self.give_up_lease()
            return
        if expected:
            self.give_up_lease()
            if s.lease.release_epoch is None:
                self.after_release()
            return
        self.on_crash(runtime)

    def on_crash(self, runtime: float) -> None:
        s = self.s
        if s.paused and s.lease_enabled:
            # maintenance: leave it down; `resume` restarts it
            s.crashes.restart_when_resumed = True
            change(s, State.PAUSED)
            self.log("node_not_restarted_while_paused", "warning", epoch=s.lease.epoch)
            return
        if runtime >= self.t.reset_after:
            s.crashes.consecutive = 0
        s.crashes.consecutive += 1
        s.crashes.times = tuple(t for t in s.crashes.times if self.now - t < self.t.crash_window)
        s.crashes.times += (self.now,)
        if len(s.crashes.times) >= self.t.max_crashes:
            self.log("crash_loop", "error", crashes=len(s.crashes.times),
                     window=self.t.crash_window, epoch=s.lease.epoch)
            s.crashes.times = ()
            s.crashes.consecutive = 0
            if s.lease_enabled:
                s.after_stop = "cooldown_crash"
                change(s, State.STOPPING)
                self.give_up_lease()
                if s.lease.release_epoch is None:
                    self.after_release()
            else:
                self.enter_cooldown(self.t.crash_cooldown)
            return
        delay = backoff_delay(s.crashes.consecutive, self.t)
        s.crashes.restart_at = self.now + delay
        change(s, State.BACKOFF)
        self.log("node_restart_scheduled", delay=round(delay, 3), crashes=s.crashes.consecutive,
                 epoch=s.lease.epoch)

    def on_shutdown(self, signal: str) -> None:
        s = self.s
        if s.shutting_down:
            self.kill_node("second_shutdown_request")
            return
        s.shutting_down = True
        self.log("shutdown_requested", signal=signal, epoch=s.lease.epoch)
        s.crashes.restart_at = None
        s.cooldown_until = None
        s.after_stop = "exit"
        if s.node.phase is not NodePhase.NONE:
            change(s, State.STOPPING)
            self.stop_node("shutdown", self.planned_grace())
        else:
            change(s, State.STOPPING)
            self.give_up_lease()
