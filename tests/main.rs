//! The integration tests, one module per concern, built as one test binary (one link instead of
//! one per file). `media_missing_plugin` stays a binary of its own: it changes the process-wide
//! GStreamer registry.

mod common;

mod admin_api;
mod asr_model_edits;
mod asr_wer;
mod captions_render;
mod cli;
mod diarize;
mod diarize_language;
mod diarize_service;
mod fanout_smoke;
mod media_decode;
mod media_rtp;
mod models_fetch;
mod policy_latency;
mod service;
mod sfu_janus;
mod sfu_livekit;
mod sfu_whep;
mod streaming;
mod viewer_browser;
mod whep_rfc9725;
mod ws_client_loop;
