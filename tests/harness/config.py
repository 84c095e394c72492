"""Supervisor configuration files for tests: the one HOCON writer, and the literal texts
the configuration tests parse.

`supervisor_config(...)` writes a supervisor config (or a part of one, to append to
another: HOCON merges objects) from blocks, each a mapping of settings, raw HOCON
text (`Raw`), or None (left out). Values are written as HOCON: a `str` quoted, a
number, a boolean, a list, a nested mapping, or `Raw` text as it is (a duration with
its unit, `ms(500)`; a substitution, `Raw("${?X}")`). Every setting of a mapping gets
a line of its own (`  command = [...]`), so a test may still edit the text line by
line (tests/harness/host.py's `EditedHost`, tests/chaos/runner.py's `edit_config`).

`lease(...)` is the `mutualExclusionConfiguration` block, `LAB_RESTART`, `LAB_HEALTH` and
`LAB_LOGGING` the blocks of the lab hosts. `write_config(path, ...)` writes the file.

`BASE`, `WITH_USER` and the Corda `node.conf` texts are inputs of the configuration tests, which
check the parser on exact text (lines included); they stay literal.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import pytest

from supervisor.config import Config, ConfigError, load_config


class Raw(str):
    """HOCON text written as it is: a value (`500ms`, `${?X}`) or a block's body."""


Value: TypeAlias = "str | int | float | bool | Raw | Sequence[Value] | Mapping[str, Value]"
Block: TypeAlias = "Mapping[str, Value | None] | Raw | None"

_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def ms(n: float) -> Raw:
    """A duration in milliseconds, with its unit."""
    return Raw(f"{n:g}ms")


def seconds(n: float) -> Raw:
    """A duration in seconds, with its unit."""
    return Raw(f"{n:g}s")


def render(value: Value) -> str:
    """One value as HOCON."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {render(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(render(v) for v in value) + "]"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def block(name: str, body: Block) -> str:
    """`name { ... }`, one setting a line; "" for None."""
    if body is None:
        return ""
    if isinstance(body, Raw):
        lines = [f"  {body}"]
    else:
        lines = [f"  {_key(k)} = {render(v)}" for k, v in body.items() if v is not None]
    return "\n".join([f"{name} {{", *lines, "}"]) + "\n"


def lease(machine_name: str, update_ms: Value | None = 500, wait_ms: Value | None = 2000, *,
          on: bool = True, **more: Value | None) -> dict[str, Value | None]:
    """The `mutualExclusionConfiguration` block (intervals: a number is Corda's
    milliseconds)."""
    return {"on": on, "machineName": machine_name, "updateInterval": update_ms,
            "waitInterval": wait_ms, **more}


#: The restart policy of the lab hosts: quick retries, a crash loop at the third crash.
LAB_RESTART: dict[str, Value | None] = {
    "initialDelay": ms(200), "multiplier": 2, "maxDelay": seconds(1),
    "resetAfter": seconds(30), "maxCrashes": 3, "window": seconds(30),
    "cooldown": seconds(30)}
#: The lab hosts' health endpoint (any free port) and logging (JSON lines, DEBUG).
LAB_HEALTH: dict[str, Value | None] = {"enabled": True, "host": "127.0.0.1", "port": 0}
LAB_LOGGING: dict[str, Value | None] = {"format": Raw("json"), "level": Raw("DEBUG")}


def supervisor_config(*, lease: Block = None, database: Block = None, node: Block = None,
                      restart: Block = None, health: Block = None, logging: Block = None,
                      fencing: Block = None, hooks: Block = None, extra: str = "") -> str:
    """A supervisor config (or part of one) from its blocks, then `extra` as it is."""
    return "".join([
        block("mutualExclusionConfiguration", lease), block("database", database),
        block("node", node), block("restart", restart), block("health", health),
        block("logging", logging), block("fencing", fencing), block("hooks", hooks),
        extra + "\n" if extra else ""])


def write_config(path: Path, **blocks: Block | str) -> Path:
    """Write `supervisor_config(**blocks)` to `path`; returns `path`."""
    path.write_text(supervisor_config(**blocks))  # type: ignore[arg-type]
    return path


def startup_config(tmp_path: Path, url: str, *, extra: str = "",
                   node: Sequence[str] = ("/bin/sleep", "1000"),
                   intervals: tuple[Value, Value] = (500, 2000)) -> Path:
    """A config for a supervisor expected to stop at start (or to wait the database out):
    machineName s, this `url`, a lease name of its own, a health endpoint on any port,
    JSON logs; a new file in `tmp_path`."""
    return write_config(
        tmp_path / f"s-{uuid.uuid4().hex[:6]}.conf", lease=lease("s", *intervals),
        database={"url": url, "connectTimeout": seconds(2), "operationTimeout": seconds(1),
                  "leaseName": uuid.uuid4().hex},
        node={"command": list(node), "workingDirectory": str(tmp_path)},
        health={"host": "127.0.0.1", "port": 0}, logging={"format": Raw("json")},
        extra=extra)


# ------------------------------------------------------------------ parser inputs

#: A minimal valid config, literal: the configuration tests count its lines.
BASE = """\
mutualExclusionConfiguration {
  on = true
  machineName = "host-a"
  updateInterval = 500
  waitInterval = 2000
}
database { url = "postgresql://localhost/corda" }
node { command = ["/bin/true"], stopTimeout = 1s }
"""


def write_text(tmp_path: Path, text: str, name: str = "supervisor.conf") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None,
              hostname: str | None = "test-host") -> Config:
    """Load `text` hermetically: the environment is `environ` (default empty)."""
    return load_config(write_text(tmp_path, text), hostname=hostname,
                       environ={} if environ is None else environ)


def config_error(tmp_path: Path, text: str,
                 environ: dict[str, str] | None = None) -> ConfigError:
    """The `ConfigError` that loading `text` raises (fails the test when none)."""
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, environ)
    return info.value


#: A short config with a login role, for tests of one block: the block a test appends
#: (`load_with`, `error_with`) begins on line 6 of `s.conf`.
WITH_USER = """
mutualExclusionConfiguration { on = true, machineName = a, updateInterval = 500,
                                waitInterval = 2000 }
