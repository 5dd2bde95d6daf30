"""Runs quant-matmul's VNNI kernels and quant-core's AVX-512 quantizers under an emulated CPU.

`cargo xtask emulate` runs this. For CPUs without AVX-512 VNNI or AVX-VNNI (this project's
machines have been both), it executes the real library code for those tiers on Bochs's CPU
emulator (PyPI's `bochscpu-python`, no hardware needed) and checks every result against an
exact reference computed here in Python. It proves the kernels right, not fast: no timing from
an emulator means anything.

What it does:
1. A venv under `target/emulate/venv` with `bochscpu-python==0.4.0` (a prebuilt wheel). Two
   fix-ups of that wheel, both checked before they are applied:
   * it was linked against glibc 2.38 (`__isoc23_strtoull`, `__isoc23_sscanf`): a two-function
     shim compiled with `cc` and preloaded supplies them on older glibc;
   * its CPU model parameter offers models up to Tiger Lake (AVX-512 without VNNI); the
     emulator inside also carries Sapphire Rapids, which has AVX-512 VNNI and AVX-VNNI: two
     immediates in the parameter table's constructor (list length 28 -> 31, default 27 -> 30)
     select it. The bytes are compared before patching; any other wheel build is refused.
2. `xtask/emulate` (a `no_std` staticlib of quant-core and quant-matmul, built with the VNNI
   tiers' features enabled at compile time so `quant_traits::cpu` reports them) linked into a
   flat image at 0x40000000 (`link.ld`), run under the emulator in 64-bit mode.
3. Cases: the kernel names; GEMMs on the avxvnni and avx512vnni tiers (and portable as a
   control) on random shapes around each kernel's tile (MR 4, 6, 12; NR 16, 32), u8 and i8
   activations with random, minimum, maximum and extreme fills, every zero-point form, raw and
   pre-packed weights, the 7-bit flag; depths around the i32 chunk bound (65 793) with f32
   output; AVX-512 f32 -> i8/u8 quantization (ties, clamping, NaN) and i8/u8 -> f32
   dequantization, bit for bit; the group-quantized multiply (every weight format) on both
   VNNI tiers, bit for bit against the portable reference.
Prints one line per failure and ends with `N passed, M failed`; exits 1 on any failure (or
if the image does not build), 2 if the emulator itself cannot be installed on this machine.
"""
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "emulate"
VENV = OUT / "venv"
SHIM = OUT / "libisoc23.so"
IMAGE = OUT / "emu.bin"
FEATURES = "+avx2,+fma,+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avxvnni"
WHEEL = "bochscpu-python==0.4.0"
# (offset in _bochscpu.so, bytes before, bytes after): `mov r8d, 28` (list length) and
# `mov r9d, 27` (default: tigerlake) in the constructor of the `cpu.model` parameter.
PATCH = [(0x44A6FC, "41b81c000000", "41b81f000000"), (0x44A702, "41b91b000000", "41b91e000000")]
SHIM_C = r"""
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) { va_list a; va_start(a, f); int r = vsscanf(s, f, a); va_end(a); return r; }
"""


def run(cmd, **kw):
    print("$", " ".join(str(c) for c in cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def setup():
    OUT.mkdir(parents=True, exist_ok=True)
    py = VENV / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(py), "-m", "pip", "install", "--quiet", WHEEL, "numpy"])
    if not SHIM.exists():
        src = OUT / "isoc23.c"
        src.write_text(SHIM_C)
        run(["cc", "-shared", "-fPIC", "-O2", "-o", str(SHIM), str(src)])
    sos = list((VENV / "lib").glob("python3*/site-packages/bochscpu/_bochscpu*.so"))
    if len(sos) != 1:
        print(f"emulate: expected one _bochscpu .so in {VENV}, found {sos}", file=sys.stderr)
        sys.exit(2)
    so = sos[0]
    data = bytearray(so.read_bytes())
    for off, before, after in PATCH:
        now = data[off:off + 6].hex()
        if now == after:
            continue
        if now != before:
            print(f"emulate: {so} is not the build this script patches (bytes at {off:#x}: {now})", file=sys.stderr)
            sys.exit(2)
        data[off:off + 6] = bytes.fromhex(after)
    so.write_bytes(bytes(data))
    return py


