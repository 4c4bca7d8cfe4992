//! Diarization of a whole recording without recognition: Silero VAD segments, the same windows,
//! clusters and speaker runs as the captioner, in one thread. Used by the tests and the
//! benchmark to score the diarizer alone (DER) quickly, and with the same timing as live: a
//! segment's labels are read when its end is confirmed by `endpoint_silence_ms` of silence, so
//! later windows cannot revise them.

use std::time::Instant;

use crate::onnx::OnnxError;
use crate::stream::StreamSettings;
use crate::vad::{FRAME_SAMPLES, SileroVad};

use super::embedder::CampPlus;
use super::rttm::Turn;
use super::settings::DiarizeSettings;
use super::track::{Framer, Labels, speaker_runs};
use super::worker::DiarizeStats;

/// Voiced frames per pseudo-word (the unit that is labelled in place of recognised words).
const CHUNK_FRAMES: usize = 8;

/// Result of [`diarize_samples`].
#[derive(Debug, Clone, Default)]
pub struct OfflineDiarization {
    /// Speaker turns (labels `S1`, `S2`, ... in order of first appearance).
    pub turns: Vec<Turn>,
    /// Speakers in the turns.
    pub speakers: usize,
    /// Counters of the embedding side.
    pub stats: DiarizeStats,
    /// Label latency per turn: audio time between the end of the segment's speech and the moment
    /// its labels were read (the endpoint), seconds.
    pub label_latency_s: Vec<f64>,
}

/// Diarizes 16 kHz mono `samples`. VAD thresholds and endpointing follow `stream`.
pub fn diarize_samples(
    samples: &[f32],
    stream: &StreamSettings,
    settings: &DiarizeSettings,
    vad: &mut SileroVad,
    embedder: &mut CampPlus,
) -> Result<OfflineDiarization, OnnxError> {
    vad.reset();
    let mut framer = Framer::new(settings);
    let mut labels = Labels::new(settings);
    let mut out = OfflineDiarization::default();
    let mut audio = Vec::new();
    let endpoint_frames = (stream.endpoint_silence_ms as usize * 16).div_ceil(FRAME_SAMPLES) as u32;
    // open segment: voiced frame times (start sample) and silence run
    let mut seg: Option<(Vec<u64>, u32)> = None;
    let mut order: Vec<usize> = Vec::new();
    let mut close = |voiced: Vec<u64>, labels: &Labels, out: &mut OfflineDiarization, now: u64| {
        if voiced.len() * FRAME_SAMPLES < stream.min_speech_ms as usize * 16 {
            return;
        }
        let frame_s = FRAME_SAMPLES as f64 / 16_000.0;
        let mut words = Vec::new();
        let mut chunk: Vec<u64> = Vec::new();
        for &f in &voiced {
            // a chunk never spans a pause
            if chunk.len() == CHUNK_FRAMES
                || chunk.last().is_some_and(|l| f != l + FRAME_SAMPLES as u64)
            {
                words.push(chunk_span(&chunk, frame_s));
                chunk.clear();
            }
            chunk.push(f);
        }
        if !chunk.is_empty() {
            words.push(chunk_span(&chunk, frame_s));
        }
        let speakers: Vec<_> = words
            .iter()
            .map(|(a, b)| labels.speaker_at((a + b) / 2.0))
            .collect();
        let end = words.last().map_or(0.0, |w| w.1);
        for run in speaker_runs(&words, &speakers, settings.min_run_ms as f64 / 1000.0) {
            let Some(s) = run.speaker else { continue };
            let n = match order.iter().position(|x| *x == s) {
                Some(i) => i + 1,
                None => {
                    order.push(s);
                    order.len()
                }
            };
            out.turns.push(Turn {
                start: words[run.words.start].0,
                end: words[run.words.end - 1].1,
                speaker: format!("S{n}"),
            });
            out.label_latency_s.push(now as f64 / 16_000.0 - end);
        }
    };
    let mut frame = [0.0f32; FRAME_SAMPLES];
    for (i, chunk) in samples.chunks(FRAME_SAMPLES).enumerate() {
        frame.fill(0.0);
        frame[..chunk.len()].copy_from_slice(chunk);
        let start = (i * FRAME_SAMPLES) as u64;
        let p = vad.process(&frame)?;
        let voiced = match &seg {
            None => p >= stream.vad_threshold,
            Some(_) => p >= stream.vad_release,
        };
        if voiced {
            if let Some(w) = framer.push(start, &frame, &mut audio) {
                let t = Instant::now();
                let e = embedder.embed(&audio)?;
                out.stats.embed_s += t.elapsed().as_secs_f64();
                out.stats.windows += 1;
                labels.add(w, &e);
            }
            out.stats.voiced_s += FRAME_SAMPLES as f64 / 16_000.0;
            let s = seg.get_or_insert_with(|| (Vec::new(), 0));
            s.0.push(start);
            s.1 = 0;
        } else if let Some(s) = seg.as_mut() {
            s.1 += 1;
            if s.1 >= endpoint_frames {
                let (v, _) = seg.take().expect("segment is open");
                close(v, &labels, &mut out, start + FRAME_SAMPLES as u64);
            }
        }
    }
    if let Some((v, _)) = seg.take() {
        close(v, &labels, &mut out, samples.len() as u64);
    }
    out.speakers = order.len();
    Ok(out)
}

fn chunk_span(chunk: &[u64], frame_s: f64) -> (f64, f64) {
    let a = chunk.first().copied().unwrap_or(0) as f64 / 16_000.0;
    let b = chunk.last().copied().unwrap_or(0) as f64 / 16_000.0 + frame_s;
    (a, b)
}
