//! Writing safetensors files tensor by tensor: the header first (every size is known before any
//! data is computed), then each tensor's bytes as they are produced, into a temporary file in the
//! destination's folder (`tempfile`, which deletes it when dropped unfinished) that is renamed
//! over the destination only when everything succeeded.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::Dtype;
use serde_json::{json, Map, Value};

use crate::safetensors::dtype_name;
use crate::IoError;

/// One tensor to be written: name, dtype, shape and byte count (checked when written).
#[derive(Clone, Debug)]
pub struct Planned {
    /// Name in the header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes of data.
    pub bytes: usize,
}

/// A safetensors file being written.
pub struct Writer {
    dest: PathBuf,
    out: Option<BufWriter<tempfile::NamedTempFile>>,
    plan: Vec<Planned>,
    next: usize,
    written: usize,
}

impl Writer {
    /// Starts `dest` with the given tensors (written later in this order) and metadata.
    pub fn create(dest: &Path, plan: Vec<Planned>, metadata: BTreeMap<String, String>) -> Result<Self, IoError> {
        let mut header = Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), json!(metadata));
        }
        let mut offset = 0usize;
        for t in &plan {
            if header.contains_key(&t.name) {
                return Err(IoError::plan(dest, format!("two tensors would be named {:?}", t.name)));
            }
            header.insert(
                t.name.clone(),
                json!({"dtype": dtype_name(t.dtype), "shape": t.shape, "data_offsets": [offset, offset + t.bytes]}),
            );
            offset += t.bytes;
        }
        let mut text = Value::Object(header).to_string().into_bytes();
        // Pad with spaces to a multiple of 8, so the data starts aligned (as safetensors does).
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let len = u64::try_from(text.len()).unwrap_or(u64::MAX);
        let mut head = len.to_le_bytes().to_vec();
        head.extend_from_slice(&text);
        Self::with_header(dest, &head, plan)
    }

    /// Starts `dest` with `header` (already serialized, any format) followed by the tensors of
    /// `plan` (their bytes written later, in this order, each exactly as long as planned).
    pub fn with_header(dest: &Path, header: &[u8], plan: Vec<Planned>) -> Result<Self, IoError> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let prefix = format!(".{file_name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // tempfile makes its files private (0600); an output model is an ordinary file.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = builder
            .tempfile_in(dir)
            .map_err(|e| IoError::os(dest, format!("cannot create a temporary file in {}", dir.display()), e))?;
        let mut w = Writer {
            dest: dest.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            plan,
            next: 0,
            written: 0,
        };
        w.raw(header)?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        let dest = self.dest.clone();
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(|e| IoError::os(&dest, "write failed", e)),
            None => Err(IoError::plan(&dest, "write after finish")),
        }
    }

    /// Appends bytes of the current tensor; moves to the next one when it is complete.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        let Some(t) = self.plan.get(self.next) else {
            return Err(IoError::plan(&self.dest, "more data than planned"));
        };
        if self.written + bytes.len() > t.bytes {
            return Err(IoError::plan(&self.dest, format!("tensor {:?}: more bytes than its shape holds", t.name)));
        }
        self.raw(bytes)?;
        self.written += bytes.len();
        if self.written == self.plan[self.next].bytes {
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Flushes, syncs and renames the temporary file over the destination.
    pub fn finish(mut self) -> Result<(), IoError> {
        if self.next != self.plan.len() {
            let name = self.plan[self.next].name.clone();
            return Err(IoError::plan(&self.dest, format!("tensor {name:?} was not written")));
        }
        let out = self.out.take().ok_or_else(|| IoError::plan(&self.dest, "finished twice"))?;
        // On any failure the temporary file is dropped, which deletes it.
        let file = out.into_inner().map_err(|e| IoError::os(&self.dest, "write failed", e.into_error()))?;
        file.as_file().sync_all().map_err(|e| IoError::os(&self.dest, "sync failed", e))?;
        file.persist(&self.dest).map(|_| ()).map_err(|e| IoError::os(&self.dest, "cannot rename into place", e.error))
    }
}
