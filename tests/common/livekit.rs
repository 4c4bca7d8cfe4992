//! A LiveKit server stand-in for end-to-end tests.
//!
//! No LiveKit server can be installed where these tests run (no Go toolchain or module proxy, no
//! GitHub downloads), so this is a *protocol-faithful stand-in*, not LiveKit: a tokio WebSocket
//! server at `/rtc` that
//!
//! * checks the access token like a server would (HS256 with the API secret, issuer = API key,
//!   not expired) and that its grants are the sidecar's narrow ones (room join for that room,
//!   `canSubscribe`, no `canPublish`, `canPublishData`, `hidden`), refusing the upgrade with 401
//!   otherwise;
//! * speaks `livekit-protocol` protobuf (`SignalRequest` / `SignalResponse`): `join` with the
//!   scripted participants and their audio tracks, then, as a subscriber-primary server does,
//!   an `offer` of the subscriber connection holding only the server's `_reliable` data
//!   channel; once the sidecar subscribed, a renegotiation `offer` of the same connection from
//!   a GStreamer webrtcbin that *sends* each participant's audio (Opus, `a=msid:PA_..|TR_..`,
//!   played in real time from a recording); trickled candidates both ways, the `answer` to the
//!   sidecar's publisher offer from a second webrtcbin that *receives* its data channels,
//!   `pong`s, and participant updates (mute, leave) on demand;
//! * decodes every message received on the data channels as a `DataPacket` and hands it to the
//!   test.
//!
//! What it does not do that a LiveKit server does: SFU forwarding between real clients,
//! renegotiation when tracks come and go after the first subscription (mute and leave are
//! participant updates only), sending data on the subscriber connection's channel, TURN,
//! regions, resume. Everything runs inside the test's network
//! namespace (see `common/janus.rs`): ICE uses the veth address [`super::janus::ICE_ADDRESS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, handshake::server};

use super::janus::ICE_ADDRESS;

/// Samples per pushed buffer (20 ms at 16 kHz).
const CHUNK: usize = 320;
/// Delay between the subscriber connection being up and the meeting clock's 0.
const MEETING_LEAD: Duration = Duration::from_millis(500);

/// One scripted participant.
#[derive(Debug, Clone)]
pub struct Person {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub track_sid: String,
    /// 16 kHz mono samples, played from the meeting clock's 0.
    pub audio: Arc<Vec<f32>>,
}

/// What the stand-in reports to the test.
#[derive(Debug, Clone)]
pub enum Report {
    /// A signalling connection was accepted with this token (claims as JSON).
    Connected {
        connection: usize,
        jwt: String,
        claims: serde_json::Value,
    },
    /// A connection's token was refused.
    Refused(String),
    /// The sidecar asked for these track sids.
    Subscribed {
        connection: usize,
        tracks: Vec<String>,
    },
    /// The meeting clock started (audio is being sent).
    MeetingStarted,
    /// Every participant's audio was sent.
    AudioDone,
    /// A data packet arrived on one of the sidecar's data channels.
    Data {
        at: Instant,
        channel: String,
        packet: Box<proto::DataPacket>,
    },
}

/// What the test asks the stand-in to do on the current connection.
#[derive(Debug, Clone)]
pub enum Control {
    /// The participant's track is muted (participant update) and its audio stops.
    Mute { identity: String },
    /// The participant's track is unmuted (participant update) and `audio` (16 kHz) is played
    /// on it in real time from now.
    Unmute {
        identity: String,
        audio: Arc<Vec<f32>>,
    },
    /// The participant leaves the room (participant update, state disconnected).
    Leave { identity: String },
    /// The signalling socket is dropped without a `leave` (the TCP connection just ends).
    DropSocket,
}

/// The stand-in's settings.
pub struct StandInSettings {
    pub api_key: String,
    pub api_secret: String,
    pub room: String,
    pub people: Vec<Person>,
}

/// A running stand-in.
pub struct StandIn {
    pub port: u16,
    pub reports: mpsc::UnboundedReceiver<Report>,
    control: mpsc::UnboundedSender<Control>,
}

