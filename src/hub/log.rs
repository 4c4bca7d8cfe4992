//! The room log: the durable, append-only record of the room messages that must not be lost.
//!
//! `<data_dir>/<room>/captions.jsonl` holds one line per durable room message (final captions,
//! gaps, participant lists), each the exact JSON text sent to clients, so a replay from disk
//! sends the bytes that went out live. A second kind of line, `{"type":"seq_reserved","up_to":N}`,
//! records that seqs up to `N` may have been given to partials (which are not logged): after a
//! restart numbering continues above it, so seqs keep increasing for clients that saw partials.
//!
//! Every append is written whole and `sync_data`'d before [`RoomLog::append`] returns, and the hub
//! fans a message out only after that, so a client can never hold a final the log does not.
//! A failed append is rolled back (the file is cut to its previous length); if even that fails
//! the log refuses further appends instead of growing around a torn line.
//!
//! On open the file is read back: a torn last line (a crash mid-write, never fanned out) is
//! dropped with a warning and cut off; any other malformed line is an error naming it. The file
//! is locked (`flock`) while open, so two hubs cannot write the same room.
//!
//! The last `ring_capacity` durable messages are also kept in memory for `resume`; older ones are
//! read back from the file, found through an in-memory index of (seq, byte offset) pairs.
//!
//! Latency: one `write` + one `sync_data` per durable message (about 1-10 ms on SSDs), on the
//! publisher's thread; partials cost one `sync_data` per [`SEQ_RESERVE_BLOCK`] seqs.
//!
//! Example: `let log = RoomLog::open("rooms/r1/captions.jsonl", "r1", 1024)?;`

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::settings::SEQ_RESERVE_BLOCK;
use crate::protocol::{Frame, ServerMessage};

/// Name of the log file inside the room directory.
pub const LOG_FILE_NAME: &str = "captions.jsonl";

