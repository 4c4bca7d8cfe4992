//! The signalling state machine, sans I/O.
//!
//! [`Session`] consumes what the server sends ([`Session::handle_frame`] /
//! [`Session::handle_response`]), what the media side produces ([`Session::local_answer`],
//! [`Session::publisher_offer`], [`Session::local_candidate`]) and the passage of time
//! ([`Session::tick`]), and returns [`Action`]s: requests to send to the server
//! ([`Action::Send`]) and events for the media side. It owns no socket, no timer and no
//! peer connection, so every exchange is testable as a sequence of messages.
//!
//! Subscriptions: the session joins with `auto_subscribe=0` (see
//! [`crate::sfu::livekit::signal::UrlOptions`]) and sends one `UpdateSubscription{subscribe:true}`
//! for the audio tracks each message reveals. Video is never subscribed, so the server never
//! offers it and no bandwidth is spent on it (with `auto_subscribe=1` every video would be
//! forwarded until unsubscribed).

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;

use super::signal::{self, IceCandidateInit, Target};

/// Ping interval used when the join response gives none.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Ping timeout used when the join response gives none.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(15);

/// How the session behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Ask for the publisher connection right after joining (needed to publish captions).
    pub publish_captions: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            publish_captions: true,
        }
    }
}

/// An ICE server from the join response, for webrtcbin's `stun-server` / `turn-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// What the server told the sidecar when it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    pub room_name: String,
    pub room_sid: String,
    /// The sidecar's own participant sid and identity.
    pub participant_sid: String,
    pub identity: String,
    pub server_version: String,
    pub ice_servers: Vec<IceServer>,
    /// True: the server offers the subscriber connection first (the usual case).
    pub subscriber_primary: bool,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// The sidecar's permissions as the server applied them (all `true` when the join carries
    /// none). Without `can_publish_data` no publisher connection is asked for.
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub hidden: bool,
}

/// A remote participant's audio track, as the media side needs it to label an incoming pad.
///
/// On the subscriber connection LiveKit sets the SDP stream id (`a=msid:<stream> <track>`) of
/// each forwarded track to `participant_sid|track_sid`; [`parse_stream_id`] splits it and
/// [`Session::track`] finds the participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub participant_sid: String,
    pub identity: String,
    /// Display name of the participant (may be empty).
    pub name: String,
    pub track_sid: String,
    /// The track's own name (often empty for microphones).
    pub track_name: String,
    /// `TrackSource` (microphone, screen-share audio...).
    pub source: proto::TrackSource,
    pub mime_type: String,
    /// The mid the track had on the *publisher's* connection; not the subscriber mid.
    pub mid: String,
    pub muted: bool,
}

impl RemoteTrack {
    /// The msid stream id LiveKit gives this track on the subscriber connection.
    pub fn stream_id(&self) -> String {
        format!("{}|{}", self.participant_sid, self.track_sid)
    }
}

/// Why the session asks for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinReason {
    /// The server sent `leave` with reconnect allowed (`action` resume/reconnect, or the older
    /// `can_reconnect`). The session does not implement resume: it always rejoins from scratch.
    Server(proto::DisconnectReason),
    /// Nothing arrived from the server for the ping timeout.
    PingTimeout,
}

