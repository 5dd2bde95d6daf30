//! The emulation harness: the real quant-core and quant-matmul, built `no_std` with the VNNI
//! tiers' CPU features enabled at compile time (so `quant_traits::cpu` reports them), linked
//! into one flat image that `run.py` executes under an emulated CPU that has AVX-512 VNNI and
//! AVX-VNNI. `run.py` writes a [`Cmd`] and its inputs into guest memory, calls [`entry`], and
//! checks the outputs against exact references it computes itself.
//!
//! Nothing here is part of the library: it is test scaffolding for the tiers this project's
//! CPU may lack.

#![no_std]
#![allow(clippy::missing_safety_doc, missing_docs)]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

use quant_core::{dequantize_into, quantize_into, BlockFormat, QuantParams, QuantSpec};
use quant_matmul::{
    ActivationBlocks, Gemm, GroupGemm, GroupWeights, KernelChoice, MatMut, MatRef, Operand, Operands, Requant, Scale,
    Tier, ZeroPoint,
};
use quant_traits::QuantError;
use quant_traits::{I4x2, U4x2};

/// A bump allocator over a static arena, reset at every call.
struct Bump {
    arena: UnsafeCell<[u8; ARENA]>,
    next: UnsafeCell<usize>,
}

const ARENA: usize = 32 << 20;

// SAFETY: the emulated program has one thread.
unsafe impl Sync for Bump {}

// SAFETY: hands out disjoint, aligned ranges of the arena; never frees (reset between calls).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread; the arena outlives every allocation.
        unsafe {
            let next = &mut *self.next.get();
            let base = self.arena.get().cast::<u8>();
            let start = (*next + layout.align() - 1) & !(layout.align() - 1);
            if start + layout.size() > ARENA {
                return core::ptr::null_mut();
            }
            *next = start + layout.size();
            base.add(start)
        }
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static HEAP: Bump = Bump { arena: UnsafeCell::new([0; ARENA]), next: UnsafeCell::new(0) };

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // An undefined instruction stops the emulator with #UD at a known place: a panic.
    loop {
        // SAFETY: raises #UD, which the harness reports as a panic.
        unsafe { core::arch::asm!("ud2") };
    }
}

// The memory functions the compiler calls (no libc here). Volatile accesses keep the compiler
// from turning these loops back into calls to themselves.
#[no_mangle]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: caller's contract.
        unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
    }
    d
}

#[no_mangle]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) < (s as usize) {
        for i in 0..n {
            // SAFETY: caller's contract.
            unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: caller's contract.
            unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        }
    }
    d
}

#[no_mangle]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: caller's contract.
        unsafe { d.add(i).write_volatile(c as u8) };
    }
    d
}

#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: caller's contract.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded.
    unsafe { memcmp(a, b, n) }
}

/// One request, written by `run.py` (every field 8 bytes, little-endian).
#[repr(C)]
pub struct Cmd {
    /// 1: GEMM; 2: quantize f32 -> 8-bit; 3: dequantize 8-bit -> f32; 4: kernel names;
    /// 5: group-quantized multiply on `tier` against the portable reference (`status`: the
    /// number of outputs whose bits differ, or an error code).
    op: u64,
    /// 0 portable, 1 avx2, 2 avxvnni, 3 avx512vnni, 4 auto.
    tier: u64,
    /// A (or the codes) signed (`i8`) rather than `u8`.
    signed: u64,
    /// B packed once with `Gemm::pack_b` (else packed per call).
    packed: u64,
    m: u64,
    k: u64,
    n: u64,
    a: u64,
    b: u64,
    /// Zero points: 0 none, 1 per tensor (`za`), 2 per channel (`za_ptr`, `i32`s).
    za_kind: u64,
    za: i64,
    za_ptr: u64,
    zb_kind: u64,
    zb: i64,
    zb_ptr: u64,
    /// 0: `i32` output; 1: `f32` output with scales 1 and no bias; 2: `i8` requantized with
    /// the float multiplier `f64::from_bits(scale_bits) as f32` and zero point `zp`.
    out_kind: u64,
    out: u64,
    seven_bit: u64,
    /// For quantize/dequantize: the element count, the scale's `f64` bits, the zero point.
    len: u64,
    scale_bits: u64,
    zp: i64,
    /// Result: 0 ok, otherwise an error code (see `code`).
    status: i64,
    /// Kernel names (op 4), NUL-padded.
    names: [u8; 64],
}

