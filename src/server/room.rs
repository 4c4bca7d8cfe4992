//! A room: its hub (seq, durable log, subscribers) and its captioned sources.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{RoomConfig, SourceConfig};
use crate::diarize::{RenameError, Renames};
use crate::engine::Engine;
use crate::hub::{Hub, HubError, HubSettings, HubStats, LOG_FILE_NAME};
use crate::protocol::{Participant, Speaker};
use crate::stream::StreamSettings;

use super::source::{SourceHandle, TrackStats};

/// Why a room cannot be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("room `{0}` already exists")]
    Exists(String),
    #[error("at most {0} rooms can be captioned at once")]
    TooMany(usize),
    #[error("cannot attach to the SFU: {0}")]
    Sfu(String),
    #[error("duplicate track `{0}`")]
    DuplicateTrack(String),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("cannot start a source thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("no track `{0}` in this room")]
    NoSuchTrack(String),
    #[error("cannot rename: {0}")]
    Rename(#[from] RenameError),
}

/// Speaker renames of a room, per track (shared with the sources, which apply them to the
/// events they publish).
pub type RoomRenames = Arc<Mutex<HashMap<String, Renames>>>;

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
    /// The SFU attachment's state, for rooms attached to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sfu: Option<crate::sfu::AttachStatus>,
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
    sources: Arc<Mutex<Vec<SourceHandle>>>,
    /// The SFU attachment, for rooms attached to one.
    sfu: Option<super::sfu::SfuLink>,
    stopped: Mutex<bool>,
    log_path: PathBuf,
    participants: Vec<Participant>,
    renames: RoomRenames,
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
            hub.publish_participants(participants.clone())?;
        }
        let renames: RoomRenames = Arc::default();
        let mut sources = Vec::new();
        for s in cfg.sources.iter().cloned() {
            let diarize = cfg.diarizes(&s).then(|| cfg.diarization.clone());
            sources.push(SourceHandle::start(
                s,
                engine.clone(),
                cfg.stream.clone(),
                diarize,
                renames.clone(),
                hub.clone(),
            )?);
        }
        let log_path = hub_settings.data_dir.join(&cfg.id).join(LOG_FILE_NAME);
        let sources = Arc::new(Mutex::new(sources));
        let factory = || super::sfu::TrackFactory {
            engine: engine.clone(),
            stream: cfg.stream.clone(),
            diarize: cfg.diarize.then(|| cfg.diarization.clone()),
            renames: renames.clone(),
        };
        let sfu = match (cfg.janus.clone(), cfg.whep.clone(), cfg.livekit.clone()) {
            (Some(janus), _, _) => Some(
                super::sfu::SfuLink::start_janus(
                    &cfg.id,
                    janus,
                    hub.clone(),
                    factory(),
                    Arc::clone(&sources),
                )
                .map_err(|e| RoomError::Sfu(e.to_string()))?,
            ),
            (None, Some(whep), _) => Some(
                super::sfu::SfuLink::start_whep(
                    &cfg.id,
                    whep,
                    hub.clone(),
                    factory(),
                    Arc::clone(&sources),
                )
                .map_err(|e| RoomError::Sfu(e.to_string()))?,
            ),
            (None, None, Some(livekit)) => Some(
                super::sfu::SfuLink::start_livekit(
                    &cfg.id,
                    livekit,
                    hub.clone(),
                    factory(),
                    Arc::clone(&sources),
                )
                .map_err(|e| RoomError::Sfu(e.to_string()))?,
            ),
            (None, None, None) => None,
        };
        Ok(Room {
            id: cfg.id,
            hub,
            settings: cfg.stream,
            sources,
            sfu,
            stopped: Mutex::new(false),
            log_path,
            participants,
            renames,
        })
    }

    /// Names speaker `label` of `track` as `name` for the captions published from now on and
    /// for exports, and publishes the participant list with the track's renamed speakers
    /// (`participants` message). Returns the track's renames.
    pub fn rename_speaker(
        &self,
        track: &str,
        label: &str,
        name: &str,
    ) -> Result<Vec<Speaker>, RoomError> {
        if !self.participants.iter().any(|p| p.track == track) {
            return Err(RoomError::NoSuchTrack(track.to_string()));
        }
        let (speakers, participants) = {
            let mut all = self.renames.lock().unwrap_or_else(|e| e.into_inner());
            all.entry(track.to_string()).or_default().set(label, name)?;
            let speakers_of = |t: &str| -> Vec<Speaker> {
                all.get(t).map_or_else(Vec::new, |r| {
                    r.entries()
                        .into_iter()
                        .map(|(label, name)| Speaker { label, name })
                        .collect()
                })
            };
            let participants: Vec<Participant> = self
                .participants
                .iter()
                .map(|p| Participant {
                    speakers: speakers_of(&p.track),
                    ..p.clone()
                })
                .collect();
            (speakers_of(track), participants)
        };
        self.hub.publish_participants(participants)?;
        Ok(speakers)
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
        if let Some(sfu) = &self.sfu {
            sfu.stop();
        }
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
            sfu: self.sfu.as_ref().map(|l| l.status()),
            stream: self.settings.clone(),
        }
    }
}