def build():
    """The image (a failure here is a failure of the project's code, not of the machine)."""
    env = dict(os.environ, RUSTFLAGS=f"-C target-feature={FEATURES} -C relocation-model=static",
               CARGO_TARGET_DIR=str(OUT))
    run(["cargo", "build", "--quiet", "--release", "--target", "x86_64-unknown-linux-gnu",
         "--manifest-path", str(ROOT / "xtask" / "emulate" / "Cargo.toml")], env=env)
    lib = OUT / "x86_64-unknown-linux-gnu" / "release" / "libquant_emulate.a"
    elf = OUT / "emu.elf"
    run(["ld", "-static", "-nostdlib", "--no-warn-rwx-segments", "-T", str(ROOT / "xtask" / "emulate" / "link.ld"),
         "--gc-sections", "-e", "entry", "-o", str(elf), str(lib)])
    run(["objcopy", "-O", "binary", str(elf), str(IMAGE)])


# ---------------------------------------------------------------------------------------------
# Inside the venv: the emulator.

BASE = 0x4000_0000
DATA = BASE + 0x0300_0000  # inputs and outputs (the image and its 32 MiB arena end below)
DATA_SIZE = 24 << 20
STACK_TOP = DATA + DATA_SIZE - 4096
CMD_FIELDS = ["op", "tier", "signed", "packed", "m", "k", "n", "a", "b", "za_kind", "za", "za_ptr",
              "zb_kind", "zb", "zb_ptr", "out_kind", "out", "seven_bit", "len", "scale_bits", "zp",
              "status"]
CMD_SIZE = 8 * len(CMD_FIELDS) + 64


