"""Typed access to one object of the parsed tree; errors name the dotted key."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

from supervisor.config.durations import parse_duration, type_name
from supervisor.config.model import ConfigError


def _plain_key(key: str) -> str:
    """pyhocon keeps the quotes of quoted keys (`"on" = true`); drop them."""
    if len(key) >= 2 and key[0] == key[-1] == '"':
        return key[1:-1]
    return key


BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class Block:
    """One object of the parsed tree, with typed getters that raise `ConfigError` naming
    the dotted key. A key set to `null` counts as absent."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = {_plain_key(k): v for k, v in data.items()}
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> NoReturn:
        raise ConfigError(message, key=self.key(name))

    def check_keys(self, allowed: Collection[str]) -> None:
        for name in self.data:
            if name in allowed:
                continue
            lowered = {a.lower(): a for a in allowed}
            close = ([lowered[name.lower()]] if name.lower() in lowered
                     else difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6))
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(name, f"unknown key{hint} (allowed here: {', '.join(sorted(allowed))})")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def block(self, name: str) -> Block | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(name, f"expected an object {{ ... }}, got {type_name(value)}")
        return Block(value, self.key(name))

    def opt_str(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.fail(name, f"expected a string, got {type_name(value)}")

    def get_str(self, name: str, default: str) -> str:
        value = self.opt_str(name)
        return default if value is None else value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOLEANS:
            return BOOLEANS[value.strip().lower()]
        self.fail(name, f"expected a boolean (true/false, on/off, yes/no), got {type_name(value)}")

    def get_int(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        self.fail(name, f"expected an integer, got {type_name(value)}")

    def get_float(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                result = None
        if result is None or not math.isfinite(result):
            self.fail(name, f"expected a number, got {type_name(value)}")
        return result

    def opt_duration(self, name: str) -> float | None:
        value = self.raw(name)
        return None if value is None else parse_duration(value, self.key(name))

    def duration(self, name: str, default: float, *, positive: bool = True) -> float:
        value = self.opt_duration(name)
        if value is None:
            return default
        if positive and value <= 0:
            self.fail(name, "must be greater than zero")
        return value

    def secret_file(self, name: str, path: str) -> str:
        """The file's text without its trailing newline; `ConfigError` naming `name` when it
        cannot be read, is not UTF-8 or is empty."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            self.fail(name, f"cannot read {path!r}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            self.fail(name, f"{path!r} is not UTF-8 text")
        secret = text.rstrip("\r\n")
        if not secret:
            self.fail(name, f"{path!r} is empty")
        return secret
