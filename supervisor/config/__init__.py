"""Configuration: one HOCON file per host -> frozen dataclasses.

All durations are float seconds after loading. `load_config` raises
`ConfigError` (never anything else) for any problem in the file; the CLI turns
it into a message and exit status 78 (EX_CONFIG).

Public API: `load_config`, `parse_duration`, `redacted_dict`, `dump_config`, the
dataclasses below, `ConfigError`, `EX_CONFIG`. See config/supervisor.conf for the layout.

Every duration key accepts an integer meaning milliseconds (Corda's form, for all
keys, not only updateInterval/waitInterval) or a HOCON duration (`20s`, `"1.5s"`,
`1500 ms`, `2 minutes`); `parse_duration` is the single place that normalises them.
Unknown keys anywhere are errors. The database password never reaches `conninfo`,
`repr()`, warnings, error messages or `dump_config`.

May import: the stdlib, pyhocon and `supervisor.core.timing` (the timing rule the file
is checked against: pure values).
"""

from typing import TYPE_CHECKING, Any

from supervisor.config.model import (
    EX_CONFIG,
    CandidateConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    FencingConfig,
    HealthConfig,
    LeaseConfig,
    LoggingConfig,
    NodeConfig,
    ReadinessConfig,
    RestartConfig,
    config_from_json,
    config_to_json,
)

if TYPE_CHECKING:
    from supervisor.config.dump import dump_config, redacted_dict
    from supervisor.config.durations import parse_duration
    from supervisor.config.loader import DEFAULT_LEASE_NAME, DEFAULT_TABLE, load_config

# The parser (pyhocon, pyparsing) is imported only by what parses: the daemon process
# receives its configuration already parsed (config_from_json) and never loads it.
_LAZY = {
    "dump_config": "supervisor.config.dump", "redacted_dict": "supervisor.config.dump",
    "parse_duration": "supervisor.config.durations",
    "DEFAULT_LEASE_NAME": "supervisor.config.loader", "DEFAULT_TABLE": "supervisor.config.loader",
    "load_config": "supervisor.config.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_LEASE_NAME", "DEFAULT_TABLE", "EX_CONFIG", "CandidateConfig", "Config",
    "ConfigError", "DatabaseConfig", "FencingConfig", "HealthConfig", "LeaseConfig",
    "LoggingConfig", "NodeConfig",
    "ReadinessConfig", "RestartConfig", "config_from_json", "config_to_json", "dump_config",
    "load_config", "parse_duration", "redacted_dict",
]
