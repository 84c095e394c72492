"""Before a node run: its environment, the sweep that must be clean and the run's
cgroup (`prepare_run`), and the guard process it runs under (`spawn_guard`); how a
run ended (`NodeExit`). Used by `supervisor.node.process`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

import supervisor
from supervisor.config import NodeConfig
from supervisor.node import cgroup as cgroups
from supervisor.node.sweep import (
    NODE_KEY_ENV,
    RunMarks,
    SweepError,
    SweepFunction,
    default_sweep,
    log_swept,
    run_sweep,
)

flog = structlog.get_logger("supervisor.node")

REMOVED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SPAWN_FAILED_RETURNCODE = 127

@dataclass(frozen=True)
class NodeExit:
    """How a node run ended.

    `returncode` is the exit status when the node exited normally, `signal` the
    signal number when it was killed by one (one of the two is None).
    `killed_by` is why the guard (or this process) signalled it: "deadline",
    "stop", "kill", "supervisor_gone", "guard_terminated", "guard_error",
    "guard_gone" (the guard itself vanished; the node was then killed by
    PDEATHSIG and by us), "guard_stalled" (the guard stopped acknowledging
    commands; we killed the node and the guard), or None when the node exited on
    its own. On spawn failure `pid` is None, `returncode`
    is 127 and `spawn_error` says why.
    """

    pid: int | None
    returncode: int | None
    signal: int | None
    runtime: float
    killed_by: str | None
    spawn_error: str | None = None


def node_environment(node: NodeConfig, *, epoch: int | None, machine_name: str,
                     base: Mapping[str, str] | None = None,
                     key: str | None = None) -> dict[str, str]:
    """The node's environment: `base` (default os.environ) + node.environment +
    CORDA_HA_EPOCH (if epoch is not None) + CORDA_HA_MACHINE_NAME +
    CORDA_HA_NODE_KEY (if key is not None: the stale-sweep marker), minus the
    systemd notify/watchdog variables."""
    env = dict(os.environ if base is None else base)
    env.update(node.environment)
    env.pop("CORDA_HA_EPOCH", None)
    env.pop(NODE_KEY_ENV, None)
    if epoch is not None:
        env["CORDA_HA_EPOCH"] = str(epoch)
    env["CORDA_HA_MACHINE_NAME"] = machine_name
    if key is not None:
        env[NODE_KEY_ENV] = key
    for name in REMOVED_ENV:
        env.pop(name, None)
    return env


async def prepare_run(marks: RunMarks,
                      sweep: SweepFunction | None) -> tuple[str | None, str | None]:
    """The stale-node sweep (it must finish and be clean), then the run's own cgroup
    when there is a parent for it: (cgroup or None, why the node must not start or
    None). A cgroup that cannot be made leaves the run to its process group (logged)."""
    try:
        swept = await run_sweep(marks.key, sweep or default_sweep(marks), marks.sweep_timeout)
    except SweepError as exc:
        flog.error("stale_sweep_failed", error=str(exc), at="node_start")
        return None, str(exc)
    log_swept(swept, "node_start")
    if not swept.clean:
        problem = f"stale-node sweep not clean: {swept.problem()}"
        flog.error("stale_sweep_failed", error=problem, at="node_start")
        return None, problem
    if marks.cgroup_parent is None:
        return None, None
    try:
        return cgroups.create(marks.cgroup_parent, marks.key), None
    except OSError as exc:
        flog.error("node_cgroup_create_failed", parent=marks.cgroup_parent,
                   error=str(exc), message="this run is held by its process group only")
        return None, None


def spawn_guard() -> tuple[subprocess.Popen[bytes], tuple[int, int, int]]:
    """Start `python -m supervisor.node.guard` in a session of its own: the guard, and
    the read ends of the node's stdout, stderr and the guard's status pipe. Raises
    OSError / SubprocessError (nothing is left open then)."""
    status_r, status_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        guard = subprocess.Popen(
            [sys.executable, "-m", "supervisor.node.guard", "--status-fd", str(status_w)],
            stdin=subprocess.PIPE, stdout=out_w, stderr=err_w, pass_fds=(status_w,),
            start_new_session=True, cwd="/", env=guard_environment())
    except BaseException:
        for fd in (status_r, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (status_w, out_w, err_w):
            os.close(fd)
    return guard, (out_r, err_r, status_r)


def guard_environment() -> dict[str, str]:
    """The guard's own environment: ours, able to import `supervisor`, no systemd notify."""
    env = dict(os.environ)
    for name in (*REMOVED_ENV, NODE_KEY_ENV):  # the guard must never look like a stale node
        env.pop(name, None)
    package_parent = str(Path(supervisor.__file__).resolve().parent.parent)
    paths = [package_parent, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
