"""Reading a config file's text into plain data: YAML (imported lazily) or JSON.

YAML errors carry their line number; a key written twice in one mapping is an error rather
than PyYAML's silent "last one wins".
"""

from __future__ import annotations

import json
import os
from typing import Any

from edge_min.errors import ConfigError, MissingDependency


def read_text(path: str) -> str:
    """The file's text; a ConfigError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a config file", file=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text ({exc.reason})", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None


def parse_text(text: str, source: str) -> Any:
    """Data from YAML or JSON text (JSON when ``source`` ends in .json)."""
    if source.lower().endswith(".json"):
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}", file=source
            ) from None
    return _parse_yaml(text, source)


def read_data(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """The parsed data of the file at ``path`` and the path as a string."""
    source = os.fspath(path)
    return parse_text(read_text(source), source), source


def _parse_yaml(text: str, source: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise MissingDependency(
            "PyYAML", "yaml", "Reading YAML config files (or write them as .json)"
        ) from None

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key written twice in one mapping."""

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # Only plain string keys matter here; "<<" merge keys and complex keys are left
            # to PyYAML.
            if key_node.tag != "tag:yaml.org,2002:str":
                continue
            key = key_node.value
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: key '{key}' appears twice", file=source)
            seen.add(key)
        return loader.construct_mapping(node)

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass, so safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "unreadable"
        raise ConfigError(f"{where}invalid YAML: {problem}", file=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=source) from None
