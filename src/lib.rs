//! soustitre: live captions for WebRTC meetings.
//!
//! Data path: `media` (GStreamer decode to 16 kHz mono) → `vad` (Silero) → `asr` (Whisper) →
//! `stream` (segmentation, partial/final policy) → `captions` (event model and renderings).

pub mod asr;
pub mod auth;
pub mod bench;
pub mod bench_fanout;
pub mod captions;
pub mod config;
pub mod engine;
pub mod hub;
pub mod media;
pub mod models;
pub mod onnx;
pub mod paths;
pub mod protocol;
pub mod run;
pub mod server;
pub mod sfu;
pub mod stream;
pub mod vad;
