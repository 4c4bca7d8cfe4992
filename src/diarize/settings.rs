//! The knobs of diarization, with their defaults (tuned on the three dev meetings together, see
//! the README's Diarization section) and their effect.

use serde::{Deserialize, Serialize};

use crate::stream::InvalidSetting;

/// Default cosine similarity (CAM++, unit embeddings) under which a window is far from a known
/// speaker. Lower: fewer speakers created (similar voices merged); higher: one voice split in two.
pub const DEFAULT_NEW_SPEAKER_SIMILARITY: f32 = 0.6;
/// Default most speakers per track.
pub const DEFAULT_MAX_SPEAKERS: u32 = 6;
/// Default consecutive far windows that agree before a new speaker is created.
pub const DEFAULT_MIN_NEW_WINDOWS: u32 = 2;
/// Default embedding window, ms of voiced audio (CAM++ needs ≥ 1 s to be reliable). It sets the
/// label latency at a speaker change without a pause: the change is seen once a window lies in
/// the new voice, so a final that ends at a change waits about one window (plus one hop for a
/// voice never heard before). 1024 ms keeps that under 2 s; longer windows give steadier
/// embeddings for a later cut (1536 ms: p95 2.3 s on the dev meetings, and a higher DER).
pub const DEFAULT_WINDOW_MS: u32 = 1024;
/// Default hop between windows, ms of voiced audio (one embedding per hop: ~0.05 CPU s per
/// second of speech at 512 ms on the reference machine).
pub const DEFAULT_HOP_MS: u32 = 512;
/// Default shortest speaker run inside a final; shorter runs join a neighbour (no flicker).
pub const DEFAULT_MIN_RUN_MS: u32 = 1000;

/// Settings of the diarizer of one track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiarizeSettings {
    /// Cosine similarity under which an embedding window is far from every known speaker.
    pub new_speaker_similarity: f32,
    /// Most speakers on the track; further voices go to the nearest known one.
    pub max_speakers: u32,
    /// Consecutive far windows, agreeing with each other, that create a speaker.
    pub min_new_windows: u32,
    /// Embedding window, ms of voiced audio.
    pub window_ms: u32,
    /// Hop between embedding windows, ms of voiced audio. Cost is one embedding per hop.
    pub hop_ms: u32,
    /// Shortest speaker run kept inside a final, ms.
    pub min_run_ms: u32,
}

impl Default for DiarizeSettings {
    fn default() -> Self {
        Self {
            new_speaker_similarity: DEFAULT_NEW_SPEAKER_SIMILARITY,
            max_speakers: DEFAULT_MAX_SPEAKERS,
            min_new_windows: DEFAULT_MIN_NEW_WINDOWS,
            window_ms: DEFAULT_WINDOW_MS,
            hop_ms: DEFAULT_HOP_MS,
            min_run_ms: DEFAULT_MIN_RUN_MS,
        }
    }
}

impl DiarizeSettings {
    /// Checks every knob; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |field, reason: String| Err(InvalidSetting { field, reason });
        if !(self.new_speaker_similarity.is_finite()
            && self.new_speaker_similarity > -1.0
            && self.new_speaker_similarity < 1.0)
        {
            return bad(
                "diarize.new_speaker_similarity",
                format!("{} is outside (-1, 1)", self.new_speaker_similarity),
            );
        }
        if !(1..=32).contains(&self.max_speakers) {
            return bad(
                "diarize.max_speakers",
                format!("{} is outside 1..=32", self.max_speakers),
            );
        }
        if !(1..=8).contains(&self.min_new_windows) {
            return bad(
                "diarize.min_new_windows",
                format!("{} is outside 1..=8", self.min_new_windows),
            );
        }
        if !(1000..=4000).contains(&self.window_ms) {
            return bad(
                "diarize.window_ms",
                format!("{} is outside 1000..=4000", self.window_ms),
            );
        }
        if !(100..=self.window_ms).contains(&self.hop_ms) {
            return bad(
                "diarize.hop_ms",
                format!("{} must be in 100..=window_ms", self.hop_ms),
            );
        }
        if self.min_run_ms > 5000 {
            return bad(
                "diarize.min_run_ms",
                format!("{} is above 5000", self.min_run_ms),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        DiarizeSettings::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let s = DiarizeSettings {
            max_speakers: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "diarize.max_speakers");
        let s = DiarizeSettings {
            new_speaker_similarity: f32::NAN,
            ..Default::default()
        };
        assert_eq!(
            s.validate().unwrap_err().field,
            "diarize.new_speaker_similarity"
        );
        let s = DiarizeSettings {
            hop_ms: 5000,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "diarize.hop_ms");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<DiarizeSettings>("threshold = 0.3").is_err());
        let s: DiarizeSettings = toml::from_str("max_speakers = 3").unwrap();
        assert_eq!(s.max_speakers, 3);
    }
}
