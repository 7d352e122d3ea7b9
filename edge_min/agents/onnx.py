"""The onnxruntime executor (``runtime.executor: onnxruntime``): a warm model per agent.

The session lives in a persistent, isolated worker (``Platform.start_service``; on POSIX
``edge_min.platform.service``) started on the first call, under the agent's resources
(RLIMIT_AS = the worker's address space after importing numpy and onnxruntime, before
the model loads, + ``max_memory``; cgroup CPU quota; storage quota; no network), and
reused by every later call, one at a time (a lock). A call past its wall timeout kills
the worker and fails with "timed out after Ns"; a worker that dies (e.g. of its memory
limit: ``AgentLimitExceeded(limit="memory")``) or hits a native out-of-memory is replaced
by a fresh one on the next call. ``close()`` stops it. What the worker does with each
request (providers, text and tensor input, scores) is in ``edge_min.agents.onnx_session``.

**model.path**: an absolute path is used as written. A relative one was resolved by the
config loader against the folder of the agent's file; if nothing is there, the same
relative path is looked up under the storage root's ``models/`` (``<root>/models/<rel>``,
known when the runtime passes its agents' ``work_root``, ``<root>/tmp/agents``). A config
read without a file keeps a relative path: it is looked up under ``models/`` first, then
against the working directory.

Loading (worker start + session) has its own timeout, ``max(step timeout, LOAD_TIMEOUT)``;
the step's timeout covers the request itself. The worker runs with
``ORT_DISABLE_TELEMETRY=1``: otherwise onnxruntime writes a device id and a database under
``$HOME``, the work directory, against ``max_storage``.

**At add time** (``validate_onnx_agent``), in this order, each failure an AgentError that
names the file: onnxruntime importable (else ``MissingDependency``); the file exists; its
size is within ``resources.max_storage``; it parses as an ONNX ModelProto (a stdlib
protobuf walk, ``read_graph_summary``); ``model.precision`` matches the graph (int8:
int8/uint8 initializers or quantized ops; fp16: float16 initializers; fp32: neither); and
it loads, in a worker under the agent's limits, with the agent's I/O config (text input,
one class per output column, the requested provider).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_min.agents.executors import (
    DEFAULT_TIMEOUT,
    InvocationContext,
    check_output,
    register_executor,
    stderr_tail,
)
from edge_min.agents.isolation import AgentLike, build_worker_spec, limit_error, limit_hit
from edge_min.errors import AgentError, AgentLimitExceeded, MissingDependency
from edge_min.platform import Platform, ServiceHandle, ServiceReply, WorkerSpec, new_lock
from edge_min.units import format_size

log = logging.getLogger("edge_min.agents.onnx")

#: How long the first call (or add-time validation) may take to load a model.
LOAD_TIMEOUT = 120.0
SESSION_FACTORY = "edge_min.agents.onnx_session:open_session"
PRELOAD = ("numpy", "onnxruntime")
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])

# ONNX TensorProto.DataType numbers and the op types that mark a quantized graph.
_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
_INT8_TYPES = {2, 3}
_QUANT_OPS = {
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "QAttention",
}


# -- reading the graph without onnx ------------------------------------------------------


@dataclass
class GraphSummary:
    """What the precision check needs from a model: op types and initializer types."""

    ir_version: int = 0
    ops: set[str] = field(default_factory=set)
    initializer_types: dict[int, int] = field(default_factory=dict)

    def quantized_ops(self) -> list[str]:
        """The quantization op types present."""
        return sorted(op for op in self.ops if op in _QUANT_OPS or op.startswith("QLinear"))

    def count(self, *types: int) -> int:
        """How many initializers have one of these element types."""
        return sum(self.initializer_types.get(t, 0) for t in types)

    def describe(self) -> str:
        """The graph's weights and quantized ops in words, for an error message."""
        weights = ", ".join(
            f"{n} {_DTYPES.get(t, f'type-{t}')}"
            for t, n in sorted(self.initializer_types.items(), key=lambda kv: -kv[1])
        )
        quant = self.quantized_ops()
        ops = f"quantized ops {', '.join(quant)}" if quant else "no quantized ops"
        return f"initializers: {weights or 'none'}; {ops}"

    def precision(self) -> str:
        """``int8``, ``fp16`` or ``fp32``: what the graph looks like."""
        if self.count(*_INT8_TYPES) or self.quantized_ops():
            return "int8"
        return "fp16" if self.count(10) else "fp32"


