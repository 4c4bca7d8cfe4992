//! Captions: the event model and its renderings.
//!
//! * [`CaptionEvent`] (`event`): partial/final revisions of caption segments — the one structure
//!   every output renders.
//! * `cues`: final events → subtitle cues (line length, lines, reading rate, durations, speakers).
//! * `vtt`, `srt`: cues → WebVTT / SubRip text.
//! * `jsonl`: the caption event log, written live ([`JsonlWriter`]) and read back ([`read_log`]).
//! * `render`: a log file → a subtitle file.
//! * `terminal`: live captions on a terminal (partials rewritten in place, finals scrolling).
//! * `validate`: invariants of an event log, for tests over real outputs.
//! * `stability`: how steady the partials are (flicker, corrections by the final).

mod cues;
mod event;
mod jsonl;
mod render;
mod srt;
mod stability;
mod terminal;
mod validate;
mod vtt;

pub use cues::{
    Cue, CueBuilder, CueSettings, CueSettingsError, DEFAULT_GAP_S, DEFAULT_JOIN_GAP_S,
    DEFAULT_MAX_CHARS_PER_SECOND, DEFAULT_MAX_DURATION_S, DEFAULT_MAX_LINE_CHARS,
    DEFAULT_MAX_LINES, DEFAULT_MIN_DURATION_S, DEFAULT_SHOW_SPEAKER_NAMES, MIN_VISIBLE_S,
    build_cues,
};
pub use event::{CaptionEvent, EventKind, Word};
pub use jsonl::{FlushPolicy, JsonlWriter, LogReadError, read_log, read_log_from};
pub use render::{RenderError, SubtitleFormat, render_events, render_log};
pub use srt::to_srt;
pub use stability::{Stability, stability};
pub use terminal::{DEFAULT_WIDTH, TerminalRenderer, terminal_width};
pub use validate::{DURATION_TOLERANCE_S, Violation, WORD_TOLERANCE_S, validate_log};
pub use vtt::to_vtt;
