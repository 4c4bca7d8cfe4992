//! Embedding windows over a track's voiced audio, their speakers, and speaker runs of words.
//!
//! [`Framer`] keeps the last `window_ms` of *voiced* frames (silence is skipped, so a window is
//! always full of speech) and says when a window is due: every `hop_ms` of new voiced audio.
//! [`Labels`] holds the clusterer and the recent windows with their speakers; the speaker at an
//! audio time is the one of the window whose centre is nearest. [`speaker_runs`] cuts a list of
//! timed words into runs of one speaker, absorbing runs shorter than `min_run_ms`.
//!
//! Everything is decided in audio time (frames of 32 ms), so the labels do not depend on how the
//! audio was sliced.

use std::collections::VecDeque;

use crate::vad::FRAME_SAMPLES;

use super::cluster::{ClusterParams, Decision, OnlineClusters};
use super::settings::DiarizeSettings;

const SAMPLE_RATE: f64 = 16_000.0;
/// Windows kept for label look-ups (about 2 minutes of speech at the default hop): finals only
/// look at their own segment, which is at most a few tens of seconds old.
pub const MAX_WINDOWS: usize = 160;

/// One embedding window and its speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Audio time of the first voiced frame, seconds.
    pub start: f64,
    /// Audio time of the end of the last voiced frame, seconds.
    pub end: f64,
    /// Audio time of the middle voiced frame's centre, seconds.
    pub centre: f64,
    /// The speaker, once the clusterer has one (latest knowledge).
    pub speaker: Option<usize>,
    /// Sequence number of the window on its track (0, 1, 2...).
    pub index: u64,
    /// The speaker given when the window was added.
    pub first_speaker: Option<usize>,
    /// Index of the later window whose new speaker relabelled this one.
    pub relabelled_by: Option<u64>,
}

impl Window {
    /// The speaker as known once window `k` was processed (`k` ≥ this window's index).
    pub fn speaker_as_of(&self, k: u64) -> Option<usize> {
        match self.relabelled_by {
            Some(r) if r <= k => self.speaker,
            _ => self.first_speaker,
        }
    }
}

/// A speaker change seen in the windows of an open segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// Estimated change time: midway between the centres of the last window of the previous
    /// speaker and the first window of the new one, seconds.
    pub at: f64,
    pub from: usize,
    pub to: usize,
}

/// Collects voiced frames and cuts embedding windows.
pub struct Framer {
    window_frames: usize,
    hop_frames: usize,
    frames: VecDeque<(u64, Vec<f32>)>,
    since_last: usize,
    first_done: bool,
}

impl Framer {
    /// A framer following `settings` (window and hop rounded to whole 32 ms frames).
    pub fn new(settings: &DiarizeSettings) -> Self {
        let frames = |ms: u32| ((ms as usize * 16).div_ceil(FRAME_SAMPLES)).max(1);
        let window_frames = frames(settings.window_ms);
        Self {
            window_frames,
            hop_frames: frames(settings.hop_ms).min(window_frames),
            frames: VecDeque::with_capacity(window_frames + 1),
            since_last: 0,
            first_done: false,
        }
    }

    /// Adds a voiced frame starting at absolute sample `start`. Returns a due window: its audio
    /// (written into `audio`) and times.
    pub fn push(&mut self, start: u64, frame: &[f32], audio: &mut Vec<f32>) -> Option<Window> {
        self.frames.push_back((start, frame.to_vec()));
        while self.frames.len() > self.window_frames {
            self.frames.pop_front();
        }
        self.since_last += 1;
        let full = self.frames.len() == self.window_frames;
        let due = full && (!self.first_done || self.since_last >= self.hop_frames);
        if !due {
            return None;
        }
        self.first_done = true;
        self.since_last = 0;
        audio.clear();
        for (_, f) in &self.frames {
            audio.extend_from_slice(f);
        }
        let first = self.frames.front().map_or(0, |f| f.0);
        let (last, last_len) = self.frames.back().map_or((0, 0), |f| (f.0, f.1.len()));
        let (mid, mid_len) = self
            .frames
            .get(self.frames.len() / 2)
            .map_or((0, 0), |f| (f.0, f.1.len()));
        Some(Window {
            start: first as f64 / SAMPLE_RATE,
            end: (last + last_len as u64) as f64 / SAMPLE_RATE,
            centre: (mid as f64 + mid_len as f64 / 2.0) / SAMPLE_RATE,
            speaker: None,
            index: 0,
            first_speaker: None,
            relabelled_by: None,
        })
    }
}

/// The clusterer and the recent windows of a track.
pub struct Labels {
    clusters: OnlineClusters,
    windows: VecDeque<Window>,
    next_index: u64,
}

impl Labels {
    /// No windows, no speakers.
    pub fn new(settings: &DiarizeSettings) -> Self {
        Self {
            clusters: OnlineClusters::new(ClusterParams {
                new_speaker_similarity: settings.new_speaker_similarity,
                max_speakers: settings.max_speakers as usize,
                min_new_windows: settings.min_new_windows as usize,
            }),
            windows: VecDeque::with_capacity(MAX_WINDOWS + 1),
            next_index: 0,
        }
    }

