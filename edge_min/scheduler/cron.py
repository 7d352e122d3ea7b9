"""Five-field cron expressions: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, a number, a name (``jan``..``dec``, ``sun``..``sat``), a range
``a-b``, a list ``a,b,c`` and a step ``*/5``, ``1-10/2`` or ``5/15`` (from 5 to the end
every 15). Day-of-week 0 and 7 are both Sunday. The ``@hourly``, ``@daily``/``@midnight``,
``@weekly``, ``@monthly`` and ``@yearly``/``@annually`` shorthands are accepted.

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither starts
with ``*``) a day matches if *either* matches: ``0 0 1 * mon`` fires on the 1st and on
every Monday.

Times are UTC unless a fixed offset is given (``utc_offset=3600`` or ``"+01:00"``); there
is no DST database on an edge device or under MicroPython, so a zone's rules are not
followed. The calendar arithmetic is integer-only (Hinnant's civil-from-days) so the same
code runs where ``datetime`` is missing.
"""

from __future__ import annotations

import math

from edge_min.errors import SchedulerError

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# (name, low, high, names whose index + base is the value, base)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...] | None, int], ...] = (
    ("minute", 0, 59, None, 0),
    ("hour", 0, 23, None, 0),
    ("day-of-month", 1, 31, None, 0),
    ("month", 1, 12, MONTH_NAMES, 1),
    ("day-of-week", 0, 7, DAY_NAMES, 0),
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # leap-year maxima
# Eight years always contain a 29 February (2100 is not a leap year, 2096 and 2104 are),
# so a search longer than this means the expression can never match.
_SEARCH_DAYS = 8 * 366 + 2


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple[int, int, int]:
    """The (year, month, day) that is ``z`` days after 1970-01-01."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _month_length(y: int, m: int) -> int:
    if m == 2:
        return 29 if _is_leap(y) else 28
    return _DAYS_IN_MONTH[m - 1]


def parse_utc_offset(value: float | int | str) -> int:
    """Seconds east of UTC from ``3600``, ``"+01:00"``, ``"-0530"`` or ``"Z"``."""
    if isinstance(value, bool):
        raise SchedulerError(f"utc_offset {value!r} is not an offset; use seconds or '+HH:MM'")
    if isinstance(value, int | float):
        seconds = int(value)
    else:
        text = value.strip().upper()
        if text in ("Z", "UTC", ""):
            return 0
        sign = -1 if text[0] == "-" else 1
        body = text[1:] if text[0] in "+-" else text
        body = body.replace(":", "")
        if not body.isdigit() or len(body) not in (2, 4):
            raise SchedulerError(
                f"utc_offset {value!r} is not an offset; write it as '+HH:MM' such as '+05:30'",
                field="utc_offset",
                value=value,
            )
        seconds = sign * (int(body[:2]) * 3600 + int(body[2:] or 0) * 60)
    if abs(seconds) > 14 * 3600:
        raise SchedulerError(
            f"utc_offset {value!r} is beyond ±14:00; no zone on Earth is that far from UTC",
            field="utc_offset",
            value=value,
        )
    return seconds


def _bad(field: str, item: str, text: str, why: str) -> SchedulerError:
    return SchedulerError(
        f"cron field {field} value {item!r} {why} in {text!r}",
        field=field,
        value=item,
    )


def _parse_value(
    token: str, field: str, low: int, high: int, names: tuple[str, ...] | None, base: int
) -> int:
    word = token.lower()
    if names is not None and word in names:
        return names.index(word) + base
    if not token.isdigit():
        hint = f"; names allowed: {','.join(names)}" if names else ""
        raise SchedulerError(
            f"cron field {field} value {token!r} is not a number{hint}", field=field, value=token
        )
    value = int(token)
    if not low <= value <= high:
        raise SchedulerError(
            f"cron field {field} value {token!r} is out of range; use {low} to {high}",
            field=field,
            value=token,
        )
    return value


def _parse_field(spec: str, index: int, text: str) -> frozenset[int]:
    field, low, high, names, base = _FIELDS[index]
    values: set[int] = set()
    for item in spec.split(","):
        if not item:
            raise _bad(field, spec, text, "has an empty list entry")
        step = 1
        body = item
        if "/" in item:
            body, _, step_text = item.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(field, item, text, "has a step that is not a positive whole number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first = _parse_value(a, field, low, high, names, base)
            last = _parse_value(b, field, low, high, names, base)
            if first > last:
                raise _bad(field, item, text, f"is a backwards range; write it low-high ({b}-{a})")
        else:
            first = _parse_value(body, field, low, high, names, base)
            last = high if "/" in item else first
        values.update(range(first, last + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _next_table(allowed: frozenset[int], size: int) -> tuple[int, ...]:
    """For each i, the smallest allowed value >= i, or -1."""
    table = [-1] * (size + 1)
    nxt = -1
    for i in range(size, -1, -1):
        if i in allowed:
            nxt = i
        table[i] = nxt
    return tuple(table)


class CronExpr:
    """A parsed cron expression; ``next_after(ts)`` gives the next firing time."""

    def __init__(
        self,
        text: str,
        fields: tuple[frozenset[int], ...],
        dom_any: bool,
        dow_any: bool,
        utc_offset: int = 0,
    ) -> None:
        self.text = text
        self.minutes, self.hours, self.days, self.months, self.weekdays = fields
        self.dom_any = dom_any
        self.dow_any = dow_any
        self.utc_offset = utc_offset
        self._next_minute = _next_table(self.minutes, 59)
        self._next_hour = _next_table(self.hours, 23)

    @classmethod
    def parse(cls, text: str, *, utc_offset: float | int | str = 0) -> CronExpr:
        """Parse five fields or an ``@daily`` shorthand; SchedulerError names a bad field."""
        if not isinstance(text, str):
            raise SchedulerError(
                f"a cron expression must be text such as '*/5 * * * *', got {text!r}",
                field="cron",
                value=text,
            )
        source = text.strip()
        expanded = _MACROS.get(source.lower(), source)
        if expanded.startswith("@"):
            raise SchedulerError(
                f"cron shorthand {source!r} is unknown; use one of {', '.join(sorted(_MACROS))}",
                field="cron",
                value=source,
            )
        parts = expanded.split()
        if len(parts) != 5:
            raise SchedulerError(
                f"cron expression {source!r} has {len(parts)} fields; it needs 5: "
                "minute hour day-of-month month day-of-week (e.g. '*/5 * * * *')",
                field="cron",
                value=source,
            )
        fields = tuple(_parse_field(p, i, source) for i, p in enumerate(parts))
        expr = cls(
            source,
            fields,
            dom_any=parts[2].startswith("*"),
            dow_any=parts[4].startswith("*"),
            utc_offset=parse_utc_offset(utc_offset),
        )
        expr._check_satisfiable()
        return expr

    def _check_satisfiable(self) -> None:
        if not self.dom_any and not self.dow_any:
            return  # either may match, and every weekday occurs in every month
        if self.dow_any and not any(
            d <= _DAYS_IN_MONTH[m - 1] for m in self.months for d in self.days
        ):
            raise SchedulerError(
                f"cron expression {self.text!r} never fires: no month in the month field "
                "has that day-of-month",
                field="day-of-month",
                value=self.text.split()[2] if len(self.text.split()) == 5 else self.text,
            )

    def _day_matches(self, days: int, y: int, m: int, d: int) -> bool:
        dom_ok = d in self.days
        dow_ok = (days + 4) % 7 in self.weekdays  # 1970-01-01 was a Thursday (4)
        if not self.dom_any and not self.dow_any:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    def matches(self, ts: float) -> bool:
        """Whether the minute holding ``ts`` is one this expression fires in."""
        minute_index = math.floor((ts + self.utc_offset) / 60)
        days, rem = divmod(minute_index, 1440)
        hour, minute = divmod(rem, 60)
        y, m, d = civil_from_days(days)
        return (
            m in self.months
            and self._day_matches(days, y, m, d)
            and hour in self.hours
            and minute in self.minutes
        )

    def next_after(self, ts: float) -> float:
        """The first firing time strictly after ``ts`` (seconds since the epoch, whole minutes)."""
        minute_index = math.floor((ts + self.utc_offset) / 60) + 1
        days, rem = divmod(minute_index, 1440)
        hour, minute = divmod(rem, 60)
        y, m, d = civil_from_days(days)
        limit = days + _SEARCH_DAYS
        while days <= limit:
            if m not in self.months:
                m += 1
                if m > 12:
                    m, y = 1, y + 1
                d, hour, minute = 1, 0, 0
                days = days_from_civil(y, m, 1)
                continue
            if not self._day_matches(days, y, m, d):
                days += 1
                d += 1
                if d > _month_length(y, m):
                    y, m, d = civil_from_days(days)
                hour = minute = 0
                continue
            h = self._next_hour[hour]
            if h < 0:
                days += 1
                y, m, d = civil_from_days(days)
                hour = minute = 0
                continue
            if h != hour:
                hour, minute = h, 0
            mi = self._next_minute[minute]
            if mi < 0:
                hour += 1
                minute = 0
                if hour > 23:
                    days += 1
                    y, m, d = civil_from_days(days)
                    hour = 0
                continue
            return float((days * 1440 + hour * 60 + mi) * 60 - self.utc_offset)
        raise SchedulerError(
            f"cron expression {self.text!r} does not fire in the 8 years after {ts}; "
            "check the day-of-month and month fields",
            field="cron",
            value=self.text,
        )

    def __repr__(self) -> str:
        return f"CronExpr({self.text!r}, utc_offset={self.utc_offset})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronExpr):
            return NotImplemented
        return (self.text, self.utc_offset) == (other.text, other.utc_offset)

    def __hash__(self) -> int:
        return hash((self.text, self.utc_offset))
