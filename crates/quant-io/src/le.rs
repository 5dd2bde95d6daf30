//! Little-endian values in files (safetensors, GGUF, imatrix): the one place their bytes are
//! converted.

use quant_traits::half::{bf16, f16};

/// Values stored little-endian in files (safetensors, GGUF, our parts): the one place their
/// bytes are converted. (A byte-casting crate such as bytemuck would read native order, which
/// is wrong for these little-endian formats on a big-endian host.)
pub trait LeBytes: Copy {
    /// Bytes per value.
    const SIZE: usize;
    /// Appends the value's bytes.
    fn put_le(self, out: &mut Vec<u8>);
    /// The value in `b` (exactly [`LeBytes::SIZE`] bytes).
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! le_bytes {
    ($t:ty, $n:expr, $to:expr, $from:expr) => {
        impl LeBytes for $t {
            const SIZE: usize = $n;
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&$to(self));
            }
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(b);
                $from(a)
            }
        }
    };
}

le_bytes!(f32, 4, f32::to_le_bytes, f32::from_le_bytes);
le_bytes!(f64, 8, f64::to_le_bytes, f64::from_le_bytes);
le_bytes!(i32, 4, i32::to_le_bytes, i32::from_le_bytes);
le_bytes!(f16, 2, |v: f16| v.to_bits().to_le_bytes(), |a| f16::from_bits(u16::from_le_bytes(a)));
le_bytes!(bf16, 2, |v: bf16| v.to_bits().to_le_bytes(), |a| bf16::from_bits(u16::from_le_bytes(a)));

/// The little-endian values in `b` (a trailing partial value is ignored).
pub fn read_le<T: LeBytes>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(T::SIZE).map(T::from_le).collect()
}

/// The values' little-endian bytes.
pub fn write_le<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for &v in values {
        v.put_le(&mut out);
    }
    out
}