/// What the session asks of its driver and of the media side.
// `Send` holds a protobuf request inline (~400 bytes): actions live for one message's
// handling, a few at a time, so boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this request to the server (one binary frame, see [`signal::encode_request`]).
    Send(Req),
    /// Joined the room.
    Joined(JoinInfo),
    /// A participant is in the room (at join or later).
    ParticipantJoined {
        participant_sid: String,
        identity: String,
        name: String,
    },
    /// A participant changed its display name (caption labels follow).
    ParticipantRenamed {
        participant_sid: String,
        name: String,
    },
    /// An audio track to caption; its media will arrive on the subscriber connection.
    TrackAdded(RemoteTrack),
    /// A track was muted or unmuted by its publisher.
    TrackMuted {
        participant_sid: String,
        track_sid: String,
        muted: bool,
    },
    /// A track was unpublished (or its participant left): stop captioning it.
    TrackRemoved {
        participant_sid: String,
        track_sid: String,
    },
    /// A participant left (after the `TrackRemoved` of its tracks).
    ParticipantLeft {
        participant_sid: String,
        identity: String,
    },
    /// The server forwards media of this track.
    TrackSubscribed { track_sid: String },
    /// The server refused a subscription.
    SubscriptionFailed {
        track_sid: String,
        error: proto::SubscriptionError,
    },
    /// The server's offer for the subscriber connection: set it as remote description, answer
    /// with [`Session::local_answer`].
    RemoteOffer { sdp: String },
    /// Create the publisher connection: a webrtcbin with data channels `_reliable` (ordered)
    /// and `_lossy` (unordered, no retransmit), then offer it with
    /// [`Session::publisher_offer`].
    NegotiatePublisher,
    /// The server's answer to the publisher offer.
    PublisherAnswer { sdp: String },
    /// A remote ICE candidate for one of the two connections.
    RemoteCandidate {
        target: Target,
        candidate: IceCandidateInit,
    },
    /// The server has no more candidates for this connection.
    RemoteCandidatesDone { target: Target },
    /// The server pushed a fresh token: use it for the next connection.
    TokenRefreshed { token: String },
    /// Close everything and join again with a fresh session and a valid token.
    Rejoin { reason: RejoinReason },
    /// The session is over (server `leave` without reconnect, or [`Session::leave`]).
    Disconnected { reason: proto::DisconnectReason },
}

/// A message the session refuses. The session state is unchanged; the driver logs it.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Frame(#[from] signal::FrameError),
    #[error("`{0}` received before the join response")]
    NotJoined(&'static str),
    #[error("a second join response was received")]
    AlreadyJoined,
    #[error("the session is closed")]
    Closed,
    #[error("`{kind}` message is malformed: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("no subscriber offer is waiting for an answer")]
    NoPendingOffer,
    #[error("publisher answer received without a publisher offer")]
    UnexpectedAnswer,
}

/// Counters of what the session saw, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Server messages handled (refused ones included).
    pub received: u64,
    /// Messages with no known content (a newer server's message type): ignored.
    pub unknown: u64,
    /// Known messages the sidecar has no use for (speaker updates, quality...): ignored.
    pub ignored: u64,
    /// Messages refused with a [`SessionError`].
    pub refused: u64,
    /// Participant updates older than the state already known: ignored.
    pub stale: u64,
    /// Last round-trip time measured by ping, milliseconds.
    pub rtt_ms: i64,
}

#[derive(Debug, Clone)]
struct TrackState {
    sid: String,
    audio: bool,
    muted: bool,
}

