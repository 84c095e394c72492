"""The configuration as frozen dataclasses, `ConfigError` and `EX_CONFIG`. No parsing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast

EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration problem. `str()` names the file, the key and, when known, the line."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.key = key
        self.line = line
        where = path or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text)


@dataclass(frozen=True)
class LeaseConfig:
    """Corda's `mutualExclusionConfiguration`, in seconds."""

    enabled: bool  # `on`
    machine_name: str
    update_interval: float  # U
    wait_interval: float  # W, > U
    margin: float  # M: fencing slack, default min(2 s, W/10)


#: the role `schema` grants to when database.user is not set
DEFAULT_SUPERVISOR_ROLE = "corda_ha"


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the lease lives. `password` is never part of `repr()`."""

    conninfo: str  # libpq conninfo or URI, without the password
    user: str | None
    password: str | None = field(repr=False)
    schema: str | None
    table: str
    lease_name: str
    connect_timeout: float  # seconds; libpq rounds below 2 s up to 2 s
    operation_timeout: float  # hard, supervisor-owned bound on any single database call
    # where the password came from, for error messages (never the password itself)
    password_source: str | None = None  # None: no password configured
    # the trusted role that owns the lease tables (`schema`); nobody logs in as it
    owner_role: str = "corda_ha_owner"

    @property
    def password_text(self) -> str:
        """Where the password comes from, for messages: `the password from <source>`,
        or that none is configured."""
        if self.password_source is None:
            return ("no password (none is configured: libpq may still use ~/.pgpass or "
                    "PGPASSWORD)")
        return f"the password from {self.password_source}"

    @property
    def supervisor_role(self) -> str:
        """The role `schema` grants to: `user`, or `corda_ha` when not set."""
        return self.user or DEFAULT_SUPERVISOR_ROLE


@dataclass(frozen=True)
class ReadinessConfig:
    """When the node counts as ready (for /health and the load balancer)."""

    port: int | None  # a TCP connect to host:port succeeds
    host: str
    log_pattern: str | None  # or: a node output line matches this regular expression
    start_timeout: float  # not ready by then after its start: a failed start


@dataclass(frozen=True)
class NodeConfig:
    command: tuple[str, ...]
    working_directory: str
    environment: Mapping[str, str]
    stop_timeout: float  # S: SIGTERM -> SIGKILL grace
    # "auto" (a child cgroup per run under the supervisor's own cgroup, else process
    # groups), "off" (process groups only) or an absolute parent cgroup directory.
    cgroup: str = "auto"
    corda_config: str | None = None  # Corda's node.conf, when one was read
    readiness: ReadinessConfig | None = None  # None: ready as soon as it started
    shared_directories: tuple[str, ...] = ()  # probed (write + fsync + delete) before starts
    shared_probe_timeout: float = 5.0


@dataclass(frozen=True)
class HooksConfig:
    """Operator commands run on role changes and before planned stops (lists, no shell)."""

    on_role_change: tuple[str, ...] = ()
    pre_stop: tuple[str, ...] = ()
    timeout: float = 30.0


@dataclass(frozen=True)
class FencingConfig:
    """Database fencing (`supervisor.lease.fence`): this host's node role, locked out
    by the other host's acquisitions and unlocked by this host's. Off without a role."""

    node_role: str | None = None
    required: bool = True  # a fence that fails keeps the node from starting
    node_group: str = "corda_nodes"  # the group role holding Corda's privileges (`schema`)
    fencer_role: str = "corda_ha_fencer"  # owns the fence functions (`schema`)

    @property
    def enabled(self) -> bool:
        return self.node_role is not None


@dataclass(frozen=True)
class CandidateConfig:
    """How this host stands as a standby (`candidate { ... }`): `nofailover` hosts never
    take the lease; among standbys a higher `priority` takes over first (a lower one
    waits longer, never less: docs/design.md, "Priority among standbys")."""

    nofailover: bool = False
    priority: int = 0


@dataclass(frozen=True)
class RestartConfig:
    initial_delay: float
    multiplier: float
    max_delay: float
    reset_after: float  # a run this long resets the backoff
    max_crashes: int  # this many crashes within `window` -> release the lease and cool down
    window: float
    cooldown: float


@dataclass(frozen=True)
class HealthConfig:
    """The HTTP endpoint. `token` (from `token_file`) is never part of `repr()`; with it,
    /status and /metrics need `Authorization: Bearer <token>`. With `internal_port`,
    /status and /metrics are served only on `internal_host:internal_port`."""

    enabled: bool
    host: str
    port: int
    token_file: str | None = None
    token: str | None = field(default=None, repr=False)
    internal_host: str = "127.0.0.1"
    internal_port: int | None = None


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"]
    level: str  # DEBUG, INFO, WARNING, ERROR


@dataclass(frozen=True)
class Config:
    lease: LeaseConfig
    database: DatabaseConfig
    node: NodeConfig
    restart: RestartConfig
    health: HealthConfig
    logging: LoggingConfig
    source: str  # the file it came from
    warnings: tuple[str, ...] = ()  # non-fatal findings, logged at start
    hooks: HooksConfig = HooksConfig()
    fencing: FencingConfig = FencingConfig()
    candidate: CandidateConfig = CandidateConfig()


def config_to_json(config: Config) -> str:
    """The whole configuration as JSON, password included: for handing it to the
    daemon process over a pipe only (never a file, an argument or the environment)."""
    def fields(obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    data: dict[str, Any] = fields(config)
    for name in ("lease", "database", "node", "restart", "health", "logging", "hooks",
                 "fencing", "candidate"):
        data[name] = fields(getattr(config, name))
    data["node"]["environment"] = dict(config.node.environment)
    if config.node.readiness is not None:
        data["node"]["readiness"] = fields(config.node.readiness)
    return json.dumps(data)


def config_from_json(text: str) -> Config:
    """The inverse of `config_to_json`."""
    data: dict[str, Any] = json.loads(text)
    node = dict(data["node"])
    node["command"] = tuple(node["command"])
    node["shared_directories"] = tuple(node.get("shared_directories", ()))
    node["environment"] = MappingProxyType(dict(node["environment"]))
    if node.get("readiness") is not None:
        node["readiness"] = ReadinessConfig(**node["readiness"])
    logging_ = dict(data["logging"])
    return Config(
        lease=LeaseConfig(**data["lease"]), database=DatabaseConfig(**data["database"]),
        node=NodeConfig(**node), restart=RestartConfig(**data["restart"]),
        health=HealthConfig(**data["health"]),
        logging=LoggingConfig(format=cast(Literal["auto", "json", "console"],
                                          logging_["format"]), level=logging_["level"]),
        source=data["source"], warnings=tuple(data["warnings"]),
        hooks=HooksConfig(on_role_change=tuple(data["hooks"]["on_role_change"]),
                          pre_stop=tuple(data["hooks"]["pre_stop"]),
                          timeout=data["hooks"]["timeout"]),
        fencing=FencingConfig(**data["fencing"]),
        candidate=CandidateConfig(**data.get("candidate", {})))
