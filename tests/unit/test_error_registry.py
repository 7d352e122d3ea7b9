"""One error registry: every ``EdgeError`` subclass is drawn, under its parent, with its code.

The tree is drawn in ``edge_min.errors``'s docstring; a line there reading
``(the tree: some.module)`` hands that class's subtree to ``some.module``'s docstring. Every
module of edge_min is imported first (the dev venv has every extra, so a module that cannot
import is a failure here, not a skip), so a class defined anywhere in the package is seen.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import edge_min
from edge_min import errors
from edge_min.errors import EdgeError

PKG = Path(edge_min.__file__).resolve().parent
CODE_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# A node of a drawn tree: the root at column 4, or a name after a "├── " / "└── " connector.
NODE_RE = re.compile(
    r"^    (?:(?P<indent>(?:[│ ]   )*)[├└]── )?(?P<name>[A-Z]\w*)(?:\s+(?P<code>[a-z]\w*))?"
    r"(?P<rest>.*)$"
)
LINK_RE = re.compile(r"\(the tree: (?P<module>edge_min[\w.]*)\)")
HOME_RE = re.compile(r"\(in (?P<module>edge_min[\w.]*)\)")


@dataclass
class Node:
    """One class as a docstring draws it."""

    name: str
    code: str | None
    parent: str | None
    text: str  # the rest of its line and its continuation lines


def module_names() -> list[str]:
    """Every module under edge_min/, by file: namespace folders (no __init__.py) included."""
    names = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def edge_errors() -> dict[str, type[EdgeError]]:
    """Every EdgeError subclass defined in edge_min, EdgeError included, by class name."""
    for name in module_names():
        importlib.import_module(name)  # an ImportError here is the failure we want to see
    found: dict[str, type[EdgeError]] = {}
    todo: list[type[EdgeError]] = [EdgeError]
    while todo:
        cls = todo.pop()
        # Tests may subclass EdgeError for their own use; only the package's classes count.
        if cls.__module__.split(".")[0] != "edge_min":
            continue
        other = found.setdefault(cls.__name__, cls)
        assert other is cls, f"two error classes named {cls.__name__}: {other} and {cls}"
        todo += cls.__subclasses__()
    return found


def drawn_tree(module: str) -> dict[str, Node]:
    """The classes drawn in ``module``'s docstring literal blocks."""
    doc = importlib.import_module(module).__doc__ or ""
    nodes: dict[str, Node] = {}
    path: list[str] = []  # the names on the way down to the last node, by depth
    last: Node | None = None
    for line in doc.splitlines():
        if not line.startswith("    "):
            last = None
            continue
        m = NODE_RE.match(line)
        if m is None:
            if last is not None:
                last.text += " " + line.strip(" │")
            continue
        depth = 0 if m["indent"] is None else len(m["indent"]) // 4 + 1
        del path[depth:]
        assert m["name"] not in nodes, f"{module} draws {m['name']} twice"
        parent = path[-1] if path else None
        last = nodes[m["name"]] = Node(m["name"], m["code"], parent, m["rest"].strip())
        path.append(m["name"])
    return nodes


ERRORS = edge_errors()
TREE = drawn_tree("edge_min.errors")
LINKS = {
    name: m["module"] for name, node in TREE.items() if (m := LINK_RE.search(node.text)) is not None
}


def tree_module_for(cls: type[EdgeError]) -> str:
    """Where ``cls`` is drawn: the module linked for it or its nearest linked ancestor."""
    for klass in cls.__mro__:
        if klass.__name__ in LINKS:
            return LINKS[klass.__name__]
    return "edge_min.errors"


def error_parent(cls: type[EdgeError]) -> str | None:
    bases = [b for b in cls.__bases__ if issubclass(b, EdgeError)]
    assert len(bases) <= 1, f"{cls.__name__} has several EdgeError bases {bases}"
    return bases[0].__name__ if bases else None


def test_every_module_imports_and_the_walk_finds_the_whole_family() -> None:
    assert {"edge_min.api.server", "edge_min.routing", "edge_min.cli.context"} <= set(
        module_names()
    )
    assert {"UsageError", "SyncUnavailable", "AuthError", "TlsRefused"} <= set(ERRORS)
    assert len(ERRORS) >= 39


def test_every_error_defines_its_own_snake_case_code() -> None:
    for name, cls in ERRORS.items():
        assert "code" in vars(cls), f"{name} inherits its code; give it its own `code = ...`"
        assert isinstance(cls.code, str) and CODE_RE.match(cls.code), (name, cls.code)


def test_error_codes_are_unique() -> None:
    counts = Counter(cls.code for cls in ERRORS.values())
    shared = {
        code: sorted(n for n, c in ERRORS.items() if c.code == code)
        for code, k in counts.items()
        if k > 1
    }
    assert not shared, f"codes shared by several classes: {shared}"


def test_every_error_is_drawn_under_its_parent_with_its_code_and_home() -> None:
    for name, cls in ERRORS.items():
        module = tree_module_for(cls)
        tree = TREE if module == "edge_min.errors" else drawn_tree(module)
        where = f"the tree in {module}'s docstring"
        assert name in tree, f"{name} ({cls.__module__}) is not drawn in {where}"
        node = tree[name]
        assert node.code == cls.code, f"{where} gives {name} code {node.code!r}, not {cls.code!r}"
        assert node.parent == error_parent(cls), (
            f"{where} draws {name} under {node.parent}, but its base is {error_parent(cls)}"
        )
        home = HOME_RE.search(node.text)
        expected_home = home["module"] if home else module
        assert cls.__module__ == expected_home or cls.__module__.startswith(expected_home + "."), (
            f"{where} says {name} lives in {expected_home}, but it is in {cls.__module__}"
            + ("" if home else "; add (in <module>) to its line")
        )


def test_every_drawn_class_exists() -> None:
    for module in ("edge_min.errors", *LINKS.values()):
        stale = set(drawn_tree(module)) - set(ERRORS)
        assert not stale, f"{module}'s docstring draws classes that do not exist: {sorted(stale)}"


def test_a_linked_line_in_errors_py_agrees_with_its_tree() -> None:
    assert LINKS, "errors.py links no subtree; the test's link pattern may be stale"
    for name, module in LINKS.items():
        cls, node = ERRORS[name], TREE[name]
        assert (node.code, node.parent) == (cls.code, error_parent(cls)), (name, node)
        assert name in drawn_tree(module), f"errors.py sends {name} to {module}, which omits it"


def test_every_exception_in_errors_py_is_an_edge_error() -> None:
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, EdgeError), name
