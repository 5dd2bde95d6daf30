"""Peer measurements for `cargo xtask bench --peers`: ONNX Runtime and NumPy on the shapes
`quant-bench` times, printing the same JSON lines (case, shape, threads, seconds, work).

Run by xtask inside the venv it creates under target/.

Usage:
  peers.py THREADS           every case on every shape, once
  peers.py --serve THREADS   read `CASE SHAPE` lines on stdin, answer each with one JSON line
                             (inputs and sessions are built once, then kept); xtask drives it
                             this way to interleave the peers' measurements with ours
  peers.py --errors DIR      relative errors of ggml's mul_mat and ONNX Runtime's MatMulNBits
                             on the activations and weights `quant-bench --errors DIR` wrote
  peers.py --quantize-chunk MODEL THREADS [OURS.gguf]
                             ggml's own ggml_quantize_chunk to Q4_K on every 2-D f32 tensor of
                             the safetensors file MODEL, rows split over THREADS threads; one
                             JSON line (seconds, MB of input); with OURS.gguf, also whether each
                             tensor's bytes equal the ones `quant quantize --type q4_k` wrote

With `--deny-amx`, the process may not use AMX (see `deny_amx`): ONNX Runtime then runs its
AVX-512 VNNI kernels, as on an AVX-512 VNNI CPU without AMX.

llama.cpp's ggml comes from PyPI's ggml-python (a source package; xtask builds it with
CMAKE_ARGS=-DGGML_NATIVE=ON). Without it the ggml cases answer with an error line and the
rest still runs.

NumPy's thread count comes from OPENBLAS_NUM_THREADS, which xtask sets before starting us;
ONNX Runtime's from THREADS (intra-op threads of each session).
"""
import json
import sys
import time

import ctypes
import os


def deny_amx():
    """Makes this process's request for the AMX tile state fail (a seccomp filter answers
    arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) with EPERM). ONNX Runtime's MLAS asks
    for the tile state before it uses AMX and falls back to its AVX-512 VNNI kernels when the
    kernel says no, so on an AMX CPU this measures ONNX Runtime as it runs on an AVX-512 VNNI
    CPU without AMX. Must run before onnxruntime is imported. Returns whether the request is
    now refused (checked by making it)."""
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    allow, errno_eperm = 0x7FFF0000, 0x00050000 | 1
    audit_arch_x86_64, sys_arch_prctl, arch_req_xcomp_perm = 0xC000003E, 158, 0x1023

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    # seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low 32 bits on little-endian).
    program = [
        (ld_w_abs, 0, 0, 4),
        (jeq_k, 0, 5, audit_arch_x86_64),
        (ld_w_abs, 0, 0, 0),
        (jeq_k, 0, 3, sys_arch_prctl),
        (ld_w_abs, 0, 0, 16),
        (jeq_k, 0, 1, arch_req_xcomp_perm),
        (ret_k, 0, 0, errno_eperm),
        (ret_k, 0, 0, allow),
    ]
    filters = (SockFilter * len(program))(*[SockFilter(*f) for f in program])
    prog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return False
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        return False
    return libc.syscall(sys_arch_prctl, arch_req_xcomp_perm, 18) != 0 and ctypes.get_errno() == 1


# `--deny-amx` (anywhere on the command line) is applied before onnxruntime is imported.
if "--deny-amx" in sys.argv:
    sys.argv.remove("--deny-amx")
    if not deny_amx():
        print(json.dumps({"error": "could not deny the AMX tile state (seccomp)"}), flush=True)
        sys.exit(1)

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

try:
    import ggml
