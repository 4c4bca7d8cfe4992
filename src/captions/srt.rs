//! SubRip (SRT) rendering of cues: numbered blocks, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, the lines,
//! a blank line.
//!
//! SRT has no escaping and no voices: the text is written as is (control characters become
//! spaces so that a stray newline cannot end a block early); speakers appear only through the
//! labels in the text.
//!
//! Example: `std::fs::write("out.srt", to_srt(&cues))?;`

use std::fmt::Write as _;

use super::cues::Cue;
use super::vtt::timestamp;

/// The whole SRT file for `cues`.
pub fn to_srt(cues: &[Cue]) -> String {
    let mut out = String::new();
    for (k, cue) in cues.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}\n{} --> {}",
            k + 1,
            timestamp(cue.start, ','),
            timestamp(cue.end, ',')
        );
        for line in &cue.lines {
            let line: String = line
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_blocks_with_comma_milliseconds() {
        let cues = [
            Cue {
                start: 0.917,
                end: 2.0,
                lines: vec!["Good morning,".into(), "everyone & <all>.".into()],
                track: "mix".into(),
                speaker: Some("spk1".into()),
            },
            Cue {
                start: 3661.5,
                end: 3662.0,
                lines: vec!["- Bye\nnow.".into()],
                track: "mix".into(),
                speaker: None,
            },
        ];
        assert_eq!(
            to_srt(&cues),
            "1\n00:00:00,917 --> 00:00:02,000\nGood morning,\neveryone & <all>.\n\n\
             2\n01:01:01,500 --> 01:01:02,000\n- Bye now.\n\n"
        );
        assert_eq!(to_srt(&[]), "");
    }
}