#[derive(Debug, Clone)]
struct ParticipantState {
    sid: String,
    identity: String,
    name: String,
    version: u32,
    tracks: Vec<TrackState>,
    /// Audio tracks by sid with their full description (for [`Session::track`]).
    audio: Vec<RemoteTrack>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publisher {
    Idle,
    Requested,
    Offered,
    Answered,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Session {
    settings: SessionSettings,
    join: Option<JoinInfo>,
    participants: Vec<ParticipantState>,
    pending_offer: bool,
    /// `a=msid` of each m-section of the last subscriber offer.
    offer_msids: Vec<MediaStreamId>,
    last_offer_id: u32,
    publisher: Publisher,
    closed: bool,
    token: Option<String>,
    epoch: Instant,
    epoch_unix_ms: i64,
    next_ping: Option<Instant>,
    last_received: Instant,
    timed_out: bool,
    stats: SessionStats,
}

impl Session {
    /// A session that has not joined yet. `now` and `unix_ms` (milliseconds since the Unix
    /// epoch at `now`) anchor the ping timestamps; tests pass fixed values.
    pub fn new(settings: SessionSettings, now: Instant, unix_ms: i64) -> Self {
        Self {
            settings,
            join: None,
            participants: Vec::new(),
            pending_offer: false,
            offer_msids: Vec::new(),
            last_offer_id: 0,
            publisher: Publisher::Idle,
            closed: false,
            token: None,
            epoch: now,
            epoch_unix_ms: unix_ms,
            next_ping: None,
            last_received: now,
            timed_out: false,
            stats: SessionStats::default(),
        }
    }

    /// The join response, once received.
    pub fn join_info(&self) -> Option<&JoinInfo> {
        self.join.as_ref()
    }

    /// The last token pushed by the server, if any.
    pub fn refreshed_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// True after `leave` (either side) or a rejoin request.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The audio track `track_sid`, if it is published now.
    pub fn track(&self, track_sid: &str) -> Option<&RemoteTrack> {
        self.participants
            .iter()
            .flat_map(|p| p.audio.iter())
            .find(|t| t.track_sid == track_sid)
    }

    /// The audio track of an incoming media stream: `stream_id` and `track_id` are the two
    /// parts of its `a=msid:` line (webrtcbin pad's stream id / track id).
    pub fn track_for_msid(&self, stream_id: &str, track_id: &str) -> Option<&RemoteTrack> {
        let (participant_sid, track_sid) = parse_stream_id(stream_id, track_id)?;
        self.track(track_sid)
            .filter(|t| t.participant_sid == participant_sid)
    }

    /// The audio track carried by the subscriber connection's m-section `mid` (a webrtcbin
    /// transceiver's `mid`), from the msid of that section in the last server offer.
    pub fn track_for_mid(&self, mid: &str) -> Option<&RemoteTrack> {
        let m = self.offer_msids.iter().find(|m| m.mid == mid)?;
        self.track_for_msid(&m.stream_id, &m.track_id)
    }

    /// Every audio track published now, in the order they appeared.
    pub fn tracks(&self) -> impl Iterator<Item = &RemoteTrack> {
        self.participants.iter().flat_map(|p| p.audio.iter())
    }

    /// Identities of the remote participants in the room now.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.participants.iter().map(|p| p.identity.as_str())
    }

    /// When [`Session::tick`] must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let join = self.join.as_ref()?;
        if self.closed {
            return None;
        }
        let timeout =
            (!join.ping_timeout.is_zero()).then(|| self.last_received + join.ping_timeout);
        match (self.next_ping, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Keepalive: sends a ping when due; asks for a rejoin when the server has been silent
    /// for the ping timeout.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(join) = &self.join else {
            return out;
        };
        if self.closed {
            return out;
        }
        let (interval, timeout) = (join.ping_interval, join.ping_timeout);
        if !timeout.is_zero() && now >= self.last_received + timeout && !self.timed_out {
            self.timed_out = true;
            self.closed = true;
            out.push(Action::Rejoin {
                reason: RejoinReason::PingTimeout,
            });
            return out;
        }
        if let Some(due) = self.next_ping
            && now >= due
        {
            out.push(Action::Send(Req::PingReq(proto::Ping {
                timestamp: self.unix_ms(now),
                rtt: self.stats.rtt_ms,
            })));
            // Skip missed beats rather than sending a burst.
            let mut next = due + interval;
            while next <= now {
                next += interval;
            }
            self.next_ping = Some(next);
        }
        out
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms
            .saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }

