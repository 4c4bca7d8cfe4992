//! The caption event log: one JSON object per line (the schema of `score/README.md`, plus `seq`
//! and `stable_text`), written live and read back.
//!
//! [`JsonlWriter`] serialises each event into a whole line before writing it, so a failure never
//! leaves half a line, and flushes after every final (or after every line with
//! [`FlushPolicy::EachLine`]), so a crash loses at most the partials since the last final; the
//! `emitted_at` times inside the events do not depend on when the bytes reach the disk.
//! [`read_log`] reads a log back, naming the line of any malformed event.
//!
//! Latency: one `write` per event and one `fsync`-free flush per final; nothing waits on a model.
//!
//! Example: `let mut log = JsonlWriter::create("captions.jsonl")?; log.write_event(&ev)?;`

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use thiserror::Error;

use super::event::CaptionEvent;

/// When the writer flushes its buffer to the underlying writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// After every final event (partials are flushed with the next final). The default: finals
    /// are what a crash must not lose, partials are superseded anyway.
    #[default]
    EachFinal,
    /// After every event (for a live `tail -f` of the partials).
    EachLine,
}

/// Writes caption events as JSON lines.
#[derive(Debug)]
pub struct JsonlWriter<W: Write> {
    out: BufWriter<W>,
    policy: FlushPolicy,
    line: Vec<u8>,
}

impl JsonlWriter<File> {
    /// Create (truncate) the log file at `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::new(File::create(path)?))
    }
}

impl<W: Write> JsonlWriter<W> {
    /// A writer flushing after each final.
    pub fn new(inner: W) -> Self {
        Self::with_policy(inner, FlushPolicy::default())
    }

    /// A writer with an explicit flush policy.
    pub fn with_policy(inner: W, policy: FlushPolicy) -> Self {
        Self {
            out: BufWriter::new(inner),
            policy,
            line: Vec::with_capacity(512),
        }
    }

    /// Append one event as a line. Events with non-finite times are refused
    /// ([`io::ErrorKind::InvalidInput`]): JSON has no NaN and the line could not be read back.
    pub fn write_event(&mut self, ev: &CaptionEvent) -> io::Result<()> {
        check_finite(ev)?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        if ev.is_final() || self.policy == FlushPolicy::EachLine {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Flush buffered lines to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flush and return the underlying writer.
    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

fn check_finite(ev: &CaptionEvent) -> io::Result<()> {
    let times = [
        ("start", ev.start),
        ("end", ev.end),
        ("emitted_at", ev.emitted_at),
    ];
    let words = ev
        .words
        .iter()
        .flat_map(|w| [("words[].start", w.start), ("words[].end", w.end)]);
    match times.into_iter().chain(words).find(|(_, t)| !t.is_finite()) {
        None => Ok(()),
        Some((field, t)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "caption event seq {}: `{field}` is {t}, not a finite time",
                ev.seq
            ),
        )),
    }
}

/// A caption log that cannot be read back.
#[derive(Debug, Error)]
pub enum LogReadError {
    /// The file cannot be opened.
    #[error("cannot open caption log {name}: {source}")]
    Open {
        /// File name.
        name: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading failed (I/O error or invalid UTF-8) at a line.
    #[error("{name}:{line}: cannot read caption log: {source}")]
    Read {
        /// File name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// A line is not a caption event.
    #[error("{name}:{line}: malformed caption event: {source}")]
    Malformed {
        /// File name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to.
        source: serde_json::Error,
    },
}

impl LogReadError {
    /// The 1-based line number of the offending line, if the error is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Open { .. } => None,
            Self::Read { line, .. } | Self::Malformed { line, .. } => Some(*line),
        }
    }
}

/// Read a caption log file. See [`read_log_from`].
pub fn read_log(path: impl AsRef<Path>) -> Result<Vec<CaptionEvent>, LogReadError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| LogReadError::Open {
        name: name.clone(),
        source,
    })?;
    read_log_from(BufReader::new(file), &name)
}

