//! The media side of an SFU attachment: one GStreamer pipeline per attached room, holding one
//! receive-only `webrtcbin` per peer connection the SFU offers, and one
//! `pipelines/webrtc_audio.gst` branch per remote audio track.
//!
//! ```text
//!            ┌ webrtcbin (peer 1) ─▶ branch (depay ▶ opusdec+PLC ▶ 16 kHz mono) ▶ appsink ─▶ track worker
//! pipeline ──┤                     └▶ branch ... (one per audio m-line)
//!            └ webrtcbin (peer 2) ─▶ ...            video m-lines ▶ fakesink
//! ```
//!
//! Every branch counts samples from the room pipeline's running time 0 ([`RoomMedia::started_at`]),
//! so all tracks of a room share one timeline, across participants leaving and rejoining and
//! across reconnections to the SFU (the pipeline lives as long as the attachment).
//!
//! A peer carrying several tracks (LiveKit's subscriber connection) can end one track's stream
//! ([`SubscriberPeer::end_track`]: muted, unpublished), tap it again
//! ([`SubscriberPeer::resume_track`]: unmuted) and take new offers
//! ([`SubscriberPeer::renegotiate`]); branches are swapped on an idle pad probe, so no buffer
//! meets an unlinked pad.
//!
//! # Threads
//! `pad-added` runs on a GStreamer streaming thread: it only builds and links the branch and hands
//! the new [`AudioSource`] over a bounded channel; inference runs on the track workers. Offer/answer
//! is blocking (promise waits, ICE gathering) and must be called from a blocking thread.
//!
//! # Latency model
//! Network + webrtcbin's jitter buffer (`jitter_ms`, default 60 ms; a packet later than that is
//! treated as lost and concealed by Opus PLC) + Opus decode (6.5 ms) + 20 ms re-chunking. The
//! answer is sent once ICE gathering is complete (non-trickle on our side): with the host
//! candidates only that is a few milliseconds, bounded by [`GATHER_TIMEOUT`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use crate::media::{self, AudioSource, DecodeSettings, LiveTap, MediaError};

/// Longest wait for our ICE candidates before the answer is sent anyway.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// After the first local candidate, how long more candidates are awaited before the description
/// is sent (webrtcbin 1.22 does not always report gathering as complete; host candidates all come
/// within a few milliseconds of each other).
pub const GATHER_SETTLE: Duration = Duration::from_millis(150);
/// Longest wait for webrtcbin's `on-negotiation-needed` before an offer.
const NEGOTIATION_WAIT: Duration = Duration::from_millis(500);
/// Longest wait for one of webrtcbin's promises (set description, create answer).
const PROMISE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a track forwarder checks whether its peer was closed.
const FORWARD_CHECK: Duration = Duration::from_millis(200);
/// Remote tracks announced and not yet taken by the attachment, per peer.
const TRACK_QUEUE: usize = 16;

/// Errors of the media side.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid SDP from the SFU: {0}")]
    Sdp(String),
    #[error("webrtcbin refused: {0}")]
    Negotiation(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// Media settings of an attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    /// webrtcbin's jitter buffer latency, ms.
    pub jitter_ms: u32,
    /// Restrict ICE host candidates to these local addresses (empty: all interfaces libnice
    /// picks). Useful on multi-homed hosts and in isolated test networks.
    pub ice_addresses: Vec<String>,
    /// STUN server (`stun://host:port`), when the SFU is behind NAT.
    pub stun_server: Option<String>,
}

/// Default jitter buffer latency of a subscribed track, ms.
pub const DEFAULT_JITTER_MS: u32 = 60;

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            jitter_ms: DEFAULT_JITTER_MS,
            ice_addresses: Vec::new(),
            stun_server: None,
        }
    }
}

/// One remote audio track that started flowing.
pub struct RemoteTrack {
    /// The m-line's `mid` in the SFU's offer.
    pub mid: String,
    /// The audio, on the room timeline.
    pub source: AudioSource,
}

/// The pipeline of one attached room.
pub struct RoomMedia {
    name: String,
    pipeline: gst::Pipeline,
    started_at: Instant,
    settings: MediaSettings,
    bus_thread: Option<std::thread::JoinHandle<()>>,
    next_peer: Mutex<u64>,
}

