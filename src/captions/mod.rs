//! Captions: the event model and its renderings (terminal, JSONL log, WebVTT, SRT).

mod event;

pub use event::{CaptionEvent, EventKind, Word};
