//! WHEP (RFC 9725) attachment: soustitre plays each configured WHEP endpoint like a viewer would,
//! and captions what it hears as one participant's track.
//!
//! # Flow (per endpoint)
//! 1. [`RoomMedia::offer`] adds a receive-only webrtcbin (one `recvonly` Opus transceiver) and
//!    waits for its ICE candidates (host candidates: milliseconds; a STUN server's: at most
//!    [`crate::sfu::media::GATHER_TIMEOUT`]). soustitre does not trickle: the offer carries
//!    every candidate.
//! 2. POST the offer (`application/sdp`, `Authorization: Bearer <token>` when configured) to the
//!    endpoint URL. `201 Created` brings the answer and the resource's `Location` (resolved
//!    against the endpoint URL). ICE servers announced in `Link: <stun:...>; rel="ice-server"`
//!    headers are used from the next connection on (the current offer is already gathered).
//!    Meetecho's janus-whep-server may instead reply `406` with an offer of its own (its mode for
//!    Janus plugins that cannot take a subscriber's offer): the offering peer is dropped, a peer
//!    answers the server's offer ([`RoomMedia::subscribe`]) and the answer is PATCHed
//!    (`application/sdp`) to the resource.
//! 3. The audio reaches the endpoint's participant track through [`RoomSink::audio`].
//! 4. Detach (room stopped or deleted): DELETE the resource, then close the peer.
//!
//! # Faults
//! * POST refused (4xx/5xx, wrong content type, an offer where an answer belongs, malformed SDP),
//!   server unreachable: the error is the attachment's status (`error`), and the endpoint is
//!   tried again with the capped exponential back-off of [`crate::sfu`].
//! * The session dies: WHEP has no server-to-client signalling, so it is noticed on the media:
//!   webrtcbin's connection `failed`, no packet within [`WhepSettings::connect_timeout`] of the
//!   POST, or none for [`WhepSettings::media_timeout`] once flowing. The resource is DELETEd
//!   (best effort) and a new session POSTed, with back-off. The interval from the last packet
//!   heard to the first packet of the new session is reported to [`RoomSink::track_outage`]
//!   (a `gap` of that track); nothing is made up over it.
//! * A WHEP source that legitimately sends nothing for longer than `media_timeout` (no DTX
//!   comfort packets, a paused encoder) is indistinguishable from a dead session: it is
//!   reconnected and the silence reported as an outage. Raise `media_timeout` for such sources.
//!
//! # Latency model
//! The media path is the one of [`super::media`] (jitter buffer + Opus decode + 20 ms chunks).
//! Connection: ICE gathering + one HTTP round trip (+ a second one for server-sent offers) +
//! ICE/DTLS; an outage is detected within `media_timeout` + [`MONITOR_INTERVAL`].

pub mod http;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::media::{IceServers, MediaSettings, PeerError, RoomMedia, SubscriberPeer};
use super::{AttachState, AttachStatus, BACKOFF_MIN, RemoteParticipant, RoomSink, next_backoff};
use http::{Client, HttpError, Reply, Resource};

/// Default longest wait for the first audio packet after the POST.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence of the network (no RTP packet) before the session is considered dead.
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a session's liveness is checked.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(250);

/// Errors of one WHEP session.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Media(#[from] PeerError),
    #[error("no audio from the WHEP session within {0:?} (ICE/DTLS did not connect?)")]
    NoMedia(Duration),
    #[error("no audio from the WHEP session for {0:?} (session gone?)")]
    Stalled(Duration),
    #[error("WebRTC connection {0}")]
    Connection(String),
    #[error("negotiation task failed: {0}")]
    Task(String),
}

/// One WHEP endpoint: one participant.
#[derive(Debug, Clone, PartialEq)]
pub struct WhepEndpoint {
    /// Endpoint URL (`http(s)://host/whep/endpoint/x`).
    pub url: String,
    /// Bearer token, when the endpoint requires one.
    pub token: Option<String>,
    /// The participant its audio is captioned as (track id, identity, display name).
    pub participant: RemoteParticipant,
}

/// Where and how to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct WhepSettings {
    pub endpoints: Vec<WhepEndpoint>,
    pub media: MediaSettings,
    /// Longest wait for the first audio packet after the POST.
    pub connect_timeout: Duration,
    /// Longest stretch without any audio packet before the session is considered dead.
    pub media_timeout: Duration,
}

/// Per-endpoint state, aggregated into the room's [`AttachStatus`].
#[derive(Debug, Clone)]
struct EndpointState {
    participant: RemoteParticipant,
    state: AttachState,
    error: Option<String>,
    connections: u64,
    flowing: bool,
}

/// The room's status, made of its endpoints' states.
struct Board {
    sink: Arc<dyn RoomSink>,
    endpoints: Mutex<Vec<EndpointState>>,
}

