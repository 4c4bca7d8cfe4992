//! Speech recognition: Whisper (ONNX) behind a small engine interface.
//!
//! [`Whisper`] decodes one window of audio at a time; the streaming policy (when to decode, what
//! to show) lives in `stream`. Keeping the engine behind [`ModelFiles`] and [`DecodeOptions`]
//! lets a larger Whisper or another engine be swapped in by configuration.

mod config;
mod logit_rows;
mod mel;
mod whisper;

use std::path::{Path, PathBuf};

pub use config::WhisperConfig;
pub use logit_rows::{ROWS_INPUT, select_logit_rows};
pub use mel::MelFrontend;
pub use whisper::{
    CONTEXT_PAD_FRAMES, DecodeOptions, Decoded, ENGLISH_SWITCH_CONFIDENCE, Guard,
    LOGPROB_THRESHOLD, Language, MAX_CONTEXT_TOKENS, SHORT_AUDIO_S, TIMESTAMP_STEP_S, TimedText,
    Whisper, choose_language, compression_ratio, repeated_ngram_cut, repetition_cut,
};

use crate::onnx::OnnxError;

/// Errors of the recognizer.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model configuration: {0}")]
    Config(String),
    #[error("language `{0}` is not supported by this model")]
    UnknownLanguage(String),
}

/// The files of one Whisper model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    pub tokenizer: PathBuf,
    pub config: PathBuf,
    pub mel: PathBuf,
}

impl ModelFiles {
    /// The standard layout: `<dir>/{encoder,decoder}.int8.onnx`, `tokenizer.json`,
    /// `whisper_config.json`, with the mel front end at `mel`.
    pub fn in_dir(dir: &Path, mel: &Path) -> Self {
        Self {
            encoder: dir.join("encoder.int8.onnx"),
            decoder: dir.join("decoder.int8.onnx"),
            tokenizer: dir.join("tokenizer.json"),
            config: dir.join("whisper_config.json"),
            mel: mel.to_path_buf(),
        }
    }
}
