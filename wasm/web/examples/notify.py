"""The browser's notify agent: each alert once per idempotency key, kept in alerts.jsonl."""

import json
import os


def send(value, context):
    folder = getattr(context, "work_dir", None) or "."
    os.makedirs(folder, exist_ok=True)
    keys = os.path.join(folder, "sent.keys")
    key = context.idempotency_key
    seen = []
    if os.path.exists(keys):
        with open(keys) as f:
            seen = f.read().split()
    if key in seen:
        return {"sent": False, "duplicate": True}
    with open(os.path.join(folder, "alerts.jsonl"), "a") as log:
        log.write(json.dumps({"key": key, "alert": value}) + "\n")
    with open(keys, "a") as f:
        f.write(key + "\n")
    return {"sent": True, "alert": value}