impl RoomMedia {
    /// Builds and starts the (empty) room pipeline; the timeline starts now.
    pub fn start(name: &str, settings: MediaSettings) -> Result<Self, PeerError> {
        media::init()?;
        let pipeline = gst::Pipeline::with_name(&format!("sfu-{name}"));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| PeerError::Gst(format!("room pipeline refused to start: {e}")))?;
        let running = pipeline
            .current_running_time()
            .map_or(Duration::ZERO, |t| Duration::from_nanos(t.nseconds()));
        let started_at = Instant::now()
            .checked_sub(running)
            .unwrap_or_else(Instant::now);
        let bus = pipeline
            .bus()
            .ok_or_else(|| PeerError::Gst("pipeline has no bus".into()))?;
        let label = name.to_owned();
        let bus_thread = std::thread::Builder::new()
            .name(format!("sfu-bus-{name}"))
            .spawn(move || watch_bus(&bus, &label))
            .map_err(|e| PeerError::Gst(format!("cannot spawn the bus thread: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            pipeline,
            started_at,
            settings,
            bus_thread: Some(bus_thread),
            next_peer: Mutex::new(0),
        })
    }

    /// Wall-clock instant of sample 0 of every track of this room.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Seconds on the room timeline now.
    pub fn now_s(&self) -> f64 {
        self.started_at.elapsed().as_secs_f64()
    }

    /// Takes an SFU's offer for a receive-only peer connection: adds a webrtcbin, answers, and
    /// waits for ICE gathering. Returns the peer (its audio tracks arrive on
    /// [`SubscriberPeer::tracks`]) and the answer SDP (with our candidates). Blocking.
    pub fn subscribe(
        &self,
        label: &str,
        offer_sdp: &str,
    ) -> Result<(SubscriberPeer, String), PeerError> {
        self.answer(label, offer_sdp, &IceServers::default())
    }

