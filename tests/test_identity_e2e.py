"""What cannot be seen is alive, end to end: two supervisors with one machineName on
this machine, the holder run by hand as root, the other as the service user behind a
/proc that hides other users' processes (the shipped unit's ProtectProc=invisible).

The second one runs in a mount namespace of its own (`unshare --mount`) with /proc
mounted anew with ``hidepid=invisible``, as a second user without any capability:
the holder's pid is not in its /proc and signal 0 to it says EPERM. It must report
machine_name_conflict and never take the lease; the overlap watcher must never see
two nodes. (Where the interpreter lives below a directory others cannot enter, such
as /root, mode 0700, on this machine, that namespace also gets an empty tmpfs over
that directory with the interpreter's tree bound back into it: only that user's
namespace sees it; the machine's directory is untouched.)
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
from tests.harness.pgserver import PgServer
from tests.harness.users import User
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)

HIDE_PROC_THEN = ('set -e; {reach}'
                  'mount -t proc -o hidepid=invisible proc /proc; '
                  'exec setpriv --reuid={uid} --regid={gid} --clear-groups "$@"')


def closed_ancestor() -> tuple[Path, Path] | None:
    """(a directory others cannot enter above the interpreter, its child on the way
    there), or None when every user can reach the interpreter."""
    target = Path(os.path.realpath(sys.executable))
    for parent in list(reversed(target.parents))[1:]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            child = parent / target.relative_to(parent).parts[0]
            if not Path(sys.base_prefix).resolve().is_relative_to(child):
                pytest.skip(f"the interpreter's files are spread below {parent}")
            return parent, child
    return None


def reach_interpreter(scratch: Path) -> str:
    """Shell commands (run as root in the private mount namespace) that let any user
    reach the interpreter: the closed directory is covered by an empty tmpfs (mode
    0755) and the interpreter's tree is bound back into it."""
    found = closed_ancestor()
    if found is None:
        return ""
    closed, child = (shlex.quote(str(p)) for p in found)
    scratch.mkdir()
    keep = shlex.quote(str(scratch))
    return (f"mount --bind {child} {keep}; mount -t tmpfs -o mode=0755 tmpfs {closed}; "
            f"mkdir -p {child}; mount --bind {keep} {child}; ")


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