database { url = "postgresql://db/corda", user = corda_ha }
node { command = ["/bin/true"] }
"""


def load_with(tmp_path: Path, extra: str) -> Config:
    """`WITH_USER` and `extra`, loaded from `s.conf` with an empty environment."""
    path = tmp_path / "s.conf"
    path.write_text(WITH_USER + extra)
    return load_config(str(path), environ={})


def error_with(tmp_path: Path, extra: str) -> str:
    """The message of the `ConfigError` that `load_with` raises."""
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, extra)
    return str(info.value)


#: Corda's node.conf as an operator writes it, with the lease settings and database.
NODE_CONF = """\
myLegalName = "O=PartyA,L=London,C=GB"
p2pAddress = "localhost:10002"
enterpriseConfiguration = {
    mutualExclusionConfiguration = {
        on = true
        machineName = ${HOSTNAME}
        updateInterval = 20000
        waitInterval = 40000
    }
}
dataSourceProperties = {
    dataSourceClassName = "org.postgresql.ds.PGSimpleDataSource"
    "dataSource.url" = "jdbc:postgresql://db.example.com:5432/corda?currentSchema=party_a"
    "dataSource.user" = "corda_node"
    "dataSource.password" = "n0de-Secret"
}
"""

#: A supervisor file that names only the node (the rest comes from node.conf).
ONLY_NODE = """\
node { command = ["/bin/true"], workingDirectory = "%s" }
health { host = "0.0.0.0", port = 8080, internalPort = 8081 }
logging { format = json }
"""


def node_conf_setup(tmp_path: Path, node_conf: str = NODE_CONF, extra: str = "") -> Path:
    """`node.conf` and a supervisor file naming only the node, in `tmp_path`; the
    supervisor file's path."""
    (tmp_path / "node.conf").write_text(node_conf)
    path = tmp_path / "supervisor.conf"
    path.write_text(ONLY_NODE % tmp_path + extra)
    return path
