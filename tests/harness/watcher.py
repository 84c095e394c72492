"""The overlap watcher: never two nodes at once, checked two independent ways while an
end-to-end test runs (see `Watcher`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.harness.host import Host
from tests.harness.paths import REPO
from tests.harness.proc import wait_until


class Watcher:
    """Watches every host's nodes; `assert_never_two` fails on any overlap.

    Two independent checks:

    - a sampling process (tests/harness/watcher_proc.py: its own process, SCHED_FIFO where
      allowed) scans /proc every `interval` s and reports any sample with more than
      one live node, counting a node from its exec. Two samples further apart than
      `max_gap` (a stall: the sampler waited, e.g. for a process's memory-map lock to
      read its command line) fail the test when the nodes changed across it (the
      nodes seen on either side differ, or a node's record was written during it: a
      start or a graceful stop) with two or more nodes involved in all: the order of
      those events, an overlap, could have gone unseen. A stall with the same nodes
      on both sides and no record written (none, or one node running on) hid nothing
      the sampler could have seen: it is counted (`stalls`), not failed;
    - exact: every stand-in node holds the cluster's lock file (`--lock`) while it
      lives, and records it when another node holds it already.

    `hosts` may be replaced or appended to while it runs (checked every 10 ms).
    """

    def __init__(self, hosts: list[Host], interval: float = 0.005,
                 max_gap: float = 0.1) -> None:
        self.hosts = hosts
        self.interval = interval
        self.max_gap = max_gap
        self.overlaps: list[tuple[float, dict[str, list[int]]]] = []
        self.samples = 0
        self.longest_gap = 0.0
        # (seconds, nodes before, nodes after, nodes whose record was written meanwhile)
        self.stalls: list[tuple[float, list[str], list[str], list[str]]] = []
        self.realtime = False
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def __enter__(self) -> Watcher:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.watcher_proc", str(self.interval),
             str(self.max_gap)], cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._send()
        self._reader.start()
        self._feeder.start()
        wait_until(lambda: self.samples > 0 or self._proc is None or self._proc.poll() is not None,
                   10, message="the watcher's first sample")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._feeder.join(5)
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._reader.join(5)

    def _dirs(self) -> dict[str, str]:
        return {h.name: str(h.records) for h in list(self.hosts)}

    def _send(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps(self._dirs()) + "\n")
            proc.stdin.flush()

    def _feed(self) -> None:
        sent = self._dirs()
        while not self._stop.wait(0.01):
            now = self._dirs()
            if now != sent:
                self._send()
                sent = now

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if "overlap" in msg:
                    self.overlaps.append((float(msg["overlap"]), msg["alive"]))
                elif "stall" in msg:
                    self.stalls.append((float(msg["stall"]), msg["before"], msg["after"],
                                        msg["touched"]))
                else:
                    self.samples = int(msg["samples"])
                    self.longest_gap = float(msg["max_gap"])
                    self.realtime = bool(msg["rt"])

    def exact_overlaps(self) -> list[str]:
        """Lines the nodes wrote when they found another node holding the lock."""
        found: list[str] = []
        for lock in {h.lock_path for h in list(self.hosts)}:
            with contextlib.suppress(FileNotFoundError):
                found += Path(f"{lock}.overlaps").read_text().splitlines()
        return found

    def assert_never_two(self) -> None:
        exact = self.exact_overlaps()
        assert not exact, f"two nodes ran at once (node lock): {exact[:3]}"
        assert self.samples > 0, "the watcher never sampled"
        assert not self.overlaps, f"two nodes ran at once: {self.overlaps[:3]}"
        blind = self.blind_stalls()
        assert not blind, (
            f"the watcher stalled while the nodes changed (limit {self.max_gap} s, "
            f"realtime={self.realtime}): an overlap could have gone unseen: "
            + "; ".join(f"{s:.3f} s, {before} -> {after}, records written: {touched}"
                        for s, before, after, touched in blind[:3]))

    def blind_stalls(self) -> list[tuple[float, list[str], list[str], list[str]]]:
        """The stalls across which the nodes changed (see the class docstring)."""
        return [(s, before, after, touched) for s, before, after, touched in self.stalls
                if (before != after or touched)
                and len(set(before) | set(after) | set(touched)) >= 2]
