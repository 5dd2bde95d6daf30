"""Peer measurements for `cargo xtask bench --peers`: ONNX Runtime and NumPy on the shapes
`quant-bench` times, printing the same JSON lines (case, shape, threads, seconds, work).

Run by xtask inside the venv it creates under target/. Usage: peers.py THREADS
NumPy's thread count comes from OPENBLAS_NUM_THREADS, which xtask sets before starting us.
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
QUANT_LEN = 1 << 24


def median_seconds(f):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 0.5 and len(times) < 200):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def emit(case, shape, threads, seconds, work):
    print(json.dumps({"case": case, "shape": shape, "threads": threads, "seconds": seconds, "work": work}), flush=True)


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


def gemm(threads, rng):
    for (m, k, n) in GEMM_SHAPES:
        b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
        a8 = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
        shape = f"{m}x{k}x{n}"
        work = 2.0 * m * k * n
        model = matmul_integer_model(m, k, n, TensorProto.UINT8, b)
        for case, exact in (("ort_u8i8_saturating", False), ("ort_u8i8_exact", True)):
            s = session(model, threads, exact)
            emit(case, shape, threads, median_seconds(lambda: s.run(None, {"a": a8})), work)
        ai8 = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        s = session(matmul_integer_model(m, k, n, TensorProto.INT8, b), threads)
        emit("ort_i8i8", shape, threads, median_seconds(lambda: s.run(None, {"a": ai8})), work)
        af = rng.standard_normal((m, k), dtype=np.float32)
        bf = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        emit("numpy_f32", shape, threads, median_seconds(lambda: np.matmul(af, bf, out=out)), work)


def exactness(threads, rng):
    """How often ONNX Runtime's u8 x i8 MatMulInteger differs from the exact product on
    full-range data, with and without session.x64quantprecision (256^3, zero point 128)."""
    m = k = n = 256
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    exact = (a.astype(np.int64) - 128) @ b.astype(np.int64)
    model = matmul_integer_model(m, k, n, TensorProto.UINT8, b)
    for case, exact_mode in (("ort_u8i8_saturating_mismatch", False), ("ort_u8i8_exact_mismatch", True)):
        y = session(model, threads, exact_mode).run(None, {"a": a})[0]
        print(json.dumps({"case": case, "shape": f"{m}x{k}x{n}", "threads": threads, "seconds": 1.0,
                          "work": float(np.mean(y != exact))}), flush=True)


def quantize(threads, rng):
    x = rng.standard_normal(QUANT_LEN, dtype=np.float32)
    scale = np.array(float(np.abs(x).max()) / 127.0, dtype=np.float32)
    zp = np.array(0, dtype=np.int8)
    xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, [QUANT_LEN])
    qout = helper.make_tensor_value_info("q", TensorProto.INT8, [QUANT_LEN])
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], "q", [xin], [qout], initializer=inits)
    s = session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), threads)
    emit("ort_quantize_f32_i8", str(QUANT_LEN), threads, median_seconds(lambda: s.run(None, {"x": x})), QUANT_LEN)
    q = s.run(None, {"x": x})[0]
    qin = helper.make_tensor_value_info("q", TensorProto.INT8, [QUANT_LEN])
    xout = helper.make_tensor_value_info("x", TensorProto.FLOAT, [QUANT_LEN])
    g = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["x"])], "d", [qin], [xout], initializer=inits)
    s = session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), threads)
    emit("ort_dequantize_i8_f32", str(QUANT_LEN), threads, median_seconds(lambda: s.run(None, {"q": q})), QUANT_LEN)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rng = np.random.default_rng(7)
    exactness(threads, rng)
    gemm(threads, rng)
    quantize(threads, rng)


if __name__ == "__main__":
    main()
