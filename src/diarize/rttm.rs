//! RTTM speaker turns (`SPEAKER <file> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>`), the
//! format the DER scorers read.

use std::io::{self, Write};

/// One speaker turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Speaker label.
    pub speaker: String,
}

/// Writes `turns` of recording `file` as RTTM lines. Whitespace in labels (not allowed by the
/// format) becomes `_`; empty or reversed turns are skipped.
pub fn write_rttm(mut out: impl Write, file: &str, turns: &[Turn]) -> io::Result<()> {
    let clean = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        if s.is_empty() { "_".into() } else { s }
    };
    let file = clean(file);
    for t in turns {
        let d = t.end - t.start;
        if !(t.start.is_finite() && d.is_finite() && d > 0.0) {
            continue;
        }
        writeln!(
            out,
            "SPEAKER {file} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            t.start,
            d,
            clean(&t.speaker)
        )?;
    }
    Ok(())
}

/// Default gap under which consecutive finals of one speaker make one turn, seconds.
pub const DEFAULT_JOIN_GAP_S: f64 = 0.5;

/// The distinct speakers of caption finals, in order of first appearance.
pub fn speakers_of<'a>(
    events: impl IntoIterator<Item = &'a crate::captions::CaptionEvent>,
) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for e in events {
        if let Some(s) = &e.speaker
            && e.is_final()
            && !v.contains(s)
        {
            v.push(s.clone());
        }
    }
    v
}

/// Speaker turns of caption finals: one turn per final with a speaker, from its first word
/// start to its last word end; consecutive turns of one speaker less than `join_gap_s` apart
/// are joined.
pub fn turns_from_finals<'a>(
    finals: impl IntoIterator<Item = &'a crate::captions::CaptionEvent>,
    join_gap_s: f64,
) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    let mut finals: Vec<_> = finals
        .into_iter()
        .filter(|e| e.is_final() && e.speaker.is_some() && e.end > e.start)
        .collect();
    finals.sort_by(|a, b| a.start.total_cmp(&b.start));
    for e in finals {
        let speaker = e.speaker.clone().unwrap_or_default();
        match turns.last_mut() {
            Some(t) if t.speaker == speaker && e.start - t.end < join_gap_s => {
                t.end = t.end.max(e.end)
            }
            _ => turns.push(Turn {
                start: e.start,
                end: e.end,
                speaker,
            }),
        }
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rttm_lines() {
        let mut b = Vec::new();
        write_rttm(
            &mut b,
            "my meeting",
            &[
                Turn {
                    start: 0.5,
                    end: 1.75,
                    speaker: "Anne — voice 2".into(),
                },
                Turn {
                    start: 2.0,
                    end: 2.0,
                    speaker: "S1".into(),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "SPEAKER my_meeting 1 0.500 1.250 <NA> <NA> Anne_—_voice_2 <NA> <NA>\n"
        );
    }
}
