"""The ``edge-min`` command line: ``main(argv=None) -> int``, one function per subcommand.

User errors become one line on stderr (``edge-min: error: ...``) and exit code 2, here at the
edge and nowhere else; ``config check`` and ``workflow run --wait`` exit 1 for a failed check
or a failed run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_min import __version__
from edge_min.errors import EdgeError, RuntimeBusy

PROG = "edge-min"
log = logging.getLogger("edge_min.cli")


class UsageError(EdgeError):
    """A command line that cannot be carried out as written."""

    code = "usage_error"


# -- shared plumbing ----------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config:
        return Path(args.config)
    env = os.environ.get("EDGE_MIN_CONFIG")
    if env:
        return Path(env)
    beside = Path(args.data_dir or "edge-data") / "edge-config.yaml"
    return beside if beside.exists() else None


def _context(args: argparse.Namespace) -> tuple[Any, Any]:
    from edge_min.config import load_config
    from edge_min.runtime import Paths

    config = load_config(_config_path(args))
    return config, Paths.resolve(config, args.data_dir)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


class DataDirLock:
    """An advisory lock on ``<data dir>/runtime.lock``: one runtime per data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder, for messages."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Let go of the lock."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Any]:
    """The data directory's runtime, opened for one command and closed after it."""
    runtime = _open_runtime(args, threads=False)
    try:
        yield runtime
    finally:
        runtime.close()


def _open_runtime(args: argparse.Namespace, *, threads: bool) -> Any:
    from edge_min.runtime import Runtime

    config, paths = _context(args)
    dispatcher = None
    if threads:
        from edge_min.platform.threads import ThreadDispatcher

        dispatcher = ThreadDispatcher(max_workers=max(4, config.runtime.max_concurrent_workflows))
    return Runtime(config, paths, dispatcher=dispatcher).open()


# -- commands -----------------------------------------------------------------------------


