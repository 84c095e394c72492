"""One supervisor per node on a host (supervisor/node/instancelock.py and
supervisor/daemon/__main__.py).

- The lock is a POSIX record lock: another process holding it is named (F_GETLK);
  it ends with its holder, even a SIGKILLed one.
- Root and the node's user exclude each other whichever of them made the file:
  root hands a file it creates to the working directory's owner; a user that can
  only read the file takes a read lock, which still excludes root's write lock.
- End to end: a second `corda-ha-supervisor run` of a running node exits 78 at once,
  naming the holder's pid and the lock file, and the running node is untouched
  (same pid, no sweep, no restart).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.node import instancelock
from supervisor.node.instancelock import InstanceLockError, acquire, lock_path
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster
from tests.harness.paths import REPO
from tests.harness.proc import Reaper, pid_alive, wait_until
from tests.harness.users import User, run_as
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(60)

HOLD = ("import sys, time\n"
        "from supervisor.node.instancelock import acquire\n"
        "acquire(sys.argv[1], sys.argv[2])\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")


@pytest.fixture
def shared_dir(other_user: User) -> Iterator[Path]:
    """A working directory the second user owns, reachable by that user."""
    path = Path(tempfile.mkdtemp(prefix="corda-ha-lock-"))
    try:
        os.chmod(path, 0o755)
        os.chown(path, other_user.uid, other_user.gid)
        yield path
    finally:
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()


def hold_in_subprocess(reaper: Reaper, directory: Path, key: str) -> subprocess.Popen[str]:
    proc = reaper.popen([sys.executable, "-c", HOLD, str(directory), key], text=True,
                        stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_holder_is_named_and_the_lock_ends_with_it(reaper: Reaper, tmp_path: Path) -> None:
    holder = hold_in_subprocess(reaper, tmp_path, "k1")
    with pytest.raises(InstanceLockError) as raised:
        acquire(str(tmp_path), "k1")
    assert raised.value.holder == holder.pid
    assert f"pid {holder.pid} holds {lock_path(str(tmp_path), 'k1')}" in str(raised.value)
    mine = acquire(str(tmp_path), "k2")  # another node key: another lock
    os.close(mine.fd)
    holder.send_signal(signal.SIGKILL)
    holder.wait(5)
    lock = acquire(str(tmp_path), "k1")  # no stale lock after a SIGKILL
    assert not lock.shared
    os.close(lock.fd)


def test_a_lock_file_that_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    (tmp_path / f"{instancelock.PREFIX}k.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InstanceLockError, match="symbolic link") as raised:
        acquire(str(tmp_path), "k")
    assert raised.value.holder is None and not (tmp_path / "elsewhere").exists()
    with pytest.raises(InstanceLockError, match="cannot open the instance lock file"):
        acquire(str(tmp_path / "missing"), "k")


def _try_lock(directory: str, key: str) -> dict[str, object]:
    """In `run_as`'s child: try the lock; what happened."""
    try:
        lock = acquire(directory, key)
    except InstanceLockError as exc:
        return {"holder": exc.holder, "error": str(exc)}
    return {"holder": None, "shared": lock.shared}


def test_a_file_root_made_is_handed_to_the_directory_owner(shared_dir: Path,
                                                           other_user: User) -> None:
    """Root (a supervisor run by hand) makes the file: it goes to the working
    directory's owner, who opens it read-write and is refused by root's lock."""
    lock = acquire(str(shared_dir), "k")
    try:
        info = os.stat(lock.path)
        assert (info.st_uid, info.st_gid) == (other_user.uid, other_user.gid)
        seen = run_as(other_user, lambda: _try_lock(str(shared_dir), "k"), hide_proc=False)
        assert seen["holder"] == os.getpid(), seen
    finally:
        os.close(lock.fd)
    seen = run_as(other_user, lambda: _try_lock(str(shared_dir), "k"), hide_proc=False)
    assert seen == {"holder": None, "shared": False}, seen


def test_a_user_who_can_only_read_the_file_still_excludes_root(shared_dir: Path,
                                                               other_user: User) -> None:
    """A root-owned 0644 file (left by an older run): the user can only open it
    read-only and takes a read lock, which root's write lock conflicts with."""
    path = Path(lock_path(str(shared_dir), "k"))
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    assert path.stat().st_uid == 0 and not path.stat().st_mode & stat.S_IWOTH
    read_fd, write_fd = os.pipe()
    go_fd, stop_fd = os.pipe()
    result: list[object] = []

    def child() -> dict[str, object]:
        lock = acquire(str(shared_dir), "k")
        os.write(write_fd, b"locked")
        os.read(go_fd, 1)  # hold it until the parent is done
        return {"shared": lock.shared}

    thread = threading.Thread(target=lambda: result.append(run_as(other_user, child,
                                                                  hide_proc=False)))
    thread.start()
    try:
        assert os.read(read_fd, 6) == b"locked"
        with pytest.raises(InstanceLockError) as raised:
            acquire(str(shared_dir), "k")
        assert raised.value.holder not in (None, os.getpid()), raised.value
    finally:
        os.write(stop_fd, b"x")
        thread.join(10)
        for fd in (read_fd, write_fd, go_fd, stop_fd):
            os.close(fd)
    assert result == [{"shared": True}]


def test_a_second_run_of_a_running_node_exits_78_and_touches_nothing(pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a = pair.add("a")
        a.start()
        node = a.wait_node_up(15)
        wait_until(lambda: a.live_nodes() == [node], 5, message="a's node seen")
        mark = a.mark()
        t0 = time.monotonic()
        second = run_cli("run", "--config", str(a.config_path), timeout=15)
        took = time.monotonic() - t0
        print(f"second run: exit {second.returncode} after {took:.2f} s (interpreter "
              f"starts included): {second.stderr.strip()}")
        assert second.returncode == 78, (second.stdout, second.stderr)
        lock = lock_path(str(a.root), _key_of(a.config_path))
        assert f"pid {a.supervisor_pid()} holds {lock}" in second.stderr, second.stderr
        assert "instance_lock_held" in second.stdout and "health_listening" not in second.stdout
        assert "stale_sweep" not in second.stdout and "stale_nodes" not in second.stdout
        # what a sweep or a restart would have done by now, it did not
        a.no_event("node_exited", 1.0, since=mark)
        assert a.live_nodes() == [node] and pid_alive(node)
        assert [e["pid"] for e in a.events("node_started")] == [node]
        a.assert_no_errors(running=True)
    watch.assert_never_two()


def _key_of(config_path: Path) -> str:
    """The node key of a host's configuration (as the daemon computes it)."""
    from supervisor.config import load_config
    from supervisor.node.sweep import node_key

    config = load_config(str(config_path))
    return node_key(config.database.lease_name, config.lease.machine_name,
                    config.node.working_directory)
