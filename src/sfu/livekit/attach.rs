//! The LiveKit attachment of a room: signalling ([`Session`]) driven over the WebSocket, the
//! subscriber connection answered by a receive-only webrtcbin of the room's [`RoomMedia`], and
//! the publisher connection (data channels `_reliable` / `_lossy`) carrying the room's captions
//! back into the LiveKit room.
//!
//! # Tasks and threads
//! * The signalling loop ([`run`]) is one tokio task per room. It owns the [`Session`] and the
//!   socket, and never blocks: every webrtcbin operation is a job for the session's *media
//!   worker*, one blocking thread that owns the peers and runs jobs in order (answer, trickled
//!   candidates, mute, unmute, caption sends). The worker reports back (a reply) on a bounded
//!   channel. The job queue is bounded ([`MEDIA_JOBS`]): a media job that finds it full ends the
//!   session (rejoin), as the media side is then wedged; caption sends are only queued while
//!   there is room.
//! * Remote audio pads are labelled from the subscriber offer: the pad's transceiver `mid` →
//!   the m-section's `a=msid` (`participant_sid|track_sid`) → the participant
//!   ([`Session::track_for_mid`]). Each participant's audio track is one soustitre track
//!   ([`track_id`]: `lk-<identity>`, stable across rejoins), captioned under the participant's
//!   identity and display name.
//! * Captions: one task subscribes to the room's [`Hub`] (as a WebSocket client would) and
//!   feeds a [`CaptionQueue`]; the signalling loop drains it into packets
//!   ([`CaptionPublisher`]) while the `_reliable` channel is open. Captions of tracks that are
//!   not LiveKit participants (configured sources of the same room) are not published.
//!
//! # Faults
//! * Socket closed, ping timeout, server `leave` with reconnect: every peer is closed (each
//!   track's worker closes its open segment as a final), then a new session joins after the
//!   [`RejoinBackoff`] delay (1 s doubling to 30 s, reset by a join) with a freshly minted
//!   token; the time without a connection is reported to [`RoomSink::outage`] (`gap` events).
//! * Server `leave` without reconnect (room deleted, sidecar removed...): the attachment stops
//!   (status `stopped` with the reason).
//! * A track muted or unpublished, a participant leaving: the track's audio stream ends (its
//!   worker closes the open segment as a final with what was heard; nothing is invented over
//!   the silence); an unmute taps the same m-section again, on the same soustitre track.
//! * Caption overflow ([`CaptionQueue`], [`CAPTION_QUEUE`] entries): a newer partial replaces a
//!   queued partial of the same segment; when full, the oldest partial is dropped; a final is
//!   only dropped when the queue holds nothing but finals — logged as an error and counted
//!   ([`CaptionStats::finals_dropped`]). While the data channel has more than [`MAX_BUFFERED`]
//!   bytes waiting, nothing more is handed to it (the queue absorbs, then overflows as above).
//!
//! # Latency model
//! A caption event reaches the data channel one hub hop (in-process, microseconds) plus one
//! signalling-loop turn after the captioner emits it, then one SCTP message to the SFU. Audio:
//! the latency of [`crate::sfu::media`]. Joining: one WebSocket round trip plus the answer (ICE
//! gathering on host candidates: milliseconds, at most [`crate::sfu::media::GATHER_TIMEOUT`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::config::LiveKitSettings;
use super::session::{Action, Session, SessionSettings};
use super::signal::{self, IceCandidateInit, Target};
use super::transcription::{CaptionPublisher, Speaker, encode_packet};
use super::transport::{self, RejoinBackoff};
use crate::captions::CaptionEvent;
use crate::hub::{CloseReason, Delivery, Hub, SubscriberOptions};
use crate::protocol::ServerMessage;
use crate::sfu::data::{ChannelSpec, DataPeer};
use crate::sfu::media::{self, IceServers, PeerError, RoomMedia, SubscriberPeer};
use crate::sfu::{AttachState, AttachStatus, CaptionStats, RemoteParticipant, RoomSink};

/// Label of the reliable, ordered data channel (captions travel on it).
pub const RELIABLE: &str = "_reliable";
/// Label of the lossy data channel (created because LiveKit clients expect it; unused).
pub const LOSSY: &str = "_lossy";
/// Caption events waiting for the data channel.
pub const CAPTION_QUEUE: usize = 256;
/// Media jobs waiting for the media worker.
pub const MEDIA_JOBS: usize = 256;
/// Bytes waiting in the `_reliable` channel above which no more captions are handed to it.
pub const MAX_BUFFERED: u64 = 1 << 20;
/// Caption events turned into packets per signalling-loop turn.
const DRAIN_BATCH: usize = 32;
/// How often a non-empty caption queue is looked at while the channel is congested or closed.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// Replies of the media worker waiting for the signalling loop.
const REPLIES: usize = 64;
/// Longest wait for the media worker to close its peers when a session ends.
const WORKER_STOP: Duration = Duration::from_secs(10);