def cmd_version(args: argparse.Namespace) -> int:
    """Print the version."""
    print(f"{PROG} {__version__}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write the five default config files into DIR."""
    from edge_min.config import default_files

    target = Path(args.dir or args.data_dir or "edge-data")
    target.mkdir(parents=True, exist_ok=True)
    files = default_files()
    clashes = [name for name in files if (target / name).exists()]
    if clashes and not args.force:
        raise UsageError(
            f"{', '.join(clashes)} already exist in {target}; use --force to overwrite them"
        )
    for name, text in files.items():
        (target / name).write_text(text)
        print(target / name)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate config files; print OK or the errors for each."""
    from edge_min.config import check_file

    failed = False
    for name in args.files:
        problems = check_file(name)
        if problems:
            failed = True
            for line in problems:
                print(line)
        else:
            print(f"{name}: OK")
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the runtime and the local API; stop cleanly on SIGTERM or SIGINT."""
    from edge_min.api.routes import build_router
    from edge_min.api.server import ApiServer
    from edge_min.platform.threads import ThreadWaiter

    config, paths = _context(args)
    lock = DataDirLock(paths.lock)
    if not lock.acquire():
        raise RuntimeBusy(
            f"another edge-min run (pid {lock.holder()}) already holds {paths.root}; "
            "stop it first or use another --data-dir"
        )
    waiter = ThreadWaiter()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        waiter.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runtime = None
    server = None
    central = None
    try:
        if args.local_central:
            from edge_min.central.local import start_local_central

            central = start_local_central(config, paths.root)
        from edge_min.platform.threads import ThreadDispatcher
        from edge_min.runtime import Runtime

        dispatcher = ThreadDispatcher(
            max_workers=max(4, config.runtime.max_concurrent_workflows), on_done=waiter.set
        )
        from edge_min.platform.threads import ThreadWorkerPool

        sync_worker = ThreadWorkerPool(1, name="edge-sync")
        runtime = Runtime(config, paths, dispatcher=dispatcher, sync_worker=sync_worker).open()
        runtime.wake = waiter.set
        host = args.host or config.api.host
        port = config.api.port if args.port is None else args.port
        from edge_min.api.auth import install_authorizer

        router = build_router(runtime)
        authn = config.security_config.access_control.authentication
        install_authorizer(router, runtime, cert_roles=authn.certificate_roles)
        ssl_context = None
        if config.api.tls:
            from edge_min.security.tls import context_from_config

            # Callers may present a certificate (mapped to a role) or a bearer token.
            ssl_context = context_from_config(
                config.security_config, role="server", require_client_cert=False
            )
        server = ApiServer(
            router, host, port, config.api.max_request_bytes, ssl_context=ssl_context
        )
        server.start()
        bound_host, bound_port = server.address
        # Where this runtime answers, for CLI commands on the same data directory.
        (paths.root / "runtime.json").write_text(
            json.dumps({"pid": os.getpid(), "url": f"{server.scheme}://{bound_host}:{bound_port}"})
        )
        print(
            f"{PROG} {__version__}: data in {paths.root}, API on {server.scheme}://{bound_host}:{bound_port}",
            flush=True,
        )
        while not stopping:
            delay = runtime.tick()
            waiter.wait(delay)
            waiter.clear()
        log.info("stopping on signal %s", stopping[0])
        return 0
    finally:
        if server is not None:
            server.stop()
            (paths.root / "runtime.json").unlink(missing_ok=True)
        if runtime is not None:
            runtime.close()
        if central is not None:
            central.stop()
        lock.release()


def cmd_status(args: argparse.Namespace) -> int:
    """Print the data directory's status as JSON."""
    from edge_min.runtime import status_of
    from edge_min.store import open_store
    from edge_min.store.files import FileStore

    config, paths = _context(args)
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; start the runtime with `edge-min run`")
    store = open_store(str(paths.db), synchronous=config.storage.synchronous)
    try:
        files = FileStore(paths.root, config.runtime.max_storage_usage, db_size=store.size_bytes)
        lock = DataDirLock(paths.lock)
        running = not lock.acquire()
        lock.release()
        _print_json(status_of(store, paths, files, extra={"runtime_running": running}))
    finally:
        store.close()
    return 0


def _print_health(view: dict[str, Any]) -> None:
    print(f"health: {view.get('health', view.get('status'))}")
    for check in view.get("checks", []):
        last = check.get("last") or {}
        output = " ".join(str(last.get("output", "")).split())[:60]
        print(
            f"  {check['name']:<18} {check['status']:<7} via {last.get('via', '-'):<20} "
            f"{last.get('duration', 0):>6}s  {output}"
        )
    firing = view.get("alerts_firing") or []
    print(f"alerts firing: {', '.join(firing) if firing else 'none'}")
    metrics = view.get("metrics") or {}
    if metrics:
        print(f"metrics buffered: {metrics.get('buffered')} (dropped {metrics.get('dropped')})")


def cmd_health(args: argparse.Namespace) -> int:
    """Print each health check's result; exit 1 when unhealthy."""
    import urllib.error
    import urllib.request

    config, paths = _context(args)
    lock = DataDirLock(paths.lock)
    if lock.acquire():  # no runtime: open the data directory and run the checks once here
        try:
            with _opened(args) as runtime:
                runtime.monitor.collect()
                runtime.monitor.run_due_checks()
                view = dict(runtime.monitor.status())
                view["health"] = view["status"]
        finally:
            lock.release()
    else:
        try:
            base = json.loads((paths.root / "runtime.json").read_text())["url"]
        except (OSError, ValueError, KeyError):
            base = f"http://{config.api.host}:{config.api.port}"
        url = base + "/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                view = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            view = json.loads(err.read() or b"{}")
        except OSError as exc:
            raise UsageError(
                f"the runtime holds {paths.root} but {url} did not answer: {exc}"
            ) from exc
    if args.json:
        _print_json(view)
    else:
        _print_health(view)
    return 1 if view.get("health", view.get("status")) == "unhealthy" else 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Take an online backup now; prints its path."""
    from edge_min.store import open_store
    from edge_min.store.backup import create_backup

    config, paths = _context(args)
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; nothing to back up")
    store = open_store(str(paths.db), synchronous=config.storage.synchronous)
    try:
        print(create_backup(store, paths.root, time.time(), keep=config.storage.backup_keep))
    finally:
        store.close()
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the database with a backup that passes integrity_check."""
    from edge_min.store.backup import restore

    _, paths = _context(args)
    lock = DataDirLock(paths.lock)
    if not lock.acquire():
        raise RuntimeBusy(
            f"edge-min run (pid {lock.holder()}) is using {paths.root}; stop it before restoring"
        )
    try:
        restore(args.file, paths.db)
    finally:
        lock.release()
    print(f"restored {paths.db} from {args.file}")
    return 0


def cmd_workflow_add(args: argparse.Namespace) -> int:
    """Validate and store a workflow definition file."""
    with _opened(args) as runtime:
        row = runtime.engine.add_workflow(Path(args.file).read_text(), origin=args.file)
    print(f"{row['name']} {row['version']} ({row['id']})")
    return 0


def cmd_workflow_list(args: argparse.Namespace) -> int:
    """List stored workflows."""
    from edge_min.workflows.views import workflow_view

    with _opened(args) as runtime:
        _print_json([workflow_view(r, full=False) for r in runtime.store.workflows.list()])
    return 0


def _wait_for(
    store: Any, execution_id: str, timeout: float | None, tick: Callable[[], float]
) -> Any:
    from edge_min.workflows.views import describe_execution

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        view = describe_execution(store, execution_id)
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        if deadline is not None and time.monotonic() > deadline:
            raise UsageError(f"run {execution_id} still {view['status']} after {timeout}s")
        time.sleep(min(tick(), 0.05))


def cmd_workflow_run(args: argparse.Namespace) -> int:
    """Queue a run for the runtime holding the data dir, or run it here when none does."""
    try:
        value = json.loads(args.input) if args.input is not None else None
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from exc
    _, paths = _context(args)
    lock = DataDirLock(paths.lock)
    foreground = lock.acquire()
    runtime = _open_runtime(args, threads=foreground)
    try:
        execution_id = runtime.engine.submit(args.name, value)
        print(execution_id, flush=True)
        if not foreground and not args.wait:
            return 0
        tick = runtime.tick if foreground else (lambda: 0.2)
        view = _wait_for(runtime.store, execution_id, args.timeout, tick)
        if args.wait:
            _print_json(view)
        return 0 if view["status"] == "succeeded" else 1
    finally:
        runtime.close()
        lock.release()


def cmd_exec_list(args: argparse.Namespace) -> int:
    """List runs, newest first."""
    from edge_min.workflows.views import list_executions

    with _opened(args) as runtime:
        _print_json(list_executions(runtime.store, args.status, args.limit))
    return 0


def cmd_exec_show(args: argparse.Namespace) -> int:
    """Show one run with its steps."""
    from edge_min.workflows.views import describe_execution

    with _opened(args) as runtime:
        _print_json(describe_execution(runtime.store, args.id))
    return 0


def cmd_agent_add(args: argparse.Namespace) -> int:
    """Validate an edge-agent-config.yaml and register the agent."""
    from edge_min.config import load_agent_config

    config = load_agent_config(args.file)
    with _opened(args) as runtime:
        row = runtime.agents.add(config)
    print(f"{row['name']} {row['version']} ({row['id']})")
    return 0


def cmd_agent_run(args: argparse.Namespace) -> int:
    """Invoke an agent once and print its output JSON."""
    try:
        value = json.loads(args.input) if args.input is not None else None
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from exc
    with _opened(args) as runtime:
        try:
            output = runtime.agents.run_once(args.name, value)
        except EdgeError as exc:  # the agent failed: exit 1, as a failed run does
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(output, sort_keys=True))
    return 0