    /// [`RoomMedia::subscribe`] with ICE servers of this peer's own.
    pub fn answer(
        &self,
        label: &str,
        offer_sdp: &str,
        ice: &IceServers,
    ) -> Result<(SubscriberPeer, String), PeerError> {
        let offer = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes())
            .map_err(|e| PeerError::Sdp(format!("cannot parse the offer: {e}")))?;
        let (peer, gathered) = self.new_peer(label, ice)?;
        let sdp = answer_offer(&peer.webrtc, offer, Some(&gathered), &peer.shared.label)?;
        Ok((peer, sdp))
    }

    /// Makes the offer of a receive-only peer connection (one `recvonly` Opus audio
    /// transceiver), for protocols where the client offers (WHEP): adds a webrtcbin, creates
    /// the offer and waits for ICE gathering. Returns the peer and the offer SDP (with our
    /// candidates); the answer goes to [`SubscriberPeer::accept_answer`]. Blocking.
    pub fn offer(
        &self,
        label: &str,
        ice: &IceServers,
    ) -> Result<(SubscriberPeer, String), PeerError> {
        let (peer, gathered) = self.new_peer(label, ice)?;
        let webrtc = &peer.webrtc;
        let (needed_tx, needed) = crossbeam_channel::bounded::<()>(1);
        webrtc.connect("on-negotiation-needed", false, move |_| {
            let _ = needed_tx.try_send(());
            None
        });
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("encoding-name", "OPUS")
            .field("clock-rate", 48_000i32)
            .field("payload", OFFER_OPUS_PAYLOAD)
            .build();
        let transceiver = webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        transceiver.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly,
        );
        // webrtcbin 1.22 does not always ask for a negotiation for a receive-only transceiver
        // alone: the offer is made anyway after a short wait
        if needed.recv_timeout(NEGOTIATION_WAIT).is_err() {
            tracing::debug!(peer = %peer.shared.label, "no on-negotiation-needed; offering anyway");
        }
        let reply = promise_reply(webrtc, "create-offer")?;
        let offer = reply
            .and_then(|r| {
                r.value("offer")
                    .ok()
                    .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            })
            .ok_or_else(|| PeerError::Negotiation("create-offer returned no offer".into()))?;
        promise(webrtc, "set-local-description", &offer)?;
        let sdp = local_sdp(&peer, &gathered)?;
        Ok((peer, sdp))
    }

    /// Adds a started, not yet negotiated webrtcbin to the room pipeline. Dropping the returned
    /// peer removes it.
    fn new_peer(
        &self,
        label: &str,
        ice: &IceServers,
    ) -> Result<(SubscriberPeer, Gathering), PeerError> {
        let id = {
            let mut n = self.next_peer.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .name(format!("peer{id}"))
            .property_from_str("bundle-policy", "max-bundle")
            .property("latency", self.settings.jitter_ms)
            .build()
            .map_err(|_| {
                MediaError::MissingPlugin(
                    "webrtcbin (gstreamer1.0-plugins-bad, gstreamer1.0-nice)".into(),
                )
            })?;
        if let Some(stun) = ice.stun.as_ref().or(self.settings.stun_server.as_ref()) {
            webrtc.set_property("stun-server", stun);
        }
        for turn in &ice.turn {
            if !webrtc.emit_by_name::<bool>("add-turn-server", &[turn]) {
                tracing::warn!(peer = label, "webrtcbin refused a TURN server");
            }
        }
        let shared = Arc::new(PeerShared {
            label: format!("{}/{label}", self.name),
            closed: AtomicBool::new(false),
            last_packet_ms: AtomicU64::new(0),
            branches: Mutex::new(Vec::new()),
        });
        let (tracks_tx, tracks_rx) = crossbeam_channel::bounded(TRACK_QUEUE);
        self.pipeline
            .add(&webrtc)
            .map_err(|e| PeerError::Gst(format!("cannot add webrtcbin: {e}")))?;
        let peer = SubscriberPeer {
            pipeline: self.pipeline.clone(),
            webrtc: webrtc.clone(),
            shared: Arc::clone(&shared),
            tracks: tracks_rx,
            started_at: self.started_at,
            jitter: Duration::from_millis(self.settings.jitter_ms.into()),
        };
        // From here on, dropping `peer` removes what was added.
        if !self.settings.ice_addresses.is_empty() {
            let agent = webrtc.property::<gst::glib::Object>("ice-agent");
            for address in &self.settings.ice_addresses {
                if !agent.emit_by_name::<bool>("add-local-ip-address", &[address]) {
                    return Err(PeerError::Negotiation(format!(
                        "ICE refused the local address {address}"
                    )));
                }
            }
        }
        {
            let (pipeline, shared, started_at, jitter) = (
                self.pipeline.clone(),
                Arc::clone(&shared),
                self.started_at,
                Duration::from_millis(self.settings.jitter_ms.into()),
            );
            webrtc.connect_pad_added(move |_, pad| {
                on_pad(&pipeline, &shared, &tracks_tx, started_at, jitter, pad);
            });
        }
        let gathered = watch_gathering(&webrtc);
        webrtc
            .sync_state_with_parent()
            .map_err(|e| PeerError::Gst(format!("webrtcbin cannot start: {e}")))?;

        Ok((peer, gathered))
    }

    /// The room pipeline (for other kinds of peers of the attachment).
    pub(crate) fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// The attachment's media settings.
    pub(crate) fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// A number unique among this room's peers.
    pub(crate) fn next_peer_id(&self) -> u64 {
        let mut n = self.next_peer.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }
}

/// Sets `offer` as remote description of `webrtc`, answers, and returns the local description
/// (after ICE gathering when `gathered` is given). Blocking.
fn answer_offer(
    webrtc: &gst::Element,
    offer: gst_sdp::SDPMessage,
    gathered: Option<&Gathering>,
    label: &str,
) -> Result<String, PeerError> {
    {
        let offer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
        promise(webrtc, "set-remote-description", &offer)?;
        let reply = promise_reply(webrtc, "create-answer")?;
        let answer = reply
            .and_then(|r| {
                r.value("answer")
                    .ok()
                    .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            })
            .ok_or_else(|| {
                PeerError::Negotiation(
                    "create-answer returned no answer (offer not acceptable?)".into(),
                )
            })?;
        promise(webrtc, "set-local-description", &answer)?;
        if let Some(gathered) = gathered
            && !gathered.wait()
        {
            tracing::warn!(peer = %label, "no ICE candidate after {GATHER_TIMEOUT:?}; answering without");
        }
        let local = webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or_else(|| PeerError::Negotiation("no local description after answering".into()))?;
        local
            .sdp()
            .as_text()
            .map_err(|e| PeerError::Sdp(format!("cannot print the answer: {e}")))
    }
}

/// Waits for ICE gathering and prints the local description (with our candidates).
fn local_sdp(peer: &SubscriberPeer, gathered: &Gathering) -> Result<String, PeerError> {
    if !gathered.wait() {
        tracing::warn!(peer = %peer.shared.label, "no ICE candidate after {GATHER_TIMEOUT:?}; sending the description without");
    }
    let local = peer
        .webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| PeerError::Negotiation("no local description after negotiating".into()))?;
    local
        .sdp()
        .as_text()
        .map_err(|e| PeerError::Sdp(format!("cannot print the local description: {e}")))
}

