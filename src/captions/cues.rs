//! Subtitle cues from final caption events, following broadcast caption norms.
//!
//! A *cue* is one block of at most [`CueSettings::max_lines`] lines of at most
//! [`CueSettings::max_line_chars`] characters shown from `start` to `end`. Cues are built from the
//! committed text only (the last `final` revision of each `(track, segment_id)`; partials are
//! ignored) and rendered to WebVTT / SRT by [`super::to_vtt`] and [`super::to_srt`].
//!
//! # How text is cut into cues
//! 1. **Tokens.** Each final contributes its words (`words[].w` with their times); a final without
//!    words contributes its `text` split at whitespace, with the segment's `start..end` shared among
//!    the words in proportion to their length. A word longer than a line is hard-wrapped into
//!    line-sized pieces (the only place a line is broken inside a word).
//! 2. **Runs.** Consecutive tokens (in time order) of the same track and speaker (a word's own
//!    `speaker` overrides the segment's) separated by at most [`CueSettings::join_gap_s`] of silence
//!    form a *run*. A cue never leaves its run, so a cue never mixes two speakers, and short
//!    segments of one speaker may share a cue.
//! 3. **Speaker changes.** The first cue of a run whose speaker differs from the previous run's
//!    starts with a label: `- ` (the subtitling convention for "another person speaks") or, with
//!    [`CueSettings::show_speaker_names`], `[Name] `. The name is the speaker label, or the track id
//!    when the speaker is unknown and the track is not the mixed `mix` stream. The label is dropped
//!    when it does not fit on one line together with the first word.
//! 4. **Cue boundaries** are chosen per run by dynamic programming (like Knuth–Plass line breaking,
//!    one level up): every cue must fit in `max_lines × max_line_chars` and span at most
//!    `max_duration_s` of speech (a single token always fits); among those segmentations the one
//!    with the least cost wins. Costs: a fixed cost per cue (fewer, fuller cues), a break cost (free
//!    after a sentence end, a segment end or a pause ≥ 0.5 s, cheap after a comma or a shorter
//!    pause, expensive after an article, preposition or conjunction; cue breaks weigh three times
//!    line breaks), a cost for short cues, the cost of the cue's own line layout (step 5), and a
//!    heavy cost per second of **reading-rate shortfall**.
//! 5. **Lines** inside a cue: the fewest lines that hold the text (one line when it fits), with the
//!    break points chosen to balance line lengths and to prefer breaks after punctuation.
//!
//! # Timing
//! Cues are laid out on a single timeline, in order of their first word:
//! * `start` = the first word's start, or later if the previous cue is still showing (overlapping
//!   speech on two tracks is serialised: the later cue waits and the delay is absorbed at the next
//!   pause).
//! * `end` is extended from the last word's end to at least `min_duration_s` after `start` and to
//!   the reading time `chars / max_chars_per_second`, capped at `max_duration_s`, and never later
//!   than `gap_s` before the next cue's first word. It is never earlier than the last word's end
//!   minus `gap_s` (nor shorter than [`MIN_VISIBLE_S`]): the text stays up while it is spoken.
//! * Times are rounded to the millisecond; consecutive cues are separated by at least `gap_s`.
//!
//! # The reading-rate tradeoff
//! Captions must stay in step with the audio, so the reading rate is never met by pushing the next
//! cue later. When a cue cannot stay up long enough because the next words follow it closely, the
//! segmentation changes instead: the reading-rate cost makes the DP start the next cue *earlier*
//! (less text in this cue) when that puts the remaining text before a pause or the end of the
//! speech, where its cue has time to be read. The price is more, shorter cues (more visual churn,
//! less context per cue, sometimes a cue that is not filled). Shrinking a cue does not always help:
//! under continuous fast speech every cue is bounded by its own speaking time, so when speech is
//! faster than `max_chars_per_second` the cues stay synchronised and the rate is exceeded
//! ([`Cue::chars_per_second`] reports it) rather than letting the captions drift behind.
//!
//! # Latency
//! Offline: cues need the final text of the next cue to be timed, so this is a post-processing
//! step over a log (or run at the end of a stream), O(words × words-per-cue²).
//!
//! Example: `let cues = build_cues(&events, &CueSettings::default())?;`

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::event::CaptionEvent;

/// Default maximum characters per line (Netflix Timed Text Style Guide for Latin scripts; EBU/BBC
/// use 37–42).
pub const DEFAULT_MAX_LINE_CHARS: usize = 42;
/// Default maximum lines per cue (broadcast norm: two).
pub const DEFAULT_MAX_LINES: usize = 2;
/// Default maximum reading rate, characters (spaces and punctuation included) per second: the
/// Netflix adult-programme limit of 20 cps (BBC guidance of 160–180 wpm is 15–18 cps).
pub const DEFAULT_MAX_CHARS_PER_SECOND: f64 = 20.0;
/// Default minimum display time of a cue, seconds.
pub const DEFAULT_MIN_DURATION_S: f64 = 1.0;
/// Default maximum display time of a cue, seconds (Netflix: 7 s).
pub const DEFAULT_MAX_DURATION_S: f64 = 7.0;
/// Default minimum gap between consecutive cues, seconds (one frame at 25 fps).
pub const DEFAULT_GAP_S: f64 = 0.04;
/// Default longest silence between two words of one speaker that may still share a cue, seconds.
pub const DEFAULT_JOIN_GAP_S: f64 = 1.0;
/// Default speaker-change label: `- ` rather than the speaker's name.
pub const DEFAULT_SHOW_SPEAKER_NAMES: bool = false;
/// A cue is never shown for less than this, even when the next cue follows closely (a cue is
/// delayed rather than flashed).
pub const MIN_VISIBLE_S: f64 = 0.2;

