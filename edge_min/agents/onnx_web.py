"""ONNX agents in a browser: onnxruntime-web, called from Pyodide, with the gateway's contract.

``runtime.executor: onnxruntime`` on the gateway runs ``OnnxSession`` (onnxruntime and numpy
in a warm worker process). A browser tab has neither processes nor numpy, so the browser
target registers ``OnnxWebExecutor`` under the same name instead (``register(backend)``):
the model runs in onnxruntime-web's WebAssembly build, through the JavaScript half in
``wasm/ort/ort_backend.mjs``. Same model file, same input forms (text: a string,
``{"text": str}`` or a list of strings; tensor: an object of nested lists, numbers or
``{"npy_b64": ...}``), same checks and messages, same output (``{"label", "scores"}`` with
the config's classes, or every output by name): the rules are ``edge_min.agents.onnx_io``,
shared with ``OnnxSession``, not copied.

**The bridge.** The executor port is synchronous (``invoke(input, context) -> output``)
and onnxruntime-web is not (``session.run`` returns a Promise). ``wait()`` blocks on the
Promise with ``pyodide.ffi.run_sync``, which suspends the WebAssembly stack while the JS
event loop goes on (JSPI, WebAssembly JavaScript Promise Integration). That needs:

- a JS engine with JSPI: Chromium 137 and later ship it; Node.js 20 needs
  ``--experimental-wasm-stack-switching``, Node.js 22/24 ``--experimental-wasm-jspi``;
- a Python stack entered through a Promise: an ``async`` Python function awaited from JS
  (the browser host's ``serve()`` loop is one: ``Runtime.tick`` runs inside it),
  ``pyodide.runPythonAsync`` or ``PyCallable.callPromising``. A plain synchronous call
  from JS cannot suspend.

Without them an onnx agent is refused when it is added, with an ``AgentError`` that says
which is missing. Callers that can await (a test, a page-level API) may use the async
twins, ``OnnxWebSession.call_async`` and ``OnnxWebExecutor.invoke_async``, which need no
JSPI at all.

**What differs from the gateway**, because a tab cannot do it: no isolation and no limits
(``max_memory``, ``max_cpu``, the step timeout are not enforced; the model runs in the
runtime's own worker), one thread (two would need ``SharedArrayBuffer`` and so COOP/COEP
headers on the page), the CPU (WebAssembly) only: ``acceleration: gpu``/``npu`` runs on it
with a warning when ``provider_fallback`` is true and is refused otherwise. ZipMap
(sequence of maps) outputs are not produced by onnxruntime-web's tensor API.

Nothing here imports ``pyodide`` or ``js`` at import time, so the module imports (and its
pure parts are tested) on CPython too.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from pathlib import Path
from typing import Any, Protocol

from edge_min.agents.executors import InvocationContext, check_output, register_executor
from edge_min.agents.isolation import AgentLike
from edge_min.agents.onnx import check_model_file, prepare_onnx_input, resolve_model_path
from edge_min.agents.onnx_io import (
    OnnxInputError,
    OnnxLoadError,
    check_input_names,
    find_scores_output,
    find_text_input,
    json_tensor,
    labelled,
    nest,
    rows_of,
    shape_of,
    text_batch,
)
from edge_min.errors import AgentError
from edge_min.platform import Platform

log = logging.getLogger("edge_min.agents.onnx_web")

#: onnxruntime-web's element type names -> ONNX's (as onnxruntime's Python API gives them).
ORT_TYPES = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "float16": "tensor(float16)",
    "int8": "tensor(int8)",
    "int16": "tensor(int16)",
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
    "uint8": "tensor(uint8)",
    "uint16": "tensor(uint16)",
    "uint32": "tensor(uint32)",
    "uint64": "tensor(uint64)",
    "bool": "tensor(bool)",
    "string": "tensor(string)",
}
PROVIDER = "WasmExecutionProvider"
JSPI_HINT = (
    "onnx agents in a browser block on onnxruntime-web's Promises with WebAssembly JSPI "
    "(pyodide.ffi.run_sync)"
)
_HALF_INF = {1: 0x7C00, -1: 0xFC00}


class OrtBackend(Protocol):
    """The JavaScript half (``wasm/ort/ort_backend.mjs``): JSON text in and out."""

    def create(self, model: Any) -> Any:
        """A Promise of ``{id, inputs, outputs, load_ms, version}`` as JSON text."""
        ...

    def run(self, session_id: int, feeds: str) -> Any:
        """A Promise of ``{outputs: {name: {type, dims, data}}, run_ms}`` as JSON text."""
        ...

    def release(self, session_id: int) -> Any:
        """Free the session (may return a Promise, which nobody needs to await)."""
        ...


class BridgeUnavailable(RuntimeError):
    """``run_sync`` cannot block here: no Pyodide, no JSPI, or a synchronous entry."""


def bridge_problem() -> str | None:
    """Why ``wait()`` cannot block on a Promise right now, or None when it can."""
    try:
        from pyodide.ffi import can_run_sync
    except ImportError:
        return f"{JSPI_HINT}, and this interpreter is not Pyodide"
    if can_run_sync():
        return None
    import js

    wasm = getattr(js, "WebAssembly", None)
    if not (hasattr(wasm, "Suspending") or hasattr(wasm, "Suspender")):
        return (
            f"{JSPI_HINT}, which this JavaScript engine lacks; use Chromium/Chrome/Edge 137 "
            "or later (Node.js: --experimental-wasm-jspi, on Node 20 "
            "--experimental-wasm-stack-switching)"
        )
    return (
        f"{JSPI_HINT}, and this call was entered synchronously from JavaScript; call into "
        "Python through an async function, pyodide.runPythonAsync or callPromising"
    )


def wait(awaitable: Any) -> Any:
    """The value of a JS Promise, blocking this Python stack until it settles (JSPI)."""
    problem = bridge_problem()
    if problem is not None:
        raise BridgeUnavailable(problem)
    from pyodide.ffi import run_sync

    return run_sync(awaitable)


def _js_bytes(data: bytes) -> Any:
    """``data`` as a JS Uint8Array under Pyodide (a copy); as is elsewhere."""
    try:
        from pyodide.ffi import to_js
    except ImportError:
        return data
    return to_js(data)


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    # A JsException's text is "Error: <message>"; onnxruntime-web's messages are enough.
    return text.splitlines()[0] if text else type(exc).__name__


# -- tensors as JSON -------------------------------------------------------------------------


def _half_bits(value: float) -> int:
    try:
        (bits,) = struct.unpack("<H", struct.pack("<e", value))
    except OverflowError:  # numpy's astype("float16") gives inf for what is out of range
        return _HALF_INF[1 if value > 0 else -1]
    return int(bits)


def _float_json(value: float) -> float | str:
    """JSON has no NaN or infinities: those go as the strings JavaScript's Number() reads."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_feed(dtype: str, dims: list[int], flat: list[Any]) -> dict[str, Any]:
    """One feed in the backend's JSON conventions (see wasm/ort/ort_backend.mjs)."""
    data: list[Any]
    if dtype in ("int64", "uint64"):
        data = [str(int(v)) for v in flat]
    elif dtype == "float16":
        data = [_half_bits(float(v)) for v in flat]
    elif dtype.startswith("float"):
        data = [_float_json(v) for v in flat]
    else:
        data = list(flat)
    return {"type": dtype, "dims": list(dims), "data": data}


