//! Errors of the model store: one line each, naming the file concerned.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading the manifest, fetching or verifying a model file.
///
/// `file` fields hold the file's path as written in the manifest (e.g.
/// `whisper-base/encoder.int8.onnx`), or a full path / URL where that is the more useful thing to
/// show (a corrupt copy on disk or in the mirror).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The code asked for a bundle the manifest does not define.
    #[error("unknown model bundle `{bundle}` (the manifest defines: {known})")]
    UnknownBundle { bundle: String, known: String },

    /// `BundlePaths::require` / `ModelStore::path` asked for a file that is not in the bundle.
    #[error("model bundle `{bundle}` has no file `{file}`")]
    UnknownFile { bundle: String, file: String },

    /// A model file is missing locally (or corrupt) and there is no mirror to fetch it from.
    #[error(
        "model file {file} is not in {dir} and no model mirror is configured: set SOUSTITRE_MODEL_MIRROR \
         to a directory or an http(s):// URL holding the model mirror"
    )]
    NoMirror { file: String, dir: PathBuf },

    /// The mirror answered but does not have the file (missing local file, HTTP 404/410).
    #[error("model file {file} is not in the mirror {mirror}")]
    MirrorMissing { file: String, mirror: String },

    /// Transport error or unexpected HTTP status while fetching.
    #[error("fetching {url} failed: {detail}")]
    Http { url: String, detail: String },

    /// The file's content does not hash to the manifest's sha256.
    #[error("sha256 mismatch for {file}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },

    /// The file does not have the manifest's size. For an HTTP body longer than expected, `actual`
    /// is where the download was cut (expected + 1).
    #[error("size mismatch for {file}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    /// Filesystem error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The manifest cannot be read, parsed or is inconsistent.
    #[error("model manifest: {0}")]
    Manifest(String),

    /// A mirror string that is neither a directory nor an http(s)/file URL.
    #[error("invalid model mirror `{mirror}`: {reason}")]
    InvalidMirror { mirror: String, reason: String },

    /// A `StoreSettings` field out of range (checked once, when the store is built).
    #[error("model store setting `{field}`: {reason}")]
    InvalidSettings { field: &'static str, reason: String },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
