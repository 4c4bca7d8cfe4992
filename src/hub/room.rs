//! The hub of one room: numbering, durable logging and fan-out of room messages, and the
//! subscriptions of the room's caption clients. See the `hub` module doc for the guarantees.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::Notify;

use super::log::{LOG_FILE_NAME, LogError, ReplayPlan, RoomLog};
use super::queue::{Push, SubQueue};
use super::settings::{HubSettings, validate_room_name};
use crate::captions::CaptionEvent;
use crate::protocol::{
    self, Caption, CaptionFilter, ClientMessage, ErrorCode, Frame, Gap, GapReason, Hello,
    Participant, Participants, Resumed, ServerMessage,
};
use crate::stream::InvalidSetting;

/// Errors of opening a hub or publishing into it.
#[derive(Debug, Error)]
pub enum HubError {
    /// A setting is out of range.
    #[error("invalid hub settings: {0}")]
    Settings(#[from] InvalidSetting),
    /// The room name cannot be a directory name.
    #[error("invalid room name {room:?}: {reason}")]
    InvalidRoom {
        /// The name.
        room: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The room directory cannot be created.
    #[error("cannot create room directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The room log failed; the message was not published (its seq was not used).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The message cannot be published (it could not be read back or rendered).
    #[error("refused room message: {0}")]
    Invalid(String),
    /// The hub was closed.
    #[error("room `{0}` is closed")]
    Closed(String),
}

/// Errors of subscribing (or resuming).
#[derive(Debug, Error)]
pub enum SubscribeError {
    /// `resume_from` is beyond the room's last seq (a client of another room, or a wiped log).
    #[error("cannot resume from seq {from_seq}: the room's last seq is {last_seq}")]
    ResumeAhead {
        /// The requested seq.
        from_seq: u64,
        /// The room's last seq.
        last_seq: u64,
    },
    /// The hub was closed.
    #[error("room `{0}` is closed")]
    Closed(String),
    /// Reading the room log for the replay failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl SubscribeError {
    /// The `error` message telling a client about it.
    pub fn to_message(&self) -> ServerMessage {
        let code = match self {
            Self::ResumeAhead { .. } => ErrorCode::ResumeUnavailable,
            Self::Closed(_) | Self::Log(_) => ErrorCode::Internal,
        };
        ServerMessage::error(code, self.to_string())
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client had more than `max_pending_finals` finals queued. Its queue was discarded;
    /// it has every durable message up to `resume_from` and should reconnect with
    /// `resume { from_seq: resume_from }`.
    SlowConsumer {
        /// Where to resume.
        resume_from: u64,
    },
    /// The room was closed (everything queued before was delivered).
    GoingAway,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            Self::SlowConsumer { .. } => protocol::close::SLOW_CONSUMER,
            Self::GoingAway => protocol::close::GOING_AWAY,
        }
    }

    /// The WebSocket close reason text (well under the 123-byte limit).
    pub fn reason(&self) -> String {
        match self {
            Self::SlowConsumer { resume_from } => {
                format!("slow consumer: resume with from_seq={resume_from}")
            }
            Self::GoingAway => "room closed".into(),
        }
    }
}

/// What [`Subscription::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A message to send (its JSON text is [`Frame::text`]).
    Message(Arc<Frame>),
    /// The subscription ended: close the connection with [`CloseReason::code`]. Every later
    /// call returns the same.
    Closed(CloseReason),
}

/// How a subscriber starts and what it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberOptions {
    /// Replay every durable message with seq > this before going live.
    pub resume_from: Option<u64>,
    /// Receive partial captions.
    pub partials: bool,
    /// Receive captions and gaps at all (the user's toggle).
    pub captions_enabled: bool,
    /// Tracks and languages to receive.
    pub filter: CaptionFilter,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        Self {
            resume_from: None,
            partials: true,
            captions_enabled: true,
            filter: CaptionFilter::all(),
        }
    }
}

/// Counters of a hub, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open subscriptions.
    pub subscribers: usize,
    /// Last seq given out.
    pub last_seq: u64,
    /// Room messages published (all kinds).
    pub published: u64,
    /// Final captions written to the room log.
    pub finals_logged: u64,
    /// Gaps written to the room log.
    pub gaps_logged: u64,
    /// Subscriptions closed as slow consumers.
    pub slow_consumer_closes: u64,
    /// Queued partials replaced by a newer revision or by their final.
    pub coalesced_partials: u64,
    /// Queued partials dropped because a queue was full.
    pub dropped_partials: u64,
    /// Messages replayed to resuming subscribers.
    pub replayed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    finals_logged: AtomicU64,
    gaps_logged: AtomicU64,
    slow_consumer_closes: AtomicU64,
    coalesced_partials: AtomicU64,
    dropped_partials: AtomicU64,
    replayed: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // the state stays consistent across a panic elsewhere (no invariant spans an unwind)
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-client knobs, shared with the publisher.
#[derive(Debug, Clone)]
struct Wants {
    partials: bool,
    captions: bool,
    filter: CaptionFilter,
}

