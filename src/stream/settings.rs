//! The knobs of the streaming policy, with their effect on latency and stability.
//!
//! These are what accessibility teams tune: lower `endpoint_silence_ms` gives earlier finals but
//! cuts sentences at short pauses; lower `partial_interval_ms` gives livelier partials at more
//! CPU; `stable_agreement` trades how early partial words are shown as stable against how often
//! stable words would have been wrong.

use serde::{Deserialize, Serialize};

/// Default time between two partials of a growing segment, in ms of audio.
pub const DEFAULT_PARTIAL_INTERVAL_MS: u32 = 500;
/// Default silence that ends a segment (emits its final), in ms.
pub const DEFAULT_ENDPOINT_SILENCE_MS: u32 = 500;
/// Default longest segment before a forced cut, in seconds.
pub const DEFAULT_MAX_SEGMENT_S: f32 = 15.0;
/// Default segment length past which a shorter pause ends the segment, in seconds.
pub const DEFAULT_LONG_SEGMENT_S: f32 = 6.0;
/// Default silence that ends a segment longer than `long_segment_s`, in ms.
pub const DEFAULT_LONG_SEGMENT_ENDPOINT_MS: u32 = 300;
/// Default shortest speech (voiced time) that is decoded at all, in ms.
pub const DEFAULT_MIN_SPEECH_MS: u32 = 250;
/// Default audio kept before speech onset, in ms (the VAD fires a little into the first
/// syllable); the pre-roll never reaches back into the previous segment's speech.
pub const DEFAULT_SPEECH_PAD_MS: u32 = 200;
/// Default audio kept after the last voiced frame, in ms (the VAD already releases a little
/// after the speech; the recognizer adds its own trailing silence).
pub const DEFAULT_SPEECH_END_PAD_MS: u32 = 96;
/// Default VAD probability that starts speech.
pub const DEFAULT_VAD_THRESHOLD: f32 = 0.5;
/// Default VAD probability under which a frame counts as silence inside speech.
pub const DEFAULT_VAD_RELEASE: f32 = 0.35;
/// Default number of consecutive partial hypotheses that must agree on a word before it is
/// shown as stable (LocalAgreement-n).
pub const DEFAULT_STABLE_AGREEMENT: u32 = 2;
/// Default time a shown partial word may still change, in ms after its audio ended: older
/// words are kept by later partials (the final still corrects them). 0: no limit. With
/// partials every 500 ms, 300 ms lets the next hypothesis revise a word shown at its first
/// partial, then keeps it: a word is rewritten at most about 0.8 s after it was spoken. Run
/// back to back on the dev corpus against 600 ms: fewer words rewritten under the reader's eyes
/// (5.4 % against 7.2 %), no more corrected by the final (26.0 % against 27.0 %).
pub const DEFAULT_REVISION_WINDOW_MS: u32 = 300;
/// Default probability another language needs to replace the stream's locked language.
pub const DEFAULT_LANGUAGE_SWITCH_CONFIDENCE: f32 = 0.7;

/// Default languages `auto` chooses among: the languages the product is made for first.
/// Whisper's detector otherwise wanders to neighbours (Latin, Romanian, Breton...) on short or
/// accented speech; an operator serving other languages lists them, or empties the list.
pub const DEFAULT_AUTO_LANGUAGES: [&str; 2] = ["en", "fr"];

/// Language setting of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LanguageSetting {
    /// A fixed language code (`en`, `fr`, ...).
    Fixed(String),
    /// Detect from the audio, then lock per stream unless confidently different.
    Auto,
}

impl TryFrom<String> for LanguageSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<LanguageSetting> for String {
    fn from(l: LanguageSetting) -> String {
        match l {
            LanguageSetting::Fixed(c) => c,
            LanguageSetting::Auto => "auto".into(),
        }
    }
}

impl std::fmt::Display for LanguageSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

impl std::str::FromStr for LanguageSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "auto" {
            return Ok(Self::Auto);
        }
        if (2..=3).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase()) {
            Ok(Self::Fixed(s))
        } else {
            Err(format!(
                "`{s}` is not a language code (use en, fr, ... or auto)"
            ))
        }
    }
}

