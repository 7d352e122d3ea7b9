"""Sizes, rates and durations as the spec writes them: ``512MB``, ``1MB`` (per second), ``5m``.

Sizes use binary multiples (``1MB`` is 1,048,576 bytes), as memory limits and
disk quotas on Linux do; ``KiB``/``MiB``/``GiB`` spellings mean the same. A bare
number is bytes for a size and seconds for a duration.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}

_DURATION_UNITS = {
    "": 1.0,
    "MS": 0.001,
    "S": 1.0,
    "SEC": 1.0,
    "SECONDS": 1.0,
    "M": 60.0,
    "MIN": 60.0,
    "MINUTES": 60.0,
    "H": 3600.0,
    "HOURS": 3600.0,
    "D": 86400.0,
    "DAYS": 86400.0,
    "W": 604800.0,
}

_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*(?:/\s*s)?\s*$")


def parse_size(value: object) -> int:
    """Bytes from ``512MB``, ``2GB``, ``100MB``, ``1.5GiB`` or a bare integer of bytes.

    A rate may say per second: ``1MB/s`` reads as ``1MB`` (``network.max_bandwidth``).

    Raises ``ValueError`` with the accepted forms; callers wrap it in a ConfigError that
    names the key.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512MB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, float):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 512MB, got {value!r}")
    m = _NUMBER_UNIT.match(value)
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MB, 2GB or 100KB, got {value!r}")
    number = float(m.group(1))
    if number < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return int(number * _SIZE_UNITS[m.group(2).upper()])


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``30 days``, ``250ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s or 5m, got {value!r}")
    m = _NUMBER_UNIT.match(value)
    if not m or m.group(2).upper() not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 30s, 5m, 1h or 7d, got {value!r}")
    number = float(m.group(1))
    if number < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return number * _DURATION_UNITS[m.group(2).upper()]


def format_size(n: int | float) -> str:
    """A short human form of a byte count: ``512MB``, ``1.5GB``, ``300B``."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if abs(n) >= factor:
            q = n / factor
            return f"{q:.0f}{unit}" if q == int(q) else f"{q:.1f}{unit}"
    return f"{int(n)}B"


def format_duration(seconds: float) -> str:
    """A short human form of a duration: ``5m``, ``1h``, ``30s``, ``2.5s``."""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"
