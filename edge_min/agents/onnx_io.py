"""The I/O rules of an ONNX agent, in pure Python: what both sessions share.

Two sessions run an ONNX model for an agent: ``edge_min.agents.onnx_session.OnnxSession``
(onnxruntime and numpy, in the gateway's worker) and
``edge_min.agents.onnx_web.OnnxWebSession`` (onnxruntime-web, called from Pyodide in a
browser). Whatever decides what an agent's caller sees lives here once, so the two cannot
drift: which input takes text and how it is shaped, which output carries the class scores,
the checks of a tensor input against the model's (names, shape, element type, the casts
allowed), ``.npy`` decoding, and ``{"label", "scores"}`` with its softmax rule. Nothing here
imports numpy: the browser has none.

Model I/O is described the way onnxruntime's Python API does: ``{"name", "type", "shape"}``
with ONNX type names (``tensor(float)``) and a shape whose symbolic dims are their names (a
string) and unknown dims ``None``.

A tensor as plain data is ``(dtype, dims, flat)``: a numpy-style dtype name (``float32``,
``int64``, ``bool``, ``str``), the dims, and the values in C order.
"""

from __future__ import annotations

import ast
import base64
import binascii
import math
import struct
from collections.abc import Sequence
from typing import Any

#: ONNX element type -> numpy-style dtype name.
NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}
FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")
#: A row whose values lie in [0, 1] and sum to 1 within this is taken as probabilities.
NORMALISED_TOLERANCE = 1e-2
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
# .npy descr (without byte order) -> (dtype name, struct code).
_NPY_CODES = {
    "f2": ("float16", "e"),
    "f4": ("float32", "f"),
    "f8": ("float64", "d"),
    "i1": ("int8", "b"),
    "i2": ("int16", "h"),
    "i4": ("int32", "i"),
    "i8": ("int64", "q"),
    "u1": ("uint8", "B"),
    "u2": ("uint16", "H"),
    "u4": ("uint32", "I"),
    "u8": ("uint64", "Q"),
    "b1": ("bool", "?"),
}


class OnnxInputError(ValueError):
    """The request does not fit the model; the message names input, shape and dtype."""


class OnnxLoadError(ValueError):
    """The model cannot serve this agent config (provider, inputs, classes)."""


# -- the model's I/O -----------------------------------------------------------------------


def shape_of(dims: Any) -> list[Any]:
    """A shape as the rules read it: ints, symbolic names, ``None`` for unknown."""
    return [d if isinstance(d, int) else (d or None) for d in (dims or [])]


