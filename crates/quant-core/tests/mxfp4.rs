//! MXFP4 against the `gguf` package (`crates/quant-core/tests/fixtures/mxfp4.py`): every byte of every block and
//! every bit of the dequantized values.

use quant_core::{mxfp4, BlockFormat};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mxfp4");

fn read(name: &str) -> Vec<u8> {
    let path = format!("{DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn f32s(name: &str) -> Vec<f32> {
    read(name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn blocks_match_gguf_byte_for_byte() {
    let x = f32s("input.f32");
    let want = read("blocks.bin");
    assert_eq!(x.len(), 53 * 32);
    let got = mxfp4::quantize(&x).expect("finite whole blocks");
    for (b, (g, w)) in got.chunks(17).zip(want.chunks(17)).enumerate() {
        assert_eq!(g, w, "block {b}");
    }
    // llama.cpp's quantize_mxfp4 ignores an importance matrix, and so does quantize_weighted.
    let importance: Vec<f32> = (0..32).map(|i| 1.0 + i as f32).collect();
    assert_eq!(BlockFormat::MXFP4.quantize_weighted(&x, 32, &importance).expect("finite"), want);
    let values = mxfp4::dequantize(&want).expect("whole blocks");
    let want_values = f32s("values.f32");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&values), bits(&want_values));
}
