//! Streaming policy: from audio samples of one track to partial and final caption events.
//!
//! See [`Captioner`] for the latency model and [`StreamSettings`] for the knobs.

mod agreement;
mod captioner;
mod settings;
mod timing;

pub use agreement::Agreement;
pub use captioner::{CaptionError, Captioner, CaptionerStats};
pub use settings::{
    DEFAULT_ENDPOINT_SILENCE_MS, DEFAULT_LANGUAGE_SWITCH_CONFIDENCE,
    DEFAULT_LONG_SEGMENT_ENDPOINT_MS, DEFAULT_LONG_SEGMENT_S, DEFAULT_MAX_SEGMENT_S,
    DEFAULT_MIN_SPEECH_MS, DEFAULT_PARTIAL_INTERVAL_MS, DEFAULT_SPEECH_END_PAD_MS,
    DEFAULT_SPEECH_PAD_MS, DEFAULT_STABLE_AGREEMENT, DEFAULT_VAD_RELEASE, DEFAULT_VAD_THRESHOLD,
    InvalidSetting, LanguageSetting, StreamSettings,
};
pub use timing::{TimedWord, spread_words, voiced_spans};
