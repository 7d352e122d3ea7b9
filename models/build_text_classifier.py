"""Build text-classifier-lite: a 3-class feedback classifier as one self-contained ONNX graph.

Reads the shipped corpus (models/corpus/feedback.tsv) and sentiment lexicon
(models/corpus/lexicon.tsv), trains a multinomial logistic regression in numpy on TF-IDF word 1-
and 2-grams plus two lexicon features, and writes to ``--out`` (default models/out/):

- text-classifier-lite-fp32.onnx  the trained graph, float32 weights
- text-classifier-lite.onnx       the same graph quantized to int8 (onnxruntime.quantization)
- text-classifier-lite.json       the build report: held-out accuracy, sizes, latencies, ops

The text handling lives inside the graph, so a caller feeds raw strings and nothing else:

    text [N] string -> StringNormalizer (lowercase) -> com.microsoft Tokenizer (regex tokens,
    start/end marks) -> tokens [N, T], then two branches joined by Concat:
      tokens -> TfIdfVectorizer (IDF mode, word 1-2 grams) -> L2 normalize
      tokens -> TfIdfVectorizer (TF mode, lexicon words) -> c / (c + 1)
    -> MatMul + Add -> Softmax -> probabilities [N, 3] float; ArgMax -> label [N] int64

The lexicon branch counts positive and negative lexicon words (every word of a polarity maps to
the same output column) and squashes each count to c/(c+1). It is what lets a model trained on a
few hundred sentences generalize to sentiment words it never saw in a training sentence: the
n-gram weights learn the corpus, the two lexicon weights learn "how much a sentiment word counts".

Training tokenizes the corpus by running that same front end in onnxruntime, so the features
seen in training are exactly those the graph computes; the build checks it (numpy against
onnxruntime probabilities). Everything is deterministic: no random init (training starts from
zero weights with full-batch gradient steps), a fixed split, a sorted vocabulary; two builds with
the same input hash on the same machine give byte-identical ONNX files.

Usage: python models/build_text_classifier.py [--out DIR]   (exit 1 if accuracy < 0.80)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus" / "feedback.tsv"
LEXICON = HERE / "corpus" / "lexicon.tsv"
POLARITIES = ("positive", "negative")  # the lexicon features' column order
NAME = "text-classifier-lite"
VERSION = "1.0.0"
CLASSES = ("positive", "negative", "neutral")
OPSET = 18
MS_OPSET = 1
MIN_ACCURACY = 0.80

# The front end. "C" because onnxruntime builds a std::locale from this name and the default
# (en_US) is missing on minimal images (ours included); ASCII lowercasing is all we need.
LOCALE = "C"
TOKEN_PATTERN = "[a-z0-9']+"
PAD = "#"  # cannot be a token (the pattern never matches '#'), so it never hits the vocabulary
START, END = "\x02", "\x03"  # the Tokenizer's marks (mark=1); they make "starts with how" a bigram
MAX_N = 2
MIN_DF = 2  # an n-gram seen in a single training sentence is noise, not vocabulary

# Training. Cross-validation on the training rows found accuracy flat (within 0.5%) for L2 from
# 1e-4 to 3e-3, so a fixed value keeps the build fast and free of any selection step.
L2 = 1e-3
STEPS = 400
LEARNING_RATE = 2.0
MOMENTUM = 0.9
NORM_EPS = 1e-6
LATENCY_CALLS = 200
LATENCY_THREADS = 2


def read_corpus(path: Path = CORPUS) -> list[tuple[str, str, str]]:
    """Rows of (split, label, text) from the corpus TSV (header: split, label, text)."""
    rows: list[tuple[str, str, str]] = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["split", "label", "text"]:
            raise ValueError(f"{path}: header must be split<TAB>label<TAB>text, got {header}")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0] not in ("train", "test") or parts[1] not in CLASSES:
                raise ValueError(f"{path}:{lineno}: expected train|test, a class, a text: {line!r}")
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def read_lexicon(path: Path = LEXICON) -> dict[str, int]:
    """word -> polarity column (0 positive, 1 negative) from the lexicon TSV (polarity, word)."""
    words: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["polarity", "word"]:
            raise ValueError(f"{path}: header must be polarity<TAB>word, got {header}")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or parts[0] not in POLARITIES or parts[1] in words:
                raise ValueError(f"{path}:{lineno}: expected a polarity and a new word: {line!r}")
            words[parts[1]] = POLARITIES.index(parts[0])
    return words


def input_hash(corpus: Path = CORPUS, lexicon: Path = LEXICON) -> str:
    """sha256 over what determines the output bytes: data, this script, library versions."""
    h = hashlib.sha256()
    for part in (
        corpus.read_bytes(),
        lexicon.read_bytes(),
        Path(__file__).read_bytes(),
        f"numpy={np.__version__} onnx={onnx.__version__} onnxruntime={ort.__version__}".encode(),
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _front_end_nodes() -> list[onnx.NodeProto]:
    return [
        helper.make_node(
            "StringNormalizer",
            ["text"],
            ["normalized"],
            case_change_action="LOWER",
            is_case_sensitive=0,
            locale=LOCALE,
        ),
        helper.make_node(
            "Tokenizer",
            ["normalized"],
            ["tokens"],
            domain="com.microsoft",
            mark=1,
            mincharnum=1,
            pad_value=PAD,
            tokenexp=TOKEN_PATTERN,
        ),
    ]


def _opsets() -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)]


def _session(model: bytes | str, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Tokens of each text exactly as the graph's front end produces them (pads dropped)."""
    graph = helper.make_graph(
        _front_end_nodes(),
        "front_end",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("tokens", TensorProto.STRING, ["N", "T"])],
    )
    model = helper.make_model(graph, opset_imports=_opsets())
    sess = _session(model.SerializeToString())
    out: list[list[str]] = []
    for text in texts:  # one at a time: batches pad every row to the longest one
        (tokens,) = sess.run(["tokens"], {"text": np.array([text], dtype=object)})
        out.append([t for t in tokens.reshape(-1).tolist() if t != PAD])
    return out


