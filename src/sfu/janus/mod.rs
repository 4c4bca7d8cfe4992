//! Janus VideoRoom attachment: soustitre joins the room over Janus's WebSocket API and subscribes
//! to the audio of every publisher, including publishers arriving later.
//!
//! # Flow
//! 1. Create a session; attach a *watcher* handle and `join` the room as a publisher that never
//!    publishes (Janus lists it to nobody as a publisher; with `notify_joining` rooms it appears as
//!    an attendee named [`JanusSettings::display`]). Its `joined` reply lists the publishers; its
//!    events announce new publishers, `unpublished` and `leaving`.
//! 2. For each publisher with an audio stream: attach a subscriber handle, `join` as
//!    `ptype=subscriber` with `streams=[{feed}]`; Janus replies `attached` with an SDP offer;
//!    [`RoomMedia::subscribe`] answers; `start` with the answer. The feed's audio then reaches its
//!    participant's track worker. Janus's trickled candidates are added to the peer.
//! 3. `unpublished`/`leaving`: the subscriber is closed (its handle detached, its webrtcbin
//!    removed); the participant's track worker flushes what it heard. A participant who publishes
//!    again (rejoin, republish after a mute by unpublishing) gets a new subscription to the same
//!    track (same feed id → same track).
//! 4. Connection lost: see [`crate::sfu`] (back-off, outage reported as a gap, resubscribe).
//!
//! # Identity
//! A participant's track is `janus-<feed id>` and its name the publisher's `display` (or
//! `participant <id>`). Publishers that pick their own feed id on join (Janus accepts an `id`)
//! keep their track across leave/rejoin and Janus restarts.
//!
//! # Latency model
//! A new publisher is subscribed within one round trip to Janus plus the answer (ICE gathering on
//! host candidates: milliseconds); audio then flows with the media latency of [`super::media`].

pub mod client;
pub mod publish;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

pub use client::{Janus, JanusError};

use super::media::{MediaSettings, PeerError, RoomMedia, SubscriberPeer};
use super::{AttachState, AttachStatus, BACKOFF_MIN, RemoteParticipant, RoomSink, next_backoff};

/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// Default display name of the watcher handle.
pub const DEFAULT_DISPLAY: &str = "soustitre (captions)";

/// Errors of the attachment (a session-level failure leads to a reconnection).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Janus(#[from] JanusError),
    #[error(transparent)]
    Media(#[from] PeerError),
    #[error("invalid Janus reply: {0}")]
    Protocol(String),
}

/// Where and how to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusSettings {
    /// WebSocket URL of Janus (`ws://host:8188/`).
    pub url: String,
    /// VideoRoom room id (a number, or a string for rooms created with `string_ids`).
    pub room: String,
    /// Room PIN, when the room has one.
    pub pin: Option<String>,
    /// Display name of soustitre's watcher in the room.
    pub display: String,
    pub media: MediaSettings,
}

impl JanusSettings {
    /// The room id as Janus expects it: a JSON number when it is one.
    fn room_value(&self) -> Value {
        self.room
            .parse::<u64>()
            .map_or_else(|_| json!(self.room), |n| json!(n))
    }
}

/// One subscribed publisher.
struct Feed {
    participant: RemoteParticipant,
    handle: u64,
    peer: SubscriberPeer,
}

/// Runs the attachment until `stop` turns true: connects, subscribes, and reconnects after any
/// failure. The room pipeline (and so the room timeline) lives as long as this call.
pub async fn run(
    settings: JanusSettings,
    media: Arc<RoomMedia>,
    sink: Arc<dyn RoomSink>,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = AttachStatus::default();
    let mut backoff = BACKOFF_MIN;
    let mut down_since: Option<f64> = None;
    loop {
        sink.status(&status);
        let mut connected = false;
        let result = session(
            &settings,
            &media,
            &sink,
            &mut stop,
            &mut status,
            &mut down_since,
            &mut connected,
        )
        .await;
        status.participants.clear();
        sink.participants(&[]);
        match result {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(url = %settings.url, room = %settings.room, "janus attachment interrupted: {e}");
                status.error = Some(e.to_string());
                status.state = AttachState::Reconnecting;
                if connected {
                    backoff = BACKOFF_MIN;
                }
                down_since.get_or_insert_with(|| media.now_s());
            }
        }
        sink.status(&status);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::sfu::stopped(&mut stop) => break,
        }
        backoff = next_backoff(backoff);
    }
    status.state = AttachState::Stopped;
    sink.status(&status);
}