/// Settings of one captioned stream (track).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Language of the track.
    pub language: LanguageSetting,
    /// Emit partials at all. Off: finals only (less CPU, no provisional text).
    pub partials: bool,
    /// Audio time between two partials of a growing segment. Latency of partials is about this
    /// plus one decode; CPU grows as it shrinks.
    pub partial_interval_ms: u32,
    /// Silence that ends a segment. Final latency is about this (the final is decoded while the
    /// silence is confirmed). Too low cuts sentences at short pauses.
    pub endpoint_silence_ms: u32,
    /// Segment length (s) past which `long_segment_endpoint_ms` of silence is enough to end it:
    /// long turns are cut at their pauses, which keeps final and partial latency bounded.
    pub long_segment_s: f32,
    /// Silence that ends a segment longer than `long_segment_s`.
    pub long_segment_endpoint_ms: u32,
    /// Longest segment; a longer one is cut at the quietest point of its last seconds and the
    /// rest carried on. Bounds final latency during long monologues.
    pub max_segment_s: f32,
    /// Voiced time below which a segment is dropped as a noise blip.
    pub min_speech_ms: u32,
    /// Audio kept before speech onset (helps the first word).
    pub speech_pad_ms: u32,
    /// Audio kept after the last voiced frame. The final's decode starts once this much silence
    /// is in, so it must stay below the endpoint silences.
    pub speech_end_pad_ms: u32,
    /// VAD probability that starts speech.
    pub vad_threshold: f32,
    /// VAD probability under which a frame inside speech counts as silence.
    pub vad_release: f32,
    /// Consecutive hypotheses that must agree before a partial word is stable.
    pub stable_agreement: u32,
    /// How long after its audio ended a shown partial word may still change (ms; 0: until
    /// hypotheses agree on it). Past it, later partials keep the word as shown and only the
    /// final corrects it: text settles sooner and no word is rewritten long after it was read,
    /// at the cost of more words corrected by the final.
    pub revision_window_ms: u32,
    /// Probability another language needs to replace the locked one (`auto` only).
    pub language_switch_confidence: f32,
    /// Languages `auto` detects among (codes; empty: every language of the model). A short
    /// list makes detection much steadier on short segments and accented speech.
    pub auto_languages: Vec<String>,
    /// With `language = auto`, a second way of parting turns in two languages that follow each
    /// other without an endpoint pause (people sharing a microphone without diarization, a
    /// speaker switching language). By default they are parted by joints: where the partial
    /// hypothesis stopped at the end of a turn while speech went on, and the speech after it
    /// is heard in another language, the turn's final is emitted at once, in its language.
    /// With this on, a joint cuts the segment instead, and each partial also probes the
    /// segment's latest 2 s and cuts it where another language starts, also when the decoder
    /// goes on translating the new turn. Costs one short encoder pass per partial; the final
    /// of a cut turn comes 1-3 s after its end (the new language must be heard first).
    /// Ignored with a fixed language.
    pub language_change_cut: bool,
    /// Decode finals with timestamp tokens (better word times).
    pub timestamps: bool,
    /// Give the recognizer the text of the track's previous finals (in the same language) as
    /// context, as Whisper does on long audio: names, spelling and style stay consistent from
    /// one segment to the next, and partials settle sooner. Costs a slightly longer decode.
    pub condition_on_previous_text: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            language: LanguageSetting::Auto,
            partials: true,
            partial_interval_ms: DEFAULT_PARTIAL_INTERVAL_MS,
            endpoint_silence_ms: DEFAULT_ENDPOINT_SILENCE_MS,
            max_segment_s: DEFAULT_MAX_SEGMENT_S,
            long_segment_s: DEFAULT_LONG_SEGMENT_S,
            long_segment_endpoint_ms: DEFAULT_LONG_SEGMENT_ENDPOINT_MS,
            min_speech_ms: DEFAULT_MIN_SPEECH_MS,
            speech_pad_ms: DEFAULT_SPEECH_PAD_MS,
            speech_end_pad_ms: DEFAULT_SPEECH_END_PAD_MS,
            vad_threshold: DEFAULT_VAD_THRESHOLD,
            vad_release: DEFAULT_VAD_RELEASE,
            stable_agreement: DEFAULT_STABLE_AGREEMENT,
            revision_window_ms: DEFAULT_REVISION_WINDOW_MS,
            language_switch_confidence: DEFAULT_LANGUAGE_SWITCH_CONFIDENCE,
            auto_languages: DEFAULT_AUTO_LANGUAGES.map(String::from).to_vec(),
            language_change_cut: false,
            timestamps: true,
            condition_on_previous_text: true,
        }
    }
}

/// A setting with an invalid value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid setting `{field}`: {reason}")]
pub struct InvalidSetting {
    pub field: &'static str,
    pub reason: String,
}