    /// Decodes one binary frame and handles it.
    pub fn handle_frame(
        &mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<Vec<Action>, SessionError> {
        match signal::decode_response(frame) {
            Ok(response) => self.handle_response(response, now),
            Err(e) => {
                self.stats.received += 1;
                self.stats.refused += 1;
                Err(e.into())
            }
        }
    }

    /// Handles one server message.
    pub fn handle_response(
        &mut self,
        response: proto::SignalResponse,
        now: Instant,
    ) -> Result<Vec<Action>, SessionError> {
        self.stats.received += 1;
        self.last_received = now;
        let result = self.dispatch(response, now);
        if result.is_err() {
            self.stats.refused += 1;
        }
        result
    }

    fn dispatch(
        &mut self,
        response: proto::SignalResponse,
        now: Instant,
    ) -> Result<Vec<Action>, SessionError> {
        let Some(message) = response.message else {
            self.stats.unknown += 1;
            return Ok(Vec::new());
        };
        if self.closed {
            return Err(SessionError::Closed);
        }
        if self.join.is_none() && !matches!(message, Resp::Join(_)) {
            return Err(SessionError::NotJoined(message_kind(&message)));
        }
        match message {
            Resp::Join(join) => self.on_join(join, now),
            Resp::Offer(offer) => {
                if offer.r#type != "offer" {
                    return Err(SessionError::Malformed {
                        kind: "offer",
                        reason: format!("type {:?}, expected \"offer\"", offer.r#type),
                    });
                }
                self.pending_offer = true;
                self.last_offer_id = offer.id;
                self.offer_msids = sdp_msids(&offer.sdp);
                Ok(vec![Action::RemoteOffer { sdp: offer.sdp }])
            }
            Resp::Answer(answer) => {
                if self.publisher != Publisher::Offered {
                    return Err(SessionError::UnexpectedAnswer);
                }
                if answer.r#type != "answer" {
                    return Err(SessionError::Malformed {
                        kind: "answer",
                        reason: format!("type {:?}, expected \"answer\"", answer.r#type),
                    });
                }
                self.publisher = Publisher::Answered;
                Ok(vec![Action::PublisherAnswer { sdp: answer.sdp }])
            }
            Resp::Trickle(trickle) => {
                let target =
                    Target::from_proto(trickle.target).ok_or_else(|| SessionError::Malformed {
                        kind: "trickle",
                        reason: format!("unknown target {}", trickle.target),
                    })?;
                if trickle.candidate_init.is_empty() && trickle.r#final {
                    return Ok(vec![Action::RemoteCandidatesDone { target }]);
                }
                let candidate =
                    IceCandidateInit::from_json(&trickle.candidate_init).map_err(|e| {
                        SessionError::Malformed {
                            kind: "trickle",
                            reason: format!("candidate_init is not a candidate JSON: {e}"),
                        }
                    })?;
                let mut out = vec![Action::RemoteCandidate { target, candidate }];
                if trickle.r#final {
                    out.push(Action::RemoteCandidatesDone { target });
                }
                Ok(out)
            }
            Resp::Update(update) => Ok(self.on_participants(update.participants)),
            Resp::Leave(leave) => {
                self.closed = true;
                let reason = leave.reason();
                let reconnect = match proto::leave_request::Action::try_from(leave.action) {
                    Ok(proto::leave_request::Action::Resume)
                    | Ok(proto::leave_request::Action::Reconnect) => true,
                    // Servers older than protocol 13 only set `can_reconnect`.
                    Ok(proto::leave_request::Action::Disconnect) | Err(_) => leave.can_reconnect,
                };
                Ok(vec![if reconnect {
                    Action::Rejoin {
                        reason: RejoinReason::Server(reason),
                    }
                } else {
                    Action::Disconnected { reason }
                }])
            }
            Resp::RefreshToken(token) => {
                if token.is_empty() {
                    return Err(SessionError::Malformed {
                        kind: "refresh_token",
                        reason: "empty token".into(),
                    });
                }
                self.token = Some(token.clone());
                Ok(vec![Action::TokenRefreshed { token }])
            }
            Resp::Pong(last_ping) => {
                self.stats.rtt_ms = self.unix_ms(now).saturating_sub(last_ping).max(0);
                Ok(Vec::new())
            }
            Resp::PongResp(pong) => {
                self.stats.rtt_ms = self
                    .unix_ms(now)
                    .saturating_sub(pong.last_ping_timestamp)
                    .max(0);
                Ok(Vec::new())
            }
            Resp::TrackSubscribed(t) => Ok(vec![Action::TrackSubscribed {
                track_sid: t.track_sid,
            }]),
            Resp::SubscriptionResponse(r) => {
                let error = r.err();
                Ok(vec![Action::SubscriptionFailed {
                    track_sid: r.track_sid,
                    error,
                }])
            }
            // About the sidecar's own published tracks (it publishes none), or of no use to it.
            Resp::TrackPublished(_)
            | Resp::TrackUnpublished(_)
            | Resp::Mute(_)
            | Resp::SpeakersChanged(_)
            | Resp::RoomUpdate(_)
            | Resp::ConnectionQuality(_)
            | Resp::StreamStateUpdate(_)
            | Resp::SubscribedQualityUpdate(_)
            | Resp::SubscriptionPermissionUpdate(_)
            | Resp::Reconnect(_)
            | Resp::RequestResponse(_)
            | Resp::RoomMoved(_)
            | Resp::MediaSectionsRequirement(_)
            | Resp::SubscribedAudioCodecUpdate(_)
            | Resp::PublishDataTrackResponse(_)
            | Resp::UnpublishDataTrackResponse(_)
            | Resp::DataTrackSubscriberHandles(_)
            | Resp::StoreDataBlobResponse(_)
            | Resp::GetDataBlobResponse(_) => {
                self.stats.ignored += 1;
                Ok(Vec::new())
            }
        }
    }

    fn on_join(
        &mut self,
        join: proto::JoinResponse,
        now: Instant,
    ) -> Result<Vec<Action>, SessionError> {
        if self.join.is_some() {
            return Err(SessionError::AlreadyJoined);
        }
        let Some(local) = join.participant else {
            return Err(SessionError::Malformed {
                kind: "join",
                reason: "no local participant".into(),
            });
        };
        let room = join.room.unwrap_or_default();
        let permission = local
            .permission
            .clone()
            .unwrap_or(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish_data: true,
                hidden: true,
                ..Default::default()
            });
        let secs = |s: i32, default: Duration| {
            if s > 0 {
                Duration::from_secs(s as u64)
            } else {
                default
            }
        };
        let info = JoinInfo {
            room_name: room.name,
            room_sid: room.sid,
            participant_sid: local.sid,
            identity: local.identity,
            server_version: join.server_version,
            ice_servers: join
                .ice_servers
                .into_iter()
                .map(|s| IceServer {
                    urls: s.urls,
                    username: s.username,
                    credential: s.credential,
                })
                .collect(),
            subscriber_primary: join.subscriber_primary,
            ping_interval: secs(join.ping_interval, DEFAULT_PING_INTERVAL),
            ping_timeout: secs(join.ping_timeout, DEFAULT_PING_TIMEOUT),
            can_subscribe: permission.can_subscribe,
            can_publish_data: permission.can_publish_data,
            hidden: permission.hidden,
        };
        self.next_ping = Some(now + info.ping_interval);
        let can_publish_data = info.can_publish_data;
        self.join = Some(info.clone());
        let mut out = vec![Action::Joined(info)];
        out.extend(self.on_participants(join.other_participants));
        if self.settings.publish_captions && can_publish_data {
            self.publisher = Publisher::Requested;
            out.push(Action::NegotiatePublisher);
        }
        Ok(out)
    }

    /// Applies participant infos (each is the participant's full state) and returns the
    /// changes, then one subscription request for the new audio tracks.
    fn on_participants(&mut self, infos: Vec<proto::ParticipantInfo>) -> Vec<Action> {
        let mut out = Vec::new();
        let mut subscribe: Vec<proto::ParticipantTracks> = Vec::new();
        let (local_sid, local_identity) = match &self.join {
            Some(j) => (j.participant_sid.clone(), j.identity.clone()),
            None => (String::new(), String::new()),
        };
        for info in infos {
            if info.sid == local_sid || info.identity == local_identity {
                continue;
            }
            // Same identity with a new sid: the old participant is gone.
            if let Some(i) = self
                .participants
                .iter()
                .position(|p| p.identity == info.identity && p.sid != info.sid)
            {
                let old = self.participants.remove(i);
                leave_actions(&old, &mut out);
            }
            let known = self.participants.iter().position(|p| p.sid == info.sid);
            let disconnected = info.state == proto::participant_info::State::Disconnected as i32;
            match known {
                Some(i) if info.version < self.participants[i].version => {
                    self.stats.stale += 1;
                }
                Some(i) if disconnected => {
                    let old = self.participants.remove(i);
                    leave_actions(&old, &mut out);
                }
                Some(i) => {
                    let p = &mut self.participants[i];
                    p.version = info.version;
                    if p.name != info.name {
                        p.name = info.name.clone();
                        out.push(Action::ParticipantRenamed {
                            participant_sid: p.sid.clone(),
                            name: p.name.clone(),
                        });
                    }
                    let added = update_tracks(p, &info, &mut out);
                    if !added.is_empty() {
                        subscribe.push(proto::ParticipantTracks {
                            participant_sid: p.sid.clone(),
                            track_sids: added,
                        });
                    }
                }
                None if disconnected => {}
                None => {
                    let mut p = ParticipantState {
                        sid: info.sid.clone(),
                        identity: info.identity.clone(),
                        name: info.name.clone(),
                        version: info.version,
                        tracks: Vec::new(),
                        audio: Vec::new(),
                    };
                    out.push(Action::ParticipantJoined {
                        participant_sid: p.sid.clone(),
                        identity: p.identity.clone(),
                        name: p.name.clone(),
                    });
                    let added = update_tracks(&mut p, &info, &mut out);
                    if !added.is_empty() {
                        subscribe.push(proto::ParticipantTracks {
                            participant_sid: p.sid.clone(),
                            track_sids: added,
                        });
                    }
                    self.participants.push(p);
                }
            }
        }
        if !subscribe.is_empty() {
            out.push(Action::Send(Req::Subscription(proto::UpdateSubscription {
                track_sids: subscribe
                    .iter()
                    .flat_map(|p| p.track_sids.iter().cloned())
                    .collect(),
                subscribe: true,
                participant_tracks: subscribe,
            })));
        }
        out
    }

    /// The media side's answer to the last [`Action::RemoteOffer`].
    pub fn local_answer(&mut self, sdp: String) -> Result<Vec<Action>, SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        if !self.pending_offer {
            return Err(SessionError::NoPendingOffer);
        }
        self.pending_offer = false;
        Ok(vec![Action::Send(Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp,
            id: self.last_offer_id,
            mid_to_track_id: Default::default(),
        }))])
    }

    /// The media side's offer for the publisher connection (after
    /// [`Action::NegotiatePublisher`], or on renegotiation).
    pub fn publisher_offer(&mut self, sdp: String) -> Result<Vec<Action>, SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        if self.join.is_none() {
            return Err(SessionError::NotJoined("publisher offer"));
        }
        self.publisher = Publisher::Offered;
        Ok(vec![Action::Send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id: 0,
            mid_to_track_id: Default::default(),
        }))])
    }

    /// A local ICE candidate of one of the two connections (`None`: gathering is complete).
    pub fn local_candidate(
        &mut self,
        target: Target,
        candidate: Option<IceCandidateInit>,
    ) -> Result<Vec<Action>, SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let trickle = match candidate {
            Some(c) => proto::TrickleRequest {
                candidate_init: c.to_json(),
                target: target.to_proto() as i32,
                r#final: false,
            },
            None => proto::TrickleRequest {
                candidate_init: String::new(),
                target: target.to_proto() as i32,
                r#final: true,
            },
        };
        Ok(vec![Action::Send(Req::Trickle(trickle))])
    }

    /// Leaves the room.
    pub fn leave(&mut self) -> Vec<Action> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        vec![
            Action::Send(Req::Leave(proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::ClientInitiated as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                regions: None,
            })),
            Action::Disconnected {
                reason: proto::DisconnectReason::ClientInitiated,
            },
        ]
    }
}