/// A room log that cannot be opened, read or written.
#[derive(Debug, Error)]
pub enum LogError {
    /// The file cannot be created or opened.
    #[error("cannot open room log {}: {source}", path.display())]
    Open {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another hub (in this or another process) has the log open.
    #[error("room log {} is in use by another hub", path.display())]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// Reading the file failed.
    #[error("cannot read room log {}: {source}", path.display())]
    Read {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line that is not the last one is not a valid record, or the records are out of order.
    #[error("room log {}:{line}: {reason}", path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing or syncing an append failed (the append was rolled back).
    #[error("cannot append to room log {}: {source}", path.display())]
    Write {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An earlier failed append could not be rolled back: the log accepts no more appends.
    #[error("room log {} is unusable after a failed write; reopen the room", path.display())]
    Poisoned {
        /// The log file.
        path: PathBuf,
    },
    /// A message that is not durable, or whose seq does not follow the log's.
    #[error("room log {}: refused append of seq {seq}: {reason}", path.display())]
    Refused {
        /// The log file.
        path: PathBuf,
        /// Seq of the refused message (0 when it has none).
        seq: u64,
        /// Why.
        reason: &'static str,
    },
}

/// Log lines that are not server messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Marker {
    /// Seqs up to `up_to` may have been used by partials.
    SeqReserved { up_to: u64 },
}

enum Record {
    Message(Box<Frame>),
    Marker(Marker),
}

fn parse_record(line: &str) -> Result<Record, String> {
    match Frame::parse(line) {
        Ok(frame) => Ok(Record::Message(Box::new(frame))),
        Err(msg_err) => match serde_json::from_str::<Marker>(line) {
            Ok(marker) => Ok(Record::Marker(marker)),
            Err(_) => Err(msg_err.to_string()),
        },
    }
}

/// What a resume needs: frames already in memory, or a byte range of the file to read.
pub(crate) enum ReplayPlan {
    Ring(Vec<Arc<Frame>>),
    Disk { path: PathBuf, start: u64, end: u64 },
}

impl ReplayPlan {
    /// Load the frames (reads the file for a disk plan: call off the async threads).
    pub(crate) fn load(self) -> Result<Vec<Arc<Frame>>, LogError> {
        match self {
            Self::Ring(frames) => Ok(frames),
            Self::Disk { path, start, end } => read_range(&path, start, end),
        }
    }
}

/// The durable log of one room plus its in-memory replay ring. See the module doc.
#[derive(Debug)]
pub struct RoomLog {
    path: PathBuf,
    room: String,
    file: File,
    /// Length of the valid content (every byte below is complete lines).
    len: u64,
    /// (seq, byte offset) of every durable message, in seq order.
    index: Vec<(u64, u64)>,
    ring: VecDeque<Arc<Frame>>,
    ring_capacity: usize,
    /// Seq of the newest durable message no longer in the ring (0: none evicted).
    evicted_up_to: u64,
    last_durable: u64,
    reserved_up_to: u64,
    poisoned: bool,
    tracks: BTreeSet<String>,
    participants: Option<Arc<Frame>>,
}

impl RoomLog {
    /// Open (or create) the log of `room` at `path`, read it back and lock it.
    pub fn open(
        path: impl Into<PathBuf>,
        room: &str,
        ring_capacity: usize,
    ) -> Result<Self, LogError> {
        let path = path.into();
        let open_err = |source| LogError::Open {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        if !existed {
            // make the new directory entry durable too
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(open_err)?;
            }
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|source| LogError::Read {
                path: path.clone(),
                source,
            })?;
        let mut log = Self {
            path,
            room: room.into(),
            file,
            len: 0,
            index: Vec::new(),
            ring: VecDeque::new(),
            ring_capacity,
            evicted_up_to: 0,
            last_durable: 0,
            reserved_up_to: 0,
            poisoned: false,
            tracks: BTreeSet::new(),
            participants: None,
        };
        log.load(&data)?;
        Ok(log)
    }

    fn load(&mut self, data: &[u8]) -> Result<(), LogError> {
        let mut pos = 0usize;
        let mut line_no = 0usize;
        while pos < data.len() {
            line_no += 1;
            let (line, next, complete) = match data[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => (&data[pos..pos + i], pos + i + 1, true),
                None => (&data[pos..], data.len(), false),
            };
            let is_last = data[next..].iter().all(u8::is_ascii_whitespace);
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    if text.trim().is_empty() {
                        Ok(None)
                    } else if !complete {
                        Err("no end of line".to_string())
                    } else {
                        parse_record(text).map(|r| Some((r, text)))
                    }
                });
            match parsed {
                Ok(None) if complete => {}
                Ok(None) => break, // trailing whitespace without newline: cut it off
                Ok(Some((record, _))) => self.load_record(record, pos as u64, line_no)?,
                Err(reason) if is_last => {
                    tracing::warn!(
                        path = %self.path.display(),
                        line = line_no,
                        "room log: dropping torn last line ({reason})"
                    );
                    break;
                }
                Err(reason) => {
                    return Err(LogError::Corrupt {
                        path: self.path.clone(),
                        line: line_no,
                        reason,
                    });
                }
            }
            pos = next;
        }
        self.len = pos as u64;
        if pos < data.len() {
            self.file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .map_err(|source| LogError::Write {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn load_record(&mut self, record: Record, offset: u64, line: usize) -> Result<(), LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            path: self.path.clone(),
            line,
            reason,
        };
        match record {
            Record::Marker(Marker::SeqReserved { up_to }) => {
                self.reserved_up_to = self.reserved_up_to.max(up_to);
            }
            Record::Message(frame) => {
                let seq = frame.seq().filter(|_| frame.message().is_durable());
                let Some(seq) = seq else {
                    return Err(corrupt(
                        "not a final caption, gap or participant list".into(),
                    ));
                };
                if seq <= self.last_durable {
                    return Err(corrupt(format!(
                        "seq {seq} does not follow seq {}",
                        self.last_durable
                    )));
                }
                if let Some(room) = room_of(frame.message())
                    && room != self.room
                {
                    return Err(corrupt(format!(
                        "message of room `{room}` in the log of room `{}`",
                        self.room
                    )));
                }
                self.remember(Arc::new(*frame), offset);
            }
        }
        Ok(())
    }

    /// Record a durable frame written at `offset` (index, ring, tracks, participants).
    fn remember(&mut self, frame: Arc<Frame>, offset: u64) {
        let seq = frame.seq().unwrap_or_default();
        self.index.push((seq, offset));
        self.last_durable = seq;
        match frame.message() {
            ServerMessage::Caption(c) => {
                self.tracks.insert(c.event.track.clone());
            }
            ServerMessage::Gap(g) => {
                self.tracks.insert(g.track.clone());
            }
            ServerMessage::Participants(p) => {
                self.tracks
                    .extend(p.participants.iter().map(|p| p.track.clone()));
                self.participants = Some(frame.clone());
            }
            _ => {}
        }
        if self.ring_capacity == 0 {
            self.evicted_up_to = seq;
            return;
        }
        self.ring.push_back(frame);
        if self.ring.len() > self.ring_capacity
            && let Some(old) = self.ring.pop_front()
        {
            self.evicted_up_to = old.seq().unwrap_or_default();
        }
    }

    /// Append a durable room message (final, gap, participant list) and sync it to disk.
    /// Its seq must be above [`RoomLog::last_durable_seq`] (it may lie in a reserved block).
    pub fn append(&mut self, frame: Arc<Frame>) -> Result<(), LogError> {
        let refuse = |seq, reason| LogError::Refused {
            path: self.path.clone(),
            seq,
            reason,
        };
        let Some(seq) = frame.seq().filter(|_| frame.message().is_durable()) else {
            return Err(refuse(
                frame.seq().unwrap_or_default(),
                "not a final caption, gap or participant list",
            ));
        };
        if seq <= self.last_durable {
            return Err(refuse(seq, "seq not above the last logged seq"));
        }
        let offset = self.write_line(frame.text())?;
        self.remember(frame, offset);
        Ok(())
    }

    /// Durably record that seqs up to `up_to` may be given out (to partials, which are not
    /// logged), so that a reopened log starts numbering above it.
    pub fn reserve(&mut self, up_to: u64) -> Result<(), LogError> {
        if up_to <= self.reserved_up_to {
            return Ok(());
        }
        let line = serde_json::to_string(&Marker::SeqReserved { up_to })
            .expect("a marker always serialises");
        self.write_line(&line)?;
        self.reserved_up_to = up_to;
        Ok(())
    }

    /// Reserve the next block of seqs if `seq` is not covered yet.
    pub(crate) fn ensure_reserved(&mut self, seq: u64) -> Result<(), LogError> {
        if seq > self.reserved_up_to {
            self.reserve(seq + SEQ_RESERVE_BLOCK - 1)?;
        }
        Ok(())
    }

    fn write_line(&mut self, text: &str) -> Result<u64, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned {
                path: self.path.clone(),
            });
        }
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        let offset = self.len;
        match self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(offset)
            }
            Err(source) => {
                if let Err(e) = self
                    .file
                    .set_len(offset)
                    .and_then(|()| self.file.sync_data())
                {
                    tracing::error!(
                        path = %self.path.display(),
                        "room log: cannot roll back a failed append ({e}); refusing further appends"
                    );
                    self.poisoned = true;
                }
                Err(LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The highest seq used so far: the last durable message's or the last reservation's.
    /// The next room message gets a seq above it.
    pub fn high_water(&self) -> u64 {
        self.last_durable.max(self.reserved_up_to)
    }

    /// Seq of the last durable message (0: none).
    pub fn last_durable_seq(&self) -> u64 {
        self.last_durable
    }

    /// Number of durable messages in the log.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if the log holds no durable message.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tracks named by the logged messages.
    pub fn tracks(&self) -> &BTreeSet<String> {
        &self.tracks
    }

    /// The last logged participant list.
    pub fn last_participants(&self) -> Option<&Arc<Frame>> {
        self.participants.as_ref()
    }

    /// True if every durable message with seq > `after` is in the memory ring.
    pub fn ring_covers(&self, after: u64) -> bool {
        after >= self.evicted_up_to
    }

    /// The durable messages with seq > `after`, in order: from the ring when it covers them,
    /// else read from the file.
    pub fn replay_after(&self, after: u64) -> Result<Vec<Arc<Frame>>, LogError> {
        self.plan(after).load()
    }

    /// What a replay of seq > `after` needs, cheap to compute under the hub's lock; the file
    /// range covers exactly what is logged now, however much is appended before it is read.
    pub(crate) fn plan(&self, after: u64) -> ReplayPlan {
        if self.ring_covers(after) {
            let first = self
                .ring
                .partition_point(|f| f.seq().unwrap_or_default() <= after);
            ReplayPlan::Ring(self.ring.range(first..).cloned().collect())
        } else {
            let first = self.index.partition_point(|&(seq, _)| seq <= after);
            let start = self.index.get(first).map_or(self.len, |&(_, off)| off);
            ReplayPlan::Disk {
                path: self.path.clone(),
                start,
                end: self.len,
            }
        }
    }
}

fn room_of(msg: &ServerMessage) -> Option<&str> {
    match msg {
        ServerMessage::Caption(c) => Some(&c.room),
        ServerMessage::Gap(g) => Some(&g.room),
        ServerMessage::Participants(p) => Some(&p.room),
        _ => None,
    }
}

/// Read the durable messages in bytes `start..end` of a log (whole lines, as planned).
fn read_range(path: &Path, start: u64, end: u64) -> Result<Vec<Arc<Frame>>, LogError> {
    let read_err = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(start)).map_err(read_err)?;
    let mut data = Vec::with_capacity(end.saturating_sub(start) as usize);
    file.take(end.saturating_sub(start))
        .read_to_end(&mut data)
        .map_err(read_err)?;
    let text = String::from_utf8(data)
        .map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut frames = Vec::new();
    for (k, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_record(line) {
            Ok(Record::Message(frame)) => frames.push(Arc::new(*frame)),
            Ok(Record::Marker(_)) => {}
            Err(reason) => {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    line: k + 1,
                    reason: format!("{reason} (line counted from byte {start})"),
                });
            }
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::{CaptionEvent, EventKind};
    use crate::protocol::{Caption, Gap, GapReason};

    fn final_frame(room: &str, seq: u64) -> Arc<Frame> {
        Arc::new(Frame::new(ServerMessage::Caption(Caption {
            room: room.into(),
            seq,
            event: CaptionEvent {
                seq,
                kind: EventKind::Final,
                segment_id: format!("s{seq:04}"),
                revision: 0,
                track: "mix".into(),
                speaker: None,
                language: Some("en".into()),
                text: format!("final {seq}"),
                stable_text: format!("final {seq}"),
                start: seq as f64,
                end: seq as f64 + 0.5,
                emitted_at: seq as f64 + 1.0,
                words: vec![],
            },
        })))
    }

    fn seqs(frames: &[Arc<Frame>]) -> Vec<u64> {
        frames.iter().map(|f| f.seq().unwrap()).collect()
    }

    #[test]
    fn appends_are_read_back_and_replayed_from_ring_or_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        {
            let mut log = RoomLog::open(&path, "r", 3).unwrap();
            for seq in [1, 2, 5, 7, 8] {
                log.append(final_frame("r", seq)).unwrap();
            }
            log.reserve(20).unwrap();
            assert_eq!(log.high_water(), 20);
            assert!(log.ring_covers(2) && !log.ring_covers(1));
            assert_eq!(seqs(&log.replay_after(2).unwrap()), [5, 7, 8]);
            assert_eq!(seqs(&log.replay_after(0).unwrap()), [1, 2, 5, 7, 8]);
            assert_eq!(seqs(&log.replay_after(6).unwrap()), [7, 8]);
            assert!(log.replay_after(8).unwrap().is_empty());
            // refused: not above the last logged seq
            assert!(matches!(
                log.append(final_frame("r", 8)),
                Err(LogError::Refused { .. })
            ));
        }
        let log = RoomLog::open(&path, "r", 3).unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!((log.last_durable_seq(), log.high_water()), (8, 20));
        assert_eq!(seqs(&log.replay_after(1).unwrap()), [2, 5, 7, 8]);
        assert_eq!(log.tracks().iter().collect::<Vec<_>>(), ["mix"]);
    }

    #[test]
    fn the_file_is_locked_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let log = RoomLog::open(&path, "r", 3).unwrap();
        let err = RoomLog::open(&path, "r", 3).unwrap_err();
        assert!(matches!(err, LogError::Locked { .. }), "{err}");
        drop(log);
        RoomLog::open(&path, "r", 3).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        {
            let mut log = RoomLog::open(&path, "r", 8).unwrap();
            log.append(final_frame("r", 1)).unwrap();
            log.append(final_frame("r", 2)).unwrap();
        }
        let good = std::fs::read_to_string(&path).unwrap();
        for torn in [
            &final_frame("r", 3).text()[..40],
            "{\"type\":\"caption\",\"room\":\"r\"}\n",
            "\0\0\0\0",
        ] {
            std::fs::write(&path, format!("{good}{torn}")).unwrap();
            let mut log = RoomLog::open(&path, "r", 8).unwrap();
            assert_eq!(log.last_durable_seq(), 2, "{torn:?}");
            log.append(final_frame("r", 3)).unwrap();
            drop(log);
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text, format!("{good}{}\n", final_frame("r", 3).text()));
        }
    }

    #[test]
    fn corruption_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let (a, b) = (final_frame("r", 1), final_frame("r", 2));
        let cases = [
            (
                format!("{}\nnot json\n{}\n", a.text(), b.text()),
                2,
                "expected",
            ),
            (
                format!("{}\n{}\n", b.text(), a.text()),
                2,
                "does not follow",
            ),
            (
                format!("{}\n{}\n", final_frame("x", 1).text(), b.text()),
                1,
                "room `x`",
            ),
        ];
        for (text, line, what) in cases {
            std::fs::write(&path, &text).unwrap();
            match RoomLog::open(&path, "r", 8).unwrap_err() {
                LogError::Corrupt {
                    line: l, reason, ..
                } => {
                    assert_eq!(l, line, "{reason}");
                    assert!(reason.contains(what), "{reason}");
                }
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn gaps_and_participants_are_durable_and_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let mut log = RoomLog::open(&path, "r", 0).unwrap();
        log.append(Arc::new(Frame::new(ServerMessage::Gap(Gap {
            room: "r".into(),
            seq: 1,
            track: "bob".into(),
            from_s: 1.0,
            to_s: 2.0,
            reason: GapReason::Overload,
        }))))
        .unwrap();
        assert!(!log.ring_covers(0), "ring of 0 always reads the file");
        assert_eq!(seqs(&log.replay_after(0).unwrap()), [1]);
        assert!(log.tracks().contains("bob"));
    }
}
