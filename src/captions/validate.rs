//! Consistency checks of a caption event log, for tests over real outputs.
//!
//! [`validate_log`] checks the invariants of the event model (`event.rs`) and the log schema:
//! * `seq` strictly increases;
//! * within a `(track, segment_id)`, `revision` strictly increases; there is exactly one final and
//!   no event after it;
//! * `text` is never blank (partials and finals);
//! * `0 ≤ start ≤ end ≤ audio duration` (+[`DURATION_TOLERANCE_S`]), all times finite;
//! * every word lies inside `[start, end]` (±[`WORD_TOLERANCE_S`]) with `start ≤ end`;
//! * the words joined by spaces equal `text` up to whitespace (so an event without words, whose
//!   text is never blank, is reported).
//!
//! Example: `assert!(validate_log(&read_log(path)?, 120.0).is_empty());`

use std::collections::HashMap;
use std::fmt;

use super::event::{CaptionEvent, EventKind};

/// How far past the end of the audio a segment may end, seconds (decoder padding, rounding).
pub const DURATION_TOLERANCE_S: f64 = 0.05;
/// How far outside its segment a word's times may fall, seconds (millisecond rounding).
pub const WORD_TOLERANCE_S: f64 = 0.001;

/// One broken invariant. `seq` identifies the offending event.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// `seq` did not increase.
    SeqNotIncreasing {
        /// Position of the event in the log (0-based).
        index: usize,
        /// The previous event's seq.
        previous: u64,
        /// This event's seq.
        seq: u64,
    },
    /// A revision of a segment was not above the segment's previous one.
    RevisionNotIncreasing {
        /// This event's seq.
        seq: u64,
        /// Track id.
        track: String,
        /// Segment id.
        segment_id: String,
        /// The segment's previous revision.
        previous: u32,
        /// This event's revision.
        revision: u32,
    },
    /// A second final for a segment.
    DuplicateFinal {
        /// This event's seq.
        seq: u64,
        /// Track id.
        track: String,
        /// Segment id.
        segment_id: String,
    },
    /// A partial after the segment's final.
    PartialAfterFinal {
        /// This event's seq.
        seq: u64,
        /// Track id.
        track: String,
        /// Segment id.
        segment_id: String,
    },
    /// A segment that never got a final.
    MissingFinal {
        /// Track id.
        track: String,
        /// Segment id.
        segment_id: String,
    },
    /// Blank text (a partial, or a final that retracts no partial).
    EmptyText {
        /// This event's seq.
        seq: u64,
        /// Partial or final.
        kind: EventKind,
    },
    /// Segment times not finite, negative, reversed or past the end of the audio.
    BadTimes {
        /// This event's seq.
        seq: u64,
        /// Segment start.
        start: f64,
        /// Segment end.
        end: f64,
        /// Audio duration the log was checked against.
        audio_duration_s: f64,
    },
    /// A word outside its segment, or with reversed or non-finite times.
    WordOutsideSegment {
        /// This event's seq.
        seq: u64,
        /// Word index in `words`.
        index: usize,
        /// The word.
        word: String,
        /// Word start.
        start: f64,
        /// Word end.
        end: f64,
    },
    /// The words do not spell the text.
    WordsTextMismatch {
        /// This event's seq.
        seq: u64,
        /// The words joined by spaces.
        words: String,
        /// The event text.
        text: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SeqNotIncreasing {
                index,
                previous,
                seq,
            } => {
                write!(
                    f,
                    "event #{index}: seq {seq} does not increase (previous {previous})"
                )
            }
            Self::RevisionNotIncreasing {
                seq,
                track,
                segment_id,
                previous,
                revision,
            } => write!(
                f,
                "seq {seq}: {track}/{segment_id} revision {revision} does not increase (previous {previous})"
            ),
            Self::DuplicateFinal {
                seq,
                track,
                segment_id,
            } => {
                write!(f, "seq {seq}: second final for {track}/{segment_id}")
            }
            Self::PartialAfterFinal {
                seq,
                track,
                segment_id,
            } => {
                write!(
                    f,
                    "seq {seq}: partial after the final of {track}/{segment_id}"
                )
            }
            Self::MissingFinal { track, segment_id } => {
                write!(f, "{track}/{segment_id} has no final")
            }
            Self::EmptyText { seq, kind } => write!(f, "seq {seq}: {kind:?} with empty text"),
            Self::BadTimes {
                seq,
                start,
                end,
                audio_duration_s,
            } => write!(
                f,
                "seq {seq}: times {start}..{end} not within 0..{audio_duration_s} s (or reversed)"
            ),
            Self::WordOutsideSegment {
                seq,
                index,
                word,
                start,
                end,
            } => {
                write!(
                    f,
                    "seq {seq}: word #{index} {word:?} at {start}..{end} outside its segment"
                )
            }
            Self::WordsTextMismatch { seq, words, text } => {
                write!(f, "seq {seq}: words {words:?} do not spell text {text:?}")
            }
        }
    }
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every violation in `events` (in log order, missing finals last), for audio lasting
/// `audio_duration_s` seconds. Empty when the log is consistent.
pub fn validate_log(events: &[CaptionEvent], audio_duration_s: f64) -> Vec<Violation> {
    struct Segment {
        last_revision: u32,
        has_final: bool,
    }
    let mut out = Vec::new();
    let mut segments: HashMap<(&str, &str), Segment> = HashMap::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    for (index, ev) in events.iter().enumerate() {
        let seq = ev.seq;
        if index > 0 && seq <= events[index - 1].seq {
            out.push(Violation::SeqNotIncreasing {
                index,
                previous: events[index - 1].seq,
                seq,
            });
        }
        let key = (ev.track.as_str(), ev.segment_id.as_str());
        let id = || (ev.track.clone(), ev.segment_id.clone());
        match segments.get_mut(&key) {
            None => {
                order.push(key);
                segments.insert(
                    key,
                    Segment {
                        last_revision: ev.revision,
                        has_final: ev.is_final(),
                    },
                );
            }
            Some(seg) => {
                if seg.has_final {
                    let (track, segment_id) = id();
                    out.push(if ev.is_final() {
                        Violation::DuplicateFinal {
                            seq,
                            track,
                            segment_id,
                        }
                    } else {
                        Violation::PartialAfterFinal {
                            seq,
                            track,
                            segment_id,
                        }
                    });
                }
                if ev.revision <= seg.last_revision {
                    let (track, segment_id) = id();
                    out.push(Violation::RevisionNotIncreasing {
                        seq,
                        track,
                        segment_id,
                        previous: seg.last_revision,
                        revision: ev.revision,
                    });
                }
                seg.last_revision = seg.last_revision.max(ev.revision);
                seg.has_final |= ev.is_final();
            }
        }
        // an empty final is allowed only as the retraction of partials shown before it
        let retraction = ev.is_final() && ev.revision > 0;
        if ev.text.trim().is_empty() && !retraction {
            out.push(Violation::EmptyText { seq, kind: ev.kind });
        }
        let times_ok = ev.start.is_finite()
            && ev.end.is_finite()
            && ev.start >= 0.0
            && ev.start <= ev.end
            && ev.end <= audio_duration_s + DURATION_TOLERANCE_S;
        if !times_ok {
            out.push(Violation::BadTimes {
                seq,
                start: ev.start,
                end: ev.end,
                audio_duration_s,
            });
        }
        for (index, w) in ev.words.iter().enumerate() {
            let inside = w.start.is_finite()
                && w.end.is_finite()
                && w.start <= w.end
                && w.start >= ev.start - WORD_TOLERANCE_S
                && w.end <= ev.end + WORD_TOLERANCE_S;
            if !inside {
                out.push(Violation::WordOutsideSegment {
                    seq,
                    index,
                    word: w.w.clone(),
                    start: w.start,
                    end: w.end,
                });
            }
        }
        let words = normalise(
            &ev.words
                .iter()
                .map(|w| w.w.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let text = normalise(&ev.text);
        if words != text {
            out.push(Violation::WordsTextMismatch { seq, words, text });
        }
    }
    for key in order {
        if !segments[&key].has_final {
            out.push(Violation::MissingFinal {
                track: key.0.into(),
                segment_id: key.1.into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::Word;

    fn ev(
        seq: u64,
        kind: EventKind,
        seg: &str,
        revision: u32,
        words: &[(&str, f64, f64)],
    ) -> CaptionEvent {
        let text = words.iter().map(|w| w.0).collect::<Vec<_>>().join(" ");
        CaptionEvent {
            seq,
            kind,
            segment_id: seg.into(),
            revision,
            track: "mix".into(),
            speaker: None,
            language: None,
            stable_text: String::new(),
            text,
            start: words.first().map_or(0.0, |w| w.1),
            end: words.last().map_or(0.0, |w| w.2),
            emitted_at: 0.0,
            words: words
                .iter()
                .map(|&(w, start, end)| Word {
                    w: w.into(),
                    start,
                    end,
                    speaker: None,
                })
                .collect(),
        }
    }

    fn good_log() -> Vec<CaptionEvent> {
        use EventKind::*;
        vec![
            ev(0, Partial, "s1", 0, &[("Good", 1.0, 1.3)]),
            ev(1, Partial, "s2", 0, &[("Hi", 1.2, 1.4)]),
            ev(
                2,
                Partial,
                "s1",
                1,
                &[("Good", 1.0, 1.3), ("morning", 1.3, 1.8)],
            ),
            ev(
                3,
                Final,
                "s1",
                2,
                &[("Good", 1.0, 1.3), ("morning.", 1.3, 1.8)],
            ),
            ev(4, Final, "s2", 3, &[("Hi", 1.2, 1.4)]),
        ]
    }

    fn check(mutate: impl FnOnce(&mut Vec<CaptionEvent>)) -> Vec<Violation> {
        let mut log = good_log();
        mutate(&mut log);
        validate_log(&log, 10.0)
    }

    #[test]
    fn a_consistent_log_passes() {
        assert_eq!(validate_log(&good_log(), 10.0), vec![]);
        assert_eq!(validate_log(&[], 0.0), vec![]);
        // Whitespace differences and end within the tolerance are fine.
        assert_eq!(check(|l| l[3].text = " Good  morning.\n".into()), vec![]);
        assert_eq!(
            validate_log(&good_log(), 1.8 - DURATION_TOLERANCE_S + 0.001),
            vec![]
        );
    }

    #[test]
    fn catches_seq_not_increasing() {
        let v = check(|l| l[2].seq = 1);
        assert_eq!(
            v,
            vec![Violation::SeqNotIncreasing {
                index: 2,
                previous: 1,
                seq: 1
            }]
        );
        assert!(v[0].to_string().contains("seq 1 does not increase"));
    }

    #[test]
    fn catches_revision_not_increasing() {
        let v = check(|l| l[2].revision = 0);
        assert!(
            matches!(
                &v[..],
                [Violation::RevisionNotIncreasing {
                    seq: 2,
                    previous: 0,
                    revision: 0,
                    ..
                }]
            ),
            "{v:?}"
        );
    }

    #[test]
    fn catches_duplicate_final_and_partial_after_final() {
        let v = check(|l| l.push(ev(5, EventKind::Final, "s1", 3, &[("Good", 1.0, 1.3)])));
        assert!(
            matches!(&v[..], [Violation::DuplicateFinal { seq: 5, .. }]),
            "{v:?}"
        );
        let v = check(|l| l.push(ev(5, EventKind::Partial, "s1", 3, &[("Good", 1.0, 1.3)])));
        assert!(
            matches!(&v[..], [Violation::PartialAfterFinal { seq: 5, .. }]),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("mix/s1"));
    }

    #[test]
    fn catches_missing_final() {
        let v = check(|l| {
            l.remove(4);
        });
        assert_eq!(
            v,
            vec![Violation::MissingFinal {
                track: "mix".into(),
                segment_id: "s2".into()
            }]
        );
    }

    #[test]
    fn catches_empty_text_on_partials_and_finals() {
        for i in [0, 3] {
            let v = check(|l| {
                l[i].text = "  ".into();
                l[i].words.clear();
            });
            let expected = if good_log()[i].is_final() && good_log()[i].revision > 0 {
                // a final that retracts earlier partials may be empty
                vec![]
            } else {
                vec![Violation::EmptyText {
                    seq: i as u64,
                    kind: good_log()[i].kind,
                }]
            };
            assert_eq!(v, expected, "event {i}");
        }
        // a final with no partial before it must have text
        let v = check(|l| {
            let mut lone = l[3].clone();
            lone.segment_id = "lone".into();
            lone.revision = 0;
            lone.text = String::new();
            lone.words.clear();
            lone.seq = 100;
            l.push(lone);
        });
        assert!(
            v.contains(&Violation::EmptyText {
                seq: 100,
                kind: EventKind::Final
            }),
            "{v:?}"
        );
    }

    #[test]
    fn catches_bad_segment_times() {
        let bad = |v: &[Violation]| matches!(v, [Violation::BadTimes { seq: 4, .. }]);
        // Past the end of the audio (s1 ends at 1.8, s2 at 1.4).
        let v = validate_log(&good_log(), 1.5);
        assert!(
            matches!(
                &v[..],
                [
                    Violation::BadTimes { seq: 2, .. },
                    Violation::BadTimes { seq: 3, .. }
                ]
            ),
            "{v:?}"
        );
        // Negative start (with the word moved too, so only the times are wrong).
        let v = check(|l| {
            l[4].start = -0.5;
            l[4].words[0].start = -0.5;
        });
        assert!(bad(&v), "{v:?}");
        // Reversed.
        let v = check(|l| l[4].end = 1.0);
        assert!(
            matches!(
                &v[..],
                [
                    Violation::BadTimes { seq: 4, .. },
                    Violation::WordOutsideSegment { seq: 4, .. }
                ]
            ),
            "{v:?}"
        );
        let v = check(|l| l[4].start = f64::NAN);
        assert!(
            matches!(&v[..], [Violation::BadTimes { seq: 4, .. }, ..]),
            "{v:?}"
        );
    }

    #[test]
    fn catches_words_outside_the_segment() {
        let v = check(|l| l[3].words[1].end = 1.9);
        assert!(
            matches!(
                &v[..],
                [Violation::WordOutsideSegment {
                    seq: 3,
                    index: 1,
                    ..
                }]
            ),
            "{v:?}"
        );
        let v = check(|l| l[3].words[0].start = 1.4);
        assert!(
            matches!(
                &v[..],
                [Violation::WordOutsideSegment {
                    seq: 3,
                    index: 0,
                    ..
                }]
            ),
            "{v:?}"
        );
        // Within the rounding tolerance.
        assert_eq!(check(|l| l[3].words[1].end = 1.8005), vec![]);
    }

    #[test]
    fn catches_words_that_do_not_spell_the_text() {
        let v = check(|l| l[3].text = "Good morning!".into());
        assert_eq!(
            v,
            vec![Violation::WordsTextMismatch {
                seq: 3,
                words: "Good morning.".into(),
                text: "Good morning!".into()
            }]
        );
        let v = check(|l| l[4].words.clear());
        assert!(
            matches!(&v[..], [Violation::WordsTextMismatch { seq: 4, .. }]),
            "{v:?}"
        );
    }
}
