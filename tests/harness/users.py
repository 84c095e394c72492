"""A second OS user for tests, and code run as that user behind a hidden /proc.

`second_user()` (call it from a fixture) gives the uid and gid of an unprivileged
user, creating it with `useradd` when it does not exist; the test is skipped (with
the reason) when this process is not root or the user cannot be made.

`run_as(user, fn, hide_proc=True)` runs `fn()` in a forked child that first, while
still root, enters a mount namespace of its own and mounts a fresh /proc with
``hidepid=invisible`` (what systemd's ``ProtectProc=invisible`` shows a service),
then drops to the user for good; `fn`'s JSON-able result comes back over a pipe.
The child uses only what this process has already imported (a fork copies it), so
the user needs no access to the repository or the interpreter.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

USER_NAME = "corda-ha-test"
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def ensure_user(name: str = USER_NAME) -> User:
    """The user `name`, created (system user, no home, no login) if missing. Raises
    RuntimeError with the reason when it cannot be had."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise RuntimeError(f"user {name!r} does not exist and this is not root") from None
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", name], capture_output=True, text=True,
                              timeout=30)
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def second_user() -> User:
    """An unprivileged user other than the one running the tests (root needed)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user and drops to it")
    try:
        return ensure_user()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no second user: {exc}")


def _hide_proc() -> None:
    """In the calling (single-threaded, forked) process: a private mount namespace
    with /proc mounted anew with hidepid=invisible."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.mount(b"proc", b"/proc", b"proc", 0, b"hidepid=invisible") != 0:
        raise OSError(ctypes.get_errno(), "mount -t proc -o hidepid=invisible proc /proc")


def run_as(user: User, fn: Callable[[], Any], *, hide_proc: bool = True,
           timeout: float = 10.0) -> Any:
    """`fn()` run as `user` (behind a hidepid=invisible /proc unless `hide_proc` is
    False) in a forked child; its result. The child's exception is re-raised here as
    an AssertionError naming it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        code = 0
        try:
            os.close(read_fd)
            if hide_proc:
                _hide_proc()
            os.setgroups([])
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
            out = {"result": fn()}
        except BaseException as exc:  # reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
            code = 1
        try:
            os.write(write_fd, json.dumps(out).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, 9)
                raise AssertionError(f"run_as: no answer within {timeout} s")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    out = json.loads(data or b'{"error": "the child said nothing"}')
    if "error" in out:
        raise AssertionError(f"run_as({user.name}): {out['error']}")
    return out["result"]


@pytest.fixture
def other_user() -> User:
    """An unprivileged second user (root only: skipped otherwise)."""
    return second_user()