/// One Janus session: returns `Ok` when stopped, `Err` when the session failed.
#[allow(clippy::too_many_arguments)]
async fn session(
    settings: &JanusSettings,
    media: &Arc<RoomMedia>,
    sink: &Arc<dyn RoomSink>,
    stop: &mut watch::Receiver<bool>,
    status: &mut AttachStatus,
    down_since: &mut Option<f64>,
    connected: &mut bool,
) -> Result<(), AttachError> {
    let (janus, mut events) = Janus::connect(&settings.url).await?;
    let janus = Arc::new(janus);
    let watcher = janus.attach(VIDEOROOM).await?;
    let mut join = json!({
        "request": "join",
        "ptype": "publisher",
        "room": settings.room_value(),
        "display": settings.display,
    });
    if let Some(pin) = &settings.pin {
        join["pin"] = json!(pin);
    }
    let (joined, _) = janus.request(watcher, join, None).await?;
    if joined["videoroom"] != "joined" {
        return Err(AttachError::Protocol(format!("join answered {joined}")));
    }
    let private_id = joined.get("private_id").cloned();
    *connected = true;
    status.state = AttachState::Connected;
    status.connections += 1;
    status.error = None;
    if let Some(from) = down_since.take() {
        sink.outage(from, media.now_s());
    }
    sink.status(status);
    tracing::info!(url = %settings.url, room = %settings.room, "janus: attached to the room");

    let mut feeds: HashMap<u64, Feed> = HashMap::new();
    let mut ctx = Ctx {
        janus: &janus,
        settings,
        media,
        sink: Arc::clone(sink),
        private_id,
    };
    for p in publishers(&joined) {
        ctx.subscribe(&mut feeds, p).await;
    }
    publish_list(sink.as_ref(), status, &feeds);

    let result = loop {
        tokio::select! {
            _ = crate::sfu::stopped(stop) => break Ok(()),
            event = events.recv() => {
                let Some(event) = event else { break Err(JanusError::Closed.into()) };
                if ctx.on_event(&mut feeds, event).await {
                    publish_list(sink.as_ref(), status, &feeds);
                }
            }
        }
    };
    // peers first (their tracks end and flush), then the session
    let handles: Vec<u64> = feeds.values().map(|f| f.handle).collect();
    drop_feeds(media, feeds).await;
    if result.is_ok() {
        for h in handles {
            let _ = janus.detach(h).await;
        }
        let _ = janus
            .request(watcher, json!({"request": "leave"}), None)
            .await;
        if let Ok(janus) = Arc::try_unwrap(janus) {
            janus.close().await;
        }
    }
    result
}

struct Ctx<'a> {
    janus: &'a Arc<Janus>,
    sink: Arc<dyn RoomSink>,
    settings: &'a JanusSettings,
    media: &'a Arc<RoomMedia>,
    private_id: Option<Value>,
}

/// A publisher of a `joined` or `event` message.
#[derive(Debug, Clone, PartialEq)]
struct Publisher {
    id: u64,
    display: Option<String>,
    has_audio: bool,
}

fn publishers(data: &Value) -> Vec<Publisher> {
    let Some(list) = data["publishers"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            let has_audio = match p["streams"].as_array() {
                Some(streams) => streams
                    .iter()
                    .any(|s| s["type"] == "audio" && s["disabled"] != true),
                // Janus 0.x style
                None => p.get("audio_codec").is_some(),
            };
            Some(Publisher {
                id,
                display: p["display"].as_str().map(str::to_owned),
                has_audio,
            })
        })
        .collect()
}

fn participant(p: &Publisher) -> RemoteParticipant {
    RemoteParticipant {
        track: format!("janus-{}", p.id),
        identity: p.id.to_string(),
        name: p
            .display
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| format!("participant {}", p.id)),
    }
}

