"""Peer measurements for `cargo xtask bench --peers`: ONNX Runtime and NumPy on the shapes
`quant-bench` times, printing the same JSON lines (case, shape, threads, seconds, work).

Run by xtask inside the venv it creates under target/.

Usage:
  peers.py THREADS           every case on every shape, once
  peers.py --serve THREADS   read `CASE SHAPE` lines on stdin, answer each with one JSON line
                             (inputs and sessions are built once, then kept); xtask drives it
                             this way to interleave the peers' measurements with ours

NumPy's thread count comes from OPENBLAS_NUM_THREADS, which xtask sets before starting us;
ONNX Runtime's from THREADS (intra-op threads of each session).
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GEMM_SHAPES = [
    (256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
    (1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (1, 4096, 11008),
]
GEMM_CASES = ["ort_u8i8_saturating", "ort_u8i8_exact", "ort_i8i8", "numpy_f32"]
QUANT_LEN = 1 << 24
QUANT_CASES = ["ort_quantize_f32_i8", "ort_dequantize_i8_f32"]
MISMATCH_CASES = ["ort_u8i8_saturating_mismatch", "ort_u8i8_exact_mismatch"]
# ONNX Runtime's MatMulNBits (contrib domain): 4-bit weights, block 32 or 128, accuracy level 4
# (activations quantized to int8 per block) or 0 (float activations).
NBITS_SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (1, 4096, 11008)]
NBITS_CASES = ["ort_nbits_b32_acc4", "ort_nbits_b32_acc0", "ort_nbits_b128_acc4", "ort_nbits_b128_acc0"]


def median_seconds(f, budget):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget and len(times) < 200):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def line(case, shape, threads, seconds, work):
    return json.dumps({"case": case, "shape": shape, "threads": threads, "seconds": seconds, "work": work})


def session(model, threads, exact=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if exact:
        # Converts u8 x s8 with constant weights to u8 x u8 on CPUs without VNNI, avoiding the
        # vpmaddubsw i16 saturation (onnxruntime PR #12088).
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def matmul_integer_model(m, k, n, a_type, b):
    a = helper.make_tensor_value_info("a", a_type, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    inits = [numpy_helper.from_array(b, "b")]
    inputs = ["a", "b"]
    if a_type == TensorProto.UINT8:
        inits.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero"))
        inputs.append("a_zero")
    node = helper.make_node("MatMulInteger", inputs, ["y"])
    graph = helper.make_graph([node], "g", [a], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def quant_model(op, in_type, out_type, scale, zp):
    xin = helper.make_tensor_value_info("x", in_type, [QUANT_LEN])
    out = helper.make_tensor_value_info("y", out_type, [QUANT_LEN])
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    g = helper.make_graph([helper.make_node(op, ["x", "s", "z"], ["y"])], op, [xin], [out], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def nbits_model(m, k, n, block, accuracy, rng):
    """MatMulNBits with random 4-bit weights: B uint8 [N, K/block, block/2] (low nibble
    first), scales [N * K/block], no zero points (8 for 4 bits)."""
    blocks = k // block
    b = rng.integers(0, 256, size=(n, blocks, block // 2), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.01 + 0.001).astype(np.float32)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(scales, "s")]
    node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft",
                            K=k, N=n, bits=4, block_size=block, accuracy_level=accuracy)
    graph = helper.make_graph([node], "g", [a], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])


def prepare(case, shape, threads):
    """A zero-argument function running the case once, and its work (operations or elements)."""
    rng = np.random.default_rng(7)
    if case in GEMM_CASES:
        m, k, n = (int(d) for d in shape.split("x"))
        work = 2.0 * m * k * n
        if case == "numpy_f32":
            af = rng.standard_normal((m, k), dtype=np.float32)
            bf = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), dtype=np.float32)
            return (lambda: np.matmul(af, bf, out=out)), work
        b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
        if case == "ort_i8i8":
            a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
            s = session(matmul_integer_model(m, k, n, TensorProto.INT8, b), threads)
        else:
            a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
            s = session(matmul_integer_model(m, k, n, TensorProto.UINT8, b), threads, case == "ort_u8i8_exact")
        return (lambda: s.run(None, {"a": a})), work
    if case in NBITS_CASES:
        m, k, n = (int(d) for d in shape.split("x"))
        block = 32 if "_b32_" in case else 128
        accuracy = 4 if case.endswith("acc4") else 0
        s = session(nbits_model(m, k, n, block, accuracy, rng), threads)
        a = rng.standard_normal((m, k), dtype=np.float32)
        return (lambda: s.run(None, {"a": a})), 2.0 * m * k * n
    if case in QUANT_CASES:
        x = rng.standard_normal(QUANT_LEN, dtype=np.float32)
        scale = np.array(float(np.abs(x).max()) / 127.0, dtype=np.float32)
        zp = np.array(0, dtype=np.int8)
        q = session(quant_model("QuantizeLinear", TensorProto.FLOAT, TensorProto.INT8, scale, zp), threads)
        if case == "ort_quantize_f32_i8":
            return (lambda: q.run(None, {"x": x})), QUANT_LEN
        codes = q.run(None, {"x": x})[0]
        d = session(quant_model("DequantizeLinear", TensorProto.INT8, TensorProto.FLOAT, scale, zp), threads)
        return (lambda: d.run(None, {"x": codes})), QUANT_LEN
    raise ValueError(f"unknown case {case}")


def mismatch(case, threads):
    """How often ONNX Runtime's u8 x i8 MatMulInteger differs from the exact product on
    full-range data, with and without session.x64quantprecision (256^3, zero point 128)."""
    rng = np.random.default_rng(7)
    m = k = n = 256
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    exact = (a.astype(np.int64) - 128) @ b.astype(np.int64)
    model = matmul_integer_model(m, k, n, TensorProto.UINT8, b)
    y = session(model, threads, case == "ort_u8i8_exact_mismatch").run(None, {"a": a})[0]
    return line(case, f"{m}x{k}x{n}", threads, 1.0, float(np.mean(y != exact)))


class Peers:
    def __init__(self, threads):
        self.threads = threads
        self.prepared = {}

    def run(self, case, shape, budget):
        if case in MISMATCH_CASES:
            return mismatch(case, self.threads)
        key = (case, shape)
        if key not in self.prepared:
            self.prepared[key] = prepare(case, shape, self.threads)
        f, work = self.prepared[key]
        return line(case, shape, self.threads, median_seconds(f, budget), work)


def all_cases():
    cases = [(c, "256x256x256") for c in MISMATCH_CASES]
    for (m, k, n) in GEMM_SHAPES:
        cases += [(c, f"{m}x{k}x{n}") for c in GEMM_CASES]
    cases += [(c, str(QUANT_LEN)) for c in QUANT_CASES]
    for (m, k, n) in NBITS_SHAPES:
        cases += [(c, f"{m}x{k}x{n}") for c in NBITS_CASES]
    return cases


def serve(threads):
    peers = Peers(threads)
    for request in sys.stdin:
        words = request.split()
        if not words:
            continue
        try:
            case, shape = words
            reply = peers.run(case, shape, 0.3)
        except Exception as e:  # answer every request, so the driver never waits forever
            reply = json.dumps({"error": f"{request.strip()}: {e}"})
        print(reply, flush=True)


def main():
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
        return
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    peers = Peers(threads)
    for case, shape in all_cases():
        print(peers.run(case, shape, 0.5), flush=True)
        peers.prepared.clear()


if __name__ == "__main__":
    main()
