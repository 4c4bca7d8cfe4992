//! Model files: the manifest, the local model directory and the mirror it is filled from.
//!
//! Every model the project loads is listed in `models/manifest.toml` (path, bytes, sha256,
//! licence, source) and grouped into bundles ([`bundles`]). Before loading a model, callers ask
//! the store for its bundle; the store returns verified paths or a one-line error naming the file:
//!
//! ```no_run
//! use soustitre::models::{bundles, ModelStore};
//! let store = ModelStore::open_default()?; // paths::default_model_dir() + default_mirror()
//! let whisper = store.ensure(bundles::WHISPER_BASE)?;
//! let encoder = whisper.require("encoder.int8.onnx")?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! * A file already in the model directory whose size, mtime and sha256 are in the stamp file
//!   (`.verified`) is trusted without hashing; otherwise it is hashed once and stamped.
//! * A missing or corrupt file is copied from the [`Mirror`] (directory, `file://`, `http(s)://`)
//!   into a hidden temp file next to its target, hashed while copying, checked for size and
//!   sha256, and only then renamed into place. A bad download is deleted, never left in place.
//! * Progress goes to stderr ([`ProgressMode`]); events go to `tracing`.
//!
//! Latency: none on the media path. At startup, a stamped bundle costs a few `stat` calls; an
//! unstamped one costs hashing (164 MB in ~0.1 s on these 2 cores, SHA extensions, warm cache); a fetch costs the copy.
//!
//! Layout: `manifest` (parse + consistency), `mirror` (sources), `store` (ensure/verify),
//! `stamp` (verification cache), `progress` (stderr), `summary` (`fetch_all` for the CLI).

mod error;
mod manifest;
mod mirror;
mod progress;
mod stamp;
mod store;
mod summary;

pub use error::ModelError;
pub use manifest::{Bundle, EMBEDDED_MANIFEST, FileEntry, MANIFEST_SCHEMA, Manifest};
pub use mirror::Mirror;
pub use progress::ProgressMode;
pub use stamp::STAMP_FILE;
pub use store::{
    BundlePaths, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, FileStatus, ModelStore,
    ResolvedFile, StoreSettings, sha256_file,
};
pub use summary::{BundleReport, FetchSummary, fetch_all};

/// The bundle names the code asks for (keys of `[bundle.*]` in the manifest).
pub mod bundles {
    /// Whisper base (multilingual): encoder, decoder, tokenizer, config, mel front end.
    pub const WHISPER_BASE: &str = "whisper-base";
    /// Whisper tiny.en (English only), same files as `WHISPER_BASE`.
    pub const WHISPER_TINY_EN: &str = "whisper-tiny.en";
    /// Silero VAD v6.
    pub const SILERO_VAD: &str = "silero-vad";
    /// CAM++ speaker embedding.
    pub const CAMPPLUS: &str = "campplus";
    /// pyannote segmentation-3.0.
    pub const PYANNOTE_SEG3: &str = "pyannote-seg3";

    /// Every bundle, in the order `soustitre models fetch` would take them.
    pub const ALL: [&str; 5] = [
        SILERO_VAD,
        WHISPER_BASE,
        WHISPER_TINY_EN,
        CAMPPLUS,
        PYANNOTE_SEG3,
    ];
}
