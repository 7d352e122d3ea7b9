"""Enrollment with a claim token: run once, then unloaded (``Syncer.enroll``).

``POST /api/enroll`` with ``{"token", "device_id"}`` and no CSR: central uses the token up and
answers a per-device sync key and no certificate (``edge_min/central/enrollment.py``). The
key is stored in ``<data_dir>/sync.key`` (hex, replaced whole) before it is used. A cut after
central used the token but before its answer arrived uses the token up: the device then
needs a new one (docs/mcu.md).
"""

import json

from edge_mcu.flashlog import replace_file
from edge_mcu.net import Http, NetError
from edge_mcu.sync import SyncFailed

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass


async def claim(conf: dict[str, Any], http: Http, key_path: str, log: Any) -> str:
    """Claim the token for a sync key, store it, return it (hex); ``SyncFailed`` with
    central's reason."""
    if conf["claim_token"] is None:
        raise SyncFailed(
            "no sync key and no claim_token: give the device one of them "
            "(or set encryption false for a central without keys)"
        )
    body = json.dumps({"token": conf["claim_token"], "device_id": conf["device_id"]}).encode()
    try:
        status, answer = await http.request(
            "POST", "/api/enroll", (body,), {"Content-Type": "application/json"}
        )
    except NetError as exc:
        raise SyncFailed("enrollment: %s" % exc) from None
    try:
        doc = json.loads(bytes(answer))
    except ValueError:
        doc = None
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("sync_key"), str):
        error = doc.get("error") if isinstance(doc, dict) else None
        reason = (
            "%s: %s" % (error.get("code"), error.get("message"))
            if isinstance(error, dict)
            else repr(bytes(answer[:80]))
        )
        raise SyncFailed("enrollment refused (HTTP %d) %s" % (status, reason))
    key = doc["sync_key"]
    try:
        ok = len(bytes.fromhex(key)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise SyncFailed("enrollment answered a sync_key that is not 64 hex digits")
    replace_file(key_path, key)
    log("sync: enrolled as %s; sync key stored in %s" % (doc.get("device_id"), key_path))

    return key
