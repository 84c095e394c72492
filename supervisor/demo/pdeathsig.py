"""Exec wrapper: `python pdeathsig.py PARENT_PID SIGNAL UID GID COMMAND...` (stdlib only).

Drops to UID/GID when they are not ``-`` (no supplementary groups), sets
PR_SET_PDEATHSIG to SIGNAL, checks that its parent is still PARENT_PID
(otherwise the parent died before the prctl, and it exits 1 at once), then
replaces itself with COMMAND. The command thus gets SIGNAL when the demo process
dies by any means, kill -9 included. The setting is made after the change of
user (which would clear it) and survives the exec (only a set-user-ID exec
clears it, and none of the demo's children is one).

A separate exec, not a ``preexec_fn``: the demo runs reader threads, and a
``preexec_fn`` is not safe in a threaded parent. The privileges are dropped here,
not by ``subprocess``, because the unprivileged user may not be able to run this
Python interpreter at all (e.g. one under /root).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print("usage: pdeathsig.py PARENT_PID SIGNAL UID GID COMMAND...", file=sys.stderr)
        return 2
    parent, sig, uid, gid, command = (int(argv[0]), signal.Signals[argv[1]], argv[2],
                                      argv[3], argv[4:])
    if gid != "-":
        os.setgroups([])
        os.setgid(int(gid))
    if uid != "-":
        os.setuid(int(uid))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        print(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}", file=sys.stderr)
        return 1
    if os.getppid() != parent:
        return 1
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
