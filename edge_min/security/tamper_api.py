"""The tamper subsystem's routes and commands.

Routes (``edge_min.security.tamper.Tamper.routes``)::

    GET  /security/status    read       each check, its last measurement, the state
    POST /security/accept    configure  re-measure ({"check": NAME|"all"}) and take as baseline
    POST /security/unlock    configure  lift a lockdown (re-measures; answered while locked)
    POST /security/lockdown  configure  lock down now ({"reason": ...}), e.g. asked by central

Commands: ``security status``, ``security accept``, ``security unlock`` and ``security
manifest``. The first three go to the running runtime's API when one holds the data
directory (with a one-minute admin token made from the data directory's key: whoever can
read that key is the box's administrator), else they open the data directory themselves
under its lock. Who did it (``--by``, default ``cli:<login>``) is recorded with the
authenticated caller in ``sync_log``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from typing import TYPE_CHECKING, Any

from edge_min.errors import UsageError
from edge_min.routing import Request
from edge_min.subsystem import ApiContext, ApiRoute, Command, CommandContext

if TYPE_CHECKING:
    from edge_min.security.tamper import Tamper


def tamper_routes(sub: Tamper, api: ApiContext) -> list[ApiRoute]:
    """The four routes, bound to the subsystem."""

    def who(request: Request) -> str:
        body = request.json() or {}
        claimed = body.get("by") if isinstance(body, dict) else None
        caller = request.caller or "api"
        return f"{caller} as {claimed}" if claimed else caller

    def status(_: Request) -> dict[str, Any]:
        return sub.view()

    def accept(request: Request) -> dict[str, Any]:
        body = request.json() or {}
        what = str(body.get("check", "all")) if isinstance(body, dict) else "all"
        by = who(request)
        return dict(api.on_loop(lambda: sub.accept(what, by)))

    def unlock(request: Request) -> dict[str, Any]:
        by = who(request)
        return dict(api.on_loop(lambda: sub.unlock(by)))

    def lockdown(request: Request) -> dict[str, Any]:
        body = request.json() or {}
        reason = str(body.get("reason") or "asked through the API")
        by = who(request)
        api.on_loop(lambda: sub.lockdown(reason, by=by))
        return sub.view()

    return [
        ApiRoute("GET", "/security/status", "read", status),
        ApiRoute("POST", "/security/accept", "configure", accept),
        ApiRoute("POST", "/security/unlock", "configure", unlock, while_locked=True),
        ApiRoute("POST", "/security/lockdown", "configure", lockdown, while_locked=True),
    ]


# -- commands ------------------------------------------------------------------------------


def _by(args: argparse.Namespace) -> str:
    return str(args.by or f"cli:{getpass.getuser()}")


def _via_api(ctx: CommandContext, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """Call the running runtime's API as its administrator; UsageError with its message."""
    import urllib.error
    import urllib.request

    from edge_min.security.tokens import issue, key_path, load_key

    _, paths = ctx.context()
    url = ctx.running_url()
    if url is None:
        raise UsageError(f"a runtime (pid {ctx.holder()}) holds {paths.root} but left no URL")
    token = issue("admin", 60, key=load_key(key_path(paths.root)), now=time.time())
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"{err.code} {err.reason}"
        raise UsageError(message) from err


def _tamper(runtime: Any) -> Tamper:
    from edge_min.security.tamper import Tamper

    sub = runtime.find(Tamper)
    if sub is None:
        raise UsageError("this runtime has no tamper subsystem")
    return sub


def _local_or_api(ctx: CommandContext, local: Any, method: str, path: str, body: Any) -> int:
    with ctx.holding() as here:
        if here:
            with ctx.opened() as runtime:
                view = local(_tamper(runtime))
        else:
            view = _via_api(ctx, method, path, body)
    _print(view, getattr(ctx.args, "json", False))
    return 0


def security_status(ctx: CommandContext) -> int:
    """Show the tamper state and each check's last measurement."""
    return _local_or_api(ctx, lambda t: t.view(), "GET", "/security/status", None)


def security_accept(ctx: CommandContext) -> int:
    """Re-measure and take what is there now as the baseline (after a legitimate change)."""
    what, by = ctx.args.check, _by(ctx.args)
    return _local_or_api(
        ctx, lambda t: t.accept(what, by), "POST", "/security/accept", {"check": what, "by": by}
    )


def security_unlock(ctx: CommandContext) -> int:
    """Lift a lockdown: re-measure, record who and when."""
    by = _by(ctx.args)
    return _local_or_api(ctx, lambda t: t.unlock(by), "POST", "/security/unlock", {"by": by})


def security_manifest(ctx: CommandContext) -> int:
    """Write (``--write``) or check the signed manifest of this program's files."""
    from pathlib import Path

    from edge_min import __version__
    from edge_min.clock import iso
    from edge_min.security import measure
    from edge_min.security.manifest import (
        load_build_key,
        read_manifest,
        this_program,
        trusted_build_keys,
        write_manifest,
    )

    program = this_program()
    if ctx.args.write:
        if not ctx.args.key:
            raise UsageError("--write needs --key FILE: the build key (made there if absent)")
        seed = load_build_key(Path(ctx.args.key))
        path = write_manifest(program, seed, version=__version__, created_at=iso(time.time()))
        print(f"wrote {path} ({len(program.files())} files)")
        return 0
    manifest = read_manifest(program.manifest_path, trusted_build_keys())
    diffs = measure.differences(manifest.files, measure.measure_program(program.files()))
    for line in diffs:
        print(line)
    print(f"{program.manifest_path}: {'differs' if diffs else 'ok'} ({len(manifest.files)} files)")
    return 1 if diffs else 0


def _print(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True))
        return
    print(f"tamper state: {view.get('state')} (response {view.get('response')})")
    if view.get("lockdown"):
        lock = view["lockdown"]
        print(f"locked down since {lock.get('at')}: {lock.get('reason')}")
    for name, check in (view.get("checks") or {}).items():
        diffs = check.get("differences") or []
        items, at = check.get("items"), check.get("measured_at")
        print(f"  {name}: {check.get('status')} ({items} items, {at})")
        for line in diffs[:10]:
            print(f"    {line}")


def _who(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", help="who makes the change, for the record (default: cli:<login>)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def _accept_arguments(p: argparse.ArgumentParser) -> None:
    from edge_min.security.measure import CHECKS

    _who(p)
    p.add_argument("--check", default="all", choices=("all", *CHECKS), help="what to re-measure")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def _manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--write", action="store_true", help="measure and sign a new manifest")
    p.add_argument("--key", help="the build key's file (hex Ed25519 seed; made if absent)")


COMMANDS = [
    Command(
        ("security", "status"),
        "show tamper detection's state and each check's last measurement",
        "edge-min security status --json",
        security_status,
        _status_arguments,
    ),
    Command(
        ("security", "accept"),
        "re-measure after a legitimate change (config edit, update) so it is not tampering",
        "edge-min security accept --check filesystem_integrity --by alice",
        security_accept,
        _accept_arguments,
    ),
    Command(
        ("security", "unlock"),
        "lift a lockdown (admin): re-measure and record who and when",
        "edge-min security unlock --by alice",
        security_unlock,
        _who,
    ),
    Command(
        ("security", "manifest"),
        "check this program against its signed manifest, or write one (--write)",
        "edge-min security manifest --write --key .cache/build-key.ed25519",
        security_manifest,
        _manifest_arguments,
    ),
]