impl StandIn {
    /// Listens on 127.0.0.1 (a free port).
    pub async fn start(settings: StandInSettings) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            settings,
            reports: reports_tx,
            left: Mutex::new(Vec::new()),
            muted: Mutex::new(Vec::new()),
            version: Mutex::new(1),
        });
        tokio::spawn(serve(listener, shared, control_rx));
        StandIn {
            port,
            reports,
            control,
        }
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn control(&self, c: Control) {
        self.control.send(c).unwrap();
    }
}

struct Shared {
    settings: StandInSettings,
    reports: mpsc::UnboundedSender<Report>,
    /// Identities that left (not listed on later joins).
    left: Mutex<Vec<String>>,
    /// Identities whose track is muted.
    muted: Mutex<Vec<String>>,
    version: Mutex<u32>,
}

impl Shared {
    fn report(&self, r: Report) {
        let _ = self.reports.send(r);
    }

    fn next_version(&self) -> u32 {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        *v
    }

    fn info(&self, p: &Person, state: proto::participant_info::State) -> proto::ParticipantInfo {
        let muted = self.muted.lock().unwrap().contains(&p.identity);
        let tracks = if state == proto::participant_info::State::Disconnected {
            Vec::new()
        } else {
            vec![proto::TrackInfo {
                sid: p.track_sid.clone(),
                r#type: proto::TrackType::Audio as i32,
                name: "microphone".into(),
                muted,
                source: proto::TrackSource::Microphone as i32,
                mime_type: "audio/opus".into(),
                mid: "0".into(),
                ..Default::default()
            }]
        };
        proto::ParticipantInfo {
            sid: p.sid.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            state: state as i32,
            tracks,
            version: self.next_version(),
            ..Default::default()
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut connection = 0;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        connection += 1;
        // one connection at a time: the sidecar's rejoin comes after the previous one ended
        handle(connection, tcp, &shared, &mut control).await;
    }
}

/// The grants the sidecar's token must carry, checked like a server would.
fn check_token(jwt: &str, s: &StandInSettings) -> Result<serde_json::Value, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_aud = false;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    v.set_issuer(&[&s.api_key]);
    let data =
        decode::<serde_json::Value>(jwt, &DecodingKey::from_secret(s.api_secret.as_bytes()), &v)
            .map_err(|e| format!("token refused: {e}"))?;
    let c = data.claims;
    let video = &c["video"];
    let want = [
        ("roomJoin", video["roomJoin"] == true),
        ("room", video["room"] == s.room.as_str()),
        ("canSubscribe", video["canSubscribe"] == true),
        ("canPublish", video["canPublish"] == false),
        ("canPublishData", video["canPublishData"] == true),
        ("hidden", video["hidden"] == true),
    ];
    if let Some((grant, _)) = want.iter().find(|(_, ok)| !ok) {
        return Err(format!("grant {grant} is wrong in {c}"));
    }
    Ok(c)
}

fn frame(m: Resp) -> Message {
    Message::Binary(
        proto::SignalResponse { message: Some(m) }
            .encode_to_vec()
            .into(),
    )
}

