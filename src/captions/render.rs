//! Subtitle files from a caption log: read the JSONL events, cut them into cues, write WebVTT or
//! SRT. Offline (after the meeting, or over a log being written).
//!
//! Example: `let vtt = render_log("captions.jsonl", SubtitleFormat::Vtt, &CueSettings::default())?;`

use std::path::Path;
use std::str::FromStr;

use thiserror::Error;

use super::cues::{CueSettings, CueSettingsError, build_cues};
use super::event::CaptionEvent;
use super::jsonl::{LogReadError, read_log};
use super::srt::to_srt;
use super::vtt::to_vtt;

/// A subtitle file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubtitleFormat {
    /// WebVTT (`.vtt`).
    Vtt,
    /// SubRip (`.srt`).
    Srt,
}

impl SubtitleFormat {
    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Vtt => "vtt",
            Self::Srt => "srt",
        }
    }
}

impl FromStr for SubtitleFormat {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vtt" | "webvtt" => Ok(Self::Vtt),
            "srt" | "subrip" => Ok(Self::Srt),
            _ => Err(RenderError::UnknownFormat(s.to_string())),
        }
    }
}

/// Why a subtitle file could not be made.
#[derive(Debug, Error)]
pub enum RenderError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogReadError),
    /// The cue settings are invalid.
    #[error(transparent)]
    Settings(#[from] CueSettingsError),
    /// Not `vtt` or `srt`.
    #[error("unknown subtitle format {0:?} (expected vtt or srt)")]
    UnknownFormat(String),
}

/// The subtitle file for the finals among `events`.
pub fn render_events(
    events: &[CaptionEvent],
    format: SubtitleFormat,
    settings: &CueSettings,
) -> Result<String, CueSettingsError> {
    let cues = build_cues(events, settings)?;
    Ok(match format {
        SubtitleFormat::Vtt => to_vtt(&cues),
        SubtitleFormat::Srt => to_srt(&cues),
    })
}

/// The subtitle file for the caption log at `path`.
pub fn render_log(
    path: impl AsRef<Path>,
    format: SubtitleFormat,
    settings: &CueSettings,
) -> Result<String, RenderError> {
    let events = read_log(path)?;
    Ok(render_events(&events, format, settings)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_have_extensions() {
        assert_eq!(
            "VTT".parse::<SubtitleFormat>().unwrap(),
            SubtitleFormat::Vtt
        );
        assert_eq!("srt".parse::<SubtitleFormat>().unwrap().extension(), "srt");
        let err = "ass".parse::<SubtitleFormat>().unwrap_err();
        assert!(err.to_string().contains("\"ass\""));
    }

    #[test]
    fn errors_name_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "\nnot json\n").unwrap();
        let err = render_log(&path, SubtitleFormat::Srt, &CueSettings::default()).unwrap_err();
        assert!(err.to_string().contains("log.jsonl:2:"), "{err}");
        std::fs::write(&path, "").unwrap();
        let bad = CueSettings {
            max_lines: 0,
            ..CueSettings::default()
        };
        let err = render_log(&path, SubtitleFormat::Vtt, &bad).unwrap_err();
        assert!(err.to_string().contains("max_lines"), "{err}");
        assert_eq!(
            render_log(&path, SubtitleFormat::Vtt, &CueSettings::default()).unwrap(),
            "WEBVTT\n"
        );
    }
}
