//! How steady the partials of a caption log are, as a reader experiences them.
//!
//! Two figures over the segments of one or more tracks (words compared lower-cased, without
//! punctuation):
//! * **flicker**: of the words a partial shows at positions the segment's next partial also
//!   shows, the share that the next partial changes. Every changed word is text the reader saw
//!   rewritten under their eyes.
//! * **final mismatch**: word edit distance between each partial and the start of its segment's
//!   final (as many words as the partial has), over all partial words: how much of what was read
//!   early the final corrects.
//!
//! They pull against partial latency: showing guesses early gives more flicker and more
//! mismatch; holding words until they are agreed on gives less of both, later.

use std::collections::HashMap;

use serde::Serialize;

use super::event::{CaptionEvent, EventKind};

/// Stability figures of a caption log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stability {
    /// Word positions compared between consecutive partials of a segment.
    pub compared_words: u64,
    /// Of those, words the next partial changed.
    pub flickered_words: u64,
    /// Words shown in partials of segments that got a final.
    pub partial_words: u64,
    /// Word edits from those partials to the start of their final.
    pub final_edits: u64,
}

impl Stability {
    /// `flickered_words / compared_words`, percent.
    pub fn flicker_percent(&self) -> Option<f64> {
        (self.compared_words > 0)
            .then(|| 100.0 * self.flickered_words as f64 / self.compared_words as f64)
    }

    /// `final_edits / partial_words`, percent.
    pub fn final_mismatch_percent(&self) -> Option<f64> {
        (self.partial_words > 0)
            .then(|| 100.0 * self.final_edits as f64 / self.partial_words as f64)
    }

    /// Sum of two logs' figures.
    pub fn add(&mut self, other: &Stability) {
        self.compared_words += other.compared_words;
        self.flickered_words += other.flickered_words;
        self.partial_words += other.partial_words;
        self.final_edits += other.final_edits;
    }
}

/// Lower-cased words without punctuation (an apostrophe inside a word is kept).
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '’')
                .flat_map(char::to_lowercase)
                .collect::<String>()
                .trim_matches(['\'', '’'])
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level edit distance.
fn edits(a: &[String], b: &[String]) -> u64 {
    let mut row: Vec<u64> = (0..=b.len() as u64).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i as u64 + 1;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + u64::from(x != y));
            diag = up;
        }
    }
    row[b.len()]
}

/// Stability of the events of a log (any order of tracks; events of a segment in log order).
pub fn stability(events: &[CaptionEvent]) -> Stability {
    let mut partials: HashMap<(&str, &str), Vec<Vec<String>>> = HashMap::new();
    let mut finals: HashMap<(&str, &str), Vec<String>> = HashMap::new();
    for e in events {
        let key = (e.track.as_str(), e.segment_id.as_str());
        match e.kind {
            EventKind::Partial => partials.entry(key).or_default().push(words(&e.text)),
            EventKind::Final => {
                finals.entry(key).or_insert_with(|| words(&e.text));
            }
        }
    }
    let mut s = Stability::default();
    for (key, shown) in &partials {
        for pair in shown.windows(2) {
            let n = pair[0].len().min(pair[1].len());
            s.compared_words += n as u64;
            s.flickered_words += (0..n).filter(|&i| pair[0][i] != pair[1][i]).count() as u64;
        }
        if let Some(fin) = finals.get(key) {
            for p in shown {
                s.partial_words += p.len() as u64;
                s.final_edits += edits(p, &fin[..p.len().min(fin.len())]);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, seg: &str, text: &str) -> CaptionEvent {
        CaptionEvent {
            seq: 0,
            kind,
            segment_id: seg.into(),
            revision: 0,
            track: "mix".into(),
            speaker: None,
            language: None,
            text: text.into(),
            stable_text: String::new(),
            start: 0.0,
            end: 0.0,
            emitted_at: 0.0,
            words: Vec::new(),
        }
    }

    #[test]
    fn counts_rewritten_words_and_final_corrections() {
        use EventKind::*;
        let log = [
            ev(Partial, "s1", "The new"),
            ev(Partial, "s1", "The knew budget"),
            ev(Partial, "s1", "The new budget proposal"),
            ev(Final, "s1", "The new budget proposal."),
            ev(Partial, "s2", "Thank you"),
            ev(Final, "s2", "Thank you all."),
        ];
        let s = stability(&log);
        // "new" → "knew" then "knew" → "new": 2 of 2 + 3 compared positions
        assert_eq!((s.compared_words, s.flickered_words), (5, 2));
        // partial words 2 + 3 + 4 + 2; only "knew" differs from its final
        assert_eq!((s.partial_words, s.final_edits), (11, 1));
        assert_eq!(s.flicker_percent(), Some(40.0));
    }

    #[test]
    fn punctuation_and_case_are_not_flicker() {
        use EventKind::*;
        let log = [
            ev(Partial, "s1", "bonjour à tous"),
            ev(Partial, "s1", "Bonjour, à tous."),
            ev(Final, "s1", "Bonjour à tous, l'équipe."),
        ];
        let s = stability(&log);
        assert_eq!(s.flickered_words, 0);
        assert_eq!(s.final_edits, 0);
        assert_eq!(words("L'équipe,"), vec!["l'équipe"]);
    }

    #[test]
    fn no_partials_no_figures() {
        let s = stability(&[ev(EventKind::Final, "s1", "Hello.")]);
        assert_eq!(s.flicker_percent(), None);
        assert_eq!(s.final_mismatch_percent(), None);
    }
}
