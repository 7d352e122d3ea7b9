"""models/build_text_classifier.py: the shipped text-classifier-lite, built for real into tmp_path.

Accuracy is recomputed here from the corpus and the int8 file (not read from the build report),
the graph is inspected for real int8 weights, and a second build must give identical bytes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edge_min.config import load_agent_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "models" / "build_text_classifier.py"
NAME = "text-classifier-lite"
CLASSES = ["positive", "negative", "neutral"]


def _load_script() -> ModuleType:
    # models/ is a folder of build tools, not a package: load the script by path.
    spec = importlib.util.spec_from_file_location("build_text_classifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def built(builder: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("model")
    report = builder.build(out)
    return {"out": out, "report": report}


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _test_rows() -> list[tuple[str, str]]:
    # Read the TSV independently of the build script's parser.
    lines = (ROOT / "models" / "corpus" / "feedback.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["split", "label", "text"]
    rows = [line.split("\t") for line in lines[1:]]
    return [(label, text) for split, label, text in rows if split == "test"]


def test_corpus_is_balanced_with_a_fifth_held_out() -> None:
    lines = (ROOT / "models" / "corpus" / "feedback.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    texts = [text for _, _, text in rows]
    assert len(texts) == len(set(texts)), "duplicate sentences would leak between train and test"
    for label in CLASSES:
        of_class = [split for split, lab, _ in rows if lab == label]
        assert 150 <= len(of_class) <= 300
        assert 0.15 <= of_class.count("test") / len(of_class) <= 0.25


def test_int8_model_is_accurate_on_held_out_rows(built: dict[str, Any]) -> None:
    rows = _test_rows()
    sess = _session(built["out"] / f"{NAME}.onnx")
    probs, label = sess.run(None, {"text": np.array([t for _, t in rows], dtype=object)})
    want = np.array([CLASSES.index(lab) for lab, _ in rows])
    accuracy = float((probs.argmax(axis=1) == want).mean())
    assert accuracy >= 0.80, accuracy
    assert (label == probs.argmax(axis=1)).all()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert built["report"]["accuracy"]["int8"] == pytest.approx(accuracy)


def test_graph_has_int8_weights_and_integer_matmul(built: dict[str, Any]) -> None:
    model = onnx.load(str(built["out"] / f"{NAME}.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert "MatMul" not in ops, "the float linear layer should be gone"
    int8 = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    assert any(len(t.dims) == 2 and t.dims[1] == 3 for t in int8), [t.name for t in int8]
    # The text handling is inside the graph.
    assert {"StringNormalizer", "Tokenizer", "TfIdfVectorizer"} <= ops
    fp32 = onnx.load(str(built["out"] / f"{NAME}-fp32.onnx"))
    assert not [t for t in fp32.graph.initializer if t.data_type == TensorProto.INT8]


def test_graph_interface_and_metadata(built: dict[str, Any]) -> None:
    model = onnx.load(str(built["out"] / f"{NAME}.onnx"))
    sess = _session(built["out"] / f"{NAME}.onnx")
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type) == ("text", "tensor(string)")
    outs = {o.name: o.type for o in sess.get_outputs()}
    assert outs == {"probabilities": "tensor(float)", "label": "tensor(int64)"}
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    assert meta["input_hash"] == built["report"]["input_hash"]


def test_int8_file_is_smaller_than_fp32(built: dict[str, Any]) -> None:
    out = built["out"]
    int8 = (out / f"{NAME}.onnx").stat().st_size
    fp32 = (out / f"{NAME}-fp32.onnx").stat().st_size
    assert int8 < fp32
    assert built["report"]["size_bytes"] == {"int8": int8, "fp32": fp32}


def test_report_has_what_the_issue_asks_for(built: dict[str, Any]) -> None:
    out = built["out"]
    report = json.loads((out / f"{NAME}.json").read_text(encoding="utf-8"))
    assert report["classes"] == CLASSES
    assert report["opset"] == {"ai.onnx": 18, "com.microsoft": 1}
    assert report["accuracy"]["fp32"] >= 0.80 and report["accuracy"]["int8"] >= 0.80
    for precision in ("fp32", "int8"):
        assert report["latency_ms"][precision]["mean"] > 0
    assert report["latency_ms"]["calls"] == 200
    assert report["latency_ms"]["intra_op_threads"] == 2
    assert len(report["input_hash"]) == 64


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The update bricked my gateway, terrible", "negative"),
        ("Works perfectly, love it", "positive"),
        ("The sensor keeps crashing and support never answers.", "negative"),
        ("Great support, they fixed it within the hour.", "positive"),
        ("The gateway is installed in building 2.", "neutral"),
        ("How do I change the reporting interval?", "neutral"),
    ],
)
def test_obvious_sentences(built: dict[str, Any], text: str, label: str) -> None:
    sess = _session(built["out"] / f"{NAME}.onnx")
    probs, _ = sess.run(None, {"text": np.array([text], dtype=object)})
    assert CLASSES[int(probs[0].argmax())] == label, dict(zip(CLASSES, probs[0], strict=True))


def test_empty_and_unknown_text_still_give_a_distribution(built: dict[str, Any]) -> None:
    sess = _session(built["out"] / f"{NAME}.onnx")
    probs, label = sess.run(None, {"text": np.array(["", "!!! ???", "zzqx vrrm"], dtype=object)})
    assert probs.shape == (3, 3) and label.shape == (3,)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_two_builds_give_identical_bytes(
    builder: ModuleType, built: dict[str, Any], tmp_path: Path
) -> None:
    again = builder.build(tmp_path)
    for name in (f"{NAME}.onnx", f"{NAME}-fp32.onnx"):
        assert (tmp_path / name).read_bytes() == (built["out"] / name).read_bytes(), name
    assert again["input_hash"] == built["report"]["input_hash"]


def test_cli_fails_below_the_accuracy_bar(builder: ModuleType, tmp_path: Path) -> None:
    # A corpus whose test labels are rotated cannot reach 80%: the CLI must exit 1.
    src = (ROOT / "models" / "corpus" / "feedback.tsv").read_text(encoding="utf-8").splitlines()
    rotated = [src[0]]
    for line in src[1:]:
        split, label, text = line.split("\t")
        if split == "test":
            label = CLASSES[(CLASSES.index(label) + 1) % 3]
        rotated.append(f"{split}\t{label}\t{text}")
    corpus = tmp_path / "rotated.tsv"
    corpus.write_text("\n".join(rotated) + "\n", encoding="utf-8")
    assert builder.main(["--out", str(tmp_path / "out"), "--corpus", str(corpus)]) == 1
    assert builder.main(["--out", str(tmp_path / "ok")]) == 0


def test_shipped_agent_config_points_at_the_built_model() -> None:
    cfg = load_agent_config(ROOT / "models" / f"{NAME}.yaml")
    assert cfg.name == NAME and cfg.version == "1.0.0"
    assert cfg.model is not None
    assert Path(cfg.model.path) == ROOT / "models" / "out" / f"{NAME}.onnx"
    assert (cfg.model.precision, cfg.model.format, cfg.model.type) == ("int8", "onnx", "quantized")
    assert cfg.runtime.executor == "onnxruntime" and cfg.runtime.threads == 2
    assert cfg.input.format == "text" and cfg.input.max_length == 512
    assert list(cfg.output.classes) == CLASSES