fn leave_actions(p: &ParticipantState, out: &mut Vec<Action>) {
    for t in &p.audio {
        out.push(Action::TrackRemoved {
            participant_sid: p.sid.clone(),
            track_sid: t.track_sid.clone(),
        });
    }
    out.push(Action::ParticipantLeft {
        participant_sid: p.sid.clone(),
        identity: p.identity.clone(),
    });
}

/// Diffs the participant's tracks against `info`; returns the sids of new audio tracks.
fn update_tracks(
    p: &mut ParticipantState,
    info: &proto::ParticipantInfo,
    out: &mut Vec<Action>,
) -> Vec<String> {
    let mut added = Vec::new();
    // Removed tracks first.
    let (kept, removed): (Vec<TrackState>, Vec<TrackState>) = std::mem::take(&mut p.tracks)
        .into_iter()
        .partition(|t| info.tracks.iter().any(|n| n.sid == t.sid));
    for t in removed.into_iter().filter(|t| t.audio) {
        p.audio.retain(|a| a.track_sid != t.sid);
        out.push(Action::TrackRemoved {
            participant_sid: p.sid.clone(),
            track_sid: t.sid,
        });
    }
    p.tracks = kept;
    for n in &info.tracks {
        let audio = n.r#type == proto::TrackType::Audio as i32;
        match p.tracks.iter_mut().find(|t| t.sid == n.sid) {
            Some(t) => {
                if t.muted != n.muted {
                    t.muted = n.muted;
                    if t.audio {
                        if let Some(a) = p.audio.iter_mut().find(|a| a.track_sid == n.sid) {
                            a.muted = n.muted;
                        }
                        out.push(Action::TrackMuted {
                            participant_sid: p.sid.clone(),
                            track_sid: n.sid.clone(),
                            muted: n.muted,
                        });
                    }
                }
            }
            None => {
                p.tracks.push(TrackState {
                    sid: n.sid.clone(),
                    audio,
                    muted: n.muted,
                });
                if audio {
                    let track = RemoteTrack {
                        participant_sid: p.sid.clone(),
                        identity: p.identity.clone(),
                        name: p.name.clone(),
                        track_sid: n.sid.clone(),
                        track_name: n.name.clone(),
                        source: n.source(),
                        mime_type: n.mime_type.clone(),
                        mid: n.mid.clone(),
                        muted: n.muted,
                    };
                    p.audio.push(track.clone());
                    out.push(Action::TrackAdded(track));
                    added.push(n.sid.clone());
                }
            }
        }
    }
    // A display-name change reaches the tracks' labels.
    for a in &mut p.audio {
        a.name = p.name.clone();
    }
    added
}

