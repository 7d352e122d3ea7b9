"""The worker side of the onnxruntime executor, in-process: real sessions on real models.

Tensor input checked against every model input (int64 scalars, dynamic dims, a stateful
two-input model, .npy), text input through a string-input graph, classes and scores.
The same code runs in the persistent worker (tests/integration/test_onnx_agent.py).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_min.agents import onnx_session
from edge_min.agents.executors import InvocationContext, make_executor
from edge_min.agents.onnx_session import OnnxInputError, OnnxLoadError, OnnxSession
from edge_min.errors import AgentError
from edge_min.platform.inprocess import InProcessPlatform
from tests.fixtures.onnx import CLASSES, build_models, onnx_agent, weights


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("onnx"))


def session(path: Path, fmt: str = "tensor", classes: list[str] | None = None) -> OnnxSession:
    return OnnxSession({"model": str(path), "input_format": fmt, "classes": classes or []})


def npy(arr: Any) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, arr)
    return {"npy_b64": base64.b64encode(buf.getvalue()).decode()}


# -- tensor input ----------------------------------------------------------------------------


def test_every_output_comes_back_by_name(models: dict[str, Path]) -> None:
    s = session(models["classifier"])
    out = s({"features": [[1, 2, 3, 4], [0.5, 0, 0, 1]]}, {})
    assert set(out) == {"logits", "probabilities"}
    expected = np.array([[1, 2, 3, 4], [0.5, 0, 0, 1]], "float32") @ weights(4, 3, 1)
    expected += weights(1, 3, 2)[0]
    assert np.allclose(out["logits"], expected, atol=1e-5)
    assert np.allclose(np.sum(out["probabilities"], axis=1), 1.0, atol=1e-5)


def test_an_int64_scalar_input_is_checked(models: dict[str, Path]) -> None:
    s = session(models["scaled"])
    assert s({"x": [1, 2, 3], "n": 3}, {}) == {"y": [3.0, 6.0, 9.0]}
    with pytest.raises(OnnxInputError) as info:
        s({"x": [1, 2, 3], "n": 2.5}, {})
    assert str(info.value) == (
        "input 'n': expected shape [] dtype int64, given shape [] dtype float64"
    )
    with pytest.raises(
        OnnxInputError,
        match=r"input 'n': expected shape \[\] dtype int64, "
        r"given shape \[1\] dtype int64",
    ):
        s({"x": [1, 2, 3], "n": [3]}, {})
    with pytest.raises(
        OnnxInputError,
        match=r"input 'x': expected shape \[3\] dtype float32, "
        r"given shape \[2\] dtype int64",
    ):
        s({"x": [1, 2], "n": 1}, {})
    with pytest.raises(OnnxInputError, match=r"input 'n': .* given shape \[\] dtype bool"):
        s({"x": [1, 2, 3], "n": True}, {})


def test_a_stateful_two_input_model_runs_step_by_step(models: dict[str, Path]) -> None:
    s = session(models["rnn"])
    wx, wh, wy = weights(4, 8, 3) * 0.5, weights(8, 8, 4) * 0.3, weights(8, 2, 5)
    h = [[0.0] * 8]
    ref = np.zeros((1, 8), "float32")
    for step in range(3):
        x = [[float(step), 1.0, -1.0, 0.5]]
        out = s({"x": x, "h": h}, {})
        ref = np.tanh(np.array(x, "float32") @ wx + ref @ wh)
        assert np.allclose(out["h_out"], ref, atol=1e-5)
        assert np.allclose(out["y"], ref @ wy, atol=1e-4)
        h = out["h_out"]
    # Dynamic batch: two sequences at once.
    two = s({"x": [[1, 1, 1, 1], [0, 0, 0, 0]], "h": [[0] * 8, [0] * 8]}, {})
    assert np.array(two["y"]).shape == (2, 2)
    with pytest.raises(
        OnnxInputError,
        match=r"input 'h': expected shape \[batch, 8\] dtype float32, "
        r"given shape \[1, 7\] dtype int64",
    ):
        s({"x": [[1, 1, 1, 1]], "h": [[0] * 7]}, {})
    with pytest.raises(OnnxInputError, match=r"missing h; the model's inputs are \['x', 'h'\]"):
        s({"x": [[1, 1, 1, 1]]}, {})
    with pytest.raises(OnnxInputError, match=r"unknown state; the model's inputs"):
        s({"x": [[1, 1, 1, 1]], "h": [[0] * 8], "state": 1}, {})


def test_npy_inputs_must_have_the_exact_dtype(models: dict[str, Path]) -> None:
    s = session(models["scaled"])
    out = s({"x": npy(np.array([1, 2, 3], "float32")), "n": npy(np.array(2, "int64"))}, {})
    assert out == {"y": [2.0, 4.0, 6.0]}
    with pytest.raises(
        OnnxInputError,
        match=r"input 'x': expected shape \[3\] dtype float32, "
        r"given shape \[3\] dtype float64 \(.npy\)",
    ):
        s({"x": npy(np.array([1, 2, 3], "float64")), "n": 2}, {})
    with pytest.raises(OnnxInputError, match=r"npy_b64 is not a base64 \.npy file"):
        s({"x": {"npy_b64": "bm90IG5weQ=="}, "n": 2}, {})
    with pytest.raises(OnnxInputError, match=r"must be \{\"npy_b64\""):
        s({"x": {"data": [1, 2, 3]}, "n": 2}, {})


def test_ragged_lists_and_non_objects_are_refused(models: dict[str, Path]) -> None:
    s = session(models["classifier"])
    with pytest.raises(OnnxInputError, match=r"input 'features': .* nested lists of uneven"):
        s({"features": [[1, 2, 3, 4], [1, 2]]}, {})
    with pytest.raises(
        OnnxInputError,
        match=r"takes a JSON object mapping each model input "
        r"\(features\)",
    ):
        s([[1, 2, 3, 4]], {})
    with pytest.raises(OnnxInputError, match=r"given shape .* dtype str"):
        s({"features": [["a", "b", "c", "d"]]}, {})


def test_float16_inputs_are_cast_from_json_numbers(models: dict[str, Path]) -> None:
    out = session(models["fp16"])({"x": [[1, 0, 0, 0]]}, {})
    assert np.allclose(out["y"], weights(4, 3, 8).astype("float16")[0:1], atol=1e-2)


def test_the_int8_model_agrees_with_its_fp32_source(models: dict[str, Path]) -> None:
    x = {"features": np.random.default_rng(0).normal(size=(8, 64)).round(3).tolist()}
    fp32 = np.array(session(models["fp32_mlp"])(x, {})["probabilities"])
    int8 = np.array(session(models["int8"])(x, {})["probabilities"])
    assert np.abs(fp32 - int8).max() < 0.05
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.75


# -- classes and text ------------------------------------------------------------------------


def test_classes_turn_probabilities_into_label_and_scores(models: dict[str, Path]) -> None:
    s = session(models["classifier"], classes=["a", "b", "c"])
    assert s.scores_output == "probabilities"
    one = s({"features": [[1, 2, 3, 4]]}, {})
    assert set(one) == {"label", "scores"} and one["label"] in ("a", "b", "c")
    assert abs(sum(one["scores"].values()) - 1) < 1e-5
    two = s({"features": [[1, 2, 3, 4], [4, 3, 2, 1]]}, {})
    assert isinstance(two, list) and len(two) == 2


def test_logits_are_softmaxed(models: dict[str, Path]) -> None:
    s = session(models["logits"], classes=["a", "b", "c"])
    out = s({"features": [[1, 2, 3, 4]]}, {})
    assert abs(sum(out["scores"].values()) - 1) < 1e-5
    raw = session(models["logits"])({"features": [[1, 2, 3, 4]]}, {})["scores"][0]
    assert out["label"] == "abc"[int(np.argmax(raw))]


def test_text_goes_through_the_string_graph(models: dict[str, Path]) -> None:
    s = session(models["text"], "text", CLASSES)
    assert s({"text": "I LOVE it, great!"}, {})["label"] == "positive"
    assert s("awful and broken", {})["label"] == "negative"
    labels = [r["label"] for r in s(["fine", "terrible", "happy"], {})]
    assert labels == ["neutral", "negative", "positive"]
    with pytest.raises(OnnxInputError, match="takes a string"):
        s(42, {})
    with pytest.raises(OnnxInputError, match="takes a string"):
        s([], {})


def test_a_class_count_that_does_not_match_the_output_fails_to_load(
    models: dict[str, Path],
) -> None:
    with pytest.raises(
        OnnxLoadError,
        match=r"output.classes has 4 labels .* 'probabilities' "
        r"has 3 columns",
    ):
        session(models["text"], "text", [*CLASSES, "spam"])


def test_text_format_needs_a_string_input(models: dict[str, Path]) -> None:
    with pytest.raises(
        OnnxLoadError,
        match=r"exactly one input, of type tensor\(string\); this "
        r"model has: features tensor\(float\)",
    ):
        session(models["classifier"], "text", ["a", "b", "c"])


def test_outputs_without_probabilities_cannot_have_classes(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["same"])],
        "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("same", TensorProto.INT64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "ints.onnx"))
    assert session(tmp_path / "ints.onnx")({"ids": [1, 2]}, {}) == {"same": [1, 2]}
    with pytest.raises(
        OnnxLoadError,
        match=r"needs a float \(probability\) output; this model "
        r"has: same tensor\(int64\)",
    ):
        session(tmp_path / "ints.onnx", classes=["a", "b"])


# -- the in-process platform (Pyodide-like): same executor, no worker ------------------------


def test_in_process_executor_keeps_one_session(models: dict[str, Path], tmp_path: Path) -> None:
    agent = onnx_agent(models["text"], input_format="text", classes=CLASSES, max_length=8)
    ex = make_executor(agent, InProcessPlatform(), tmp_path)
    before = onnx_session.SESSIONS_CREATED
    ctx = InvocationContext("k", timeout=10)
    # max_length 8 cuts each text to its first 8 characters before the model sees it.
    assert ex.invoke("terrible things", ctx)["label"] == "negative"
    assert ex.invoke("great", ctx)["label"] == "positive"
    assert ex.invoke("xx great", ctx)["label"] == "positive"
    assert ex.invoke("xxxxxxxx great", ctx)["scores"]["positive"] == pytest.approx(1 / 3)
    assert before + 1 == onnx_session.SESSIONS_CREATED
    assert ex.last_meta["served"] == 4  # type: ignore[attr-defined]
    with pytest.raises(AgentError, match=r"takes a string"):
        ex.invoke(7, ctx)
    ex.close()
