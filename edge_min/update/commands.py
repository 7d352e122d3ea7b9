"""``edge-min update ...``: install a payload into a slot, roll back, show the slots, supervise.

- ``update install-payload PATH --version V``: install a verified payload (the gateway
  binary or a from-source package) into the inactive slot and put it on trial (``--commit``:
  commit at once, for a first install that has nothing to fall back to). ``update install
  BUNDLE`` (bundle verification, then this) is the signed path.
- ``update rollback``: back to the previous version kept in the other slot (or give up the
  trial under way); the supervisor restarts on it.
- ``update status [--json]``: the state file, what the supervisor runs, the pending report.
- ``update wait [--timeout S] [--give-up]``: until the trial under way commits (exit 0) or
  falls back (exit 1, the reason the supervisor recorded); after ``S`` seconds plus
  ``update.commit_after`` it exits 3, or with ``--give-up`` ends the trial (exit 1).
  ``infra/scripts/update.sh`` calls it after ``update install``.
- ``update supervise``: the launcher the systemd unit runs (``edge_min.update.supervisor``).

The install root is ``--root``, else ``$EDGE_MIN_UPDATE_ROOT``, else ``/opt/meta-agent``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge_min.errors import UsageError
from edge_min.subsystem import Command, CommandContext

DEFAULT_ROOT = "/opt/meta-agent"


def install_root(args: argparse.Namespace) -> Path:
    """The install root the slots live under."""
    from edge_min.update.supervisor import ENV_ROOT

    return Path(args.root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT).absolute()


def _installer(args: argparse.Namespace) -> Any:
    from edge_min.clock import SystemClock
    from edge_min.update.installer import Installer

    return Installer(install_root(args), SystemClock())


def _root_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        metavar="DIR",
        help="the install root holding slots/ "
        f"(default: $EDGE_MIN_UPDATE_ROOT, else {DEFAULT_ROOT})",
    )


def cmd_install_payload(ctx: CommandContext) -> int:
    """Install PATH into the inactive slot and put it on trial."""
    from edge_min.update.installer import local_payload

    args = ctx.args
    installer = _installer(args)
    payload = local_payload(Path(args.path), args.version, args.kind)
    slot = installer.install(payload)
    if payload.kind == "package":  # so the next version can come as a delta bundle
        from edge_min.update.install import keep_package_tar

        keep_package_tar(installer.root, slot, payload.payload)
    if args.no_switch:
        print(f"installed {args.version} in slot {slot} (not switched)")
        return 0
    installer.switch()
    if args.commit:
        installer.commit(slot)
        print(f"installed {args.version} in slot {slot}, committed")
    else:
        print(f"installed {args.version} in slot {slot}, on trial at the next start")
    return 0


def _install_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="the payload: gateway binary or package .tar.gz")
    p.add_argument("--version", required=True, help="the payload's version")
    p.add_argument(
        "--kind",
        choices=("binary", "package", "image"),
        help="default: image for a squashfs file, package for a tar archive, else binary",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--commit", action="store_true", help="commit at once (a first install: no trial)"
    )
    group.add_argument("--no-switch", action="store_true", help="install only; switch later")
    _root_argument(p)


def cmd_rollback(ctx: CommandContext) -> int:
    """Go back to the previous version (or give up the trial under way)."""
    installer = _installer(ctx.args)
    before = installer.state()
    slot = installer.rollback(ctx.args.reason)
    version = installer.state()["slots"][slot]["version"]
    what = "gave up the trial; " if before["trying"] else ""
    print(f"{what}slot {slot} ({version}) is active; the supervisor restarts on it")
    return 0


def _rollback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="manual rollback", help="kept for central's report")
    _root_argument(p)


def status_view(root: Path) -> dict[str, Any]:
    """The slots, the trial, the report and what the supervisor runs."""
    from edge_min.clock import SystemClock
    from edge_min.update.installer import Installer
    from edge_min.update.supervisor import STATUS_FILE

    installer = Installer(root, SystemClock())
    view: dict[str, Any] = {"root": str(root), **installer.state()}
    try:
        view["running"] = json.loads((root / STATUS_FILE).read_text())
    except (OSError, ValueError):
        view["running"] = None
    view["pending_report"] = installer.pending_report()
    return view


def cmd_status(ctx: CommandContext) -> int:
    """Print the slots and the trial."""
    view = status_view(install_root(ctx.args))
    if ctx.args.json:
        json.dump(view, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"install root: {view['root']}")
    for name, slot in sorted(view["slots"].items()):
        mark = "*" if name == view["active"] else " "
        print(f"{mark} slot {name}: {slot['state']:<10} {slot.get('version') or '-'}")
    trying = view["trying"]
    if trying:
        print(f"on trial: slot {trying['slot']}, try {trying['tries']}")
    running = view["running"]
    if running:
        print(f"running: slot {running['slot']} (pid {running['child_pid']})")
    report = view["report"]
    if report:
        sent = "sent" if report.get("reported") else "not yet sent to central"
        print(f"last {report['kind']}: {report['version']} ({report['reason']}); {sent}")
    return 0


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the whole state as JSON")
    _root_argument(p)


WAIT_POLL = 0.5  # seconds between looks at the state file while waiting for a trial


def trial_outcome(state: dict[str, Any], slot: str) -> tuple[int, str] | None:
    """None while ``slot`` is on trial; else (0, how it committed) or (1, why it was given
    up, from the report the supervisor or a rollback recorded)."""
    from edge_min.update.slots import other

    trying = state["trying"]
    if trying is not None and trying["slot"] == slot:
        return None
    record, kept = state["slots"][slot], state["slots"][other(slot)]
    active = state["active"]
    if active == slot and record["state"] == "good":
        prev = f"; {kept['version']} is kept in slot {other(slot)}" if kept.get("version") else ""
        return 0, f"slot {slot} ({record['version']}) committed{prev}"
    report = state.get("report") or {}
    reason = report.get("reason") if report.get("slot") == slot else None
    runs = f"slot {active} ({state['slots'][active]['version']}) runs" if active else "no slot"
    why = reason or "its trial ended without a commit"
    return 1, f"slot {slot} ({record['version']}) was given up: {why}; {runs}"


def cmd_wait(ctx: CommandContext) -> int:
    """Wait until the trial under way commits or falls back; say which."""
    import time

    args = ctx.args
    config, _ = ctx.context()
    installer = _installer(args)
    state = installer.state()
    slot = args.slot or (state["trying"] or {}).get("slot")
    if slot is None:
        active = state["active"]
        if active is None:
            print(f"no slot installed under {installer.root}")
            return 1
        print(f"no trial under way; slot {active} ({state['slots'][active]['version']}) is active")
        return 0
    budget = args.timeout + config.update.commit_after
    deadline = installer.clock.monotonic() + budget
    while True:
        state = installer.state()
        outcome = trial_outcome(state, slot)
        if outcome is not None:
            print(outcome[1])
            return outcome[0]
        if installer.clock.monotonic() >= deadline:
            why = (
                f"not committed within {budget:g}s (--timeout {args.timeout:g}s + "
                f"update.commit_after {config.update.commit_after:g}s)"
            )
            if not args.give_up:
                tries = state["trying"]["tries"]
                print(f"slot {slot} is still on trial (try {tries}): {why}")
                return 3
            installer.give_up(slot, why)  # False: it ended meanwhile; the outcome says how
            continue
        time.sleep(WAIT_POLL)


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds for the new version to come up, on top of update.commit_after (default 60)",
    )
    p.add_argument(
        "--give-up", action="store_true", help="at the timeout, end the trial (the old slot runs)"
    )
    p.add_argument("--slot", choices=("a", "b"), help="the slot on trial (default: the one now)")
    _root_argument(p)


def cmd_supervise(ctx: CommandContext) -> int:
    """Start and watch the right slot until SIGTERM."""
    from edge_min.update.supervisor import Supervisor

    args = ctx.args
    config, paths = ctx.context()
    installer = _installer(args)
    run_args: list[str] = []
    if args.config:
        run_args += ["--config", str(Path(args.config).absolute())]
    if args.data_dir:
        run_args += ["--data-dir", str(Path(args.data_dir).absolute())]
    run_args.append("run")
    if args.host:
        run_args += ["--host", args.host]
    if args.port is not None:
        run_args += ["--port", str(args.port)]
    if not installer.state()["active"] and not installer.state()["trying"]:
        raise UsageError(
            f"no slot installed under {installer.root}; first: edge-min update "
            f"install-payload PATH --version V --commit --root {installer.root}"
        )
    supervisor = Supervisor(
        installer,
        run_args,
        db=paths.db,
        health_timeout=config.update.health_timeout,
        log_file=paths.root / "logs" / "edge-min.out",
    )
    return supervisor.run()


def cmd_install(ctx: CommandContext) -> int:
    """Verify a signed bundle and install it into the inactive slot, on trial."""
    from edge_min.clock import SystemClock
    from edge_min.update.install import install_bundle

    args = ctx.args
    _, paths = ctx.context()
    slot, verified = install_bundle(
        Path(args.bundle),
        root=install_root(args),
        data_dir=paths.root,
        clock=SystemClock(),
        switch=not args.no_switch,
    )
    if args.no_switch:
        print(f"verified and installed {verified.version} in slot {slot} (not switched)")
    else:
        print(
            f"verified and installed {verified.version} in slot {slot}, on trial at the next start"
        )
    return 0


def _bundle_install_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", metavar="BUNDLE", help="a signed bundle (edge-min update bundle)")
    p.add_argument("--no-switch", action="store_true", help="install only; switch later")
    _root_argument(p)


def cmd_trust(ctx: CommandContext) -> int:
    """Pin the root of the update signing keys this device trusts."""
    from edge_min.update.trust import Trust, trust_dir

    _, paths = ctx.context()
    folder = trust_dir(paths.root)
    Trust.pin(Path(ctx.args.root_json).read_bytes(), folder)
    print(f"pinned {ctx.args.root_json} as the trusted update root in {folder}")
    return 0


def _trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root_json", metavar="ROOT.json", help="root.json of `update keys init`")


def _supervise_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="passed to each slot's `edge-min run`")
    p.add_argument("--port", type=int, help="passed to each slot's `edge-min run`")
    _root_argument(p)


COMMANDS = [
    Command(
        ("update", "install"),
        "verify a signed bundle, install it into the inactive slot and put it on trial",
        "edge-min update install /media/usb/edge-min-0.3.0.emub",
        cmd_install,
        _bundle_install_arguments,
    ),
    Command(
        ("update", "trust"),
        "pin the root of the update signing keys this device trusts",
        "edge-min update trust ./update-keys/root.json",
        cmd_trust,
        _trust_arguments,
    ),
    Command(
        ("update", "install-payload"),
        "install a payload into the inactive slot and put it on trial",
        "edge-min update install-payload dist/edge-min-linux-x86_64 --version 0.3.0",
        cmd_install_payload,
        _install_arguments,
    ),
    Command(
        ("update", "rollback"),
        "go back to the previous version kept in the other slot",
        "edge-min update rollback --reason 'sensor driver regression'",
        cmd_rollback,
        _rollback_arguments,
    ),
    Command(
        ("update", "status"),
        "show the A/B slots, the trial under way and the last fallback",
        "edge-min update status --json",
        cmd_status,
        _status_arguments,
    ),
    Command(
        ("update", "wait"),
        "wait until the trial under way commits (exit 0) or falls back (exit 1)",
        "edge-min update wait --timeout 120 --give-up --root /opt/meta-agent/update",
        cmd_wait,
        _wait_arguments,
    ),
    Command(
        ("update", "supervise"),
        "start the right slot, count the tries of a new version, fall back after 3",
        "edge-min --config /etc/meta-agent/edge-config.yaml --data-dir /data update supervise",
        cmd_supervise,
        _supervise_arguments,
        serves=True,
    ),
]