impl Board {
    fn update(&self, i: usize, f: impl FnOnce(&mut EndpointState)) {
        let (status, participants) = {
            let mut all = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut all[i]);
            aggregate(&all)
        };
        self.sink.participants(&participants);
        self.sink.status(&status);
    }
}

fn aggregate(all: &[EndpointState]) -> (AttachStatus, Vec<RemoteParticipant>) {
    let state = if all.iter().all(|e| e.state == AttachState::Stopped) {
        AttachState::Stopped
    } else if all.iter().all(|e| e.state == AttachState::Connected) {
        AttachState::Connected
    } else if all.iter().any(|e| e.state == AttachState::Reconnecting) {
        AttachState::Reconnecting
    } else {
        AttachState::Connecting
    };
    let errors: Vec<String> = all
        .iter()
        .filter_map(|e| {
            e.error
                .as_ref()
                .map(|m| format!("{}: {m}", e.participant.track))
        })
        .collect();
    let participants: Vec<RemoteParticipant> = all
        .iter()
        .filter(|e| e.flowing)
        .map(|e| e.participant.clone())
        .collect();
    (
        AttachStatus {
            state,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            connections: all.iter().map(|e| e.connections).sum(),
            participants: participants.clone(),
            captions: None,
        },
        participants,
    )
}

