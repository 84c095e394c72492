"""HOCON text -> tree (with `${VAR}` from a given environment), and key -> line lookup."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, cast

from pyhocon import ConfigParser
from pyhocon.exceptions import ConfigMissingException, ConfigSubstitutionException
from pyparsing import ParseBaseException

from supervisor.config.model import ConfigError


def _mask_text(text: str) -> str:
    """Blank out comments and string values (keeping quoted keys and newlines), so that a
    scan for key names does not match inside them."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch == '"':
            if text.startswith('"""', i):
                end = text.find('"""', i + 3)
                end = n if end < 0 else end + 3
            else:
                end = i + 1
                while end < n and text[end] not in '"\n':
                    end += 2 if text[end] == "\\" else 1
                end = min(end + 1, n)
            literal = text[i:end]
            after = text[end:].lstrip(" \t")
            if after[:1] in {"=", ":", "{", "."} or after.startswith("+="):
                out.append(literal)  # a quoted key
            else:
                out.append("".join(c if c == "\n" else " " for c in literal))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def key_line(text: str, key: str | None) -> int | None:
    """Best-effort line (1-based) of a dotted key in the HOCON text; None if not found.

    Tries each occurrence of the first path segment, last first (a later assignment wins
    in HOCON), and looks for each following segment after the previous one; a line is given
    only when every segment was found."""
    if not key or not text:
        return None
    masked = _mask_text(text)
    patterns = [re.compile(r'(?<![\w-])"?' + re.escape(segment) + r'"?(?=\s*(?:[.=:{]|\+=))')
                for segment in key.split(".")]
    for first in reversed(list(patterns[0].finditer(masked))):
        pos = first.start()
        for pattern in patterns[1:]:
            match = pattern.search(masked, pos)
            if match is None:
                break
            pos = match.start()
        else:
            return masked.count("\n", 0, pos) + 1
    return None


def block_line(text: str, key: str | None) -> int | None:
    """`key_line` of `key`, else of its nearest enclosing block that is in the text (a
    missing key is reported at the block that lacks it)."""
    while key:
        line = key_line(text, key)
        if line is not None or "." not in key:
            return line
        key = key.rsplit(".", 1)[0]
    return None


# --------------------------------------------------------------------------- parsing

def _parser_with_environ(environ: Mapping[str, str]) -> Any:
    """A pyhocon parser class whose `${VAR}` fallback reads `environ`, not `os.environ`."""

    # Overrides pyhocon's private `_resolve_variable` (same body, other mapping); tested by
    # tests/test_config.py::test_optional_substitution_reads_only_given_environ. pyhocon's
    # self-reference fix-up (`a = ${a}` at top level) still reads os.environ; no key of
    # ours can be used that way (unknown top-level keys are errors).
    class _EnvironParser(ConfigParser):  # type: ignore[misc]
        @classmethod
        def _resolve_variable(cls, config: Any, substitution: Any) -> tuple[bool, Any]:
            variable = substitution.variable
            try:
                return True, config.get(variable)
            except ConfigMissingException:
                value = environ.get(variable)
                if value is None:
                    if substitution.optional:
                        return False, None
                    line = substitution.instring.count("\n", 0, substitution.loc) + 1
                    raise ConfigSubstitutionException(
                        f"Cannot resolve variable ${{{variable}}} (line: {line})") from None
                return True, value

    return _EnvironParser


_LINE_IN_MESSAGE_RE = re.compile(r"\(line:\s*(\d+)")


def parse_hocon(path: str, text: str, environ: Mapping[str, str]) -> Mapping[str, Any]:
    parser = _parser_with_environ(environ)
    try:
        tree = parser().parse(text, os.path.dirname(path))
    except ParseBaseException as exc:
        found = getattr(exc, "found", None)
        found = "end of file" if found == "end of text" else found
        expected = str(exc.msg).replace("end of text", "end of file")
        detail = f"{expected}, found {found}" if found else expected
        raise ConfigError(f"syntax error: {detail} (column {exc.col})", path=path,
                          line=exc.lineno) from None
    except ConfigSubstitutionException as exc:
        message = str(exc)
        match = _LINE_IN_MESSAGE_RE.search(message)
        hint = ("; use ${?VAR} for an optional environment variable"
                if "Cannot resolve variable" in message else "")
        raise ConfigError(f"{message}{hint}", path=path,
                          line=int(match[1]) if match else None) from None
    except Exception as exc:  # pyhocon raises assorted exceptions (includes, cycles, ...)
        raise ConfigError(f"cannot parse: {type(exc).__name__}: {exc}", path=path) from None
    if not isinstance(tree, Mapping):
        raise ConfigError("the file must contain an object (key = value pairs), not a list",
                          path=path)
    return cast(Mapping[str, Any], tree)