class NotOnnx(ValueError):
    """The bytes are not an ONNX ModelProto."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise NotOnnx("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, Any]]:
    """(field number, wire type, int value or (start, end) slice) of one message."""
    out: list[tuple[int, int, Any]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if number == 0:
            raise NotOnnx("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        else:
            raise NotOnnx(f"wire type {wire}")
        if pos > end:
            raise NotOnnx("a field runs past its message")
        out.append((number, wire, value))
    return out


def _walk_graph(buf: bytes, span: tuple[int, int], summary: GraphSummary, depth: int) -> None:
    if depth > 32:
        raise NotOnnx("graphs nested too deep")
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == 1:  # NodeProto
            for n_num, n_wire, n_val in _fields(buf, *value):
                if n_num == 4 and n_wire == 2:
                    summary.ops.add(bytes(buf[n_val[0] : n_val[1]]).decode("utf-8", "replace"))
                elif n_num == 5 and n_wire == 2:  # AttributeProto: subgraphs, tensors
                    for a_num, a_wire, a_val in _fields(buf, *n_val):
                        if a_num in (6, 11) and a_wire == 2:
                            _walk_graph(buf, a_val, summary, depth + 1)
        elif number in (5, 15):  # initializer / sparse_initializer
            tensor = value
            if number == 15:
                tensor = next((v for f, w, v in _fields(buf, *value) if f == 1 and w == 2), None)
            dtype = 0
            if tensor is not None:
                dtype = next((v for f, w, v in _fields(buf, *tensor) if f == 2 and w == 0), 0)
            summary.initializer_types[dtype] = summary.initializer_types.get(dtype, 0) + 1


def read_graph_summary(data: bytes) -> GraphSummary:
    """Op types and initializer element types of an ONNX model; NotOnnx if it is not one."""
    summary = GraphSummary()
    graph = None
    for number, wire, value in _fields(data, 0, len(data)):
        if number == 1 and wire == 0:
            summary.ir_version = value
        elif number == 7 and wire == 2:
            graph = value
    if not summary.ir_version or graph is None:
        raise NotOnnx("no ir_version or no graph")
    _walk_graph(data, graph, summary, 0)
    return summary


# -- add-time checks ---------------------------------------------------------------------


def storage_models_dir(work_root: str | Path | None) -> Path | None:
    """``<root>/models`` when ``work_root`` is the runtime's ``<root>/tmp/agents``."""
    if work_root is None:
        return None
    path = Path(work_root).resolve()
    if path.name == "agents" and path.parent.name == "tmp":
        return path.parent.parent / "models"
    return None


def model_candidates(agent: AgentLike, work_root: str | Path | None = None) -> list[str]:
    """Where ``model.path`` is looked for, in order (see the module doc)."""
    model = getattr(agent, "model", None)
    path = str(getattr(model, "path", "") or "")
    found = [path] if path else []
    models = storage_models_dir(work_root)
    if models is None or not path:
        return found
    if not os.path.isabs(path):
        return [str(models / path), path]
    source = getattr(agent, "source", None)
    if source and not str(source).startswith("<"):
        inside = os.path.relpath(path, os.path.dirname(os.path.abspath(source)))
        if not inside.startswith(".."):
            found.append(str(models / inside))
    return found


def resolve_model_path(agent: AgentLike, work_root: str | Path | None = None) -> str:
    """The model file to load; AgentError listing the places tried when there is none."""
    tried = model_candidates(agent, work_root)
    for path in tried:
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise AgentError(
        f"agent '{agent.name}': model.path file not found (looked in: {', '.join(tried)}); "
        "give an absolute path, a path relative to the agent's file, or put it in the "
        "storage root's models/ folder"
    )