fn code(e: &QuantError) -> i64 {
    match e {
        QuantError::KernelUnavailable { .. } => 10,
        QuantError::PackedForOtherKernel { .. } => 11,
        QuantError::DepthTooLarge { .. } => 12,
        QuantError::ActivationOutOfRange { .. } => 13,
        QuantError::NonFinite { .. } => 14,
        _ => 99,
    }
}

fn choice(tier: u64) -> KernelChoice {
    match tier {
        0 => KernelChoice::Portable,
        1 => KernelChoice::Avx2,
        2 => KernelChoice::AvxVnni,
        3 => KernelChoice::Avx512Vnni,
        _ => KernelChoice::Auto,
    }
}

/// # Safety
/// `p` points to `len` readable values of `T` (or `len` is 0).
unsafe fn slice<'a, T>(p: u64, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: caller's contract.
    unsafe { core::slice::from_raw_parts(p as *const T, len) }
}

/// # Safety
/// As [`slice`], writable.
unsafe fn slice_mut<'a, T>(p: u64, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: caller's contract.
    unsafe { core::slice::from_raw_parts_mut(p as *mut T, len) }
}

/// # Safety
/// The pointers in `c` are valid for the shapes in `c`.
unsafe fn zero_point<'a>(kind: u64, v: i64, p: u64, len: usize) -> ZeroPoint<'a> {
    match kind {
        1 => ZeroPoint::PerTensor(v as i32),
        // SAFETY: caller's contract.
        2 => ZeroPoint::PerChannel(unsafe { slice::<i32>(p, len) }),
        _ => ZeroPoint::None,
    }
}

/// # Safety
/// The pointers in `c` are valid for the shapes in `c`.
unsafe fn gemm<A: Operand>(c: &Cmd) -> Result<(), QuantError> {
    let (m, k, n) = (c.m as usize, c.k as usize, c.n as usize);
    let g = Gemm::new().kernel(choice(c.tier)).seven_bit_activations(c.seven_bit != 0);
    // SAFETY: caller's contract for every pointer below.
    let (a, b, za, zb) = unsafe {
        (
            MatRef::row_major(slice::<A>(c.a, m * k), m, k)?,
            MatRef::row_major(slice::<i8>(c.b, k * n), k, n)?,
            zero_point(c.za_kind, c.za, c.za_ptr, m),
            zero_point(c.zb_kind, c.zb, c.zb_ptr, n),
        )
    };
    let packed;
    let ops = if c.packed != 0 {
        packed = g.pack_b(b)?;
        Operands::packed(a, za, &packed, zb)?
    } else {
        Operands::new(a, za, b, zb)?
    };
    if c.out_kind == 0 {
        // SAFETY: caller's contract.
        let out = unsafe { slice_mut::<i32>(c.out, m * n) };
        g.i32(&ops, MatMut::row_major(out, m, n)?)
    } else if c.out_kind == 1 {
        // SAFETY: caller's contract.
        let out = unsafe { slice_mut::<f32>(c.out, m * n) };
        g.f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(out, m, n)?)
    } else {
        // SAFETY: caller's contract.
        let out = unsafe { slice_mut::<i8>(c.out, m * n) };
        let multiplier = Scale::PerTensor(f64::from_bits(c.scale_bits) as f32);
        g.requant(&ops, Requant::Float { multiplier, zero_point: c.zp as i32 }, MatMut::row_major(out, m, n)?)
    }
}