/// Layout and timing rules for cues. Validate once with [`CueSettings::validate`] (done by
/// [`CueBuilder::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CueSettings {
    /// Maximum characters per line (Unicode scalar values). Default [`DEFAULT_MAX_LINE_CHARS`].
    pub max_line_chars: usize,
    /// Maximum lines per cue. Default [`DEFAULT_MAX_LINES`].
    pub max_lines: usize,
    /// Maximum reading rate in characters per second. Default [`DEFAULT_MAX_CHARS_PER_SECOND`].
    pub max_chars_per_second: f64,
    /// Minimum display time of a cue when the next cue leaves room, seconds.
    /// Default [`DEFAULT_MIN_DURATION_S`].
    pub min_duration_s: f64,
    /// Maximum display time of a cue (and maximum speech a cue may span), seconds.
    /// Default [`DEFAULT_MAX_DURATION_S`].
    pub max_duration_s: f64,
    /// Minimum gap between consecutive cues, seconds. Default [`DEFAULT_GAP_S`].
    pub gap_s: f64,
    /// Longest silence between words of one speaker that may share a cue, seconds.
    /// Default [`DEFAULT_JOIN_GAP_S`].
    pub join_gap_s: f64,
    /// Label speaker changes with `[Name] ` instead of `- `. Default
    /// [`DEFAULT_SHOW_SPEAKER_NAMES`].
    pub show_speaker_names: bool,
}

impl Default for CueSettings {
    fn default() -> Self {
        Self {
            max_line_chars: DEFAULT_MAX_LINE_CHARS,
            max_lines: DEFAULT_MAX_LINES,
            max_chars_per_second: DEFAULT_MAX_CHARS_PER_SECOND,
            min_duration_s: DEFAULT_MIN_DURATION_S,
            max_duration_s: DEFAULT_MAX_DURATION_S,
            gap_s: DEFAULT_GAP_S,
            join_gap_s: DEFAULT_JOIN_GAP_S,
            show_speaker_names: DEFAULT_SHOW_SPEAKER_NAMES,
        }
    }
}

/// A [`CueSettings`] field with an unusable value.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid cue setting `{field}`: {reason}")]
pub struct CueSettingsError {
    /// The field name as written in the configuration.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl CueSettings {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), CueSettingsError> {
        let bad = |field, reason: String| Err(CueSettingsError { field, reason });
        if self.max_line_chars == 0 {
            return bad("max_line_chars", "must be at least 1".into());
        }
        if self.max_lines == 0 {
            return bad("max_lines", "must be at least 1".into());
        }
        let positive = [
            ("max_chars_per_second", self.max_chars_per_second),
            ("max_duration_s", self.max_duration_s),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(
                    field,
                    format!("must be a positive number of seconds (got {v})"),
                );
            }
        }
        let non_negative = [
            ("min_duration_s", self.min_duration_s),
            ("gap_s", self.gap_s),
            ("join_gap_s", self.join_gap_s),
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("must be a finite number ≥ 0 (got {v})"));
            }
        }
        if self.min_duration_s > self.max_duration_s {
            return bad(
                "min_duration_s",
                format!(
                    "must not exceed max_duration_s ({} > {})",
                    self.min_duration_s, self.max_duration_s
                ),
            );
        }
        if self.gap_s >= self.max_duration_s {
            return bad(
                "gap_s",
                format!(
                    "must be shorter than max_duration_s ({} ≥ {})",
                    self.gap_s, self.max_duration_s
                ),
            );
        }
        Ok(())
    }
}

/// One subtitle cue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cue {
    /// Display start, seconds from stream start (millisecond precision).
    pub start: f64,
    /// Display end, seconds (millisecond precision).
    pub end: f64,
    /// The lines, each at most `max_line_chars` characters, speaker label included.
    pub lines: Vec<String>,
    /// Track the text comes from.
    pub track: String,
    /// Speaker name (the speaker label, or the track id for a non-`mix` track with no speaker);
    /// used for WebVTT voice spans.
    pub speaker: Option<String>,
}

impl Cue {
    /// The text on one line (lines joined by a space).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Characters shown, counting a line break as one (the reading-rate measure).
    pub fn chars(&self) -> usize {
        let inner: usize = self.lines.iter().map(|l| l.chars().count()).sum();
        inner + self.lines.len().saturating_sub(1)
    }

    /// Display time, seconds.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }

    /// Reading rate actually required by this cue, characters per second.
    pub fn chars_per_second(&self) -> f64 {
        let d = self.duration();
        if d > 0.0 {
            self.chars() as f64 / d
        } else {
            f64::INFINITY
        }
    }
}

/// Builds cues with validated settings.
#[derive(Debug, Clone)]
pub struct CueBuilder {
    settings: CueSettings,
}

/// Build cues from events with `settings` (validated first). See [`CueBuilder::build`].
pub fn build_cues(
    events: &[CaptionEvent],
    settings: &CueSettings,
) -> Result<Vec<Cue>, CueSettingsError> {
    Ok(CueBuilder::new(settings.clone())?.build(events))
}

