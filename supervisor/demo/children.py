"""Process hygiene for the demo: every child is marked, isolated and reaped.

Every process the demo starts (PostgreSQL, the supervisors, and through them the
guards and nodes, and the `handover` command) carries ``CORDA_HA_DEMO_RUN=<id>``
in its environment, which its own children inherit; runs in its own session (so
a Ctrl-C in the terminal reaches only the demo, which then stops the others in
order); and gets a signal by PR_SET_PDEATHSIG when the demo process dies (see
`supervisor.demo.pdeathsig`).

`Children.sweep()` SIGKILLs every live process carrying the marker, bounded in
time; the demo calls it last, so nothing it started outlives it. When the demo
itself is started with ``CORDA_HA_DEMO_RUN`` set (the tests do), that value is
the marker, so the caller can check the same thing from outside.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

MARKER_VAR = "CORDA_HA_DEMO_RUN"
_WRAPPER = str(Path(__file__).with_name("pdeathsig.py"))
OWNER_FILE = "owner.pid"  # in a run's temporary directory: the demo's pid


def marked_pids(marker: str, proc_root: str = "/proc") -> list[int]:
    """Live processes (not zombies, not this one) whose initial environment holds
    ``CORDA_HA_DEMO_RUN=<marker>``. Reads /proc once; never raises."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    found = []
    try:
        names = os.listdir(proc_root)
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(os.path.join(proc_root, name, "environ"), "rb") as f:
                environ = f.read()
            with open(os.path.join(proc_root, name, "stat"), "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
            continue
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return sorted(found)


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer exists or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")


class Children:
    """The processes of one demo run. Use from the main thread only: PDEATHSIG fires
    when the *thread* that forked a child ends."""

    def __init__(self) -> None:
        self.marker = os.environ.get(MARKER_VAR) or uuid.uuid4().hex
        self.procs: list[subprocess.Popen[bytes]] = []

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Our environment plus the marker (and `extra`); no systemd notify socket."""
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.update(extra or {})
        env[MARKER_VAR] = self.marker
        return env

    def spawn(self, argv: Sequence[str], *, death_signal: signal.Signals,
              stdout: int | IO[bytes] | None = subprocess.DEVNULL,
              stderr: int | IO[bytes] | None = subprocess.DEVNULL,
              env: Mapping[str, str] | None = None, cwd: str | None = None,
              uid: int | None = None, gid: int | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` in a new session with the marker, as uid/gid when given,
        receiving `death_signal` if the demo dies. Raises OSError if it cannot start."""
        wrapped = [sys.executable, "-I", "-S", _WRAPPER, str(os.getpid()), death_signal.name,
                   "-" if uid is None else str(uid), "-" if gid is None else str(gid), *argv]
        proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, env=self.environment(env), cwd=cwd,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float, *, uid: int | None = None,
            gid: int | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` to completion like `spawn` (death signal SIGKILL), output
        captured; SIGKILLs its process group and raises TimeoutExpired after `timeout`."""
        proc = self.spawn(argv, death_signal=signal.SIGKILL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, uid=uid, gid=gid)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)

    def stop(self, proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> bool:
        """Send `sig`, wait up to `timeout` for the process to exit, then SIGKILL its
        whole process group and reap it. True when it exited within `timeout`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)
        return clean

    def sweep(self, timeout: float = 5.0) -> tuple[list[int], list[int]]:
        """SIGKILL the process groups of the ones we started and every live marked
        process, until none is left or `timeout` passes; reap our own. Returns the
        pids that had to be killed (ideally none) and those still alive at the end
        (none, unless a process is stuck in the kernel)."""
        killed: set[int] = set()
        for proc in self.procs:
            if proc.poll() is None:
                killed.add(proc.pid)
            kill_group(proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs:
                proc.poll()
            left = marked_pids(self.marker)
            if not left or time.monotonic() > deadline:
                return sorted(killed | set(left)), left
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(left)
            time.sleep(0.02)


def remove_stale_dirs(prefix: str, parent: str | None = None) -> list[str]:
    """Remove the temporary directories `parent`/`prefix`* of earlier runs whose
    owner (the pid in their ``owner.pid``) is gone: runs that were SIGKILLed before
    they could clean up. Returns the removed paths; never raises."""
    removed = []
    for path in glob.glob(os.path.join(parent or tempfile.gettempdir(), prefix + "*")):
        try:
            owner = int(Path(path, OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and pid_gone(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def kill_group(pgid: int) -> None:
    """SIGKILL process group `pgid`; nothing if it is empty."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