except ImportError:  # the ggml cases then answer with an error
    ggml = None

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
# The decode shapes, and one streaming M = 1 shape whose weights are many times the L3.
STREAM_SHAPE = (1, 8192, 32768)
NBITS_SHAPES = [(m, 4096, n) for n in (4096, 11008) for m in (1, 16, 128)] + [STREAM_SHAPE]
# all-MiniLM-L6-v2 (from QUANT_MINILM_DIR) on the first 64 evaluation sentences, at the batch
# size the shape names (b1, b32): ONNX Runtime on the f32 graph and on its quantize_dynamic.
MODEL_CASES = ["ort_minilm_f32", "ort_minilm_int8"]
MODEL_SENTENCES = 64
NBITS_CASES = ["ort_nbits_b32_acc4", "ort_nbits_b32_acc0", "ort_nbits_b128_acc4", "ort_nbits_b128_acc0"]
# llama.cpp's ggml mul_mat, f32 activations (ggml quantizes them to Q8_0 / Q8_K itself), weights
# in the CPU "repack" buffer (as llama.cpp loads them by default, where ggml has a repacked
# layout for the type: Q4_0 and Q4_K on AVX2) or in a plain CPU buffer.
GGML_CASES = ["ggml_q4_0_repack", "ggml_q4_0", "ggml_q8_0", "ggml_q4_k_repack", "ggml_q4_k"]


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


class Ggml:
    """One ggml mul_mat y = x · Wᵀ (W: N x K quantized by ggml itself, x: M x K f32), built once.

    ggml-python declares `ggml_backend_cpu_buffer_type` with a 32-bit result for what is a
    pointer; its restype is set to a pointer here before any call."""

    TYPES = {"q4_0": "GGML_TYPE_Q4_0", "q8_0": "GGML_TYPE_Q8_0", "q4_k": "GGML_TYPE_Q4_K"}

    def __init__(self, fmt, repack, w, x, threads):
        if ggml is None:
            raise RuntimeError("ggml-python is not installed")
        lib = ggml.lib
        lib.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
        lib.ggml_backend_cpu_buffer_type.argtypes = []
        typ = getattr(ggml, self.TYPES[fmt])
        n, k = w.shape
        m = x.shape[0]
        w = np.ascontiguousarray(w, dtype=np.float32)
        self.q = np.zeros(n * ggml.ggml_row_size(typ, k), dtype=np.uint8)
        written = ggml.ggml_quantize_chunk(typ, w.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                           self.q.ctypes.data, 0, n, k, None)
        assert written == self.q.nbytes, (written, self.q.nbytes)
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.ctx_w, self.ctx_a, self.ctx_g = (self._ctx(2), self._ctx(4), self._ctx(8))
        tw = ggml.ggml_new_tensor_2d(self.ctx_w, typ, k, n)
        tx = ggml.ggml_new_tensor_2d(self.ctx_a, ggml.GGML_TYPE_F32, k, m)
        self.ty = ggml.ggml_mul_mat(self.ctx_a, tw, tx)
        cpu = lib.ggml_backend_cpu_buffer_type()
        buft = self._repack_buffer_type() if repack else cpu
        self.buf_w = ggml.ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_w, buft)
        self.buf_a = ggml.ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_a, cpu)
        ggml.ggml_backend_tensor_set(tw, self.q.ctypes.data, 0, self.q.nbytes)  # repacks here
        ggml.ggml_backend_tensor_set(tx, self.x.ctypes.data, 0, self.x.nbytes)
        self.graph = ggml.ggml_new_graph(self.ctx_g)
        ggml.ggml_build_forward_expand(self.graph, self.ty)
        self.backend = ggml.ggml_backend_cpu_init()
        ggml.ggml_backend_cpu_set_n_threads(self.backend, threads)
        self.y = np.zeros((m, n), dtype=np.float32)

    @staticmethod
    def _ctx(tensors):
        size = ggml.ggml_tensor_overhead() * tensors + ggml.ggml_graph_overhead() + 1024
        return ggml.ggml_init(ggml.ggml_init_params(mem_size=size, mem_buffer=None, no_alloc=True))

    @staticmethod
    def _repack_buffer_type():
        reg = ggml.ggml_backend_cpu_reg()
        dev = ggml.ggml_backend_reg_dev_get(reg, 0)
        addr = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
        bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(addr)(dev)
        # On a CPU with AMX the list starts with ggml's "AMX" buffer, whose mul_mat crashes
        # through these bindings from M = 2 on (seen on a Xeon with amx_int8): take the
        # repack buffer by name.
        ggml.lib.ggml_backend_buft_name.restype = ctypes.c_char_p
        ggml.lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
        i = 0
        while bufts and bufts[i]:
            if ggml.lib.ggml_backend_buft_name(bufts[i]) == b"CPU_REPACK":
                return bufts[i]
            i += 1
        raise RuntimeError("this ggml build has no CPU repack buffer")

    def run(self):
        ggml.ggml_backend_graph_compute(self.backend, self.graph)

    def result(self):
        self.run()
        ggml.ggml_backend_tensor_get(self.ty, self.y.ctypes.data, 0, self.y.nbytes)
        return self.y


