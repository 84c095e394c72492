"""`corda-ha-supervisor demo [--duration SECONDS]`: see it fail over, with nothing set up.

Starts a throwaway PostgreSQL (`supervisor.demo.postgres`), two supervisors
``host-a`` and ``host-b`` on this machine with the stand-in node
(`supervisor.demo.node`) and short timings (U = 0.5 s, W = 2 s), and walks
through a tour: start; kill -9 of the active supervisor (failover); a graceful
``handover``; a node crash and its restart. It prints a live timeline of both
hosts from their JSON logs and, at the end, the measured times.

Ends when `duration` seconds have passed (None: after Ctrl-C), on SIGINT
(Ctrl-C) or SIGTERM, at any point, and returns 0. It then stops the supervisors
(SIGTERM, SIGKILL after a bound), PostgreSQL, and SIGKILLs whatever process it
started that is still alive (`Children.sweep`), and removes its temporary
directory. Returns 69 when there are no PostgreSQL binaries to run (the message
says what to pip install) or the server cannot start, 1 when a step of the tour
did not happen in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO, Any

import supervisor
from supervisor.demo.children import OWNER_FILE, Children, pid_gone, remove_stale_dirs
from supervisor.demo.postgres import (
    DemoPostgres,
    MissingPostgres,
    PostgresFailed,
    find_binaries,
    free_port,
)
from supervisor.demo.report import Figures
from supervisor.demo.timeline import Timeline

EX_UNAVAILABLE = 69
U_S, W_S, STOP_S, BACKOFF_S = 0.5, 2.0, 2.0, 0.5
STEP_TIMEOUT = 30.0  # any one step of the tour
PAUSE = 1.5  # steady time between steps, to read the timeline
HOLD = 0.05  # lines wait this long so that near-simultaneous ones print in log order
NODE = str(Path(__file__).with_name("node.py"))
HOSTS = ("host-a", "host-b")
TMP_PREFIX = "corda-ha-demo-"


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


class TimeUp(Exception):
    """--duration has passed."""


class StepFailed(Exception):
    """A step of the tour did not happen in time."""


class Host:
    """One supervisor: its directory, config and (current) process."""

    def __init__(self, name: str, root: Path, dsn: str) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.config = self.dir / "supervisor.conf"
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(f"""# written by `corda-ha-supervisor demo`
mutualExclusionConfiguration {{
  on = true
  machineName = "{name}"
  updateInterval = {int(U_S * 1000)}ms
  waitInterval = {int(W_S * 1000)}ms
}}
database {{
  url = {json.dumps(dsn)}
  leaseName = "demo"
  connectTimeout = 2s
  operationTimeout = 400ms
}}
node {{
  command = {json.dumps([sys.executable, NODE])}
  workingDirectory = {json.dumps(str(self.dir))}
  stopTimeout = {int(STOP_S * 1000)}ms
  cgroup = off
}}
restart {{
  initialDelay = {int(BACKOFF_S * 1000)}ms
  maxCrashes = 5
  window = 60s
  cooldown = 10s
}}
health {{
  host = "127.0.0.1"
  port = {self.health_port}
}}
logging {{
  format = json
  level = INFO
}}
""")

    def status(self) -> dict[str, Any] | None:
        """Its /status, or None (not answering). Bounded by 1 s."""
        try:
            url = f"http://127.0.0.1:{self.health_port}/status"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None


class Demo:
    """One run of the tour. `run()` once, from the main thread."""

    def __init__(self, duration: float | None, prefer: str, out: IO[str]) -> None:
        self.duration = duration
        self.prefer = prefer
        self.out = out
        self.timeline = Timeline()
        self.children = Children()
        self.lines: queue.Queue[tuple[str, bytes | None, float]] = queue.Queue()
        self.held: list[tuple[float, float, str, dict[str, Any]]] = []
        self.hosts: dict[str, Host] = {}
        self.figures = Figures(u=U_S, w=W_S, backoff=BACKOFF_S)
        self.watch_node: tuple[str, int, float] | None = None  # host, pid, killed at
        self.cleaning = False
        self.out_closed = False
        self.ended: set[str] = set()  # sources whose output has reached EOF
        self.handover_written: float | None = None  # the `handover` command said it asked
        self.tmp: Path | None = None
        self.postgres: DemoPostgres | None = None

    # -- output and events ---------------------------------------------------------------

    def say(self, text: str = "") -> None:
        """Print a line; once the reader has gone (`demo | head`), print nothing more
        and let the run go on to its clean end."""
        if self.out_closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):
            self.out_closed = True
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())

    def note(self, text: str) -> None:
        self._flush(time.time())
        self.say(self.timeline.note(text))

    def header(self, text: str) -> None:
        self._flush(time.time())
        self.say(f"\n  == {text}")

    def _read(self, source: str, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.put((source, line, time.time()))
        self.lines.put((source, None, time.time()))

    def follow(self, source: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(source, proc.stdout), daemon=True).start()

    def pump(self, seconds: float, *, deadline: bool = True) -> None:
        """Print what arrives for `seconds`. Raises TimeUp at the end of --duration
        (unless `deadline` is false)."""
        until = time.monotonic() + seconds
        while True:
            self._check_node_gone()
            self._flush(time.time() - HOLD)
            if deadline and self.duration is not None and self.timeline.now() >= self.duration:
                raise TimeUp
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                source, raw, arrived = self.lines.get(timeout=min(left, 0.02))
            except queue.Empty:
                continue
            if raw is None:
                self.ended.add(source)
                continue
            text = raw.decode(errors="replace").rstrip()
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                record = {"raw": text}
            self.held.append((self.timeline.at(record) if "raw" not in record
                              else arrived - self.timeline.started, arrived, source, record))

    def _flush(self, before: float) -> None:
        ready = sorted((h for h in self.held if h[1] <= before), key=lambda h: h[0])
        self.held = [h for h in self.held if h[1] > before]
        for _, _, source, record in ready:
            if source == "cli":
                if "raw" in record:
                    t = self.timeline.at(record)
                    if str(record["raw"]).startswith("handover requested"):
                        self.handover_written = t
                    self.say(self.timeline.line(t, "cli", str(record["raw"])))
                continue
            for line in self.timeline.feed(source, record):
                self.say(line)

    def wait_for(self, what: str, done: Any, timeout: float = STEP_TIMEOUT) -> None:
        """Pump until `done()` is true; StepFailed after `timeout`."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise StepFailed(f"{what}: did not happen within {timeout:g} s")
            self.pump(0.02)

    def _check_node_gone(self) -> None:
        if self.watch_node is None:
            return
        name, pid, killed_at = self.watch_node
        if pid_gone(pid):
            self.watch_node = None
            t = self.timeline.now()
            self.figures.old_node_gone = t - killed_at
            self.timeline.node_gone(name)
            self.say(self.timeline.line(t, name, f"node down (pid {pid}): killed by its guard "
                                                 f"{t - killed_at:.3f} s after the kill -9"))

    # -- processes ----------------------------------------------------------------------

    @staticmethod
    def child_env() -> dict[str, str]:
        """PYTHONPATH such that `python -m supervisor` finds this very package, also
        when it runs from a source tree rather than an installation."""
        here = str(Path(supervisor.__file__).resolve().parent.parent)
        return {"PYTHONPATH": os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p)}

    def start_supervisor(self, host: Host) -> None:
        self.ended.discard(host.name)
        host.proc = self.children.spawn(
            [sys.executable, "-m", "supervisor", "run", "--config", str(host.config)],
            death_signal=signal.SIGTERM, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self.child_env(), cwd=str(host.dir))
        self.follow(host.name, host.proc)

    def node_up(self, name: str, other_than: int | None = None) -> bool:
        pid = self.timeline.host(name).node_pid
        return pid is not None and pid != other_than

    def holder(self) -> Host:
        name = self.timeline.holder
        if name is None or self.timeline.host(name).node_pid is None:
            raise StepFailed("no host holds the lease with its node up")
        return self.hosts[name]

    def other(self, host: Host) -> Host:
        return next(h for h in self.hosts.values() if h is not host)

    # -- the tour -----------------------------------------------------------------------

    def tour(self) -> None:
        """The four steps, each ended by a steady pair: start, failover (the first holder
        killed, the other takes over), handover (back to the first), node crash."""
        self.start_step()
        first = self.holder()
        second = self.other(first)
        self.failover_step(first, second)
        self.handover_step(second, first)
        self.crash_step(first)
        self.figures.tour_complete = True

    def start_step(self) -> None:
        """1. Both supervisors started; the first holder's node up."""
        self.header("1. start: both supervisors contend for one lease; the holder runs the node")
        started = self.timeline.now()
        for host in self.hosts.values():
            self.start_supervisor(host)
        self.wait_for("a first host takes the lease and starts its node",
                      lambda: any(self.node_up(n) for n in self.hosts))
        self.figures.first_start = self.timeline.now() - started
        self.steady()

    def failover_step(self, active: Host, standby: Host) -> None:
        """2. kill -9 of `active`'s supervisor; `standby` takes over; `active` restarted."""
        assert active.proc is not None
        self.header(f"2. failover: kill -9 of the active supervisor ({active.name}); its "
                    f"guard kills the node;\n       {standby.name} takes over once the lease "
                    f"is W = {W_S:g} s old")
        node_pid = self.timeline.host(active.name).node_pid
        killed_at = self.timeline.now()
        os.kill(active.proc.pid, signal.SIGKILL)
        active.proc.wait()
        self.note(f"kill -9 {active.proc.pid} ({active.name}'s supervisor)")
        self.timeline.supervisor_killed(active.name)
        if node_pid is not None:
            self.watch_node = (active.name, node_pid, killed_at)
        self.wait_for(f"{standby.name} takes over", lambda: self.node_up(standby.name))
        self.figures.failover = self.up_at(standby) - killed_at
        self.say(f"{'':17}-> failover: {standby.name}'s node up {self.figures.failover:.2f} s "
                 f"after the kill -9 (W = {W_S:g} s)")
        self.note(f"restarting {active.name}'s supervisor: it comes back as the standby")
        self.start_supervisor(active)
        self.wait_for(f"{active.name} is a standby that could take over",
                      lambda: self.could_take_over(active), timeout=STEP_TIMEOUT)
        self.note(f"{active.name}'s /status: standby, could take over now")
        self.steady()

    def handover_step(self, active: Host, standby: Host) -> None:
        """3. `handover` asked of `active`; `standby` takes the lease at once."""
        self.header(f"3. graceful handover: {active.name} releases the lease on request; "
                    f"{standby.name} takes it at once\n       $ corda-ha-supervisor handover "
                    f"--config {active.config}")
        before = self.timeline.host(standby.name).node_pid
        requested_at = self.timeline.now()
        cli = self.children.spawn(
            [sys.executable, "-m", "supervisor", "handover", "--config", str(active.config)],
            death_signal=signal.SIGKILL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self.child_env(), cwd=str(self.tmp))
        self.follow("cli", cli)
        self.wait_for(f"{standby.name} takes over after the handover",
                      lambda: self.node_up(standby.name, before))
        self.wait_for("the handover command exits", lambda: cli.poll() is not None)
        self.drain("cli")
        asked = self.handover_written if self.handover_written is not None else requested_at
        self.figures.handover = self.up_at(standby) - asked
        self.say(f"{'':17}-> handover: {standby.name}'s node up {self.figures.handover:.2f} s "
                 f"after the request (no waiting for W)")
        self.steady()

    def crash_step(self, active: Host) -> None:
        """4. The node on `active` crashes; its supervisor restarts it."""
        crashed = self.timeline.host(active.name).node_pid
        assert crashed is not None
        self.header(f"4. node crash: the node on {active.name} exits 3; its supervisor "
                    f"restarts it after {BACKOFF_S:g} s,\n       same host, same epoch")
        crashed_at = self.timeline.now()
        os.kill(crashed, signal.SIGUSR1)
        self.note(f"kill -USR1 {crashed} (tells the stand-in node to crash)")
        self.wait_for(f"{active.name} restarts its node",
                      lambda: self.node_up(active.name, crashed))
        self.figures.crash_restart = self.up_at(active) - crashed_at
        self.say(f"{'':17}-> restart: node up again {self.figures.crash_restart:.2f} s after "
                 f"the crash (backoff {BACKOFF_S:g} s)")
        self.steady()

    def up_at(self, host: Host) -> float:
        at = self.timeline.host(host.name).node_up_at
        return self.timeline.now() if at is None else at

    def could_take_over(self, host: Host) -> bool:
        status = host.status()
        return bool(status and status.get("state") == "standby" and status.get("can_take_over"))

    def steady(self) -> None:
        self.pump(PAUSE)
        self._flush(time.time())  # before the summary is taken
        self.note(f"now: {self.timeline.summary()}")

    # -- run and clean up ---------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.cleaning:
            raise Interrupted(signal.Signals(signum).name)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            try:
                binaries = find_binaries(self.prefer)
            except MissingPostgres as e:
                print(f"corda-ha-supervisor demo: {e}", file=sys.stderr)
                return EX_UNAVAILABLE
            remove_stale_dirs(TMP_PREFIX)
            self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
            (self.tmp / OWNER_FILE).write_text(f"{os.getpid()}\n")
            until = f"ends after {self.duration:g} s or on Ctrl-C" if self.duration is not None \
                else "press Ctrl-C to end it"
            self.say("corda-ha-supervisor demo: two supervisors, one lease in PostgreSQL, one "
                     "stand-in node that must run on exactly one host")
            self.say(f"  U (updateInterval) = {U_S:g} s, W (waitInterval) = {W_S:g} s; "
                     f"files in {self.tmp}; {until}")
            self.note(f"starting PostgreSQL ({binaries.source}, {binaries.bindir})")
            self.postgres = DemoPostgres(binaries, self.tmp, self.children)
            try:
                self.postgres.start()
            except PostgresFailed as e:
                print(f"corda-ha-supervisor demo: PostgreSQL did not start: {e}",
                      file=sys.stderr)
                return EX_UNAVAILABLE
            assert self.postgres.proc is not None
            self.note(f"PostgreSQL up on 127.0.0.1:{self.postgres.port} "
                      f"(pid {self.postgres.proc.pid})")
            self.hosts = {n: Host(n, self.tmp, self.postgres.dsn) for n in HOSTS}
            self.tour()
            self.header("tour complete; both hosts keep running. In another terminal try:")
            for host in self.hosts.values():
                self.say(f"       corda-ha-supervisor status --config {host.config}")
            while True:
                self.pump(3600.0)
        except TimeUp:
            self.say("")
            self.note(f"--duration {self.duration:g} s reached: stopping everything")
        except Interrupted as e:
            self.say("")
            self.note(f"{'Ctrl-C' if str(e) == 'SIGINT' else str(e)}: stopping everything")
        except StepFailed as e:
            self.say("")
            self.note(f"the tour failed: {e}; stopping everything")
            code = 1
        finally:
            self.cleaning = True
            self.cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.say(self.figures.render())
        return code

    def cleanup(self) -> None:
        """Stop everything this run started, in order; bounded; never raises."""
        if self.tmp is None:
            return
        try:
            # The standby first, then the holder: no failover on the way out.
            for host in sorted(self.hosts.values(), key=lambda h: h.name == self.timeline.holder):
                if host.proc is None or host.proc.poll() is not None:
                    continue
                if not self.children.stop(host.proc, signal.SIGTERM, STOP_S + 8.0):
                    self.figures.problems.append(f"{host.name}'s supervisor did not stop "
                                                 f"in time: killed")
                self.drain(host.name)
            if self.postgres is not None and not self.postgres.stop():
                self.figures.problems.append("PostgreSQL did not stop in time: killed")
            if self.postgres is not None and self.postgres.proc is not None:
                self.note("PostgreSQL stopped")
        finally:
            self.figures.killed, self.figures.left = self.children.sweep()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.figures.removed = None if self.tmp.exists() else str(self.tmp)

    def drain(self, source: str, timeout: float = 2.0) -> None:
        """Print `source`'s remaining output (it has exited), up to `timeout`."""
        deadline = time.monotonic() + timeout
        while source not in self.ended and time.monotonic() < deadline:
            self.pump(0.02, deadline=False)
        self.pump(HOLD * 2, deadline=False)


def run_demo(duration: float | None, prefer: str = "auto", out: IO[str] | None = None) -> int:
    """The `demo` command (see the module docstring). Returns the exit status."""
    return Demo(duration, prefer, out or sys.stdout).run()
