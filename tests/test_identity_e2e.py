"""What cannot be seen is alive, end to end: two supervisors with one machineName on
this machine, the holder run by hand as root, the other as the service user behind a
/proc that hides other users' processes (the shipped unit's ProtectProc=invisible).

The second one runs in a mount namespace of its own (`unshare --mount`) with /proc
mounted anew with ``hidepid=invisible``, as a second user without any capability:
the holder's pid is not in its /proc and signal 0 to it says EPERM. It must report
machine_name_conflict and never take the lease; the overlap watcher must never see
two nodes. (Where the interpreter, the virtualenv or the checkout lives below a
directory others cannot enter, such as /root or a `mktemp -d` clone, mode 0700, that
namespace also gets an empty tmpfs over that directory with the entries on the way
bound back into it: only that user's namespace sees it; the directory is untouched.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.harness.cluster import Cluster, cluster
from tests.harness.host import Host
from tests.harness.paths import REPO
from tests.harness.pgserver import PgServer
from tests.harness.users import User
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)

HIDE_PROC_THEN = ('set -e; {reach}'
                  'mount -t proc -o hidepid=invisible proc /proc; '
                  'exec setpriv --reuid={uid} --regid={gid} --clear-groups "$@"')


def closed_ancestor(target: Path) -> Path | None:
    """The outermost directory others cannot enter on the way to `target` (itself
    included), or None when every user can reach it."""
    for parent in [*reversed(target.parents), target][1:]:
        if parent.is_dir() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def closed_ways() -> dict[Path, set[Path]]:
    """What the second user must reach and cannot: each closed directory above the
    interpreter's tree, the virtualenv and the checkout (a clone in `mktemp -d`, mode
    0700) with its entries on the way there (every entry when the closed directory is
    itself one of them)."""
    targets = {Path(os.path.realpath(sys.executable)).parent, Path(sys.base_prefix).resolve(),
               Path(sys.prefix).resolve(), REPO.resolve()}
    ways: dict[Path, set[Path]] = {}
    for target in targets:
        closed = closed_ancestor(target)
        if closed is None:
            continue
        entries = (set(closed.iterdir()) if target == closed
                   else {closed / target.relative_to(closed).parts[0]})
        ways.setdefault(closed, set()).update(entries)
    return ways


def reach_interpreter(scratch: Path) -> str:
    """Shell commands (run as root in the private mount namespace) that let any user
    reach the interpreter, the virtualenv and the checkout: each closed directory is
    covered by an empty tmpfs (mode 0755) and its entries on the way are bound back
    into it."""
    commands = []
    for n, (closed, entries) in enumerate(sorted(closed_ways().items())):
        keeps = []
        for m, entry in enumerate(sorted(entries)):
            keep = scratch / f"{n}-{m}"
            scratch.mkdir(parents=True, exist_ok=True)
            if entry.is_dir():
                keep.mkdir()
            else:
                keep.touch()
            commands.append(f"mount --bind {shlex.quote(str(entry))} "
                            f"{shlex.quote(str(keep))}; ")
            keeps.append((entry, keep))
        commands.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(closed))}; ")
        for entry, keep in keeps:
            make = "mkdir -p" if entry.is_dir() else "touch"
            commands.append(f"{make} {shlex.quote(str(entry))}; "
                            f"mount --bind {shlex.quote(str(keep))} "
                            f"{shlex.quote(str(entry))}; ")
    return "".join(commands)


@pytest.fixture
def other_user(other_user: User) -> User:
    """The second user (tests/harness/users.py), where unshare and setpriv exist."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("needs unshare and setpriv (util-linux)")
    return other_user


@pytest.fixture
def open_cluster(pg_server: PgServer, lease_name: str) -> Iterator[Cluster]:
    """A cluster in a directory every user can reach (pytest's tmp_path is root's)."""
    root = Path(tempfile.mkdtemp(prefix="corda-ha-e2e-"))
    os.chmod(root, 0o777)
    try:
        with cluster(root, pg_server.dsn, lease_name) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


def hidden_proc_host(c: Cluster, name: str, user: User, machine_name: str) -> Host:
    """A host whose supervisor runs as `user` behind a hidepid=invisible /proc."""
    root = c.root / name
    root.mkdir()
    script = HIDE_PROC_THEN.format(reach=reach_interpreter(root / "interpreter"),
                                   uid=user.uid, gid=user.gid)
    host = c.add(name, machine_name=machine_name,
                 wrap=["unshare", "--mount", "--", "sh", "-c", script, "sh"])
    host.write_config()
    for path in (host.root, host.records, host.config_path):
        os.chown(path, user.uid, user.gid)
    return host


def test_a_hidden_holder_of_our_machine_name_is_a_conflict_never_taken(
        open_cluster: Cluster, other_user: User) -> None:
    c = open_cluster
    a = c.add("a")
    lock = a.lock_path  # the stand-in nodes' shared lock file: both users write it
    lock.touch()
    os.chmod(lock, 0o666)
    with Watcher(c.hosts) as watch:
        a.start()
        node = a.wait_node_up(15)
        epoch = a.wait_event("lease_acquired", 5)["epoch"]
        hidden = hidden_proc_host(c, "a-by-hand", other_user, machine_name="a")
        watch.hosts = c.hosts
        hidden.start()
        conflict = hidden.wait_event("machine_name_conflict", 15)
        # the scenario holds: another user, a /proc that hides the holder
        sup = psutil.Process(hidden.supervisor_pid())
        assert sup.uids().real == other_user.uid
        mounts = Path(f"/proc/{sup.pid}/mountinfo").read_text()
        assert any(" /proc " in line and "hidepid=invisible" in line
                   for line in mounts.splitlines()), mounts
        assert f"pid {a.supervisor_pid()}" in conflict["detail"], conflict
        assert "this machine" in conflict["detail"], conflict
        # W = 2 s: a reclaim would have come within the first observation (the old
        # code took the lease 0.6-1.9 s after the start); watch three W
        hidden.no_event("lease_acquired", 3 * c.hosts[0].wait_ms / 1000)
        assert not hidden.events("node_started")
        assert a.live_nodes() == [node] and hidden.live_nodes() == []
        assert [e["epoch"] for e in a.events("lease_acquired")] == [epoch]
        assert not a.events("lease_lost")
        a.assert_no_errors(running=True)
        hidden.assert_no_errors(running=True)
    watch.assert_never_two()
    print(f"hidden holder: conflict reported, lease never taken "
          f"({len(hidden.events('machine_name_conflict'))} conflict line(s))")