/// The media stream identification of one m-section of an SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStreamId {
    /// `a=mid:` value.
    pub mid: String,
    /// Media kind from the `m=` line (`audio`, `video`, `application`).
    pub kind: String,
    /// First part of `a=msid:` (the stream id).
    pub stream_id: String,
    /// Second part of `a=msid:` (the track id); empty if absent.
    pub track_id: String,
}

/// The `a=msid:<stream> <track>` of every m-section of `sdp` that has a mid and an msid
/// (also the older per-SSRC form `a=ssrc:<n> msid:<stream> <track>`).
pub fn sdp_msids(sdp: &str) -> Vec<MediaStreamId> {
    /// The m-section being read.
    struct Section {
        kind: String,
        mid: Option<String>,
        msid: Option<(String, String)>,
    }
    fn finish(section: Option<Section>, out: &mut Vec<MediaStreamId>) {
        if let Some(Section {
            kind,
            mid: Some(mid),
            msid: Some((stream_id, track_id)),
        }) = section
        {
            out.push(MediaStreamId {
                mid,
                kind,
                stream_id,
                track_id,
            });
        }
    }
    let mut out = Vec::new();
    let mut section: Option<Section> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            finish(section.take(), &mut out);
            section = Some(Section {
                kind: m.split(' ').next().unwrap_or_default().to_string(),
                mid: None,
                msid: None,
            });
        } else if let Some(sec) = section.as_mut() {
            if let Some(v) = line.strip_prefix("a=mid:") {
                sec.mid = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("a=msid:") {
                sec.msid = Some(split_msid(v));
            } else if let Some(v) = line.strip_prefix("a=ssrc:")
                && sec.msid.is_none()
                && let Some((_, rest)) = v.split_once(" msid:")
            {
                sec.msid = Some(split_msid(rest));
            }
        }
    }
    finish(section, &mut out);
    out
}

