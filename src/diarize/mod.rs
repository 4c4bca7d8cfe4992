//! Online speaker diarization inside one track: who is speaking when several people share a
//! microphone.
//!
//! Data path: the captioner's voiced 32 ms frames → [`Diarizer`] worker thread (bounded queue) →
//! CAM++ embedding of a `window_ms` window of voiced audio every `hop_ms` ([`embedder`]) →
//! online clustering ([`cluster`]: a new speaker needs `min_new_windows` consecutive windows far
//! from every known speaker and agreeing with each other) → window speakers ([`track`]). A final
//! takes the speaker of each word from the nearest window, cuts its words into runs of one
//! speaker (runs shorter than `min_run_ms` are absorbed), and emits one final per run, so a final
//! never mixes speakers. Labels ([`names`]) are given once and never revised.
//!
//! Latency model: embeddings run on their own thread, ~30 ms of compute per 0.77 s hop of
//! speech (≈ 0.04 of real time while someone speaks, nothing in silence). Partials never wait:
//! they carry the speaker of the latest window, provisional. A final waits for the diarizer to
//! have processed every frame up to the endpoint (normally already done, as the final's decode
//! takes longer); the label of the last words of a turn comes from windows up to half a window
//! before the speech end, so the label latency is the final latency (`endpoint_silence_ms`
//! after the speech end) plus any wait.
//!
//! ```text
//! soustitre transcribe meeting.wav --diarize --rttm out.rttm
//! ```

pub mod cluster;
pub mod embedder;
pub mod names;
pub mod offline;
pub mod rttm;
pub mod settings;
pub mod track;
pub mod worker;

pub use embedder::{CampPlus, EMBEDDING_DIM};
pub use names::{RenameError, Renames, SpeakerNames};
pub use offline::{OfflineDiarization, diarize_samples};
pub use rttm::{DEFAULT_JOIN_GAP_S, Turn, speakers_of, turns_from_finals, write_rttm};
pub use settings::{
    DEFAULT_HOP_MS, DEFAULT_MAX_SPEAKERS, DEFAULT_MIN_NEW_WINDOWS, DEFAULT_MIN_RUN_MS,
    DEFAULT_NEW_SPEAKER_SIMILARITY, DEFAULT_WINDOW_MS, DiarizeSettings,
};
pub use worker::{DiarizeError, DiarizeStats, Diarizer};