impl StreamSettings {
    /// Checks every knob; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |field, reason: String| Err(InvalidSetting { field, reason });
        if !(100..=10_000).contains(&self.partial_interval_ms) {
            return bad(
                "partial_interval_ms",
                format!("{} is outside 100..=10000", self.partial_interval_ms),
            );
        }
        if !(100..=5_000).contains(&self.endpoint_silence_ms) {
            return bad(
                "endpoint_silence_ms",
                format!("{} is outside 100..=5000", self.endpoint_silence_ms),
            );
        }
        if self.speech_pad_ms > 1_000 {
            return bad(
                "speech_pad_ms",
                format!("{} is above 1000", self.speech_pad_ms),
            );
        }
        if self.speech_end_pad_ms >= self.long_segment_endpoint_ms.min(self.endpoint_silence_ms) {
            return bad(
                "speech_end_pad_ms",
                format!(
                    "{} must be below endpoint_silence_ms and long_segment_endpoint_ms",
                    self.speech_end_pad_ms
                ),
            );
        }
        if !(self.max_segment_s.is_finite() && (4.0..=28.0).contains(&self.max_segment_s)) {
            return bad(
                "max_segment_s",
                format!(
                    "{} is outside 4..=28 (Whisper windows are 30 s)",
                    self.max_segment_s
                ),
            );
        }
        if !(self.long_segment_s.is_finite()
            && self.long_segment_s >= 1.0
            && self.long_segment_s <= self.max_segment_s)
        {
            return bad(
                "long_segment_s",
                format!("{} must be in 1..=max_segment_s", self.long_segment_s),
            );
        }
        if self.long_segment_endpoint_ms < 100
            || self.long_segment_endpoint_ms > self.endpoint_silence_ms
        {
            return bad(
                "long_segment_endpoint_ms",
                format!(
                    "{} must be in 100..=endpoint_silence_ms",
                    self.long_segment_endpoint_ms
                ),
            );
        }
        if self.min_speech_ms > 2_000 {
            return bad(
                "min_speech_ms",
                format!("{} is above 2000", self.min_speech_ms),
            );
        }
        if !(self.vad_threshold > 0.0 && self.vad_threshold < 1.0) {
            return bad(
                "vad_threshold",
                format!("{} is outside (0, 1)", self.vad_threshold),
            );
        }
        if !(self.vad_release > 0.0 && self.vad_release <= self.vad_threshold) {
            return bad(
                "vad_release",
                format!("{} must be in (0, vad_threshold]", self.vad_release),
            );
        }
        if !(1..=5).contains(&self.stable_agreement) {
            return bad(
                "stable_agreement",
                format!("{} is outside 1..=5", self.stable_agreement),
            );
        }
        if self.revision_window_ms != 0 && !(100..=10_000).contains(&self.revision_window_ms) {
            return bad(
                "revision_window_ms",
                format!(
                    "{} is outside 100..=10000 (or 0: no limit)",
                    self.revision_window_ms
                ),
            );
        }
        if !(self.language_switch_confidence > 0.0 && self.language_switch_confidence <= 1.0) {
            return bad(
                "language_switch_confidence",
                format!("{} is outside (0, 1]", self.language_switch_confidence),
            );
        }
        for (i, code) in self.auto_languages.iter().enumerate() {
            match code.parse::<LanguageSetting>() {
                Ok(LanguageSetting::Fixed(c)) if c == *code => {}
                _ => {
                    return bad(
                        "auto_languages",
                        format!("`{code}` is not a lower-case language code (en, fr, ...)"),
                    );
                }
            }
            if self.auto_languages[..i].contains(code) {
                return bad("auto_languages", format!("`{code}` is listed twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StreamSettings::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let s = StreamSettings {
            partial_interval_ms: 10,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "partial_interval_ms");
        let s = StreamSettings {
            vad_release: 0.9,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "vad_release");
        let s = StreamSettings {
            max_segment_s: f32::NAN,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "max_segment_s");
        let s = StreamSettings {
            speech_pad_ms: 1600,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "speech_pad_ms");
        let s = StreamSettings {
            speech_end_pad_ms: 300,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "speech_end_pad_ms");
        for list in [&["en", "EN"][..], &["en", "en"], &["auto"], &["english"]] {
            let s = StreamSettings {
                auto_languages: list.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            };
            assert_eq!(
                s.validate().unwrap_err().field,
                "auto_languages",
                "{list:?}"
            );
        }
    }

    #[test]
    fn language_parses() {
        assert_eq!(
            "auto".parse::<LanguageSetting>().unwrap(),
            LanguageSetting::Auto
        );
        assert_eq!(
            "FR".parse::<LanguageSetting>().unwrap(),
            LanguageSetting::Fixed("fr".into())
        );
        assert!("french!".parse::<LanguageSetting>().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<StreamSettings>("partial_interval = 3").unwrap_err();
        assert!(err.to_string().contains("partial_interval"), "{err}");
        let s: StreamSettings =
            toml::from_str("language = \"fr\"\nendpoint_silence_ms = 700").unwrap();
        assert_eq!(s.language, LanguageSetting::Fixed("fr".into()));
        assert_eq!(s.endpoint_silence_ms, 700);
    }
}
