"""Start-up errors an operator can act on: exit 78 with a message that
names the key to fix, no traceback, no password; a database that is merely unreachable
is waited out instead. Real supervisor processes, real PostgreSQL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness.cli import SECRET, assert_clean, run_cli, run_to_exit
from tests.harness.config import Value, ms, startup_config, supervisor_config
from tests.harness.paths import REPO
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import Reaper

pytestmark = pytest.mark.timeout(60)

@pytest.mark.parametrize("which", ["main", "internal"])
def test_busy_health_port_exits_78_naming_the_address_taken(
        tmp_path: Path, pg_server: PgServer, reaper: Reaper, which: str) -> None:
    """Of the two listeners (health.port, health.internalPort), the message names the
    one whose address is taken, and its keys, not both."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port, other = busy.getsockname()[1], free_port()
        health = ({"host": "127.0.0.1", "port": port, "internalPort": other}
                  if which == "main" else
                  {"host": "127.0.0.1", "port": other, "internalPort": port})
        path = startup_config(tmp_path, pg_server.dsn, extra=supervisor_config(health=health))
        code, out = run_to_exit(reaper, path)
    assert code == 78, out
    (line,) = [x for x in out.splitlines() if "health_port_unavailable" in x]
    keys = "health.host / health.port" if which == "main" else "health.internalHost"
    assert f"cannot listen on 127.0.0.1:{port} ({keys}" in line, line
    assert f":{other}" not in line.split('"message"')[1], line  # the free one is not blamed
    assert_clean(out)


def test_refused_login_exits_78_naming_user_and_password_source(
        tmp_path: Path, pg_server: PgServer, reaper: Reaper) -> None:
    url = f"postgresql://{pg_server.host}:{pg_server.port}/postgres"
    path = startup_config(tmp_path, url, extra=supervisor_config(
        database={"user": pg_server.password_user, "password": SECRET}))
    code, out = run_to_exit(reaper, path)
    assert code == 78, out
    assert "database_config_error" in out
    assert f"database.user = {pg_server.password_user}" in out and "database.password" in out
    assert_clean(out)


def test_missing_privilege_exits_78_pointing_at_schema(tmp_path: Path, pg_server: PgServer,
                                                       reaper: Reaper) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    role = f"nopriv_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN")
    url = f"postgresql://{role}@{pg_server.host}:{pg_server.port}/postgres"
    path = startup_config(tmp_path, url, extra=supervisor_config(database={"schema": f"s_{role}"}))
    code, out = run_to_exit(reaper, path)
    assert code == 78, out
    assert "lacks a privilege" in out and "corda-ha-supervisor schema --config" in out
    assert_clean(out)


def test_unreachable_database_at_start_is_waited_out(tmp_path: Path, reaper: Reaper) -> None:
    path = startup_config(tmp_path, f"postgresql://127.0.0.1:{free_port()}/postgres")
    proc = reaper.popen([sys.executable, "-m", "supervisor", "run", "--config", str(path)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"lease_call_failed"' in line:
            break
    assert proc.poll() is None, "an unreachable database must be waited out, not an exit"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out


def test_missing_node_program_or_directory_exits_78(tmp_path: Path, pg_server: PgServer,
                                                   reaper: Reaper) -> None:
    path = startup_config(tmp_path, pg_server.dsn,
                          node=("/opt/nowhere/bin/java", "-jar", "corda.jar"))
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 78, out
    assert "node.command" in out.stderr and "/opt/nowhere/bin/java" in out.stderr
    assert f"{path}:" in out.stderr  # file (and line) named
    assert run_cli("check-config", "--offline", "--config", str(path)).returncode == 0
    code, text = run_to_exit(reaper, path)
    assert code == 78 and "node.command" in text
    gone = tmp_path / "gone"
    path = startup_config(tmp_path, pg_server.dsn).with_name("w.conf")
    path.write_text(startup_config(tmp_path, pg_server.dsn).read_text().replace(
        f'workingDirectory = "{tmp_path}"', f'workingDirectory = "{gone}"'))
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 78 and "node.workingDirectory" in out.stderr


@pytest.mark.parametrize(("update", "hint"), [
    (2, "bare integer is milliseconds"),
    (ms(50), "at least 100 ms"),
])
def test_tiny_intervals_exit_78_with_a_hint(tmp_path: Path, update: Value, hint: str) -> None:
    path = startup_config(tmp_path, "postgresql://db/x", intervals=(update, 40000))
    out = run_cli("check-config", "--offline", "--config", str(path))
    assert out.returncode == 78, out
    assert "mutualExclusionConfiguration.updateInterval" in out.stderr and hint in out.stderr
