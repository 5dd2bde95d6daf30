//! Model files for the quant crates: what an inference engine or a tool reads and writes.
//!
//! * [`safetensors`]: safetensors files through a memory map, the header validated before
//!   anything is trusted, floating tensors decoded to `f32`/`f64`/`f16`/`bf16`;
//! * [`gguf`]: llama.cpp's GGUF (versions 2 and 3): every key/value and tensor, each checked
//!   against the file; and the header of a file to write;
//! * [`model`]: either of the two, told apart by GGUF's magic number, tensor by tensor: name,
//!   shape, what the bytes hold ([`Kind`]: plain values or a llama.cpp [`quant_core::BlockFormat`])
//!   and the bytes themselves, borrowed from the memory map, ready for
//!   `quant_matmul::GroupWeights`;
//! * [`imatrix`]: llama.cpp's importance matrices (`.dat` and GGUF);
//! * [`writer`]: a file written tensor by tensor into a temporary file that is renamed over the
//!   destination only when everything succeeded (never a partial output file);
//! * [`le`]: little-endian values, the one place file bytes become numbers.
//!
//! Every error names the file and what is wrong with it ([`IoError`]); a hostile file cannot make
//! a reader allocate more than the file holds, read past its end, or panic.
//!
//! ```
//! use quant_io::{Kind, ModelFile};
//!
//! # let dir = std::env::temp_dir().join(format!("quant-io-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("m.gguf");
//! # std::fs::write(&path, quant_testkit::gguf::sample().bytes())?;
//! let file = ModelFile::open(&path)?; // GGUF or safetensors
//! for i in 0..file.len() {
//!     let t = file.tensor(i);
//!     if let Kind::Blocks(format) = t.kind {
//!         // `t.bytes` are the file's own bytes of `format`'s blocks, `t.shape` outermost first.
//!         assert_eq!(t.bytes.len(), format.bytes_for(t.elements())?);
//!     }
//! }
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod gguf;
pub mod imatrix;
pub mod kind;
pub mod le;
pub mod model;
pub mod safetensors;
pub mod writer;

pub use ::safetensors::Dtype;
pub use error::{IoError, Malformed};
pub use kind::Kind;
pub use model::{ModelFile, Tensor};
