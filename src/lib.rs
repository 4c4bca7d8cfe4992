//! soustitre: live captions for WebRTC meetings.
//!
//! Data path: `media` (GStreamer decode to 16 kHz mono) → `vad` (Silero) → `asr` (Whisper) →
//! `stream` (segmentation, partial/final policy) → `captions` (event model and renderings).

pub mod captions;
pub mod media;
pub mod models;
pub mod onnx;
pub mod vad;
pub mod asr;
