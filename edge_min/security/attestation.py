"""The attestation subsystem: the device proves its state to central with signed quotes.

``attestation.method: remote`` (the spec's): every ``attestation.interval``, and whenever
central asks, the device fetches a fresh nonce (``POST /api/attestation/challenge``), signs
a quote of its measurements, boot facts and that nonce with its attestation key
(``edge_min.security.quote``) and sends it (``POST /api/attestation/quote``); central answers
pass or fail with the reason and its trust verdict. Central asks by answering ``requested``
to the poll ``GET /api/attestation/pending``, which the device sends every
``sync.sync_interval`` (docs/security.md, "Remote attestation"). The server is
``attestation.server``, or the sync central when null, through the runtime's transport
factory (the same TLS and device identity as sync).

``attestation.method: local``: the same measurements and boot facts compared on the device
against the policy recorded at its first check (trust on first use, kept in the store's
meta); a mismatch fails the ``attestation`` health check.

Measurements come from whichever open subsystem offers ``measurements()`` (``Measured``: the
tamper subsystem); without one the quote's measurements are empty and only boot facts are
attested. Boot facts come from the platform port (``Platform.boot_facts``).

The key is ``<data>/keys/attestation.key``, made at first start (or by ``edge-min enroll``,
which registers it at central: ``edge_min.lifecycle.enroll``); a device that never enrolled
has central register it from its first quote (trust on first use).

Network work runs on the subsystem's own worker thread when the runtime has threads; what it
learns is recorded on the loop thread, in ``meta['attestation.status']``, which
``GET /status``, ``GET /attestation`` and ``edge-min status`` show.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from edge_min.clock import iso
from edge_min.errors import EdgeError
from edge_min.subsystem import ApiContext, ApiRoute, CheckFn, Job, Subsystem

if TYPE_CHECKING:
    from edge_min.platform.executor import Executor, Handle
    from edge_min.security.quote import AttestationKey
    from edge_min.store import Store
    from edge_min.sync.transport import Transport

log = logging.getLogger("edge_min.security.attestation")

CHALLENGE_PATH = "/api/attestation/challenge"
QUOTE_PATH = "/api/attestation/quote"
PENDING_PATH = "/api/attestation/pending"
STATUS_META = "attestation.status"
LOCAL_POLICY_META = "attestation.local_policy"
#: How often the loop looks whether central refuses this device's sync (for status).
REFUSAL_LOOK_SECONDS = 5.0


class Measured(Protocol):
    """A subsystem that measures the device: check name -> item -> sha256 hex."""

    def measurements(self, fresh: bool = False) -> Mapping[str, Mapping[str, str]]:
        """The current measurements; with ``fresh``, measured again now (for a quote)."""
        ...


def stored_status(store: Store) -> dict[str, Any]:
    """The last attestation status recorded in ``store`` (for ``edge-min status``)."""
    raw = store.meta.get(STATUS_META)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Attestation(Subsystem):
    """Quotes to central on a timer and on request (remote), or local comparisons."""

    name = "attestation"
    # Sync is used when present (its refusals show in status); listed after it in SUBSYSTEMS.
    needs = ("storage",)

    key: AttestationKey | None = None

    def open(self) -> None:
        """Load (or make) the attestation key and the last recorded status."""
        from edge_min.store.subsystem import Storage
        from edge_min.sync.commands import node_id

        host = self.host
        self.cfg = host.config.security_config.attestation
        self.store = host.get(Storage).store
        self.node = node_id(self.store, host.config.security_config)
        self.worker: Executor | None = None
        self._inflight: tuple[Handle, Callable[[Any], None]] | None = None
        self._want_attest = False
        self._transport: Transport | None = None
        self._refusal_looked = float("-inf")
        self.state: dict[str, Any] = stored_status(self.store)
        self.state.update(enabled=self.cfg.enabled, method=self.cfg.method, device_id=self.node)
        if not self.cfg.enabled:
            self._save()
            return
        if self.cfg.method == "remote":
            self.state["server"] = self.cfg.server or host.config.sync.central_url
            try:
                from edge_min.security.quote import load_attestation_key

                self.key = load_attestation_key(host.paths.root)
                self.state["key"] = self.key.fingerprint
            except EdgeError as exc:  # no Ed25519 library: say so, do not stop the runtime
                log.warning("remote attestation unavailable: %s", exc)
                self.state.update(result="error", reason=exc.message)
            if host.threaded:
                self.worker = host.executor("attestation", 1)
        self._save()

    # -- contributions ----------------------------------------------------------------------

    def jobs(self) -> Sequence[Job]:
        """``attestation.attest`` (or ``.local``) every interval, from start; ``.poll``."""
        if not self.cfg.enabled:
            return []
        if self.cfg.method == "local":
            return [Job("attestation.local", self.cfg.interval, self.check_local, first=0.0)]
        poll = self.host.config.sync.sync_interval
        return [
            # First contact soon after start: central registers the key (trust on first use).
            Job("attestation.attest", self.cfg.interval, self.request_attestation, first=0.0),
            Job("attestation.poll", poll, self.poll),
        ]

    def tick(self, now: float) -> float | None:
        """Hand a finished exchange's outcome to the loop; start a wanted attestation."""
        if self._inflight is not None and self._inflight[0].done():
            handle, then = self._inflight
            self._inflight = None
            then(handle.result())
        if self._want_attest and self._inflight is None:
            self._want_attest = False
            self._start_attestation()
        if now - self._refusal_looked >= REFUSAL_LOOK_SECONDS:
            self._refusal_looked = now
            self._look_for_refusal()
        return None

    def status(self) -> Mapping[str, Any]:
        """``attestation``: the last result, central's trust verdict, the key."""
        return {"attestation": dict(self.state)}

    def health_checks(self) -> Mapping[str, CheckFn]:
        """``attestation``: fails while the last result failed or central distrusts us."""

        def check() -> tuple[bool, str]:
            st = self.state
            if st.get("result") == "fail" or st.get("trust") == "untrusted":
                why = st.get("trust_reason") or st.get("reason") or "failed"
                return False, f"attestation: {why}"
            return True, f"attestation: {st.get('result', 'not yet run')}"

        return {"attestation": check}

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """``GET /attestation`` and ``POST /attestation/now``."""
        from edge_min.routing import Response

        def now(_: Any) -> Response:
            api.on_loop(self.request_attestation)
            return Response(202, {"requested": True, **self.state})

        return [
            ApiRoute("GET", "/attestation", "read", lambda _: dict(self.state)),
            ApiRoute("POST", "/attestation/now", "execute", now),
        ]

    # -- remote -----------------------------------------------------------------------------

    def request_attestation(self) -> None:
        """Attest as soon as the worker is free (the timer, central's request, the API)."""
        if not self.cfg.enabled or self.cfg.method != "remote":
            return
        self._want_attest = True
        self.tick(self.host.clock.monotonic())

    def poll(self) -> None:
        """Ask central whether it wants a quote now."""
        if self._inflight is not None or not self._may_contact():
            return

        def asked(answer: Any) -> None:
            if isinstance(answer, dict) and answer.get("requested"):
                log.info("central asks for an attestation")
                self.request_attestation()

        self._submit(self._poll_exchange, asked)

    def _start_attestation(self) -> None:
        if self.key is None or not self._may_contact():
            return
        measurements = self.measure()
        boot = self.boot_facts()
        key = self.key
        self._submit(lambda: self._quote_exchange(key, measurements, boot), self._record)

    def _may_contact(self) -> bool:
        if not self.host.online or self.host.config.runtime.offline_mode == "always":
            self.state["reason"] = "offline: not attempted"
            return False
        return True

    def _submit(self, fn: Callable[[], Any], then: Callable[[Any], None]) -> None:
        if self.worker is None:
            then(fn())
            return
        self._inflight = (self.worker.submit(fn), then)

    def _link(self) -> Transport:
        if self._transport is None:
            from edge_min.sync.transport import http_transport

            config = self.host.config
            server = self.cfg.server
            if server and server.rstrip("/") != config.sync.central_url.rstrip("/"):
                sync = dataclasses.replace(config.sync, central_url=server)
                config = dataclasses.replace(config, sync=sync)
            factory = self.host.transport or http_transport
            self._transport = factory(config, self.node)
        return self._transport

    def _call(self, method: str, path: str, body: bytes, ctype: str) -> dict[str, Any]:
        """One JSON-answered request to central; AttestationError if it is refused."""
        from edge_min.security.quote import AttestationError

        status, _headers, answer = self._link().request(method, path, body, {"Content-Type": ctype})
        try:
            doc = json.loads(answer) if answer else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise AttestationError(f"central answered HTTP {status} to {path}: {answer[:200]!r}")
        if status >= 300:
            err = doc.get("error") or {}
            exc = AttestationError(
                f"central refused {method} {path} (HTTP {status}, {err.get('code')}): "
                f"{err.get('message')}",
                remote_code=err.get("code"),
            )
            exc.details["http_status"] = status
            raise exc
        return doc

    def _poll_exchange(self) -> Any:
        try:
            return self._call("GET", PENDING_PATH, b"", "application/json")
        except EdgeError as exc:
            log.debug("attestation poll failed: %s", exc.message)
            return None

    def _quote_exchange(
        self, key: AttestationKey, measurements: dict[str, Any], boot: dict[str, Any]
    ) -> dict[str, Any]:
        """Challenge, quote, verdict (on the worker); an outcome dict, never an exception."""
        from edge_min.security.quote import QUOTE_CONTENT_TYPE, build_quote

        at = iso(self.host.clock.time())
        try:
            challenge = self._call("POST", CHALLENGE_PATH, b"{}", "application/json")
            nonce = challenge.get("nonce")
            if not isinstance(nonce, str):
                raise EdgeError(f"central's challenge has no nonce: {challenge!r}")
            quote = build_quote(
                key,
                device_id=self.node,
                nonce=nonce,
                measurements=measurements,
                boot=boot,
                time=self.host.clock.time(),
            )
            verdict = self._call("POST", QUOTE_PATH, quote, QUOTE_CONTENT_TYPE)
        except EdgeError as exc:
            code = exc.details.get("remote_code") or exc.code
            return {"last_attempt": at, "result": "error", "reason": exc.message, "code": code}
        return {
            "last_attempt": at,
            "result": verdict.get("result"),
            "reason": verdict.get("reason"),
            "trust": verdict.get("trust"),
            "trust_reason": verdict.get("trust_reason"),
            "code": None,
        }

    def _record(self, outcome: dict[str, Any]) -> None:
        """Keep an outcome (on the loop thread); a regained trust lets sync retry at once."""
        was = self.state.get("trust")
        self.state.update(outcome)
        if outcome.get("result") == "pass":
            self.state["last_pass"] = outcome["last_attempt"]
        log_fn = log.info if outcome.get("result") == "pass" else log.warning
        log_fn("attestation %s: %s", outcome.get("result"), outcome.get("reason") or "ok")
        if was == "untrusted" and outcome.get("trust") == "trusted":
            from edge_min.sync.subsystem import Sync

            sync = self.host.find(Sync)
            if sync is not None:
                sync.link.restart()  # pushes were refused while untrusted: try them now
        self._save()

    def _look_for_refusal(self) -> None:
        from edge_min.sync.subsystem import Sync

        sync = self.host.find(Sync)
        if sync is None:
            return
        refused = sync.link.status().get("refused")
        code = refused.get("code") if isinstance(refused, dict) else None
        if self.state.get("sync_refused") != code:
            self.state["sync_refused"] = code
            self._save()

    # -- local ------------------------------------------------------------------------------

    def check_local(self) -> None:
        """Compare measurements and boot facts with the policy recorded at the first check."""
        from edge_min.security.quote import baseline, compare, parse_policy

        measurements = self.measure()
        boot = self.boot_facts()
        raw = self.store.meta.get(LOCAL_POLICY_META)
        at = iso(self.host.clock.time())
        if not raw:
            policy = baseline(measurements, boot)
            self.store.meta.set(LOCAL_POLICY_META, json.dumps(policy.to_dict(), sort_keys=True))
            reasons: list[str] = []
            self.state["policy"] = "recorded at first check (trust on first use)"
        else:
            reasons = compare(parse_policy(json.loads(raw)), measurements, boot)
        result = "fail" if reasons else "pass"
        self._record(
            {
                "last_attempt": at,
                "result": result,
                "reason": "; ".join(reasons) or None,
                "trust": "untrusted" if reasons else "trusted",
                "trust_reason": "; ".join(reasons) or None,
                "code": None,
            }
        )

    # -- what is measured -------------------------------------------------------------------

    def provider(self) -> Measured | None:
        """The first open subsystem offering ``measurements()`` (the tamper subsystem)."""
        for sub in self.host.subsystems():
            if sub is not self and callable(getattr(sub, "measurements", None)):
                return cast(Measured, sub)
        return None

    def measure(self) -> dict[str, dict[str, str]]:
        """The provider's measurements as plain dicts; empty without a provider."""
        found = self.provider()
        self.state["measured_by"] = getattr(found, "name", None) if found else None
        if found is None:
            return {}
        return {
            str(c): {str(i): str(d) for i, d in items.items()}
            for c, items in found.measurements(fresh=True).items()
        }

    def boot_facts(self) -> dict[str, Any]:
        """The platform's boot facts (a platform without the port method gives none)."""
        read = getattr(self.host.platform, "boot_facts", None)
        return dict(read()) if callable(read) else {}

    def _save(self) -> None:
        self.store.meta.set(STATUS_META, json.dumps(self.state, sort_keys=True, default=str))

    def close(self) -> None:
        """Drop the connection to central."""
        if self._transport is not None:
            self._transport.close()
