//! A room attached to an SFU: the attachment task (signalling, reconnection) runs on the
//! service's runtime, the room's media pipeline beside it, and each remote participant becomes a
//! track of the room, captioned by its own worker thread fed one [`AudioSource`] per publication.
//!
//! Tracks are created when a participant's audio first flows and live as long as the room: a
//! participant who leaves gets the final of what was heard (the publication's end closes the
//! open segment); one who comes back continues on the same track and timeline. SFU outages are
//! published as `gap` events (`sfu_unreachable`) for every track of the room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use tokio::sync::watch;

use crate::config::SourceConfig;
use crate::diarize::DiarizeSettings;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::media::AudioSource;
use crate::protocol::{GapReason, Participant};
use crate::sfu::janus::{self, JanusSettings};
use crate::sfu::livekit::{self, LiveKitSettings};
use crate::sfu::media::{MediaSettings, PeerError, RoomMedia};
use crate::sfu::whep::{self, WhepSettings};
use crate::sfu::{AttachStatus, RemoteParticipant, RoomSink};
use crate::stream::StreamSettings;

use super::room::RoomRenames;
use super::source::SourceHandle;

/// Publications of one participant waiting for its worker (a rejoin while the worker still
/// flushes the previous one). More would mean the worker is stuck: the newest is dropped, logged.
const FEED_QUEUE: usize = 4;

/// Longest wait for the attachment to leave the SFU room when the room stops.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the room hands to its tracks.
pub(crate) struct TrackFactory {
    pub engine: Engine,
    pub stream: StreamSettings,
    pub diarize: Option<DiarizeSettings>,
    pub renames: RoomRenames,
}

/// The room side of an attachment.
struct Sink {
    room: String,
    hub: Hub,
    factory: TrackFactory,
    sources: Arc<Mutex<Vec<SourceHandle>>>,
    feeds: Mutex<HashMap<String, Sender<AudioSource>>>,
    status: Arc<Mutex<AttachStatus>>,
}

impl Sink {
    /// Starts the worker of `p`'s track, which loads its models at once and then waits for the
    /// track's audio on the feed returned (kept in `feeds`).
    fn start_worker<'a>(
        &self,
        feeds: &'a mut HashMap<String, Sender<AudioSource>>,
        p: &RemoteParticipant,
    ) -> Option<&'a Sender<AudioSource>> {
        if !feeds.contains_key(&p.track) {
            let (tx, rx) = crossbeam_channel::bounded(FEED_QUEUE);
            let spec = SourceConfig {
                track: p.track.clone(),
                uri: format!("sfu:{}", p.identity),
                participant: Some(p.identity.clone()),
                name: Some(p.name.clone()),
                looped: false,
                diarize: Some(self.factory.diarize.is_some()),
            };
            match SourceHandle::start_fed(
                spec,
                self.factory.engine.clone(),
                self.factory.stream.clone(),
                self.factory.diarize.clone(),
                self.factory.renames.clone(),
                self.hub.clone(),
                rx,
            ) {
                Ok(handle) => {
                    feeds.insert(p.track.clone(), tx);
                    self.sources
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(handle);
                }
                Err(e) => {
                    tracing::error!(room = %self.room, track = %p.track, "cannot start the track worker: {e}");
                    return None;
                }
            }
        }
        feeds.get(&p.track)
    }
}

impl RoomSink for Sink {
    fn audio(&self, p: &RemoteParticipant, source: AudioSource) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = self.start_worker(&mut feeds, p)
            && feed.try_send(source).is_err()
        {
            tracing::error!(room = %self.room, track = %p.track, "track worker not taking audio; publication dropped");
        }
    }

    fn participants(&self, list: &[RemoteParticipant]) {
        // a participant is listed once it publishes audio, before that audio flows (connection
        // set-up, subscription): its models load meanwhile
        {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            for p in list {
                self.start_worker(&mut feeds, p);
            }
        }
        let list = list
            .iter()
            .map(|p| Participant {
                track: p.track.clone(),
                participant: p.identity.clone(),
                name: p.name.clone(),
                speakers: Vec::new(),
            })
            .collect();
        if let Err(e) = self.hub.publish_participants(list) {
            tracing::warn!(room = %self.room, "participant list not published: {e}");
        }
    }

    fn outage(&self, from_s: f64, to_s: f64) {
        let tracks: Vec<String> = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        tracing::warn!(room = %self.room, "SFU unreachable from {from_s:.2} s to {to_s:.2} s");
        for track in tracks {
            if let Err(e) = self
                .hub
                .publish_gap(&track, from_s, to_s, GapReason::SfuUnreachable)
            {
                tracing::error!(room = %self.room, track, "gap not published: {e}");
            }
        }
    }

    fn track_outage(&self, track: &str, from_s: f64, to_s: f64) {
        if !self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(track)
        {
            return;
        }
        tracing::warn!(room = %self.room, track, "SFU unreachable from {from_s:.2} s to {to_s:.2} s");
        if let Err(e) = self
            .hub
            .publish_gap(track, from_s, to_s, GapReason::SfuUnreachable)
        {
            tracing::error!(room = %self.room, track, "gap not published: {e}");
        }
    }

    fn status(&self, status: &AttachStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status.clone();
    }
}