impl CueBuilder {
    /// Validate `settings` and keep them.
    pub fn new(settings: CueSettings) -> Result<Self, CueSettingsError> {
        settings.validate()?;
        Ok(Self { settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &CueSettings {
        &self.settings
    }

    /// Cues for the final events among `events` (partials are ignored; of several finals of one
    /// `(track, segment_id)` the highest revision wins). The result is ordered by start time and
    /// never overlaps.
    pub fn build(&self, events: &[CaptionEvent]) -> Vec<Cue> {
        let s = &self.settings;
        let finals = latest_finals(events);
        let mut runs = make_runs(&finals, s);
        add_labels(&mut runs, s);
        // First-word start of every run, for the end of the reading window of a run's last cue.
        let mut run_starts: Vec<f64> = runs.iter().map(|r| r.tokens[0].start).collect();
        run_starts.sort_by(f64::total_cmp);
        let mut raw = Vec::new();
        for run in &runs {
            let last_start = run.tokens.last().map_or(0.0, |t| t.start);
            let i = run_starts.partition_point(|&t| t <= last_start);
            let next_start = run_starts.get(i).copied().unwrap_or(f64::INFINITY);
            raw.extend(cut_run(run, next_start, s));
        }
        time_cues(raw, s)
    }
}

/// A displayable piece of text with its audio time.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    chars: usize,
    start: f64,
    end: f64,
    /// Joined to the previous token without a space (a hard-wrapped piece of a long word).
    glue: bool,
    /// The speaker-change label.
    label: bool,
    /// Last token of a caption segment.
    segment_end: bool,
}

/// Consecutive tokens of one track and speaker.
#[derive(Debug)]
struct Run {
    track: String,
    speaker: Option<String>,
    display: Option<String>,
    tokens: Vec<Token>,
}

/// A cue before timing: natural (spoken) interval and its lines.
#[derive(Debug)]
struct RawCue {
    t0: f64,
    t1: f64,
    lines: Vec<String>,
    track: String,
    speaker: Option<String>,
}

impl RawCue {
    fn chars(&self) -> usize {
        self.lines.iter().map(|l| l.chars().count()).sum::<usize>() + self.lines.len() - 1
    }
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// The last final of each `(track, segment_id)`, ordered by start time (then `seq`).
fn latest_finals(events: &[CaptionEvent]) -> Vec<&CaptionEvent> {
    let mut latest: HashMap<(&str, &str), &CaptionEvent> = HashMap::new();
    for ev in events.iter().filter(|e| e.is_final()) {
        if !(ev.start.is_finite() && ev.end.is_finite()) {
            tracing::warn!(seq = ev.seq, segment = %ev.segment_id, "final with non-finite times skipped");
            continue;
        }
        let key = (ev.track.as_str(), ev.segment_id.as_str());
        match latest.get(&key) {
            Some(old) if old.revision > ev.revision => {}
            _ => {
                latest.insert(key, ev);
            }
        }
    }
    let mut finals: Vec<&CaptionEvent> = latest.into_values().collect();
    finals.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.seq.cmp(&b.seq)));
    finals
}

/// Split `text` at whitespace and share `start..end` among the pieces by length (a space counts
/// as one character), the first piece starting at `start` and the last ending at `end`.
fn spread(text: &str, start: f64, end: f64) -> Vec<(String, f64, f64)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let lens: Vec<usize> = words.iter().map(|w| w.chars().count()).collect();
    let total = (lens.iter().sum::<usize>() + lens.len().saturating_sub(1)).max(1) as f64;
    let span = (end - start).max(0.0);
    let mut out = Vec::with_capacity(words.len());
    let mut acc = 0usize;
    for (w, n) in words.into_iter().zip(lens) {
        let a = start + span * acc as f64 / total;
        let b = start + span * (acc + n) as f64 / total;
        out.push((w.to_string(), a, b));
        acc += n + 1;
    }
    out
}

/// Cut a word longer than `width` into pieces of `width` characters, times shared by length.
fn hard_wrap(word: &str, start: f64, end: f64, width: usize) -> Vec<(String, f64, f64)> {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() <= width {
        return vec![(word.to_string(), start, end)];
    }
    let span = end - start;
    let n = chars.len() as f64;
    chars
        .chunks(width)
        .enumerate()
        .map(|(k, piece)| {
            let a = start + span * (k * width) as f64 / n;
            let b = start + span * (k * width + piece.len()) as f64 / n;
            (piece.iter().collect(), a, b)
        })
        .collect()
}

/// Speaker name shown for a track/speaker pair.
fn display_name(track: &str, speaker: Option<&str>) -> Option<String> {
    match speaker {
        Some(s) => Some(s.to_string()),
        None if track != "mix" && !track.is_empty() => Some(track.to_string()),
        None => None,
    }
}

fn make_runs(finals: &[&CaptionEvent], s: &CueSettings) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for ev in finals {
        let (seg_start, seg_end) = (ev.start, ev.end.max(ev.start));
        // (text, start, end, speaker) of every word of the segment.
        let mut words: Vec<(String, f64, f64, Option<&str>)> = Vec::new();
        if ev.words.is_empty() {
            for (w, a, b) in spread(&ev.text, seg_start, seg_end) {
                words.push((w, a, b, ev.speaker.as_deref()));
            }
        } else {
            for word in &ev.words {
                let a = if word.start.is_finite() {
                    word.start
                } else {
                    seg_start
                };
                let b = if word.end.is_finite() { word.end } else { a };
                let speaker = word.speaker.as_deref().or(ev.speaker.as_deref());
                for (w, a, b) in spread(&word.w, a, b.max(a)) {
                    words.push((w, a, b, speaker));
                }
            }
        }
        let mut pushed_any = false;
        for (w, a, b, speaker) in words {
            let continues = runs.last().is_some_and(|r| {
                r.track == ev.track
                    && r.speaker.as_deref() == speaker
                    && r.tokens.last().is_some_and(|t| a - t.end <= s.join_gap_s)
            });
            if !continues {
                runs.push(Run {
                    track: ev.track.clone(),
                    speaker: speaker.map(str::to_string),
                    display: display_name(&ev.track, speaker),
                    tokens: Vec::new(),
                });
            }
            let run = runs.last_mut().expect("a run was just ensured");
            for (k, (piece, pa, pb)) in hard_wrap(&w, a, b, s.max_line_chars)
                .into_iter()
                .enumerate()
            {
                run.tokens.push(Token {
                    chars: piece.chars().count(),
                    text: piece,
                    start: pa,
                    end: pb,
                    glue: k > 0,
                    label: false,
                    segment_end: false,
                });
            }
            pushed_any = true;
        }
        if pushed_any && let Some(t) = runs.last_mut().and_then(|r| r.tokens.last_mut()) {
            t.segment_end = true;
        }
    }
    runs
}