    /// Adds window `w` with unit embedding `e` and assigns it (and, when it creates a speaker,
    /// the pending windows before it).
    pub fn add(&mut self, mut w: Window, e: &[f32]) {
        let decision = self.clusters.push(e);
        w.speaker = match decision {
            Decision::Undecided => None,
            Decision::Speaker(s) | Decision::Pending(s) => Some(s),
            Decision::New { speaker, .. } => Some(speaker),
        };
        w.index = self.next_index;
        w.first_speaker = w.speaker;
        w.relabelled_by = None;
        self.next_index += 1;
        let index = w.index;
        self.windows.push_back(w);
        if let Decision::New { speaker, windows } = decision {
            let n = self.windows.len();
            for w in self.windows.iter_mut().skip(n.saturating_sub(windows)) {
                if w.speaker != Some(speaker) {
                    w.speaker = Some(speaker);
                    w.relabelled_by = Some(index);
                }
            }
        }
        while self.windows.len() > MAX_WINDOWS {
            self.windows.pop_front();
        }
    }

    /// Speakers created so far.
    pub fn speakers(&self) -> usize {
        self.clusters.speakers()
    }

    /// The recent windows, oldest first.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter()
    }

    /// The speaker of the latest window (the provisional speaker of live speech).
    pub fn current(&self) -> Option<usize> {
        self.windows.iter().rev().find_map(|w| w.speaker)
    }

    /// The speaker at audio time `t`: that of the labelled window whose centre is nearest.
    pub fn speaker_at(&self, t: f64) -> Option<usize> {
        self.windows
            .iter()
            .filter(|w| w.speaker.is_some())
            .min_by(|a, b| (a.centre - t).abs().total_cmp(&(b.centre - t).abs()))
            .and_then(|w| w.speaker)
    }
}

impl Labels {
    /// The latest speaker change among the windows that end by `horizon` (seconds) and whose
    /// centre is at or after `since`, as known when the last of those windows was processed
    /// (so the answer does not depend on how far the worker has run ahead). `None` when there
    /// is no such window, or the newest ones have the same speaker as those before.
    /// Returns the index of the newest window considered, and the change.
    pub fn change_by(&self, since: f64, horizon: f64) -> Option<(u64, Option<Change>)> {
        let seen: Vec<&Window> = self
            .windows
            .iter()
            .filter(|w| w.end <= horizon + 1e-9)
            .collect();
        let k = seen.last()?.index;
        let inside: Vec<(f64, Option<usize>)> = seen
            .iter()
            .filter(|w| w.centre >= since)
            .map(|w| (w.centre, w.speaker_as_of(k)))
            .collect();
        let (last_t, last) = *inside.last()?;
        let Some(to) = last else {
            return Some((k, None));
        };
        // the first window of the newest speaker's run, and the one before it
        let mut first_t = last_t;
        for &(t, s) in inside.iter().rev().skip(1) {
            match s {
                Some(s) if s == to => first_t = t,
                Some(from) => {
                    return Some((
                        k,
                        Some(Change {
                            at: (t + first_t) / 2.0,
                            from,
                            to,
                        }),
                    ));
                }
                None => {}
            }
        }
        Some((k, None))
    }
}

/// A run of consecutive words of one speaker: `words` indexes the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub words: std::ops::Range<usize>,
    pub speaker: Option<usize>,
}