def ngrams(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    """The distinct 1..MAX_N-grams of a token list (the bare marks are not unigrams)."""
    grams: set[tuple[str, ...]] = set()
    for n in range(1, MAX_N + 1):
        for i in range(len(tokens) - n + 1):
            gram = tuple(tokens[i : i + n])
            if n > 1 or gram[0] not in (START, END):
                grams.add(gram)
    return grams


def build_vocabulary(docs: Sequence[set[tuple[str, ...]]]) -> tuple[list[tuple[str, ...]], Any]:
    """N-grams in at least MIN_DF docs, ordered by (n, text), and their smoothed IDF weights."""
    df: dict[tuple[str, ...], int] = {}
    for grams in docs:
        for g in grams:
            df[g] = df.get(g, 0) + 1
    vocab = sorted((g for g, c in df.items() if c >= MIN_DF), key=lambda g: (len(g), g))
    n = len(docs)
    idf = np.array([np.log((1 + n) / (1 + df[g])) + 1.0 for g in vocab], dtype=np.float32)
    return vocab, idf


def featurize(
    docs: Sequence[set[tuple[str, ...]]], vocab: Sequence[tuple[str, ...]], idf: Any
) -> Any:
    """What the graph computes before MatMul: IDF weight where an n-gram occurs, L2-normalized."""
    index = {g: i for i, g in enumerate(vocab)}
    x = np.zeros((len(docs), len(vocab)), dtype=np.float32)
    for row, grams in enumerate(docs):
        for g in grams:
            if g in index:
                x[row, index[g]] = idf[index[g]]
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norm, NORM_EPS)


def lexicon_features(tokens: Sequence[Sequence[str]], lexicon: dict[str, int]) -> Any:
    """What the lexicon branch computes: per polarity, count c of its words, as c / (c + 1)."""
    counts = np.zeros((len(tokens), len(POLARITIES)), dtype=np.float32)
    for row, toks in enumerate(tokens):
        for tok in toks:
            if tok in lexicon:
                counts[row, lexicon[tok]] += 1
    return counts / (counts + 1)


def _softmax(z: Any) -> Any:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(x: Any, y: Any, l2: float) -> tuple[Any, Any]:
    """Multinomial logistic regression by full-batch gradient descent with momentum, from zero."""
    x64 = x.astype(np.float64)
    onehot = np.eye(len(CLASSES))[y]
    w = np.zeros((x.shape[1], len(CLASSES)))
    b = np.zeros(len(CLASSES))
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(STEPS):
        grad = (_softmax(x64 @ w + b) - onehot) / len(y)
        gw = x64.T @ grad + l2 * w
        gb = grad.sum(axis=0)
        vw = MOMENTUM * vw - LEARNING_RATE * gw
        vb = MOMENTUM * vb - LEARNING_RATE * gb
        w, b = w + vw, b + vb
    return w.astype(np.float32), b.astype(np.float32)