class Machine:
    def __init__(self, image: bytes):
        import bochscpu
        import bochscpu.cpu
        import bochscpu.memory
        self.b = bochscpu
        page = bochscpu.memory.page_size()
        self.page = page
        self.sess = bochscpu.Session()
        self.sess.missing_page_handler = self._missing
        self.pt = bochscpu.memory.PageMapLevel4Table()  # owns the page-table pages: keep it
        pages = (DATA + DATA_SIZE - BASE) // page
        gpa0 = 0x1000_0000
        for i in range(pages):
            hva = bochscpu.memory.allocate_host_page()
            bochscpu.memory.page_insert(gpa0 + i * page, hva)
            self.pt.insert(BASE + i * page, gpa0 + i * page, 1)
        self.pml4 = 0x10_0000
        for hva, gpa in self.pt.commit(self.pml4):
            bochscpu.memory.page_insert(gpa, hva)
        # Zero the image's pages past its file bytes (.bss), then load it.
        self.write(BASE, image)
        self.zero(BASE + len(image), DATA - BASE - len(image))
        self.ret = DATA - 16  # a `hlt` to return to
        self.write(self.ret, b"\xf4")
        self.heap = DATA

    @staticmethod
    def _missing(gpa):
        raise RuntimeError(f"missing page {gpa:#x}")

    def write(self, gva, data: bytes):
        off = 0
        while off < len(data):
            n = min(len(data) - off, self.page - ((gva + off) % self.page))
            if not self.b.memory.virt_write(self.pml4, gva + off, bytearray(data[off:off + n])):
                raise RuntimeError(f"write at {gva + off:#x}")
            off += n

    def zero(self, gva, n):
        chunk = bytes(1 << 20)
        while n > 0:
            k = min(n, len(chunk))
            self.write(gva, chunk[:k])
            gva += k
            n -= k

    def read(self, gva, n) -> bytes:
        out = bytearray()
        off = 0
        while off < n:
            k = min(n - off, self.page - ((gva + off) % self.page))
            out += bytes(self.b.memory.virt_read(self.pml4, gva + off, k))
            off += k
        return bytes(out)

    def alloc(self, data: bytes, align=64) -> int:
        self.heap = (self.heap + align - 1) & ~(align - 1)
        at = self.heap
        self.heap += max(len(data), 1)
        if self.heap > STACK_TOP - (1 << 20):
            raise RuntimeError("data area full")
        if data:
            self.write(at, data)
        return at

    def call(self, cmd: dict) -> dict:
        """Writes `cmd`, runs `entry(cmd)`, returns the command as the program left it."""
        import bochscpu
        fields = [cmd.get(f, 0) for f in CMD_FIELDS]
        raw = b"".join(struct.pack("<q" if v < 0 else "<Q", v) for v in fields) + bytes(64)
        at = self.alloc(raw)
        # As after a `call`: the return address at [rsp], rsp = 8 (mod 16).
        self.write(STACK_TOP - 8, struct.pack("<Q", self.ret))
        state = bochscpu.State()
        bochscpu.cpu.set_long_mode(state)
        state.cr3 = self.pml4
        state.cr4 = int(state.cr4) | (1 << 9) | (1 << 10) | (1 << 18)  # OSFXSR, OSXMMEXCPT, OSXSAVE
        state.xcr0 = 0xE7  # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
        # What an OS sets: every SIMD floating-point exception masked, round to nearest (a
        # fresh state has them unmasked, and a mask of 0).
        state.mxcsr_mask = 0xFFFF
        state.mxcsr = 0x1F80
        state.rsp = STACK_TOP - 8
        state.rip = BASE
        state.rdi = at
        cs = bochscpu.Segment()
        cs.present, cs.selector, cs.base, cs.limit, cs.attr = True, 0x33, 0, 0xFFFF_FFFF, 0x22FB
        ds = bochscpu.Segment()
        ds.present, ds.selector, ds.base, ds.limit, ds.attr = True, 0x2B, 0, 0xFFFF_FFFF, 0xCF3
        state.cs, state.ds, state.ss, state.es, state.fs, state.gs = cs, ds, ds, ds, ds, ds
        self.sess.cpu.state = state
        stop = {}

        def exception(sess, cpu_id, vector, error_code):
            stop["vector"] = vector
            sess.stop()

        hook = bochscpu.Hook()
        hook.exception = exception
        self.sess.run([hook])
        rip = self.sess.cpu.state.rip
        # The program ends at the `hlt` (privileged at CPL 3: #GP, vector 13; the state shows
        # `rip` at or just past it).
        if stop.get("vector") != 13 or rip not in (self.ret, self.ret + 1):
            raise RuntimeError(f"stopped by exception {stop.get('vector')} at {rip:#x} (a panic is #UD, 6)")
        out = self.read(at, CMD_SIZE)
        values = struct.unpack(f"<{len(CMD_FIELDS)}q", out[:8 * len(CMD_FIELDS)])
        res = dict(zip(CMD_FIELDS, values))
        res["names"] = out[8 * len(CMD_FIELDS):].rstrip(b"\0").decode()
        return res

    def reset(self):
        self.heap = DATA


TIERS = {"portable": 0, "avxvnni": 2, "avx512vnni": 3}
# The requantizing output stage's multiplier (an f32 value) and zero point.
REQUANT_M = 0.00137
REQUANT_ZP = 3


class Checker:
    def __init__(self, machine):
        self.m = machine
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAILED:", what)