/// Why an attachment session failed (it is joined again).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
    #[error(transparent)]
    Url(#[from] signal::UrlError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("media: {0}")]
    Media(String),
}

/// The soustitre track of a participant's audio track: `lk-<identity>` for the microphone,
/// `lk-<identity>-screen` for screen-share audio; characters outside `[A-Za-z0-9._-]` become
/// `_`, and the id is cut to [`crate::config::MAX_ID_LEN`].
pub fn track_id(identity: &str, source: proto::TrackSource) -> String {
    let suffix = match source {
        proto::TrackSource::ScreenShareAudio => "-screen",
        _ => "",
    };
    let room = crate::config::MAX_ID_LEN - 3 - suffix.len();
    let clean: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!("lk-{clean}{suffix}")
}

fn participant(track: &super::session::RemoteTrack) -> RemoteParticipant {
    RemoteParticipant {
        track: track_id(&track.identity, track.source),
        identity: track.identity.clone(),
        name: if track.name.trim().is_empty() {
            track.identity.clone()
        } else {
            track.name.clone()
        },
    }
}

/// A caption waiting to be published, with whose speech it is.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCaption {
    pub event: CaptionEvent,
    pub identity: String,
    pub track_sid: String,
}

/// The bounded queue between the room's captions and the data channel (overflow policy in the
/// module documentation).
#[derive(Debug)]
pub struct CaptionQueue {
    capacity: usize,
    items: Mutex<VecDeque<PendingCaption>>,
    stats: Mutex<CaptionStats>,
    notify: Notify,
}

