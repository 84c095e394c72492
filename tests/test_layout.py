"""The package map holds: each package of `supervisor` imports only what its docstring
allows (read from the source, every `import` and `from ... import`, at any depth,
`TYPE_CHECKING` blocks included), and every module and function stays within the
size the style asks for. A test module imports no other test module: what tests share
lives in `tests/harness/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness.paths import REPO

PACKAGE = REPO / "supervisor"

#: package -> the packages (or modules) of ours it may import (itself and the package
#: root, `supervisor.__version__`, always allowed). Top-level modules
#: (`supervisor.clock`, ...) are named by their module name.
ALLOWED: dict[str, set[str]] = {
    "core": {"config"},
    "lease": {"config", "core"},
    "node": {"clock", "config", "core"},
    "observe": {"clock"},
    "config": {"core.timing"},  # the timing rule the file is checked against
    "daemon": {"core", "lease", "node", "observe", "config", "clock"},
    "cli": {"core", "lease", "node", "observe", "config", "clock", "daemon", "demo"},
    "demo": {"core", "lease", "node", "observe", "config", "clock", "daemon", "cli"},
}
#: modules of `node` that run in the guard process: they import nothing of ours but these
GUARD_SIDE = {"guard", "cgroup", "guardproto"}
GUARD_ALLOWED = {"clock", "node.cgroup", "node.guardproto"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def ours(tree: ast.Module) -> set[str]:
    """The `supervisor.*` modules a module imports (absolute names, without the prefix)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.removeprefix("supervisor.") for n in names
                  if n.startswith("supervisor.")}
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_map_allows(package: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in ours(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if top in (package, "__version__") or any(
                    name == a or name.startswith(a + ".") for a in ALLOWED[package]):
                continue
            wrong.append(f"{path.relative_to(REPO)} imports supervisor.{name}")
    assert not wrong, "\n".join(wrong)


def test_the_guard_side_imports_only_the_clock_cgroup_and_its_protocol() -> None:
    wrong = []
    for stem in sorted(GUARD_SIDE):
        path = PACKAGE / "node" / f"{stem}.py"
        for name in ours(ast.parse(path.read_text())):
            if name != "node" and not any(name == g or name.startswith(g + ".")
                                          for g in GUARD_ALLOWED):
                wrong.append(f"{path.relative_to(REPO)} imports supervisor.{name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_below_the_command_line_imports_it() -> None:
    wrong = [f"{p.relative_to(REPO)} imports supervisor.{n}" for p in modules()
             if p.parent.name not in ("cli", "demo") and p.name != "__main__.py"
             for n in ours(ast.parse(p.read_text())) if n.split(".")[0] == "cli"]
    assert not wrong, "\n".join(wrong)


def test_no_test_module_imports_another() -> None:
    wrong = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            wrong += [f"{path.relative_to(REPO)} imports {n}" for n in names
                      if n.rsplit(".", 1)[-1].startswith("test_")]
    assert not wrong, "\n".join(wrong)


def test_modules_and_functions_stay_small() -> None:
    long_modules = [f"{p.relative_to(REPO)}: {n} lines" for p in modules()
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for p in modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{p.relative_to(REPO)}:{node.name}: {n} lines")
    assert not long_modules and not long_functions, long_modules + long_functions
