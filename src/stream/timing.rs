//! Word times: spread the words of a decoded stretch over its voiced audio.
//!
//! Whisper's timestamp tokens give times per stretch of text (or none); inside a stretch each
//! word gets a share of the *voiced* time (VAD frames at or above the release threshold)
//! proportional to its length, so pauses get no words.

/// A word with times in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Spreads `words` over `[t0, t1]` (seconds), using only the spans of `voiced` (sorted,
/// non-overlapping `(start, end)` seconds) inside it; the whole interval when none overlap.
pub fn spread_words(words: &[&str], t0: f64, t1: f64, voiced: &[(f64, f64)]) -> Vec<TimedWord> {
    if words.is_empty() {
        return Vec::new();
    }
    let t1 = t1.max(t0);
    let mut spans: Vec<(f64, f64)> = voiced
        .iter()
        .map(|&(a, b)| (a.max(t0), b.min(t1)))
        .filter(|(a, b)| b > a)
        .collect();
    if spans.is_empty() {
        spans.push((t0, t1));
    }
    let total: f64 = spans.iter().map(|(a, b)| b - a).sum();
    // weight: characters plus a constant for the word's onset
    let weights: Vec<f64> = words
        .iter()
        .map(|w| w.chars().count() as f64 + 2.0)
        .collect();
    let wsum: f64 = weights.iter().sum();
    // map a fraction of voiced time to an absolute time
    // starts land at the beginning of the next span when they fall on a span's end
    let at = |frac: f64, is_start: bool| -> f64 {
        let mut left = frac * total;
        for &(a, b) in &spans {
            let len = b - a;
            if left < len || (!is_start && left <= len) {
                return a + left;
            }
            left -= len;
        }
        spans.last().map_or(t1, |s| s.1)
    };
    let mut acc = 0.0;
    let mut out = Vec::with_capacity(words.len());
    for (w, wt) in words.iter().zip(&weights) {
        let s = at(acc / wsum, true);
        acc += wt;
        let e = at(acc / wsum, false);
        out.push(TimedWord {
            text: (*w).to_string(),
            start: round_ms(s),
            end: round_ms(e.max(s)),
        });
    }
    out
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Voiced spans (seconds) from per-frame VAD probabilities: frames at or above `release`,
/// frame `i` covering `[origin + i*frame_s, origin + (i+1)*frame_s)`.
pub fn voiced_spans(probs: &[f32], release: f32, origin: f64, frame_s: f64) -> Vec<(f64, f64)> {
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for (i, p) in probs.iter().enumerate() {
        match (open, *p >= release) {
            (None, true) => open = Some(i),
            (Some(s), false) => {
                spans.push((origin + s as f64 * frame_s, origin + i as f64 * frame_s));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        spans.push((
            origin + s as f64 * frame_s,
            origin + probs.len() as f64 * frame_s,
        ));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_skip_pauses_and_stay_ordered() {
        let w = spread_words(&["aa", "bb"], 0.0, 4.0, &[(0.0, 1.0), (3.0, 4.0)]);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start, w[0].end), (0.0, 1.0));
        assert_eq!((w[1].start, w[1].end), (3.0, 4.0));
        let w = spread_words(&["a", "bbbbbbbb", "c"], 1.0, 2.0, &[]);
        assert!(w.windows(2).all(|p| p[0].end <= p[1].start + 1e-9));
        assert!(w[1].end - w[1].start > w[0].end - w[0].start);
        assert_eq!(w[0].start, 1.0);
        assert_eq!(w[2].end, 2.0);
    }

    #[test]
    fn spans_from_probs() {
        let s = voiced_spans(&[0.1, 0.9, 0.8, 0.1, 0.6], 0.5, 1.0, 0.5);
        assert_eq!(s, vec![(1.5, 2.5), (3.0, 3.5)]);
    }
}
