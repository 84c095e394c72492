"""The schema of the file: each block read, checked and turned into dataclasses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, cast

from supervisor.config.blocks import BOOLEANS, Block
from supervisor.config.candidate import parse_candidate
from supervisor.config.cordaconf import load as load_corda
from supervisor.config.cordaconf import locate as locate_corda
from supervisor.config.dburl import ParsedUrl, convert_url
from supervisor.config.durations import type_name
from supervisor.config.fencingconf import ROLE_NAME, parse_fencing
from supervisor.config.health import health_config
from supervisor.config.hocon import block_line, parse_hocon
from supervisor.config.model import (
    DEFAULT_SUPERVISOR_ROLE,
    Config,
    ConfigError,
    DatabaseConfig,
    HooksConfig,
    LeaseConfig,
    LoggingConfig,
    NodeConfig,
    ReadinessConfig,
    RestartConfig,
)
from supervisor.core.timing import MIN_RENEWAL_WINDOW

_TOP_KEYS = ("enterpriseConfiguration", "mutualExclusionConfiguration", "database", "node",
             "restart", "health", "logging", "hooks", "fencing", "candidate")
_HOOK_KEYS = ("onRoleChange", "preStop", "timeout")
_LEASE_KEYS = ("on", "machineName", "updateInterval", "waitInterval", "fencingMargin")
_DB_KEYS = ("url", "user", "password", "passwordFile", "schema", "table", "leaseName",
            "connectTimeout", "operationTimeout", "ownerRole")
_NODE_KEYS = ("command", "workingDirectory", "environment", "stopTimeout", "cgroup",
              "cordaConfig", "readiness", "sharedDirectories", "sharedProbeTimeout")
_READINESS_KEYS = ("port", "host", "logPattern", "startTimeout")
_RESTART_KEYS = ("initialDelay", "multiplier", "maxDelay", "resetAfter", "maxCrashes", "window",
                 "cooldown")
_LOGGING_KEYS = ("format", "level")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMATS = ("auto", "json", "console")
_RESERVED_ENV = ("CORDA_HA_EPOCH", "CORDA_HA_MACHINE_NAME", "CORDA_HA_NODE_KEY")

MIN_INTERVAL = 0.1  # the least updateInterval / waitInterval accepted (seconds)
DEFAULT_TABLE = "corda_ha_lease"
DEFAULT_LEASE_NAME = "corda-node"
DEFAULT_OWNER_ROLE = "corda_ha_owner"


def _lease_block(root: Block) -> Block | None:
    """Our own mutualExclusionConfiguration (nested or top level), or None."""
    enterprise = root.block("enterpriseConfiguration")
    nested: Block | None = None
    if enterprise is not None:
        enterprise.check_keys(("mutualExclusionConfiguration",))
        nested = enterprise.block("mutualExclusionConfiguration")
    top = root.block("mutualExclusionConfiguration")
    if nested is not None and top is not None:
        root.fail("mutualExclusionConfiguration",
                  "given both at top level and under enterpriseConfiguration; keep one")
    return nested or top


def _lease(block: Block, hostname: str) -> LeaseConfig:
    block.check_keys(_LEASE_KEYS)
    enabled = block.get_bool("on", True)
    machine_name = block.get_str("machineName", hostname).strip()
    if not machine_name:
        block.fail("machineName", "must not be empty")
    if enabled:
        for name in ("updateInterval", "waitInterval"):
            if not block.has(name):
                block.fail(name, "is required when on = true (milliseconds, e.g. 20000, or 20s)")
    update = block.duration("updateInterval", 20.0)
    wait = block.duration("waitInterval", 40.0)
    for name, value in (("updateInterval", update), ("waitInterval", wait)):
        if enabled and value < MIN_INTERVAL:
            raw = block.raw(name)
            hint = (f"; a bare integer is milliseconds (Corda's form): {raw} means {raw} ms, "
                    f"write {raw}s for seconds" if isinstance(raw, int) else "")
            block.fail(name, f"must be at least {MIN_INTERVAL * 1000:g} ms, got "
                             f"{value * 1000:g} ms{hint}")
    if wait <= update:
        block.fail("waitInterval", f"must be greater than updateInterval ({wait:g} s <= "
                                   f"{update:g} s), as Corda requires")
    margin = block.duration("fencingMargin", min(2.0, wait / 10))
    window = wait - margin - update
    if window < MIN_RENEWAL_WINDOW:
        name = "fencingMargin" if block.has("fencingMargin") else "waitInterval"
        block.fail(name, f"waitInterval - fencingMargin - updateInterval = {wait:g} s - "
                         f"{margin:g} s - {update:g} s = {window:.3g} s leaves no time for a "
                         f"renewal (at least {MIN_RENEWAL_WINDOW:g} s is needed): the node "
                         "would be killed before a renewal could be answered. Raise "
                         "waitInterval, or lower updateInterval or fencingMargin")
    return LeaseConfig(enabled=enabled, machine_name=machine_name, update_interval=update,
                       wait_interval=wait, margin=margin)


def _identifier(block: Block, name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value or "\x00" in value:
        block.fail(name, "must be a non-empty identifier")
    if len(value.encode()) > 63:
        block.fail(name, f"must be at most 63 bytes (PostgreSQL's identifier limit), got "
                         f"{len(value.encode())}")
    return value


def _owner_role(block: Block, user: str | None) -> str:
    """`database.ownerRole`: a plain role name, never the supervisor's own login."""
    owner = block.get_str("ownerRole", DEFAULT_OWNER_ROLE)
    if not ROLE_NAME.match(owner):
        block.fail("ownerRole", f"not a plain role name: {owner!r} (letters, digits, _ and $)")
    if owner == (user or DEFAULT_SUPERVISOR_ROLE):
        block.fail("ownerRole", f"is the supervisor's own login role ({owner}): the tables must "
                                "belong to a role nobody logs in as")
    return owner