/// RTP payload type of Opus in [`RoomMedia::offer`]'s offer (the one browsers use).
pub const OFFER_OPUS_PAYLOAD: i32 = 111;

/// ICE servers of one peer connection, overriding [`MediaSettings::stun_server`] (e.g. learnt
/// from a WHEP server's `Link` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServers {
    /// `stun://host:port`.
    pub stun: Option<String>,
    /// `turn(s)://user:password@host:port`.
    pub turn: Vec<String>,
}

impl Drop for RoomMedia {
    fn drop(&mut self) {
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty(
                BUS_STOP,
            )));
        }
        // the bus thread must read the stop message before the state change flushes the bus
        if let Some(t) = self.bus_thread.take() {
            let _ = t.join();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

const BUS_STOP: &str = "soustitre-sfu-stop";

/// Watches a webrtcbin's ICE gathering (set up before the local description is set).
pub(crate) struct Gathering {
    complete: Receiver<()>,
    candidate: Receiver<()>,
}

pub(crate) fn watch_gathering(webrtc: &gst::Element) -> Gathering {
    let (complete_tx, complete) = crossbeam_channel::bounded::<()>(1);
    webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
        let state = w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if state == gst_webrtc::WebRTCICEGatheringState::Complete {
            let _ = complete_tx.try_send(());
        }
    });
    let (candidate_tx, candidate) = crossbeam_channel::bounded::<()>(1);
    webrtc.connect("on-ice-candidate", false, move |_| {
        let _ = candidate_tx.try_send(());
        None
    });
    Gathering {
        complete,
        candidate,
    }
}

impl Gathering {
    /// Waits until gathering is complete, or [`GATHER_SETTLE`] after the first candidate, at most
    /// [`GATHER_TIMEOUT`]. False when no candidate came at all.
    pub(crate) fn wait(&self) -> bool {
        let deadline = Instant::now() + GATHER_TIMEOUT;
        crossbeam_channel::select! {
            recv(self.complete) -> _ => return true,
            recv(self.candidate) -> _ => {}
            recv(crossbeam_channel::at(deadline)) -> _ => return false,
        }
        let settle = (Instant::now() + GATHER_SETTLE).min(deadline);
        crossbeam_channel::select! {
            recv(self.complete) -> _ => {}
            recv(crossbeam_channel::at(settle)) -> _ => {}
        }
        true
    }
}

/// Logs the room pipeline's errors and warnings. An error inside one peer's elements is that
/// peer's problem: the signalling side sees its tracks end and resubscribes; the room goes on.
fn watch_bus(bus: &gst::Bus, room: &str) {
    use gst::MessageView;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            MessageView::Application(a) if a.structure().is_some_and(|s| s.name() == BUS_STOP) => {
                break;
            }
            MessageView::Error(e) => tracing::warn!(
                room,
                element = %msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                "sfu media error: {} ({})",
                e.error(),
                e.debug().map(|d| d.to_string()).unwrap_or_default()
            ),
            MessageView::Warning(w) => tracing::debug!(
                room,
                element = %msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                "sfu media warning: {}",
                w.error()
            ),
            _ => {}
        }
    }
}

pub(crate) fn promise(
    webrtc: &gst::Element,
    signal: &str,
    desc: &gst_webrtc::WebRTCSessionDescription,
) -> Result<(), PeerError> {
    let (p, rx) = reply_channel();
    webrtc.emit_by_name::<()>(signal, &[desc, &p]);
    wait(&p, &rx, signal).map(|_| ())
}

pub(crate) fn promise_reply(
    webrtc: &gst::Element,
    signal: &str,
) -> Result<Option<gst::Structure>, PeerError> {
    let (p, rx) = reply_channel();
    webrtc.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &p]);
    wait(&p, &rx, signal)
}

type Reply = Result<Option<gst::Structure>, String>;

fn reply_channel() -> (gst::Promise, Receiver<Reply>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let p = gst::Promise::with_change_func(move |reply| {
        let reply = match reply {
            Ok(r) => Ok(r.map(|s| s.to_owned())),
            Err(e) => Err(format!("{e:?}")),
        };
        let _ = tx.try_send(reply);
    });
    (p, rx)
}