/// # Safety
/// The pointers in `c` are valid for `c.len` elements.
unsafe fn quantize(c: &Cmd) -> Result<(), QuantError> {
    let len = c.len as usize;
    let scale = f64::from_bits(c.scale_bits) as f32;
    // SAFETY: caller's contract.
    let x = unsafe { slice::<f32>(c.a, len) };
    if c.signed != 0 {
        let spec = QuantSpec::symmetric(8)?;
        let params = QuantParams::new(spec, scale, c.zp)?;
        // SAFETY: caller's contract.
        quantize_into(x, spec, &params, unsafe { slice_mut::<i8>(c.out, len) })
    } else {
        let spec = QuantSpec::asymmetric(8)?;
        let params = QuantParams::new(spec, scale, c.zp)?;
        // SAFETY: caller's contract.
        quantize_into(x, spec, &params, unsafe { slice_mut::<u8>(c.out, len) })
    }
}

/// # Safety
/// The pointers in `c` are valid for `c.len` elements.
unsafe fn dequantize(c: &Cmd) -> Result<(), QuantError> {
    let len = c.len as usize;
    let scale = f64::from_bits(c.scale_bits) as f32;
    // SAFETY: caller's contract.
    let out = unsafe { slice_mut::<f32>(c.out, len) };
    if c.signed != 0 {
        let spec = QuantSpec::symmetric(8)?;
        let params = QuantParams::new(spec, scale, c.zp)?;
        // SAFETY: caller's contract.
        dequantize_into(unsafe { slice::<i8>(c.a, len) }, len, &params, out)
    } else {
        let spec = QuantSpec::asymmetric(8)?;
        let params = QuantParams::new(spec, scale, c.zp)?;
        // SAFETY: caller's contract.
        dequantize_into(unsafe { slice::<u8>(c.a, len) }, len, &params, out)
    }
}