def show_shape(shape: Sequence[Any]) -> str:
    """``[N, 3]``, with ``?`` for an unknown dim."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def find_text_input(inputs: Sequence[dict[str, Any]]) -> str:
    """The one string input that ``input.format: text`` feeds; OnnxLoadError otherwise."""
    strings = [i for i in inputs if i["type"] == "tensor(string)"]
    if len(strings) != 1 or len(inputs) != 1:
        found = ", ".join(f"{i['name']} {i['type']}" for i in inputs)
        raise OnnxLoadError(
            "input.format text needs a model with exactly one input, of type "
            f"tensor(string); this model has: {found}. Use input.format: tensor"
        )
    return str(strings[0]["name"])


def find_scores_output(outputs: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """The probability output for ``output.classes``: a float one, ``prob`` in its name first."""
    candidates = [
        o for o in outputs if o["type"] in FLOAT_TYPES or o["type"].startswith("seq(map(")
    ]
    if not candidates:
        found = ", ".join(f"{o['name']} {o['type']}" for o in outputs)
        raise OnnxLoadError(
            f"output.classes needs a float (probability) output; this model has: {found}"
        )
    named = [o for o in candidates if "prob" in o["name"].lower()]
    chosen = (named or candidates)[0]
    width = chosen["shape"][-1] if chosen["shape"] else None
    if isinstance(width, int) and width != len(classes):
        raise OnnxLoadError(
            f"output.classes has {len(classes)} labels {list(classes)} but the "
            f"model's output '{chosen['name']}' has {width} columns "
            f"(shape {show_shape(chosen['shape'])}); give one class per column, in order"
        )
    return str(chosen["name"])


def text_batch(value: Any, rank: int) -> tuple[list[str], bool, list[int]]:
    """The texts of a text-format request, whether it was a batch, and the feed's dims.

    A string, ``{"text": str}`` or a non-empty list of strings; ``rank`` is the text
    input's (0: one string, 1: ``[N]``, 2: ``[N, 1]``).
    """
    batch = False
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, dict) and isinstance(value.get("text"), str):
        texts = [value["text"]]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts, batch = list(value), True
    else:
        raise OnnxInputError(
            'input.format text takes a string, {"text": string} or a non-empty list '
            f"of strings, got {type(value).__name__}"
        )
    if rank == 0:
        if batch:
            raise OnnxInputError("this model's text input takes one string, not a list")
        return texts, False, []
    return texts, batch, [len(texts), 1] if rank == 2 else [len(texts)]


# -- tensor input ----------------------------------------------------------------------------


def check_input_names(value: Any, inputs: Sequence[dict[str, Any]]) -> None:
    """A tensor-format request is an object naming every model input and nothing else."""
    names = [str(i["name"]) for i in inputs]
    if not isinstance(value, dict):
        raise OnnxInputError(
            "input.format tensor takes a JSON object mapping each model input "
            f'({", ".join(names)}) to a nested list, a number or {{"npy_b64": ...}}, '
            f"got {type(value).__name__}"
        )
    missing = [n for n in names if n not in value]
    unknown = sorted(k for k in value if k not in names)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise OnnxInputError(f"tensor input: {'; '.join(parts)}; the model's inputs are {names}")


def expected(spec: dict[str, Any]) -> tuple[str | None, str]:
    """The input's dtype name (None: not JSON-able) and the "expected ..." phrase."""
    dtype = NUMPY_TYPES.get(spec["type"])
    return dtype, f"expected shape {show_shape(spec['shape'])} dtype {dtype or spec['type']}"


def shape_fits(shape: Sequence[Any], dims: Sequence[int]) -> bool:
    """Same rank, and every fixed dim equal (symbolic and unknown dims match any size)."""
    return len(dims) == len(shape) and not any(
        isinstance(d, int) and d != g for d, g in zip(shape, dims, strict=False)
    )


def cast_allowed(kind: str, dtype: str, empty: bool) -> bool:
    """Whether values of numpy kind ``kind`` may feed a ``dtype`` input (within a kind).

    JSON numbers are int64/float64 and models want narrower ones: ints and floats go to a
    float input, ints to an integer one; a float for an integer, a bool for a number or
    anything but strings for a string input is refused. An empty array fits anything.
    """
    if empty:
        return True
    if dtype == "str":
        return kind == "U"
    if dtype == "bool":
        return kind == "b"
    if dtype.startswith("float"):
        return kind in "iuf"
    return kind in "iu"


def dtype_label(kind: str) -> str:
    """How the dtype of values given as JSON is named in messages (as numpy names it)."""
    if kind in "USO":
        return "str"
    return {"b": "bool", "i": "int64", "u": "uint64", "f": "float64"}[kind]


def _leaf_kind(leaf: Any) -> str:
    if isinstance(leaf, bool):
        return "b"
    if isinstance(leaf, int):
        return "i" if -(2**63) <= leaf < 2**63 else "O"
    if isinstance(leaf, float):
        return "f"
    if isinstance(leaf, str):
        return "U"
    return "O"


