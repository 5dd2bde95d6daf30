//! llama.cpp's block decoder on arbitrary bytes, every format. Oracle: whole blocks decode to
//! `blocks · block_len` values and anything else is `NotABlockMultiple`; Q8_0, Q4_0, Q4_1 and MXFP4
//! equal a direct reading of ggml's block layout (f16 scale, then the codes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_core::quant_traits::half::f16;
use quant_core::{BlockFormat, QuantError};

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// ggml's layouts read directly, block by block (`None` for the formats not written out here).
fn direct(format: BlockFormat, bytes: &[u8]) -> Option<Vec<f32>> {
    let mut out = Vec::new();
    for b in bytes.chunks_exact(format.block_bytes()) {
        match format {
            BlockFormat::Q8_0 => out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * f16_at(b, 0))),
            BlockFormat::Q4_0 => {
                let d = f16_at(b, 0);
                let lo = b[2..18].iter().map(|&q| f32::from(i16::from(q & 15) as i8 - 8) * d);
                let hi = b[2..18].iter().map(|&q| f32::from(i16::from(q >> 4) as i8 - 8) * d);
                out.extend(lo.chain(hi));
            }
            BlockFormat::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let lo = b[4..20].iter().map(|&q| f32::from(q & 15) * d + m);
                let hi = b[4..20].iter().map(|&q| f32::from(q >> 4) * d + m);
                out.extend(lo.chain(hi));
            }
            BlockFormat::MXFP4 => {
                // OCP's E8M0 scale 2^(e - 127) times the E2M1 value (ggml stores both halved/doubled;
                // its table's code 8 is +0, not E2M1's -0, hence the `+ 0.0`).
                let scale = 2f64.powi(i32::from(b[0]) - 127);
                let e2m1 = |c: u8| {
                    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][usize::from(c & 7)] * if c & 8 != 0 { -1.0 } else { 1.0 }
                };
                let lo = b[1..17].iter().map(|&q| (e2m1(q & 15) * scale + 0.0) as f32);
                let hi = b[1..17].iter().map(|&q| (e2m1(q >> 4) * scale + 0.0) as f32);
                out.extend(lo.chain(hi));
            }
            _ => return None,
        }
    }
    Some(out)
}

fuzz_target!(|bytes: &[u8]| {
    for format in BlockFormat::ALL {
        let (bb, bl) = (format.block_bytes(), format.block_len());
        match format.dequantize(bytes) {
            Ok(v) => {
                assert!(bytes.len() % bb == 0, "{format:?} decoded a partial block");
                assert_eq!(v.len(), bytes.len() / bb * bl);
                if let Some(want) = direct(format, bytes) {
                    let same =
                        v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                    assert!(same, "{format:?} differs from ggml's layout");
                }
            }
            Err(QuantError::NotABlockMultiple { len, block, .. }) => {
                assert!(bytes.len() % bb != 0 && len == bytes.len() && block == bb, "{format:?}");
            }
            Err(e) => panic!("{format:?}: undocumented error {e}"),
        }
    }
});
