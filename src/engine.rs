//! Model lifecycle: resolve and verify the models a captioner needs, load ONNX Runtime once, and
//! build per-track captioners (each with its own sessions, so tracks run in parallel).

use std::path::PathBuf;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::asr::{AsrError, ModelFiles, Whisper};
use crate::diarize::{CampPlus, DiarizeError, DiarizeSettings, Diarizer};
use crate::models::{ModelError, ModelStore};
use crate::onnx::{self, OnnxError};
use crate::paths::{self, PathsError};
use crate::stream::{CaptionError, Captioner, StreamSettings};
use crate::vad::SileroVad;

/// Recognition models this build knows.
pub const MODELS: [&str; 2] = ["whisper-base", "whisper-tiny.en"];
/// The default recognition model.
pub const DEFAULT_MODEL: &str = "whisper-base";
/// The VAD model bundle.
pub const VAD_BUNDLE: &str = "silero-vad";
/// The speaker-embedding bundle (diarization).
pub const DIARIZE_BUNDLE: &str = "campplus";
/// File name of the shared mel front end inside a Whisper bundle.
pub const MEL_FILE: &str = "whisper80_conv.onnx";

/// Errors while preparing models.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown model `{0}` (known: whisper-base, whisper-tiny.en)")]
    UnknownModel(String),
    #[error(transparent)]
    Models(#[from] ModelError),
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Caption(#[from] CaptionError),
    #[error(transparent)]
    Diarize(#[from] DiarizeError),
    #[error("diarization was asked for but its model was not prepared")]
    DiarizationNotPrepared,
}

/// Verified model files, ready to build captioners.
#[derive(Debug, Clone)]
pub struct Engine {
    model: String,
    whisper: ModelFiles,
    /// Read once, shared by every recognizer built here.
    tokenizer: Arc<Tokenizer>,
    vad: PathBuf,
    campplus: Option<PathBuf>,
}

impl Engine {
    /// Verifies (fetching from the mirror if needed) the files of `model` and the VAD, and loads
    /// the ONNX Runtime library.
    pub fn prepare(store: &ModelStore, model: &str) -> Result<Self, EngineError> {
        if !MODELS.contains(&model) {
            return Err(EngineError::UnknownModel(model.to_string()));
        }
        onnx::init(&paths::onnxruntime_library()?)?;
        let w = store.ensure(model)?;
        let v = store.ensure(VAD_BUNDLE)?;
        let whisper = ModelFiles {
            encoder: w.require("encoder.int8.onnx")?.to_path_buf(),
            decoder: w.require("decoder.int8.onnx")?.to_path_buf(),
            tokenizer: w.require("tokenizer.json")?.to_path_buf(),
            config: w.require("whisper_config.json")?.to_path_buf(),
            mel: w.require(MEL_FILE)?.to_path_buf(),
        };
        let vad = v.require("silero_vad.onnx")?.to_path_buf();
        Ok(Self {
            model: model.to_string(),
            tokenizer: Whisper::tokenizer(&whisper)?,
            whisper,
            vad,
            campplus: None,
        })
    }

    /// Also verifies (fetching if needed) the speaker-embedding model, for diarization.
    pub fn with_diarization(mut self, store: &ModelStore) -> Result<Self, EngineError> {
        let c = store.ensure(DIARIZE_BUNDLE)?;
        self.campplus = Some(c.require("campplus_wave.onnx")?.to_path_buf());
        Ok(self)
    }

    /// [`Engine::prepare_default`] with the diarization model.
    pub fn prepare_default_with_diarization(model: &str) -> Result<Self, EngineError> {
        let store = ModelStore::open_default()?;
        Self::prepare(&store, model)?.with_diarization(&store)
    }

    /// True when the diarization model is prepared.
    pub fn can_diarize(&self) -> bool {
        self.campplus.is_some()
    }

    /// Loads a speaker-embedding model (its own session).
    pub fn campplus(&self) -> Result<CampPlus, EngineError> {
        let path = self
            .campplus
            .as_ref()
            .ok_or(EngineError::DiarizationNotPrepared)?;
        Ok(CampPlus::load(path)?)
    }

    /// With the default store (checkout or installed layout, default mirror).
    pub fn prepare_default(model: &str) -> Result<Self, EngineError> {
        let store = ModelStore::open_default()?;
        Self::prepare(&store, model)
    }

    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Loads a recognizer (its own sessions).
    pub fn whisper(&self) -> Result<Whisper, EngineError> {
        Ok(Whisper::load_with(
            &self.model,
            &self.whisper,
            self.tokenizer.clone(),
        )?)
    }

    /// Loads a VAD (its own session and state).
    pub fn vad(&self) -> Result<SileroVad, EngineError> {
        Ok(SileroVad::load(&self.vad)?)
    }

    /// A captioner for one track.
    pub fn captioner(
        &self,
        settings: StreamSettings,
        track: &str,
        clock: Box<dyn Fn() -> f64 + Send>,
    ) -> Result<Captioner, EngineError> {
        Ok(Captioner::new(
            settings,
            track,
            self.whisper()?,
            self.vad()?,
            clock,
        )?)
    }

    /// A captioner for one track with speaker diarization (labels named after `participant`).
    pub fn diarized_captioner(
        &self,
        settings: StreamSettings,
        diarize: &DiarizeSettings,
        track: &str,
        participant: Option<String>,
        clock: Box<dyn Fn() -> f64 + Send>,
    ) -> Result<Captioner, EngineError> {
        diarize.validate().map_err(CaptionError::from)?;
        let worker = Diarizer::start(track, diarize, self.campplus()?)?;
        Ok(self
            .captioner(settings, track, clock)?
            .with_diarizer(worker, diarize, participant)?)
    }
}