def _flatten(given: Any, name: str, want: str) -> tuple[list[int], list[Any]]:
    """(dims, C-order leaves) of nested lists, as ``numpy.array`` would shape them."""
    if not isinstance(given, list):
        return [], [given]
    dims: list[int] = []
    level: list[Any] = [given]
    while level and all(isinstance(x, list) for x in level):
        sizes = {len(x) for x in level}
        if len(sizes) != 1:
            break
        dims.append(sizes.pop())
        level = [y for x in level for y in x]
    if any(isinstance(x, list) for x in level):
        raise OnnxInputError(
            f"input '{name}': {want}, given nested lists of uneven lengths (the requested "
            f"array has an inhomogeneous shape after {len(dims)} dimensions)"
        )
    return dims, level


def _kind_of(leaves: Sequence[Any]) -> str:
    kinds = {_leaf_kind(x) for x in leaves}
    for kind in ("O", "U", "f", "i", "b"):  # numpy's promotion of mixed JSON values
        if kind in kinds:
            return kind
    return "f"  # an empty array is float64 to numpy


def json_tensor(spec: dict[str, Any], given: Any) -> tuple[str, list[int], list[Any]]:
    """One tensor-format input as ``(dtype, dims, flat)``, checked as the gateway checks it."""
    name, shape = spec["name"], list(spec["shape"])
    dtype, want = expected(spec)
    if dtype is None:
        raise OnnxInputError(f"input '{name}': type {spec['type']} is not supported as JSON")
    if isinstance(given, dict):
        got, dims, flat = npy_tensor(name, given)
        if got != dtype:
            raise OnnxInputError(f"input '{name}': {want}, given shape {dims} dtype {got} (.npy)")
        if not shape_fits(shape, dims):
            raise OnnxInputError(f"input '{name}': {want}, given shape {dims} dtype {got}")
        return dtype, dims, flat
    dims, flat = _flatten(given, name, want)
    kind = _kind_of(flat)
    if not shape_fits(shape, dims):
        raise OnnxInputError(
            f"input '{name}': {want}, given shape {dims} dtype {dtype_label(kind)}"
        )
    empty = not flat

    def fail(what: str) -> OnnxInputError:
        return OnnxInputError(f"input '{name}': {want}, given {what}")

    given_is = f"shape {dims} dtype {dtype_label(kind)}"
    if not cast_allowed(kind, dtype, empty):
        raise fail(given_is)
    if dtype.startswith("uint") and not empty and min(flat) < 0:
        raise fail(f"{given_is} with negative values")
    if dtype.startswith("float"):
        flat = [float(x) for x in flat]
    elif dtype in _INT_RANGES:
        # numpy's astype wraps out-of-range ints; JSON callers mean the value, so do so too.
        low, high = _INT_RANGES[dtype]
        span = high - low + 1
        flat = [(int(x) - low) % span + low for x in flat]
    return dtype, dims, flat


# -- .npy ------------------------------------------------------------------------------------


def npy_tensor(name: str, given: dict[str, Any]) -> tuple[str, list[int], list[Any]]:
    """``{"npy_b64": ...}`` as ``(dtype, dims, flat)``: a .npy file, version 1 to 3."""
    if set(given) != {"npy_b64"} or not isinstance(given["npy_b64"], str):
        raise OnnxInputError(
            f"input '{name}': an object value must be {{\"npy_b64\": <base64 of a .npy file>}}, "
            f"got keys {sorted(given)}"
        )
    try:
        return parse_npy(base64.b64decode(given["npy_b64"]))
    except (ValueError, binascii.Error, struct.error, SyntaxError) as exc:
        raise OnnxInputError(f"input '{name}': npy_b64 is not a base64 .npy file ({exc})") from None


