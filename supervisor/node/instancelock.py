"""One supervisor per node on a host: the instance lock.

Two supervisors of one node on one host (the systemd one and one run by hand, say)
would fight over the node: the second one's start-up sweep kills the running node
before the lease tells it anything. So the daemon takes, before anything else (no
health port, no sweep, no database), a POSIX record lock (``fcntl`` F_SETLK, whole
file) on ``<node.workingDirectory>/.corda-ha-supervisor-<node key>.lock`` (the node
key: `supervisor.node.sweep.node_key`). When another process holds it, the daemon
exits 78 naming the holder's pid (F_GETLK) and the file, and touches nothing.

Why a POSIX record lock: it belongs to the process, so it ends with the process
however it ends (no stale lock after a SIGKILL), no child (guard, node, hook)
inherits it, and F_GETLK names the holder. Its one trap: closing *any* descriptor
of the file in this process drops the lock, so nothing else here may open it.

Who may open the file how: the working directory is writable by the node's user,
and root may write anything. The file belongs to the directory's owner: when root
creates it (a supervisor run by hand), root hands it over (fchown) so the service
user can still open it read-write later. Both then take a write lock (F_WRLCK).
A user who can only open it read-only takes a read lock (F_RDLCK): a read lock and
a write lock exclude each other, so it still excludes the owner and root (two such
read-only users would not exclude each other; neither could run a node that writes
its working directory anyway).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass

#: The lock file's name in the working directory: PREFIX + node key + ".lock".
PREFIX = ".corda-ha-supervisor-"
_FLOCK = struct.Struct("@hhqqi4x")  # struct flock on 64-bit Linux
_ATTEMPTS = 3


class InstanceLockError(Exception):
    """The lock is held by another process (`holder`: its pid, 0 when in another PID
    namespace), or cannot be taken at all (`holder` None). Exit 78."""

    def __init__(self, message: str, path: str, holder: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


@dataclass(frozen=True)
class InstanceLock:
    """A held lock: keep the object (its descriptor) for the life of the process."""

    path: str
    fd: int
    shared: bool  # a read lock: the file could only be opened read-only


def lock_path(working_directory: str, key: str) -> str:
    return os.path.join(working_directory, f"{PREFIX}{key}.lock")


def acquire(working_directory: str, key: str) -> InstanceLock:
    """Take the instance lock of node `key` (see the module docstring), without waiting.
    Raises InstanceLockError."""
    path = lock_path(working_directory, key)
    fd, writable = _open(path, working_directory)
    try:
        for _ in range(_ATTEMPTS):
            try:
                fcntl.lockf(fd, (fcntl.LOCK_EX if writable else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                return InstanceLock(path, fd, shared=not writable)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise InstanceLockError(
                        f"cannot lock {path}: {exc.strerror or exc} (the file system of "
                        "node.workingDirectory must support POSIX locks)", path) from None
            holder = _holder(fd)
            if holder is not None:  # else it was let go just now: try again
                where = (f"pid {holder}" if holder > 0
                         else "a process in another PID namespace")
                raise InstanceLockError(
                    f"another supervisor already runs this node: {where} holds {path}; "
                    "one supervisor per node on a host (stop that one first)", path, holder)
        raise InstanceLockError(f"cannot lock {path}: it keeps changing hands", path)
    except BaseException:
        os.close(fd)
        raise


def _open(path: str, directory: str) -> tuple[int, bool]:
    """(descriptor, read-write?) of the lock file, created if missing (never through a
    symbolic link); a file root creates goes to the directory's owner."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        writable = True
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise _cannot_open(path, exc) from None
        writable = False
    except OSError as exc:
        raise _cannot_open(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InstanceLockError(f"{path} is not a regular file", path)
        if writable and os.geteuid() == 0:
            owner = os.stat(directory)
            if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
                os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError as exc:
        os.close(fd)
        raise InstanceLockError(f"cannot prepare {path}: {exc.strerror or exc}", path) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, writable


def _cannot_open(path: str, exc: OSError) -> InstanceLockError:
    why = ("it is a symbolic link" if exc.errno == errno.ELOOP
           else exc.strerror or str(exc))
    return InstanceLockError(
        f"cannot open the instance lock file {path}: {why} (node.workingDirectory must be "
        "writable by the supervisor's user)", path)


def _holder(fd: int) -> int | None:
    """The pid holding a lock that conflicts with a write lock on the whole file (0:
    in another PID namespace); None when nobody holds one now."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    l_type, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return None if l_type == fcntl.F_UNLCK else pid