impl CaptionQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            items: Mutex::new(VecDeque::new()),
            stats: Mutex::new(CaptionStats::default()),
            notify: Notify::new(),
        }
    }

    /// Queues a caption, applying the overflow policy.
    pub fn push(&self, caption: PendingCaption) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let before = items.len();
        items.retain(|o| {
            o.event.is_final()
                || o.event.track != caption.event.track
                || o.event.segment_id != caption.event.segment_id
        });
        stats.partials_superseded += (before - items.len()) as u64;
        if items.len() >= self.capacity {
            if let Some(i) = items.iter().position(|o| !o.event.is_final()) {
                items.remove(i);
                stats.partials_dropped += 1;
            } else if !caption.event.is_final() {
                stats.partials_dropped += 1;
                return;
            } else if let Some(old) = items.pop_front() {
                stats.finals_dropped += 1;
                tracing::error!(
                    track = %old.event.track,
                    segment = %old.event.segment_id,
                    "LiveKit caption queue full of finals: oldest final not published ({} so far)",
                    stats.finals_dropped
                );
            }
        }
        items.push_back(caption);
        drop(stats);
        drop(items);
        self.notify.notify_one();
    }

    /// The oldest queued caption.
    pub fn pop(&self) -> Option<PendingCaption> {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Captions queued.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptionStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn count(&self, f: impl FnOnce(&mut CaptionStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// soustitre track → (identity, track sid) of the LiveKit track it captions. Entries stay
/// after a track ends: the final flushed at the end still needs its speaker.
type Speakers = Arc<Mutex<HashMap<String, (String, String)>>>;

/// Work for the media worker (in order).
enum Job {
    /// The ICE servers of the join, for the peers made from now on.
    Ice(IceServers),
    Offer(String),
    Candidate {
        target: Target,
        mline: u32,
        candidate: String,
    },
    OpenPublisher,
    PublisherAnswer(String),
    EndTrack(String),
    ResumeTrack(String),
    Send(Vec<Vec<u8>>),
}

/// What the media worker reports.
enum Reply {
    Answer(String),
    PublisherOffer(String, watch::Receiver<bool>),
    Flowing(media::RemoteTrack),
    Failed(String),
}

/// Runs the attachment until `stop` turns true: joins, captions, publishes captions from `hub`
/// (when given), and joins again after any failure. The room pipeline (and so the room
/// timeline) lives as long as this call.
pub async fn run(
    settings: LiveKitSettings,
    media: Arc<RoomMedia>,
    sink: Arc<dyn RoomSink>,
    hub: Option<Hub>,
    mut stop: watch::Receiver<bool>,
) {
    let queue = Arc::new(CaptionQueue::new(CAPTION_QUEUE));
    let speakers: Speakers = Arc::default();
    let reader = hub.map(|hub| {
        tokio::spawn(read_captions(
            hub,
            Arc::clone(&speakers),
            Arc::clone(&queue),
            stop.clone(),
        ))
    });
    let publish = reader.is_some();
    let mut ctx = Ctx {
        settings,
        media,
        sink,
        queue,
        speakers,
        status: AttachStatus::default(),
        down_since: None,
        backoff: RejoinBackoff::default(),
        refreshed_token: None,
        publish,
    };
    loop {
        ctx.report();
        let end = ctx.session(&mut stop).await;
        ctx.status.participants.clear();
        ctx.sink.participants(&[]);
        match end {
            Ok(End::Stopped) => break,
            Ok(End::Over(reason)) => {
                tracing::warn!(room = %ctx.settings.minter.room(), "LiveKit ended the session: {reason}");
                ctx.status.error = Some(format!("the server ended the session: {reason}"));
                break;
            }
            Ok(End::Rejoin(why)) => {
                tracing::warn!(room = %ctx.settings.minter.room(), "LiveKit connection lost: {why}; joining again");
                ctx.status.error = Some(why);
            }
            Err(e) => {
                tracing::warn!(room = %ctx.settings.minter.room(), "LiveKit attachment interrupted: {e}");
                ctx.status.error = Some(e.to_string());
            }
        }
        ctx.status.state = AttachState::Reconnecting;
        ctx.down_since.get_or_insert_with(|| ctx.media.now_s());
        ctx.report();
        let delay = ctx.backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::sfu::stopped(&mut stop) => break,
        }
    }
    if let Some(r) = reader {
        r.abort();
    }
    ctx.status.state = AttachState::Stopped;
    ctx.report();
}

/// Subscribes to the room's events and queues every caption of a LiveKit participant's track.
async fn read_captions(
    hub: Hub,
    speakers: Speakers,
    queue: Arc<CaptionQueue>,
    mut stop: watch::Receiver<bool>,
) {
    let mut options = SubscriberOptions::default();
    loop {
        let mut sub = match hub.subscribe(options.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(room = %hub.room(), "captions not published to LiveKit: {e}");
                return;
            }
        };
        loop {
            let delivery = tokio::select! {
                d = sub.next() => d,
                _ = crate::sfu::stopped(&mut stop) => return,
            };
            match delivery {
                Delivery::Message(frame) => {
                    let ServerMessage::Caption(c) = frame.message() else {
                        continue;
                    };
                    let who = speakers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&c.event.track)
                        .cloned();
                    match who {
                        Some((identity, track_sid)) => queue.push(PendingCaption {
                            event: c.event.clone(),
                            identity,
                            track_sid,
                        }),
                        None => queue.count(|s| s.unattributed += 1),
                    }
                }
                Delivery::Closed(CloseReason::SlowConsumer { resume_from }) => {
                    tracing::warn!(room = %hub.room(), "caption reader fell behind; resuming from {resume_from}");
                    options.resume_from = Some(resume_from);
                    break;
                }
                Delivery::Closed(CloseReason::GoingAway) => return,
            }
        }
    }
}

/// How a session ended.
enum End {
    Stopped,
    /// Join again (why).
    Rejoin(String),
    /// The server ended the session for good.
    Over(String),
}

struct Ctx {
    settings: LiveKitSettings,
    media: Arc<RoomMedia>,
    sink: Arc<dyn RoomSink>,
    queue: Arc<CaptionQueue>,
    speakers: Speakers,
    status: AttachStatus,
    down_since: Option<f64>,
    backoff: RejoinBackoff,
    refreshed_token: Option<String>,
    publish: bool,
}

/// State of one session (one signalling connection and its peers).
struct Live {
    session: Session,
    jobs: crossbeam_channel::Sender<Job>,
    /// track sid → subscriber mid, for tracks whose audio flowed.
    mids: HashMap<String, String>,
    publisher: Option<CaptionPublisher>,
    open: Option<watch::Receiver<bool>>,
    buffered: Arc<std::sync::atomic::AtomicU64>,
    /// A subscriber offer is being answered by the media worker.
    answering: bool,
    /// The newest offer received meanwhile (it supersedes the one being answered).
    next_offer: Option<String>,
}

impl Ctx {
    fn report(&mut self) {
        self.status.captions = self.publish.then(|| self.queue.stats());
        self.sink.status(&self.status);
    }