impl Wants {
    fn accepts(&self, msg: &ServerMessage) -> bool {
        match msg {
            ServerMessage::Caption(c) => {
                self.captions
                    && (self.partials || c.event.is_final())
                    && self
                        .filter
                        .accepts(&c.event.track, c.event.language.as_deref())
            }
            ServerMessage::Gap(g) => self.captions && self.filter.accepts_track(&g.track),
            _ => true,
        }
    }
}

#[derive(Debug)]
struct SubState {
    wants: Wants,
    queue: SubQueue,
    /// Every durable message up to this seq was delivered or deliberately not wanted.
    cursor: u64,
    closed: Option<CloseReason>,
}

#[derive(Debug)]
struct SubShared {
    id: u64,
    state: Mutex<SubState>,
    notify: Notify,
}

impl SubShared {
    /// Queue `frame` if wanted. Returns false if the subscriber is (now) closed.
    fn offer(&self, frame: &Arc<Frame>, counters: &Counters) -> bool {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return false;
        }
        if !st.wants.accepts(frame.message()) {
            return true;
        }
        match st.queue.push(frame.clone()) {
            Push::Queued { coalesced, dropped } => {
                add(&counters.coalesced_partials, coalesced);
                add(&counters.dropped_partials, dropped);
                drop(st);
                self.notify.notify_one();
                true
            }
            Push::Overflow => {
                let resume_from = st.cursor;
                st.queue.clear();
                st.closed = Some(CloseReason::SlowConsumer { resume_from });
                drop(st);
                add(&counters.slow_consumer_closes, 1);
                tracing::info!(
                    subscriber = self.id,
                    resume_from,
                    "hub: closing slow consumer"
                );
                self.notify.notify_one();
                false
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        let mut st = lock(&self.state);
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        drop(st);
        self.notify.notify_one();
    }
}

#[derive(Debug)]
struct State {
    /// `None` once the hub is closed (the file is closed and unlocked).
    log: Option<RoomLog>,
    last_seq: u64,
    subscribers: Vec<Arc<SubShared>>,
    tracks: BTreeSet<String>,
    participants: Option<Arc<Frame>>,
}

#[derive(Debug)]
struct Inner {
    room: String,
    settings: HubSettings,
    state: Mutex<State>,
    counters: Counters,
    next_id: AtomicU64,
}

impl Inner {
    fn publish(&self, build: impl FnOnce(u64) -> ServerMessage) -> Result<u64, HubError> {
        let mut st = lock(&self.state);
        let seq = st.last_seq + 1;
        let frame = Arc::new(Frame::new(build(seq)));
        let Some(log) = st.log.as_mut() else {
            return Err(HubError::Closed(self.room.clone()));
        };
        // durable first: nobody may hold a message the log does not
        if frame.message().is_durable() {
            log.append(frame.clone())?;
        } else {
            log.ensure_reserved(seq)?;
        }
        st.last_seq = seq;
        add(&self.counters.published, 1);
        match frame.message() {
            ServerMessage::Caption(c) => {
                if c.event.is_final() {
                    add(&self.counters.finals_logged, 1);
                }
                if !st.tracks.contains(&c.event.track) {
                    st.tracks.insert(c.event.track.clone());
                }
            }
            ServerMessage::Gap(g) => {
                add(&self.counters.gaps_logged, 1);
                if !st.tracks.contains(&g.track) {
                    st.tracks.insert(g.track.clone());
                }
            }
            ServerMessage::Participants(p) => {
                let tracks = p.participants.iter().map(|p| p.track.clone());
                st.tracks.extend(tracks);
                st.participants = Some(frame.clone());
            }
            _ => {}
        }
        // O(subscribers), never waits for a client: each queue is bounded and locked briefly
        st.subscribers.retain(|s| s.offer(&frame, &self.counters));
        Ok(seq)
    }

    fn unsubscribe(&self, id: u64) {
        lock(&self.state).subscribers.retain(|s| s.id != id);
    }