fn split_msid(v: &str) -> (String, String) {
    let mut parts = v.split_whitespace();
    let stream = parts.next().unwrap_or_default().to_string();
    let track = parts.next().unwrap_or_default().to_string();
    (stream, track)
}

/// Splits a LiveKit subscriber stream id `participant_sid|track_sid`. Servers that send a bare
/// stream id leave the track sid in the msid track id (`TR_...`), which is then used.
pub fn parse_stream_id<'a>(stream_id: &'a str, track_id: &'a str) -> Option<(&'a str, &'a str)> {
    let (participant, rest) = stream_id.split_once('|')?;
    if participant.is_empty() || rest.contains('|') {
        return None;
    }
    if rest.starts_with("TR") {
        Some((participant, rest))
    } else if track_id.starts_with("TR") {
        Some((participant, track_id))
    } else {
        None
    }
}

fn message_kind(m: &Resp) -> &'static str {
    match m {
        Resp::Join(_) => "join",
        Resp::Answer(_) => "answer",
        Resp::Offer(_) => "offer",
        Resp::Trickle(_) => "trickle",
        Resp::Update(_) => "update",
        Resp::TrackPublished(_) => "track_published",
        Resp::Leave(_) => "leave",
        Resp::Mute(_) => "mute",
        Resp::SpeakersChanged(_) => "speakers_changed",
        Resp::RoomUpdate(_) => "room_update",
        Resp::ConnectionQuality(_) => "connection_quality",
        Resp::StreamStateUpdate(_) => "stream_state_update",
        Resp::SubscribedQualityUpdate(_) => "subscribed_quality_update",
        Resp::SubscriptionPermissionUpdate(_) => "subscription_permission_update",
        Resp::RefreshToken(_) => "refresh_token",
        Resp::TrackUnpublished(_) => "track_unpublished",
        Resp::Pong(_) => "pong",
        Resp::Reconnect(_) => "reconnect",
        Resp::PongResp(_) => "pong_resp",
        Resp::SubscriptionResponse(_) => "subscription_response",
        Resp::RequestResponse(_) => "request_response",
        Resp::TrackSubscribed(_) => "track_subscribed",
        Resp::RoomMoved(_) => "room_moved",
        Resp::MediaSectionsRequirement(_) => "media_sections_requirement",
        Resp::SubscribedAudioCodecUpdate(_) => "subscribed_audio_codec_update",
        Resp::PublishDataTrackResponse(_) => "publish_data_track_response",
        Resp::UnpublishDataTrackResponse(_) => "unpublish_data_track_response",
        Resp::DataTrackSubscriberHandles(_) => "data_track_subscriber_handles",
        Resp::StoreDataBlobResponse(_) => "store_data_blob_response",
        Resp::GetDataBlobResponse(_) => "get_data_blob_response",
    }
}
