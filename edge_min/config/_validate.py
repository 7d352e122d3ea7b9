"""The typed reader every config parser uses: read a key, check it, record what is wrong.

A ``Reader`` walks one file's data. Each accessor returns a usable value (the default when
the key is absent or wrong) and records a ``ConfigError`` naming the file, the key path, the
bad value and what is allowed, so a parser reports every mistake in a file at once rather
than the first. ``Reader.raise_errors`` turns the collected errors into one ``ConfigError``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from edge_min.errors import ConfigError
from edge_min.units import parse_duration, parse_size

_SIZE_TEXT = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*(?:[KMGT]i?B?|B)?\s*(?:/\s*s)?\s*$", re.IGNORECASE)
_MISSING: Any = object()


def join(prefix: str, key: str | int) -> str:
    """The key path of ``key`` under ``prefix``: ``runtime.mode``, ``alerts[1]``."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def show(value: object) -> str:
    """A value as the YAML author wrote it: ``'five'``, ``true``, ``null``, ``12``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return repr(value)


def describe(value: object) -> str:
    """A value with its YAML type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {show(value)}"
    if isinstance(value, str):
        return f"string {show(value)}"
    if isinstance(value, int | float):
        return f"number {show(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, if any is close enough."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return found[0] if found else None


class Reader:
    """Reads one config file's data with typed accessors, collecting every error."""

    def __init__(self, file: str, base_dir: str | None = None) -> None:
        self.file = file
        # Relative paths written in a file are relative to that file's folder.
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []

    # -- recording -----------------------------------------------------------------

    def fail(self, path: str, message: str, value: object = None) -> None:
        """Record an error at ``path`` (empty for the whole file)."""
        self.errors.append(ConfigError(message, file=self.file, path=path or None, value=value))

    def raise_errors(self) -> None:
        """Raise one ConfigError standing for every recorded error, if there are any."""
        if self.errors:
            raise ConfigError.collect(list(self.errors))

    # -- structure -----------------------------------------------------------------

    def mapping(self, value: object, path: str) -> dict[str, Any]:
        """``value`` as a mapping; null is an empty one, anything else is an error."""
        if value is None:
            return {}
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str)]
            for k in bad:
                self.fail(path, f"keys must be strings, got {describe(k)}", k)
            return {k: v for k, v in value.items() if isinstance(k, str)}
        where = path or "the top level"
        self.fail(path, f"expected a mapping for {where}, got {describe(value)}", value)
        return {}

    def check_keys(self, data: Mapping[str, Any], path: str, allowed: Collection[str]) -> None:
        """Record every key of ``data`` not in ``allowed``, suggesting the closest."""
        where = path or "the top level"
        for key in data:
            if key in allowed:
                continue
            close = suggest(key, allowed)
            hint = f"did you mean '{close}'?" if close else "allowed: " + ", ".join(allowed)
            err = ConfigError(f"unknown key '{key}' in {where}; {hint}", file=self.file)
            err.path = join(path, key)
            err.value = key
            self.errors.append(err)

    def section(
        self, data: Mapping[str, Any], key: str, path: str, allowed: Collection[str]
    ) -> dict[str, Any]:
        """The sub-mapping ``data[key]`` with its keys checked against ``allowed``."""
        sub_path = join(path, key)
        sub = self.mapping(data.get(key), sub_path)
        self.check_keys(sub, sub_path, allowed)
        return sub

    def items(self, data: Mapping[str, Any], key: str, path: str) -> list[Any]:
        """The list ``data[key]``; absent or null is empty."""
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(join(path, key), f"expected a list, got {describe(value)}", value)
            return []
        return value

    # -- scalars -------------------------------------------------------------------

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """An integer (not a boolean, not a float) within the given bounds."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        where = join(path, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {describe(value)}", value)
            return default
        if not self._bounded(where, value, value, minimum, maximum):
            return default
        return value

    def optional_integer(
        self, data: Mapping[str, Any], key: str, path: str, *, minimum: int | None = None
    ) -> int | None:
        """An integer, or None when absent or null."""
        if data.get(key) is None:
            return None
        return self.integer(data, key, path, 0, minimum=minimum)

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        minimum: float | None = None,
        above: float | None = None,
    ) -> float:
        """A number (int or float, not a boolean); ``above`` is an exclusive lower bound."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        where = join(path, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"expected a number, got {describe(value)}", value)
            return default
        if above is not None and value <= above:
            self.fail(where, f"must be greater than {above:g}, got {show(value)}", value)
            return default
        if not self._bounded(where, value, value, minimum, None):
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        """``true`` or ``false``; strings such as "yes" are refused, not guessed."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.fail(join(path, key), f"expected true or false, got {describe(value)}", value)
            return default
        return value

    def string(
        self, data: Mapping[str, Any], key: str, path: str, default: str, *, hint: str = ""
    ) -> str:
        """A non-empty string."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        return self._text(join(path, key), value, default, hint)

    def optional_string(self, data: Mapping[str, Any], key: str, path: str) -> str | None:
        """A non-empty string, or None when absent or null."""
        value = data.get(key)
        if value is None:
            return None
        text = self._text(join(path, key), value, "", "")
        return text or None

    def required_string(self, data: Mapping[str, Any], key: str, path: str, hint: str) -> str:
        """A non-empty string that must be present."""
        if data.get(key) is None:
            self.fail(join(path, key), f"is required: {hint}")
            return ""
        return self._text(join(path, key), data[key], "", hint)

    def file_path(self, data: Mapping[str, Any], key: str, path: str) -> str | None:
        """An optional file path, made absolute against the file's folder when relative."""
        text = self.optional_string(data, key, path)
        return self.resolve(text) if text else None

    def resolve(self, text: str) -> str:
        """``text`` resolved against the folder of the file being read (if known)."""
        text = os.path.expanduser(text)
        if self.base_dir is None or os.path.isabs(text):
            return text
        return os.path.normpath(os.path.join(self.base_dir, text))

    def enum(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: str,
        choices: Collection[str],
    ) -> str:
        """One of ``choices``."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        return self.choice(join(path, key), value, default, choices)

    def choice(self, where: str, value: object, default: str, choices: Collection[str]) -> str:
        """Check that ``value`` (found at ``where``) is one of ``choices``."""
        allowed = ", ".join(choices)
        if not isinstance(value, str):
            self.fail(where, f"expected one of {allowed}, got {describe(value)}", value)
            return default
        if value not in choices:
            close = suggest(value, choices)
            hint = f"; did you mean '{close}'?" if close else ""
            self.fail(where, f"unknown value {show(value)}; allowed: {allowed}{hint}", value)
            return default
        return value

    def size(
        self, data: Mapping[str, Any], key: str, path: str, default: int, *, minimum: int = 0
    ) -> int:
        """Bytes from ``512MB``, ``2GB``, ``100KB`` or a bare integer of bytes."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        where = join(path, key)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(where, f"expected a size such as 512MB, got {describe(value)}", value)
            return default
        if isinstance(value, str) and not _SIZE_TEXT.match(value):
            self.fail(
                where, f"expected a size such as 512MB, 2GB or 100KB, got {show(value)}", value
            )
            return default
        negative = value.strip().startswith("-") if isinstance(value, str) else value < 0
        if negative:
            self.fail(where, f"must not be negative, got {show(value)}", value)
            return default
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(where, str(exc), value)
            return default
        return size if self._bounded(where, size, value, minimum, None) else default

    def duration(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        allow_zero: bool = False,
    ) -> float:
        """Seconds from a number of seconds or ``30s``, ``5m``, ``1h``, ``7d``."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        seconds = self.seconds(join(path, key), value, allow_zero=allow_zero)
        return default if seconds is None else seconds

    def seconds(self, where: str, value: object, *, allow_zero: bool = False) -> float | None:
        """Seconds from one duration value found at ``where``; None when it is wrong."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(
                where, f"expected a duration in seconds or like 5m, got {describe(value)}", value
            )
            return None
        negative = value.strip().startswith("-") if isinstance(value, str) else value < 0
        if negative:
            self.fail(where, f"must not be negative, got {show(value)}", value)
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.fail(
                where,
                f"expected a duration such as 300, 30s, 5m, 1h or 7d, got {show(value)}",
                value,
            )
            return None
        if seconds == 0 and not allow_zero:
            self.fail(where, f"must be greater than 0 seconds, got {show(value)}", value)
            return None
        return seconds

    def string_list(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: tuple[str, ...],
        *,
        choices: Collection[str] | None = None,
    ) -> tuple[str, ...]:
        """A list of distinct strings, each one of ``choices`` when given."""
        if key not in data:
            return default
        where = join(path, key)
        out: list[str] = []
        for i, item in enumerate(self.items(data, key, path)):
            at = join(where, i)
            if choices is not None:
                text = self.choice(at, item, "", choices)
            else:
                text = self._text(at, item, "", "")
            if not text:
                continue
            if text in out:
                self.fail(at, f"duplicate entry {show(text)}", text)
                continue
            out.append(text)
        return tuple(out)

    # -- helpers -------------------------------------------------------------------

    def _text(self, where: str, value: object, default: str, hint: str) -> str:
        if not isinstance(value, str):
            extra = f" ({hint})" if hint else ""
            self.fail(where, f"expected a string, got {describe(value)}{extra}", value)
            return default
        if not value.strip():
            self.fail(where, "must not be empty", value)
            return default
        return value

    def _bounded(
        self,
        where: str,
        number: float,
        written: object,
        minimum: float | None,
        maximum: float | None,
    ) -> bool:
        if minimum is not None and number < minimum:
            if minimum == 0:
                self.fail(where, f"must not be negative, got {show(written)}", written)
            else:
                self.fail(where, f"must be at least {minimum:g}, got {show(written)}", written)
            return False
        if maximum is not None and number > maximum:
            self.fail(where, f"must be at most {maximum:g}, got {show(written)}", written)
            return False
        return True