def parse_npy(data: bytes) -> tuple[str, list[int], list[Any]]:
    """The dtype, dims and C-order values of a .npy file (numeric, bool and unicode arrays)."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("the magic string is not correct; expected b'\\x93NUMPY'")
    major = data[6]
    if major == 1:
        (size,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        (size,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    header = ast.literal_eval(data[start : start + size].decode("latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("the header is not a .npy header")
    descr, dims = header["descr"], [int(d) for d in header["shape"]]
    if not isinstance(descr, str) or len(descr) < 3:
        raise ValueError(f"unsupported dtype {descr!r} (object arrays are never loaded)")
    order, code = descr[0], descr[1:]
    count = math.prod(dims)
    body = data[start + size :]
    fmt = ">" if order == ">" else "<"
    if code.startswith("U"):
        width = int(code[1:])
        raw = body[: count * width * 4]
        enc = "utf-32-be" if order == ">" else "utf-32-le"
        flat: list[Any] = [
            raw[i * width * 4 : (i + 1) * width * 4].decode(enc).rstrip("\x00")
            for i in range(count)
        ]
        dtype = "str"
    elif code in _NPY_CODES:
        dtype, letter = _NPY_CODES[code]
        if order == ">" and struct.calcsize(letter) > 1:
            dtype = descr  # numpy names a non-native dtype by its descr: never a model's
        flat = list(struct.unpack(f"{fmt}{count}{letter}", body[: count * struct.calcsize(letter)]))
    else:
        raise ValueError(f"unsupported dtype {descr!r} (object arrays are never loaded)")
    if len(flat) != count:
        raise ValueError(f"the data holds fewer than the {count} values of shape {dims}")
    if header["fortran_order"] and len(dims) > 1:
        flat = _fortran_to_c(flat, dims)
    return dtype, dims, flat


def _fortran_to_c(flat: list[Any], dims: list[int]) -> list[Any]:
    strides = [1]
    for d in dims[:-1]:
        strides.append(strides[-1] * d)
    out: list[Any] = []

    def walk(axis: int, offset: int) -> None:
        if axis == len(dims):
            out.append(flat[offset])
            return
        for i in range(dims[axis]):
            walk(axis + 1, offset + i * strides[axis])

    walk(0, 0)
    return out


# -- output ----------------------------------------------------------------------------------


def nest(flat: Sequence[Any], dims: Sequence[int]) -> Any:
    """C-order values as nested lists of ``dims`` (a scalar for no dims), like ``tolist()``."""
    if not dims:
        return flat[0]
    last = len(dims) - 1

    def build(offset: int, axis: int) -> list[Any]:
        if axis == last:
            return list(flat[offset : offset + dims[axis]])
        step = math.prod(dims[axis + 1 :])
        return [build(offset + i * step, axis + 1) for i in range(dims[axis])]

    return build(0, 0)


def rows_of(flat: Sequence[float], dims: Sequence[int], width: int) -> list[list[float]]:
    """Rows of class scores from a probability output's values (any rank), width checked."""
    if not dims:
        rows = [[float(flat[0])]]
    else:
        last = dims[-1]
        rows = [[float(v) for v in flat[i : i + last]] for i in range(0, len(flat), last or 1)]
    for row in rows:
        if len(row) != width:
            raise OnnxInputError(
                f"the model returned {len(row)} scores per row but output.classes has {width}"
            )
    return rows


def label_row(row: list[float], classes: list[str]) -> dict[str, Any]:
    """``{"label", "scores"}`` for one row; softmax unless it is already normalised."""
    # sum() first: a NaN anywhere fails it, and an empty row never reaches min()/max().
    if abs(sum(row) - 1.0) <= NORMALISED_TOLERANCE and min(row) >= -1e-6:
        top = max(row)
        if top <= 1 + 1e-6:
            return {
                "label": classes[row.index(top)],
                "scores": {c: round(p, 6) for c, p in zip(classes, row, strict=True)},
            }
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    row = [e / total for e in exps]
    best = max(range(len(row)), key=row.__getitem__)
    return {
        "label": classes[best],
        "scores": {c: round(p, 6) for c, p in zip(classes, row, strict=True)},
    }


def labelled(rows: list[list[float]], classes: list[str], batch: bool) -> Any:
    """One ``{"label", "scores"}``, or a list of them for a batch (or several rows)."""
    if batch or len(rows) != 1:
        return [label_row(row, classes) for row in rows]
    return label_row(rows[0], classes)