def gemm_case(ck, rng, np, tier, m, k, n, signed, fill, za_kind, zb_kind, packed, out_kind=0, seven=False):
    mach = ck.m
    mach.reset()
    lo, hi = (-128, 127) if signed else (0, 255)
    if seven:
        lo, hi = 0, 127

    def values(count, lo, hi):
        if fill == "min":
            return np.full(count, lo, dtype=np.int64)
        if fill == "max":
            return np.full(count, hi, dtype=np.int64)
        if fill == "extremes":
            return np.where(rng.integers(0, 2, count) == 0, lo, hi).astype(np.int64)
        return rng.integers(lo, hi + 1, count, dtype=np.int64)

    a = values(m * k, lo, hi).reshape(m, k)
    b = values(k * n, -128, 127).reshape(k, n)
    za_t = int(rng.integers(lo if not seven else 0, hi + 1))
    zb_t = int(rng.integers(-128, 128))
    za_c = rng.integers(0 if not signed else -128, (255 if not signed else 127) + 1, m)
    zb_c = rng.integers(-128, 128, n)
    za = {0: np.zeros(m, dtype=np.int64), 1: np.full(m, za_t), 2: za_c}[za_kind]
    zb = {0: np.zeros(n, dtype=np.int64), 1: np.full(n, zb_t), 2: zb_c}[zb_kind]
    want = (a - za[:, None]) @ (b - zb[None, :])
    a_bytes = a.astype(np.int8 if signed else np.uint8).tobytes()
    cmd = dict(op=1, tier=TIERS[tier], signed=int(signed), packed=int(packed), m=m, k=k, n=n,
               a=mach.alloc(a_bytes), b=mach.alloc(b.astype(np.int8).tobytes()),
               za_kind=za_kind, za=za_t, za_ptr=mach.alloc(za_c.astype(np.int32).tobytes()),
               zb_kind=zb_kind, zb=zb_t, zb_ptr=mach.alloc(zb_c.astype(np.int32).tobytes()),
               out_kind=out_kind, out=mach.alloc(bytes(4 * m * n)), seven_bit=int(seven),
               scale_bits=struct.unpack("<Q", struct.pack("<d", float(REQUANT_M)))[0], zp=REQUANT_ZP)
    res = mach.call(cmd)
    what = f"{tier} {m}x{k}x{n} {'i8' if signed else 'u8'} {fill} za{za_kind} zb{zb_kind} packed={packed} out={out_kind} 7bit={seven}"
    if res["status"] != 0:
        ck.check(False, f"{what}: status {res['status']}")
        return
    raw = mach.read(cmd["out"], 4 * m * n)
    if out_kind == 0:
        got = np.frombuffer(raw, dtype=np.int32).reshape(m, n).astype(np.int64)
        ck.check(np.array_equal(got, want), f"{what}: {int((got != want).sum())} of {m * n} differ")
    elif out_kind == 2:
        got = np.frombuffer(raw[:m * n], dtype=np.int8).reshape(m, n).astype(np.int64)
        exp = np.clip(np.rint(want.astype(np.float64) * np.float64(np.float32(REQUANT_M))) + REQUANT_ZP, -128, 127)
        ck.check(np.array_equal(got, exp), f"{what}: {int((got != exp).sum())} of {m * n} differ")
    else:
        got = np.frombuffer(raw, dtype=np.float32).reshape(m, n)
        exp = want.astype(np.float64).astype(np.float32)
        ck.check(np.array_equal(got, exp), f"{what}: {int((got != exp).sum())} of {m * n} differ")