/// Waits for a promise with a deadline (a wedged webrtcbin must not hang the attachment).
fn wait(
    p: &gst::Promise,
    rx: &Receiver<Reply>,
    what: &str,
) -> Result<Option<gst::Structure>, PeerError> {
    match rx.recv_timeout(PROMISE_TIMEOUT) {
        Ok(Ok(reply)) => {
            if let Some(err) = reply.as_ref().and_then(|r| r.value("error").ok()) {
                let text = err
                    .get::<gst::glib::Error>()
                    .map(|e| e.message().to_owned())
                    .unwrap_or_else(|_| format!("{err:?}"));
                return Err(PeerError::Negotiation(format!("{what}: {text}")));
            }
            Ok(reply)
        }
        Ok(Err(e)) => Err(PeerError::Negotiation(format!("{what}: {e}"))),
        Err(_) => {
            p.interrupt();
            Err(PeerError::Negotiation(format!(
                "{what}: no reply in {PROMISE_TIMEOUT:?}"
            )))
        }
    }
}

struct PeerShared {
    label: String,
    closed: AtomicBool,
    /// Room-timeline milliseconds of the last RTP packet received on any audio pad (0: none yet).
    last_packet_ms: AtomicU64,
    /// Branches (audio bins or fakesinks) added for this peer's pads.
    branches: Mutex<Vec<Branch>>,
}

/// What hangs off one of a peer's webrtcbin source pads.
struct Branch {
    /// The pad's transceiver mid (or the pad name when it has none).
    mid: String,
    /// The webrtcbin source pad.
    pad: gst::Pad,
    /// The audio branch bin, or a fakesink (non-audio, or an audio track ended by
    /// [`SubscriberPeer::end_track`]).
    element: gst::Element,
    /// The audio stream's tap, while the track is being captioned.
    tap: Option<LiveTap>,
    /// True for an Opus audio pad (one that [`SubscriberPeer::resume_track`] can tap again).
    audio: bool,
}

/// Runs on a streaming thread: builds and links a branch for an audio pad, a fakesink for
/// anything else.
fn on_pad(
    pipeline: &gst::Pipeline,
    shared: &Arc<PeerShared>,
    tracks: &Sender<RemoteTrack>,
    started_at: Instant,
    jitter: Duration,
    pad: &gst::Pad,
) {
    if pad.direction() != gst::PadDirection::Src || shared.closed.load(Ordering::SeqCst) {
        return;
    }
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps.structure(0);
    let media = s.and_then(|s| s.get::<&str>("media").ok()).unwrap_or("");
    let encoding = s
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("");
    let mid = pad
        .property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
        .and_then(|t| t.mid())
        .map(|m| m.to_string())
        .unwrap_or_else(|| pad.name().to_string());
    let discard = |why: &str, audio: bool| {
        tracing::debug!(peer = %shared.label, mid, "discarding a remote {media} stream: {why}");
        let Some(sink) = fakesink() else {
            return;
        };
        if pipeline.add(&sink).is_ok() {
            let _ = sink.sync_state_with_parent();
            if let Some(sinkpad) = sink.static_pad("sink") {
                let _ = pad.link(&sinkpad);
            }
            shared
                .branches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Branch {
                    mid: mid.clone(),
                    pad: pad.clone(),
                    element: sink,
                    tap: None,
                    audio,
                });
        }
    };
    if media != "audio" {
        discard("not audio", false);
        return;
    }
    if !encoding.eq_ignore_ascii_case("OPUS") {
        discard(&format!("codec {encoding} (only Opus is decoded)"), false);
        return;
    }
    let Some((bin, source, tap)) = audio_branch(pipeline, &shared.label, &mid, started_at, jitter)
    else {
        discard("no branch", true);
        return;
    };
    if pipeline.add(&bin).is_err() {
        tracing::error!(peer = %shared.label, "cannot add the audio branch");
        return;
    }
    let _ = bin.sync_state_with_parent();
    {
        // cheap liveness signal for attachments that cannot be told by signalling that the
        // media stopped (WHEP): one atomic store per packet
        let shared = Arc::clone(shared);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let ms = started_at.elapsed().as_millis().max(1) as u64;
            shared.last_packet_ms.store(ms, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    let linked = bin.static_pad("sink").map(|sinkpad| pad.link(&sinkpad));
    if !matches!(linked, Some(Ok(_))) {
        tracing::error!(peer = %shared.label, mid, "cannot link the audio branch: {linked:?}");
        let _ = bin.set_state(gst::State::Null);
        let _ = pipeline.remove(&bin);
        return;
    }
    tracing::info!(peer = %shared.label, mid, "remote audio track flowing");
    shared
        .branches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Branch {
            mid: mid.clone(),
            pad: pad.clone(),
            element: bin.upcast(),
            tap: Some(tap),
            audio: true,
        });
    if tracks.try_send(RemoteTrack { mid, source }).is_err() {
        tracing::warn!(peer = %shared.label, "remote track not taken (queue full or peer closed)");
    }
}

