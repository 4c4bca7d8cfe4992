//! A room: its hub (seq, durable log, subscribers) and its captioned sources.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::{RoomConfig, SourceConfig};
use crate::engine::Engine;
use crate::hub::{Hub, HubError, HubSettings, HubStats, LOG_FILE_NAME};
use crate::protocol::Participant;
use crate::stream::StreamSettings;

use super::source::{SourceHandle, TrackStats};

/// Why a room cannot be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("room `{0}` already exists")]
    Exists(String),
    #[error("at most {0} rooms can be captioned at once")]
    TooMany(usize),
    #[error("duplicate track `{0}`")]
    DuplicateTrack(String),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("cannot start a source thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What the operator API shows of a room.
#[derive(Debug, Clone, Serialize)]
pub struct RoomInfo {
    pub id: String,
    pub state: &'static str,
    pub last_seq: u64,
    pub subscribers: usize,
    pub published: u64,
    pub finals: u64,
    pub gaps: u64,
    pub slow_consumer_closes: u64,
    pub coalesced_partials: u64,
    pub dropped_partials: u64,
    /// Tracks whose speaker was heard in the last seconds.
    pub active_speakers: Vec<String>,
    pub tracks: Vec<TrackInfo>,
    pub stream: StreamSettings,
}

/// One track of [`RoomInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct TrackInfo {
    #[serde(flatten)]
    pub source: SourceConfig,
    #[serde(flatten)]
    pub stats: TrackStats,
}

/// A room being captioned.
pub struct Room {
    id: String,
    hub: Hub,
    settings: StreamSettings,
    sources: Mutex<Vec<SourceHandle>>,
    stopped: Mutex<bool>,
    log_path: PathBuf,
}

impl Room {
    /// Opens the room's hub (continuing its log if it exists) and starts its sources.
    pub fn start(
        cfg: RoomConfig,
        engine: &Engine,
        hub_settings: &HubSettings,
    ) -> Result<Room, RoomError> {
        let mut seen = std::collections::HashSet::new();
        for s in &cfg.sources {
            if !seen.insert(s.track.clone()) {
                return Err(RoomError::DuplicateTrack(s.track.clone()));
            }
        }
        let hub = Hub::open(&cfg.id, hub_settings)?;
        let participants: Vec<Participant> = cfg
            .sources
            .iter()
            .map(|s| Participant {
                track: s.track.clone(),
                participant: s.participant.clone().unwrap_or_else(|| s.track.clone()),
                name: s
                    .name
                    .clone()
                    .or_else(|| s.participant.clone())
                    .unwrap_or_else(|| s.track.clone()),
                speakers: Vec::new(),
            })
            .collect();
        if !participants.is_empty() {
            hub.publish_participants(participants)?;
        }
        let mut sources = Vec::new();
        for s in cfg.sources {
            sources.push(SourceHandle::start(
                s,
                engine.clone(),
                cfg.stream.clone(),
                hub.clone(),
            )?);
        }
        let log_path = hub_settings.data_dir.join(&cfg.id).join(LOG_FILE_NAME);
        Ok(Room {
            id: cfg.id,
            hub,
            settings: cfg.stream,
            sources: Mutex::new(sources),
            stopped: Mutex::new(false),
            log_path,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The room's durable caption log.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Hub counters.
    pub fn hub_stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// Per-track figures.
    pub fn tracks(&self) -> Vec<TrackInfo> {
        let sources = self.sources.lock().expect("sources lock");
        sources
            .iter()
            .map(|s| TrackInfo {
                source: s.spec.clone(),
                stats: s.stats(),
            })
            .collect()
    }

    /// Stops every source (each flushes its open segment as a final into the log). Blocking:
    /// call from a blocking thread. Subscribers stay connected and can still read and export.
    pub fn stop(&self) {
        let mut sources = self.sources.lock().expect("sources lock");
        for s in sources.iter() {
            s.request_stop();
        }
        for s in sources.iter_mut() {
            s.stop_and_join();
        }
        *self.stopped.lock().expect("stopped lock") = true;
    }

    /// Stops the room and disconnects its subscribers (close code 1001).
    pub fn close(&self) {
        self.stop();
        self.hub.close();
    }

    pub fn info(&self) -> RoomInfo {
        let h = self.hub.stats();
        let tracks = self.tracks();
        let stopped = *self.stopped.lock().expect("stopped lock");
        RoomInfo {
            id: self.id.clone(),
            state: if stopped { "stopped" } else { "running" },
            last_seq: h.last_seq,
            subscribers: h.subscribers,
            published: h.published,
            finals: h.finals_logged,
            gaps: h.gaps_logged,
            slow_consumer_closes: h.slow_consumer_closes,
            coalesced_partials: h.coalesced_partials,
            dropped_partials: h.dropped_partials,
            active_speakers: tracks
                .iter()
                .filter(|t| t.stats.speaking)
                .map(|t| t.source.track.clone())
                .collect(),
            tracks,
            stream: self.settings.clone(),
        }
    }
}