/// Prefix the first token of each run whose speaker differs from the previous run's.
fn add_labels(runs: &mut [Run], s: &CueSettings) {
    let mut previous: Option<Option<String>> = None;
    for run in runs.iter_mut() {
        let changed = previous.as_ref() != Some(&run.display);
        let label = match (&run.display, s.show_speaker_names) {
            (Some(name), true) if changed => Some(format!("[{name}]")),
            (Some(_), false) if changed && previous.is_some() => Some("-".to_string()),
            _ => None,
        };
        previous = Some(run.display.clone());
        let Some(label) = label else { continue };
        let first = &run.tokens[0];
        let chars = label.chars().count();
        if chars + 1 + first.chars > s.max_line_chars {
            continue; // does not fit on a line with the first word: no label
        }
        let t = first.start;
        run.tokens.insert(
            0,
            Token {
                text: label,
                chars,
                start: t,
                end: t,
                glue: false,
                label: true,
                segment_end: false,
            },
        );
    }
}

// Costs of the cue and line segmentation (dimensionless; only their ratios matter).
/// Each cue costs this much: prefer fewer, fuller cues.
const CUE_COST: f64 = 40.0;
/// Per second of reading time a cue lacks.
const RATE_COST_PER_S: f64 = 400.0;
/// Per character a cue is shorter than half a line.
const SHORT_COST_PER_CHAR: f64 = 3.0;
/// Break after a comma, semicolon, colon or dash (after `.?!…` or a segment end: free).
const BREAK_CLAUSE: f64 = 15.0;
/// Break between two words with no punctuation.
const BREAK_PLAIN: f64 = 60.0;
/// Break after an article, preposition, conjunction or pronoun that leads into the next word.
const BREAK_FUNCTION_WORD: f64 = 150.0;
/// Break inside a hard-wrapped word.
const BREAK_IN_WORD: f64 = 30.0;
/// Cue breaks weigh this much more than line breaks of the same kind: across a cue boundary the
/// reader loses the context, within a cue both lines are on screen together.
const CUE_BREAK_WEIGHT: f64 = 3.0;
/// Line break right after the speaker label.
const BREAK_AFTER_LABEL: f64 = 500.0;
/// Weight of the squared distance of a line's length from the cue's mean line length: low enough
/// that a break after punctuation wins over a perfectly balanced plain break up to ~10 characters
/// of imbalance.
const BALANCE_WEIGHT: f64 = 0.25;
/// A pause at least this long makes a free cue break, seconds.
const PAUSE_FREE_S: f64 = 0.5;
/// A pause at least this long makes a break as good as a comma, seconds.
const PAUSE_CLAUSE_S: f64 = 0.25;

/// Words that should not end a line or a cue (English and French).
#[rustfmt::skip]
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "and",
    "or", "but", "nor", "if", "that", "than", "as", "my", "your", "his", "her", "our", "their",
    "its", "this", "these", "those", "i", "we", "you", "they", "he", "she", "le", "la", "les",
    "un", "une", "des", "du", "de", "et", "ou", "mais", "à", "au", "aux", "en", "dans", "sur",
    "pour", "par", "avec", "sans", "ce", "cet", "cette", "ces", "mon", "ma", "mes", "ton", "ta",
    "tes", "son", "sa", "ses", "notre", "nos", "votre", "vos", "leur", "leurs", "je", "tu", "il",
    "elle", "nous", "vous", "ils", "elles", "qui", "que", "ne", "se",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Sentence,
    Clause,
    FunctionWord,
    Plain,
}

fn ending(word: &str) -> Ending {
    let trimmed = word.trim_end_matches(['"', '\'', '’', '”', '»', ')', ']', '\u{a0}']);
    match trimmed.chars().last() {
        Some('.' | '!' | '?' | '…') => Ending::Sentence,
        Some(',' | ';' | ':' | '—' | '–') => Ending::Clause,
        _ if FUNCTION_WORDS.contains(&word.to_lowercase().as_str()) => Ending::FunctionWord,
        _ => Ending::Plain,
    }
}

/// Prefix sums over a run's tokens giving the one-line length of any span in O(1).
struct Lengths {
    chars: Vec<usize>,
    spaces: Vec<usize>,
}

impl Lengths {
    fn new(tokens: &[Token]) -> Self {
        let mut chars = vec![0];
        let mut spaces = vec![0];
        for t in tokens {
            chars.push(chars.last().unwrap() + t.chars);
            spaces.push(spaces.last().unwrap() + usize::from(!t.glue));
        }
        Self { chars, spaces }
    }

    /// Characters of tokens `a..b` on one line (`a < b`).
    fn span(&self, a: usize, b: usize) -> usize {
        self.chars[b] - self.chars[a] + self.spaces[b] - self.spaces[a + 1]
    }
}

/// Fewest lines of `width` holding tokens `a..b` (greedy fill is optimal for the count).
fn min_lines(tokens: &[Token], a: usize, b: usize, width: usize) -> usize {
    let mut lines = 1;
    let mut len = 0;
    for (k, t) in tokens[a..b].iter().enumerate() {
        let sep = usize::from(k > 0 && !t.glue);
        if k > 0 && len + sep + t.chars > width {
            lines += 1;
            len = t.chars;
        } else {
            len += sep + t.chars;
        }
    }
    lines
}

