"""The pure ONNX I/O rules against numpy: the browser's decoding must be the gateway's.

``edge_min.agents.onnx_io`` decodes tensor-format JSON and .npy files without numpy (for
onnxruntime-web under Pyodide); ``onnx_session.decode_input`` does it with numpy (the
gateway). Here both run on the same values and must give the same dtype, shape and values,
or the same error. The end-to-end comparison, through onnxruntime-web itself, is
tests/targets/test_onnx_web.py.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_min.agents import onnx_io, onnx_web
from edge_min.agents.onnx_session import decode_input, score_rows
from edge_min.errors import AgentError
from edge_min.platform.inprocess import InProcessPlatform
from tests.fixtures.onnx import CLASSES, build_models, onnx_agent

#: Never reached: the add is refused before a session is made.
NO_BACKEND: Any = object()


def npy(arr: Any) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, arr)
    return {"npy_b64": base64.b64encode(buf.getvalue()).decode()}


def both(spec: dict[str, Any], given: Any) -> tuple[Any, Any]:
    """(numpy's result, the pure one) as (dtype, dims, values) or ("error", message)."""
    try:
        arr = decode_input(spec, given)
        name = "str" if arr.dtype.kind in "USO" else str(arr.dtype)
        gateway: Any = (name, list(arr.shape), arr.reshape(-1).tolist())
    except onnx_io.OnnxInputError as exc:
        gateway = ("error", str(exc).split(" (")[0])
    try:
        web: Any = onnx_io.json_tensor(spec, given)
    except onnx_io.OnnxInputError as exc:
        web = ("error", str(exc).split(" (")[0])
    return gateway, web


SPECS = {
    "f32": {"name": "x", "type": "tensor(float)", "shape": ["N", 3]},
    "f16": {"name": "x", "type": "tensor(float16)", "shape": [None]},
    "i64": {"name": "n", "type": "tensor(int64)", "shape": []},
    "i8": {"name": "q", "type": "tensor(int8)", "shape": [2]},
    "u8": {"name": "u", "type": "tensor(uint8)", "shape": [2]},
    "bool": {"name": "b", "type": "tensor(bool)", "shape": [2]},
    "str": {"name": "s", "type": "tensor(string)", "shape": ["N"]},
    "seq": {"name": "m", "type": "seq(tensor(float))", "shape": []},
}
VALUES: list[tuple[str, Any]] = [
    ("f32", [[1, 2, 3], [0.5, -1, 2]]),
    ("f32", [[1, 2, 3], [1, 2]]),
    ("f32", [[1, 2, [3]], [1, 2, 3]]),
    ("f32", [[1, 2]]),
    ("f32", [1, 2, 3]),
    ("f32", [["a", "b", "c"]]),
    ("f32", [[True, False, True]]),
    ("f32", [[None, 1, 2]]),
    ("f32", []),
    ("f16", [1, 0.5, 70000]),
    ("i64", 3),
    ("i64", 2.5),
    ("i64", True),
    ("i64", [3]),
    ("i8", [1, 300]),
    ("u8", [1, -2]),
    ("u8", [1, 2]),
    ("bool", [True, False]),
    ("bool", [1, 0]),
    ("str", ["a", "b"]),
    ("str", [1, 2]),
    ("str", []),
    ("seq", [1.0]),
    ("f32", npy(np.arange(6, dtype="float32").reshape(2, 3))),
    ("f32", npy(np.asfortranarray(np.arange(6, dtype="float32").reshape(2, 3)))),
    ("f32", npy(np.arange(6, dtype=">f4").reshape(2, 3))),
    ("f32", npy(np.arange(6, dtype="float64").reshape(2, 3))),
    ("f32", npy(np.arange(3, dtype="float32"))),
    ("i64", npy(np.array(7, "int64"))),
    ("bool", npy(np.array([True, False]))),
    ("str", npy(np.array(["ab", "çé"]))),
    ("str", npy(np.array(["x"], dtype=object))),
    ("f32", {"npy_b64": "bm90IG5weQ=="}),
    ("f32", {"npy_b64": "%%%"}),
    ("f32", {"data": [1, 2, 3]}),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    ("spec", "given"), VALUES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(VALUES)]
)
def test_json_and_npy_decode_as_numpy_does(spec: str, given: Any) -> None:
    gateway, web = both(SPECS[spec], given)
    if gateway[0] == "float16" and web[0] == "float16":
        # numpy stores half floats; the pure side keeps the float the bits are made from.
        halves = [float(np.float16(v)) for v in web[2]]
        web = (web[0], web[1], halves)
    assert web == gateway