/// A running attachment of a room.
pub(crate) struct SfuLink {
    stop: watch::Sender<bool>,
    done: crossbeam_channel::Receiver<()>,
    status: Arc<Mutex<AttachStatus>>,
    sink: Arc<Sink>,
}

impl SfuLink {
    /// Starts the room pipeline and the attachment task (on the current tokio runtime).
    pub(crate) fn start_janus(
        room: &str,
        settings: JanusSettings,
        hub: Hub,
        factory: TrackFactory,
        sources: Arc<Mutex<Vec<SourceHandle>>>,
    ) -> Result<SfuLink, PeerError> {
        let media = settings.media.clone();
        Self::start(
            room,
            media,
            hub,
            factory,
            sources,
            move |media, sink, stop| janus::run(settings, media, sink, stop),
        )
    }

    /// Starts the room pipeline and one WHEP session per endpoint (on the current tokio
    /// runtime).
    pub(crate) fn start_whep(
        room: &str,
        settings: WhepSettings,
        hub: Hub,
        factory: TrackFactory,
        sources: Arc<Mutex<Vec<SourceHandle>>>,
    ) -> Result<SfuLink, PeerError> {
        let media = settings.media.clone();
        Self::start(
            room,
            media,
            hub,
            factory,
            sources,
            move |media, sink, stop| whep::run(settings, media, sink, stop),
        )
    }

    fn start<F: std::future::Future<Output = ()> + Send + 'static>(
        room: &str,
        media: MediaSettings,
        hub: Hub,
        factory: TrackFactory,
        sources: Arc<Mutex<Vec<SourceHandle>>>,
        attach: impl FnOnce(Arc<RoomMedia>, Arc<dyn RoomSink>, watch::Receiver<bool>) -> F,
    ) -> Result<SfuLink, PeerError> {
        let media = Arc::new(RoomMedia::start(room, media)?);
        let status = Arc::new(Mutex::new(AttachStatus::default()));
        let sink = Arc::new(Sink {
            room: room.to_owned(),
            hub,
            factory,
            sources,
            feeds: Mutex::new(HashMap::new()),
            status: Arc::clone(&status),
        });
        let (stop, stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| PeerError::Gst(format!("no async runtime for the attachment: {e}")))?;
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let attach = attach(media, sink.clone() as Arc<dyn RoomSink>, stop_rx);
        runtime.spawn(async move {
            attach.await;
            let _ = done_tx.send(());
        });
        Ok(SfuLink {
            stop,
            done,
            status,
            sink,
        })
    }

    /// Starts the room pipeline and the LiveKit attachment task (on the current tokio
    /// runtime); the room's captions (from `hub`) are published back into the LiveKit room.
    pub(crate) fn start_livekit(
        room: &str,
        settings: LiveKitSettings,
        hub: Hub,
        factory: TrackFactory,
        sources: Arc<Mutex<Vec<SourceHandle>>>,
    ) -> Result<SfuLink, PeerError> {
        let media = settings.media.clone();
        let captions = hub.clone();
        Self::start(
            room,
            media,
            hub,
            factory,
            sources,
            move |media, sink, stop| {
                livekit::attach::run(settings, media, sink, Some(captions), stop)
            },
        )
    }

    /// The attachment's status now.
    pub(crate) fn status(&self) -> AttachStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the attachment and waits for it (its peers are closed, so every participant's
    /// publication ends). Blocking: call from a blocking thread. The track workers are stopped by
    /// the room afterwards.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
        if self.done.recv_timeout(STOP_TIMEOUT).is_err() {
            tracing::warn!(room = %self.sink.room, "the SFU attachment did not stop in {STOP_TIMEOUT:?}");
        }
        self.sink
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