fn publish_list(sink: &dyn RoomSink, status: &mut AttachStatus, feeds: &HashMap<u64, Feed>) {
    let mut list: Vec<RemoteParticipant> = feeds.values().map(|f| f.participant.clone()).collect();
    list.sort_by(|a, b| a.track.cmp(&b.track));
    status.participants = list.clone();
    sink.participants(&list);
    sink.status(status);
}

/// Closes peers on a blocking thread (GStreamer state changes wait for streaming threads).
async fn drop_feeds(media: &Arc<RoomMedia>, feeds: HashMap<u64, Feed>) {
    let _keep = Arc::clone(media);
    let peers: Vec<SubscriberPeer> = feeds.into_values().map(|f| f.peer).collect();
    let _ = tokio::task::spawn_blocking(move || drop(peers)).await;
}

impl Ctx<'_> {
    /// Handles one unsolicited event; true when the participant list changed.
    async fn on_event(&mut self, feeds: &mut HashMap<u64, Feed>, event: client::Event) -> bool {
        let body = &event.body;
        match body["janus"].as_str().unwrap_or("") {
            "event" => {
                let data = &body["plugindata"]["data"];
                let mut changed = false;
                for p in publishers(data) {
                    changed |= self.subscribe(feeds, p).await;
                }
                for key in ["unpublished", "leaving", "kicked"] {
                    if let Some(id) = data[key].as_u64()
                        && let Some(feed) = feeds.remove(&id)
                    {
                        tracing::info!(track = %feed.participant.track, "janus: {key}");
                        let handle = feed.handle;
                        drop_feeds(self.media, HashMap::from([(id, feed)])).await;
                        let _ = self.janus.detach(handle).await;
                        changed = true;
                    }
                }
                changed
            }
            "trickle" => {
                let candidate = &body["candidate"];
                if let (Some(handle), Some(c), Some(mline)) = (
                    event.handle,
                    candidate["candidate"].as_str(),
                    candidate["sdpMLineIndex"].as_u64(),
                ) && let Some(feed) = feeds.values().find(|f| f.handle == handle)
                {
                    feed.peer.add_candidate(mline as u32, c);
                }
                false
            }
            "hangup" | "detached" => {
                // a subscriber's peer connection died: drop it; the next publisher list
                // (or a reconnection) subscribes again
                let Some(handle) = event.handle else {
                    return false;
                };
                let Some(id) = feeds
                    .iter()
                    .find(|(_, f)| f.handle == handle)
                    .map(|(id, _)| *id)
                else {
                    return false;
                };
                if let Some(feed) = feeds.remove(&id) {
                    tracing::warn!(track = %feed.participant.track, reason = %body["reason"], "janus: subscriber hung up");
                    drop_feeds(self.media, HashMap::from([(id, feed)])).await;
                    let _ = self.janus.detach(handle).await;
                }
                true
            }
            _ => false,
        }
    }

    /// Subscribes to one publisher's audio (once). True when a subscription was added.
    async fn subscribe(&mut self, feeds: &mut HashMap<u64, Feed>, p: Publisher) -> bool {
        if !p.has_audio || feeds.contains_key(&p.id) {
            return false;
        }
        let participant = participant(&p);
        match self.try_subscribe(&p, &participant).await {
            Ok((handle, peer)) => {
                tracing::info!(track = %participant.track, name = %participant.name, "janus: subscribed");
                feeds.insert(
                    p.id,
                    Feed {
                        participant,
                        handle,
                        peer,
                    },
                );
                true
            }
            Err(e) => {
                tracing::warn!(track = %participant.track, "janus: cannot subscribe: {e}");
                false
            }
        }
    }

    async fn try_subscribe(
        &mut self,
        p: &Publisher,
        participant: &RemoteParticipant,
    ) -> Result<(u64, SubscriberPeer), AttachError> {
        let handle = self.janus.attach(VIDEOROOM).await?;
        let mut join = json!({
            "request": "join",
            "ptype": "subscriber",
            "room": self.settings.room_value(),
            "streams": [{"feed": p.id}],
        });
        if let Some(private_id) = &self.private_id {
            join["private_id"] = private_id.clone();
        }
        if let Some(pin) = &self.settings.pin {
            join["pin"] = json!(pin);
        }
        let offer = match self.janus.request(handle, join, None).await {
            Ok((data, Some(jsep))) if data["videoroom"] == "attached" => jsep,
            Ok((data, _)) => {
                let _ = self.janus.detach(handle).await;
                return Err(AttachError::Protocol(format!(
                    "subscribe answered {data} without an offer"
                )));
            }
            Err(e) => {
                let _ = self.janus.detach(handle).await;
                return Err(e.into());
            }
        };
        let sdp = offer["sdp"].as_str().unwrap_or_default().to_owned();
        let media = Arc::clone(self.media);
        let label = participant.track.clone();
        let answered = tokio::task::spawn_blocking(move || media.subscribe(&label, &sdp))
            .await
            .map_err(|e| AttachError::Protocol(format!("subscribe task failed: {e}")))?;
        let (peer, answer) = match answered {
            Ok(x) => x,
            Err(e) => {
                let _ = self.janus.detach(handle).await;
                return Err(e.into());
            }
        };
        // tracks reach their participant's worker as soon as they flow, whatever the
        // signalling loop is doing
        {
            let (sink, participant) = (Arc::clone(&self.sink), participant.clone());
            peer.forward(move |track| {
                tracing::debug!(track = %participant.track, mid = %track.mid, "janus: audio flowing");
                sink.audio(&participant, track.source);
            });
        }
        // Janus answers `start` once the media is up: wait for it off the signalling loop, so
        // that other publishers are subscribed meanwhile
        let janus = Arc::clone(self.janus);
        let track = participant.track.clone();
        tokio::spawn(async move {
            let start = janus
                .request(
                    handle,
                    json!({"request": "start"}),
                    Some(json!({"type": "answer", "sdp": answer})),
                )
                .await;
            match start {
                Ok(_) => {
                    let _ = janus.trickle(handle, None).await;
                    tracing::debug!(track, "janus: subscription started");
                }
                Err(e) => tracing::warn!(track, "janus: subscription not started: {e}"),
            }
        });
        Ok((handle, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_are_read_from_joined_and_event_messages() {
        let joined = json!({
            "videoroom": "joined", "room": 1234, "id": 99,
            "publishers": [
                {"id": 1, "display": "Anne", "streams": [{"type": "audio", "mid": "0", "codec": "opus"}]},
                {"id": 2, "display": "Video only", "streams": [{"type": "video", "mid": "0"}]},
                {"id": 3, "streams": [{"type": "audio", "mid": "0", "disabled": true}, {"type": "video", "mid": "1"}]},
                {"id": 4, "display": "  ", "streams": [{"type": "audio", "mid": "0"}]},
                {"display": "no id"}
            ]
        });
        let list = publishers(&joined);
        assert_eq!(
            list,
            vec![
                Publisher {
                    id: 1,
                    display: Some("Anne".into()),
                    has_audio: true
                },
                Publisher {
                    id: 2,
                    display: Some("Video only".into()),
                    has_audio: false
                },
                Publisher {
                    id: 3,
                    display: None,
                    has_audio: false
                },
                Publisher {
                    id: 4,
                    display: Some("  ".into()),
                    has_audio: true
                },
            ]
        );
        assert_eq!(
            participant(&list[0]),
            RemoteParticipant {
                track: "janus-1".into(),
                identity: "1".into(),
                name: "Anne".into()
            }
        );
        assert_eq!(participant(&list[3]).name, "participant 4");
        assert!(publishers(&json!({"videoroom": "event", "leaving": 3})).is_empty());
    }

    #[test]
    fn numeric_room_ids_are_numbers() {
        let mut s = JanusSettings {
            url: "ws://127.0.0.1:8188/".into(),
            room: "1234".into(),
            pin: None,
            display: DEFAULT_DISPLAY.into(),
            media: MediaSettings::default(),
        };
        assert_eq!(s.room_value(), json!(1234));
        s.room = "board-meeting".into();
        assert_eq!(s.room_value(), json!("board-meeting"));
    }
}
