"""Shared directories: before every start, and every few seconds on
every host, each must exist and accept a write + fsync + delete within a time limit; a
host that fails does not start its node, does not take the lease and is not ready."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from supervisor.node import shareddirs
from tests.harness.aio import run
from tests.harness.bounds import wait_within
from tests.harness.cluster import Cluster
from tests.harness.config import seconds, supervisor_config
from tests.harness.host import http_get
from tests.harness.loadprobe import LoadWatch
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(90)


def test_probe_reports_each_directory_and_how(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    link = tmp_path / "link"
    link.symlink_to(good)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    problems = shareddirs.probe([str(good), str(link), str(tmp_path / "missing"), str(afile)])
    assert problems == [f"{tmp_path / 'missing'}: does not exist or is not a directory",
                        f"{afile}: does not exist or is not a directory"]
    assert os.listdir(good) == []  # the probe file is gone


def test_a_hung_probe_is_bounded_and_the_next_fails_at_once() -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    def stuck(_dirs: object) -> list[str]:
        threads.append(threading.current_thread())
        release.wait(30)
        return []

    async def main() -> None:
        t0 = time.monotonic()
        problem = await shareddirs.check(["/mnt/x"], 0.3, stuck)
        took = time.monotonic() - t0
        assert problem is not None and "did not finish within 0.3 s" in problem
        assert took < 1.0
        t0 = time.monotonic()
        assert await shareddirs.check(["/mnt/x"], 5.0, stuck) is not None  # still hung
        assert time.monotonic() - t0 < 0.5
        release.set()
        threads[0].join(5)  # leaves no hung probe behind for a later test in this worker
        assert not threads[0].is_alive()

    run(main())


def shared(path: Path) -> str:
    return supervisor_config(node={"sharedDirectories": [str(path)],
                                   "sharedProbeTimeout": seconds(2)})


def test_a_standby_without_its_shared_directory_never_takes_the_lease(
        pair: Cluster, tmp_path: Path, load: LoadWatch) -> None:
    a_dir, b_dir = tmp_path / "shared-a", tmp_path / "shared-b"
    a_dir.mkdir()
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", extra_conf=shared(a_dir))
        b = pair.add("b", extra_conf=shared(b_dir))  # missing on b
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        failed = b.wait_event("shared_dirs_failed", 15)
        assert str(b_dir) in failed["problem"] and "does not exist" in failed["problem"]
        assert http_get(b.health_port(), "/readiness")[0] == 503
        a.signal(signal.SIGKILL)
        time.sleep(2.5 * 2.0)  # an observation window of 2.5 W: b must take nothing
        assert not b.events("lease_acquired") and not b.live_nodes()
        b_dir.mkdir()
        b.wait_event("shared_dirs_ok", 15)
        b.wait_event("lease_acquired", 10)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=5.0, what="b's node")
    watch.assert_never_two()


def test_a_holder_whose_shared_directory_fails_does_not_start_and_gives_the_lease_up(
        pair: Cluster, tmp_path: Path, load: LoadWatch) -> None:
    a_dir, b_dir = tmp_path / "shared-a", tmp_path / "shared-b"
    a_dir.mkdir()
    b_dir.mkdir()
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", extra_conf=shared(a_dir))
        b = pair.add("b", extra_conf=shared(b_dir))
        watch.hosts = pair.hosts
        a.start()
        node = a.wait_node_up(15)
        b.start()
        b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
        shutil.rmtree(a_dir)
        os.kill(node, signal.SIGKILL)  # a crash: the restart needs the shared directory
        refused = a.wait_event("node_start_refused", 10, match=lambda e: "shared directories"
                               in str(e.get("reason")))
        assert str(a_dir) in refused["reason"]
        a.wait_event("lease_released", 20)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=10.0, what="b's node")
        assert len(a.events("node_started")) == 1  # never started again without it
    watch.assert_never_two()
