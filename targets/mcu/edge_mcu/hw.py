"""The board's sensors (``machine``): loaded only when the config names one (``agents``)."""

import machine


class Adc:
    def __init__(self, spec):
        self.adc = machine.ADC(spec["pin"])
        self.scale = float(spec.get("scale", 1.0))
        self.offset = float(spec.get("offset", 0.0))

    def read(self):
        return self.adc.read_u16() * self.scale + self.offset


class DigitalPin:
    def __init__(self, spec):
        self.pin = machine.Pin(spec["pin"], machine.Pin.IN)

    def read(self):
        return self.pin.value()


class I2cRegister:
    def __init__(self, spec):
        self.bus = machine.I2C(spec.get("bus", 0))
        self.address = spec["address"]
        self.register = spec.get("register", 0)
        self.nbytes = spec.get("nbytes", 2)
        self.scale = float(spec.get("scale", 1.0))

    def read(self):
        raw = self.bus.readfrom_mem(self.address, self.register, self.nbytes)
        return int.from_bytes(raw, "big") * self.scale


def make(spec):
    kind = spec["type"]
    if kind == "adc":
        return Adc(spec)
    if kind == "pin":
        return DigitalPin(spec)
    return I2cRegister(spec)
