//! The one loop every file `quant` writes goes through: each input tensor converted (by the
//! command's encoder), copied as it is, or left out, in file order, each tensor's pages released
//! after it (so the resident size stays near one tensor), into a file whose every size was
//! planned before any data was computed; one progress bar over the converted input bytes, and
//! one summary of what was written.

use std::path::Path;

use quant_io::writer::Writer;
use quant_io::{ModelFile, Tensor};

use crate::{CliError, Progress};

/// What happens to one input tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Written by the command's encoder.
    Convert,
    /// Copied as it is (by the command's copier: GGUF pads it).
    Copy,
    /// Left out (consumed by another tensor's conversion).
    Drop,
}

/// What a run wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Tensors converted.
    pub converted: usize,
    /// Tensors copied as they are.
    pub copied: usize,
    /// Bytes of the input file.
    pub read: u64,
    /// Bytes of the file written.
    pub written: u64,
    /// Per stored type, what the output holds (set by the format from its plan).
    pub types: Vec<TypeTally>,
}

/// Per stored type, the tensors an output holds, added up while a format plans its file.
#[derive(Clone, Debug, Default)]
pub struct Tallies(Vec<TypeTally>);

impl Tallies {
    /// Counts one tensor of type `name`: its `bytes` in the output and its `elements` values.
    pub fn add(&mut self, name: &str, bytes: u64, elements: u64) {
        match self.0.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.tensors += 1;
                t.bytes += bytes;
                t.elements += elements;
            }
            None => self.0.push(TypeTally { name: name.to_string(), tensors: 1, bytes, elements }),
        }
    }

    /// The tallies, in the order their types first appeared.
    pub fn into_vec(self) -> Vec<TypeTally> {
        self.0
    }
}

/// The tensors of one stored type in an output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeTally {
    /// The type's name (`"Q4_K"`, `"F32"`).
    pub name: String,
    /// Tensors of that type.
    pub tensors: usize,
    /// Their bytes (before padding).
    pub bytes: u64,
    /// Their values.
    pub elements: u64,
}

impl Written {
    /// The summary: how many tensors became what and the sizes, then a line per stored type
    /// (tensors, bytes, bits per weight) when the format records them.
    pub fn lines(&self, output: &Path, converted_to: &str) -> Vec<String> {
        let mut lines = vec![format!(
            "wrote {}: {} {converted_to}, {} copied as they are; {} from {}",
            output.display(),
            tensors(self.converted),
            self.copied,
            size_text(self.written),
            size_text(self.read)
        )];
        for t in &self.types {
            let bpw = 8.0 * t.bytes as f64 / t.elements.max(1) as f64;
            lines.push(format!("  {}: {}, {}, {bpw:.3} bpw", t.name, tensors(t.tensors), size_text(t.bytes)));
        }
        lines
    }
}

/// `n tensors`, or `1 tensor`.
fn tensors(n: usize) -> String {
    if n == 1 {
        "1 tensor".to_string()
    } else {
        format!("{n} tensors")
    }
}

/// A file size for people: MB with one decimal from a megabyte up, bytes below.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{bytes} bytes")
    }
}

/// Writes every tensor of `source` by its step into `w` (created with the plan those steps
/// give), then finishes `w` (renamed over `output`). `what` names the phase on the progress bar.
///
/// # Errors
/// The first error of `convert`, `copy` or the writer; nothing is left at `output` then.
pub fn write_all(
    source: &ModelFile,
    steps: &[Step],
    mut w: Writer,
    output: &Path,
    (progress, what): (&Progress, &str),
    mut convert: impl FnMut(usize, &Tensor<'_>, &mut Writer) -> Result<(), CliError>,
    copy: impl Fn(&Tensor<'_>, &mut Writer) -> Result<(), CliError>,
) -> Result<Written, CliError> {
    let work: usize =
        (0..source.len()).filter(|&i| steps[i] == Step::Convert).map(|i| source.tensor(i).bytes.len()).sum();
    progress.start(work as u64, what);
    let (mut converted, mut copied) = (0, 0);
    for (i, step) in steps.iter().enumerate() {
        let t = source.tensor(i);
        match step {
            Step::Convert => {
                progress.message(t.name);
                convert(i, &t, &mut w)?;
                progress.advance(t.bytes.len() as u64);
                converted += 1;
            }
            Step::Copy => {
                copy(&t, &mut w)?;
                copied += 1;
            }
            Step::Drop => {}
        }
        source.release(i);
    }
    progress.finish();
    w.finish()?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(Written { converted, copied, read: size(source.path()), written: size(output), types: Vec::new() })
}

/// Copies a tensor's bytes as they are.
pub fn copy_bytes(t: &Tensor<'_>, w: &mut Writer) -> Result<(), CliError> {
    Ok(w.write(t.bytes)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_bytes_then_megabytes() {
        assert_eq!(super::size_text(999_999), "999999 bytes");
        assert_eq!(super::size_text(1_000_000), "1.0 MB");
        assert_eq!(super::size_text(78_749_999), "78.7 MB");
    }
}
