"""The install sequence of docs/operations.md (systemd/install.sh) works as written, run into a
scratch root as far as it goes without systemd: files, owners and modes; the config
readable by the node's user and the secret env file not; the installed command
works; the unit's Documentation= path exists; a second run keeps an edited config."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
USER = "postgres"  # an unprivileged user this machine has (the test server runs as it)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="the install sequence runs as root"),
]


def mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    return stat.S_IMODE(st.st_mode), owner, group


def readable_by(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A scratch root other users may traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="corda-ha-install-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_install_sequence_into_a_scratch_root(scratch_root: Path) -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no {USER} user on this machine")
    root = scratch_root
    cmd = ["sh", str(REPO / "systemd" / "install.sh"), "--root", str(root), "--no-systemctl",
           "--user", USER, "--python", shutil.which("python3") or sys.executable]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check-config" in done.stdout

    etc = root / "etc" / "corda-ha-supervisor"
    group = subprocess.run(["id", "-gn", USER], capture_output=True, text=True).stdout.strip()
    assert mode(etc) == (0o750, "root", group)
    assert mode(etc / "supervisor.conf") == (0o640, "root", group)
    assert mode(etc / "env")[:2] == (0o600, "root")
    unit = root / "etc" / "systemd" / "system" / "corda-ha-supervisor.service"
    assert mode(unit)[0] == 0o644
    doc = next(line.split("=", 1)[1] for line in unit.read_text().splitlines()
               if line.startswith("Documentation="))
    assert doc.startswith("file:///") and (root / doc[len("file:///"):]).is_file()
    assert readable_by(USER, etc / "supervisor.conf")
    assert not readable_by(USER, etc / "env")

    cli = root / "opt" / "corda-ha-supervisor" / "venv" / "bin" / "corda-ha-supervisor"
    check = subprocess.run([str(cli), "check-config", "--offline", "--config",
                            str(etc / "supervisor.conf")], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "CORDA_HA_DB_PASSWORD": "pw"})
    assert check.returncode == 0, check.stderr

    (etc / "supervisor.conf").write_text("# edited\n")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert again.returncode == 0, again.stderr
    assert (etc / "supervisor.conf").read_text() == "# edited\n"
