//! The caption event model: the one structure every output renders.
//!
//! A caption *segment* is one stretch of speech on one track. While it grows the captioner emits
//! zero or more `partial` revisions (provisional text, the full current text each time), then
//! exactly one `final` revision (committed text that never changes). Every event carries a
//! per-stream `seq` that increases strictly, so a consumer can detect loss and resume.
//!
//! The serialised form is the caption event log schema shared with the scorers
//! (`type, segment_id, revision, track, speaker, language, text, start, end, emitted_at, words[]`)
//! plus `seq` and `stable_text`.

use serde::{Deserialize, Serialize};

/// Whether an event is provisional or committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Provisional text; a later revision of the same segment replaces it.
    Partial,
    /// Committed text of the segment; never revised.
    Final,
}

/// One word with its audio time (seconds from stream start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word as displayed (with its punctuation).
    pub w: String,
    /// Audio time of the word start, seconds.
    pub start: f64,
    /// Audio time of the word end, seconds.
    pub end: f64,
    /// Speaker of this word when it differs from the segment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// One caption event (a revision of a segment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionEvent {
    /// Per-stream sequence number, strictly increasing from 0.
    pub seq: u64,
    /// `partial` or `final`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Segment id, unique within the track (`s0001`, `s0002`, ...).
    pub segment_id: String,
    /// Revision within the segment: 0, 1, 2... shared by partials and the final.
    pub revision: u32,
    /// Track (participant stream) id; `mix` for a single mixed stream.
    pub track: String,
    /// Speaker label, when known.
    pub speaker: Option<String>,
    /// Language code of the text (`en`, `fr`, ...), when known.
    pub language: Option<String>,
    /// Full current text of the segment (not a delta). Never empty.
    pub text: String,
    /// The prefix of `text` that consecutive hypotheses agreed on (equal to `text` on finals).
    #[serde(default)]
    pub stable_text: String,
    /// Audio time of the first word start, seconds from stream start.
    pub start: f64,
    /// Audio time of the last word end, seconds from stream start.
    pub end: f64,
    /// Wall-clock seconds between audio sample 0 entering the pipeline and this event leaving
    /// the captioner.
    pub emitted_at: f64,
    /// The words of `text` with their audio times.
    pub words: Vec<Word>,
}

impl CaptionEvent {
    /// True for a committed event.
    pub fn is_final(&self) -> bool {
        self.kind == EventKind::Final
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_the_log_schema() {
        let ev = CaptionEvent {
            seq: 3,
            kind: EventKind::Partial,
            segment_id: "s0001".into(),
            revision: 2,
            track: "mix".into(),
            speaker: None,
            language: Some("en".into()),
            text: "Good morning".into(),
            stable_text: "Good".into(),
            start: 0.9,
            end: 1.9,
            emitted_at: 2.3,
            words: vec![Word {
                w: "Good".into(),
                start: 0.9,
                end: 1.2,
                speaker: None,
            }],
        };
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "partial");
        assert_eq!(v["speaker"], serde_json::Value::Null);
        assert_eq!(v["words"][0]["w"], "Good");
        assert!(v["words"][0].get("speaker").is_none());
        let back: CaptionEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }
}
