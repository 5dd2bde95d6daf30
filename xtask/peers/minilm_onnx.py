"""all-MiniLM-L6-v2 for ONNX Runtime, built from the model directory's safetensors with
onnx.helper (no PyTorch): BERT's operators as Hugging Face's export has them (Gather,
LayerNormalization, MatMul + Add, Softmax, the Erf GELU, masked mean pooling, L2 normalization),
in f32, and ONNX Runtime's `quantize_dynamic` of it (QInt8 weights per channel, u8 activations).
peers.py times both (`ort_minilm_f32`, `ort_minilm_int8`) against `quant-bench`'s
`minilm_f32` and `minilm_w8a8` on the same token batches.

Usage: python minilm_onnx.py MODEL_DIR SENTENCES REFERENCE.bin
  checks the f32 graph against sentence-transformers' embeddings of every line (REFERENCE, as
  xtask/fixtures/minilm_reference.py writes) and prints ONNX Runtime's int8 model's mean and
  minimum cosine to the f32 graph on the evaluation lines (every line but each fourth),
  the figure `quant eval`'s W8A8 rows compare with.
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"]).copy()
    return out


def build(model_dir):
    """The f32 encoder as an ONNX model (opset 17): inputs input_ids, attention_mask (int64,
    batch x length), output embeddings (batch x hidden, unit length)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    h, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps = cfg.get("layer_norm_eps", 1e-12)
    d = h // heads
    w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def norm(x, prefix, out):
        return node("LayerNormalization", [x, init(f"{prefix}.g", w[f"{prefix}.LayerNorm.weight"]),
                                           init(f"{prefix}.b", w[f"{prefix}.LayerNorm.bias"])], out,
                    axis=-1, epsilon=eps)

    def dense(x, prefix, out):
        m = node("MatMul", [x, init(f"{prefix}.wt", w[f"{prefix}.weight"].T.copy())], out + ".mm")
        return node("Add", [m, init(f"{prefix}.bias", w[f"{prefix}.bias"])], out)

    init("zero", np.array(0, dtype=np.int64))
    init("one", np.array(1, dtype=np.int64))
    init("axis1", np.array([1], dtype=np.int64))
    init("heads_shape", np.array([0, 0, heads, d], dtype=np.int64))
    init("hidden_shape", np.array([0, 0, h], dtype=np.int64))
    init("sqrt_d", np.array(np.sqrt(d), dtype=np.float32))
    init("neg", np.array(-1e4, dtype=np.float32))
    init("f_one", np.array(1.0, dtype=np.float32))
    init("f_half", np.array(0.5, dtype=np.float32))
    init("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    init("tiny", np.array(1e-12, dtype=np.float32))
    init("eps9", np.array(1e-9, dtype=np.float32))
    # Embeddings.
    word = node("Gather", [init("word", w["embeddings.word_embeddings.weight"]), "input_ids"], "emb.word")
    shape = node("Shape", ["input_ids"], "ids.shape")
    length = node("Gather", [shape, "one"], "ids.len")
    pos_ids = node("Range", ["zero", length, "one"], "pos.ids")
    pos = node("Gather", [init("pos", w["embeddings.position_embeddings.weight"]), pos_ids], "emb.pos")
    x = node("Add", [word, pos], "emb.wp")
    x = node("Add", [x, init("type0", w["embeddings.token_type_embeddings.weight"][0])], "emb.sum")
    x = norm(x, "embeddings", "emb.out")
    # The additive mask: 0 on tokens, -1e4 on padding keys, batch x 1 x 1 x length.
    maskf = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    inv = node("Sub", ["f_one", maskf], "mask.inv")
    bias = node("Mul", [inv, "neg"], "mask.neg")
    bias = node("Unsqueeze", [bias, init("axes12", np.array([1, 2], dtype=np.int64))], "mask.bias")
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = dense(x, f"{p}.attention.self.query", f"l{i}.q")
        k = dense(x, f"{p}.attention.self.key", f"l{i}.k")
        v = dense(x, f"{p}.attention.self.value", f"l{i}.v")
        q = node("Transpose", [node("Reshape", [q, "heads_shape"], f"l{i}.q4")], f"l{i}.qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, "heads_shape"], f"l{i}.k4")], f"l{i}.kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, "heads_shape"], f"l{i}.v4")], f"l{i}.vt", perm=[0, 2, 1, 3])
        s = node("Div", [node("MatMul", [q, k], f"l{i}.qk"), "sqrt_d"], f"l{i}.scaled")
        s = node("Add", [s, bias], f"l{i}.masked")
        a = node("Softmax", [s], f"l{i}.probs", axis=-1)
        c = node("Transpose", [node("MatMul", [a, v], f"l{i}.ctx4")], f"l{i}.ctxt", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, "hidden_shape"], f"l{i}.ctx")
        o = dense(c, f"{p}.attention.output.dense", f"l{i}.attn")
        x = norm(node("Add", [x, o], f"l{i}.res1"), f"{p}.attention.output", f"l{i}.norm1")
        f = dense(x, f"{p}.intermediate.dense", f"l{i}.ff1")
        g = node("Erf", [node("Div", [f, "sqrt2"], f"l{i}.gd")], f"l{i}.erf")
        g = node("Mul", [f, node("Add", [g, "f_one"], f"l{i}.g1")], f"l{i}.gm")
        g = node("Mul", [g, "f_half"], f"l{i}.gelu")
        o = dense(g, f"{p}.output.dense", f"l{i}.ff2")
        x = norm(node("Add", [x, o], f"l{i}.res2"), f"{p}.output", f"l{i}.norm2")
    # Mean pooling over the tokens, then L2 normalization.
    m3 = node("Unsqueeze", [maskf, init("axis2", np.array([2], dtype=np.int64))], "pool.mask")
    summed = node("ReduceSum", [node("Mul", [x, m3], "pool.masked"), "axis1"], "pool.sum", keepdims=0)
    count = node("Max", [node("ReduceSum", [m3, "axis1"], "pool.count0", keepdims=0), "eps9"], "pool.count")
    mean = node("Div", [summed, count], "pool.mean")
    l2 = node("Max", [node("ReduceL2", [mean], "pool.l2", axes=[1], keepdims=1), "tiny"], "pool.norm")
    node("Div", [mean, l2], "embeddings")
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", h])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def quantized(model):
    """ONNX Runtime's quantize_dynamic of `model`: QInt8 weights per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load(dst)


def sentences(path, split):
    """The lines of the split: "calibration" (every fourth, from the first), "evaluation" (the
    others) or "all", as quant-eval splits them."""
    lines = [l.strip() for l in open(path, encoding="utf-8") if l.strip()]
    keep = {"all": lambda i: True, "calibration": lambda i: i % 4 == 0, "evaluation": lambda i: i % 4 != 0}[split]
    return [s for i, s in enumerate(lines) if keep(i)]


def token_batches(model_dir, lines, batch):
    """The lines tokenized by the model's tokenizer.json, batches padded to their longest."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding()
    out = []
    for i in range(0, len(lines), batch):
        enc = tok.encode_batch(lines[i:i + batch])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def embed(sess, batches):
    return np.concatenate([sess.run(None, b)[0] for b in batches])


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main():
    model_dir, sentences_file, reference = sys.argv[1:4]
    f32 = build(model_dir)
    s32 = session(f32, 2)
    ref = np.fromfile(reference, dtype="<f4").reshape(-1, 384)
    got = embed(s32, token_batches(model_dir, sentences(sentences_file, "all"), 32))
    c = cosines(ref, got)
    print(f"ONNX graph (f32) against {reference}: mean cosine {c.mean():.7f}, min {c.min():.7f}")
    assert c.min() >= 0.99999, "the hand-built graph does not reproduce sentence-transformers"
    evals = token_batches(model_dir, sentences(sentences_file, "evaluation"), 32)
    base = embed(s32, evals)
    q = embed(session(quantized(f32), 2), evals)
    c = cosines(base, q)
    print(f"ONNX Runtime quantize_dynamic (QInt8 per channel) against f32: mean 1-cos {1 - c.mean():.3e}, "
          f"max 1-cos {1 - c.min():.3e}, nearest neighbour kept {neighbours(base, q):.3f} over {len(c)} sentences")


def neighbours(a, b):
    """The share of rows whose most similar other row (cosine) is the same in `a` and `b`."""
    def nearest(e):
        e = e.astype(np.float64)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(1)
    return float((nearest(a) == nearest(b)).mean())


if __name__ == "__main__":
    main()
