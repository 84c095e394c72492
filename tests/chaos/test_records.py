"""hb_node's record-only mode, `--detach` and chatter, and `RecordTail` following nodes
(also in another PID namespace), as the chaos runner uses them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.chaos.checker import load_jsonl
from tests.chaos.load import LoadMonitor
from tests.chaos.records import OWN_NS, RecordTail
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(60)

HB_NODE = str(Path(__file__).with_name("hb_node.py"))


def hb_argv(records: Path, *args: str) -> list[str]:
    return [sys.executable, HB_NODE, "--host", "h1", "--record", str(records), *args]


def env() -> dict[str, str]:
    e = dict(os.environ, CHAOS_RUN_ID=uuid.uuid4().hex, CORDA_HA_EPOCH="3")
    return e


def test_record_only_never_imports_psycopg(reaper: Reaper, tmp_path: Path) -> None:
    probe = ("import runpy, sys, atexit\n"
             "atexit.register(lambda: print('psycopg' in sys.modules, file=sys.stderr))\n"
             "sys.argv = sys.argv[1:]\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = reaper.popen([sys.executable, "-c", probe, HB_NODE, "--host", "h1", "--record",
                         str(tmp_path), "--crash-after", "0.2"], env=env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=20)
    recs = load_jsonl(tmp_path)
    assert recs and recs[0].kind == "start" and recs[0].epoch == 3
    assert "psycopg" not in err.replace("hb_node crashing", "")  # no import error either
    with pytest.raises(SystemExit):
        from tests.chaos import hb_node
        hb_node.parse_args(["--host", "h1"])  # needs --dsn or --record


def test_detach_beats_in_a_setsid_child_and_forwards_sigterm(reaper: Reaper,
                                                             tmp_path: Path) -> None:
    proc = reaper.popen(hb_argv(tmp_path, "--detach"), env=env(), stdout=subprocess.PIPE,
                        text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("hb_node detached child pid=")
    child = int(line.split("=")[1])
    reaper.track_pid(child)
    wait_until(lambda: (tmp_path / f"{child}.jsonl").exists(), 10, message="child's records")
    assert os.getsid(child) == child != os.getsid(proc.pid)  # its own session
    assert "--detach" not in psutil.Process(child).cmdline()
    assert not (tmp_path / f"{proc.pid}.jsonl").exists()  # the parent does not beat
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not pid_alive(child)
    recs = load_jsonl(tmp_path)
    assert recs[-1].kind == "stop" and {r.pid for r in recs} == {child}


def test_sigusr1_toggles_chatter_without_stopping_the_beats(reaper: Reaper,
                                                            tmp_path: Path) -> None:
    proc = reaper.popen(hb_argv(tmp_path, "--chatter-bytes", "100"), env=env(),
                        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("hb_node started")
    proc.send_signal(signal.SIGUSR1)
    lines = [proc.stdout.readline() for _ in range(20)]
    assert all(len(x) == 100 and x.startswith("c") for x in lines)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.2)  # let the chatter stop; then the pipe stays quiet while it beats
    before = len(load_jsonl(tmp_path))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert len(load_jsonl(tmp_path)) > before
    rest = proc.stdout.read()
    assert rest.count("c" * 99) < 10, "chatter did not stop"


def test_record_tail_follows_a_node(reaper: Reaper, tmp_path: Path) -> None:
    proc = reaper.popen(hb_argv(tmp_path), env=env())
    tail = RecordTail(tmp_path, "h1")

    def running() -> list[int]:
        tail.poll()
        return tail.running(time.monotonic())

    wait_until(lambda: running() == [proc.pid], 10, message="node seen running")
    assert tail.outer_pid(proc.pid) == proc.pid
    proc.kill()
    proc.wait(5)
    wait_until(lambda: running() == [], 5, message="node seen dead")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a PID namespace")
def test_record_tail_follows_a_node_in_another_pid_namespace(reaper: Reaper,
                                                             tmp_path: Path) -> None:
    proc = reaper.popen(["unshare", "--pid", "--fork", "--mount-proc", *hb_argv(tmp_path)],
                        env=env())
    tail = RecordTail(tmp_path, "h1")
    seen: list[int] = []

    def running() -> bool:
        tail.poll()
        seen[:] = tail.running(time.monotonic())
        return bool(seen)

    wait_until(running, 10, message="node in its PID namespace seen running")
    (inner,) = seen
    outer = tail.outer_pid(inner)
    assert outer != inner and "hb_node" in " ".join(psutil.Process(outer).cmdline())
    assert tail.files[inner].ns not in (None, OWN_NS)
    os.kill(outer, signal.SIGKILL)
    wait_until(lambda: not running(), 5, message="node in its PID namespace seen dead")
    proc.wait(5)


def test_load_monitor_measures() -> None:
    with LoadMonitor(spawn_every=0.2) as mon:
        t0 = time.monotonic()
        wait_until(lambda: mon.window(t0, time.monotonic()).samples >= 2, 10,
                   message="two sampler windows")
        fig = mon.window(t0, time.monotonic())
    assert 0 <= fig.sched_p99 <= fig.sched_max
    assert fig.spawn > 0.005
