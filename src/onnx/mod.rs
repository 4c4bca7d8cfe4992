//! ONNX Runtime lifecycle: load the shared library once, build sessions with the project's
//! threading policy, and turn `ort` errors into typed, model-named errors.
//!
//! Threading: every session runs with one intra-op and one inter-op thread. On small machines
//! this is as fast as two threads per session and lets several tracks run side by side, each on
//! its own worker thread.
//!
//! Memory: the sessions of one model share its weights and their packed forms ([`shared`]), so
//! each track's recognizer adds its working memory, not another copy of the model.

pub mod graph;
pub mod shared;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

/// Errors from the inference runtime, each naming the library or model involved.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(
        "ONNX Runtime library {path} could not be loaded: {detail} (run `make setup` or set ORT_DYLIB_PATH)"
    )]
    Library { path: PathBuf, detail: String },
    /// A model file could not be opened or is not a valid ONNX graph.
    #[error("model {path} could not be loaded: {detail}")]
    Load { path: PathBuf, detail: String },
    /// Running a model failed.
    #[error("{model}: inference failed: {detail}")]
    Run { model: &'static str, detail: String },
    /// A model returned an output of an unexpected name, type or shape.
    #[error("{model}: unexpected output: {detail}")]
    Output { model: &'static str, detail: String },
}

static ENV: OnceLock<Environment> = OnceLock::new();
static LIB: OnceLock<PathBuf> = OnceLock::new();

/// Loads the ONNX Runtime library at `lib` and creates the process-wide environment.
/// Idempotent: later calls return immediately (the first library loaded stays).
pub fn init(lib: &Path) -> Result<(), OnnxError> {
    if ENV.get().is_some() {
        return Ok(());
    }
    if !lib.exists() {
        return Err(OnnxError::Library {
            path: lib.to_path_buf(),
            detail: "file not found".into(),
        });
    }
    let builder = ort::init_from(lib).map_err(|e| OnnxError::Library {
        path: lib.to_path_buf(),
        detail: e.to_string(),
    })?;
    let env = builder
        .with_name("soustitre")
        .with_telemetry(false)
        .build()
        .map_err(|e| OnnxError::Library {
            path: lib.to_path_buf(),
            detail: e.to_string(),
        })?;
    let _ = LIB.set(lib.to_path_buf());
    let _ = ENV.set(env);
    Ok(())
}

/// The library loaded by [`init`], if any.
pub fn library() -> Option<&'static Path> {
    LIB.get().map(PathBuf::as_path)
}

/// Builds a session for the model at `path` (one intra-op thread, full graph optimisation,
/// weights shared with the other sessions of the model, see [`shared`]).
pub fn session(path: &Path) -> Result<Session, OnnxError> {
    let bytes = read(path)?;
    let session = build(path, &bytes);
    drop(bytes);
    release_free_memory();
    session
}

fn read(path: &Path) -> Result<Vec<u8>, OnnxError> {
    std::fs::read(path).map_err(|e| OnnxError::Load {
        path: path.to_path_buf(),
        detail: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found".into()
        } else {
            e.to_string()
        },
    })
}

/// Builds a session for the model at `path` edited by `edit` (see [`graph`]), and whether the
/// edit applied. A model the edit refuses is loaded as published, with a warning naming what
/// the edit would have saved (`without_edit`).
pub fn edited_session(
    path: &Path,
    edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, graph::EditError>,
    without_edit: &str,
) -> Result<(Session, bool), OnnxError> {
    let bytes = read(path)?;
    let built = match edit(&bytes) {
        Ok(edited) => build(path, &edited).map(|s| (s, true)),
        Err(e) => {
            tracing::warn!("{}: {e}; {without_edit}", path.display());
            build(path, &bytes).map(|s| (s, false))
        }
    };
    drop(bytes);
    release_free_memory();
    built
}

/// Builds a session from the serialized model `bytes` (read from, or derived from, `path`,
/// which names it in errors), with the same policy as [`session`].
pub fn session_from_memory(path: &Path, bytes: &[u8]) -> Result<Session, OnnxError> {
    let session = build(path, bytes);
    release_free_memory();
    session
}

fn build(path: &Path, bytes: &[u8]) -> Result<Session, OnnxError> {
    let load = load_err(path);
    let mut builder = builder(path)?
        .with_prepacked_weights(shared::prepacked())
        .map_err(|e| load(e.to_string()))?;
    for (name, value) in shared::weights(path, bytes) {
        builder = builder
            .with_initializer(name, value)
            .map_err(|e| load(e.to_string()))?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(|e| load(e.to_string()))
}

/// Hands the heap pages freed by a model load (the file's bytes, the edited copy, ONNX Runtime's
/// copy of the graph: tens of megabytes, freed in a scattered order) back to the system. Without it the
/// allocator keeps them, and a process that loads models now and then (a track per participant)
/// grows by their size: the corpus replay's peak went from 515 to 673 MB. A few milliseconds
/// per session.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn load_err(path: &Path) -> impl Fn(String) -> OnnxError + '_ {
    move |detail| OnnxError::Load {
        path: path.to_path_buf(),
        detail,
    }
}

fn builder(path: &Path) -> Result<SessionBuilder, OnnxError> {
    let load = load_err(path);
    let env = ENV
        .get()
        .ok_or_else(|| load("ONNX Runtime is not initialised".into()))?;
    Session::builder(env)
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| load(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| load(e.to_string()))
}

/// Converts an `ort` error from running `model` into an [`OnnxError::Run`].
pub(crate) fn run_err(model: &'static str) -> impl Fn(ort::Error) -> OnnxError {
    move |e| OnnxError::Run {
        model,
        detail: e.to_string(),
    }
}

/// Converts an `ort` error from reading an output of `model` into an [`OnnxError::Output`].
pub(crate) fn out_err(model: &'static str) -> impl Fn(ort::Error) -> OnnxError {
    move |e| OnnxError::Output {
        model,
        detail: e.to_string(),
    }
}
