//! quant-io's GGUF reader on arbitrary bytes: counts, lengths, value types, nested arrays,
//! shapes, tensor types, alignments and offsets that lie, and truncation anywhere. Oracle: a
//! header it accepts has every tensor's bytes inside the data section, exactly its whole blocks
//! (`elements / block_len · block_bytes`), aligned, and apart from every other tensor, and a
//! block tensor's bytes decode to one value per element; a header it refuses gets a one-line
//! reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_io::gguf::Gguf;
use quant_io::Kind;

fuzz_target!(|bytes: &[u8]| {
    match Gguf::parse(bytes) {
        Ok(g) => {
            assert!(g.version == 2 || g.version == 3);
            assert!(g.alignment.is_power_of_two() && g.data_start % g.alignment == 0);
            let data_len = bytes.len() as u64 - g.data_start;
            let mut spans: Vec<(u64, u64)> = Vec::new();
            for t in &g.tensors {
                let elements: u64 = t.dims.iter().product();
                assert_eq!(t.dims[0] % t.ty.block_len, 0, "{}: rows of whole blocks", t.name);
                assert_eq!(t.bytes, elements / t.ty.block_len * t.ty.block_bytes, "{}: bytes against shape", t.name);
                assert_eq!(t.offset % g.alignment, 0, "{}: aligned", t.name);
                assert!(t.offset + t.bytes <= data_len, "{} outside the data", t.name);
                let data = g.data(bytes, t);
                assert_eq!(data.len() as u64, t.bytes);
                if let Kind::Blocks(format) = t.ty.kind {
                    if elements <= 1 << 16 {
                        let values = format.dequantize(data).expect("whole blocks decode");
                        assert_eq!(values.len() as u64, elements);
                    }
                }
                spans.push((t.offset, t.offset + t.bytes));
            }
            spans.sort_unstable();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlapping tensors");
            }
        }
        Err(e) => assert!(!e.0.is_empty() && !e.0.contains('\n'), "{e}"),
    }
});
