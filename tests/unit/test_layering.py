"""The dependency rule of STYLE.md, kept true by parsing every import with ast."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "edge_min"

FORBIDDEN_TOP = {"targets", "build", "wasm", "firmware"}
# Host calls that only the platform port (and the api/cli edge) may make.
PLATFORM_ONLY = {
    "threading",
    "subprocess",
    "signal",
    "resource",
    "socket",
    "fcntl",
    "multiprocessing",
    "concurrent",
    "ctypes",
}
# The edge: the local API, the CLI and the serving runtime that joins them with a loop.
EDGE_MODULES = ("api/", "cli/", "serving.py", "__main__.py")
# The reference central server is an application beside the local API: it may use the
# generic HTTP router and server in api/; the core may import neither.
APP_MODULES = (*EDGE_MODULES, "central/")


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (p.relative_to(PKG).as_posix(), ast.parse(p.read_text(), filename=str(p)))
        for p in sorted(PKG.rglob("*.py"))
    ]


def _imports(tree: ast.Module, *, top_level_only: bool) -> list[tuple[str, int]]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[str, int]] = []
    for node in nodes:
        # Imports guarded by `if TYPE_CHECKING:` are for the type checker only.
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Try) and top_level_only:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found += [(a.name, sub.lineno) for a in sub.names]
                elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                    found.append((sub.module, sub.lineno))
    return found


MODULES = _modules()


def test_the_package_has_modules() -> None:
    assert len(MODULES) > 10


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_core_never_imports_targets_or_builds(rel: str, tree: ast.Module) -> None:
    for name, line in _imports(tree, top_level_only=False):
        assert name.split(".")[0] not in FORBIDDEN_TOP, f"{rel}:{line} imports {name}"


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_only_the_edge_imports_api_and_cli(rel: str, tree: ast.Module) -> None:
    if rel.startswith(EDGE_MODULES):
        return
    for name, line in _imports(tree, top_level_only=False):
        if rel.startswith("central/") and name.startswith("edge_min.api"):
            continue
        assert not name.startswith(("edge_min.api", "edge_min.cli")), f"{rel}:{line} imports {name}"


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_only_store_sqlite_imports_sqlite3(rel: str, tree: ast.Module) -> None:
    if rel.startswith(("store/sqlite", "central/sqlite")):
        return
    for name, line in _imports(tree, top_level_only=False):
        assert name.split(".")[0] != "sqlite3", f"{rel}:{line} imports sqlite3"


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_host_calls_go_through_the_platform_port(rel: str, tree: ast.Module) -> None:
    if rel.startswith(("platform/", *APP_MODULES)):
        return
    for name, line in _imports(tree, top_level_only=False):
        assert name.split(".")[0] not in PLATFORM_ONLY, (
            f"{rel}:{line} imports {name}; host calls belong behind edge_min.platform"
        )


# The host implementations of the platform port: only the port (get_platform) picks one.
HOST_IMPLEMENTATIONS = (
    "edge_min.platform.posix",
    "edge_min.platform.procfs",
    "edge_min.platform.inprocess",
)


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_only_the_port_picks_a_host_implementation(rel: str, tree: ast.Module) -> None:
    """The monitor, agents and runtime get the host through ``Platform``, never around it."""
    if rel.startswith("platform/"):
        return
    found = _imports(tree, top_level_only=False)
    found += [  # from edge_min.platform import procfs
        (f"{node.module}.{alias.name}", node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "edge_min.platform"
        for alias in node.names
    ]
    for name, line in found:
        assert not name.startswith(HOST_IMPLEMENTATIONS), (
            f"{rel}:{line} imports {name}; ask the platform port (edge_min.platform) instead"
        )


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_core_imports_only_stdlib_at_import_time(rel: str, tree: ast.Module) -> None:
    """Third-party packages are imported lazily, so the core loads in Pyodide as it is."""
    if rel.startswith(EDGE_MODULES):
        return
    allowed = set(sys.stdlib_module_names) | {"edge_min", "__future__"}
    for name, line in _imports(tree, top_level_only=True):
        assert name.split(".")[0] in allowed, f"{rel}:{line} imports {name} at import time"


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_the_store_knows_nothing_of_sync(rel: str, tree: ast.Module) -> None:
    """Change tracking is injected (Store(..., changes=...)), so store/ imports no sync/."""
    if not rel.startswith("store/"):
        return
    for name, line in _imports(tree, top_level_only=False):
        assert not name.startswith("edge_min.sync"), f"{rel}:{line} imports {name}"


def _private_names(tree: ast.Module) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from edge_min.x import _name``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge_min"):
            found += [(node.module, a.name, node.lineno) for a in node.names if a.name[0] == "_"]
    return found


@pytest.mark.parametrize(("rel", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_api_and_cli_use_no_privates_of_each_other(rel: str, tree: ast.Module) -> None:
    """The API never imports the CLI, and neither takes the other's private names."""
    if rel.startswith("api/"):
        for name, line in _imports(tree, top_level_only=False):
            assert not name.startswith("edge_min.cli"), f"{rel}:{line} imports {name}"
    for module, name, line in _private_names(tree):
        other = "edge_min.cli" if rel.startswith("api/") else "edge_min.api"
        if rel.startswith(("api/", "cli/")):
            assert not module.startswith(other), f"{rel}:{line} imports {module}.{name}"


def test_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checks above see a bad import when there is one."""
    tree = ast.parse("import yaml\nfrom targets.gateway import x\n")
    names = [n for n, _ in _imports(tree, top_level_only=True)]
    assert names == ["yaml", "targets.gateway"]
    tree = ast.parse("def f():\n    import subprocess\n")
    assert _imports(tree, top_level_only=True) == []
    assert [n for n, _ in _imports(tree, top_level_only=False)] == ["subprocess"]
    tree = ast.parse("from edge_min.cli import _context\n")
    assert _private_names(tree) == [("edge_min.cli", "_context", 1)]