def _database(block: Block, lease: LeaseConfig, warnings: list[str]) -> DatabaseConfig:
    block.check_keys(_DB_KEYS)
    url_text = block.opt_str("url")
    if url_text is None:
        if lease.enabled:
            block.fail("url", "is required (postgresql://host/db, host=... dbname=..., or "
                              "jdbc:postgresql://host:5432/db)")
        url = ParsedUrl("")
    else:
        url = convert_url(url_text, block.key("url"), warnings)

    user = block.opt_str("user")
    if user is not None and url.user is not None and user != url.user:
        warnings.append(f"database.user {user!r} overrides the user {url.user!r} in the url")
    user = user or url.user

    password = block.opt_str("password") or None
    if block.has("password") and block.has("passwordFile"):
        block.fail("passwordFile", "give either password or passwordFile, not both")
    password_file = block.opt_str("passwordFile")
    if password_file is not None:
        password = block.secret_file("passwordFile", os.path.abspath(password_file))
    if password is not None and url.password is not None:
        warnings.append("database: the password in the url is ignored; password or "
                        "passwordFile is used")
    source: str | None
    if password_file is not None:
        source = f"database.passwordFile ({os.path.abspath(password_file)})"
    elif password is not None:
        source = "database.password (e.g. ${?CORDA_HA_DB_PASSWORD})"
    elif url.password is not None:
        source = "database.url"
    else:
        source = None
    password = password or url.password

    schema = block.opt_str("schema")
    if schema is None:
        schema = url.schema
    elif url.schema is not None and url.schema != schema:
        warnings.append(f"database.schema {schema!r} overrides currentSchema {url.schema!r} "
                        "in the url")
    schema = _identifier(block, "schema" if block.has("schema") else "url", schema)
    table = _identifier(block, "table", block.get_str("table", DEFAULT_TABLE))
    assert table is not None
    lease_name = block.get_str("leaseName", DEFAULT_LEASE_NAME)
    if not lease_name.strip():
        block.fail("leaseName", "must not be empty")
    connect_timeout = block.duration("connectTimeout", 5.0)
    operation_timeout = block.duration("operationTimeout", min(5.0, lease.update_interval))
    if lease.enabled and operation_timeout > lease.update_interval:
        warnings.append(f"database.operationTimeout ({operation_timeout:g} s) is longer than "
                        f"updateInterval ({lease.update_interval:g} s): one slow call can delay "
                        "the next renewal")
    return DatabaseConfig(password_source=source,
                          conninfo=url.conninfo, user=user, password=password, schema=schema,
                          table=table, lease_name=lease_name, connect_timeout=connect_timeout,
                          operation_timeout=operation_timeout,
                          owner_role=_owner_role(block, user))