def decode_output(out: dict[str, Any]) -> tuple[list[int], list[Any]]:
    """An output's dims and Python values (ints exact, float16 unpacked, NaN restored)."""
    kind, dims, data = out["type"], [int(d) for d in out["dims"]], out["data"]
    if kind in ("int64", "uint64"):
        return dims, [int(v) for v in data]
    if kind == "float16":
        return dims, [struct.unpack("<e", struct.pack("<H", int(v)))[0] for v in data]
    if kind in ("float32", "float64"):
        return dims, [float(v) for v in data]
    return dims, list(data)


def io_specs(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backend's input/output descriptions as ``onnx_io`` reads them (ONNX type names)."""
    return [
        {
            "name": str(d["name"]),
            "type": ORT_TYPES.get(str(d.get("type")), str(d.get("type"))),
            "shape": shape_of(d.get("shape")),
        }
        for d in described
    ]


# -- the session -----------------------------------------------------------------------------


def _read_model(model: Any) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    return Path(str(model)).read_bytes()


class OnnxWebSession:
    """A model loaded in onnxruntime-web and the agent's I/O rules; ``OnnxSession``'s twin.

    Made by ``open_session`` (blocking, JSPI) or ``open_session_async``; called per request
    with ``session(value, context)`` (blocking) or ``await session.call_async(value)``.
    """

    def __init__(self, backend: OrtBackend, created: dict[str, Any], init: dict[str, Any]) -> None:
        self.backend = backend
        self.id = int(created["id"])
        try:
            self._configure(created, init)
        except BaseException:
            self.close()
            raise

    def _configure(self, created: dict[str, Any], init: dict[str, Any]) -> None:
        self.format = str(init.get("input_format") or "tensor")
        self.classes = [str(c) for c in init.get("classes") or []]
        warnings = _provider_warnings(
            str(init.get("acceleration") or "cpu"), bool(init.get("provider_fallback", True))
        )
        self.inputs = io_specs(list(created.get("inputs") or []))
        self.outputs = io_specs(list(created.get("outputs") or []))
        self.text_input = find_text_input(self.inputs) if self.format == "text" else None
        self.scores_output = (
            find_scores_output(self.outputs, self.classes) if self.classes else None
        )
        self._text_rank = next(
            (len(i["shape"]) for i in self.inputs if i["name"] == self.text_input), -1
        )
        self.info: dict[str, Any] = {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "providers": [PROVIDER],
            "warnings": warnings,
            "text_input": self.text_input,
            "scores_output": self.scores_output,
            "load_seconds": round(float(created.get("load_ms") or 0.0) / 1000, 4),
            "onnxruntime_web": created.get("version"),
            "threads": 1,
        }

    def feeds(self, value: Any) -> tuple[str, bool]:
        """The request as the backend's feeds (JSON text), and whether it was a batch."""
        if self.text_input is None:
            check_input_names(value, self.inputs)
            feeds = {
                str(i["name"]): encode_feed(*json_tensor(i, value[i["name"]])) for i in self.inputs
            }
            return json.dumps(feeds), False
        texts, batch, dims = text_batch(value, self._text_rank)
        return json.dumps({self.text_input: encode_feed("str", dims, texts)}), batch

    def result(self, reply: str, batch: bool) -> Any:
        """The JSON-ready output from the backend's reply."""
        outputs = json.loads(reply)["outputs"]
        if self.scores_output is None:
            found = {}
            for name, out in outputs.items():
                dims, flat = decode_output(out)
                found[name] = nest(flat, dims)
            return found
        dims, flat = decode_output(outputs[self.scores_output])
        return labelled(rows_of(flat, dims, len(self.classes)), self.classes, batch)

    def __call__(self, value: Any, context: Any = None) -> Any:
        """Run the model on one request, blocking until onnxruntime-web answers (JSPI)."""
        feeds, batch = self.feeds(value)
        return self.result(str(wait(self.backend.run(self.id, feeds))), batch)

    async def call_async(self, value: Any) -> Any:
        """The same as calling the session, awaiting onnxruntime-web instead of blocking."""
        feeds, batch = self.feeds(value)
        return self.result(str(await self.backend.run(self.id, feeds)), batch)

    def close(self) -> None:
        """Release the onnxruntime-web session (once)."""
        if self.id >= 0:
            session_id, self.id = self.id, -1
            self.backend.release(session_id)


def _provider_warnings(acceleration: str, fallback: bool) -> list[str]:
    if acceleration == "cpu":
        return []
    text = (
        f"runtime.acceleration {acceleration}: the browser build runs onnxruntime-web's "
        "WebAssembly (CPU) backend only"
    )
    if not fallback:
        raise OnnxLoadError(f"{text}; set runtime.provider_fallback: true to run on the CPU")
    return [f"{text}; running on the CPU (runtime.provider_fallback: true)"]


def _created(reply: Any) -> dict[str, Any]:
    created: dict[str, Any] = json.loads(str(reply))
    return created


def open_session(init: dict[str, Any], backend: OrtBackend) -> OnnxWebSession:
    """Load ``init["model"]`` (a path or bytes) in onnxruntime-web, blocking (JSPI)."""
    reply = wait(backend.create(_js_bytes(_read_model(init["model"]))))
    return OnnxWebSession(backend, _created(reply), init)


async def open_session_async(init: dict[str, Any], backend: OrtBackend) -> OnnxWebSession:
    """``open_session``, awaiting instead of blocking."""
    reply = await backend.create(_js_bytes(_read_model(init["model"])))
    return OnnxWebSession(backend, _created(reply), init)


# -- the executor ----------------------------------------------------------------------------


class OnnxWebExecutor:
    """``runtime.executor: onnxruntime`` in a browser: one warm onnxruntime-web session."""

    def __init__(
        self,
        agent: AgentLike,
        platform: Platform,
        work_root: str | Path,
        *,
        backend: OrtBackend,
        model_path: str | None = None,
    ) -> None:
        self.agent = agent
        self.platform = platform
        self.backend = backend
        self.model_path = model_path or resolve_model_path(agent, work_root)
        self.session: OnnxWebSession | None = None
        #: The loaded session's info (inputs, outputs, providers, warnings).
        self.info: dict[str, Any] = {}

    def _init(self) -> dict[str, Any]:
        runtime, output = self.agent.runtime, getattr(self.agent, "output", None)
        return {
            "model": self.model_path,
            "input_format": str(getattr(self.agent.input, "format", "tensor")),
            "classes": list(getattr(output, "classes", ()) or ()),
            "acceleration": getattr(runtime, "acceleration", "cpu"),
            "provider_fallback": getattr(runtime, "provider_fallback", True),
        }

    def _who(self) -> str:
        return f"agent '{self.agent.name}'"

    def _loaded(self, session: OnnxWebSession) -> OnnxWebSession:
        self.session, self.info = session, dict(session.info)
        for warning in session.info.get("warnings") or ():
            log.warning("%s: %s", self._who(), warning)
        return session

    def _load_error(self, exc: BaseException) -> AgentError:
        if isinstance(exc, OnnxLoadError | BridgeUnavailable):
            return AgentError(f"{self._who()}: {exc}")
        return AgentError(
            f"{self._who()}: model {self.model_path} fails to load in onnxruntime-web: "
            f"{_message(exc)}"
        )

    def _run_error(self, exc: BaseException) -> AgentError:
        if isinstance(exc, OnnxInputError | BridgeUnavailable):
            return AgentError(f"{self._who()}: {exc}")
        return AgentError(
            f"{self._who()}: onnxruntime-web failed while running the model: {_message(exc)}"
        )

    def start(self) -> dict[str, Any]:
        """Load the model now (otherwise the first call does); its info."""
        if self.session is None:
            try:
                self._loaded(open_session(self._init(), self.backend))
            except Exception as exc:
                raise self._load_error(exc) from exc
        return dict(self.info)

    async def start_async(self) -> dict[str, Any]:
        """``start``, awaiting instead of blocking."""
        if self.session is None:
            try:
                self._loaded(await open_session_async(self._init(), self.backend))
            except Exception as exc:
                raise self._load_error(exc) from exc
        return dict(self.info)

    def invoke(self, input_value: Any, context: InvocationContext) -> Any:
        """Run the model once, blocking until onnxruntime-web answers (JSPI)."""
        value = prepare_onnx_input(self.agent, input_value)
        self.start()
        assert self.session is not None
        try:
            output = self.session(value)
        except AgentError:
            raise
        except Exception as exc:
            raise self._run_error(exc) from exc
        return check_output(self.agent, output)

    async def invoke_async(self, input_value: Any, context: InvocationContext) -> Any:
        """``invoke``, awaiting instead of blocking."""
        value = prepare_onnx_input(self.agent, input_value)
        await self.start_async()
        assert self.session is not None
        try:
            output = await self.session.call_async(value)
        except AgentError:
            raise
        except Exception as exc:
            raise self._run_error(exc) from exc
        return check_output(self.agent, output)

    def close(self) -> None:
        """Release the session."""
        session, self.session = self.session, None
        if session is not None:
            session.close()


def validate_onnx_web_agent(
    agent: AgentLike,
    platform: Platform,
    work_root: str | Path | None,
    backend: OrtBackend,
) -> dict[str, Any]:
    """Refuse, at add time, an onnx agent this tab cannot run; the loaded model's info.

    The gateway's file checks (found, within ``max_storage``, an ONNX ModelProto, the
    configured precision), then the bridge, then a load in onnxruntime-web with the
    agent's I/O config (text input, one class per output column).
    """
    path = resolve_model_path(agent, work_root)
    check_model_file(agent, path)
    problem = bridge_problem()
    if problem is not None:
        raise AgentError(f"agent '{agent.name}': {problem}")
    started = time.monotonic()
    executor = OnnxWebExecutor(agent, platform, work_root or ".", backend=backend, model_path=path)
    try:
        info = executor.start()
    finally:
        executor.close()
    info["check_seconds"] = round(time.monotonic() - started, 4)
    return info


def register(backend: OrtBackend) -> None:
    """Run ``runtime.executor: onnxruntime`` on onnxruntime-web through ``backend``.

    The browser target calls this once, with the object ``loadOrtBackend`` gave
    (``wasm/ort/ort_backend.mjs``); it replaces the gateway's executor of that name.
    """

    def factory(agent: AgentLike, platform: Platform, work_root: Path) -> OnnxWebExecutor:
        return OnnxWebExecutor(agent, platform, work_root, backend=backend)

    def validate(agent: AgentLike, platform: Platform, work_root: Path | None) -> object:
        return validate_onnx_web_agent(agent, platform, work_root, backend)

    register_executor("onnxruntime", factory, validate=validate)