// the WebSocket handshake callback's error type is tungstenite's HTTP response
#[allow(clippy::result_large_err)]
async fn handle(
    connection: usize,
    tcp: tokio::net::TcpStream,
    shared: &Arc<Shared>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) {
    let mut token = None;
    let callback = |req: &server::Request, resp: server::Response| {
        let uri = req.uri();
        let jwt = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .unwrap_or_default()
            .to_string();
        let refuse = |why: String| {
            let mut r = server::ErrorResponse::new(Some(why));
            *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            r
        };
        if uri.path() != "/rtc" {
            return Err(refuse(format!("path {} is not /rtc", uri.path())));
        }
        match check_token(&jwt, &shared.settings) {
            Ok(claims) => {
                token = Some((jwt, claims));
                Ok(resp)
            }
            Err(why) => {
                shared.report(Report::Refused(why.clone()));
                Err(refuse(why))
            }
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let Some((jwt, claims)) = token else { return };
    let identity = claims["sub"].as_str().unwrap_or_default().to_string();
    shared.report(Report::Connected {
        connection,
        jwt,
        claims,
    });

    let people: Vec<Person> = {
        let left = shared.left.lock().unwrap();
        shared
            .settings
            .people
            .iter()
            .filter(|p| !left.contains(&p.identity))
            .cloned()
            .collect()
    };
    let join = proto::JoinResponse {
        room: Some(proto::Room {
            sid: "RM_standin".into(),
            name: shared.settings.room.clone(),
            ..Default::default()
        }),
        participant: Some(proto::ParticipantInfo {
            sid: format!("PA_sidecar{connection}"),
            identity,
            state: proto::participant_info::State::Joined as i32,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: false,
                can_publish_data: true,
                hidden: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        other_participants: people
            .iter()
            .map(|p| shared.info(p, proto::participant_info::State::Active))
            .collect(),
        server_version: "stand-in".into(),
        // as a LiveKit server announces its STUN and TURN servers (nothing listens there: the
        // sidecar must still connect over its host candidates)
        ice_servers: vec![
            proto::IceServer {
                urls: vec![format!("stun:{}:3478", super::janus::ICE_ADDRESS)],
                ..Default::default()
            },
            proto::IceServer {
                urls: vec![format!(
                    "turn:{}:3478?transport=udp",
                    super::janus::ICE_ADDRESS
                )],
                username: "1733:sidecar".into(),
                credential: "a+b/c=".into(),
            },
        ],
        subscriber_primary: true,
        ping_interval: 5,
        ping_timeout: 15,
        ..Default::default()
    };
    if ws.send(frame(Resp::Join(join))).await.is_err() {
        return;
    }

    // media (first connection only: later ones carry no audio): the subscriber connection is
    // offered right after the join with the server's data channel only, then renegotiated
    // with the participants' audio once the sidecar subscribed to their tracks
    let (media_tx, mut media_rx) = mpsc::unbounded_channel::<MediaOut>();
    let mut sender: Option<Arc<AudioSender>> = None;
    let mut receiver: Option<DataReceiver> = None;
    let mut audio_offered = false;
    let mut want_audio = false;
    let mut answered = 0;
    let mut feeding = false;
    if connection == 1 {
        let tx = media_tx.clone();
        let s = tokio::task::spawn_blocking(move || AudioSender::start(tx))
            .await
            .unwrap();
        let desc = proto::SessionDescription {
            r#type: "offer".into(),
            sdp: s.offer.clone(),
            id: 1,
            ..Default::default()
        };
        sender = Some(Arc::new(s));
        if ws.send(frame(Resp::Offer(desc))).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Binary(bytes) = msg else { continue };
                let Ok(req) = proto::SignalRequest::decode(&bytes[..]) else { continue };
                let mut pong = None;
                match req.message {
                    Some(Req::Subscription(s)) => {
                        let tracks: Vec<String> = s.track_sids.clone();
                        shared.report(Report::Subscribed { connection, tracks: tracks.clone() });
                        want_audio |= s.subscribe;
                    }
                    Some(Req::Answer(a)) => {
                        if let Some(s) = sender.clone() {
                            let s2 = Arc::clone(&s);
                            tokio::task::spawn_blocking(move || s2.set_answer(&a.sdp)).await.unwrap();
                            answered = a.id;
                            if a.id == 2 && !feeding {
                                feeding = true;
                                s.feed(people.clone(), shared.reports.clone());
                            }
                        }
                    }
                    Some(Req::Offer(o)) => {
                        let tx = media_tx.clone();
                        let reports = shared.reports.clone();
                        let r = tokio::task::spawn_blocking(move || DataReceiver::answer(&o.sdp, tx, reports))
                            .await
                            .unwrap();
                        let desc = proto::SessionDescription { r#type: "answer".into(), sdp: r.answer.clone(), id: 0, ..Default::default() };
                        receiver = Some(r);
                        if ws.send(frame(Resp::Answer(desc))).await.is_err() { break }
                    }
                    Some(Req::Trickle(t)) => {
                        let init: serde_json::Value = serde_json::from_str(&t.candidate_init).unwrap_or_default();
                        if let (Some(c), Some(m)) = (init["candidate"].as_str(), init["sdpMLineIndex"].as_u64()) {
                            let webrtc = if t.target == proto::SignalTarget::Subscriber as i32 {
                                sender.as_ref().map(|s| s.webrtc.clone())
                            } else {
                                receiver.as_ref().map(|r| r.webrtc.clone())
                            };
                            if let Some(w) = webrtc {
                                w.emit_by_name::<()>("add-ice-candidate", &[&(m as u32), &c]);
                            }
                        }
                    }
                    Some(Req::Ping(ts)) => pong = Some(frame(Resp::Pong(ts))),
                    Some(Req::PingReq(p)) => {
                        let r = proto::Pong { last_ping_timestamp: p.timestamp, timestamp: p.timestamp };
                        pong = Some(frame(Resp::PongResp(r)));
                    }
                    Some(Req::Leave(_)) => break,
                    _ => {}
                }
                if let Some(pong) = pong
                    && ws.send(pong).await.is_err()
                {
                    break;
                }
                // like LiveKit, one negotiation at a time: the audio is offered once the first
                // offer was answered and the sidecar subscribed
                if let Some(sender) = sender.clone()
                    && want_audio
                    && answered == 1
                    && !audio_offered
                {
                    audio_offered = true;
                    let people = people.clone();
                    let offer = tokio::task::spawn_blocking(move || sender.add_audio(&people))
                        .await
                        .unwrap();
                    let desc = proto::SessionDescription {
                        r#type: "offer".into(),
                        sdp: offer,
                        id: 2,
                        ..Default::default()
                    };
                    if ws.send(frame(Resp::Offer(desc))).await.is_err() {
                        break;
                    }
                }
            }
            out = media_rx.recv() => {
                let Some(MediaOut::Candidate { target, mline, candidate }) = out else { continue };
                let init = serde_json::json!({"candidate": candidate, "sdpMid": null, "sdpMLineIndex": mline});
                let t = proto::TrickleRequest { candidate_init: init.to_string(), target: target as i32, r#final: false };
                if ws.send(frame(Resp::Trickle(t))).await.is_err() { break }
            }
            c = control.recv() => match c {
                None | Some(Control::DropSocket) => {
                    // no close frame, no leave: the TCP connection just ends
                    drop(ws);
                    break;
                }
                Some(Control::Mute { identity }) => {
                    shared.muted.lock().unwrap().push(identity.clone());
                    if let Some(s) = &sender {
                        s.silence(&identity);
                    }
                    if let Some(p) = people.iter().find(|p| p.identity == identity) {
                        let info = shared.info(p, proto::participant_info::State::Active);
                        let u = proto::ParticipantUpdate { participants: vec![info] };
                        if ws.send(frame(Resp::Update(u))).await.is_err() { break }
                    }
                }
                Some(Control::Unmute { identity, audio }) => {
                    shared.muted.lock().unwrap().retain(|m| m != &identity);
                    if let Some(p) = people.iter().find(|p| p.identity == identity) {
                        let info = shared.info(p, proto::participant_info::State::Active);
                        let u = proto::ParticipantUpdate { participants: vec![info] };
                        if ws.send(frame(Resp::Update(u))).await.is_err() { break }
                    }
                    if let Some(s) = &sender {
                        s.play(&identity, audio, shared.reports.clone());
                    }
                }
                Some(Control::Leave { identity }) => {
                    shared.left.lock().unwrap().push(identity.clone());
                    if let Some(s) = &sender {
                        s.silence(&identity);
                    }
                    if let Some(p) = people.iter().find(|p| p.identity == identity) {
                        let info = shared.info(p, proto::participant_info::State::Disconnected);
                        let u = proto::ParticipantUpdate { participants: vec![info] };
                        if ws.send(frame(Resp::Update(u))).await.is_err() { break }
                    }
                }
            },
        }
    }
    if let Some(s) = sender {
        s.stopped.store(true, Ordering::SeqCst);
    }
    let _ = tokio::task::spawn_blocking(move || {
        drop(receiver);
    })
    .await;
}

/// What the media side sends to the signalling side.
enum MediaOut {
    Candidate {
        target: proto::SignalTarget,
        mline: u32,
        candidate: String,
    },
}

fn restrict_ice(webrtc: &gst::Element) {
    let agent = webrtc.property::<gst::glib::Object>("ice-agent");
    assert!(agent.emit_by_name::<bool>("add-local-ip-address", &[&ICE_ADDRESS]));
}

fn trickle(
    webrtc: &gst::Element,
    target: proto::SignalTarget,
    out: mpsc::UnboundedSender<MediaOut>,
) {
    webrtc.connect("on-ice-candidate", false, move |args| {
        let mline = args[1].get::<u32>().unwrap();
        let candidate = args[2].get::<String>().unwrap();
        let _ = out.send(MediaOut::Candidate {
            target,
            mline,
            candidate,
        });
        None
    });
}

fn wait_promise(f: impl FnOnce(&gst::Promise)) -> Option<gst::Structure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.send(r.ok().flatten().map(|s| s.to_owned()));
    });
    f(&p);
    rx.recv_timeout(Duration::from_secs(10)).ok().flatten()
}

fn description(reply: Option<gst::Structure>, field: &str) -> gst_webrtc::WebRTCSessionDescription {
    reply
        .and_then(|r| r.value(field).ok().and_then(|v| v.get().ok()))
        .unwrap_or_else(|| panic!("webrtcbin gave no {field}"))
}

/// The server side of the subscriber connection: sends each participant's audio.
struct AudioSender {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    offer: String,
    stopped: Arc<AtomicBool>,
    silenced: Arc<Mutex<Vec<String>>>,
    /// (identity, its appsrc).
    sources: Mutex<Vec<(String, gst_app::AppSrc)>>,
}

impl AudioSender {
    /// The first subscriber offer, right after the join, as LiveKit makes it when the server
    /// is subscriber-primary: no media yet, only the server's own `_reliable` data channel.
    fn start(out: mpsc::UnboundedSender<MediaOut>) -> AudioSender {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtc).unwrap();
        restrict_ice(&webrtc);
        trickle(&webrtc, proto::SignalTarget::Subscriber, out);
        pipeline.set_state(gst::State::Playing).unwrap();
        let options = gst::Structure::builder("config")
            .field("ordered", true)
            .build();
        webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
                "create-data-channel",
                &[&"_reliable", &options],
            )
            .unwrap();
        let offer = description(
            wait_promise(|p| {
                webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, p])
            }),
            "offer",
        );
        wait_promise(|p| webrtc.emit_by_name::<()>("set-local-description", &[&offer, p]));
        AudioSender {
            pipeline,
            webrtc,
            offer: offer.sdp().as_text().unwrap(),
            stopped: Arc::new(AtomicBool::new(false)),
            silenced: Arc::new(Mutex::new(Vec::new())),
            sources: Mutex::new(Vec::new()),
        }
    }

    /// Renegotiation after the sidecar subscribed: one sending Opus stream per participant
    /// (`a=msid:PA_..|TR_..`) added to the running connection; returns the new offer.
    fn add_audio(&self, people: &[Person]) -> String {
        let first = self.webrtc.sink_pads().len();
        for p in people {
            let bin = gst::parse::bin_from_description(
                "appsrc name=src is-live=true format=time do-timestamp=true \
                   caps=audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved \
                 ! audioconvert ! audioresample ! opusenc bitrate=32000 frame-size=20 \
                 ! rtpopuspay pt=111 \
                 ! capsfilter caps=application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
                true,
            )
            .unwrap();
            self.pipeline.add(&bin).unwrap();
            let sink = self.webrtc.request_pad_simple("sink_%u").unwrap();
            sink.set_property("msid", format!("{}|{}", p.sid, p.track_sid));
            bin.static_pad("src").unwrap().link(&sink).unwrap();
            bin.sync_state_with_parent().unwrap();
            let src = bin
                .by_name("src")
                .unwrap()
                .downcast::<gst_app::AppSrc>()
                .unwrap();
            // caps reach webrtcbin's pad with a first buffer of silence
            let _ = src.push_buffer(gst::Buffer::from_mut_slice(vec![0_u8; CHUNK * 4]));
            self.sources.lock().unwrap().push((p.identity.clone(), src));
        }
        // every sink pad must know its caps before the offer is made
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .webrtc
            .sink_pads()
            .iter()
            .any(|p| p.current_caps().is_none())
        {
            assert!(Instant::now() < deadline, "webrtcbin sink pads got no caps");
            std::thread::sleep(Duration::from_millis(10)); // polling pad caps, not synchronising
        }
        for i in first..first + people.len() {
            if let Some(t) = self
                .webrtc
                .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>(
                    "get-transceiver",
                    &[&(i as i32)],
                )
            {
                t.set_property(
                    "direction",
                    gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
                );
            }
        }
        let offer = description(
            wait_promise(|p| {
                self.webrtc
                    .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, p])
            }),
            "offer",
        );
        wait_promise(|p| {
            self.webrtc
                .emit_by_name::<()>("set-local-description", &[&offer, p])
        });
        offer.sdp().as_text().unwrap()
    }

    fn set_answer(&self, sdp: &str) {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        wait_promise(|p| {
            self.webrtc
                .emit_by_name::<()>("set-remote-description", &[&answer, p])
        });
    }

    /// Stops sending `identity`'s audio (muted, left).
    fn silence(&self, identity: &str) {
        self.silenced.lock().unwrap().push(identity.to_string());
    }

    /// Plays `audio` on `identity`'s track in real time from now (after [`Self::silence`]);
    /// reports [`Report::AudioDone`] at the end.
    fn play(&self, identity: &str, audio: Arc<Vec<f32>>, reports: mpsc::UnboundedSender<Report>) {
        self.silenced.lock().unwrap().retain(|s| s != identity);
        let Some(src) = self
            .sources
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i == identity)
            .map(|(_, s)| s.clone())
        else {
            return;
        };
        let stopped = Arc::clone(&self.stopped);
        std::thread::spawn(move || {
            let origin = Instant::now();
            let mut pos = 0;
            while pos < audio.len() && !stopped.load(Ordering::SeqCst) {
                let due = origin + Duration::from_secs_f64(pos as f64 / 16_000.0);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    // pacing a live source: each 20 ms chunk leaves at its time
                    std::thread::sleep(wait);
                }
                let end = (pos + CHUNK).min(audio.len());
                let bytes: Vec<u8> = audio[pos..end]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                let _ = src.push_buffer(gst::Buffer::from_mut_slice(bytes));
                pos = end;
            }
            let _ = reports.send(Report::AudioDone);
        });
    }

    /// Once connected, pushes every participant's audio in real time on one meeting clock.
    fn feed(&self, people: Vec<Person>, reports: mpsc::UnboundedSender<Report>) {
        let appsrcs: Vec<gst_app::AppSrc> = self
            .sources
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let (webrtc, stopped, silenced) = (
            self.webrtc.clone(),
            Arc::clone(&self.stopped),
            Arc::clone(&self.silenced),
        );
        std::thread::spawn(move || {
            // the meeting starts once ICE and DTLS are up (audio sent before would be lost)
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let tx = Mutex::new(Some(tx));
            webrtc.connect_notify(Some("connection-state"), move |w, _| {
                if w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
                    == gst_webrtc::WebRTCPeerConnectionState::Connected
                    && let Some(tx) = tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
            });
            let connected = webrtc
                .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
                == gst_webrtc::WebRTCPeerConnectionState::Connected;
            if !connected && rx.recv_timeout(Duration::from_secs(30)).is_err() {
                return;
            }
            let origin = Instant::now() + MEETING_LEAD;
            let _ = reports.send(Report::MeetingStarted);
            let longest = people.iter().map(|p| p.audio.len()).max().unwrap_or(0);
            let mut pos = 0;
            while pos < longest && !stopped.load(Ordering::SeqCst) {
                let due = origin + Duration::from_secs_f64(pos as f64 / 16_000.0);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    // pacing a live source: each 20 ms chunk leaves at its time
                    std::thread::sleep(wait);
                }
                let silenced = silenced.lock().unwrap().clone();
                for (p, src) in people.iter().zip(&appsrcs) {
                    if silenced.contains(&p.identity) || pos >= p.audio.len() {
                        continue;
                    }
                    let end = (pos + CHUNK).min(p.audio.len());
                    let bytes: Vec<u8> = p.audio[pos..end]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                    let _ = src.push_buffer(gst::Buffer::from_mut_slice(bytes));
                }
                pos += CHUNK;
            }
            let _ = reports.send(Report::AudioDone);
        });
    }
}

