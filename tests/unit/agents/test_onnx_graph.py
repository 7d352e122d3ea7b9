"""The onnxruntime executor's add-time side: graph reading, precision, paths, text limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.agents.onnx import (
    NotOnnx,
    check_model_file,
    model_candidates,
    prepare_onnx_input,
    read_graph_summary,
    resolve_model_path,
    storage_models_dir,
)
from edge_min.agents.onnx_session import (
    CPU,
    OnnxLoadError,
    label_row,
    pick_providers,
    score_rows,
)
from edge_min.errors import AgentError
from tests.fixtures.onnx import build_models, onnx_agent


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("onnx"))


# -- reading the graph -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "precision"),
    [
        ("classifier", "fp32"),
        ("text", "fp32"),
        ("scaled", "fp32"),
        ("rnn", "fp32"),
        ("fp32_mlp", "fp32"),
        ("int8", "int8"),
        ("fp16", "fp16"),
    ],
)
def test_the_graph_says_its_precision(models: dict[str, Path], name: str, precision: str) -> None:
    assert read_graph_summary(models[name].read_bytes()).precision() == precision


def test_a_quantized_graph_names_its_ops_and_weights(models: dict[str, Path]) -> None:
    summary = read_graph_summary(models["int8"].read_bytes())
    assert summary.quantized_ops() == ["DynamicQuantizeLinear", "MatMulInteger"]
    assert summary.count(2, 3) >= 2  # the uint8 weights and their zero points
    text = summary.describe()
    assert "uint8" in text and "MatMulInteger" in text
    plain = read_graph_summary(models["text"].read_bytes())
    assert {"StringNormalizer", "Tokenizer", "TfIdfVectorizer", "Softmax"} <= plain.ops
    assert plain.describe() == "initializers: 1 float32; no quantized ops"


@pytest.mark.parametrize(
    "data",
    [b"", b"not an onnx model at all\n" * 10, b"\x00\x01\x02", b"\x08\x07", b"PK\x03\x04zip"],
)
def test_garbage_is_not_onnx(data: bytes) -> None:
    with pytest.raises(NotOnnx):
        read_graph_summary(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_not_onnx(data: bytes) -> None:
    try:
        summary = read_graph_summary(data)
    except NotOnnx:
        return
    assert summary.ir_version > 0


def test_a_truncated_model_is_not_onnx(models: dict[str, Path]) -> None:
    data = models["rnn"].read_bytes()
    with pytest.raises(NotOnnx):
        read_graph_summary(data[: len(data) // 2])


# -- add-time file checks --------------------------------------------------------------------


def test_precision_mismatch_names_what_was_found(models: dict[str, Path]) -> None:
    with pytest.raises(AgentError, match=r"model.precision is int8 but .* looks fp32") as info:
        check_model_file(
            onnx_agent(models["classifier"], precision="int8"), str(models["classifier"])
        )
    assert "initializers: 2 float32; no quantized ops" in str(info.value)
    assert "set model.precision: fp32" in str(info.value)
    with pytest.raises(AgentError, match=r"is fp32 but .* looks int8 .*MatMulInteger"):
        check_model_file(onnx_agent(models["int8"], precision="fp32"), str(models["int8"]))
    with pytest.raises(AgentError, match=r"is fp16 but .* looks fp32"):
        check_model_file(onnx_agent(models["rnn"], precision="fp16"), str(models["rnn"]))
    assert check_model_file(onnx_agent(models["fp16"], precision="fp16"), str(models["fp16"]))


def test_a_model_larger_than_max_storage_is_refused(models: dict[str, Path]) -> None:
    agent = onnx_agent(models["int8"], precision="int8", max_storage="1KB")
    with pytest.raises(AgentError, match=r"larger than resources.max_storage 1KB"):
        check_model_file(agent, str(models["int8"]))


def test_garbage_file_is_refused_as_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\xff\xfe garbage " * 100)
    with pytest.raises(AgentError, match=r"is not an ONNX model"):
        check_model_file(onnx_agent(bad), str(bad))


# -- model.path ------------------------------------------------------------------------------


def test_storage_models_dir_is_known_only_under_the_runtime_layout(tmp_path: Path) -> None:
    assert storage_models_dir(tmp_path / "tmp" / "agents") == tmp_path.resolve() / "models"
    assert storage_models_dir(tmp_path / "elsewhere") is None
    assert storage_models_dir(None) is None


def test_a_relative_path_falls_back_to_the_storage_models_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "models" / "sub").mkdir(parents=True)
    (root / "models" / "sub" / "m.onnx").write_bytes(b"x")
    work_root = root / "tmp" / "agents"
    # From a file: resolved beside the file first, then under <root>/models/.
    agent = onnx_agent("sub/m.onnx", source=str(tmp_path / "cfg" / "agent.yaml"))
    assert agent.model.path == str(tmp_path / "cfg" / "sub" / "m.onnx")
    assert resolve_model_path(agent, work_root) == str(root.resolve() / "models" / "sub" / "m.onnx")
    # Without a file: under models/ first, then the working directory.
    bare = onnx_agent("sub/m.onnx")
    assert model_candidates(bare, work_root) == [
        str(root.resolve() / "models" / "sub" / "m.onnx"),
        "sub/m.onnx",
    ]
    assert model_candidates(bare, None) == ["sub/m.onnx"]
    # Beside the file wins when it exists there.
    (tmp_path / "cfg" / "sub").mkdir(parents=True)
    (tmp_path / "cfg" / "sub" / "m.onnx").write_bytes(b"y")
    assert resolve_model_path(agent, work_root) == str(tmp_path / "cfg" / "sub" / "m.onnx")


def test_a_missing_model_lists_where_it_was_looked_for(tmp_path: Path) -> None:
    agent = onnx_agent(tmp_path / "absent.onnx")
    with pytest.raises(AgentError, match=r"model.path file not found \(looked in: .*absent.onnx\)"):
        resolve_model_path(agent, tmp_path / "tmp" / "agents")
    outside = onnx_agent("/nowhere/x.onnx")
    assert model_candidates(outside, tmp_path / "tmp" / "agents") == ["/nowhere/x.onnx"]


# -- text limits -----------------------------------------------------------------------------


def test_long_text_is_truncated_by_default() -> None:
    agent = onnx_agent("/m.onnx", input_format="text", classes=["a"], max_length=5)
    assert prepare_onnx_input(agent, "abcdefgh") == "abcde"
    assert prepare_onnx_input(agent, {"text": "abcdefgh", "x": 1}) == {"text": "abcde", "x": 1}
    assert prepare_onnx_input(agent, ["abcdefgh", "ab"]) == ["abcde", "ab"]
    assert prepare_onnx_input(agent, "abc") == "abc"


def test_long_text_is_rejected_without_truncate() -> None:
    agent = onnx_agent("/m.onnx", input_format="text", classes=["a"], max_length=5, truncate=False)
    assert prepare_onnx_input(agent, "abcde") == "abcde"
    with pytest.raises(AgentError, match=r"input text is 8 characters, over input.max_length 5"):
        prepare_onnx_input(agent, "abcdefgh")
    with pytest.raises(AgentError, match=r"set input\.truncate: true"):
        prepare_onnx_input(agent, {"text": "abcdefgh"})


def test_tensor_input_is_left_alone() -> None:
    agent = onnx_agent("/m.onnx", max_length=2)
    assert prepare_onnx_input(agent, {"x": "long string"}) == {"x": "long string"}


# -- providers and scores --------------------------------------------------------------------


def test_providers_follow_acceleration_and_fallback() -> None:
    assert pick_providers("cpu", False, [CPU]) == ([CPU], [])
    assert pick_providers("gpu", False, ["CUDAExecutionProvider", CPU]) == (
        ["CUDAExecutionProvider", CPU],
        [],
    )
    assert pick_providers("npu", True, ["OpenVINOExecutionProvider", CPU])[0][0] == (
        "OpenVINOExecutionProvider"
    )
    providers, warnings = pick_providers("gpu", True, ["AzureExecutionProvider", CPU])
    assert providers == [CPU] and "running on CPUExecutionProvider" in warnings[0]
    with pytest.raises(OnnxLoadError, match=r"needs one of .*QNNExecutionProvider.* has only "):
        pick_providers("npu", False, [CPU])


def test_normalised_rows_are_kept_and_logits_are_softmaxed() -> None:
    kept = label_row([0.2, 0.7, 0.1], ["a", "b", "c"])
    assert kept == {"label": "b", "scores": {"a": 0.2, "b": 0.7, "c": 0.1}}
    soft = label_row([2.0, 0.0, -1.0], ["a", "b", "c"])
    assert soft["label"] == "a" and abs(sum(soft["scores"].values()) - 1) < 1e-5
    assert soft["scores"]["a"] == pytest.approx(0.843795, abs=1e-6)
    # In [0, 1] but not summing to 1: logits, softmaxed.
    assert label_row([0.5, 0.5, 0.5], ["a", "b", "c"])["scores"]["a"] == pytest.approx(1 / 3)


def test_score_rows_read_zipmap_and_check_width() -> None:
    assert score_rows([{0: 0.1, 1: 0.9}], 2) == [[0.1, 0.9]]
    with pytest.raises(ValueError, match=r"returned 2 scores per row but output\.classes has 3"):
        score_rows([{0: 0.1, 1: 0.9}], 3)
