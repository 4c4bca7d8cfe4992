//! Live captions on a terminal.
//!
//! On a TTY, finals scroll as complete lines `[mm:ss track speaker] text`, and below them one
//! status line shows the current partial of every track, rewritten in place (carriage return +
//! ANSI "clear line") and cut to the terminal width so it never wraps. Long partials keep their
//! *end* (`…` marks the cut): the newest words are the ones worth reading live. When the output is
//! not a TTY (a pipe, a file) only finals are written, one per line, nothing rewritten.
//!
//! Control characters in caption text are replaced by spaces, so a transcript cannot move the
//! cursor or change colours. Widths are counted in Unicode scalar values; double-width (CJK)
//! characters can make a status line wrap.
//!
//! Latency: one write and flush per event.
//!
//! Example: `let mut term = TerminalRenderer::stdout(); term.handle(&event)?;`

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};

use super::event::CaptionEvent;

/// Width assumed when neither `COLUMNS` nor the terminal tells.
pub const DEFAULT_WIDTH: usize = 100;
/// Carriage return, then ANSI EL2 (erase the whole line).
const CLEAR_LINE: &str = "\r\x1b[2K";
/// Between the partials of two tracks on the status line.
const TRACK_SEPARATOR: &str = " | ";

/// The terminal width: `COLUMNS` if set to a positive number, else the width of the terminal on
/// stdout (`TIOCGWINSZ`), else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    let columns = std::env::var("COLUMNS").ok();
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    let tty_cols = (rc == 0).then_some(usize::from(ws.ws_col));
    pick_width(columns.as_deref(), tty_cols)
}

fn pick_width(columns: Option<&str>, tty_cols: Option<usize>) -> usize {
    columns
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or(tty_cols.filter(|&c| c > 0))
        .unwrap_or(DEFAULT_WIDTH)
}

/// Renders caption events to a terminal or a plain stream.
#[derive(Debug)]
pub struct TerminalRenderer<W: Write> {
    out: W,
    live: bool,
    width: usize,
    /// Current partial per track: (prefix, text).
    partials: BTreeMap<String, (String, String)>,
    /// Whether a status line is currently drawn (and must be cleared before a final).
    status_drawn: bool,
}

impl TerminalRenderer<io::Stdout> {
    /// Render to stdout, live if stdout is a terminal.
    pub fn stdout() -> Self {
        let out = io::stdout();
        let live = out.is_terminal();
        Self::new(out, live, terminal_width())
    }
}

impl<W: Write> TerminalRenderer<W> {
    /// Render to `out`; `live` enables the in-place partial line (pass whether `out` is a TTY).
    /// A `width` of 0 is taken as [`DEFAULT_WIDTH`].
    pub fn new(out: W, live: bool, width: usize) -> Self {
        let width = if width == 0 { DEFAULT_WIDTH } else { width };
        Self {
            out,
            live,
            width,
            partials: BTreeMap::new(),
            status_drawn: false,
        }
    }

    /// Whether partials are shown.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Show one event.
    pub fn handle(&mut self, ev: &CaptionEvent) -> io::Result<()> {
        if ev.is_final() {
            self.partials.remove(&ev.track);
            if self.status_drawn {
                self.out.write_all(CLEAR_LINE.as_bytes())?;
                self.status_drawn = false;
            }
            writeln!(self.out, "{} {}", prefix(ev), clean(&ev.text))?;
            if self.live && !self.partials.is_empty() {
                self.draw_status()?;
            }
        } else if self.live {
            self.partials
                .insert(ev.track.clone(), (prefix(ev), clean(&ev.text)));
            self.draw_status()?;
        } else {
            return Ok(());
        }
        self.out.flush()
    }

