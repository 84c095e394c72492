"""Find the stand-in nodes' processes by a scan of /proc (stdlib only: the watcher's
sampling process imports it).

A stand-in node is a process whose command line runs `fake_node.py`, or a `java`
whose command line names the JVM stand-in's main class (`CordaStandIn`, exactly, see
tests/harness/jvmnode.py), and names a host's record directory (`--record DIR`). It counts
from the moment it exists (exec), wherever it sits in the process tree and whatever
pid it thinks it has (another PID namespace). The `--setsid-child` launcher only
starts the node; it does not count. Zombies have an empty command line and do not count either.

A pass reads a process's command line only when its name (`/proc/PID/comm`, which the
kernel sets at exec from the program's file name) could be a node's: `python...`, `java`
or a `fake_node.py` run by its `#!` line. Reading `/proc/PID/cmdline` takes the
process's memory-map lock, and a busy PostgreSQL backend can hold that for a tenth of a
second: reading every process's command line made the sampler miss its interval on a
loaded machine. `comm` takes no such lock. Where `comm` cannot be read, the command line
is read anyway.
"""

from __future__ import annotations

import os

NODE_MARK = b"fake_node.py"
#: the names (`comm`, at most 15 bytes) a stand-in node's process can have
NODE_COMMS = (b"python", b"java", NODE_MARK[:15])
LAUNCHER_FLAG = b"--setsid-child"
JAVA_MAIN_CLASS = b"CordaStandIn"


def is_node(argv: list[bytes]) -> bool:
    """Whether a command line (split at NULs) is a stand-in node's."""
    if any(a.endswith(NODE_MARK) for a in argv[:3]):
        return LAUNCHER_FLAG not in argv
    return os.path.basename(argv[0]) == b"java" and JAVA_MAIN_CLASS in argv


def scan_nodes(record_dirs: dict[str, str]) -> dict[str, list[int]]:
    """One pass over /proc: per host name, the pids of its live stand-in nodes."""
    wanted = {name: os.fsencode(d) for name, d in record_dirs.items()}
    found: dict[str, list[int]] = {name: [] for name in record_dirs}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or not _may_be_node(entry.name):
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not is_node(argv):
            continue
        for name, directory in wanted.items():
            if directory in argv:
                found[name].append(int(entry.name))
    return found


def _may_be_node(pid: str) -> bool:
    """Whether the process's name (`comm`) could be a stand-in node's (see the module
    docstring); True when it cannot be read."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().rstrip(b"\n")
    except OSError:
        return True
    return comm.startswith(NODE_COMMS)
