//! WebVTT rendering of cues (W3C WebVTT: `WEBVTT` header, `HH:MM:SS.mmm --> HH:MM:SS.mmm`).
//!
//! Each cue gets a numeric identifier (1, 2, ...) and, when its speaker is known, a voice span
//! `<v Speaker>` around its text (players can style or announce voices; most do not display the
//! name, so the speaker label of [`super::CueSettings::show_speaker_names`] stays in the text).
//! `&`, `<` and `>` are escaped as character references, so cue text can never open a tag or
//! contain the `-->` separator.
//!
//! Pure and allocation-only: latency is that of building the cues.
//!
//! Example: `std::fs::write("out.vtt", to_vtt(&cues))?;`

use std::fmt::Write as _;

use super::cues::Cue;

/// Format seconds as `HH:MM:SS<sep>mmm` (hours grow past 99 if needed; negative times are 0).
pub(crate) fn timestamp(seconds: f64, sep: char) -> String {
    let ms = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    };
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

/// Escape cue text for WebVTT.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The whole WebVTT file for `cues`.
pub fn to_vtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n");
    for (k, cue) in cues.iter().enumerate() {
        let _ = write!(
            out,
            "\n{}\n{} --> {}\n",
            k + 1,
            timestamp(cue.start, '.'),
            timestamp(cue.end, '.')
        );
        if let Some(voice) = cue.speaker.as_deref().map(escape)
            && !voice.trim().is_empty()
        {
            let _ = write!(out, "<v {}>", voice.trim());
        }
        for line in &cue.lines {
            out.push_str(&escape(line));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(start: f64, end: f64, lines: &[&str], speaker: Option<&str>) -> Cue {
        Cue {
            start,
            end,
            lines: lines.iter().map(|l| l.to_string()).collect(),
            track: "mix".into(),
            speaker: speaker.map(Into::into),
        }
    }

    #[test]
    fn timestamps_round_to_milliseconds() {
        assert_eq!(timestamp(0.0, '.'), "00:00:00.000");
        assert_eq!(timestamp(-3.0, '.'), "00:00:00.000");
        assert_eq!(timestamp(61.0005, '.'), "00:01:01.001");
        assert_eq!(timestamp(3599.9996, ','), "01:00:00,000");
        assert_eq!(timestamp(360_000.25, '.'), "100:00:00.250");
    }

    #[test]
    fn empty_file_is_just_the_header() {
        assert_eq!(to_vtt(&[]), "WEBVTT\n");
    }

    #[test]
    fn cues_with_voices_and_escaping() {
        let cues = [
            cue(
                1.0,
                2.5,
                &["Fish & chips", "<b>not bold</b> -->"],
                Some("Ann <x>"),
            ),
            cue(3.0, 4.0, &["plain"], None),
        ];
        assert_eq!(
            to_vtt(&cues),
            "WEBVTT\n\
             \n\
             1\n\
             00:00:01.000 --> 00:00:02.500\n\
             <v Ann &lt;x&gt;>Fish &amp; chips\n\
             &lt;b&gt;not bold&lt;/b&gt; --&gt;\n\
             \n\
             2\n\
             00:00:03.000 --> 00:00:04.000\n\
             plain\n"
        );
    }
}
