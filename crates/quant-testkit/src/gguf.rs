//! GGUF files built by hand, byte by byte, for the tests of the readers and of the commands
//! that read them: any key/value or tensor (valid or not), in any order, at any alignment.

/// A GGUF file built by hand: key/values and tensors (name, dims, type, data).
pub struct Builder {
    /// Format version written.
    pub version: u32,
    /// Key/values: key, value type id, the value's bytes.
    pub kv: Vec<(String, u32, Vec<u8>)>,
    /// Tensors: name, dimensions (innermost first), ggml type id, data.
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    /// Alignment of the data section and of every tensor in it.
    pub alignment: u64,
}

/// A GGUF string: its `u64` byte length, then its bytes.
pub fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl Builder {
    /// An empty version 3 file, alignment 32.
    #[must_use]
    pub fn new() -> Self {
        Builder { version: 3, kv: Vec::new(), tensors: Vec::new(), alignment: 32 }
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, t, v) in &self.kv {
            out.extend(string(k));
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            out.extend(string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        while !(out.len() as u64).is_multiple_of(self.alignment) {
            out.push(0);
        }
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// The bytes of llama.cpp's `Q4_0` for 64 values of 0.5: two blocks of `d = 0.5 / -8`
/// (`f16` `0xAC00`) and sixteen code bytes of 0 (`0.5 / d + 8.5` truncates to 0).
pub const Q4_0_OF_64_HALVES: [u8; 36] = {
    let mut b = [0u8; 36];
    b[1] = 0xAC;
    b[19] = 0xAC;
    b
};

/// A small valid file: three key/values (an architecture, a block count, an array of strings)
/// and two tensors: `w`, `F32` `[2, 32]` holding `0.25 · i`, and `q`, `Q4_0` `[64]`
/// ([`Q4_0_OF_64_HALVES`]).
#[must_use]
pub fn sample() -> Builder {
    let mut b = Builder::new();
    b.kv.push(("general.architecture".into(), 8, string("llama")));
    b.kv.push(("llama.block_count".into(), 4, 2u32.to_le_bytes().to_vec()));
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&2u64.to_le_bytes());
    arr.extend(string("a"));
    arr.extend(string("b"));
    b.kv.push(("tokenizer.ggml.tokens".into(), 9, arr));
    let w: Vec<u8> = (0..64).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    b.tensors.push(("w".into(), vec![32, 2], 0, w));
    b.tensors.push(("q".into(), vec![64], 2, Q4_0_OF_64_HALVES.to_vec()));
    b
}
