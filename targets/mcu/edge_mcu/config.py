"""The shim's one JSON config, checked whole before anything runs.

Every mistake raises ``ConfigError`` naming the key, the value and the fix; an unknown key
is refused too (a setting the shim would not act on is an error, never a silent no-op).
docs/mcu.md lists the keys; ``DEFAULTS`` holds the optional ones.
"""

import json

from edge_mcu.agents import RULE_TYPES, SENSOR_TYPES

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

REQUIRED = ("central_url", "device_id", "data_dir", "sensors", "rules")
DEFAULTS = {
    "claim_token": None,
    "sync_key": None,
    "sample_interval": 1.0,
    "sync_interval": 10.0,
    "readings": 0,
    "batch_size": 10,
    "batch_bytes": 3072,
    "max_log_bytes": 262144,
    "segment_bytes": 8192,
    "encryption": True,
    "ca_file": None,
    "backoff_min": 1.0,
    "backoff_max": 60.0,
    "timeout": 10.0,
    "agent_id": "mcu-rules",
}
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-"


class ConfigError(ValueError):
    """The config is wrong; the message names the key, the value and the fix."""


def _fail(key: str, value: Any, fix: str) -> None:
    raise ConfigError("config key %r = %r: %s" % (key, value, fix))


def _number(conf: dict[str, Any], key: str, low: float, integer: bool = False) -> None:
    value = conf[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < low:
        kind = "an integer" if integer else "a number"
        _fail(key, value, "must be %s >= %s" % (kind, low))


def load(path: str) -> dict[str, Any]:
    """The checked config of the JSON file at ``path``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(
            "cannot read the config file %s (%s); pass its path" % (path, exc)
        ) from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError("%s is not JSON (%s); fix its syntax" % (path, exc)) from None
    return check(doc)


def check(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ConfigError("the config must be a JSON object, got %s" % type(doc).__name__)
    for key in doc:
        if key not in REQUIRED and key not in DEFAULTS:
            _fail(
                key,
                doc[key],
                "unknown key; the keys are %s" % ", ".join(REQUIRED + tuple(DEFAULTS)),
            )
    for key in REQUIRED:
        if key not in doc:
            raise ConfigError("config key %r is missing; docs/mcu.md shows an example" % key)
    conf = dict(DEFAULTS)  # type: dict[str, Any]
    conf.update(doc)
    url = conf["central_url"]
    if not isinstance(url, str) or not (url.startswith("http://") or url.startswith("https://")):
        _fail("central_url", url, "must be an http:// or https:// URL of central")
    dev = conf["device_id"]
    if not isinstance(dev, str) or not 0 < len(dev) <= 128 or any(c not in _ID_CHARS for c in dev):
        _fail("device_id", dev, "use 1-128 letters, digits, '.', '_', ':', '@' or '-'")
    if not dev[0].isalpha() and not dev[0].isdigit():
        _fail("device_id", dev, "must start with a letter or digit")
    if not isinstance(conf["data_dir"], str) or not conf["data_dir"]:
        _fail(
            "data_dir",
            conf["data_dir"],
            "must be a folder path on the flash filesystem",
        )
    key = conf["sync_key"]
    if key is not None:
        try:
            ok = isinstance(key, str) and len(bytes.fromhex(key)) == 32
        except ValueError:
            ok = False
        if not ok:
            _fail("sync_key", key, "must be 64 hex digits (the device's 32-byte sync key)")
    token = conf["claim_token"]
    if token is not None and (not isinstance(token, str) or not token.startswith("emt_")):
        _fail("claim_token", token, "must be a claim token from central, starting 'emt_'")
    if not isinstance(conf["encryption"], bool):
        _fail("encryption", conf["encryption"], "must be true or false")
    for name in ("sample_interval", "sync_interval", "backoff_min", "backoff_max"):
        _number(conf, name, 0)
    _number(conf, "timeout", 0.1)
    for name, low in (
        ("readings", 0),
        ("batch_size", 1),
        ("segment_bytes", 256),
        ("batch_bytes", 1024),
    ):
        _number(conf, name, low, integer=True)
    _number(conf, "max_log_bytes", 2 * conf["segment_bytes"], integer=True)
    if conf["backoff_max"] < conf["backoff_min"]:
        _fail("backoff_max", conf["backoff_max"], "must be >= backoff_min")
    if conf["ca_file"] is not None and not conf["central_url"].startswith("https://"):
        _fail("ca_file", conf["ca_file"], "is for an https:// central_url only")
    _sensors(conf["sensors"])
    _rules(conf["rules"], [s["name"] for s in conf["sensors"]])
    return conf


def _named(items: list[Any], kind: str, unique: str) -> None:
    """Each item of ``items`` (the ``kind``s) is an object with a name; ``unique`` says how
    names are refused."""
    names = []  # type: list[str]
    for i, item in enumerate(items):
        where = "%ss[%d]" % (kind, i)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            _fail(where, item, "each %s is an object with a 'name'" % kind)
        if item["name"] in names or (kind == "rule" and item["name"] == "alerts"):
            _fail(where + ".name", item["name"], unique)
        names.append(item["name"])


def _sensors(sensors: Any) -> None:
    if not isinstance(sensors, list) or not sensors:
        _fail("sensors", sensors, "must be a non-empty list of sensor objects")
    _named(sensors, "sensor", "sensor names must be unique")
    for i, s in enumerate(sensors):
        where = "sensors[%d]" % i
        if s.get("type") not in SENSOR_TYPES:
            _fail(
                where + ".type",
                s.get("type"),
                "must be one of " + ", ".join(SENSOR_TYPES),
            )
        if s["type"] in ("adc", "pin") and not isinstance(s.get("pin"), (int, str)):
            _fail(
                where + ".pin",
                s.get("pin"),
                "name the pin (a number or a board pin name)",
            )
        if s["type"] == "i2c" and not isinstance(s.get("address"), int):
            _fail(
                where + ".address",
                s.get("address"),
                "must be the device's 7-bit I2C address",
            )


def _rules(rules: Any, sensor_names: list[str]) -> None:
    if not isinstance(rules, list):
        _fail("rules", rules, "must be a list of rule objects (it may be empty)")
    _named(rules, "rule", "rule names must be unique and not 'alerts'")
    for i, r in enumerate(rules):
        where = "rules[%d]" % i
        if r.get("type") not in RULE_TYPES:
            _fail(
                where + ".type",
                r.get("type"),
                "must be one of " + ", ".join(RULE_TYPES),
            )
        if r.get("sensor") not in sensor_names:
            _fail(
                where + ".sensor",
                r.get("sensor"),
                "must name a sensor: " + ", ".join(sensor_names),
            )
        for bound in ("above", "below", "max_per_s"):
            v = r.get(bound)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                _fail(where + "." + bound, v, "must be a number")
        if "window" in r and (not isinstance(r["window"], int) or not 1 <= r["window"] <= 64):
            _fail(where + ".window", r["window"], "must be an integer from 1 to 64")
        known = ("name", "type", "sensor", "above", "below", "window", "max_per_s")
        for k in r:
            if k not in known:
                _fail(where + "." + k, r[k], "unknown rule key; use " + ", ".join(known))