fn fakesink() -> Option<gst::Element> {
    gst::ElementFactory::make("fakesink")
        .property("async", false)
        .property("sync", false)
        .build()
        .ok()
}

/// Builds (not adds) an audio branch and taps it as a live source on the room timeline.
fn audio_branch(
    pipeline: &gst::Pipeline,
    label: &str,
    mid: &str,
    started_at: Instant,
    jitter: Duration,
) -> Option<(gst::Bin, AudioSource, LiveTap)> {
    let (bin, sink, decoder) = match media::webrtc_audio_branch() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(peer = %label, "cannot build the audio branch: {e}");
            return None;
        }
    };
    let input = format!("{label}#{mid}");
    match AudioSource::tap(
        &input,
        pipeline,
        &sink,
        &decoder,
        started_at,
        jitter,
        &DecodeSettings {
            realtime: false,
            queue_chunks: media::DEFAULT_QUEUE_CHUNKS,
        },
    ) {
        Ok((source, tap)) => Some((bin, source, tap)),
        Err(e) => {
            tracing::error!(peer = %label, "cannot tap the audio branch: {e}");
            None
        }
    }
}

/// Replaces what `pad` feeds (`old`) by `new` (already built, not yet added) while the pad is
/// idle, so that no buffer meets an unlinked pad; then removes `old`. Blocking.
fn swap_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    old: &gst::Element,
    new: &gst::Element,
) -> Result<(), PeerError> {
    pipeline
        .add(new)
        .map_err(|e| PeerError::Gst(format!("cannot add a branch: {e}")))?;
    let _ = new.sync_state_with_parent();
    let new_sink = new
        .static_pad("sink")
        .ok_or_else(|| PeerError::Gst("branch without a sink pad".into()))?;
    let old_sink = old.static_pad("sink");
    let (tx, rx) = crossbeam_channel::bounded(1);
    pad.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
        if let Some(old_sink) = &old_sink {
            let _ = pad.unlink(old_sink);
        }
        let _ = tx.try_send(pad.link(&new_sink).is_ok());
        gst::PadProbeReturn::Remove
    });
    let linked = rx.recv_timeout(PROMISE_TIMEOUT).unwrap_or(false);
    let _ = old.set_state(gst::State::Null);
    let _ = pipeline.remove(old);
    if linked {
        Ok(())
    } else {
        let _ = new.set_state(gst::State::Null);
        let _ = pipeline.remove(new);
        Err(PeerError::Gst("cannot relink a remote track".into()))
    }
}

/// One receive-only peer connection. Dropping it removes its elements from the room pipeline and
/// ends its tracks' streams (their workers flush what was heard).
pub struct SubscriberPeer {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    shared: Arc<PeerShared>,
    tracks: Receiver<RemoteTrack>,
    started_at: Instant,
    jitter: Duration,
}

impl SubscriberPeer {
    /// Remote audio tracks as they start flowing.
    pub fn tracks(&self) -> &Receiver<RemoteTrack> {
        &self.tracks
    }

