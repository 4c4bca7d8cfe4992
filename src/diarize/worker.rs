//! The diarizer of one track on its own thread, so that embeddings never delay partials.
//!
//! The captioner sends each voiced 32 ms frame on a bounded channel ([`FRAME_QUEUE`] frames,
//! ~16 s of speech; a full queue blocks the sender, because every voiced frame must be seen for
//! the labels to be the same however the audio was sliced — the worker runs far faster than
//! real time, so this only happens when the machine is overloaded). Labels live behind a mutex;
//! [`Diarizer::sync`] waits until every frame sent so far is processed, which a final does
//! before taking its labels (finals may wait; partials never do).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::onnx::OnnxError;
use crate::vad::FRAME_SAMPLES;

use super::embedder::CampPlus;
use super::settings::DiarizeSettings;
use super::track::{Framer, Labels};

/// Capacity of the frame channel, in 32 ms voiced frames.
pub const FRAME_QUEUE: usize = 512;

/// Errors of the diarizer.
#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    #[error("speaker embedding failed: {0}")]
    Embedding(#[from] OnnxError),
    #[error("the diarization worker of track {0} stopped")]
    WorkerLost(String),
}

/// Counters of a diarizer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiarizeStats {
    /// Embedding windows computed.
    pub windows: u64,
    /// Seconds spent in the embedding model.
    pub embed_s: f64,
    /// Voiced audio seen, seconds.
    pub voiced_s: f64,
}

enum Msg {
    Frame(u64, Vec<f32>),
    Sync(u64),
}

struct Shared {
    labels: Labels,
    synced: u64,
    /// Absolute sample just after the last frame processed.
    done_until: u64,
    stats: DiarizeStats,
    error: Option<String>,
    stopped: bool,
}

/// Handle on a track's diarization worker.
pub struct Diarizer {
    track: String,
    tx: Option<Sender<Msg>>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    sent_syncs: u64,
    thread: Option<JoinHandle<()>>,
}

impl Diarizer {
    /// Starts the worker thread for `track` with its own embedding session.
    pub fn start(
        track: &str,
        settings: &DiarizeSettings,
        embedder: CampPlus,
    ) -> Result<Self, DiarizeError> {
        let shared = Arc::new((
            Mutex::new(Shared {
                labels: Labels::new(settings),
                synced: 0,
                done_until: 0,
                stats: DiarizeStats::default(),
                error: None,
                stopped: false,
            }),
            Condvar::new(),
        ));
        let (tx, rx) = bounded(FRAME_QUEUE);
        let framer = Framer::new(settings);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("diar-{track}"))
            .spawn(move || run(rx, framer, embedder, sh))
            .map_err(|_| DiarizeError::WorkerLost(track.to_string()))?;
        Ok(Self {
            track: track.to_string(),
            tx: Some(tx),
            shared,
            sent_syncs: 0,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // a poisoned lock only means the worker panicked; the data is still readable
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a voiced frame starting at absolute sample `start`.
    pub fn push_voiced(&mut self, start: u64, frame: &[f32; FRAME_SAMPLES]) {
        if let Some(tx) = &self.tx
            && tx.send(Msg::Frame(start, frame.to_vec())).is_err()
        {
            self.tx = None;
        }
    }

    /// Waits until every frame sent so far is processed.
    pub fn sync(&mut self) -> Result<(), DiarizeError> {
        self.sent_syncs += 1;
        let token = self.sent_syncs;
        let lost = || DiarizeError::WorkerLost(self.track.clone());
        self.tx
            .as_ref()
            .ok_or_else(lost)?
            .send(Msg::Sync(token))
            .map_err(|_| lost())?;
        let mut g = self.lock();
        while g.synced < token && !g.stopped {
            g = self.shared.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &g.error {
            return Err(DiarizeError::Embedding(OnnxError::Run {
                model: "campplus",
                detail: e.clone(),
            }));
        }
        if g.synced < token {
            return Err(lost());
        }
        Ok(())
    }

    /// Waits until the frames sent up to absolute sample `end` are processed (they must have
    /// been sent). Returns false if the worker stopped first.
    pub fn wait_until(&self, end: u64) -> bool {
        let mut g = self.lock();
        while g.done_until < end && !g.stopped {
            g = self.shared.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.done_until >= end
    }

    /// Runs `f` on the labels as they are now (no waiting).
    pub fn with_labels<R>(&self, f: impl FnOnce(&Labels) -> R) -> R {
        f(&self.lock().labels)
    }

    /// Counters so far.
    pub fn stats(&self) -> DiarizeStats {
        self.lock().stats.clone()
    }
}

impl Drop for Diarizer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: Receiver<Msg>,
    mut framer: Framer,
    mut embedder: CampPlus,
    shared: Arc<(Mutex<Shared>, Condvar)>,
) {
    let lock = || shared.0.lock().unwrap_or_else(|e| e.into_inner());
    let mut audio = Vec::new();
    for msg in rx.iter() {
        match msg {
            Msg::Frame(start, frame) => {
                let voiced_s = frame.len() as f64 / 16_000.0;
                let end = start + frame.len() as u64;
                let Some(window) = framer.push(start, &frame, &mut audio) else {
                    let mut g = lock();
                    g.stats.voiced_s += voiced_s;
                    g.done_until = end;
                    drop(g);
                    shared.1.notify_all();
                    continue;
                };
                let t = std::time::Instant::now();
                let e = embedder.embed(&audio);
                let dt = t.elapsed().as_secs_f64();
                let mut g = lock();
                g.stats.voiced_s += voiced_s;
                g.stats.embed_s += dt;
                g.stats.windows += 1;
                match e {
                    Ok(e) => g.labels.add(window, &e),
                    Err(e) => {
                        tracing::warn!("speaker embedding failed: {e}");
                        g.error.get_or_insert(e.to_string());
                    }
                }
                g.done_until = end;
                drop(g);
                shared.1.notify_all();
            }
            Msg::Sync(token) => {
                lock().synced = token;
                shared.1.notify_all();
            }
        }
    }
    lock().stopped = true;
    shared.1.notify_all();
}