/// Cuts words (`(start, end)` times, in order, with their speaker) into runs of one speaker.
/// A word without a speaker joins the run before it (or after it, at the start). Runs shorter
/// than `min_run_s` (first word start to last word end) are absorbed by the longer neighbour,
/// shortest first, until every run is long enough or one run is left.
pub fn speaker_runs(words: &[(f64, f64)], speakers: &[Option<usize>], min_run_s: f64) -> Vec<Run> {
    let n = words.len().min(speakers.len());
    let mut runs: Vec<Run> = Vec::new();
    for (i, &s) in speakers.iter().enumerate().take(n) {
        match runs.last_mut() {
            Some(r) if r.speaker == s || s.is_none() => r.words.end = i + 1,
            Some(r) if r.speaker.is_none() => {
                r.words.end = i + 1;
                r.speaker = s;
            }
            _ => runs.push(Run {
                words: i..i + 1,
                speaker: s,
            }),
        }
    }
    let dur = |r: &Run| words[r.words.end - 1].1 - words[r.words.start].0;
    while runs.len() > 1 {
        let (i, d) = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (i, dur(r)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("runs is not empty");
        if d >= min_run_s {
            break;
        }
        let left = i.checked_sub(1).map(|j| dur(&runs[j]));
        let right = runs.get(i + 1).map(dur);
        let into_left = match (left, right) {
            (Some(l), Some(r)) => l >= r,
            (Some(_), None) => true,
            _ => false,
        };
        let short = runs.remove(i);
        if into_left {
            runs[i - 1].words.end = short.words.end;
        } else {
            runs[i].words.start = short.words.start;
        }
        // neighbours of one speaker become one run
        let mut j = 1;
        while j < runs.len() {
            if runs[j].speaker == runs[j - 1].speaker {
                let r = runs.remove(j);
                runs[j - 1].words.end = r.words.end;
            } else {
                j += 1;
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize, dur: f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| (i as f64 * dur, i as f64 * dur + dur * 0.9))
            .collect()
    }

    #[test]
    fn one_speaker_is_one_run() {
        let w = words(5, 0.3);
        let runs = speaker_runs(&w, &[Some(0); 5], 1.0);
        assert_eq!(
            runs,
            vec![Run {
                words: 0..5,
                speaker: Some(0)
            }]
        );
    }

    #[test]
    fn a_change_splits_and_a_blip_is_absorbed() {
        let w = words(12, 0.3);
        let s = [0, 0, 0, 0, 0, 1, 0, 0, 2, 2, 2, 2].map(Some);
        let runs = speaker_runs(&w, &s, 1.0);
        assert_eq!(
            runs,
            vec![
                Run {
                    words: 0..8,
                    speaker: Some(0)
                },
                Run {
                    words: 8..12,
                    speaker: Some(2)
                }
            ]
        );
    }

    #[test]
    fn unknown_words_join_a_neighbour() {
        let w = words(4, 0.5);
        let runs = speaker_runs(&w, &[None, Some(1), None, Some(1)], 0.5);
        assert_eq!(
            runs,
            vec![Run {
                words: 0..4,
                speaker: Some(1)
            }]
        );
        assert!(speaker_runs(&[], &[], 1.0).is_empty());
    }

    #[test]
    fn framer_cuts_windows_every_hop_of_voiced_audio() {
        let s = DiarizeSettings {
            window_ms: 1024,
            hop_ms: 512,
            ..Default::default()
        };
        let mut f = Framer::new(&s);
        let mut audio = Vec::new();
        let frame = vec![0.1f32; FRAME_SAMPLES];
        let mut due = Vec::new();
        for i in 0..64u64 {
            // every other 8-frame block is silence: only voiced frames are pushed
            if (i / 8) % 2 == 0
                && let Some(w) = f.push(i * FRAME_SAMPLES as u64, &frame, &mut audio)
            {
                assert_eq!(audio.len(), 32 * FRAME_SAMPLES);
                due.push(w);
            }
        }
        // 32 voiced frames: first window at the 32nd, then one per 16
        assert_eq!(due.len(), 1);
        assert!((due[0].start - 0.0).abs() < 1e-9);
        assert!((due[0].end - 56.0 * 0.032).abs() < 1e-9, "{}", due[0].end);
    }

    #[test]
    fn speaker_at_takes_the_nearest_window() {
        let s = DiarizeSettings {
            min_new_windows: 1,
            ..Default::default()
        };
        let mut l = Labels::new(&s);
        let a = [1.0, 0.0, 0.0];
        let b = [0.0, 1.0, 0.0];
        let w = |c: f64| Window {
            start: c - 0.7,
            end: c + 0.7,
            centre: c,
            speaker: None,
            index: 0,
            first_speaker: None,
            relabelled_by: None,
        };
        l.add(w(1.0), &a);
        l.add(w(2.0), &a);
        l.add(w(3.0), &b);
        assert_eq!(l.speaker_at(0.0), Some(0));
        assert_eq!(l.speaker_at(2.4), Some(0));
        assert_eq!(l.speaker_at(2.6), Some(1));
        assert_eq!(l.current(), Some(1));
        assert_eq!(l.speakers(), 2);
        // windows ending by 2.8 s: one speaker; by 3.8 s: a change at 2.5 s
        assert_eq!(l.change_by(0.0, 2.8), Some((1, None)));
        assert_eq!(
            l.change_by(0.0, 3.8),
            Some((
                2,
                Some(Change {
                    at: 2.5,
                    from: 0,
                    to: 1
                })
            ))
        );
        // only windows centred in the segment count
        assert_eq!(l.change_by(2.5, 3.8), Some((2, None)));
        assert_eq!(l.change_by(0.0, 0.5), None);
    }

    #[test]
    fn relabelled_windows_keep_what_was_known_before() {
        let s = DiarizeSettings {
            min_new_windows: 2,
            ..Default::default()
        };
        let mut l = Labels::new(&s);
        let w = |c: f64| Window {
            start: c - 0.7,
            end: c + 0.7,
            centre: c,
            speaker: None,
            index: 0,
            first_speaker: None,
            relabelled_by: None,
        };
        l.add(w(1.0), &[1.0, 0.0]);
        l.add(w(2.0), &[0.0, 1.0]); // pending: provisionally speaker 0
        assert_eq!(l.change_by(0.0, 2.7), Some((1, None)));
        l.add(w(3.0), &[0.0, 1.0]); // creates speaker 1 from both
        // as of window 1 nothing changed; as of window 2 the change is at 1.5 s
        assert_eq!(l.change_by(0.0, 2.7), Some((1, None)));
        assert_eq!(
            l.change_by(0.0, 3.7).and_then(|c| c.1).map(|c| c.at),
            Some(1.5)
        );
    }
}