/// Break cost after token `k` inside a cue (line break).
fn line_break_cost(tokens: &[Token], k: usize) -> f64 {
    if tokens[k].label {
        return BREAK_AFTER_LABEL;
    }
    if tokens[k + 1].glue {
        return 0.0; // forced hard wrap
    }
    match ending(&tokens[k].text) {
        Ending::Sentence => 0.0,
        Ending::Clause => BREAK_CLAUSE,
        Ending::FunctionWord => BREAK_FUNCTION_WORD,
        Ending::Plain => BREAK_PLAIN,
    }
}

/// Break cost after token `k` between cues; pauses and segment ends count too.
fn cue_break_cost(tokens: &[Token], k: usize) -> f64 {
    if tokens[k + 1].glue {
        return BREAK_IN_WORD;
    }
    let pause = tokens[k + 1].start - tokens[k].end;
    if tokens[k].segment_end || pause >= PAUSE_FREE_S {
        return 0.0;
    }
    let by_text = line_break_cost(tokens, k);
    if pause >= PAUSE_CLAUSE_S {
        by_text.min(BREAK_CLAUSE)
    } else {
        by_text
    }
}

/// Split tokens `a..b` into exactly `n` lines of at most `width`, balanced, preferring good breaks.
/// Returns the cost of the layout and the line starts (relative to `a`, ending with `b - a`).
fn layout_lines(
    tokens: &[Token],
    lens: &Lengths,
    a: usize,
    b: usize,
    n: usize,
    width: usize,
) -> (f64, Vec<usize>) {
    let m = b - a;
    let target = lens.span(a, b) as f64 / n as f64;
    // best[l][k]: cost of the first k tokens in l lines; from[l][k]: start of the l-th line.
    let mut best = vec![vec![f64::INFINITY; m + 1]; n + 1];
    let mut from = vec![vec![0usize; m + 1]; n + 1];
    best[0][0] = 0.0;
    for l in 1..=n {
        for k in 1..=m {
            for p in (l - 1..k).rev() {
                let len = lens.span(a + p, a + k);
                if len > width {
                    break;
                }
                if best[l - 1][p].is_infinite() {
                    continue;
                }
                let dev = len as f64 - target;
                let brk = if p > 0 {
                    line_break_cost(tokens, a + p - 1)
                } else {
                    0.0
                };
                let c = best[l - 1][p] + BALANCE_WEIGHT * dev * dev + brk;
                // `<=`: of equal costs keep the shorter top line (bottom-heavy, as subtitlers prefer).
                if c <= best[l][k] {
                    best[l][k] = c;
                    from[l][k] = p;
                }
            }
        }
    }
    let mut bounds = vec![m];
    let mut k = m;
    for l in (1..=n).rev() {
        k = from[l][k];
        bounds.push(k);
    }
    bounds.reverse();
    (best[n][m], bounds)
}

/// The text of the lines of tokens `a..` cut at `bounds` (from [`layout_lines`]).
fn render_lines(tokens: &[Token], a: usize, bounds: &[usize]) -> Vec<String> {
    bounds
        .windows(2)
        .map(|w| {
            let mut line = String::new();
            for (i, t) in tokens[a + w[0]..a + w[1]].iter().enumerate() {
                if i > 0 && !t.glue {
                    line.push(' ');
                }
                line.push_str(&t.text);
            }
            line
        })
        .collect()
}

/// Cut a run into cues (see the module doc); `next_start` is the first word start of whatever
/// follows the run on the timeline.
fn cut_run(run: &Run, next_start: f64, s: &CueSettings) -> Vec<RawCue> {
    let tokens = &run.tokens;
    let n = tokens.len();
    let lens = Lengths::new(tokens);
    let width = s.max_line_chars;
    let half_line = (width / 2) as f64;
    let mut best = vec![f64::INFINITY; n + 1];
    let mut from = vec![0usize; n + 1];
    best[0] = 0.0;
    for j in 1..=n {
        if tokens[j - 1].label {
            continue; // a cue never ends on the label
        }
        let mut t1 = f64::NEG_INFINITY;
        for i in (0..j).rev() {
            t1 = t1.max(tokens[i].end);
            let chars = lens.span(i, j);
            let single = j - i == 1 || (j - i == 2 && tokens[i].label);
            let t0 = tokens[i].start;
            if !single && (chars > width * s.max_lines || t1 - t0 > s.max_duration_s) {
                break; // longer spans only grow
            }
            let n_lines = min_lines(tokens, i, j, width);
            if n_lines > s.max_lines {
                if single {
                    continue;
                }
                break;
            }
            if best[i].is_infinite() {
                continue;
            }
            // Reading time available before the next cue must be up (see `time_cues`).
            let limit = if j < n { tokens[j].start } else { next_start } - s.gap_s;
            let up_to = limit
                .min(t0 + s.max_duration_s)
                .max(t1 - s.gap_s)
                .max(t0 + MIN_VISIBLE_S);
            let shortfall = (chars as f64 / s.max_chars_per_second - (up_to - t0)).max(0.0);
            let brk = if j < n {
                CUE_BREAK_WEIGHT * cue_break_cost(tokens, j - 1)
            } else {
                0.0
            };
            let short = (half_line - chars as f64).max(0.0) * SHORT_COST_PER_CHAR;
            let c = best[i] + CUE_COST + brk + short + shortfall * RATE_COST_PER_S;
            if c >= best[j] {
                continue; // the line layout can only add cost
            }
            let c = c + layout_lines(tokens, &lens, i, j, n_lines, width).0;
            if c < best[j] {
                best[j] = c;
                from[j] = i;
            }
        }
    }
    let mut spans = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = from[j];
        spans.push((i, j));
        j = i;
    }
    spans.reverse();
    spans
        .into_iter()
        .map(|(i, j)| {
            let n_lines = min_lines(tokens, i, j, width);
            let t1 = tokens[i..j]
                .iter()
                .map(|t| t.end)
                .fold(f64::NEG_INFINITY, f64::max);
            RawCue {
                t0: tokens[i].start,
                t1,
                lines: render_lines(
                    tokens,
                    i,
                    &layout_lines(tokens, &lens, i, j, n_lines, width).1,
                ),
                track: run.track.clone(),
                speaker: run.display.clone(),
            }
        })
        .collect()
}