    /// Hands every remote track of this peer to `f`, on a small thread of its own, as soon as
    /// it flows; the thread ends when the peer is closed.
    pub fn forward(&self, f: impl Fn(RemoteTrack) + Send + 'static) {
        let (tracks, shared) = (self.tracks.clone(), Arc::clone(&self.shared));
        let spawned = std::thread::Builder::new()
            .name("sfu-tracks".into())
            .spawn(move || {
                while !shared.closed.load(Ordering::SeqCst) {
                    match tracks.recv_timeout(FORWARD_CHECK) {
                        Ok(track) => f(track),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(peer = %self.shared.label, "cannot start the track forwarder: {e}");
        }
    }

    /// Adds a remote ICE candidate (trickled by the SFU).
    pub fn add_candidate(&self, mline: u32, candidate: &str) {
        self.webrtc
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
    }

    /// The connection state as webrtcbin sees it (`new`, `connecting`, `connected`, `failed`...).
    pub fn state(&self) -> String {
        let s = self
            .webrtc
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
        format!("{s:?}").to_lowercase()
    }

    /// Label for logs.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// Room-timeline seconds of the last RTP packet received on one of this peer's audio
    /// tracks; `None` before the first.
    pub fn last_packet_s(&self) -> Option<f64> {
        match self.shared.last_packet_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    /// Sets the remote answer to the offer made by [`RoomMedia::offer`]. Blocking.
    pub fn accept_answer(&self, answer_sdp: &str) -> Result<(), PeerError> {
        let answer = gst_sdp::SDPMessage::parse_buffer(answer_sdp.as_bytes())
            .map_err(|e| PeerError::Sdp(format!("cannot parse the answer: {e}")))?;
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
        promise(&self.webrtc, "set-remote-description", &answer)
    }

    /// Ends the audio stream of the track on m-section `mid` (muted or unpublished remote
    /// track): its branch is replaced by a fakesink and its stream ends, so its worker closes
    /// the open segment with what was heard. False when no audio of `mid` is being tapped.
    /// Blocking.
    pub fn end_track(&self, mid: &str) -> Result<bool, PeerError> {
        let (pad, old, tap) = {
            let mut branches = self
                .shared
                .branches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(b) = branches
                .iter_mut()
                .find(|b| b.mid == mid && b.tap.is_some())
            else {
                return Ok(false);
            };
            let Some(sink) = fakesink() else {
                return Err(PeerError::Gst("no fakesink".into()));
            };
            let old = std::mem::replace(&mut b.element, sink.clone());
            (b.pad.clone(), (old, sink), b.tap.take())
        };
        let result = swap_branch(&self.pipeline, &pad, &old.0, &old.1);
        if let Some(tap) = tap {
            tap.end();
        }
        result.map(|()| true)
    }

    /// Taps the track on m-section `mid` again after [`SubscriberPeer::end_track`] (unmuted):
    /// a new branch and a new stream on the same room timeline. `None` when `mid` is not an
    /// ended audio track of this peer. Blocking.
    pub fn resume_track(&self, mid: &str) -> Result<Option<RemoteTrack>, PeerError> {
        let (pad, old) = {
            let branches = self
                .shared
                .branches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(b) = branches
                .iter()
                .find(|b| b.mid == mid && b.audio && b.tap.is_none())
            else {
                return Ok(None);
            };
            (b.pad.clone(), b.element.clone())
        };
        let Some((bin, source, tap)) = audio_branch(
            &self.pipeline,
            &self.shared.label,
            mid,
            self.started_at,
            self.jitter,
        ) else {
            return Err(PeerError::Gst("cannot build an audio branch".into()));
        };
        let bin: gst::Element = bin.upcast();
        swap_branch(&self.pipeline, &pad, &old, &bin)?;
        let mut branches = self
            .shared
            .branches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = branches.iter_mut().find(|b| b.mid == mid) {
            b.element = bin;
            b.tap = Some(tap);
        }
        tracing::info!(peer = %self.shared.label, mid, "remote audio track flowing again");
        Ok(Some(RemoteTrack {
            mid: mid.to_owned(),
            source,
        }))
    }

    /// Takes a new offer of the SFU on this connection (renegotiation: tracks added or
    /// removed) and returns the answer. New audio m-sections arrive on
    /// [`SubscriberPeer::tracks`] once they flow. Blocking.
    pub fn renegotiate(&self, offer_sdp: &str) -> Result<String, PeerError> {
        let offer = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes())
            .map_err(|e| PeerError::Sdp(format!("cannot parse the offer: {e}")))?;
        answer_offer(&self.webrtc, offer, None, &self.shared.label)
    }
}

impl Drop for SubscriberPeer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.webrtc.set_state(gst::State::Null);
        let _ = self.pipeline.remove(&self.webrtc);
        let branches = std::mem::take(
            &mut *self
                .shared
                .branches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for branch in branches {
            let _ = branch.element.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&branch.element);
            if let Some(tap) = branch.tap {
                tap.end();
            }
        }
    }
}

/// The `mid` → participant map the signalling side keeps for a peer with several tracks.
pub type MidMap = HashMap<String, String>;