/// Read caption events, one JSON object per line; blank lines are skipped; `name` is used in
/// errors.
///
/// Logs from other tools that follow the scorers' schema are accepted too: a missing `seq` is
/// numbered after the previous event's, and an integer `segment_id` becomes its decimal string.
pub fn read_log_from(reader: impl BufRead, name: &str) -> Result<Vec<CaptionEvent>, LogReadError> {
    let mut events: Vec<CaptionEvent> = Vec::new();
    for (k, line) in reader.lines().enumerate() {
        let line_no = k + 1;
        let line = line.map_err(|source| LogReadError::Read {
            name: name.into(),
            line: line_no,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |source| LogReadError::Malformed {
            name: name.into(),
            line: line_no,
            source,
        };
        let mut value: serde_json::Value = serde_json::from_str(&line).map_err(malformed)?;
        if let Some(obj) = value.as_object_mut() {
            if !obj.contains_key("seq") {
                let seq = events.last().map_or(0, |e| e.seq + 1);
                obj.insert("seq".into(), seq.into());
            }
            if let Some(id) = obj.get("segment_id").filter(|v| v.is_number()) {
                let id = id.to_string();
                obj.insert("segment_id".into(), id.into());
            }
        }
        events.push(serde_json::from_value(value).map_err(malformed)?);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::{EventKind, Word};

    fn event(seq: u64, kind: EventKind) -> CaptionEvent {
        CaptionEvent {
            seq,
            kind,
            segment_id: "s0001".into(),
            revision: seq as u32,
            track: "mix".into(),
            speaker: Some("spk1".into()),
            language: Some("fr".into()),
            text: "Bonjour à tous".into(),
            stable_text: "Bonjour".into(),
            start: 0.5,
            end: 1.5,
            emitted_at: 2.0,
            words: vec![
                Word {
                    w: "Bonjour".into(),
                    start: 0.5,
                    end: 0.9,
                    speaker: None,
                },
                Word {
                    w: "à".into(),
                    start: 0.9,
                    end: 1.0,
                    speaker: None,
                },
                Word {
                    w: "tous".into(),
                    start: 1.0,
                    end: 1.5,
                    speaker: Some("spk2".into()),
                },
            ],
        }
    }

    /// Counts what reached it and how often it was flushed.
    #[derive(Default)]
    struct Probe {
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl Write for Probe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn one_object_per_line_flushed_at_each_final() {
        let mut log = JsonlWriter::new(Probe::default());
        log.write_event(&event(0, EventKind::Partial)).unwrap();
        log.write_event(&event(1, EventKind::Partial)).unwrap();
        assert!(log.out.get_ref().bytes.is_empty(), "partials stay buffered");
        log.write_event(&event(2, EventKind::Final)).unwrap();
        let probe = log.out.get_ref();
        assert_eq!(probe.flushes, 1);
        let text = String::from_utf8(probe.bytes.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
        let back = read_log_from(text.as_bytes(), "mem").unwrap();
        assert_eq!(
            back,
            vec![
                event(0, EventKind::Partial),
                event(1, EventKind::Partial),
                event(2, EventKind::Final)
            ]
        );
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "partial");
        assert_eq!(first["seq"], 0);
    }

    #[test]
    fn each_line_policy_flushes_partials() {
        let mut log = JsonlWriter::with_policy(Probe::default(), FlushPolicy::EachLine);
        log.write_event(&event(0, EventKind::Partial)).unwrap();
        assert_eq!(log.out.get_ref().flushes, 1);
        assert!(!log.into_inner().unwrap().bytes.is_empty());
    }

    #[test]
    fn non_finite_times_are_refused_without_writing() {
        let mut log = JsonlWriter::new(Vec::new());
        let mut ev = event(0, EventKind::Final);
        ev.words[1].end = f64::NAN;
        let err = log.write_event(&ev).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("words[].end"), "{err}");
        assert!(log.into_inner().unwrap().is_empty());
    }

    #[test]
    fn io_errors_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut log = JsonlWriter::new(Broken);
        let err = log.write_event(&event(0, EventKind::Final)).unwrap_err();
        assert!(err.to_string().contains("disk full"));
    }

    #[test]
    fn file_round_trip_and_malformed_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("captions.jsonl");
        let mut log = JsonlWriter::create(&path).unwrap();
        log.write_event(&event(0, EventKind::Partial)).unwrap();
        log.write_event(&event(1, EventKind::Final)).unwrap();
        drop(log);
        assert_eq!(read_log(&path).unwrap().len(), 2);

        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n{\"type\": \"final\", \"seq\": 9}\n");
        std::fs::write(&path, &text).unwrap();
        let err = read_log(&path).unwrap_err();
        assert_eq!(err.line(), Some(4));
        let msg = err.to_string();
        assert!(
            msg.contains("captions.jsonl:4:") && msg.contains("missing field"),
            "{msg}"
        );

        std::fs::write(&path, "{\"type\": \"final\",\n").unwrap();
        assert_eq!(read_log(&path).unwrap_err().line(), Some(1));
        let missing = read_log(dir.path().join("nope.jsonl")).unwrap_err();
        assert!(matches!(missing, LogReadError::Open { .. }) && missing.line().is_none());
    }

    #[test]
    fn scorer_schema_lines_are_accepted() {
        let text = r#"{"type": "partial", "segment_id": 7, "track": "mix", "speaker": null, "revision": 0, "text": "Good", "start": 0.9, "end": 1.1, "emitted_at": 1.8, "words": [{"w": "Good", "start": 0.9, "end": 1.1}]}
{"type": "final", "segment_id": 7, "track": "mix", "speaker": "A", "language": "en", "revision": 1, "text": "Good", "start": 0.9, "end": 1.1, "emitted_at": 2.0, "words": [{"w": "Good", "start": 0.9, "end": 1.1}], "room": "r1"}"#;
        let events = read_log_from(text.as_bytes(), "mem").unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(events[1].segment_id, "7");
        assert_eq!(events[1].stable_text, "");
        assert_eq!(events[0].language, None);
    }
}