def require_onnxruntime() -> None:
    """MissingDependency unless onnxruntime and numpy can be imported."""
    for module in ("onnxruntime", "numpy"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise MissingDependency(module, "onnx", "the onnxruntime agent executor")


def check_model_file(agent: AgentLike, path: str) -> GraphSummary:
    """Size within ``max_storage``, parses as ONNX, precision as configured."""
    who = f"agent '{agent.name}'"
    size = os.path.getsize(path)
    quota = getattr(agent.resources, "max_storage", None)
    if quota and size > quota:
        raise AgentError(
            f"{who}: model {path} is {format_size(size)}, larger than resources.max_storage "
            f"{format_size(quota)}; raise resources.max_storage or use a smaller model"
        )
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        summary = read_graph_summary(data)
    except NotOnnx as exc:
        raise AgentError(
            f"{who}: model {path} is not an ONNX model ({exc}); model.format onnx needs an "
            ".onnx file (a serialized ModelProto)"
        ) from None
    wanted, found = agent.model.precision, summary.precision()
    if wanted != found:
        raise AgentError(
            f"{who}: model.precision is {wanted} but {path} looks {found} "
            f"({summary.describe()}); set model.precision: {found} or use the {wanted} model"
        )
    return summary


def validate_onnx_agent(
    agent: AgentLike, platform: Platform, work_root: str | Path | None = None
) -> dict[str, Any]:
    """Refuse, at add time, an onnx agent that cannot run; the loaded model's info."""
    require_onnxruntime()
    path = resolve_model_path(agent, work_root)
    check_model_file(agent, path)
    scratch = tempfile.mkdtemp(prefix="edge-min-onnx-check-")
    executor = OnnxExecutor(agent, platform, scratch, model_path=path)
    try:
        return executor.start(LOAD_TIMEOUT)
    finally:
        executor.close()
        shutil.rmtree(scratch, ignore_errors=True)


# -- the executor ------------------------------------------------------------------------


class OnnxExecutor:
    """Runs an ONNX model in a warm, isolated worker; one request at a time."""

    def __init__(
        self,
        agent: AgentLike,
        platform: Platform,
        work_root: str | Path,
        *,
        model_path: str | None = None,
    ) -> None:
        require_onnxruntime()
        self.agent = agent
        self.platform = platform
        self.work_dir = str(Path(work_root) / agent.name)
        self.model_path = model_path or resolve_model_path(agent, work_root)
        self.input_format = str(getattr(agent.input, "format", "tensor"))
        self._lock = new_lock()
        self._service: ServiceHandle | None = None
        self._spec: WorkerSpec | None = None
        #: The ready frame's info (inputs, outputs, providers) of the current worker.
        self.info: dict[str, Any] = {}
        #: The ``meta`` of the last reply: worker ``pid``, ``served``, ``sessions_created``.
        self.last_meta: dict[str, Any] = {}
        self.last_reply: ServiceReply | None = None

    @property
    def worker_pid(self) -> int | None:
        """The current worker's pid, or ``None`` when none runs (or it is in-process)."""
        service = self._service
        return service.pid if service is not None and service.alive else None

    def start(self, timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
        """Start the worker and load the model now (otherwise the first call does)."""
        with self._lock:
            self._ensure(timeout)
            return dict(self.info)

    def _ensure(self, timeout: float) -> ServiceHandle:
        if self._service is not None and self._service.alive:
            return self._service
        self._service = None
        spec = build_worker_spec(
            self.agent,
            work_dir=os.path.abspath(self.work_dir),
            idempotency_key="",
            timeout=timeout,
            stdin=b"",
            entry=SESSION_FACTORY,
        )
        # Only edge_min's own folder: nothing beside the agent's file may shadow numpy.
        # onnxruntime's telemetry writes a device id and a database under $HOME (the work
        # directory, counted against max_storage) unless it is switched off.
        env = {"ORT_DISABLE_TELEMETRY": "1", **spec.env}
        spec = replace(spec, sys_path=(_PACKAGE_PARENT,), preload=PRELOAD, env=env)
        init = {
            "model": self.model_path,
            "threads": getattr(self.agent.runtime, "threads", 1),
            "acceleration": getattr(self.agent.runtime, "acceleration", "cpu"),
            "provider_fallback": getattr(self.agent.runtime, "provider_fallback", True),
            "input_format": self.input_format,
            "classes": list(getattr(self.agent.output, "classes", ()) or ()),
        }
        service = self.platform.start_service(spec)
        reply = service.request(init, timeout)
        if reply.frame is None or not reply.frame.get("ok"):
            service.stop()
            self._raise(reply, spec, loading=True)
        assert reply.frame is not None
        self._service, self._spec = service, spec
        self.info = dict(reply.frame.get("output") or {})
        self.last_meta = dict(reply.frame.get("meta") or {})
        for warning in self.info.get("warnings") or ():
            log.warning("agent '%s': %s", self.agent.name, warning)
        return service

    def invoke(self, input_value: Any, context: InvocationContext) -> Any:
        """Run the model once on ``input_value`` in the warm worker."""
        value = prepare_onnx_input(self.agent, input_value)
        timeout = context.timeout or DEFAULT_TIMEOUT
        request = {
            "input": value,
            "context": {
                "idempotency_key": context.idempotency_key,
                "agent": self.agent.name,
                "attempt": context.attempt,
                "timeout": timeout,
            },
        }
        with self._lock:
            service = self._ensure(max(timeout, LOAD_TIMEOUT))
            reply = service.request(request, timeout)
            self.last_reply = reply
            if reply.frame is not None and reply.frame.get("ok"):
                self.last_meta = dict(reply.frame.get("meta") or {})
                return check_output(self.agent, reply.frame.get("output"))
            if reply.ended is not None or (reply.frame or {}).get("kind") in ("memory", "storage"):
                # Dead, or alive after a native out-of-memory: the next call gets a fresh one.
                service.stop()
                self._service = None
            assert self._spec is not None
            self._raise(reply, replace(self._spec, timeout=timeout), loading=False)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, reply: ServiceReply, spec: WorkerSpec, *, loading: bool) -> None:
        who = f"agent '{self.agent.name}'"
        doing = f"loading {self.model_path}" if loading else "running the model"
        if reply.ended is not None:
            limit = limit_hit(reply.ended, spec)
            if limit is not None:
                raise limit_error(limit, reply.ended, spec)
            ended = reply.ended
            how = f"signal {ended.signal}" if ended.signal else f"code {ended.returncode}"
            raise AgentError(
                f"{who}: its onnxruntime worker exited with {how} while {doing}; its stderr "
                "ends with:\n" + stderr_tail(ended.stderr)
            )
        frame = reply.frame or {}
        kind, kind_type, message = frame.get("kind"), frame.get("type"), frame.get("message")
        if kind == "memory" and spec.max_memory is not None:
            err = limit_error("memory", _fake_end(reply), spec)
            raise AgentLimitExceeded(f"{err.message} (while {doing}: {message})", limit="memory")
        if kind_type in ("OnnxInputError", "OnnxLoadError"):
            raise AgentError(f"{who}: {message}")
        if loading and kind_type in ("ModuleNotFoundError", "ImportError"):
            # The worker's interpreter lacks what this one has (another python, say).
            raise MissingDependency("onnxruntime", "onnx", "the onnxruntime agent executor")
        if kind == "import":
            raise AgentError(
                f"{who}: the onnxruntime worker cannot import its runtime ({kind_type}: "
                f"{message}); install it with: pip install 'edge-min[onnx]'"
            )
        if loading:
            raise AgentError(f"{who}: model {self.model_path} fails to load: {message}")
        raise AgentError(f"{who}: onnxruntime failed while {doing}: {kind_type}: {message}")

    def close(self) -> None:
        """Stop the worker (and free its session)."""
        service, self._service = self._service, None
        if service is not None:
            service.stop()


def _fake_end(reply: ServiceReply) -> Any:
    from edge_min.platform import WorkerResult

    return WorkerResult(returncode=1, stdout=b"", stderr=reply.stderr, duration=reply.duration)


def prepare_onnx_input(agent: AgentLike, value: Any) -> Any:
    """Text input: apply ``input.max_length`` (cut when ``input.truncate``, else refuse)."""
    spec = getattr(agent, "input", None)
    if getattr(spec, "format", None) != "text":
        return value
    max_length = getattr(spec, "max_length", None)

    def fit(text: str) -> str:
        if not max_length or len(text) <= max_length:
            return text
        if getattr(spec, "truncate", True):
            return text[:max_length]
        raise AgentError(
            f"agent '{agent.name}': input text is {len(text)} characters, over "
            f"input.max_length {max_length}; shorten it or set input.truncate: true"
        )

    if isinstance(value, str):
        return fit(value)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return {**value, "text": fit(value["text"])}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [fit(v) for v in value]
    return value


def register() -> None:
    """Make ``runtime.executor: onnxruntime`` available (called lazily by executors)."""
    register_executor("onnxruntime", OnnxExecutor, validate=validate_onnx_agent)