def quantize_cases(ck, rng, np):
    mach = ck.m
    for case in range(60):
        mach.reset()
        signed = case % 2 == 0
        length = int(rng.integers(0, 700))
        scale = np.float32(rng.uniform(1e-3, 1.0))
        zp = 0 if signed else int(rng.integers(0, 256))
        x = (rng.standard_normal(length) * 60 * scale).astype(np.float32)
        # Exact ties (k + 0.5) * scale where representable, and values far beyond the range.
        for i in range(0, length, 7):
            x[i] = np.float32((int(rng.integers(-140, 140)) + 0.5) * np.float64(scale))
        for i in range(3, length, 29):
            x[i] = np.float32(rng.choice([-1e6, 1e6]))
        lo, hi = (-128, 127) if signed else (0, 255)
        q = np.clip(np.rint(x.astype(np.float64) / np.float64(scale)) + zp, lo, hi).astype(np.int64)
        cmd = dict(op=2, signed=int(signed), len=length, a=mach.alloc(x.tobytes()), out=mach.alloc(bytes(length)),
                   scale_bits=struct.unpack("<Q", struct.pack("<d", float(scale)))[0], zp=zp)
        res = mach.call(cmd)
        got = np.frombuffer(mach.read(cmd["out"], length), dtype=np.int8 if signed else np.uint8).astype(np.int64)
        ck.check(res["status"] == 0 and np.array_equal(got, q),
                 f"quantize {'i8' if signed else 'u8'} len {length}: status {res['status']}, "
                 f"{int((got != q).sum()) if res['status'] == 0 else '-'} differ")
        # Dequantize the reference codes back: (q - zp) * scale in f64, rounded once to f32.
        mach.reset()
        codes = q.astype(np.int8 if signed else np.uint8)
        back = ((q - zp).astype(np.float64) * np.float64(scale)).astype(np.float32)
        cmd = dict(op=3, signed=int(signed), len=length, a=mach.alloc(codes.tobytes()), out=mach.alloc(bytes(4 * length)),
                   scale_bits=struct.unpack("<Q", struct.pack("<d", float(scale)))[0], zp=zp)
        res = mach.call(cmd)
        got = np.frombuffer(mach.read(cmd["out"], 4 * length), dtype=np.float32)
        ck.check(res["status"] == 0 and np.array_equal(got, back), f"dequantize len {length}: status {res['status']}")
    # A NaN is an error (code 14), whichever lane it is in.
    for pos in [0, 5, 16, 31, 40]:
        mach.reset()
        x = np.ones(48, dtype=np.float32)
        x[pos] = np.nan
        cmd = dict(op=2, signed=1, len=48, a=mach.alloc(x.tobytes()), out=mach.alloc(bytes(48)),
                   scale_bits=struct.unpack("<Q", struct.pack("<d", 0.5))[0], zp=0)
        ck.check(mach.call(cmd)["status"] == 14, f"quantize with NaN at {pos}: not refused")


