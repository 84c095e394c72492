"""supervisor.config: the database block. URLs in libpq and JDBC forms (what is kept,
dropped with a warning, refused), explicit settings winning over the URL, and the
password: from the config, a file or the environment, never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import (
    dump_config,
    redacted_dict,
)
from tests.harness.config import BASE, config_error, load_text

# ------------------------------------------------------------------ database URL


@pytest.mark.parametrize(("url", "conninfo", "user", "password", "schema"), [
    ("jdbc:postgresql://db.example:5432/corda?sslmode=require",
     "postgresql://db.example:5432/corda?sslmode=require", None, None, None),
    ("jdbc:postgresql://db:5432/corda?sslmode=require&currentSchema=ha",
     "postgresql://db:5432/corda?sslmode=require", None, None, "ha"),
    ("jdbc:postgresql://db/corda?user=corda&password=s%40cret&sslrootcert=/etc/ca.pem",
     "postgresql://db/corda?sslrootcert=%2Fetc%2Fca.pem", "corda", "s@cret", None),
    ("jdbc:postgresql:corda", "postgresql://localhost/corda", None, None, None),
    ("jdbc:postgresql://h1:5432,h2:5432/corda?targetServerType=primary",
     "postgresql://h1:5432,h2:5432/corda?target_session_attrs=read-write", None, None, None),
    ("jdbc:postgresql://db/corda?ssl=true&ApplicationName=node1",
     "postgresql://db/corda?application_name=node1&sslmode=verify-full", None, None, None),
    ("postgresql://u:p%40ss@db:5432/corda?sslmode=disable",
     "postgresql://db:5432/corda?sslmode=disable", "u", "p@ss", None),
    ("postgres://db/corda?password=pw&user=u", "postgresql://db/corda", "u", "pw", None),
    ("host=db port=5432 dbname=corda user=u password='p w'", "dbname=corda host=db port=5432",
     "u", "p w", None),  # rebuilt by libpq (its option order) when user/password are removed
    ("host=db port=5432 dbname=corda", "host=db port=5432 dbname=corda", None, None, None),
])
def test_urls(tmp_path: Path, url: str, conninfo: str, user: str | None, password: str | None,
              schema: str | None) -> None:
    config = load_text(tmp_path, BASE + f"database.url = {json.dumps(url)}\n")
    assert config.database.conninfo == conninfo
    assert config.database.user == user
    assert config.database.password == password
    assert config.database.schema == schema
    assert "password" not in config.database.conninfo


def test_jdbc_only_parameters_dropped_with_warning(tmp_path: Path) -> None:
    url = "jdbc:postgresql://db/corda?prepareThreshold=0&sslmode=require&loginTimeout=5"
    config = load_text(tmp_path, BASE + f'database.url = "{url}"\n')
    assert config.database.conninfo == "postgresql://db/corda?sslmode=require"
    text = " ".join(config.warnings)
    assert "prepareThreshold" in text and "loginTimeout" in text


def test_explicit_schema_user_password_win_over_url(tmp_path: Path) -> None:
    url = "jdbc:postgresql://db/corda?currentSchema=a&user=u1&password=p1"
    config = load_text(tmp_path, BASE + f'database {{ url = "{url}", schema = b, user = u2, '
                                   "password = p2 }\n")
    assert (config.database.schema, config.database.user, config.database.password) == (
        "b", "u2", "p2")
    assert len(config.warnings) == 3
    assert not any("p1" in w or "p2" in w for w in config.warnings)


@pytest.mark.parametrize(("url", "fragment"), [
    ("jdbc:mysql://db/corda", "PostgreSQL JDBC"),
    ("mysql://db/corda", "unsupported URL scheme"),
    ("host=db password=hunter2 bogus", "not a valid libpq"),
    ("postgresql://db/corda?bogus=1", "not a valid libpq"),
    ("   ", "must not be empty"),
])
def test_bad_urls(tmp_path: Path, url: str, fragment: str) -> None:
    err = config_error(tmp_path, BASE + f"database.url = {json.dumps(url)}\n")
    assert err.key == "database.url"
    assert fragment in str(err)
    assert "hunter2" not in str(err)


# ------------------------------------------------------------------ passwords


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret\n")
    config = load_text(tmp_path, BASE + f'database.passwordFile = "{secret}"\n')
    assert config.database.password == "file-secret"


def test_password_file_missing(tmp_path: Path) -> None:
    err = config_error(tmp_path, BASE + f'database.passwordFile = "{tmp_path / "nope"}"\n')
    assert err.key == "database.passwordFile"
    assert "cannot read" in str(err)
    assert err.line == BASE.count("\n") + 1


def test_password_file_empty(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    err = config_error(tmp_path, BASE + f'database.passwordFile = "{tmp_path / "pw"}"\n')
    assert err.key == "database.passwordFile" and "empty" in str(err)


def test_password_and_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    err = config_error(tmp_path, BASE + 'database { password = y, '
                       f'passwordFile = "{tmp_path / "pw"}" }}\n')
    assert "not both" in str(err)


def test_password_from_environment(tmp_path: Path) -> None:
    text = BASE + "database.password = ${?CORDA_HA_DB_PASSWORD}\n"
    config = load_text(tmp_path, text, environ={"CORDA_HA_DB_PASSWORD": "env-secret"})
    assert config.database.password == "env-secret"
    assert load_text(tmp_path, text).database.password is None


def test_password_never_shown(tmp_path: Path) -> None:
    secret = "Sup3r-S3cret-Value"
    for text in (
        BASE + "database.password = ${?PW}\n",
        BASE + f'database.url = "postgresql://u:{secret}@db/corda"\n',
        BASE + f'database.url = "jdbc:postgresql://db/corda?password={secret}&foo=1"\n',
        BASE + f'database.url = "host=db password={secret}"\n',
    ):
        config = load_text(tmp_path, text, environ={"PW": secret})
        assert config.database.password == secret
        for shown in (repr(config), str(config), repr(config.database), dump_config(config),
                      json.dumps(redacted_dict(config)), " ".join(config.warnings)):
            assert secret not in shown
        assert redacted_dict(config)["database"]["password"] == "***"


def test_redacted_dict_shape(tmp_path: Path) -> None:
    config = load_text(tmp_path, BASE + "node.environment { API_TOKEN = t0k, JAVA_OPTS = x }\n")
    data = json.loads(dump_config(config))
    assert data == redacted_dict(config)
    assert set(data) == {"source", "mutualExclusionConfiguration", "database", "node",
                         "restart", "health", "logging", "hooks", "fencing", "timing", "candidate",
                         "warnings"}
    assert data["mutualExclusionConfiguration"] == {
        "on": True, "machineName": "host-a", "updateInterval": 0.5, "waitInterval": 2.0,
        "fencingMargin": pytest.approx(0.2)}
    assert data["database"]["password"] is None
    assert data["database"]["leaseName"] == "corda-node"
    assert data["node"]["stopTimeout"] == 1.0
    assert data["node"]["environment"] == {"API_TOKEN": "***", "JAVA_OPTS": "x"}
    assert data["restart"]["maxCrashes"] == 5