def _node(root: Block, warnings: list[str], corda_config: str | None) -> NodeConfig:
    block = root.block("node")
    if block is None:
        root.fail("node", 'missing: add node { command = ["/usr/bin/java", "-jar", "corda.jar"] }')
    block.check_keys(_NODE_KEYS)
    raw = block.raw("command")
    if raw is None:
        block.fail("command", 'is required, e.g. command = ["/usr/bin/java", "-jar", "corda.jar"]')
    if isinstance(raw, str):
        block.fail("command", "must be a list of strings, not a single string (no shell is "
                              f"involved); write it as command = {json.dumps(raw.split())}")
    if not isinstance(raw, list):
        block.fail("command", f"expected a list of strings, got {type_name(raw)}")
    if not raw:
        block.fail("command", "must not be empty")
    command: list[str] = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            command.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            command.append(str(item))
        else:
            block.fail("command", f"element {index} must be a string, got {type_name(item)}")
    if not command[0].strip():
        block.fail("command", "the program (element 0) must not be empty")

    directory = os.path.abspath(block.get_str("workingDirectory", os.getcwd()))
    if not os.path.isdir(directory):
        warnings.append(f"node.workingDirectory {directory!r} is not a directory (yet)")

    environment: dict[str, str] = {}
    env_block = block.block("environment")
    if env_block is not None:
        for name, value in env_block.data.items():
            if name in _RESERVED_ENV:
                env_block.fail(name, "is set by the supervisor and cannot be configured")
            if isinstance(value, bool):
                environment[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                environment[name] = str(value)
            elif value is None:
                continue
            else:
                env_block.fail(name, f"expected a string, got {type_name(value)} (quote keys "
                                     "that contain dots)")
    stop_timeout = block.duration("stopTimeout", 30.0)
    return NodeConfig(command=tuple(command), working_directory=directory,
                      environment=MappingProxyType(environment), stop_timeout=stop_timeout,
                      cgroup=_node_cgroup(block, warnings), corda_config=corda_config,
                      readiness=_readiness(block),
                      shared_directories=_shared_directories(block),
                      shared_probe_timeout=block.duration("sharedProbeTimeout", 5.0))


def _shared_directories(node: Block) -> tuple[str, ...]:
    raw = node.raw("sharedDirectories")
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, list):
        node.fail("sharedDirectories", 'expected a list of directories, e.g. '
                                       'sharedDirectories = ["/mnt/corda-shared/artemis"]')
    found: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not os.path.isabs(item):
            node.fail("sharedDirectories", f"element {index} must be an absolute path, got "
                                           f"{item!r}")
        found.append(item)
    return tuple(found)