/// Op 5. Weights: `packed` selects the format (0 `Q4_0`, 1 `Q4_1`, 2 `Q8_0`, 6 `Q4_K`, 7 `Q6_K`
/// bytes at `b`, `len` bytes; 3 asymmetric 4-bit codes at `b` with `f32` scales at `za_ptr` and
/// `i64` zero points at `zb_ptr`; 4 symmetric 4-bit; 5 symmetric 8-bit), groups of `za` inputs;
/// `x` (`f32`, `m x k`) at `a`; the tier's int8-mode result at `out`. Returns the number of
/// outputs, of both modes (the int8 one with both kinds of activation blocks), that differ in
/// their bits from the portable reference's.
///
/// # Safety
/// The pointers in `c` are valid for the shapes in `c`.
unsafe fn group(c: &Cmd) -> Result<i64, QuantError> {
    let (m, k, n, g) = (c.m as usize, c.k as usize, c.n as usize, c.za as usize);
    let groups = n * (k / g.max(1));
    // SAFETY: caller's contract for every pointer below.
    let w = unsafe {
        match c.packed {
            0 => GroupWeights::q4_0(slice::<u8>(c.b, c.len as usize), n, k)?,
            1 => GroupWeights::q4_1(slice::<u8>(c.b, c.len as usize), n, k)?,
            2 => GroupWeights::q8_0(slice::<u8>(c.b, c.len as usize), n, k)?,
            3 => GroupWeights::asym4(
                slice::<U4x2>(c.b, c.len as usize),
                slice::<f32>(c.za_ptr, groups),
                slice::<i64>(c.zb_ptr, groups),
                n,
                k,
                g,
            )?,
            4 => GroupWeights::sym4(slice::<I4x2>(c.b, c.len as usize), slice::<f32>(c.za_ptr, groups), n, k, g)?,
            6 => GroupWeights::from_blocks(BlockFormat::Q4_K, slice::<u8>(c.b, c.len as usize), n, k)?,
            7 => GroupWeights::from_blocks(BlockFormat::Q6_K, slice::<u8>(c.b, c.len as usize), n, k)?,
            _ => GroupWeights::sym8(slice::<i8>(c.b, c.len as usize), slice::<f32>(c.za_ptr, groups), n, k, g)?,
        }
    };
    // SAFETY: caller's contract.
    let (x, out) = unsafe { (slice::<f32>(c.a, m * k), slice_mut::<f32>(c.out, m * n)) };
    let (mut want, mut float) = (alloc::vec![0f32; m * n], alloc::vec![0f32; m * n]);
    let x = MatRef::row_major(x, m, k)?;
    let (reference, tier) = (GroupGemm::new().kernel(KernelChoice::Portable), GroupGemm::new().kernel(choice(c.tier)));
    let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(p, q)| p.to_bits() != q.to_bits()).count() as i64;
    // The float mode first (its result stays in `float`), then the int8 mode's into `out`.
    reference.float_activations(x, &w, None, MatMut::row_major(&mut want, m, n)?)?;
    tier.float_activations(x, &w, None, MatMut::row_major(&mut float, m, n)?)?;
    let float_differ = differ(&float, &want);
    // Two-level weights (6, 7) also with one activation scale a group; its result is dropped.
    let (reference, tier) =
        (reference.activation_blocks(ActivationBlocks::Group), tier.activation_blocks(ActivationBlocks::Group));
    reference.int8_activations(x, &w, None, MatMut::row_major(&mut want, m, n)?)?;
    tier.int8_activations(x, &w, None, MatMut::row_major(&mut float, m, n)?)?;
    let group_differ = differ(&float, &want);
    let (reference, tier) = (
        reference.activation_blocks(ActivationBlocks::SuperBlock),
        tier.activation_blocks(ActivationBlocks::SuperBlock),
    );
    reference.int8_activations(x, &w, None, MatMut::row_major(&mut want, m, n)?)?;
    tier.int8_activations(x, &w, None, MatMut::row_major(out, m, n)?)?;
    Ok(differ(out, &want) + float_differ + group_differ)
}

fn names(c: &mut Cmd) -> Result<(), QuantError> {
    let matmul = quant_matmul::selected_kernel()?;
    let core = quant_core::selected_kernel()?;
    let best = quant_traits::cpu::best_tier();
    let mut at = 0;
    for part in [matmul, " ", core, " ", best.name()] {
        for &byte in part.as_bytes() {
            if at < c.names.len() {
                c.names[at] = byte;
                at += 1;
            }
        }
    }
    let _ = Tier::ALL;
    Ok(())
}

/// The one entry point (first in the image).
///
/// # Safety
/// `cmd` points to a [`Cmd`] whose pointers are valid for its shapes.
#[no_mangle]
#[link_section = ".text.entry"]
pub unsafe extern "C" fn entry(cmd: *mut Cmd) {
    // SAFETY: one thread; every allocation of the previous call is dead.
    unsafe { *HEAP.next.get() = 0 };
    // SAFETY: caller's contract.
    let c = unsafe { &mut *cmd };
    let result = match c.op {
        // SAFETY (all three): caller's contract.
        1 if c.signed != 0 => unsafe { gemm::<i8>(c) },
        1 => unsafe { gemm::<u8>(c) },
        2 => unsafe { quantize(c) },
        3 => unsafe { dequantize(c) },
        4 => names(c),
        // SAFETY: caller's contract.
        5 => match unsafe { group(c) } {
            Ok(differ) => {
                c.status = differ;
                return;
            }
            Err(e) => Err(e),
        },
        _ => Err(QuantError::UnknownKernel),
    };
    c.status = match result {
        Ok(()) => 0,
        Err(e) => code(&e),
    };
}

/// The prebuilt `alloc` refers to the unwinding personality; nothing unwinds here (panics
/// abort), so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