def build_graph(
    vocab: Sequence[tuple[str, ...]],
    idf: Any,
    lexicon: dict[str, int],
    w: Any,
    b: Any,
    digest: str,
) -> Any:
    """The fp32 classifier: raw strings in, class probabilities and label index out."""
    lex_words = sorted(lexicon)
    counts = [sum(1 for g in vocab if len(g) == n) for n in range(1, MAX_N + 1)]
    starts = [sum(counts[:n]) for n in range(MAX_N)]
    pool = [tok for g in vocab for tok in g]  # n-grams are stored flat, token by token
    nodes = [
        *_front_end_nodes(),
        helper.make_node(
            "TfIdfVectorizer",
            ["tokens"],
            ["tfidf"],
            mode="IDF",
            min_gram_length=1,
            max_gram_length=MAX_N,
            max_skip_count=0,
            pool_strings=pool,
            ngram_counts=starts,
            ngram_indexes=list(range(len(vocab))),
            weights=idf.tolist(),
        ),
        helper.make_node("ReduceL2", ["tfidf", "axis_1"], ["l2_norm"], keepdims=1),
        helper.make_node("Max", ["l2_norm", "norm_eps"], ["l2_norm_safe"]),
        helper.make_node("Div", ["tfidf", "l2_norm_safe"], ["ngram_features"]),
        helper.make_node(
            "TfIdfVectorizer",
            ["tokens"],
            ["lexicon_counts"],
            mode="TF",
            min_gram_length=1,
            max_gram_length=1,
            max_skip_count=0,
            pool_strings=lex_words,
            ngram_counts=[0],
            ngram_indexes=[lexicon[word] for word in lex_words],  # shared columns: they sum
        ),
        helper.make_node("Add", ["lexicon_counts", "one"], ["lexicon_counts_1"]),
        helper.make_node("Div", ["lexicon_counts", "lexicon_counts_1"], ["lexicon_features"]),
        helper.make_node("Concat", ["ngram_features", "lexicon_features"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array(NORM_EPS, dtype=np.float32), "norm_eps"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(w.astype(np.float32), "weights"),
        numpy_helper.from_array(b.astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        NAME.replace("-", "_"),
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=_opsets(), producer_name="edge_min-models")
    model.ir_version = 9  # onnxruntime 1.17+ reads it; newer IRs would narrow who can load this
    model.doc_string = "Feedback sentiment (positive/negative/neutral) from raw text."
    _set_metadata(model, digest)
    onnx.checker.check_model(model)
    return model


def _set_metadata(model: Any, digest: str) -> None:
    meta = {"name": NAME, "version": VERSION, "classes": json.dumps(list(CLASSES))}
    meta["input_hash"] = digest
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)


def quantize(fp32_path: Path, int8_path: Path, digest: str) -> None:
    """int8 weights for the linear layer (DynamicQuantizeLinear + MatMulInteger at run time)."""
    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a root-level WARNING advising shape-inference pre-processing, which
    # cannot see through the string ops and adds nothing to a single MatMul.
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "int8.onnx"
            quantize_dynamic(
                fp32_path,
                raw,
                op_types_to_quantize=["MatMul"],  # the one layer with weights worth quantizing
                weight_type=QuantType.QInt8,
                per_channel=False,
                # 7-bit weights: x86's AVX2 int8 kernel (VPMADDUBSW, no VNNI) adds u8*s8
                # products in saturating int16 pairs, so full-range weights give other
                # scores there than on VNNI CPUs or in onnxruntime-web; 255 * 64 * 2 < 2**15
                # keeps every kernel exact and the same.
                reduce_range=True,
                extra_options={"MatMulConstBOnly": True},  # weights only, never activations
            )
            model = onnx.load(str(raw))
    finally:
        root.setLevel(level)
    ops = {n.op_type for n in model.graph.node}
    int8 = [t.name for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    if "MatMulInteger" not in ops or not int8:
        raise RuntimeError(f"quantize_dynamic left the linear layer in float: ops {sorted(ops)}")
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.INT8:
            values = numpy_helper.to_array(tensor)
            if abs(int(values.min())) > 64 or int(values.max()) > 64:
                raise RuntimeError(
                    f"int8 weights {tensor.name} span {values.min()}..{values.max()}, past the "
                    "7-bit range that keeps AVX2's saturating int8 kernel exact"
                )
    _set_metadata(model, digest)  # quantize_dynamic does not promise to keep metadata
    onnx.checker.check_model(model)
    int8_path.write_bytes(model.SerializeToString())


def predict(model_path: Path | str, texts: Sequence[str]) -> Any:
    """Probabilities [N, 3] from running the ONNX file in onnxruntime on ``texts``."""
    sess = _session(str(model_path))
    (probs,) = sess.run(["probabilities"], {"text": np.array(list(texts), dtype=object)})
    return probs


def latency_ms(model_path: Path, text: str, calls: int = LATENCY_CALLS) -> dict[str, float]:
    """Mean and median wall time (ms) of one single-sentence ``run`` on a warm session."""
    sess = _session(str(model_path), threads=LATENCY_THREADS)
    feed = {"text": np.array([text], dtype=object)}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000.0
    return {"mean": round(float(ms.mean()), 4), "p50": round(float(np.median(ms)), 4)}


def _io(model: Any) -> dict[str, list[dict[str, Any]]]:
    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            dtype = TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
            out.append({"name": v.name, "dtype": dtype, "shape": dims})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def build(
    out_dir: Path | str, corpus: Path = CORPUS, lexicon_path: Path = LEXICON
) -> dict[str, Any]:
    """Train, export, quantize, evaluate; write the three outputs and return the report."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = input_hash(corpus, lexicon_path)
    rows = read_corpus(corpus)
    lexicon = read_lexicon(lexicon_path)
    texts = [text for _, _, text in rows]
    labels = np.array([CLASSES.index(label) for _, label, _ in rows])
    is_test = np.array([split == "test" for split, _, _ in rows])
    tokens = tokenize(texts)
    docs = [ngrams(toks) for toks in tokens]
    train_docs = [d for d, t in zip(docs, is_test, strict=True) if not t]
    vocab, idf = build_vocabulary(train_docs)
    x = np.hstack([featurize(docs, vocab, idf), lexicon_features(tokens, lexicon)])
    w, b = train(x[~is_test], labels[~is_test], L2)

    fp32_path, int8_path = out / f"{NAME}-fp32.onnx", out / f"{NAME}.onnx"
    fp32_model = build_graph(vocab, idf, lexicon, w, b, digest)
    fp32_path.write_bytes(fp32_model.SerializeToString())
    quantize(fp32_path, int8_path, digest)

    # The graph must compute what was trained: numpy and onnxruntime agree on every row.
    drift = float(np.abs(predict(fp32_path, texts) - _softmax(x @ w + b)).max())
    if drift > 1e-4:
        raise RuntimeError(f"the fp32 graph differs from the numpy model by {drift:.2e}")

    test_texts = [t for t, s in zip(texts, is_test, strict=True) if s]
    accuracy = {
        p.stem.replace(f"{NAME}-", "").replace(NAME, "int8"): float(
            (predict(p, test_texts).argmax(axis=1) == labels[is_test]).mean()
        )
        for p in (fp32_path, int8_path)
    }
    probe = "The gateway keeps dropping its connection since the last firmware update."
    int8_model = onnx.load(str(int8_path))
    report: dict[str, Any] = {
        "name": NAME,
        "version": VERSION,
        "classes": list(CLASSES),
        "opset": {"ai.onnx": OPSET, "com.microsoft": MS_OPSET},
        "input_hash": digest,
        "corpus": {
            "path": os.path.relpath(corpus, HERE) if corpus.is_relative_to(HERE) else str(corpus),
            "train": int((~is_test).sum()),
            "test": int(is_test.sum()),
        },
        "features": {
            "ngrams": len(vocab),
            "max_n": MAX_N,
            "min_df": MIN_DF,
            "lexicon_words": len(lexicon),
        },
        "training": {
            "l2": L2,
            "steps": STEPS,
            "accuracy": float(((x[~is_test] @ w + b).argmax(axis=1) == labels[~is_test]).mean()),
        },
        "accuracy": {"fp32": accuracy["fp32"], "int8": accuracy["int8"], "min": MIN_ACCURACY},
        "size_bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        "latency_ms": {
            "fp32": latency_ms(fp32_path, probe),
            "int8": latency_ms(int8_path, probe),
            "calls": LATENCY_CALLS,
            "intra_op_threads": LATENCY_THREADS,
            "text": probe,
        },
        "graph": _io(int8_model),
        "int8_ops": sorted({n.op_type for n in int8_model.graph.node}),
        "versions": {
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    report["build_seconds"] = round(time.perf_counter() - started, 3)
    (out / f"{NAME}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build into --out; exit 1 when held-out accuracy is below MIN_ACCURACY."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", default=str(HERE / "out"), help="output folder (default models/out)"
    )
    parser.add_argument("--corpus", default=str(CORPUS), help="labelled TSV: split, label, text")
    parser.add_argument("--lexicon", default=str(LEXICON), help="TSV: polarity, word")
    args = parser.parse_args(argv)
    report = build(args.out, Path(args.corpus), Path(args.lexicon))
    acc, size, lat = report["accuracy"], report["size_bytes"], report["latency_ms"]
    print(
        f"{NAME}: accuracy fp32 {acc['fp32']:.3f} int8 {acc['int8']:.3f} | "
        f"size fp32 {size['fp32']} B int8 {size['int8']} B | "
        f"latency fp32 {lat['fp32']['mean']:.3f} ms int8 {lat['int8']['mean']:.3f} ms | "
        f"{report['build_seconds']:.1f} s -> {args.out}"
    )
    if min(acc["fp32"], acc["int8"]) < MIN_ACCURACY:
        print(f"error: held-out accuracy below {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
