"""The board's sensors (``machine``): loaded only when the config names one (``agents``).

Type-checked against the unix port's ``machine`` stubs, which have no ADC, Pin or I2C
signatures of a board: those calls carry ``type: ignore`` (a board's stubs know them).
"""

import machine

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass


class Adc:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.adc = machine.ADC(spec["pin"])  # type: ignore
        self.scale = float(spec.get("scale", 1.0))
        self.offset = float(spec.get("offset", 0.0))

    def read(self) -> float:
        return self.adc.read_u16() * self.scale + self.offset  # type: ignore


class DigitalPin:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.pin = machine.Pin(spec["pin"], machine.Pin.IN)  # type: ignore

    def read(self) -> float:
        return self.pin.value()


class I2cRegister:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.bus = machine.I2C(spec.get("bus", 0))
        self.address = spec["address"]
        self.register = spec.get("register", 0)
        self.nbytes = spec.get("nbytes", 2)
        self.scale = float(spec.get("scale", 1.0))

    def read(self) -> float:
        raw = self.bus.readfrom_mem(self.address, self.register, self.nbytes)  # type: ignore
        return int.from_bytes(raw, "big") * self.scale


def make(spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "adc":
        return Adc(spec)
    if kind == "pin":
        return DigitalPin(spec)
    return I2cRegister(spec)