impl Drop for AudioSender {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The server side of the publisher connection: receives the sidecar's data channels.
struct DataReceiver {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    answer: String,
}

impl DataReceiver {
    fn answer(
        offer: &str,
        out: mpsc::UnboundedSender<MediaOut>,
        reports: mpsc::UnboundedSender<Report>,
    ) -> DataReceiver {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtc).unwrap();
        restrict_ice(&webrtc);
        trickle(&webrtc, proto::SignalTarget::Publisher, out);
        let channels: Arc<Mutex<HashMap<String, gst_webrtc::WebRTCDataChannel>>> = Arc::default();
        webrtc.connect("on-data-channel", false, move |args| {
            let channel = args[1].get::<gst_webrtc::WebRTCDataChannel>().unwrap();
            let label = channel.label().map(|l| l.to_string()).unwrap_or_default();
            let reports = reports.clone();
            let l = label.clone();
            channel.connect_on_message_data(move |_, data| {
                let Some(data) = data else { return };
                let packet = proto::DataPacket::decode(&data[..]).expect("a DataPacket");
                let _ = reports.send(Report::Data {
                    at: Instant::now(),
                    channel: l.clone(),
                    packet: Box::new(packet),
                });
            });
            channels.lock().unwrap().insert(label, channel);
            None
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).unwrap();
        let offer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, msg);
        wait_promise(|p| webrtc.emit_by_name::<()>("set-remote-description", &[&offer, p]));
        let answer = description(
            wait_promise(|p| {
                webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, p])
            }),
            "answer",
        );
        wait_promise(|p| webrtc.emit_by_name::<()>("set-local-description", &[&answer, p]));
        let sdp = answer.sdp().as_text().unwrap();
        DataReceiver {
            pipeline,
            webrtc,
            answer: sdp,
        }
    }
}

