"""The `health` block's token file and internal address: loading, errors (file, line, key,
exit 78), warnings, redaction; and a real supervisor whose /status needs the token while
/health does not, with `status` still showing this host's view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.cli.operator import status_url
from supervisor.config import Config, ConfigError, config_from_json, dump_config, load_config
from supervisor.config.model import config_to_json
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster
from tests.harness.config import BASE, supervisor_config
from tests.harness.host import http_get
from tests.harness.pgserver import free_port

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cr3t-t0ken-0123456789abcdef"


def token_file(tmp_path: Path, text: str = TOKEN + "\n", mode: int = 0o640) -> Path:
    path = tmp_path / "health-token"
    path.write_text(text)
    path.chmod(mode)
    return path


def write(tmp_path: Path, health: str) -> Path:
    path = tmp_path / "supervisor.conf"
    path.write_text(BASE + health)
    return path


def load(tmp_path: Path, health: str) -> Config:
    return load_config(str(write(tmp_path, health)), hostname="host-a", environ={})


def error(tmp_path: Path, health: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, health)
    return info.value


def test_defaults_have_no_token_and_no_internal_address(tmp_path: Path) -> None:
    health = load(tmp_path, "").health
    assert (health.token, health.token_file, health.internal_port) == (None, None, None)
    assert health.internal_host == "127.0.0.1"


def test_token_file_is_read_and_never_shown(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    config = load(tmp_path, f'health {{ host = "0.0.0.0", tokenFile = "{path}" }}\n')
    assert config.health.token == TOKEN  # trailing newline dropped
    assert config.health.token_file == str(path)
    assert config.warnings == ()  # not an open door: no warning
    shown = json.loads(dump_config(config))
    assert shown["health"]["tokenFile"] == str(path)
    assert TOKEN not in dump_config(config) and TOKEN not in repr(config)
    assert config_from_json(config_to_json(config)).health == config.health  # to the daemon


@pytest.mark.parametrize(("mode", "readable"), [(0o600, True), (0o640, True), (0o660, True),
                                                (0o644, False), (0o602, False),
                                                (0o601, False)])
def test_a_token_file_others_can_access_is_a_config_error(tmp_path: Path, mode: int,
                                                           readable: bool) -> None:
    path = token_file(tmp_path, mode=mode)
    health = f'health {{\n  tokenFile = "{path}"\n}}\n'
    if readable:
        assert load(tmp_path, health).health.token == TOKEN
        return
    err = error(tmp_path, health)
    assert err.key == "health.tokenFile"
    assert err.line == BASE.count("\n") + 2
    assert f"mode {mode:04o}" in str(err) and "chmod o-rwx" in str(err)
    assert TOKEN not in str(err)


@pytest.mark.parametrize(("text", "why"), [
    (None, "cannot read"), ("\n", "empty"), ("short-token\n", "too short"),
    ("two words that are long enough\n", "printable ASCII without spaces"),
])
def test_bad_token_files(tmp_path: Path, text: str | None, why: str) -> None:
    path = tmp_path / "missing" if text is None else token_file(tmp_path, text)
    err = error(tmp_path, f'health.tokenFile = "{path}"\n')
    assert err.key == "health.tokenFile" and why in str(err), str(err)
    assert str(write(tmp_path, "")) in str(err)


def test_internal_address(tmp_path: Path) -> None:
    health = load(tmp_path, 'health { host = "0.0.0.0", port = 8080, internalPort = 9080 }\n'
                  ).health
    assert (health.internal_host, health.internal_port) == ("127.0.0.1", 9080)
    config = load(tmp_path, 'health { internalHost = "::1", internalPort = 9080 }\n')
    assert (config.health.internal_host, config.health.internal_port) == ("::1", 9080)
    assert config.warnings == ()


@pytest.mark.parametrize(("health", "key", "why"), [
    ('health { internalHost = "127.0.0.1" }', "health.internalHost", "needs internalPort"),
    ("health { port = 8080, internalPort = 8080 }", "health.internalPort", "must differ"),
    ("health { internalPort = 70000 }", "health.internalPort", "between 0 and 65535"),
    ("health { internalPort = nine }", "health.internalPort", "expected an integer"),
])
def test_bad_internal_address(tmp_path: Path, health: str, key: str, why: str) -> None:
    err = error(tmp_path, health + "\n")
    assert err.key == key and why in str(err), str(err)


@pytest.mark.parametrize(("health", "warned"), [
    ('health { host = "0.0.0.0" }', True),
    ('health { host = "127.0.0.1" }', False),
    ('health { host = "0.0.0.0", internalPort = 9080 }', False),
    ('health { host = "0.0.0.0", internalHost = "0.0.0.0", internalPort = 9080 }', True),
    ('health { host = "0.0.0.0", enabled = false }', False),
])
def test_an_open_status_port_is_warned_about(tmp_path: Path, health: str, warned: bool) -> None:
    warnings = load(tmp_path, health + "\n").warnings
    assert any("/status and /metrics are open" in w for w in warnings) == warned, warnings


def test_status_url_prefers_the_internal_address(tmp_path: Path) -> None:
    assert status_url(load(tmp_path, 'health { host = "0.0.0.0", port = 8080 }\n')) == \
        "http://127.0.0.1:8080/status"
    assert status_url(load(tmp_path, "health { port = 8080, internalPort = 9080 }\n")) == \
        "http://127.0.0.1:9080/status"
    assert status_url(load(tmp_path, 'health { internalHost = "::", internalPort = 9 }\n')) == \
        "http://[::1]:9/status"


def test_check_config_exits_78_on_a_world_readable_token_file(tmp_path: Path) -> None:
    path = token_file(tmp_path, mode=0o644)
    conf = write(tmp_path, f'health {{\n  tokenFile = "{path}"\n}}\n')
    r = run_cli("check-config", "--config", str(conf))
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert f"{conf}:{BASE.count(chr(10)) + 2}: health.tokenFile:" in r.stderr
    assert TOKEN not in r.stdout + r.stderr


# --------------------------------------------------------------------------- a real supervisor


def test_a_real_supervisor_wants_the_token_for_status_but_not_for_health(
        pair: Cluster, tmp_path: Path) -> None:
    path = token_file(tmp_path)
    port = free_port()
    a = pair.add("a", extra_conf=supervisor_config(
        health={"port": port, "tokenFile": str(path)}))
    a.start()
    a.wait_node_up(15)
    assert a.health_port() == port
    assert a.wait_event("health_listening", 5)["token"] is True
    assert http_get(port, "/health")[0] == 200
    assert http_get(port, "/liveness")[0] == 200
    assert http_get(port, "/status")[0] == 401
    assert http_get(port, "/metrics")[0] == 401
    r = run_cli("status", "--config", str(a.config_path), "--json", timeout=30)
    info = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert info["this_host_error"] is None
    assert info["this_host"]["machine_name"] == "a"  # the CLI sent the token
    assert TOKEN not in r.stdout + r.stderr
    assert not any(TOKEN in line for line in a.raw)  # never logged


def test_a_real_supervisor_serves_status_on_the_internal_address(pair: Cluster) -> None:
    port, internal = free_port(), free_port()
    a = pair.add("a", extra_conf=supervisor_config(
        health={"port": port, "internalPort": internal}))
    a.start()
    a.wait_node_up(15)
    listening = a.wait_event("health_listening", 5)
    assert (listening["port"], listening["internal_port"]) == (port, internal)
    assert http_get(port, "/health")[0] == 200
    assert http_get(port, "/status")[0] == 404
    assert http_get(internal, "/status")[0] == 200
    r = run_cli("status", "--config", str(a.config_path), "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["this_host"]["machine_name"] == "a"