def test_nest_and_rows_match_numpy() -> None:
    for dims in ([2, 3], [3], [1, 2, 2], [2, 0], [0, 3], []):
        arr = np.arange(int(np.prod(dims)), dtype="float32").reshape(dims)
        assert onnx_io.nest(arr.reshape(-1).tolist(), dims) == arr.tolist()
    probs = np.array([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], "float32")
    flat = probs.reshape(-1).tolist()
    assert onnx_io.rows_of(flat, [2, 3], 3) == score_rows(probs, 3)
    assert onnx_io.rows_of(flat, [6], 6) == score_rows(probs.reshape(-1), 6)
    with pytest.raises(onnx_io.OnnxInputError, match="returned 3 scores per row"):
        onnx_io.rows_of(flat, [2, 3], 2)


def test_feeds_and_outputs_keep_int64_float16_and_nan_exact() -> None:
    feed = onnx_web.encode_feed("int64", [2], [2**62 + 1, -5])
    assert feed == {"type": "int64", "dims": [2], "data": ["4611686018427387905", "-5"]}
    feed = onnx_web.encode_feed("float32", [3], [math.nan, math.inf, -math.inf])
    assert feed["data"] == ["NaN", "Infinity", "-Infinity"]
    half = onnx_web.encode_feed("float16", [3], [1.0, 70000.0, -1e9])["data"]
    assert half == np.array([1.0, np.inf, -np.inf], "float16").view("uint16").tolist()
    dims, values = onnx_web.decode_output({"type": "float16", "dims": [2], "data": [15360, 31744]})
    assert (dims, values) == ([2], [1.0, math.inf])
    _, values = onnx_web.decode_output({"type": "float32", "dims": [2], "data": ["NaN", 0.5]})
    assert math.isnan(values[0]) and values[1] == 0.5
    _, values = onnx_web.decode_output({"type": "int64", "dims": [1], "data": ["9007199254740993"]})
    assert values == [9007199254740993]


def test_the_backend_description_reads_as_onnxruntime_describes_models() -> None:
    described = [
        {"name": "text", "type": "string", "shape": ["N"]},
        {"name": "probabilities", "type": "float32", "shape": ["N", 3]},
        {"name": "zipmap", "type": "non-tensor", "shape": None},
    ]
    assert onnx_web.io_specs(described) == [
        {"name": "text", "type": "tensor(string)", "shape": ["N"]},
        {"name": "probabilities", "type": "tensor(float)", "shape": ["N", 3]},
        {"name": "zipmap", "type": "non-tensor", "shape": []},
    ]


def test_an_onnx_agent_is_refused_at_add_where_nothing_can_block(tmp_path: Path) -> None:
    """Outside Pyodide (and in a tab without JSPI) the add fails, after the file checks."""
    models = build_models(tmp_path / "m")
    agent = onnx_agent(models["text"], input_format="text", classes=CLASSES)
    assert onnx_web.bridge_problem() is not None
    platform = InProcessPlatform()
    with pytest.raises(AgentError, match=r"^agent 'clf': onnx agents in a browser block"):
        onnx_web.validate_onnx_web_agent(agent, platform, tmp_path, NO_BACKEND)
    missing = onnx_agent(tmp_path / "nowhere.onnx", input_format="text", classes=CLASSES)
    with pytest.raises(AgentError, match=r"model\.path file not found"):
        onnx_web.validate_onnx_web_agent(missing, platform, tmp_path, NO_BACKEND)
