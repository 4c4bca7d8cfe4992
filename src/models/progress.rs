//! Fetch progress on stderr: redrawn in place on a terminal (percent + MB, at most ~10 redraws a
//! second), one line per file otherwise (logs, CI, Docker), nothing when quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How fetch progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// In place on a terminal, one line per file when stderr is not a terminal.
    #[default]
    Auto,
    /// One line per fetched file, whatever stderr is.
    Lines,
    /// Nothing on stderr (tracing events are still emitted).
    Quiet,
}

/// Minimum time between two in-place redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

const MB: f64 = 1_000_000.0;

pub(crate) struct Progress {
    label: String,
    total: u64,
    done: u64,
    in_place: bool,
    lines: bool,
    started: Instant,
    last_draw: Option<(Instant, u64)>,
}

impl Progress {
    pub fn new(mode: ProgressMode, label: String, total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let (in_place, lines) = match mode {
            ProgressMode::Auto => (tty, !tty),
            ProgressMode::Lines => (false, true),
            ProgressMode::Quiet => (false, false),
        };
        Progress {
            label,
            total,
            done: 0,
            in_place,
            lines,
            started: Instant::now(),
            last_draw: None,
        }
    }

    fn percent(&self) -> u64 {
        (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100)
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.in_place {
            return;
        }
        let pct = self.percent();
        let now = Instant::now();
        let due = match self.last_draw {
            None => true,
            Some((at, last_pct)) => pct != last_pct && now.duration_since(at) >= REDRAW_EVERY,
        };
        if due {
            self.last_draw = Some((now, pct));
            eprint!(
                "\r{}: {pct:3}% {:.1}/{:.1} MB",
                self.label,
                self.done as f64 / MB,
                self.total as f64 / MB
            );
        }
    }

    /// Ends the progress display with a summary (success) or a short failure note.
    pub fn finish(&mut self, ok: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let summary = if ok {
            format!("{:.1} MB in {secs:.1} s", self.done as f64 / MB)
        } else {
            format!("failed after {:.1} MB", self.done as f64 / MB)
        };
        if self.in_place {
            // Pad to wipe the longer progress line.
            eprintln!("\r{}: {summary:<30}", self.label);
        } else if self.lines {
            eprintln!("{}: {summary}", self.label);
        }
        self.in_place = false;
        self.lines = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.in_place || self.lines {
            self.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_bounded() {
        let mut p = Progress::new(ProgressMode::Quiet, "x".into(), 200);
        assert_eq!(p.percent(), 0);
        p.advance(50);
        assert_eq!(p.percent(), 25);
        p.advance(500);
        assert_eq!(p.percent(), 100);
        let p = Progress::new(ProgressMode::Quiet, "x".into(), 0);
        assert_eq!(p.percent(), 100);
    }
}