    fn close(&self) {
        let mut st = lock(&self.state);
        if st.log.take().is_none() {
            return;
        }
        for sub in st.subscribers.drain(..) {
            sub.close(CloseReason::GoingAway);
        }
        tracing::debug!(room = %self.room, last_seq = st.last_seq, "hub: closed");
    }
}

/// Closes the hub when the last [`Hub`] handle goes (subscriptions do not keep it open).
#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// The caption hub of one room. Cheap to clone; the room closes when the last clone is dropped
/// or on [`Hub::close`]. Publishing is synchronous (it writes the log) and callable from any
/// thread; subscribing is async.
#[derive(Debug, Clone)]
pub struct Hub {
    handle: Arc<Handle>,
}

impl Hub {
    /// Open the hub of `room`: validate the settings and the name, create
    /// `<data_dir>/<room>/`, read back and lock its log. Seqs continue after the log's.
    pub fn open(room: &str, settings: &HubSettings) -> Result<Self, HubError> {
        settings.validate()?;
        validate_room_name(room).map_err(|reason| HubError::InvalidRoom {
            room: room.into(),
            reason,
        })?;
        let dir = settings.data_dir.join(room);
        std::fs::create_dir_all(&dir).map_err(|source| HubError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let log = RoomLog::open(dir.join(LOG_FILE_NAME), room, settings.ring_capacity)?;
        tracing::debug!(
            room,
            messages = log.len(),
            last_seq = log.high_water(),
            "hub: opened room log"
        );
        let state = State {
            last_seq: log.high_water(),
            tracks: log.tracks().clone(),
            participants: log.last_participants().cloned(),
            log: Some(log),
            subscribers: Vec::new(),
        };
        let inner = Arc::new(Inner {
            room: room.into(),
            settings: settings.clone(),
            state: Mutex::new(state),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        });
        Ok(Self {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// The room name.
    pub fn room(&self) -> &str {
        &self.inner().room
    }

    /// The settings the hub was opened with.
    pub fn settings(&self) -> &HubSettings {
        &self.inner().settings
    }

    /// The last seq given out (0: none ever).
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner().state).last_seq
    }

    /// Publish a caption event: give it the next room seq, log it durably if final, then queue
    /// it to every subscriber. Returns the room seq. The event's own `seq` (per track) is kept.
    pub fn publish(&self, event: CaptionEvent) -> Result<u64, HubError> {
        check_event(&event)?;
        let room = self.room().to_owned();
        self.inner()
            .publish(move |seq| ServerMessage::Caption(Caption { room, seq, event }))
    }

    /// Publish a gap: audio of `track` from `from_s` to `to_s` (track clock) was lost.
    pub fn publish_gap(
        &self,
        track: &str,
        from_s: f64,
        to_s: f64,
        reason: GapReason,
    ) -> Result<u64, HubError> {
        if track.is_empty() {
            return Err(HubError::Invalid("gap with an empty track".into()));
        }
        if !(from_s.is_finite() && to_s.is_finite() && 0.0 <= from_s && from_s <= to_s) {
            return Err(HubError::Invalid(format!(
                "gap of track `{track}` from {from_s} to {to_s} s is not a time range"
            )));
        }
        let room = self.room().to_owned();
        let track = track.to_owned();
        self.inner().publish(move |seq| {
            ServerMessage::Gap(Gap {
                room,
                seq,
                track,
                from_s,
                to_s,
                reason,
            })
        })
    }

    /// Publish the full participant list (replacing the previous one).
    pub fn publish_participants(&self, participants: Vec<Participant>) -> Result<u64, HubError> {
        let room = self.room().to_owned();
        self.inner().publish(move |seq| {
            ServerMessage::Participants(Participants {
                room,
                seq,
                participants,
            })
        })
    }

    /// Subscribe a client. Without `resume_from` it receives the current participant list,
    /// then live messages. With `resume_from = N` it receives the participant list (if not
    /// newer than N), every durable message with seq > N (from memory or the log), `resumed`,
    /// then live messages: nothing missed or repeated at the boundary, whatever is published
    /// meanwhile. Reads the log on a blocking thread when needed (needs a Tokio runtime).
    pub async fn subscribe(
        &self,
        options: SubscriberOptions,
    ) -> Result<Subscription, SubscribeError> {
        subscribe(self.inner().clone(), options).await
    }

    /// Counters for metrics.
    pub fn stats(&self) -> HubStats {
        let inner = self.inner();
        let (subscribers, last_seq) = {
            let st = lock(&inner.state);
            (st.subscribers.len(), st.last_seq)
        };
        let c = &inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HubStats {
            subscribers,
            last_seq,
            published: get(&c.published),
            finals_logged: get(&c.finals_logged),
            gaps_logged: get(&c.gaps_logged),
            slow_consumer_closes: get(&c.slow_consumer_closes),
            coalesced_partials: get(&c.coalesced_partials),
            dropped_partials: get(&c.dropped_partials),
            replayed: get(&c.replayed),
        }
    }

    /// Close the room: release the log, end every subscription with [`CloseReason::GoingAway`]
    /// once it has delivered what is queued. Publishing and subscribing fail afterwards.
    pub fn close(&self) {
        self.inner().close();
    }
}

fn check_event(ev: &CaptionEvent) -> Result<(), HubError> {
    if ev.track.is_empty() || ev.segment_id.is_empty() {
        return Err(HubError::Invalid(format!(
            "caption event seq {} has an empty track or segment id",
            ev.seq
        )));
    }
    let times = [ev.start, ev.end, ev.emitted_at]
        .into_iter()
        .chain(ev.words.iter().flat_map(|w| [w.start, w.end]));
    if let Some(t) = times.into_iter().find(|t| !t.is_finite()) {
        return Err(HubError::Invalid(format!(
            "caption event seq {} of track `{}` has the non-finite time {t}",
            ev.seq, ev.track
        )));
    }
    Ok(())
}

async fn subscribe(
    inner: Arc<Inner>,
    options: SubscriberOptions,
) -> Result<Subscription, SubscribeError> {
    let wants = Wants {
        partials: options.partials,
        captions: options.captions_enabled,
        filter: options.filter.clone(),
    };
    // Registration, the replay plan and `last_seq` are taken under one lock: the replay covers
    // seq <= last_seq exactly, the queue receives seq > last_seq.
    let (shared, hello, mut initial, plan, last_seq) = {
        let mut st = lock(&inner.state);
        let Some(log) = st.log.as_ref() else {
            return Err(SubscribeError::Closed(inner.room.clone()));
        };
        let last_seq = st.last_seq;
        if let Some(from_seq) = options.resume_from
            && from_seq > last_seq
        {
            return Err(SubscribeError::ResumeAhead { from_seq, last_seq });
        }
        let plan = options.resume_from.map(|n| log.plan(n));
        let shared = Arc::new(SubShared {
            id: inner.next_id.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(SubState {
                wants: wants.clone(),
                queue: SubQueue::new(
                    inner.settings.queue_capacity,
                    inner.settings.max_pending_finals,
                ),
                cursor: options.resume_from.unwrap_or(last_seq),
                closed: None,
            }),
            notify: Notify::new(),
        });
        st.subscribers.push(shared.clone());
        let mut initial = VecDeque::new();
        if let Some(p) = &st.participants
            && options
                .resume_from
                .is_none_or(|n| p.seq().unwrap_or_default() <= n)
        {
            initial.push_back(p.clone());
        }
        let hello = Arc::new(Frame::new(ServerMessage::Hello(Hello {
            protocol: protocol::PROTOCOL_VERSION,
            room: inner.room.clone(),
            last_seq,
            tracks: st.tracks.iter().cloned().collect(),
        })));
        (shared, hello, initial, plan, last_seq)
    };
    let mut sub = Subscription {
        inner: inner.clone(),
        shared,
        hello,
        initial: VecDeque::new(),
    };
    if let (Some(from_seq), Some(plan)) = (options.resume_from, plan) {
        let frames = match plan {
            ReplayPlan::Ring(frames) => frames,
            disk => tokio::task::spawn_blocking(move || disk.load())
                .await
                .map_err(|e| LogError::Read {
                    path: inner.settings.data_dir.join(&inner.room),
                    source: std::io::Error::other(format!("replay task failed: {e}")),
                })??,
        };
        let before = initial.len();
        initial.extend(frames.into_iter().filter(|f| wants.accepts(f.message())));
        let replayed = (initial.len() - before) as u64;
        add(&inner.counters.replayed, replayed);
        initial.push_back(Arc::new(Frame::new(ServerMessage::Resumed(Resumed {
            from_seq,
            replayed,
            last_seq,
        }))));
    }
    sub.initial = initial;
    Ok(sub)
}

/// One client's subscription to a room: its queue, its knobs and where it is.
///
/// The later WebSocket task sends [`Subscription::hello`] first, then loops on
/// `select! { d = sub.next() => send d, m = socket.next() => sub.control(parse_client(m)?) }`.
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Inner>,
    shared: Arc<SubShared>,
    hello: Arc<Frame>,
    /// Participant snapshot, replay and `resumed`, delivered before the live queue.
    initial: VecDeque<Arc<Frame>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.unsubscribe(self.shared.id);
    }
}

impl Subscription {
    /// The `hello` message of this subscription (its `last_seq` is where live delivery starts).
    pub fn hello(&self) -> &Arc<Frame> {
        &self.hello
    }