/// Runs the attachment until `stop` turns true: one session per endpoint, each reconnected after
/// any failure. The room pipeline (and so the room timeline) lives as long as this call.
pub async fn run(
    settings: WhepSettings,
    media: Arc<RoomMedia>,
    sink: Arc<dyn RoomSink>,
    stop: watch::Receiver<bool>,
) {
    let board = Arc::new(Board {
        sink: Arc::clone(&sink),
        endpoints: Mutex::new(
            settings
                .endpoints
                .iter()
                .map(|e| EndpointState {
                    participant: e.participant.clone(),
                    state: AttachState::Connecting,
                    error: None,
                    connections: 0,
                    flowing: false,
                })
                .collect(),
        ),
    });
    let mut tasks = Vec::new();
    for (i, endpoint) in settings.endpoints.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(endpoint_loop(
            i,
            endpoint,
            settings.clone(),
            Arc::clone(&media),
            Arc::clone(&sink),
            Arc::clone(&board),
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn endpoint_loop(
    i: usize,
    endpoint: WhepEndpoint,
    settings: WhepSettings,
    media: Arc<RoomMedia>,
    sink: Arc<dyn RoomSink>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
) {
    let client = Arc::new(Client::new(&endpoint.url, endpoint.token.as_deref()));
    let mut ice = IceServers::default();
    let mut backoff = BACKOFF_MIN;
    let mut down_since: Option<f64> = None;
    let track = endpoint.participant.track.clone();
    loop {
        // not raced with `stop`: a negotiation is bounded (HTTP and promise timeouts) and its
        // resource must be deleted
        let opened = Session::open(&client, &media, &endpoint, &ice).await;
        let result = match opened {
            Ok(session) if *stop.borrow() => {
                session.close(&client, &media).await;
                break;
            }
            Ok(session) => {
                if session.resource.ice.stun.is_some() || !session.resource.ice.turn.is_empty() {
                    ice = session.resource.ice.clone();
                }
                board.update(i, |e| {
                    e.state = AttachState::Connected;
                    e.connections += 1;
                    e.error = None;
                });
                tracing::info!(track, resource = %session.resource.url, "whep: session created");
                let result = session
                    .watch(
                        &settings,
                        &media,
                        &sink,
                        &endpoint,
                        &board,
                        i,
                        &mut stop,
                        &mut down_since,
                    )
                    .await;
                if result.is_ok() {
                    session.close(&client, &media).await;
                    break;
                }
                if let Some(last) = session.peer.last_packet_s() {
                    // it was flowing: the outage starts at the last packet heard
                    down_since.get_or_insert(last);
                    backoff = BACKOFF_MIN;
                }
                session.close(&client, &media).await;
                result
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(track, url = %endpoint.url, "whep session failed: {e}");
            down_since.get_or_insert_with(|| media.now_s());
            board.update(i, |s| {
                s.state = AttachState::Reconnecting;
                s.error = Some(e.to_string());
                s.flowing = false;
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::sfu::stopped(&mut stop) => break,
        }
        backoff = next_backoff(backoff);
    }
    board.update(i, |s| {
        s.state = AttachState::Stopped;
        s.flowing = false;
    });
}

/// A negotiated session: the peer and its resource on the server.
struct Session {
    peer: SubscriberPeer,
    resource: Resource,
    posted_at: Instant,
}

impl Session {
    /// Offers, POSTs, takes the answer (or answers the server's offer). On a failure after the
    /// POST, the resource is deleted.
    async fn open(
        client: &Arc<Client>,
        media: &Arc<RoomMedia>,
        endpoint: &WhepEndpoint,
        ice: &IceServers,
    ) -> Result<Session, WhepError> {
        let (client, media, ice) = (Arc::clone(client), Arc::clone(media), ice.clone());
        let label = endpoint.participant.track.clone();
        tokio::task::spawn_blocking(move || negotiate(&client, &media, &label, &ice))
            .await
            .map_err(|e| WhepError::Task(e.to_string()))?
    }

    /// Watches the session until stopped (`Ok`) or dead (`Err`).
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &self,
        settings: &WhepSettings,
        media: &RoomMedia,
        sink: &Arc<dyn RoomSink>,
        endpoint: &WhepEndpoint,
        board: &Board,
        i: usize,
        stop: &mut watch::Receiver<bool>,
        down_since: &mut Option<f64>,
    ) -> Result<(), WhepError> {
        {
            let (sink, participant) = (Arc::clone(sink), endpoint.participant.clone());
            self.peer.forward(move |track| {
                tracing::debug!(track = %participant.track, mid = %track.mid, "whep: audio flowing");
                sink.audio(&participant, track.source);
            });
        }
        let mut flowing = false;
        let mut tick = tokio::time::interval(MONITOR_INTERVAL);
        loop {
            tokio::select! {
                _ = crate::sfu::stopped(stop) => return Ok(()),
                _ = tick.tick() => {}
            }
            let state = self.peer.state();
            if state == "failed" || state == "closed" {
                return Err(WhepError::Connection(state));
            }
            match self.peer.last_packet_s() {
                None if self.posted_at.elapsed() > settings.connect_timeout => {
                    return Err(WhepError::NoMedia(settings.connect_timeout));
                }
                None => {}
                Some(last) => {
                    if !flowing {
                        flowing = true;
                        if let Some(from) = down_since.take() {
                            sink.track_outage(&endpoint.participant.track, from, last);
                        }
                        board.update(i, |e| e.flowing = true);
                    }
                    if media.now_s() - last > settings.media_timeout.as_secs_f64() {
                        return Err(WhepError::Stalled(settings.media_timeout));
                    }
                }
            }
        }
    }

    /// DELETEs the resource (best effort), then closes the peer (its tracks end and flush).
    async fn close(self, client: &Arc<Client>, media: &Arc<RoomMedia>) {
        let (client, _keep) = (Arc::clone(client), Arc::clone(media));
        let Session { peer, resource, .. } = self;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = client.delete(&resource) {
                tracing::debug!(resource = %resource.url, "whep: DELETE failed: {e}");
            }
            drop(peer);
        })
        .await;
    }
}

/// The blocking part of opening a session.
fn negotiate(
    client: &Client,
    media: &RoomMedia,
    label: &str,
    ice: &IceServers,
) -> Result<Session, WhepError> {
    let (peer, offer) = media.offer(label, ice)?;
    let (reply, resource) = client.post(&offer)?;
    let posted_at = Instant::now();
    let finish = || -> Result<SubscriberPeer, WhepError> {
        match &reply {
            Reply::Answer(answer) => {
                http::check_answer(answer)?;
                peer.accept_answer(answer)?;
                Ok(peer)
            }
            Reply::ServerOffer(server_offer) => {
                http::check_sdp(server_offer)?;
                drop(peer);
                let (peer, answer) = media.answer(label, server_offer, ice)?;
                client.patch_answer(&resource, &answer)?;
                Ok(peer)
            }
        }
    };
    match finish() {
        Ok(peer) => Ok(Session {
            peer,
            resource,
            posted_at,
        }),
        Err(e) => {
            let _ = client.delete(&resource);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(track: &str, state: AttachState, error: Option<&str>, flowing: bool) -> EndpointState {
        EndpointState {
            participant: RemoteParticipant {
                track: track.into(),
                identity: track.into(),
                name: track.into(),
            },
            state,
            error: error.map(str::to_owned),
            connections: 1,
            flowing,
        }
    }

    #[test]
    fn endpoint_states_make_the_room_status() {
        let (s, p) = aggregate(&[
            ep("a", AttachState::Connected, None, true),
            ep("b", AttachState::Reconnecting, Some("refused"), false),
        ]);
        assert_eq!(s.state, AttachState::Reconnecting);
        assert_eq!(s.error.as_deref(), Some("b: refused"));
        assert_eq!(s.connections, 2);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].track, "a");
        let (s, _) = aggregate(&[
            ep("a", AttachState::Connected, None, true),
            ep("b", AttachState::Connected, None, false),
        ]);
        assert_eq!(s.state, AttachState::Connected);
        assert_eq!(s.error, None);
        let (s, _) = aggregate(&[ep("a", AttachState::Stopped, None, false)]);
        assert_eq!(s.state, AttachState::Stopped);
    }
}
