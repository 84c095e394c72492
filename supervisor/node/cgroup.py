"""cgroup v2: one child cgroup per node run, killed as a whole (stdlib only).

A process group does not hold a node: a wrapper script's children may leave it
and anything can call ``setsid``. A cgroup does: every descendant of a process
stays in its cgroup unless moved out explicitly, and ``cgroup.kill`` SIGKILLs
all of them at once (kernel >= 5.14; older kernels: SIGKILL every pid in
``cgroup.procs``, repeated until it is empty).

Layout: each node run gets ``<parent>/corda-ha-node-<key>-<run id>``, where
``key`` identifies one node on one machine (see `supervisor.node.node_key`), so a
sweep finds what earlier runs of *this* node left behind and nothing else, even
when several supervisors share one parent. ``parent`` is by default the
supervisor's own cgroup (under systemd this needs ``Delegate=yes``).

Everything here is a plain, blocking system call on cgroupfs (an in-kernel file
system: no I/O, it does not hang like a network mount). Errors are `OSError`
unless a docstring says otherwise. The guard imports this module: keep it
small and free of third-party imports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import uuid

PREFIX = "corda-ha-node-"
_POLL_S = 0.005


def mount_point(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str] | None:
    """(mount point, mount root) of the cgroup v2 hierarchy, or None if not mounted."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def own_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup v2 path (the ``0::/path`` line), or None."""
    try:
        with open(proc_cgroup, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        return None
    return None


def own_cgroup_dir(mountinfo: str = "/proc/self/mountinfo",
                   proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """The directory of this process's cgroup v2, or None when there is none."""
    mount = mount_point(mountinfo)
    path = own_cgroup(proc_cgroup)
    if mount is None or path is None or path.endswith(" (deleted)"):
        return None
    point, root = mount
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")):] or "/"
    directory = os.path.normpath(os.path.join(point, path.lstrip("/")))
    return directory if os.path.isdir(directory) else None


def run_name(key: str, run_id: str | None = None) -> str:
    """The cgroup name of one run of node `key`."""
    return f"{PREFIX}{key}-{run_id or uuid.uuid4().hex[:12]}"


def create(parent: str, key: str) -> str:
    """Create a fresh child cgroup for one run of node `key`; return its directory.

    Raises OSError when it cannot be created or its ``cgroup.procs`` is not
    writable (the directory is removed again then)."""
    path = os.path.join(parent, run_name(key))
    os.mkdir(path)
    procs = os.path.join(path, "cgroup.procs")
    if not os.access(procs, os.W_OK):
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise PermissionError(errno.EACCES, "cgroup.procs is not writable", procs)
    return path


def move(path: str, pid: int = 0) -> None:
    """Move process `pid` (0: the calling process) into cgroup `path`.

    Uses only os.open/os.write: safe in a ``preexec_fn`` of a single-threaded
    parent."""
    fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def procs(path: str, recursive: bool = True) -> list[int]:
    """The pids in cgroup `path` (and, by default, its descendants). [] when it is gone."""
    found: list[int] = []
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            found = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return found
    if recursive:
        for child in _children(path):
            found += procs(child)
    return found


def _children(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def populated(path: str) -> bool:
    """True while any live process is in `path` or below (zombies do not count).
    False when the cgroup is gone."""
    try:
        with open(os.path.join(path, "cgroup.events"), encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == "populated":
                    return value.strip() != "0"
    except FileNotFoundError:
        return False
    return bool(procs(path))


def kill(path: str) -> None:
    """SIGKILL every process in cgroup `path` and below; returns at once (they die
    asynchronously, see `wait_empty`). A cgroup that is gone is fine."""
    try:
        fd = os.open(os.path.join(path, "cgroup.kill"), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not os.path.isdir(path):
            return
        _kill_each(path)  # kernel < 5.14: no cgroup.kill
        return
    try:
        os.write(fd, b"1")
    except OSError:
        _kill_each(path)
    finally:
        os.close(fd)


def _kill_each(path: str, rounds: int = 100) -> None:
    """Fallback: SIGKILL the pids listed until none is listed (a fork may race a round)."""
    for _ in range(rounds):
        pids = procs(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def wait_empty(path: str, timeout: float) -> bool:
    """Poll until no live process is left in `path`; False after `timeout` seconds."""
    end = time.monotonic() + timeout
    while populated(path):
        if time.monotonic() >= end:
            return False
        time.sleep(_POLL_S)
    return True


def remove(path: str) -> None:
    """rmdir `path` and any child cgroups (deepest first). Gone already is fine;
    a cgroup with live processes raises OSError (EBUSY)."""
    for child in _children(path):
        remove(child)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def kill_and_remove(path: str, timeout: float) -> bool:
    """Kill everything in `path`, wait (at most `timeout`) until it is empty, remove
    it. True when it is gone; False when processes outlived the wait (it stays)."""
    kill(path)
    if not wait_empty(path, timeout):
        kill(path)
        return False
    remove(path)
    return True


def leftovers(parent: str, key: str) -> list[str]:
    """The run cgroups of node `key` directly under `parent` (sorted)."""
    mine = f"{PREFIX}{key}-"
    try:
        with os.scandir(parent) as it:
            return sorted(e.path for e in it
                          if e.name.startswith(mine) and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def usable_parent(parent: str, key: str) -> str | None:
    """Why child cgroups cannot be used under `parent` (None: they can).

    Creates and removes a probe cgroup."""
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    try:
        probe = create(parent, key)
    except OSError as exc:
        return f"cannot create a cgroup under {parent}: {exc.strerror or exc}"
    with contextlib.suppress(OSError):
        os.rmdir(probe)
    return None