def _readiness(node: Block) -> ReadinessConfig | None:
    block = node.block("readiness")
    if block is None:
        return None
    block.check_keys(_READINESS_KEYS)
    port: int | None = None
    if block.has("port"):
        port = block.get_int("port", 0)
        if not 1 <= port <= 65535:
            block.fail("port", f"must be between 1 and 65535, got {port}")
    pattern = block.opt_str("logPattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            block.fail("logPattern", f"not a regular expression: {exc}")
    if (port is None) == (pattern is None):
        block.fail("port" if port is not None else "logPattern",
                   "give exactly one of port (a TCP connect succeeds) or logPattern (a node "
                   "output line matches), e.g. logPattern = \"started up and registered\"")
    return ReadinessConfig(port=port, host=block.get_str("host", "127.0.0.1"),
                           log_pattern=pattern,
                           start_timeout=block.duration("startTimeout", 300.0))


def _node_cgroup(block: Block, warnings: list[str]) -> str:
    """node.cgroup: auto | off | an absolute cgroup directory (true/false mean auto/off)."""
    raw = block.raw("cgroup")
    if raw is None:
        return "auto"
    if isinstance(raw, bool):
        return "auto" if raw else "off"
    if not isinstance(raw, str):
        block.fail("cgroup", f'expected auto, off or an absolute cgroup directory such as '
                             f'"/sys/fs/cgroup/corda", got {type_name(raw)}')
    value = raw.strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    if value.lower() in BOOLEANS:
        return "auto" if BOOLEANS[value.lower()] else "off"
    if not os.path.isabs(value):
        block.fail("cgroup", f"expected auto, off or an absolute cgroup directory, got {raw!r}")
    value = os.path.normpath(value)
    if not os.path.isdir(value):
        warnings.append(f"node.cgroup {value!r} is not a directory (yet): node runs will be "
                        "held by their process group only")
    return value


def _restart(root: Block) -> RestartConfig:
    block = root.block("restart") or Block({}, "restart")
    block.check_keys(_RESTART_KEYS)
    initial = block.duration("initialDelay", 1.0, positive=False)
    multiplier = block.get_float("multiplier", 2.0)
    if multiplier < 1:
        block.fail("multiplier", f"must be at least 1, got {multiplier:g}")
    max_delay = block.duration("maxDelay", max(60.0, initial))
    if max_delay < initial:
        block.fail("maxDelay", f"must be at least initialDelay ({max_delay:g} s < {initial:g} s)")
    max_crashes = block.get_int("maxCrashes", 5)
    if max_crashes < 1:
        block.fail("maxCrashes", f"must be at least 1, got {max_crashes}")
    return RestartConfig(initial_delay=initial, multiplier=multiplier, max_delay=max_delay,
                         reset_after=block.duration("resetAfter", 120.0), max_crashes=max_crashes,
                         window=block.duration("window", 300.0),
                         cooldown=block.duration("cooldown", 300.0, positive=False))


def _logging(root: Block) -> LoggingConfig:
    block = root.block("logging") or Block({}, "logging")
    block.check_keys(_LOGGING_KEYS)
    fmt = block.get_str("format", "auto").strip().lower()
    if fmt not in _FORMATS:
        block.fail("format", f"must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    level = block.get_str("level", "INFO").strip().upper()
    level = "WARNING" if level == "WARN" else level
    if level not in _LEVELS:
        block.fail("level", f"must be one of {', '.join(_LEVELS)}, got {level!r}")
    return LoggingConfig(format=cast(Literal["auto", "json", "console"], fmt), level=level)


def _build(tree: Mapping[str, Any], hostname: str, source: str,
           environ: Mapping[str, str]) -> Config:
    root = Block(tree, "")
    root.check_keys(_TOP_KEYS)
    warnings: list[str] = []
    node_block = root.block("node")
    corda_path = locate_corda(node_block, source) if node_block is not None else None
    corda = load_corda(corda_path, environ) if corda_path is not None else None

    own_lease, their_lease = _lease_block(root), corda.lease_block() if corda else None
    if own_lease is None and their_lease is None:
        root.fail("mutualExclusionConfiguration",
                  "missing: add mutualExclusionConfiguration { on = true, machineName = "
                  "${HOSTNAME}, updateInterval = 20000, waitInterval = 40000 } (at top level or "
                  "under enterpriseConfiguration, here or in Corda's node.conf named by "
                  "node.cordaConfig), or on = false to run without a lease")
    if own_lease is not None:
        lease = _lease(own_lease, hostname)
    else:
        assert corda is not None and their_lease is not None
        with corda.blamed():
            lease = _lease(their_lease, hostname)
    if corda is not None and own_lease is not None and their_lease is not None:
        with contextlib.suppress(ConfigError):
            _differs("mutualExclusionConfiguration", lease, _lease(their_lease, hostname),
                     corda.path, warnings)

    own_db, their_db = root.block("database"), corda.database_block() if corda else None
    if own_db is None and their_db is None:
        if lease.enabled:
            root.fail("database", "missing: the lease needs database { url = ... } (or "
                                  "dataSourceProperties in Corda's node.conf, see "
                                  "node.cordaConfig)")
        own_db = Block({}, "database")
    if own_db is not None:
        database = _database(own_db, lease, warnings)
    else:
        assert corda is not None and their_db is not None
        with corda.blamed():
            database = _database(their_db, lease, warnings)
    if corda is not None and root.block("database") is not None and their_db is not None:
        with contextlib.suppress(ConfigError):
            theirs = _database(their_db, lease, [])
            for name in ("conninfo", "user"):
                if getattr(database, name) != getattr(theirs, name):
                    warnings.append(f"database.{'url' if name == 'conninfo' else name} differs "
                                    f"from dataSourceProperties in {corda.path}; this file's "
                                    "is used")
    node = _node(root, warnings, corda.path if corda else None)
    node_user = None
    if their_db is not None and isinstance(user := their_db.raw("user"), str):
        node_user = user
    restart = _restart(root)
    health = health_config(root, warnings)
    logging = _logging(root)
    return Config(lease=lease, database=database, node=node, restart=restart, health=health,
                  logging=logging, source=source, warnings=tuple(warnings),
                  hooks=_hooks(root), fencing=parse_fencing(root, database, node_user),
                  candidate=parse_candidate(root))


def _hooks(root: Block) -> HooksConfig:
    block = root.block("hooks")
    if block is None:
        return HooksConfig()
    block.check_keys(_HOOK_KEYS)

    def command(name: str) -> tuple[str, ...]:
        raw = block.raw(name)
        if raw is None:
            return ()
        if isinstance(raw, str) or not isinstance(raw, list) or not raw \
                or not all(isinstance(x, str | int) for x in raw):
            block.fail(name, 'expected a command as a list of strings (no shell), e.g. '
                             '["/usr/local/bin/drain-flows", "--wait"]')
        return tuple(str(x) for x in raw)

    return HooksConfig(on_role_change=command("onRoleChange"), pre_stop=command("preStop"),
                       timeout=block.duration("timeout", 30.0))


def _differs(block: str, ours: LeaseConfig, theirs: LeaseConfig, path: str,
             warnings: list[str]) -> None:
    names = {"enabled": "on", "machine_name": "machineName",
             "update_interval": "updateInterval", "wait_interval": "waitInterval"}
    for field_name, key in names.items():
        a, b = getattr(ours, field_name), getattr(theirs, field_name)
        if a != b:
            warnings.append(f"{block}.{key} = {a!r} differs from {b!r} in {path}; this "
                            "file's is used (keep them equal: Corda's own guard reads node.conf)")


def load_config(path: str, *, hostname: str | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate one HOCON file; raise only `ConfigError`.

    `${VAR}` / `${?VAR}` are resolved from `environ` (default: `os.environ`), never from
    anything else. `${HOSTNAME}` resolves even when `environ` has no HOSTNAME: it then
    falls back to `hostname` (default: `socket.gethostname()`); that name is also the
    default `machineName`. Every duration key takes integer milliseconds or a HOCON
    duration (see `parse_duration`).
    """
    env = dict(os.environ if environ is None else environ)
    if not env.get("HOSTNAME"):
        env["HOSTNAME"] = hostname or socket.gethostname()
    source = os.path.abspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=path) from None
    tree = parse_hocon(path, text, env)
    try:
        return _build(tree, env["HOSTNAME"], source, env)
    except ConfigError as exc:
        if exc.path is not None:
            raise  # about another file (Corda's node.conf), already located
        raise ConfigError(exc.message, path=path, key=exc.key,
                          line=block_line(text, exc.key)) from None