    fn token(&self) -> Result<String, AttachError> {
        match self.settings.minter.mint() {
            Ok(t) => Ok(t.jwt),
            Err(e) => match &self.refreshed_token {
                // the server's last pushed token, if minting ever fails
                Some(t) => {
                    tracing::warn!("cannot mint a LiveKit token ({e}); using the server's");
                    Ok(t.clone())
                }
                None => Err(e.into()),
            },
        }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Result<End, AttachError> {
        let jwt = self.token()?;
        let url = signal::signal_url(&self.settings.url, &jwt, &self.settings.url_options)?;
        let mut socket = transport::connect(&url).await?;
        let unix_ms = unix_ms();
        let session = Session::new(
            SessionSettings {
                publish_captions: self.publish,
            },
            now(),
            unix_ms,
        );
        let (jobs, jobs_rx) = crossbeam_channel::bounded(MEDIA_JOBS);
        let (replies_tx, mut replies) = mpsc::channel(REPLIES);
        let buffered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let worker = {
            let (media, queue, buffered) = (
                Arc::clone(&self.media),
                Arc::clone(&self.queue),
                Arc::clone(&buffered),
            );
            std::thread::Builder::new()
                .name("livekit-media".into())
                .spawn(move || media_worker(&media, &jobs_rx, &replies_tx, &queue, &buffered))
                .map_err(|e| AttachError::Media(format!("cannot start the media worker: {e}")))?
        };
        let mut live = Live {
            session,
            jobs,
            mids: HashMap::new(),
            publisher: None,
            open: None,
            buffered,
            answering: false,
            next_offer: None,
        };
        let mut drain = tokio::time::interval(DRAIN_TICK);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let result = loop {
            let deadline = live.session.next_deadline();
            let wake = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            let is_open = live.open.as_ref().is_some_and(|o| *o.borrow());
            let open_changed = async {
                match live.open.as_mut() {
                    Some(o) => {
                        if o.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let actions = tokio::select! {
                _ = crate::sfu::stopped(stop) => {
                    let actions = live.session.leave();
                    for a in actions {
                        if let Action::Send(req) = a {
                            let _ = socket.send(Message::Binary(signal::encode_request(req).into())).await;
                        }
                    }
                    let _ = socket.close(None).await;
                    break Ok(End::Stopped);
                }
                frame = socket.next() => match frame {
                    None | Some(Ok(Message::Close(_))) => break Ok(End::Rejoin("signalling socket closed".into())),
                    Some(Err(e)) => break Ok(End::Rejoin(format!("signalling socket failed: {e}"))),
                    Some(Ok(Message::Binary(bytes))) => match live.session.handle_frame(&bytes, now()) {
                        Ok(actions) => actions,
                        Err(e) => {
                            tracing::warn!(error = %e, "LiveKit signalling message refused");
                            Vec::new()
                        }
                    },
                    Some(Ok(_)) => {
                        // pings are answered by tungstenite on the next write or flush
                        let _ = socket.flush().await;
                        Vec::new()
                    }
                },
                () = wake => live.session.tick(now()),
                reply = replies.recv() => match reply {
                    Some(reply) => match self.on_reply(&mut live, reply) {
                        Ok(actions) => actions,
                        Err(why) => break Ok(End::Rejoin(why)),
                    },
                    None => break Ok(End::Rejoin("the media worker stopped".into())),
                },
                () = open_changed => Vec::new(),
                () = self.queue.notify.notified(), if is_open => {
                    self.drain(&mut live);
                    Vec::new()
                }
                _ = drain.tick(), if is_open && !self.queue.is_empty() => {
                    self.drain(&mut live);
                    Vec::new()
                }
            };
            let mut end = None;
            for action in actions {
                match action {
                    Action::Send(req) => {
                        if let Err(e) = socket
                            .send(Message::Binary(signal::encode_request(req).into()))
                            .await
                        {
                            end = Some(End::Rejoin(format!("signalling socket failed: {e}")));
                            break;
                        }
                    }
                    other => {
                        if let Some(e) = self.on_action(&mut live, other) {
                            end = Some(e);
                            break;
                        }
                    }
                }
            }
            if let Some(end) = end {
                let _ = socket.close(None).await;
                break Ok(end);
            }
        };
        // Closing the job queue makes the worker drop the peers: every track's stream ends and
        // its worker flushes what was heard. The replies are no longer read: closing them keeps
        // the worker (and the forwarders) from waiting on a full channel.
        drop(live);
        drop(replies);
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + WORKER_STOP;
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(20));
            }
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                tracing::warn!("the LiveKit media worker did not stop in {WORKER_STOP:?}");
            }
        })
        .await;
        result
    }

    /// Queues a media job; a full queue means the media side is wedged: the session ends.
    fn job(live: &Live, job: Job) -> Result<(), String> {
        live.jobs.try_send(job).map_err(|_| {
            tracing::error!("LiveKit media worker not keeping up ({MEDIA_JOBS} jobs queued)");
            "the media worker is not keeping up".to_string()
        })
    }

    fn on_action(&mut self, live: &mut Live, action: Action) -> Option<End> {
        let queued = match action {
            Action::Send(_) => Ok(()),
            Action::Joined(info) => {
                tracing::info!(room = %info.room_name, sid = %info.participant_sid, server = %info.server_version, "LiveKit: joined");
                if let Err(e) = Self::job(live, Job::Ice(ice_servers(&info.ice_servers))) {
                    tracing::warn!("the join's ICE servers are not applied: {e}");
                }
                self.backoff.joined();
                self.status.state = AttachState::Connected;
                self.status.connections += 1;
                self.status.error = None;
                if let Some(from) = self.down_since.take() {
                    self.sink.outage(from, self.media.now_s());
                }
                if self.publish {
                    match CaptionPublisher::for_join(&info, self.settings.publish.clone()) {
                        Ok(p) => live.publisher = Some(p),
                        Err(e) => tracing::error!("captions cannot be published: {e}"),
                    }
                }
                self.report();
                Ok(())
            }
            Action::ParticipantJoined { .. }
            | Action::ParticipantRenamed { .. }
            | Action::TrackAdded(_) => {
                self.publish_list(live);
                Ok(())
            }
            Action::ParticipantLeft { identity, .. } => {
                tracing::info!(identity, "LiveKit: participant left");
                self.publish_list(live);
                Ok(())
            }
            Action::TrackRemoved { track_sid, .. } => {
                self.publish_list(live);
                match live.mids.remove(&track_sid) {
                    Some(mid) => Self::job(live, Job::EndTrack(mid)),
                    None => Ok(()),
                }
            }
            Action::TrackMuted {
                track_sid, muted, ..
            } => {
                tracing::info!(track_sid, muted, "LiveKit: track mute changed");
                match live.mids.get(&track_sid) {
                    Some(mid) if muted => Self::job(live, Job::EndTrack(mid.clone())),
                    Some(mid) => Self::job(live, Job::ResumeTrack(mid.clone())),
                    None => Ok(()),
                }
            }
            Action::TrackSubscribed { track_sid } => {
                tracing::debug!(track_sid, "LiveKit: subscribed");
                Ok(())
            }
            Action::SubscriptionFailed { track_sid, error } => {
                tracing::warn!(track_sid, ?error, "LiveKit: subscription refused");
                Ok(())
            }
            Action::RemoteOffer { sdp } if live.answering => {
                // answered once the current one is done (the session expects the newest)
                live.next_offer = Some(sdp);
                Ok(())
            }
            Action::RemoteOffer { sdp } => {
                live.answering = true;
                Self::job(live, Job::Offer(sdp))
            }
            Action::NegotiatePublisher => Self::job(live, Job::OpenPublisher),
            Action::PublisherAnswer { sdp } => Self::job(live, Job::PublisherAnswer(sdp)),
            Action::RemoteCandidate { target, candidate } => Self::job(
                live,
                Job::Candidate {
                    target,
                    mline: candidate.sdp_m_line_index.unwrap_or(0),
                    candidate: candidate.candidate,
                },
            ),
            Action::RemoteCandidatesDone { .. } => Ok(()),
            Action::TokenRefreshed { token } => {
                tracing::debug!("LiveKit: token refreshed by the server");
                self.refreshed_token = Some(token);
                Ok(())
            }
            Action::Rejoin { reason } => return Some(End::Rejoin(format!("{reason:?}"))),
            Action::Disconnected { reason } => return Some(End::Over(format!("{reason:?}"))),
        };
        queued.err().map(End::Rejoin)
    }

    fn on_reply(&mut self, live: &mut Live, reply: Reply) -> Result<Vec<Action>, String> {
        let refused = |e: super::session::SessionError| {
            tracing::warn!(error = %e, "LiveKit: the session refused a local description");
            Vec::new()
        };
        match reply {
            Reply::Answer(sdp) => {
                live.answering = false;
                if let Some(next) = live.next_offer.take() {
                    tracing::debug!("LiveKit: a newer subscriber offer superseded this answer");
                    live.answering = true;
                    Self::job(live, Job::Offer(next))?;
                    return Ok(Vec::new());
                }
                let candidates = sdp_candidates(&sdp);
                let mut out = live.session.local_answer(sdp).unwrap_or_else(refused);
                for c in candidates {
                    out.extend(
                        live.session
                            .local_candidate(Target::Subscriber, Some(c))
                            .unwrap_or_default(),
                    );
                }
                Ok(out)
            }
            Reply::PublisherOffer(sdp, open) => {
                live.open = Some(open);
                let candidates = sdp_candidates(&sdp);
                let mut out = live.session.publisher_offer(sdp).unwrap_or_else(refused);
                for c in candidates {
                    out.extend(
                        live.session
                            .local_candidate(Target::Publisher, Some(c))
                            .unwrap_or_default(),
                    );
                }
                Ok(out)
            }
            Reply::Flowing(track) => {
                match live.session.track_for_mid(&track.mid).cloned() {
                    Some(remote) => {
                        let p = participant(&remote);
                        tracing::info!(track = %p.track, identity = %p.identity, name = %p.name, mid = %track.mid, "LiveKit: audio flowing");
                        live.mids
                            .insert(remote.track_sid.clone(), track.mid.clone());
                        self.speakers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(p.track.clone(), (remote.identity.clone(), remote.track_sid));
                        self.sink.audio(&p, track.source);
                        if remote.muted {
                            // muted before its audio flowed: end it until unmuted
                            Self::job(live, Job::EndTrack(track.mid))?;
                        }
                    }
                    None => tracing::warn!(
                        mid = %track.mid,
                        "LiveKit: audio on an m-section whose msid names no known track; ignored"
                    ),
                }
                Ok(Vec::new())
            }
            Reply::Failed(why) => Err(why),
        }
    }

    fn publish_list(&mut self, live: &Live) {
        let mut list: Vec<RemoteParticipant> = live.session.tracks().map(participant).collect();
        list.sort_by(|a, b| a.track.cmp(&b.track));
        list.dedup_by(|a, b| a.track == b.track);
        if list != self.status.participants {
            // status first: whoever sees the room's participant list finds the status updated
            self.status.participants = list.clone();
            self.report();
            self.sink.participants(&list);
        }
    }

    /// Turns queued captions into packets for the `_reliable` channel, while it has room.
    fn drain(&mut self, live: &mut Live) {
        let Some(publisher) = live.publisher.as_mut() else {
            return;
        };
        let mut batch = Vec::new();
        let mut captions = 0;
        while captions < DRAIN_BATCH
            && live.buffered.load(std::sync::atomic::Ordering::Relaxed) <= MAX_BUFFERED
            && live.jobs.len() < MEDIA_JOBS / 2
        {
            let Some(c) = self.queue.pop() else { break };
            let speaker = Speaker {
                identity: &c.identity,
                track_sid: &c.track_sid,
            };
            for packet in publisher.packets(&c.event, speaker, &[], unix_ms()) {
                batch.push(encode_packet(&packet));
            }
            captions += 1;
        }
        if batch.is_empty() {
            return;
        }
        self.queue.count(|s| s.captions_sent += captions as u64);
        if live.jobs.try_send(Job::Send(batch)).is_err() {
            // checked above: the worker alone takes from the queue, so it cannot fill meanwhile
            tracing::error!("LiveKit caption batch not queued");
        }
        let stats = self.queue.stats();
        if stats.finals_dropped > 0 || stats.send_errors > 0 {
            self.report();
        }
    }
}

