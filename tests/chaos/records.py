"""Reading the stand-in nodes' heartbeat files while a chaos run goes on.

`RecordTail(directory, host)` reads the `<pid>.jsonl` files that
tests/chaos/hb_node.py writes into one host's record directory, incrementally
(`poll()`), and answers which nodes run now (`running(now)`: beat within `FRESH`
seconds and the process is alive).

Which process a file belongs to: `pid` in a record is the node's pid in its own
PID namespace, `ns` that namespace's inode. For a node in our namespace the pid
is ours. For a node in another one (a supervisor started under `unshare --pid`),
the process is found once by a /proc scan (a stand-in node naming this record
directory whose innermost `NSpid` is `pid` and whose namespace inode is `ns`) and
then followed by its pid as we see it. A process that cannot be found is dead.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos import checker
from tests.chaos.checker import Record
from tests.harness.proc import pid_alive

FRESH = 0.25  # a node is running when its last record is younger than this
OWN_NS: int | None
try:
    OWN_NS = os.stat("/proc/self/ns/pid").st_ino
except OSError:  # pragma: no cover - no /proc
    OWN_NS = None


@dataclass
class _File:
    offset: int = 0
    partial: bytes = b""
    last_mono: float = -math.inf
    last_kind: str = ""
    done: bool = False
    checked: float = 0.0
    ns: int | None = None  # PID namespace of the writer, from its records
    outer: int | None = None  # its pid as we see it (resolved for another namespace)


def _ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def find_outer_pid(directory: Path, inner: int, ns: int) -> int | None:
    """Our pid of the stand-in node writing into `directory` with pid `inner` in the
    PID namespace `ns`, or None."""
    want = os.fsencode(str(directory))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or _ns_inode(int(entry.name)) != ns:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/status") as f:
                nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if want in argv and nspid and int(nspid[-1]) == inner:
            return int(entry.name)
    return None


class RecordTail:
    """Reads the `<pid>.jsonl` files hb_node writes in one directory, incrementally."""

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        self.files: dict[int, _File] = {}
        self.records: list[Record] = []
        self.lock = threading.Lock()

    def _alive(self, pid: int, f: _File) -> bool:
        if f.ns is None or f.ns == OWN_NS:
            return pid_alive(pid)
        if f.outer is None:
            f.outer = find_outer_pid(self.directory, pid, f.ns)
            if f.outer is None:
                return False
        return pid_alive(f.outer)

    def outer_pid(self, pid: int) -> int:
        """Our pid of the node that wrote `<pid>.jsonl` (pid itself in our namespace)."""
        with self.lock:
            f = self.files.get(pid)
            if f is None or f.ns is None or f.ns == OWN_NS:
                return pid
            if f.outer is None:
                f.outer = find_outer_pid(self.directory, pid, f.ns)
            return pid if f.outer is None else f.outer

    def poll(self) -> None:
        now = time.monotonic()
        with self.lock:
            try:
                entries = list(os.scandir(self.directory))
            except FileNotFoundError:
                return
            for entry in entries:
                if not entry.name.endswith(".jsonl"):
                    continue
                try:
                    pid = int(entry.name[:-6])
                except ValueError:
                    continue
                f = self.files.setdefault(pid, _File())
                if f.done and now - f.checked < 1.0:
                    continue
                f.checked = now
                self._read(entry.path, f)
                if not f.done and (f.last_kind == "stop" or not self._alive(pid, f)):
                    self._read(entry.path, f)  # whatever it wrote before dying
                    f.done = True
                elif f.done and f.last_kind != "stop" and self._reused(pid, f):
                    f.done = False  # pid reused by a new node

    def _reused(self, pid: int, f: _File) -> bool:
        if f.ns is not None and f.ns != OWN_NS:
            f.outer = None  # a new process: resolve again
        return self._alive(pid, f)

    def _read(self, path: str, f: _File) -> None:
        try:
            with open(path, "rb") as fh:
                fh.seek(f.offset)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        f.offset += len(data)
        data = f.partial + data
        lines = data.split(b"\n")
        f.partial = lines.pop()
        for line in lines:
            try:
                raw = json.loads(line)
                rec = checker.record_from_mapping(raw)
            except (ValueError, KeyError, TypeError):
                continue
            ns = raw.get("ns")
            if isinstance(ns, int) and ns != f.ns:
                f.ns, f.outer = ns, None
            self.records.append(rec)
            if rec.mono >= f.last_mono:
                f.last_mono, f.last_kind = rec.mono, rec.kind

    def running(self, now: float) -> list[int]:
        """Pids (as the nodes see them) whose node beat within FRESH seconds and is alive."""
        with self.lock:
            return [pid for pid, f in self.files.items()
                    if not f.done and f.last_kind != "stop" and now - f.last_mono < FRESH
                    and self._alive(pid, f)]

    def between(self, a: float, b: float) -> list[Record]:
        with self.lock:
            return [r for r in self.records if a <= r.mono <= b]

    def prune(self, before: float) -> None:
        with self.lock:
            self.records = [r for r in self.records if r.mono >= before]
