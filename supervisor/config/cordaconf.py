"""Corda's own `node.conf` as the one source of the lease settings and the database.

`node.cordaConfig` names it (default: `<node.workingDirectory>/node.conf` when that
file exists). From it the supervisor reads only:

- `enterpriseConfiguration.mutualExclusionConfiguration` (or top level): the lease
  (on, machineName, updateInterval, waitInterval), when the supervisor's own file
  has no `mutualExclusionConfiguration`;
- `dataSourceProperties`: `dataSource.url` (a JDBC URL), `dataSource.user`,
  `dataSource.password` (quoted dotted keys, as Corda writes them, or nested), as
  `database { url, user, password }` when the supervisor's own file has no
  `database` block.

When both files give a setting, the supervisor's own wins, with a warning when they
differ. Every error about a value taken from node.conf names node.conf, the key
there and its line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.config.blocks import Block
from supervisor.config.hocon import key_line, parse_hocon
from supervisor.config.model import ConfigError

_DATASOURCE_KEYS = {"url": "dataSource.url", "user": "dataSource.user",
                    "password": "dataSource.password"}


class _MappedBlock(Block):
    """A block whose keys are named, in errors, as they are spelled in node.conf."""

    def __init__(self, data: Mapping[str, Any], path: str, names: Mapping[str, str]) -> None:
        super().__init__(data, path)
        self.names = names

    def key(self, name: str) -> str:
        return super().key(self.names.get(name, name))


@dataclass(frozen=True)
class CordaConf:
    """A parsed node.conf."""

    path: str
    text: str
    tree: Mapping[str, Any]

    def lease_block(self) -> Block | None:
        """Its mutualExclusionConfiguration (nested or top level), or None."""
        root = Block(self.tree, "")
        enterprise = root.block("enterpriseConfiguration")
        nested = enterprise.block("mutualExclusionConfiguration") if enterprise else None
        return nested or root.block("mutualExclusionConfiguration")

    def database_block(self) -> Block | None:
        """`database { url, user, password }` from dataSourceProperties, or None."""
        props = Block(self.tree, "").block("dataSourceProperties")
        if props is None:
            return None
        nested = props.block("dataSource")
        values: dict[str, Any] = {}
        for ours, theirs in _DATASOURCE_KEYS.items():
            value = props.raw(theirs)
            if value is None and nested is not None:
                value = nested.raw(ours)
            if value is not None:
                values[ours] = value
        if "url" not in values:
            return None
        return _MappedBlock(values, "dataSourceProperties", _DATASOURCE_KEYS)

    @contextlib.contextmanager
    def blamed(self) -> Iterator[None]:
        """Errors raised inside name node.conf, the key and its line there."""
        try:
            yield
        except ConfigError as exc:
            if exc.path is not None:
                raise
            raise ConfigError(exc.message, path=self.path, key=exc.key,
                              line=key_line(self.text, exc.key)) from None


def locate(node: Block, source: str) -> str | None:
    """The node.conf to read: `node.cordaConfig` (relative to the supervisor's file),
    else `<workingDirectory>/node.conf` when it exists, else None."""
    named = node.opt_str("cordaConfig")
    if named is not None:
        return os.path.join(os.path.dirname(source), os.path.expanduser(named))
    directory = node.opt_str("workingDirectory")
    if directory is None:
        return None
    default = os.path.join(os.path.abspath(directory), "node.conf")
    return default if os.path.isfile(default) else None


def load(path: str, environ: Mapping[str, str]) -> CordaConf:
    """Read and parse node.conf (with the same `${VAR}` rules as our own file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read Corda's node.conf: {exc.strerror or exc}",
                          path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=path) from None
    return CordaConf(path=os.path.abspath(path), text=text, tree=parse_hocon(path, text, environ))