def ggml_case(case, shape, threads, rng):
    m, k, n = (int(d) for d in shape.split("x"))
    fmt = case[len("ggml_"):].removesuffix("_repack")
    w = (rng.standard_normal((n, k), dtype=np.float32) * 0.02).astype(np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    g = Ggml(fmt, case.endswith("_repack"), w, x, threads)
    del w
    return g.run, 2.0 * m * k * n


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
    if case in GGML_CASES:
        return ggml_case(case, shape, threads, rng)
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
    if case in MODEL_CASES:
        return model_case(case, shape, threads)
    raise ValueError(f"unknown case {case}")


def model_case(case, shape, threads):
    """The model cases: the sentences embedded in batches of `shape` (bN); work: sentences."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import minilm_onnx

    model_dir = os.environ.get("QUANT_MINILM_DIR")
    if not model_dir:
        raise ValueError("set QUANT_MINILM_DIR to all-MiniLM-L6-v2's directory")
    batch = int(shape.removeprefix("b"))
    here = os.path.dirname(os.path.abspath(__file__))
    lines = minilm_onnx.sentences(os.path.join(here, "../../crates/quant-eval/data/sentences.txt"), "evaluation")
    lines = lines[:MODEL_SENTENCES]
    model = minilm_onnx.build(model_dir)
    if case == "ort_minilm_int8":
        model = minilm_onnx.quantized(model)
    s = minilm_onnx.session(model, threads)
    batches = minilm_onnx.token_batches(model_dir, lines, batch)
    return (lambda: minilm_onnx.embed(s, batches)), float(len(lines))


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


def decode_blocks(q, fmt, n, k):
    """llama.cpp's Q4_0 / Q8_0 block bytes (N x K weights) to their f64 values and codes; Q4_K
    to the `gguf` package's values (no codes)."""
    if fmt == "q4_k":
        from gguf.quants import dequantize
        from gguf import GGMLQuantizationType
        return dequantize(q, GGMLQuantizationType.Q4_K).astype(np.float64).reshape(n, k), None, None
    bsz = 18 if fmt == "q4_0" else 34
    b = q.reshape(n, k // 32, bsz)
    d = b[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float64)
    if fmt == "q4_0":
        qs = b[:, :, 2:]
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int64)  # 0..15, q + 8
        return (d[:, :, None] * (codes - 8)).reshape(n, k), codes, d
    codes = b[:, :, 2:].copy().view(np.int8).astype(np.int64)
    return (d[:, :, None] * codes).reshape(n, k), codes, d


def errors(directory):
    """ggml's and ONNX Runtime's relative errors on quant-bench's data (see `--errors`)."""
    m, k, n = 16, 4096, 4096  # quant-bench's errors.rs SHAPE
    x = np.fromfile(os.path.join(directory, "x.f32"), dtype="<f4").reshape(m, k)
    w = np.fromfile(os.path.join(directory, "w.f32"), dtype="<f4").reshape(n, k)
    for fmt in ("q4_0", "q8_0", "q4_k"):
        ours = np.fromfile(os.path.join(directory, f"w.{fmt}"), dtype=np.uint8)
        wd, codes, d = decode_blocks(ours, fmt, n, k)
        exact = x.astype(np.float64) @ wd.T
        norm = np.linalg.norm(exact)

        def report(case, y, note=""):
            err = float(np.linalg.norm(y.astype(np.float64) - exact) / norm)
            print(json.dumps({"case": case, "format": fmt, "error": err, "note": note}), flush=True)

        if ggml is not None:
            g = Ggml(fmt, fmt == "q4_0", w, x, 1)
            same = bool(np.array_equal(g.q, ours))
            report(f"ggml_{fmt}", g.result(), "" if same else "ggml's blocks differ from ours")
        else:
            print(json.dumps({"error": "ggml-python is not installed"}), flush=True)
        if fmt == "q4_0":
            # The same weights as MatMulNBits: B [N, K/32, 16] with consecutive inputs in the
            # low and high nibble of each byte, one scale per block, zero point 8 (default).
            c = codes.reshape(n, k // 32, 32).astype(np.uint8)
            b = (c[:, :, 0::2] | (c[:, :, 1::2] << 4)).astype(np.uint8)
            scales = d.astype(np.float32).reshape(-1)
            for acc in (4, 0):
                a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
                yv = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
                inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(scales, "s")]
                node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft",
                                        K=k, N=n, bits=4, block_size=32, accuracy_level=acc)
                graph = helper.make_graph([node], "g", [a], [yv], initializer=inits)
                model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                                helper.make_opsetid("com.microsoft", 1)])
                report(f"ort_nbits_b32_acc{acc}", session(model, 1).run(None, {"a": x})[0])


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
        cases += [(c, f"{m}x{k}x{n}") for c in NBITS_CASES + GGML_CASES]
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