    /// The next message, waiting for one. Cancel-safe: a message is taken from the queue only
    /// in the poll that returns it, so dropping the future (in `select!`) loses nothing.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if let Some(d) = self.try_next() {
                return d;
            }
            // a notification sent since try_next looked is kept as a permit: no lost wakeup
            self.shared.notify.notified().await;
        }
    }

    /// The next message if one is ready.
    pub fn try_next(&mut self) -> Option<Delivery> {
        let mut st = lock(&self.shared.state);
        if let Some(reason @ CloseReason::SlowConsumer { .. }) = st.closed {
            self.initial.clear();
            return Some(Delivery::Closed(reason));
        }
        let next = loop {
            match self.initial.pop_front() {
                Some(f) if f.seq().is_some() && !st.wants.accepts(f.message()) => continue,
                Some(f) => break Some(f),
                None => break st.queue.pop(),
            }
        };
        match next {
            Some(frame) => {
                if let Some(seq) = frame.seq() {
                    st.cursor = st.cursor.max(seq);
                }
                Some(Delivery::Message(frame))
            }
            None => st.closed.map(Delivery::Closed),
        }
    }

    /// The user's captions toggle. Off: caption and gap messages stop and those queued are
    /// dropped. On: live delivery continues from now (no replay; use [`Subscription::resume`]).
    pub fn set_captions(&mut self, enabled: bool) {
        if enabled {
            // hub lock first (same order as publish): whatever was published while off counts
            // as deliberately skipped, so a later slow-consumer close does not replay it
            let hub = lock(&self.inner.state);
            let mut st = lock(&self.shared.state);
            if !st.wants.captions {
                st.wants.captions = true;
                st.cursor = st.cursor.max(hub.last_seq);
            }
        } else {
            self.update(|w| w.captions = false);
        }
    }

    /// Receive partials or not; turning them off drops the queued ones.
    pub fn set_partials(&mut self, enabled: bool) {
        self.update(|w| w.partials = enabled);
    }

    /// Replace the track/language filter; queued messages it refuses are dropped.
    pub fn set_filter(&mut self, filter: CaptionFilter) {
        self.update(|w| w.filter = filter);
    }

    fn update(&mut self, change: impl FnOnce(&mut Wants)) {
        let mut st = lock(&self.shared.state);
        change(&mut st.wants);
        let wants = st.wants.clone();
        st.queue.retain(|m| wants.accepts(m));
        self.initial
            .retain(|f| f.seq().is_none() || wants.accepts(f.message()));
    }

    /// The subscription's current knobs (`resume_from` is [`Subscription::resume_point`]).
    pub fn options(&self) -> SubscriberOptions {
        let st = lock(&self.shared.state);
        SubscriberOptions {
            resume_from: Some(st.cursor),
            partials: st.wants.partials,
            captions_enabled: st.wants.captions,
            filter: st.wants.filter.clone(),
        }
    }

    /// The seq up to which the client has every durable message it asked for.
    pub fn resume_point(&self) -> u64 {
        lock(&self.shared.state).cursor
    }

    /// Messages waiting in the live queue.
    pub fn queued(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }

    /// Replace this subscription by one resuming from `from_seq` with the same knobs (what a
    /// `resume` message asks). On error the current subscription is kept unchanged.
    pub async fn resume(&mut self, from_seq: u64) -> Result<(), SubscribeError> {
        let options = SubscriberOptions {
            resume_from: Some(from_seq),
            ..self.options()
        };
        let mut fresh = subscribe(self.inner.clone(), options).await?;
        fresh.hello = self.hello.clone();
        *self = fresh;
        Ok(())
    }

    /// Apply a client control message; returns the direct answer to send, if any (`pong`, or
    /// an `error` for a `resume` that cannot be served).
    pub async fn control(&mut self, msg: ClientMessage) -> Option<ServerMessage> {
        match msg {
            ClientMessage::Captions { enabled } => self.set_captions(enabled),
            ClientMessage::Partials { enabled } => self.set_partials(enabled),
            ClientMessage::Filter { tracks, languages } => {
                self.set_filter(CaptionFilter { tracks, languages })
            }
            ClientMessage::Resume { from_seq } => {
                if let Err(e) = self.resume(from_seq).await {
                    return Some(e.to_message());
                }
            }
            ClientMessage::Ping => return Some(ServerMessage::Pong),
        }
        None
    }
}