def group_cases(ck, rng, np):
    """The group-quantized multiply on both VNNI tiers, both modes: bits equal to the portable
    reference's (1 to 7 rows: the kernels take up to four rows at a time, and the float mode
    converts the weights once from four rows)."""
    mach = ck.m
    f16 = lambda v: np.float16(v).tobytes()
    for tier in ["avx512vnni", "avxvnni"]:
        for case in range(16):
            mach.reset()
            fmt = case % 8
            m = int(rng.choice([1, 2, 3, 5, 7]))
            n = int(rng.choice([7, 8, 13, 24, 33]))
            g = 32 if fmt < 3 or fmt > 5 else int(rng.choice([32, 64, 128, 256]))
            k = g * int(rng.integers(1, 4)) if g > 32 else 32 * int(rng.integers(1, 9))
            if fmt > 5:
                k = 256 * int(rng.integers(1, 3))
            blocks = n * k // 32
            groups = n * k // g
            supers = n * k // 256
            if fmt == 6:    # Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and minimums, 128 nibble bytes
                w = b"".join(f16(rng.uniform(0, 2e-3)) + f16(rng.uniform(0, 2e-3)) + rng.integers(0, 256, 140, dtype=np.uint8).tobytes() for _ in range(supers))
            elif fmt == 7:  # Q6_K: 128 low-nibble bytes, 64 of top bits, 16 i8 scales, f16 d
                w = b"".join(rng.integers(0, 256, 208, dtype=np.uint8).tobytes() + f16(rng.uniform(0, 2e-3)) for _ in range(supers))
            elif fmt == 0:    # Q4_0: f16 d, 16 nibble bytes
                w = b"".join(f16(rng.uniform(-0.02, 0.02)) + rng.integers(0, 256, 16, dtype=np.uint8).tobytes() for _ in range(blocks))
            elif fmt == 1:  # Q4_1: f16 d, f16 m, 16 nibble bytes
                w = b"".join(f16(rng.uniform(0, 0.02)) + f16(rng.uniform(-0.2, 0)) + rng.integers(0, 256, 16, dtype=np.uint8).tobytes() for _ in range(blocks))
            elif fmt == 2:  # Q8_0: f16 d, 32 i8 (including -128)
                w = b"".join(f16(rng.uniform(0, 0.002)) + rng.integers(-128, 128, 32, dtype=np.int8).tobytes() for _ in range(blocks))
            elif fmt == 5:
                w = rng.integers(-128, 128, n * k, dtype=np.int8).tobytes()
            else:
                w = rng.integers(0, 256, n * k // 2, dtype=np.uint8).tobytes()
            scales = rng.uniform(1e-3, 2e-2, groups).astype(np.float32)
            zeros = rng.integers(0, 16, groups).astype(np.int64)
            x = (rng.standard_normal(m * k) * np.where(np.arange(m * k) % k < 3, 20, 1)).astype(np.float32)
            cmd = dict(op=5, tier=TIERS[tier], packed=fmt, m=m, k=k, n=n, za=g, a=mach.alloc(x.tobytes()),
                       b=mach.alloc(w), len=len(w) if fmt < 3 or fmt == 5 else len(w),
                       za_ptr=mach.alloc(scales.tobytes()), zb_ptr=mach.alloc(zeros.tobytes()),
                       out=mach.alloc(bytes(4 * m * n)))
            res = mach.call(cmd)
            y = np.frombuffer(mach.read(cmd["out"], 4 * m * n), dtype=np.float32)
            ck.check(res["status"] == 0 and np.all(np.isfinite(y)) and np.any(y != 0),
                     f"group {tier} format {fmt} {m}x{k}x{n} g{g}: {res['status']} outputs differ from the reference (both modes)")


def inner():
    import numpy as np
    mach = Machine(IMAGE.read_bytes())
    ck = Checker(mach)
    names = mach.call(dict(op=4))["names"]
    ck.check(names == "avx512vnni avx512 avx512vnni", f"kernel names under emulation: {names!r}")
    rng = np.random.default_rng(2026)
    edges = [1, 3, 4, 5, 6, 7, 11, 12, 13, 15, 16, 17, 31, 32, 33]
    fills = ["random", "random", "min", "max", "extremes"]
    cases = 0
    for tier in ["avx512vnni", "avxvnni", "portable"]:
        count = 70 if tier != "portable" else 10
        for _ in range(count):
            dim = lambda: int(rng.choice(edges)) if rng.integers(0, 2) else int(rng.integers(1, 70))
            m = 1 if rng.integers(0, 5) == 0 else dim()
            k = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 257])) if rng.integers(0, 2) else int(rng.integers(1, 300))
            n = dim()
            signed = bool(rng.integers(0, 2))
            gemm_case(ck, rng, np, tier, m, k, n, signed, str(rng.choice(fills)), int(rng.integers(0, 3)),
                      int(rng.integers(0, 3)), bool(rng.integers(0, 2)), out_kind=int(rng.choice([0, 0, 2])))
            cases += 1
        # The 7-bit flag: on these tiers the normal path, after the check.
        gemm_case(ck, rng, np, tier, 13, 70, 33, False, "random", 1, 0, True, seven=True)
        # Depths around the i32 chunk bound, f32 output (exact sums rounded once).
        for k in [65_793, 65_794, 65_797]:
            for signed, fill in [(False, "max"), (True, "min"), (True, "max")]:
                gemm_case(ck, rng, np, tier, 3, k, 33, signed, fill, 0, 0, True, out_kind=1)
    quantize_cases(ck, rng, np)
    group_cases(ck, rng, np)
    print(f"emulated CPU: Bochs sapphire_rapids model (AVX-512 VNNI and AVX-VNNI); kernels: {names}")
    print(f"{ck.passed} passed, {ck.failed} failed")
    sys.exit(1 if ck.failed else 0)


if __name__ == "__main__":
    if "--inner" in sys.argv:
        inner()
    else:
        try:
            py = setup()
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"emulate: setup failed: {e}", file=sys.stderr)
            sys.exit(2)
        try:
            build()
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"emulate: building the image failed: {e}", file=sys.stderr)
            sys.exit(1)
        env = dict(os.environ, LD_PRELOAD=str(SHIM))
        sys.exit(subprocess.run([str(py), __file__, "--inner"], env=env).returncode)
