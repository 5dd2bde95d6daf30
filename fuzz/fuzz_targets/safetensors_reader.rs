//! quant-io's safetensors reader on arbitrary files: headers, dtypes, shapes, offsets,
//! truncation. Oracle: a file it opens lists tensors whose byte ranges lie inside the file and
//! hold exactly `elements · dtype size` bytes, and the float ones decode to one value per
//! element; a file it refuses gets a one-line message naming the file.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use quant_io::safetensors::SafetensorsFile;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("quant-fuzz-{}.safetensors", std::process::id()))
}

fuzz_target!(|bytes: &[u8]| {
    let path = scratch();
    std::fs::write(&path, bytes).expect("scratch file");
    match SafetensorsFile::open(&path) {
        Ok(m) => {
            assert_eq!(m.file_bytes(), bytes.len());
            for e in m.entries() {
                assert!(e.start <= e.end && e.end <= bytes.len(), "{} outside the file", e.name);
                let size = e.dtype.bitsize();
                assert_eq!(e.bytes() * 8, e.elements() * size, "{}: bytes against shape", e.name);
                assert_eq!(m.bytes(&e), &bytes[e.start..e.end]);
                if e.is_float() {
                    let values = m.floats(&e).expect("a float tensor decodes");
                    assert_eq!(values.to_f64().len(), e.elements());
                } else {
                    assert!(m.floats(&e).is_err());
                }
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with(&path.display().to_string()) && !text.contains('\n'), "{text}");
        }
    }
});