def quantize_chunk(model, threads, ours=None):
    """Times ggml_quantize_chunk (Q4_K) over MODEL's 2-D f32 tensors, arrays already in memory."""
    import struct
    import threading

    if ggml is None:
        print(json.dumps({"error": "ggml-python is not installed"}), flush=True)
        return
    with open(model, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(model, dtype=np.uint8, mode="r", offset=8 + n)
    tensors = {}
    for name, meta in header.items():
        if name != "__metadata__" and meta["dtype"] == "F32" and len(meta["shape"]) == 2:
            a, b = meta["data_offsets"]
            tensors[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"]).copy()
    gt = ggml.GGML_TYPE_Q4_K
    outs = {k: np.zeros(x.shape[0] * ggml.ggml_row_size(gt, x.shape[1]), dtype=np.uint8) for k, x in tensors.items()}

    def part(k, r0, r1):
        x = tensors[k]
        src = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ggml.ggml_quantize_chunk(gt, src, outs[k].ctypes.data, r0 * x.shape[1], r1 - r0, x.shape[1], None)

    start = time.perf_counter()
    for k, x in tensors.items():
        rows = x.shape[0]
        cuts = [rows * i // threads for i in range(threads + 1)]
        workers = [threading.Thread(target=part, args=(k, cuts[i], cuts[i + 1])) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    seconds = time.perf_counter() - start
    reply = {"seconds": seconds, "mb": sum(x.nbytes for x in tensors.values()) / 1e6}
    if ours is not None:
        import gguf

        theirs = {t.name: np.asarray(t.data).reshape(-1).view(np.uint8) for t in gguf.GGUFReader(ours).tensors}
        reply["identical"] = sum(1 for k in tensors if k in theirs and np.array_equal(theirs[k], outs[k]))
        reply["tensors"] = len(tensors)
    print(json.dumps(reply), flush=True)


def main():
    if sys.argv[1:2] == ["--quantize-chunk"]:
        quantize_chunk(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
        return
    if sys.argv[1:2] == ["--errors"]:
        errors(sys.argv[2])
        return
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
