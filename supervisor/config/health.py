"""The `health` block: the HTTP endpoint, its token file and its internal address."""

from __future__ import annotations

import ipaddress
import os
import re
import stat

from supervisor.config.blocks import Block
from supervisor.config.model import HealthConfig

HEALTH_KEYS = ("enabled", "host", "port", "tokenFile", "internalHost", "internalPort")
MIN_TOKEN_LENGTH = 16


def _port(block: Block, name: str, default: int) -> int:
    port = block.get_int(name, default)
    if not 0 <= port <= 65535:
        block.fail(name, f"must be between 0 and 65535, got {port}")
    return port


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(block: Block) -> tuple[str | None, str | None]:
    """(path, token) from health.tokenFile, or (None, None). The file must not be
    accessible to others (no `o` permission bits) and hold one printable token of at
    least MIN_TOKEN_LENGTH characters (a trailing newline is dropped)."""
    name = "tokenFile"
    raw = block.opt_str(name)
    if raw is None:
        return None, None
    path = os.path.abspath(raw)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        block.fail(name, f"cannot read {path!r}: {exc.strerror or exc}")
    if mode & 0o007:
        block.fail(name, f"{path!r} is accessible to others (mode {stat.S_IMODE(mode):04o}): "
                         f"chmod o-rwx {path} (e.g. root:corda 0640)")
    token = block.secret_file(name, path).strip()
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        block.fail(name, f"{path!r} must hold one token of printable ASCII without spaces "
                         "(e.g. from `openssl rand -hex 32`)")
    if len(token) < MIN_TOKEN_LENGTH:
        block.fail(name, f"the token in {path!r} is too short ({len(token)} characters; at "
                         f"least {MIN_TOKEN_LENGTH}, e.g. from `openssl rand -hex 32`)")
    return path, token


def health_config(root: Block, warnings: list[str]) -> HealthConfig:
    block = root.block("health") or Block({}, "health")
    block.check_keys(HEALTH_KEYS)
    port = _port(block, "port", 8080)
    host = block.get_str("host", "127.0.0.1").strip()
    if not host:
        block.fail("host", "must not be empty")
    enabled = block.get_bool("enabled", True)
    token_file, token = _token(block)
    internal_port = _port(block, "internalPort", 0) if block.has("internalPort") else None
    internal_host = block.get_str("internalHost", "127.0.0.1").strip()
    if block.has("internalHost") and internal_port is None:
        block.fail("internalHost", "needs internalPort (the port of the internal address)")
    if not internal_host:
        block.fail("internalHost", "must not be empty")
    if internal_port is not None and internal_port != 0 and (internal_host, internal_port) \
            == (host, port):
        block.fail("internalPort", f"must differ from health.port ({port}) on the same host")
    exposed = internal_host if internal_port is not None else host
    if enabled and token is None and not _is_loopback(exposed):
        where = "health.internalHost" if internal_port is not None else "health.host"
        warnings.append(f"{where} {exposed!r} is not a loopback address and health.tokenFile "
                        "is not set: /status and /metrics are open to the network (set "
                        "health.tokenFile, or health.internalPort for a loopback-only address)")
    return HealthConfig(enabled=enabled, host=host, port=port, token_file=token_file,
                        token=token, internal_host=internal_host, internal_port=internal_port)
