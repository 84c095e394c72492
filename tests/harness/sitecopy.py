"""A copy of installed Python distributions that another user may import: Patroni must
run as the PostgreSQL server's user, and the virtualenv may lie below a directory that
user cannot enter (/root, a `mktemp -d` clone).

`importable_copy("patroni", ("etcd", "psycopg3"))` copies the files of that distribution
and of everything it requires (markers evaluated for those extras) into a directory
every user may read, made once per machine under the temporary directory (keyed by the
distributions' locations and versions), and returns it: a `PYTHONPATH` entry for an
interpreter of the same Python version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import shutil
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_PREFIX = "corda-ha-site-"


def closure(root: str, extras: tuple[str, ...]) -> list[metadata.Distribution]:
    """`root`'s distribution and every distribution it requires, as installed."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in ("", *wanted)):
                todo.append((req.name, tuple(req.extras)))
    return [found[k] for k in sorted(found)]


def importable_copy(root: str, extras: tuple[str, ...] = ()) -> str:
    """See the module docstring."""
    dists = closure(root, extras)
    stamp = "\n".join(f"{d.metadata['Name']} {d.version} {d.locate_file('')}" for d in dists)
    final = Path(tempfile.gettempdir()) / (
        _PREFIX + hashlib.sha256(stamp.encode()).hexdigest()[:12])
    if final.is_dir():
        return str(final)
    scratch = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}new-"))
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for rel in dist.files or []:
            source = Path(str(dist.locate_file(rel)))
            if not source.is_file() or not source.resolve().is_relative_to(base.resolve()):
                continue  # scripts in ../../bin, missing .pyc files
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for path in (scratch, *scratch.rglob("*")):
        mode = path.stat().st_mode
        path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
    try:
        os.rename(scratch, final)
    except OSError:  # another worker's copy got there first
        shutil.rmtree(scratch, ignore_errors=True)
    return str(final)
