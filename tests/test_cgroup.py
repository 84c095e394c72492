"""supervisor.node.cgroup and the cgroup half of the stale-node sweep, on the real cgroup fs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from supervisor.node import cgroup as cgroups
from supervisor.node.sweep import RunMarks, node_key, sweep_stale_nodes
from supervisor.node.sweep import cgroup_parent as resolve_parent
from tests.harness.cgroups import setsid_tree, spawn_in
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)


def test_mount_and_own_cgroup_from_proc_files(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/x\n0::/system.slice/corda.service\n")
    assert cgroups.mount_point(str(mountinfo)) == ("/sys/fs/cgroup/unified", "/")
    assert cgroups.own_cgroup(str(cgroup)) == "/system.slice/corda.service"
    mountinfo.write_text("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroups.mount_point(str(mountinfo)) == ("/sys/fs/cgroup", "/")
    cgroup.write_text("1:name=systemd:/\n")
    assert cgroups.own_cgroup(str(cgroup)) is None  # cgroup v1 only
    assert cgroups.mount_point(str(tmp_path / "missing")) is None


def test_own_cgroup_dir_is_real() -> None:
    own = cgroups.own_cgroup_dir()
    if own is None:
        pytest.skip("no cgroup v2 here")
    assert os.path.isfile(os.path.join(own, "cgroup.procs"))
    assert os.getpid() in cgroups.procs(own, recursive=False)


def test_create_move_kill_remove(reaper: Reaper, tmp_path: Path, cgroup_parent: str) -> None:
    key = "k1"
    path = cgroups.create(cgroup_parent, key)
    assert os.path.basename(path).startswith(f"corda-ha-node-{key}-")
    assert not cgroups.populated(path) and cgroups.procs(path) == []
    leader, grandchild = setsid_tree(reaper, path, tmp_path)
    assert sorted(cgroups.procs(path)) == sorted([leader, grandchild])
    assert cgroups.populated(path)
    with pytest.raises(OSError):
        cgroups.remove(path)  # EBUSY while populated
    t0 = time.monotonic()
    cgroups.kill(path)
    assert cgroups.wait_empty(path, 2.0)
    print(f"cgroup.kill to empty: {(time.monotonic() - t0) * 1000:.1f} ms")
    wait_until(lambda: not pid_alive(grandchild) and not pid_alive(leader), 1.0,
               message="leader and setsid grandchild dead")
    cgroups.remove(path)
    assert not os.path.exists(path)
    cgroups.kill(path)  # gone: harmless
    cgroups.remove(path)


def test_kill_reaches_a_frozen_cgroup(reaper: Reaper, tmp_path: Path,
                                      cgroup_parent: str) -> None:
    path = cgroups.create(cgroup_parent, "frozen")
    _, grandchild = setsid_tree(reaper, path, tmp_path)
    Path(path, "cgroup.freeze").write_text("1")
    wait_until(lambda: "frozen 1" in Path(path, "cgroup.events").read_text(), 2.0,
               message="cgroup frozen")
    assert cgroups.kill_and_remove(path, 2.0)
    assert not pid_alive(grandchild)


def test_fallback_kill_without_cgroup_kill(reaper: Reaper, tmp_path: Path,
                                           cgroup_parent: str) -> None:
    """Kernels before 5.14 have no cgroup.kill: SIGKILL each listed pid until none is left."""
    path = cgroups.create(cgroup_parent, "old-kernel")
    nested = os.path.join(path, "inner")
    os.mkdir(nested)
    _, grandchild = setsid_tree(reaper, nested, tmp_path)
    leader2 = spawn_in(reaper, path, ["sleep", "1000"]).pid
    wait_until(lambda: leader2 in cgroups.procs(path, recursive=False), 2.0,
               message="sleep in the cgroup")
    cgroups._kill_each(path)
    assert cgroups.wait_empty(path, 2.0)
    assert not pid_alive(grandchild) and not pid_alive(leader2)
    cgroups.remove(path)  # nested first
    assert not os.path.exists(path)


def test_leftovers_are_per_key(cgroup_parent: str) -> None:
    a1, a2 = cgroups.create(cgroup_parent, "aaaa"), cgroups.create(cgroup_parent, "aaaa")
    b1 = cgroups.create(cgroup_parent, "aaaab")  # a key that extends ours is not ours
    os.mkdir(os.path.join(cgroup_parent, "unrelated"))
    assert cgroups.leftovers(cgroup_parent, "aaaa") == sorted([a1, a2])
    assert cgroups.leftovers(cgroup_parent, "aaaab") == [b1]
    assert cgroups.leftovers("/nonexistent", "aaaa") == []


def test_usable_parent_and_fallback(cgroup_parent: str, tmp_path: Path) -> None:
    assert cgroups.usable_parent(cgroup_parent, "k") is None
    assert not [n for n in os.listdir(cgroup_parent) if n.startswith("corda-ha-node-")]
    why = cgroups.usable_parent(str(tmp_path / "nope"), "k")
    assert why is not None and "not a directory" in why
    # a plain directory is not a cgroup: mkdir works, but there is no cgroup.procs
    why = cgroups.usable_parent(str(tmp_path), "k")
    assert why is not None
    assert resolve_parent("off", "k") == (None, "node.cgroup = off")
    assert resolve_parent(cgroup_parent, "k")[0] == cgroup_parent
    assert resolve_parent("auto", "k")[0] == cgroups.own_cgroup_dir()


def test_fence_for_node_falls_back_with_a_reason(tmp_path: Path) -> None:
    from supervisor.config import NodeConfig

    node = NodeConfig(command=("x",), working_directory=str(tmp_path), environment={},
                      stop_timeout=1.0, cgroup=str(tmp_path / "missing"))
    marks = RunMarks.for_node(node, lease_name="l", machine_name="m")
    assert marks.cgroup_parent is None
    assert marks.key == node_key("l", "m", str(tmp_path))
    assert node_key("l", "m", str(tmp_path)) != node_key("l", "m2", str(tmp_path))
    assert node_key("l", "m", str(tmp_path)) != node_key("l2", "m", str(tmp_path))
    assert len(marks.key) == 16


def test_sweep_kills_and_removes_leftover_cgroups_of_this_key_only(
        reaper: Reaper, tmp_path: Path, cgroup_parent: str) -> None:
    """A leftover run (a leader and a setsid'ed grandchild, no environment marker)
    is found by its cgroup name; another node's cgroup is not touched."""
    key, other = node_key("l", "a", str(tmp_path)), node_key("l", "b", str(tmp_path))
    stale = cgroups.create(cgroup_parent, key)
    empty_stale = cgroups.create(cgroup_parent, key)
    leader, grandchild = setsid_tree(reaper, stale, tmp_path)
    theirs = cgroups.create(cgroup_parent, other)
    their_node = spawn_in(reaper, theirs, ["sleep", "1000"]).pid
    wait_until(lambda: their_node in cgroups.procs(theirs), 2.0, message="their node in")
    swept = sweep_stale_nodes(key, cgroup_parent)
    print(f"cgroup sweep took {swept.seconds * 1000:.1f} ms")
    assert sorted(swept.pids) == sorted([leader, grandchild])
    assert sorted(swept.cgroups) == sorted([stale, empty_stale]) and swept.left == ()
    assert not pid_alive(leader) and not pid_alive(grandchild)
    assert not os.path.exists(stale) and not os.path.exists(empty_stale)
    assert pid_alive(their_node) and os.path.isdir(theirs)
    assert sweep_stale_nodes(key, cgroup_parent).pids == ()
    os.kill(their_node, signal.SIGKILL)
