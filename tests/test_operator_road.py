"""The operator's road from set-up to watching the pair, as an operator types it: each
command a process of its own against a real PostgreSQL (and real supervisors where the
pair matters). What it says and its exit status: the unit's environment file read by
the operator's commands; `check-config --online` (login, privileges, fencing; 0, 78,
69); `check-config` naming a missing directory once; `handover --to` a host that is no
member; output into a pipe closed early; members that left shown as gone, in local
time, and removed after the retention. U = 0.5 s, W = 2 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from supervisor.cli import envfile
from supervisor.config import ConfigError
from supervisor.lease.members import MEMBER_RETENTION
from tests.harness.cli import SECRET, assert_clean, run_cli
from tests.harness.cluster import Cluster, holder_registered
from tests.harness.config import Raw, lease, seconds, write_config
from tests.harness.fencedb import FenceDb
from tests.harness.paths import REPO
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(90)

ENV = "CORDA_HA_DB_PASSWORD"


def password_conf(tmp_path: Path, pg: PgServer, password: str | Raw, **more: object) -> Path:
    """host s, logging in as the server's password-checked role, in a schema of its own
    (the role may create it, so the privilege probe finds nothing missing)."""
    return write_config(
        tmp_path / f"s-{uuid.uuid4().hex[:6]}.conf", lease=lease("s"),
        database={"url": f"postgresql://{pg.host}:{pg.port}/postgres",
                  "user": pg.password_user, "password": password,
                  "schema": f"s_{uuid.uuid4().hex[:8]}", "connectTimeout": seconds(2),
                  "leaseName": uuid.uuid4().hex},
        node={"command": ["/bin/true"], "workingDirectory": str(more.get("workdir", tmp_path))},
        health={"enabled": False})


# --------------------------------------------------------------- the environment file


@pytest.mark.parametrize(("text", "line", "what"), [
    ("A=1\nnot a line\n", 2, "not a NAME=value line"),
    ("# c\n\nB='open\n", 3, "unterminated quote"),
    ("1X=2\n", 1, "not a NAME=value line"),
])
def test_a_malformed_env_file_names_its_file_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError) as e:
        envfile.parse(text, "/etc/corda-ha-supervisor/env")
    assert e.value.line == line and what in str(e.value)
    assert "/etc/corda-ha-supervisor/env" in str(e.value)


def test_the_env_file_syntax_of_the_shipped_file() -> None:
    text = ("# comment\n; also\n\nA=plain\nB='single $x'\nC=\"dq \\\" q\"\n D = spaced \n")
    assert envfile.parse(text, "f") == {"A": "plain", "B": "single $x", "C": 'dq " q',
                                        "D": "spaced"}


def test_status_takes_the_password_from_the_env_file_and_says_so(
        tmp_path: Path, pg_server: PgServer) -> None:
    """The service's password lives in the unit's root-only environment file: `status
    --env-file F` (the default F being that file) logs in with it, says which variable
    it took (never its value); without it the login is refused for want of a password:
    78, naming the user and where the password should come from."""
    assert ENV not in os.environ
    conf = password_conf(tmp_path, pg_server, Raw(f"${{?{ENV}}}"))
    env_file = tmp_path / "env"
    env_file.write_text(f"# written by the installer\n{ENV}='{pg_server.password}'\n")
    out = run_cli("status", "--config", str(conf), "--env-file", str(env_file))
    assert out.returncode == 3, out  # logged in; nobody holds this lease
    assert f"read {ENV} from {env_file}" in out.stderr
    assert pg_server.password not in out.stdout + out.stderr

    out = run_cli("status", "--config", str(conf), "--env-file", "")
    assert out.returncode == 78, out
    assert f"database.user = {pg_server.password_user}" in out.stderr
    assert "no password (none is configured" in out.stderr
    assert "the password from no password" not in out.stderr

    out = run_cli("status", "--config", str(conf), "--env-file", str(tmp_path / "absent"))
    assert out.returncode == 78 and "--env-file: no such file" in out.stderr, out
    env_file.write_text(f"{ENV}={pg_server.password}\nnot a line\n")
    out = run_cli("status", "--config", str(conf), "--env-file", str(env_file))
    assert out.returncode == 78 and f"{env_file}:2: not a NAME=value line" in out.stderr, out


# --------------------------------------------------------------- check-config --online


def test_check_config_online_accepts_a_pair_set_up_as_schema_prints(
        fdb: FenceDb, tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text(fdb.conf("a") + f'\nnode {{ command = ["/bin/true"], '
                                    f'workingDirectory = "{tmp_path}" }}\n')
    out = run_cli("check-config", "--online", "--config", str(conf))
    assert out.returncode == 0, out
    assert f"login as database.user = {fdb.supervisor} accepted" in out.stderr
    assert "every privilege the supervisor needs is granted" in out.stderr
    assert "fencing: ready" in out.stderr

    fdb.server.execute(f"REVOKE UPDATE ON {fdb.table} FROM {fdb.supervisor}")
    out = run_cli("check-config", "--online", "--config", str(conf))
    assert out.returncode == 78, out
    assert f'lacks UPDATE on table "{fdb.table}"' in out.stderr
    assert f'GRANT SELECT, INSERT, UPDATE ON "{fdb.table}" TO "{fdb.supervisor}"' in out.stderr


def test_check_config_online_with_a_wrong_password_exits_78_naming_the_user(
        tmp_path: Path, pg_server: PgServer) -> None:
    """`check-config` alone never logs in (0 for a wrong password, then `run` says 78);
    with --online it says 78 itself, naming the user, never the password."""
    conf = password_conf(tmp_path, pg_server, SECRET)
    assert run_cli("check-config", "--config", str(conf)).returncode == 0
    out = run_cli("check-config", "--online", "--config", str(conf))
    print(f"check-config --online, wrong password: exit {out.returncode}\n{out.stderr}")
    assert out.returncode == 78, out
    assert f"refused the login of database.user = {pg_server.password_user}" in out.stderr
    assert "the password from database.password" in out.stderr
    assert_clean(out.stdout + out.stderr)


def test_check_config_online_with_the_database_down_exits_69(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "down.conf", lease=lease("s"),
                        database={"url": f"postgresql://127.0.0.1:{free_port()}/postgres",
                                  "connectTimeout": seconds(2)},
                        node={"command": ["/bin/true"], "workingDirectory": str(tmp_path)},
                        health={"enabled": False})
    out = run_cli("check-config", "--online", "--config", str(conf))
    assert out.returncode == 69, out
    assert "database unavailable" in out.stderr


def test_check_config_names_a_missing_directory_once(tmp_path: Path,
                                                     pg_server: PgServer) -> None:
    conf = password_conf(tmp_path, pg_server, "x", workdir=tmp_path / "absent")
    out = run_cli("check-config", "--config", str(conf))
    assert out.returncode == 78, out
    said = [line for line in out.stderr.splitlines() if "node.workingDirectory" in line]
    assert len(said) == 1 and "configuration error" in said[0], out.stderr


# --------------------------------------------------------------- the pair, watched


def test_handover_to_a_host_that_is_no_member_is_refused_by_name(pair: Cluster) -> None:
    a = holder_registered(pair)
    out = run_cli("handover", "--to", "host-zz", "--config", str(a.config_path))
    assert out.returncode == 4, out
    assert "'host-zz' is no member of this pair" in out.stderr
    assert "members: a" in out.stderr
    assert "could take over" not in out.stderr
    out = run_cli("handover", "--to", "host-zz", "--force", "--config", str(a.config_path))
    assert out.returncode == 4 and "is no member" in out.stderr, out  # not even forced
    assert not a.events("handover_requested") and a.live_nodes()


@pytest.mark.parametrize("args", [["status"], ["history", "--json"]])
def test_output_into_a_closed_pipe_ends_quietly(pair: Cluster, args: list[str]) -> None:
    """`status | head -1`: the reader is gone before the command writes; it exits 141
    (as a Unix tool killed by SIGPIPE would report) without a traceback."""
    a = pair.add("a")
    a.start()
    a.wait_node_up(15)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", *args, "--config",
                             str(a.config_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                            cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the interpreter has even started
        err = proc.stderr.read().decode()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141, (code, err)


def test_a_member_that_left_is_shown_gone_in_local_time_then_removed(
        pair: Cluster, pg_server: PgServer) -> None:
    a = pair.add("a")
    a.start()
    a.wait_node_up(15)

    def members() -> dict[str, dict[str, object]]:
        out = run_cli("status", "--json", "--config", str(a.config_path),
                      env={"TZ": "Asia/Kolkata"})
        return {m["machine_name"]: m for m in json.loads(out.stdout)["members"]}

    wait_until(lambda: "a" in members(), 10, message="a registered")
    a.signal(signal.SIGKILL)  # gone without a word: its member row stays
    assert a.proc is not None
    a.proc.wait(10)
    table = "corda_ha_lease_member"
    pg_server.execute(f"UPDATE {table} SET last_seen = clock_timestamp() - interval "
                      "'10 minutes' WHERE lease_name = %s", [pair.lease_name])
    row = members()["a"]
    assert row["gone"] is True and row["fresh"] is False
    assert str(row["last_seen"]).endswith("+05:30"), row  # this host's zone, ISO 8601
    text = run_cli("status", "--config", str(a.config_path), env={"TZ": "Asia/Kolkata"}).stdout
    print(text)
    (line,) = [x for x in text.splitlines() if x.strip().startswith("a ")]
    assert "GONE: last seen " in line and "+05:30 (10 min" in line, line
    assert "removed after 24 h unseen" in line, line
    assert "could take over" not in line

    # a day unseen: the next refresh of any member removes it
    hours = MEMBER_RETENTION.total_seconds() / 3600 + 1
    pg_server.execute(f"UPDATE {table} SET last_seen = clock_timestamp() - interval "
                      f"'{hours} hours' WHERE lease_name = %s", [pair.lease_name])
    b = pair.add("b")
    b.start()
    b.wait_node_up(15)
    wait_until(lambda: set(members()) == {"b"}, 15, message="a's row removed")