impl Drop for DataReceiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A text stream reassembled from `DataPacket`s.
#[derive(Debug, Clone)]
pub struct TextStream {
    pub at: Instant,
    pub identity: String,
    pub topic: String,
    pub attributes: HashMap<String, String>,
    pub text: String,
}

/// A text stream being received: sender identity, header, chunks (index, bytes).
type OpenStream = (String, proto::data_stream::Header, Vec<(u64, Vec<u8>)>);

/// Reassembles text streams (header, chunks, trailer) from data packets.
#[derive(Default)]
pub struct Streams {
    open: HashMap<String, OpenStream>,
    /// Complete streams, in trailer order.
    pub done: Vec<TextStream>,
    /// Legacy transcription packets.
    pub legacy: Vec<proto::Transcription>,
}

impl Streams {
    pub fn add(&mut self, at: Instant, packet: proto::DataPacket) {
        use proto::data_packet::Value;
        #[allow(deprecated)]
        let identity = packet.participant_identity.clone();
        match packet.value {
            Some(Value::StreamHeader(h)) => {
                self.open
                    .insert(h.stream_id.clone(), (identity, h, Vec::new()));
            }
            Some(Value::StreamChunk(c)) => {
                if let Some((_, _, chunks)) = self.open.get_mut(&c.stream_id) {
                    chunks.push((c.chunk_index, c.content));
                }
            }
            Some(Value::StreamTrailer(t)) => {
                if let Some((identity, h, mut chunks)) = self.open.remove(&t.stream_id) {
                    chunks.sort_by_key(|(i, _)| *i);
                    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
                    self.done.push(TextStream {
                        at,
                        identity,
                        topic: h.topic,
                        attributes: h.attributes,
                        text: String::from_utf8(bytes).expect("UTF-8 text"),
                    });
                }
            }
            Some(Value::Transcription(t)) => self.legacy.push(t),
            _ => {}
        }
    }
}
