//! The errors of reading and writing model files: each names the file and says what is wrong
//! with it, on one line.

use std::path::{Path, PathBuf};

/// A problem with a file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused: opening, mapping, creating, writing, syncing, renaming.
    #[error("{}: {what}: {source}", path.display())]
    Os {
        /// The file.
        path: PathBuf,
        /// What was being done (`"cannot open"`, `"write failed"`, ...).
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes break the file's format: a truncation, a header that lies, a value of the wrong
    /// type, a tensor outside the data.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor, key or offset.
        reason: String,
    },
    /// A valid file asked for something this crate does not do with it (an integer tensor's
    /// values as floats, a dtype a format cannot hold).
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was asked, and what is supported.
        reason: String,
    },
    /// A file being written was used against its plan: two tensors of one name, more bytes
    /// than a tensor holds, a tensor left unwritten.
    #[error("{}: {reason}", path.display())]
    Plan {
        /// The file being written.
        path: PathBuf,
        /// What went against the plan.
        reason: String,
    },
}

impl IoError {
    pub(crate) fn os(path: &Path, what: impl Into<String>, source: std::io::Error) -> Self {
        IoError::Os { path: path.to_path_buf(), what: what.into(), source }
    }

    pub(crate) fn malformed(path: &Path, reason: impl Into<String>) -> Self {
        IoError::Malformed { path: path.to_path_buf(), reason: reason.into() }
    }

    pub(crate) fn unsupported(path: &Path, reason: impl Into<String>) -> Self {
        IoError::Unsupported { path: path.to_path_buf(), reason: reason.into() }
    }

    pub(crate) fn plan(path: &Path, reason: impl Into<String>) -> Self {
        IoError::Plan { path: path.to_path_buf(), reason: reason.into() }
    }
}

/// Bytes that break their format, found by a parser that has no file name (GGUF headers and
/// imatrix files read from memory); the file-level readers turn it into
/// [`IoError::Malformed`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<String> for Malformed {
    fn from(s: String) -> Self {
        Malformed(s)
    }
}

impl From<&str> for Malformed {
    fn from(s: &str) -> Self {
        Malformed(s.to_string())
    }
}