    /// Clear the status line (at the end of the stream); pending partials are dropped.
    pub fn finish(&mut self) -> io::Result<()> {
        self.partials.clear();
        if self.status_drawn {
            self.out.write_all(CLEAR_LINE.as_bytes())?;
            self.status_drawn = false;
        }
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn draw_status(&mut self) -> io::Result<()> {
        let line = status_line(&self.partials, self.width);
        write!(self.out, "{CLEAR_LINE}{line}")?;
        self.status_drawn = true;
        Ok(())
    }
}

/// `[mm:ss track speaker]` (minutes keep counting past 59).
fn prefix(ev: &CaptionEvent) -> String {
    let secs = if ev.start.is_finite() && ev.start > 0.0 {
        ev.start as u64
    } else {
        0
    };
    let (m, s) = (secs / 60, secs % 60);
    match &ev.speaker {
        Some(spk) => format!("[{m:02}:{s:02} {} {}]", clean(&ev.track), clean(spk)),
        None => format!("[{m:02}:{s:02} {}]", clean(&ev.track)),
    }
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The end of `text` in at most `max` characters, with `…` in front when cut; the cut is moved to
/// a word boundary when the kept part has one.
fn tail(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut from = chars.len() - (max - 1);
    if !chars[from - 1].is_whitespace()
        && let Some(space) = chars[from..].iter().position(|c| c.is_whitespace())
    {
        from += space + 1;
    }
    std::iter::once('…')
        .chain(chars[from..].iter().copied())
        .collect()
}

/// All partials on one line of at most `width - 1` characters (the last column is left free so
/// the terminal never wraps the line). Each track gets an equal share.
fn status_line(partials: &BTreeMap<String, (String, String)>, width: usize) -> String {
    let budget = width.saturating_sub(1);
    let n = partials.len();
    if n == 0 {
        return String::new();
    }
    let seps = TRACK_SEPARATOR.chars().count() * (n - 1);
    let share = budget.saturating_sub(seps) / n;
    let entries: Vec<String> = partials
        .values()
        .map(|(prefix, text)| {
            let p = prefix.chars().count();
            if p + 1 >= share {
                tail(&format!("{prefix} {text}"), share)
            } else {
                format!("{prefix} {}", tail(text, share - p - 1))
            }
        })
        .collect();
    // With many tracks on a narrow terminal the separators alone may not fit.
    tail(&entries.join(TRACK_SEPARATOR), budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::EventKind;

    fn ev(
        kind: EventKind,
        track: &str,
        speaker: Option<&str>,
        start: f64,
        text: &str,
    ) -> CaptionEvent {
        CaptionEvent {
            seq: 0,
            kind,
            segment_id: "s1".into(),
            revision: 0,
            track: track.into(),
            speaker: speaker.map(Into::into),
            language: None,
            text: text.into(),
            stable_text: String::new(),
            start,
            end: start + 1.0,
            emitted_at: start + 1.5,
            words: vec![],
        }
    }

    fn render(live: bool, width: usize, events: &[CaptionEvent]) -> String {
        let mut term = TerminalRenderer::new(Vec::new(), live, width);
        for e in events {
            term.handle(e).unwrap();
        }
        term.finish().unwrap();
        String::from_utf8(term.into_inner()).unwrap()
    }

    #[test]
    fn pipe_output_has_finals_only() {
        let out = render(
            false,
            80,
            &[
                ev(EventKind::Partial, "mix", Some("spk1"), 1.2, "Good"),
                ev(EventKind::Final, "mix", Some("spk1"), 1.2, "Good morning."),
                ev(EventKind::Final, "mix", None, 75.9, "Bye\x1b[31m."),
            ],
        );
        assert_eq!(
            out,
            "[00:01 mix spk1] Good morning.\n[01:15 mix] Bye [31m.\n"
        );
    }

    #[test]
    fn tty_rewrites_the_partial_line_in_place() {
        let out = render(
            true,
            80,
            &[
                ev(EventKind::Partial, "mix", Some("A"), 0.0, "Good"),
                ev(EventKind::Partial, "mix", Some("A"), 0.0, "Good morning"),
                ev(EventKind::Final, "mix", Some("A"), 0.0, "Good morning."),
            ],
        );
        assert_eq!(
            out,
            "\r\x1b[2K[00:00 mix A] Good\
             \r\x1b[2K[00:00 mix A] Good morning\
             \r\x1b[2K[00:00 mix A] Good morning.\n"
        );
    }

    #[test]
    fn tty_status_line_is_cut_to_the_width_keeping_the_newest_words() {
        let long = "one two three four five six seven eight nine ten";
        let out = render(true, 30, &[ev(EventKind::Partial, "mix", None, 0.0, long)]);
        let status = out
            .trim_start_matches(CLEAR_LINE)
            .split(CLEAR_LINE)
            .next()
            .unwrap();
        assert_eq!(status, "[00:00 mix] …eight nine ten");
        assert!(status.chars().count() <= 29);
        assert_eq!(tail("abcdefgh", 4), "…fgh");
        assert_eq!(tail("ab cdefgh", 5), "…efgh");
        assert_eq!(tail("ab cd efgh", 6), "…efgh");
    }

    #[test]
    fn tty_keeps_other_tracks_partials_after_a_final() {
        let out = render(
            true,
            61,
            &[
                ev(EventKind::Partial, "alice", None, 0.0, "hello there"),
                ev(EventKind::Partial, "bob", None, 0.5, "yes"),
                ev(EventKind::Final, "alice", None, 0.0, "Hello there."),
            ],
        );
        let expected = [
            "\r\x1b[2K[00:00 alice] hello there",
            "\r\x1b[2K[00:00 alice] hello there | [00:00 bob] yes",
            "\r\x1b[2K[00:00 alice] Hello there.\n",
            "\r\x1b[2K[00:00 bob] yes",
            "\r\x1b[2K",
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn status_line_never_exceeds_the_width() {
        let mut partials = BTreeMap::new();
        for (k, track) in ["a", "bb", "a-very-long-track-name"].iter().enumerate() {
            partials.insert(
                track.to_string(),
                (format!("[00:0{k} {track} spk]"), "word ".repeat(40)),
            );
            for width in [1, 5, 20, 40, 80, 200] {
                let line = status_line(&partials, width);
                assert!(line.chars().count() < width.max(2), "{width}: {line:?}");
            }
        }
    }

    #[test]
    fn width_comes_from_columns_then_the_tty_then_the_default() {
        assert_eq!(pick_width(Some("123"), Some(80)), 123);
        assert_eq!(pick_width(Some(" 90\n"), None), 90);
        assert_eq!(pick_width(Some("junk"), Some(80)), 80);
        assert_eq!(pick_width(Some("0"), Some(0)), DEFAULT_WIDTH);
        assert_eq!(pick_width(None, None), DEFAULT_WIDTH);
        assert!(terminal_width() > 0);
    }
}