def cmd_agent_list(args: argparse.Namespace) -> int:
    """List registered agents."""
    with _opened(args) as runtime:
        _print_json(
            [
                {"name": a["name"], "type": a["type"], "version": a["version"]}
                for a in runtime.store.agents.list()
            ]
        )
    return 0


def cmd_agent_show(args: argparse.Namespace) -> int:
    """Show one agent's stored config."""
    with _opened(args) as runtime:
        row = runtime.store.agents.get_by_name(args.name)
        if row is None:
            raise UsageError(f"no agent named {args.name!r}; list them with `edge-min agent list`")
        _print_json(row)
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    """Issue a signed API bearer token for a role; prints the token alone."""
    from edge_min.api.auth import token_issue

    return token_issue(args)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an API token (or its id) at once, also for a running runtime."""
    from edge_min.api.auth import token_revoke

    return token_revoke(args)


class SyncUnavailable(EdgeError):
    """The running runtime cannot sync now (offline, link down, no sync manager)."""

    code = "sync_unavailable"


def _sync_via_runtime(paths: Any, timeout: float = 120.0) -> int:
    """POST /sync/now to the runtime holding the data dir; wait for the run; print a summary."""
    import urllib.error
    import urllib.request

    from edge_min.security.tokens import issue, key_path, load_key

    try:
        base = json.loads((paths.root / "runtime.json").read_text())["url"]
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"a runtime holds {paths.root} but left no runtime.json") from exc
    # Whoever can read the data directory's key is its administrator: a one-minute token.
    token = issue("admin", 60, key=load_key(key_path(paths.root)), now=time.time())
    headers = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"{err.code} {err.reason}"
            raise SyncUnavailable(message) from err

    started = time.time()
    try:
        call("POST", "/sync/now")
    except SyncUnavailable as exc:
        print(f"sync: failed: {exc}")
        return 1
    deadline = time.monotonic() + timeout
    while True:
        doc = call("GET", "/sync/status")
        attempts = [e.get("last_attempt") or "" for e in doc.get("entities", {}).values()]
        finished = doc["status"] != "running" and attempts and min(attempts) >= _iso(started)
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for entity, info in sorted(doc.get("entities", {}).items()):
        error = f", error: {info['last_error']}" if info.get("last_error") else ""
        print(
            f"{entity}: pending {info.get('pending')}, last success {info.get('last_success')}"
            f"{error}"
        )
    print(f"sync: {doc['status']}")
    return 0 if doc["status"] == "success" else 1


def _iso(ts: float) -> str:
    from edge_min.clock import iso

    return iso(ts)


def _sync_command(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from edge_min.sync import commands

        config, paths = _context(args)
        if name == "sync_run":
            lock = DataDirLock(paths.lock)
            if not lock.acquire():  # the running runtime owns sync: ask it to sync now
                return _sync_via_runtime(paths)
            try:
                return int(commands.sync_run(args, config, paths))
            finally:
                lock.release()
        return int(getattr(commands, name)(args, config, paths))

    run.__doc__ = f"edge-min {name.replace('_', ' ')}"
    return run


def cmd_central_serve(args: argparse.Namespace) -> int:
    """Serve the reference central platform until SIGTERM."""
    from edge_min.central.cli import run

    return run(args)


def cmd_certs_init(args: argparse.Namespace) -> int:
    """Make a development CA, a central and a device certificate."""
    from edge_min.security.certs import run

    return run(args)


# -- the parser ---------------------------------------------------------------------------

COMMANDS: list[tuple[tuple[str, ...], Callable[[argparse.Namespace], int], str, str]] = [
    (("init",), cmd_init, "write the default config files", "edge-min init ./edge-data"),
    (
        ("config", "check"),
        cmd_config_check,
        "validate config files",
        "edge-min config check edge-config.yaml sync-config.yaml",
    ),
    (
        ("run",),
        cmd_run,
        "start the runtime and the local API",
        "edge-min --data-dir /data run --port 8000",
    ),
    (("status",), cmd_status, "show the data directory's status", "edge-min status"),
    (
        ("health",),
        cmd_health,
        "show health checks; exit 1 when unhealthy",
        "edge-min health --json",
    ),
    (("backup",), cmd_backup, "take an online backup now", "edge-min backup"),
    (
        ("restore",),
        cmd_restore,
        "restore the database from a backup",
        "edge-min restore edge-data/backups/meta-agent-edge-20260101T000000Z.db",
    ),
    (("version",), cmd_version, "print the version", "edge-min version"),
    (
        ("workflow", "add"),
        cmd_workflow_add,
        "add or replace a workflow definition",
        "edge-min workflow add examples/workflows/feedback-triage.yaml",
    ),
    (("workflow", "list"), cmd_workflow_list, "list workflows", "edge-min workflow list"),
    (
        ("workflow", "run"),
        cmd_workflow_run,
        "run a workflow",
        'edge-min workflow run feedback-triage --input \'{"text": "great"}\' --wait',
    ),
    (("exec", "list"), cmd_exec_list, "list runs", "edge-min exec list --status failed"),
    (("exec", "show"), cmd_exec_show, "show a run and its steps", "edge-min exec show 3f2a..."),
    (
        ("agent", "add"),
        cmd_agent_add,
        "register an agent from its config file",
        "edge-min agent add text-classifier-lite.yaml",
    ),
    (
        ("agent", "run"),
        cmd_agent_run,
        "invoke an agent once and print its output",
        "edge-min agent run text-classifier-lite --input '\"works great\"'",
    ),
    (("agent", "list"), cmd_agent_list, "list agents", "edge-min agent list"),
    (
        ("sync", "now"),
        _sync_command("sync_run"),
        "sync with central now (push and pull), with progress and a summary",
        "edge-min sync now --entity workflows",
    ),
    (
        ("sync", "status"),
        _sync_command("sync_status"),
        "show each entity's last sync attempt, success, pending count and error",
        "edge-min sync status",
    ),
    (
        ("sync", "conflicts"),
        _sync_command("sync_conflicts"),
        "list conflicts waiting for a decision (manual policy)",
        "edge-min sync conflicts",
    ),
    (
        ("sync", "resolve"),
        _sync_command("sync_resolve"),
        "settle a conflict by taking the edge's or central's version",
        "edge-min sync resolve 3f2a... --take central",
    ),
    (
        ("central", "serve"),
        cmd_central_serve,
        "serve the reference central platform (sync, devices, alerts, metrics)",
        "edge-min central serve --db sqlite:///central.db --port 8765",
    ),
    (
        ("certs", "init"),
        cmd_certs_init,
        "make a development CA, central and device certificate",
        "edge-min certs init ./certs --device-id gw-42",
    ),
    (
        ("token", "issue"),
        cmd_token_issue,
        "issue an API bearer token for a role",
        "edge-min token issue --role operator --ttl 1h",
    ),
    (
        ("token", "revoke"),
        cmd_token_revoke,
        "revoke an API token or token id",
        "edge-min token revoke em1.eyJqdGkiOi...",
    ),
    (("agent", "show"), cmd_agent_show, "show an agent's config", "edge-min agent show notify"),
]


def _add_arguments(path: tuple[str, ...], p: argparse.ArgumentParser) -> None:
    if path == ("init",):
        p.add_argument("dir", nargs="?", help="where to write (default: the data directory)")
        p.add_argument("--force", action="store_true", help="overwrite existing files")
    elif path == ("config", "check"):
        p.add_argument("files", nargs="+", metavar="FILE", help="config files to validate")
    elif path == ("run",):
        p.add_argument("--host", help="API address (default: api.host, 127.0.0.1)")
        p.add_argument("--port", type=int, help="API port (default: api.port, 8000)")
        p.add_argument(
            "--local-central",
            action="store_true",
            help="when sync.central_url is the default http://127.0.0.1:8765, also serve a "
            "local central there (data in <data dir>/central, this device's sync key), so a "
            "first sync works with nothing else set up; any other central_url is left alone",
        )
    elif path == ("health",):
        p.add_argument("--json", action="store_true", help="print the full status as JSON")
    elif path == ("restore",):
        p.add_argument("file", help="a backup file made by `edge-min backup`")
    elif path in (("workflow", "add"), ("agent", "add")):
        p.add_argument("file", help="a YAML or JSON file")
    elif path == ("workflow", "run"):
        p.add_argument("name", help="the workflow's name")
        p.add_argument("--input", help="the run's input as JSON")
        p.add_argument("--wait", action="store_true", help="wait and print the finished run")
        p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    elif path == ("exec", "list"):
        p.add_argument(
            "--status",
            choices=["queued", "running", "succeeded", "failed", "cancelled"],
            help="only runs with this status",
        )
        p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    elif path == ("exec", "show"):
        p.add_argument("id", help="the execution id")
    elif path == ("agent", "show"):
        p.add_argument("name", help="the agent's name")
    elif path[0] == "sync":
        from edge_min.sync import commands

        adder = {
            "now": commands.add_run_arguments,
            "status": commands.add_status_arguments,
            "conflicts": commands.add_conflicts_arguments,
            "resolve": commands.add_resolve_arguments,
        }[path[1]]
        adder(p)
    elif path == ("central", "serve"):
        from edge_min.central.cli import add_arguments as add_central_arguments

        add_central_arguments(p)
    elif path == ("certs", "init"):
        from edge_min.security.certs import add_arguments

        add_arguments(p)
    elif path == ("token", "issue"):
        from edge_min.api.auth import add_issue_arguments

        add_issue_arguments(p)
    elif path == ("token", "revoke"):
        from edge_min.api.auth import add_revoke_arguments

        add_revoke_arguments(p)
    elif path == ("agent", "run"):
        p.add_argument("name", help="the agent's name")
        p.add_argument("--input", help="the input as JSON (a JSON string for text agents)")


def build_parser() -> argparse.ArgumentParser:
    """The full parser; every command's help ends with an example."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="edge_min: durable, offline-first edge runtime for agent workflows.",
        epilog="example: edge-min --data-dir ./edge-data run",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="edge-config.yaml (default: $EDGE_MIN_CONFIG, else "
        "<data dir>/edge-config.yaml if present, else built-in defaults)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="storage root (default: storage.root, else ./edge-data)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for path, func, summary, example in COMMANDS:
        sub = top
        if len(path) == 2:
            if path[0] not in groups:
                group = top.add_parser(
                    path[0], help=f"{path[0]} commands", epilog=f"example: {example}"
                )
                # `edge-min sync [--now] [--entity E]` syncs; its subcommands are extras.
                bare = path[0] == "sync"
                groups[path[0]] = group.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", required=not bare
                )
                if bare:
                    from edge_min.sync.commands import add_run_arguments

                    add_run_arguments(group)
                    group.set_defaults(func=_sync_command("sync_run"))
            sub = groups[path[0]]
        p = sub.add_parser(
            path[-1], help=summary, description=summary + ".", epilog=f"example: {example}"
        )
        _add_arguments(path, p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except EdgeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"{PROG}: error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
