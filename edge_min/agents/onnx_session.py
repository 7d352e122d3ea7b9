"""The worker side of the onnxruntime executor: one session, reused for every request.

``open_session(init, context)`` is the factory a persistent worker calls once
(``edge_min.platform.worker``, ``serve`` mode); it builds the ``InferenceSession`` and
returns an ``OnnxSession``, which the worker calls per request. numpy and onnxruntime are
imported here, lazily, never by the runtime process.

- **providers**: ``acceleration`` picks from ``GPU_PROVIDERS``/``NPU_PROVIDERS`` those this
  onnxruntime build has, then CPU. None available: with ``provider_fallback`` the CPU is
  used and a warning goes back in ``info["warnings"]`` (the executor logs it); without,
  loading fails naming the wanted and the available providers.
- **threads**: ``intra_op_num_threads = runtime.threads``, ``inter_op_num_threads = 1``,
  sequential execution.
- **text** input: a string, ``{"text": str}`` or a list of strings, fed to the model's one
  string input (shaped to its rank: ``[N]`` or ``[N, 1]``).
- **tensor** (and ``json``) input: an object mapping every model input's name to a nested
  list, a number, or ``{"npy_b64": base64 of a .npy file}``; each is checked against the
  input's element type and shape (symbolic or missing dims match any size; errors show
  them by name, or ``?``). Numbers are
  cast within their kind (ints to a float input, int64 to int32); a float for an integer
  input, a bool for a number or anything for a string input is refused; ``.npy`` arrays
  must have the exact dtype.
- **output**: without ``classes`` every output by name as nested lists; with ``classes``
  the probability output becomes ``{"label", "scores"}`` (a list of them for a batch).
  The probability output is the float output (or ZipMap sequence) whose name contains
  ``prob``, else the first one. A row already normalised (every value in [0, 1], sum
  within 1e-2 of 1) is used as is; any other row is taken as logits and softmaxed.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from typing import Any

from edge_min.agents.onnx_io import (
    OnnxInputError,
    OnnxLoadError,
    cast_allowed,
    check_input_names,
    expected,
    find_scores_output,
    find_text_input,
    label_row,
    labelled,
    shape_fits,
    shape_of,
    text_batch,
)

__all__ = [
    "OnnxInputError",
    "OnnxLoadError",
    "OnnxSession",
    "decode_inputs",
    "label_row",
    "open_session",
    "pick_providers",
    "score_rows",
    "to_json",
]

GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)
NPU_PROVIDERS = (
    "QNNExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "NnapiExecutionProvider",
    "VitisAIExecutionProvider",
    "RknpuExecutionProvider",
    "CANNExecutionProvider",
)
CPU = "CPUExecutionProvider"
#: Sessions this process has created (a warm worker creates exactly one).
SESSIONS_CREATED = 0


def pick_providers(
    acceleration: str, fallback: bool, available: list[str]
) -> tuple[list[str], list[str]]:
    """Execution providers for ``acceleration`` and any warnings, or OnnxLoadError."""
    if acceleration == "cpu":
        return [CPU], []
    wanted = GPU_PROVIDERS if acceleration == "gpu" else NPU_PROVIDERS
    found = [p for p in wanted if p in available]
    if found:
        return [*found, CPU], []
    text = (
        f"runtime.acceleration {acceleration} needs one of {', '.join(wanted)}; this "
        f"onnxruntime has only {', '.join(available)}"
    )
    if not fallback:
        raise OnnxLoadError(
            f"{text}; install an onnxruntime build with that provider (e.g. "
            "onnxruntime-gpu), or set runtime.provider_fallback: true to run on the CPU"
        )
    return [CPU], [f"{text}; running on {CPU} (runtime.provider_fallback: true)"]


class OnnxSession:
    """A loaded model and the agent's I/O rules; called once per request."""

    def __init__(self, init: dict[str, Any]) -> None:
        global SESSIONS_CREATED
        import numpy as np
        import onnxruntime as ort

        started = time.monotonic()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(init.get("threads") or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        providers, warnings = pick_providers(
            str(init.get("acceleration") or "cpu"),
            bool(init.get("provider_fallback", True)),
            list(ort.get_available_providers()),
        )
        self.session = ort.InferenceSession(str(init["model"]), options, providers=providers)
        SESSIONS_CREATED += 1
        self.format = str(init.get("input_format") or "tensor")
        self.classes = [str(c) for c in init.get("classes") or []]
        self.inputs = [
            {"name": i.name, "type": i.type, "shape": shape_of(i.shape)}
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            {"name": o.name, "type": o.type, "shape": shape_of(o.shape)}
            for o in self.session.get_outputs()
        ]
        self.text_input = find_text_input(self.inputs) if self.format == "text" else None
        self.scores_output = (
            find_scores_output(self.outputs, self.classes) if self.classes else None
        )
        # The per-call path reads only these, worked out once: a ~20 µs model leaves
        # no room for rebuilding lists or looking specs up on every request.
        self._np = np
        self._text_key = self.text_input or ""
        self._output_names = [str(o["name"]) for o in self.outputs]
        self._scores_index = (
            -1 if self.scores_output is None else self._output_names.index(self.scores_output)
        )
        self._text_rank = next(
            (len(i["shape"]) for i in self.inputs if i["name"] == self.text_input), -1
        )
        self.info = {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "providers": self.session.get_providers(),
            "warnings": warnings,
            "text_input": self.text_input,
            "scores_output": self.scores_output,
            "load_seconds": round(time.monotonic() - started, 4),
        }

    def meta(self) -> dict[str, Any]:
        """Per-reply facts: how many sessions this worker has created (1 when warm)."""
        return {"sessions_created": SESSIONS_CREATED}

    def __call__(self, value: Any, context: Any) -> Any:
        """Run the model on one request; the JSON-ready output."""
        batch = False
        if self.text_input is None:
            feeds = decode_inputs(value, self.inputs)
        elif type(value) is str and self._text_rank == 1:
            # The common call (one sentence into an [N] input), with nothing left to check.
            feeds = {self._text_key: self._np.array([value], dtype=object)}
        else:
            feeds, batch = self._text_feeds(value)
        results = self.session.run(self._output_names, feeds)
        index = self._scores_index
        if index < 0:
            return {n: to_json(r) for n, r in zip(self._output_names, results, strict=True)}
        classes = self.classes
        scores = results[index]
        shape = getattr(scores, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] == len(classes):
            rows = scores.tolist()  # float32 -> float is exact, as astype("float64") is
        else:
            rows = score_rows(scores, len(classes))
        return labelled(rows, classes, batch)

    def _text_feeds(self, value: Any) -> tuple[dict[str, Any], bool]:
        texts, batch, dims = text_batch(value, self._text_rank)
        if not dims:
            return {self._text_key: self._np.array(texts[0], dtype=object)}, False
        return {self._text_key: self._np.array(texts, dtype=object).reshape(dims)}, batch


def open_session(init: dict[str, Any], context: Any) -> OnnxSession:
    """The persistent worker's factory: load the model once."""
    return OnnxSession(init)


def decode_inputs(value: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The feeds for ``session.run`` from tensor-format JSON, every input checked."""
    check_input_names(value, inputs)
    return {str(i["name"]): decode_input(i, value[i["name"]]) for i in inputs}


def decode_input(spec: dict[str, Any], given: Any) -> Any:
    """One input's array, of the model's dtype; OnnxInputError naming what does not fit."""
    import numpy as np

    name, shape = spec["name"], list(spec["shape"])
    dtype, want = expected(spec)
    if dtype is None:
        raise OnnxInputError(f"input '{name}': type {spec['type']} is not supported as JSON")
    if isinstance(given, dict):
        arr = _from_npy(name, given)
        got = _dtype_name(arr)
        if got != dtype:
            raise OnnxInputError(
                f"input '{name}': {want}, given shape {list(arr.shape)} dtype {got} (.npy)"
            )
    else:
        try:
            arr = np.array(given)
        except ValueError as exc:
            raise OnnxInputError(
                f"input '{name}': {want}, given nested lists of uneven lengths ({exc})"
            ) from None
    if not shape_fits(shape, list(arr.shape)):
        got = _dtype_name(arr)
        raise OnnxInputError(f"input '{name}': {want}, given shape {list(arr.shape)} dtype {got}")
    if not isinstance(given, dict):
        arr = _cast(arr, dtype, lambda what: f"input '{name}': {want}, given {what}")
    return arr.astype(object) if dtype == "str" else arr


def _from_npy(name: str, given: dict[str, Any]) -> Any:
    import numpy as np

    if set(given) != {"npy_b64"} or not isinstance(given["npy_b64"], str):
        raise OnnxInputError(
            f"input '{name}': an object value must be {{\"npy_b64\": <base64 of a .npy file>}}, "
            f"got keys {sorted(given)}"
        )
    try:
        return np.load(io.BytesIO(base64.b64decode(given["npy_b64"])), allow_pickle=False)
    except (ValueError, OSError, EOFError, binascii.Error) as exc:  # EOFError: empty data
        raise OnnxInputError(f"input '{name}': npy_b64 is not a base64 .npy file ({exc})") from None


def _given(arr: Any) -> str:
    return f"shape {list(arr.shape)} dtype {_dtype_name(arr)}"


def _dtype_name(arr: Any) -> str:
    return "str" if arr.dtype.kind in "USO" else str(arr.dtype)


def _cast(arr: Any, dtype: str, fail: Any) -> Any:
    # Within a kind only (onnx_io.cast_allowed): JSON numbers are int64/float64 and models
    # want narrower ones.
    empty = arr.size == 0
    if not cast_allowed(arr.dtype.kind, dtype, empty):
        raise OnnxInputError(fail(_given(arr)))
    if dtype.startswith("uint") and not empty and arr.min() < 0:
        raise OnnxInputError(fail(f"{_given(arr)} with negative values"))
    return arr if dtype == "str" else arr.astype(dtype)


def to_json(value: Any) -> Any:
    """An output (array, ZipMap list of dicts, scalar) as nested lists/numbers."""
    if hasattr(value, "tolist"):
        out = value.tolist()
        return out
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def score_rows(value: Any, width: int) -> list[list[float]]:
    """Rows of class scores from a probability output (2-D, 1-D, or a ZipMap list)."""
    if isinstance(value, list):
        rows = [[float(d[k]) for k in sorted(d)] for d in value]
    else:
        flat = value.astype("float64")
        rows = flat.reshape(-1, flat.shape[-1]).tolist() if flat.ndim else [[float(flat)]]
    for row in rows:
        if len(row) != width:
            raise OnnxInputError(
                f"the model returned {len(row)} scores per row but output.classes has {width}"
            )
    return rows