/// The join's ICE servers as webrtcbin takes them: the first STUN URL as `stun://host:port`,
/// every TURN URL with the server's credentials as `turn(s)://user:password@host:port[?query]`
/// (user and password percent-encoded). URLs of other schemes, and TURN without credentials,
/// are skipped.
fn ice_servers(servers: &[super::session::IceServer]) -> IceServers {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut out = IceServers::default();
    for server in servers {
        for url in &server.urls {
            let Some((scheme, rest)) = url.split_once(':') else {
                continue;
            };
            let rest = rest.trim_start_matches("//");
            if rest.is_empty() {
                continue;
            }
            match scheme.to_ascii_lowercase().as_str() {
                "stun" if out.stun.is_none() => {
                    // webrtcbin's STUN server has no query part
                    let host = rest.split('?').next().unwrap_or(rest);
                    out.stun = Some(format!("stun://{host}"));
                }
                s @ ("turn" | "turns") if !server.username.is_empty() => out.turn.push(format!(
                    "{s}://{}:{}@{rest}",
                    enc(&server.username),
                    enc(&server.credential)
                )),
                _ => {}
            }
        }
    }
    out
}

/// The media worker: runs jobs in order until the job queue closes, then drops the peers.
fn media_worker(
    media: &RoomMedia,
    jobs: &crossbeam_channel::Receiver<Job>,
    replies: &mpsc::Sender<Reply>,
    queue: &CaptionQueue,
    buffered: &std::sync::atomic::AtomicU64,
) {
    let mut subscriber: Option<SubscriberPeer> = None;
    let mut publisher: Option<DataPeer> = None;
    let mut ice = IceServers::default();
    let reply = |r: Reply| {
        let _ = replies.blocking_send(r);
    };
    for job in jobs {
        let result: Result<(), PeerError> = (|| {
            match job {
                Job::Ice(servers) => ice = servers,
                Job::Offer(sdp) => match &subscriber {
                    Some(peer) => reply(Reply::Answer(peer.renegotiate(&sdp)?)),
                    None => {
                        let (peer, answer) = media.answer("livekit-subscriber", &sdp, &ice)?;
                        let replies = replies.clone();
                        peer.forward(move |track| {
                            let _ = replies.blocking_send(Reply::Flowing(track));
                        });
                        subscriber = Some(peer);
                        reply(Reply::Answer(answer));
                    }
                },
                Job::Candidate {
                    target,
                    mline,
                    candidate,
                } => match target {
                    Target::Subscriber => {
                        if let Some(p) = &subscriber {
                            p.add_candidate(mline, &candidate);
                        }
                    }
                    Target::Publisher => {
                        if let Some(p) = &publisher {
                            p.add_candidate(mline, &candidate);
                        }
                    }
                },
                Job::OpenPublisher => {
                    let channels = [
                        ChannelSpec {
                            label: RELIABLE.into(),
                            ordered: true,
                            max_retransmits: None,
                        },
                        ChannelSpec {
                            label: LOSSY.into(),
                            ordered: false,
                            max_retransmits: Some(0),
                        },
                    ];
                    let (peer, offer, open) =
                        media.data_peer_with("livekit-publisher", &channels, &ice)?;
                    publisher = Some(peer);
                    reply(Reply::PublisherOffer(offer, open));
                }
                Job::PublisherAnswer(sdp) => {
                    if let Some(p) = &publisher {
                        p.set_answer(&sdp)?;
                    }
                }
                Job::EndTrack(mid) => {
                    if let Some(p) = &subscriber {
                        let ended = p.end_track(&mid)?;
                        tracing::info!(mid, ended, "LiveKit: track audio ended");
                    }
                }
                Job::ResumeTrack(mid) => {
                    if let Some(p) = &subscriber
                        && let Some(track) = p.resume_track(&mid)?
                    {
                        reply(Reply::Flowing(track));
                    }
                }
                Job::Send(packets) => {
                    let Some(p) = &publisher else {
                        queue.count(|s| s.send_errors += packets.len() as u64);
                        return Ok(());
                    };
                    let n = packets.len() as u64;
                    let mut failed = 0;
                    for bytes in packets {
                        if let Err(e) = p.send(0, bytes) {
                            failed += 1;
                            tracing::error!(peer = %p.label(), "caption packet not sent: {e}");
                        }
                    }
                    buffered.store(p.buffered(0), std::sync::atomic::Ordering::Relaxed);
                    queue.count(|s| {
                        s.packets_sent += n - failed;
                        s.send_errors += failed;
                    });
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!("LiveKit media: {e}");
            reply(Reply::Failed(e.to_string()));
        }
    }
    drop(publisher);
    drop(subscriber);
}

/// The `a=candidate` lines of an SDP, with their m-line index and mid, for trickling.
pub fn sdp_candidates(sdp: &str) -> Vec<IceCandidateInit> {
    let mut out = Vec::new();
    let mut index: Option<u32> = None;
    let mut mid: Option<String> = None;
    let mut pending: Vec<String> = Vec::new();
    let mut flush = |index: Option<u32>, mid: &Option<String>, pending: &mut Vec<String>| {
        for c in pending.drain(..) {
            out.push(IceCandidateInit {
                candidate: c,
                sdp_mid: mid.clone(),
                sdp_m_line_index: index,
            });
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(index, &mid, &mut pending);
            index = Some(index.map_or(0, |i| i + 1));
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_string());
        } else if let Some(c) = line.strip_prefix("a=")
            && c.starts_with("candidate:")
            && index.is_some()
        {
            pending.push(c.to_string());
        }
    }
    flush(index, &mid, &mut pending);
    out
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_ice_servers_become_webrtcbin_urls() {
        use super::super::session::IceServer;
        let ice = ice_servers(&[
            IceServer {
                urls: vec![
                    "stun:stun.lk.example.org:3478".into(),
                    "stun:second.example.org:3478".into(),
                ],
                username: String::new(),
                credential: String::new(),
            },
            IceServer {
                urls: vec![
                    "turn:turn.lk.example.org:3478?transport=udp".into(),
                    "turns:turn.lk.example.org:443?transport=tcp".into(),
                    "https://not-ice.example.org".into(),
                ],
                username: "1733:sidecar".into(),
                credential: "a+b/c=".into(),
            },
            IceServer {
                urls: vec!["turn:anonymous.example.org:3478".into()],
                username: String::new(),
                credential: String::new(),
            },
        ]);
        assert_eq!(ice.stun.as_deref(), Some("stun://stun.lk.example.org:3478"));
        assert_eq!(
            ice.turn,
            [
                "turn://1733%3Asidecar:a%2Bb%2Fc%3D@turn.lk.example.org:3478?transport=udp",
                "turns://1733%3Asidecar:a%2Bb%2Fc%3D@turn.lk.example.org:443?transport=tcp",
            ]
        );
        assert_eq!(ice_servers(&[]), IceServers::default());
    }
    use crate::captions::EventKind;

    fn caption(track: &str, segment: &str, kind: EventKind, text: &str) -> PendingCaption {
        PendingCaption {
            event: CaptionEvent {
                seq: 0,
                kind,
                segment_id: segment.into(),
                revision: 0,
                track: track.into(),
                speaker: None,
                language: None,
                text: text.into(),
                stable_text: String::new(),
                start: 0.0,
                end: 0.0,
                emitted_at: 0.0,
                words: Vec::new(),
            },
            identity: "alice".into(),
            track_sid: "TR_a".into(),
        }
    }

    #[test]
    fn partials_give_way_and_finals_are_counted_when_dropped() {
        let q = CaptionQueue::new(3);
        q.push(caption("t", "s1", EventKind::Partial, "hel"));
        q.push(caption("t", "s1", EventKind::Partial, "hello"));
        assert_eq!(q.len(), 1, "a newer partial replaces the queued one");
        assert_eq!(q.stats().partials_superseded, 1);
        q.push(caption("t", "s1", EventKind::Final, "hello there"));
        assert_eq!(q.len(), 1, "the final supersedes its partial");
        q.push(caption("t", "s2", EventKind::Partial, "b"));
        q.push(caption("u", "s1", EventKind::Final, "c"));
        // full (final, partial, final): a new final evicts the partial
        q.push(caption("u", "s2", EventKind::Final, "d"));
        assert_eq!(q.stats().partials_dropped, 1);
        assert_eq!(q.stats().finals_dropped, 0);
        // full of finals: a partial is dropped on arrival, a final evicts the oldest final
        q.push(caption("v", "s1", EventKind::Partial, "e"));
        assert_eq!(q.stats().partials_dropped, 2);
        q.push(caption("v", "s2", EventKind::Final, "f"));
        assert_eq!(q.stats().finals_dropped, 1);
        let texts: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|c| c.event.text)
            .collect();
        assert_eq!(texts, ["c", "d", "f"]);
    }

    #[test]
    fn track_ids_are_stable_and_valid() {
        assert_eq!(
            track_id("alice", proto::TrackSource::Microphone),
            "lk-alice"
        );
        assert_eq!(
            track_id("bob@example.org", proto::TrackSource::ScreenShareAudio),
            "lk-bob_example.org-screen"
        );
        let long = track_id(&"x".repeat(300), proto::TrackSource::Microphone);
        assert_eq!(long.len(), crate::config::MAX_ID_LEN);
    }

    #[test]
    fn candidates_are_read_per_m_line() {
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   a=candidate:1 1 UDP 2015363327 10.0.0.1 5000 typ host\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n\
                   a=candidate:2 1 UDP 2015363327 10.0.0.1 5002 typ host\r\n\
                   a=end-of-candidates\r\n";
        let c = sdp_candidates(sdp);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].sdp_m_line_index, Some(0));
        assert_eq!(c[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(
            c[1].candidate,
            "candidate:2 1 UDP 2015363327 10.0.0.1 5002 typ host"
        );
        assert_eq!(c[1].sdp_m_line_index, Some(1));
        assert_eq!(c[1].sdp_mid.as_deref(), Some("1"));
    }
}
