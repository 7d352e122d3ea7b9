"""Sensors and the small rule agents that process their readings.

A sensor gives one number per sample: ``simulated`` (a deterministic wave with noise, for
the unix port and tests), ``adc`` (``machine.ADC(pin).read_u16()`` times ``scale`` plus
``offset``), ``pin`` (``machine.Pin(pin, Pin.IN).value()``) or ``i2c`` (``nbytes`` big-endian
bytes read from ``register`` of device ``address`` on bus ``bus``, times ``scale``).
They live in ``edge_mcu.hw``, loaded (with ``machine``) only by a config that names one.

A rule is an agent with state: ``threshold`` (``above`` and/or ``below``), ``moving_average``
(over ``window`` readings, optionally alerting ``above``/``below`` the average) and
``rate_of_change`` (per second, alerting past ``max_per_s``). Each names the ``sensor`` it
watches. ``Rules.run(sensor, value, at_ms)`` is one agent execution: it returns the output
map recorded with the reading, ``{rule name: {...}}`` plus ``alerts`` (the names that fired).
"""

import math

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

SENSOR_TYPES = ("simulated", "adc", "pin", "i2c")
RULE_TYPES = ("threshold", "moving_average", "rate_of_change")


class Simulated:
    """A sine wave of ``period`` samples around ``base`` with ``amplitude``, plus noise."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.base = float(spec.get("base", 20.0))
        self.amplitude = float(spec.get("amplitude", 5.0))
        self.period = float(spec.get("period", 60))
        self.noise = float(spec.get("noise", 0.5))
        self._state = int(spec.get("seed", 1)) or 1
        self._n = 0

    def _rand(self) -> float:
        # xorshift32: the same sequence on every port, so runs can be compared
        x = self._state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._state = x
        return x / 4294967296.0

    def read(self) -> float:
        self._n += 1
        wave = math.sin(2 * math.pi * self._n / self.period)
        value = self.base + self.amplitude * wave + self.noise * (self._rand() * 2 - 1)
        return round(value, 3)


def make_sensor(spec: dict[str, Any]) -> Any:
    """The sensor of a config entry; the board's ones load ``edge_mcu.hw`` (and machine)."""
    if spec["type"] == "simulated":
        return Simulated(spec)
    from edge_mcu import hw

    return hw.make(spec)


class Rule:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = spec["name"]
        self.sensor = spec["sensor"]
        self.type = spec["type"]
        self.above = spec.get("above")
        self.below = spec.get("below")
        self.window = int(spec.get("window", 5))
        self.max_per_s = spec.get("max_per_s")
        self._values = []  # type: list[float]
        self._last = None  # type: tuple[float, int] | None

    def _outside(self, value: float) -> bool:
        return (self.above is not None and value > self.above) or (
            self.below is not None and value < self.below
        )

    def run(self, value: float, at_ms: int) -> dict[str, Any]:
        if self.type == "threshold":
            return {"triggered": self._outside(value)}
        if self.type == "moving_average":
            self._values.append(value)
            if len(self._values) > self.window:
                self._values.pop(0)
            avg = round(sum(self._values) / len(self._values), 4)
            return {"value": avg, "triggered": self._outside(avg)}
        last, self._last = self._last, (value, at_ms)
        if last is None or at_ms <= last[1]:
            return {"rate": 0.0, "triggered": False}
        rate = round((value - last[0]) * 1000.0 / (at_ms - last[1]), 4)
        fired = self.max_per_s is not None and abs(rate) > self.max_per_s
        return {"rate": rate, "triggered": fired}


class Rules:
    """Every configured rule, run over each reading of the sensor it watches."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.rules = [Rule(s) for s in specs]

    def run(self, sensor: str, value: float, at_ms: int) -> dict[str, Any]:
        out = {}  # type: dict[str, Any]
        alerts = []
        for rule in self.rules:
            if rule.sensor == sensor:
                result = rule.run(value, at_ms)
                out[rule.name] = result
                if result.get("triggered"):
                    alerts.append(rule.name)
        out["alerts"] = alerts
        return out