/// Lay cues out on one timeline (see the module doc, "Timing").
fn time_cues(mut raw: Vec<RawCue>, s: &CueSettings) -> Vec<Cue> {
    raw.sort_by(|a, b| a.t0.total_cmp(&b.t0));
    let next_t0: Vec<Option<f64>> = (0..raw.len())
        .map(|k| raw.get(k + 1).map(|c| c.t0))
        .collect();
    let mut out: Vec<Cue> = Vec::with_capacity(raw.len());
    for (c, next) in raw.into_iter().zip(next_t0) {
        let mut start = c.t0.max(0.0);
        if let Some(prev) = out.last() {
            start = start.max(prev.end + s.gap_s);
        }
        let start = round_ms(start);
        let floor = start + (c.t1 - c.t0 - s.gap_s).max(MIN_VISIBLE_S);
        let reading = c.chars() as f64 / s.max_chars_per_second;
        let desired =
            c.t1.max(start + s.min_duration_s)
                .max(start + reading)
                .min((start + s.max_duration_s).max(floor));
        let end = match next {
            Some(t) => desired.min(t - s.gap_s).max(floor),
            None => desired.max(floor),
        };
        out.push(Cue {
            start,
            end: round_ms(end),
            lines: c.lines,
            track: c.track,
            speaker: c.speaker,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::captions::{EventKind, Word};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A final event whose words are given as `(word, start, end)`.
    pub(crate) fn final_event(
        seq: u64,
        seg: &str,
        speaker: Option<&str>,
        words: &[(&str, f64, f64)],
    ) -> CaptionEvent {
        let text = words.iter().map(|w| w.0).collect::<Vec<_>>().join(" ");
        CaptionEvent {
            seq,
            kind: EventKind::Final,
            segment_id: seg.into(),
            revision: 0,
            track: "mix".into(),
            speaker: speaker.map(Into::into),
            language: Some("en".into()),
            stable_text: text.clone(),
            text,
            start: words.first().map_or(0.0, |w| w.1),
            end: words.last().map_or(0.0, |w| w.2),
            emitted_at: words.last().map_or(0.0, |w| w.2) + 0.8,
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

    /// Words of `text` spoken back to back from `start`, `per_word` seconds each.
    pub(crate) fn timed(text: &str, start: f64, per_word: f64) -> Vec<(&str, f64, f64)> {
        text.split_whitespace()
            .enumerate()
            .map(|(k, w)| {
                let a = start + k as f64 * per_word;
                (w, a, a + per_word)
            })
            .collect()
    }

    fn lines(cues: &[Cue]) -> Vec<Vec<&str>> {
        cues.iter()
            .map(|c| c.lines.iter().map(String::as_str).collect())
            .collect()
    }

    fn times(cues: &[Cue]) -> Vec<(f64, f64)> {
        cues.iter().map(|c| (c.start, c.end)).collect()
    }

    #[test]
    fn default_settings_are_valid_and_documented_values() {
        let s = CueSettings::default();
        s.validate().unwrap();
        assert_eq!((s.max_line_chars, s.max_lines), (42, 2));
        assert_eq!(s.max_chars_per_second, 20.0);
    }

    #[test]
    fn validate_names_the_bad_field() {
        type Change = fn(&mut CueSettings);
        let cases: [(&str, Change); 10] = [
            ("max_line_chars", |s| s.max_line_chars = 0),
            ("max_lines", |s| s.max_lines = 0),
            ("max_chars_per_second", |s| s.max_chars_per_second = 0.0),
            ("max_chars_per_second", |s| {
                s.max_chars_per_second = f64::NAN
            }),
            ("max_duration_s", |s| s.max_duration_s = -1.0),
            ("min_duration_s", |s| s.min_duration_s = 8.0),
            ("min_duration_s", |s| s.min_duration_s = -0.1),
            ("gap_s", |s| s.gap_s = f64::INFINITY),
            ("gap_s", |s| s.gap_s = 7.0),
            ("join_gap_s", |s| s.join_gap_s = -1.0),
        ];
        for (field, change) in cases {
            let mut s = CueSettings::default();
            change(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
            assert!(CueBuilder::new(s).is_err());
        }
    }

    #[test]
    fn settings_deserialise_with_defaults_and_reject_unknown_fields() {
        let s: CueSettings = serde_json::from_str(r#"{"max_lines": 3}"#).unwrap();
        assert_eq!(
            s,
            CueSettings {
                max_lines: 3,
                ..CueSettings::default()
            }
        );
        assert!(serde_json::from_str::<CueSettings>(r#"{"max_line": 3}"#).is_err());
    }

    #[test]
    fn short_text_stays_on_one_line_and_gets_minimum_duration() {
        let ev = final_event(0, "s1", None, &[("Hello", 1.0, 1.2), ("there.", 1.2, 1.5)]);
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(lines(&cues), vec![vec!["Hello there."]]);
        assert_eq!(times(&cues), vec![(1.0, 2.0)]);
        assert_eq!(cues[0].speaker, None);
    }

    #[test]
    fn partials_are_ignored_and_the_latest_final_wins() {
        let mut partial = final_event(0, "s1", None, &[("Hullo", 1.0, 1.2)]);
        partial.kind = EventKind::Partial;
        let first = final_event(1, "s1", None, &[("Hello", 1.0, 1.2)]);
        let mut second = final_event(2, "s1", None, &[("Hello!", 1.0, 1.2)]);
        second.revision = 1;
        let cues = build_cues(&[partial, second, first], &CueSettings::default()).unwrap();
        assert_eq!(lines(&cues), vec![vec!["Hello!"]]);
    }

    #[test]
    fn two_lines_are_balanced_and_break_after_punctuation() {
        let text = "We looked at the budget, and the numbers for next year are fine.";
        let ev = final_event(0, "s1", None, &timed(text, 0.0, 0.3));
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec![
                "We looked at the budget,",
                "and the numbers for next year are fine."
            ]]
        );
        // Without punctuation: before the conjunction rather than after "and" or "the", even if
        // the lines are less balanced.
        let text = "we looked at the budget and the numbers for next year are fine";
        let ev = final_event(0, "s1", None, &timed(text, 0.0, 0.3));
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec![
                "we looked at the budget",
                "and the numbers for next year are fine"
            ]]
        );
        // Balanced when no break is better than another.
        let text = "aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii";
        let s = CueSettings {
            max_line_chars: 30,
            ..CueSettings::default()
        };
        let ev = final_event(0, "s1", None, &timed(text, 0.0, 0.3));
        let cues = build_cues(&[ev], &s).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec!["aaaa bbbb cccc dddd", "eeee ffff gggg hhhh iiii"]]
        );
    }

    #[test]
    fn words_longer_than_a_line_are_hard_wrapped() {
        let s = CueSettings {
            max_line_chars: 10,
            ..CueSettings::default()
        };
        let ev = final_event(
            0,
            "s1",
            None,
            &[("Pneumonoultramicroscopic", 0.0, 2.4), ("yes", 2.4, 2.6)],
        );
        let cues = build_cues(&[ev], &s).unwrap();
        let all: Vec<&str> = cues
            .iter()
            .flat_map(|c| c.lines.iter().map(String::as_str))
            .collect();
        assert_eq!(all, vec!["Pneumonoul", "tramicrosc", "opic yes"]);
    }

    #[test]
    fn speaker_changes_start_a_new_cue_with_a_dash_or_a_name() {
        let a = final_event(
            0,
            "s1",
            Some("spk1"),
            &[("Hi", 0.0, 0.3), ("Bob.", 0.3, 0.6)],
        );
        let b = final_event(1, "s2", Some("spk2"), &[("Hello.", 0.8, 1.2)]);
        let c = final_event(
            2,
            "s3",
            Some("spk2"),
            &[("Sit", 1.4, 1.6), ("down.", 1.6, 1.9)],
        );
        let evs = [a, b, c];
        let cues = build_cues(&evs, &CueSettings::default()).unwrap();
        // spk2's two segments are close together: they share a cue, labelled once.
        assert_eq!(
            lines(&cues),
            vec![vec!["Hi Bob."], vec!["- Hello. Sit down."]]
        );
        assert_eq!(cues[1].speaker.as_deref(), Some("spk2"));
        assert_eq!(times(&cues), vec![(0.0, 0.76), (0.8, 1.9)]);
        let named = CueSettings {
            show_speaker_names: true,
            ..CueSettings::default()
        };
        let cues = build_cues(&evs, &named).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec!["[spk1] Hi Bob."], vec!["[spk2] Hello. Sit down."]]
        );
    }

    #[test]
    fn a_word_level_speaker_change_splits_the_segment() {
        let mut ev = final_event(0, "s1", Some("spk1"), &timed("yes no", 0.0, 0.5));
        ev.words[1].speaker = Some("spk2".into());
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(lines(&cues), vec![vec!["yes"], vec!["- no"]]);
    }

    #[test]
    fn long_silence_splits_a_speaker_and_tracks_name_unknown_speakers() {
        let mut a = final_event(0, "s1", None, &[("One.", 0.0, 0.5)]);
        let mut b = final_event(1, "s2", None, &[("Two.", 3.0, 3.5)]);
        a.track = "alice".into();
        b.track = "alice".into();
        let named = CueSettings {
            show_speaker_names: true,
            ..CueSettings::default()
        };
        let cues = build_cues(&[a, b], &named).unwrap();
        assert_eq!(lines(&cues), vec![vec!["[alice] One."], vec!["Two."]]);
        assert_eq!(cues[1].speaker.as_deref(), Some("alice"));
    }

    #[test]
    fn segments_without_words_use_segment_times() {
        let mut ev = final_event(0, "s1", None, &[]);
        ev.text = "aaaa bbbb".into();
        ev.start = 2.0;
        ev.end = 3.0;
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(lines(&cues), vec![vec!["aaaa bbbb"]]);
        assert_eq!(times(&cues), vec![(2.0, 3.0)]);
    }

    #[test]
    fn minimum_duration_is_blocked_by_the_next_cue() {
        let a = final_event(0, "s1", Some("A"), &[("Yes.", 1.0, 1.3)]);
        let b = final_event(1, "s2", Some("B"), &[("No.", 1.6, 1.9)]);
        let cues = build_cues(&[a, b], &CueSettings::default()).unwrap();
        assert_eq!(times(&cues), vec![(1.0, 1.56), (1.6, 2.6)]);
    }

    #[test]
    fn reading_rate_extends_the_cue() {
        // 39 characters spoken in 1.2 s need 1.95 s at 20 cps.
        let text = "Quick brown foxes jump over lazy hounds.";
        let ev = final_event(0, "s1", None, &timed(text, 0.5, 0.2));
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(cues[0].chars(), 40);
        assert_eq!(times(&cues), vec![(0.5, 2.5)]);
    }

    #[test]
    fn reading_rate_never_pushes_the_next_cue() {
        // Fast speech followed closely by another speaker: the cue ends gap_s before them.
        let text = "Quick brown foxes jump over lazy hounds.";
        let a = final_event(0, "s1", Some("A"), &timed(text, 0.5, 0.2));
        let b = final_event(1, "s2", Some("B"), &[("Wow.", 2.0, 2.3)]);
        let cues = build_cues(&[a, b], &CueSettings::default()).unwrap();
        assert_eq!(times(&cues), vec![(0.5, 1.96), (2.0, 3.0)]);
        assert!(cues[0].chars_per_second() > 20.0);
    }

    #[test]
    fn overlapping_speech_is_serialised() {
        let a = final_event(0, "s1", Some("A"), &timed("one two three four", 0.0, 0.5));
        let mut b = final_event(1, "s2", Some("B"), &[("yes", 1.0, 1.3)]);
        b.track = "other".into();
        let cues = build_cues(&[a, b], &CueSettings::default()).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec!["one two three four"], vec!["- yes"]]
        );
        // The cue of A stays up while A speaks; B waits.
        assert_eq!(times(&cues), vec![(0.0, 1.96), (2.0, 3.0)]);
    }

    #[test]
    fn a_long_segment_becomes_several_cues() {
        let text = "Good morning everyone. Let's start with the budget for next year, \
                    which we discussed last week. The numbers are better than expected, \
                    so we can hire two more engineers in the spring.";
        let ev = final_event(0, "s1", None, &timed(text, 0.0, 0.35));
        let cues = build_cues(&[ev], &CueSettings::default()).unwrap();
        assert_eq!(
            lines(&cues),
            vec![
                vec![
                    "Good morning everyone.",
                    "Let's start with the budget for next year,"
                ],
                vec![
                    "which we discussed last week.",
                    "The numbers are better than expected,"
                ],
                vec!["so we can hire two more", "engineers in the spring."],
            ]
        );
        assert_eq!(times(&cues), vec![(0.0, 3.81), (3.85, 7.66), (7.7, 11.2)]);
    }

    /// The reading-rate cost moves a cue break earlier, before a pause, so that the rest of the
    /// text lands in a cue with time to be read.
    #[test]
    fn reading_rate_starts_the_next_cue_earlier() {
        let words = [
            ("aaaa", 0.0, 0.2),
            ("bbbb", 0.2, 0.4),
            ("cccc", 0.75, 0.95),
            ("dddd.", 0.95, 1.15),
            ("eeee", 1.15, 1.35),
        ];
        let ev = final_event(0, "s1", None, &words);
        let fast = CueSettings {
            max_line_chars: 20,
            max_lines: 1,
            max_chars_per_second: 100.0,
            ..CueSettings::default()
        };
        let cues = build_cues(std::slice::from_ref(&ev), &fast).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec!["aaaa bbbb cccc dddd."], vec!["eeee"]]
        );
        let slow = CueSettings {
            max_chars_per_second: 10.0,
            ..fast
        };
        let cues = build_cues(&[ev], &slow).unwrap();
        assert_eq!(
            lines(&cues),
            vec![vec!["aaaa bbbb"], vec!["cccc dddd. eeee"]]
        );
        assert_eq!(times(&cues), vec![(0.0, 0.71), (0.75, 2.25)]);
    }

    /// Properties over random word streams: line and cue bounds, order, no overlap.
    #[test]
    fn random_streams_respect_the_layout_bounds() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let vocabulary = [
            "a",
            "I",
            "the",
            "meeting,",
            "budget.",
            "we",
            "should",
            "consider",
            "extraordinarily",
            "long",
            "words?",
            "Yes!",
            "ok",
            "numbers",
            "engineers",
            "Pneumonoultramicroscopic",
        ];
        for round in 0..200 {
            let s = CueSettings {
                max_line_chars: rng.random_range(6..50),
                max_lines: rng.random_range(1..4),
                max_chars_per_second: rng.random_range(8.0..25.0),
                show_speaker_names: rng.random_bool(0.5),
                ..CueSettings::default()
            };
            let mut events = Vec::new();
            let mut t = rng.random_range(0.0..2.0);
            for seg in 0..rng.random_range(1..8) {
                let n = rng.random_range(1..40);
                let mut words = Vec::new();
                for _ in 0..n {
                    let w = vocabulary[rng.random_range(0..vocabulary.len())];
                    let d = rng.random_range(0.05..0.6);
                    words.push((w, t, t + d));
                    t += d + if rng.random_bool(0.1) {
                        rng.random_range(0.0..1.5)
                    } else {
                        0.0
                    };
                }
                let speaker = ["A", "B"][rng.random_range(0..2)];
                events.push(final_event(seg, &format!("s{seg}"), Some(speaker), &words));
                t += rng.random_range(0.0..3.0);
            }
            let cues = build_cues(&events, &s).unwrap();
            let words_in: usize = events.iter().map(|e| e.words.len()).sum();
            let words_out: usize = cues
                .iter()
                .flat_map(|c| c.lines.iter())
                .flat_map(|l| l.split_whitespace())
                .filter(|w| *w != "-" && !w.starts_with('['))
                .count();
            assert!(words_out >= words_in, "round {round}: words lost");
            for (k, c) in cues.iter().enumerate() {
                assert!(
                    !c.lines.is_empty() && c.lines.len() <= s.max_lines,
                    "round {round}: {c:?}"
                );
                for l in &c.lines {
                    assert!(
                        !l.is_empty() && l.chars().count() <= s.max_line_chars,
                        "round {round}: {l:?}"
                    );
                }
                assert!(c.end > c.start, "round {round}: {c:?}");
                if let Some(next) = cues.get(k + 1) {
                    assert!(
                        next.start >= c.end + s.gap_s - 1e-6,
                        "round {round}: {c:?} / {next:?}"
                    );
                }
            }
        }
    }
}
