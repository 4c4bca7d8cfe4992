//! A participant that publishes a recording into a Janus VideoRoom through `webrtcbin`, as a
//! browser would publish its microphone: used to run real meetings against a real SFU in tests,
//! benchmarks and demos (`examples/janus_publish.rs`).
//!
//! The recording is decoded up front, then sent *live*: sample `i` is due at
//! `origin + i / 16000 s`, where `origin` is the meeting clock shared by all publishers of a test
//! meeting. Audio due while the publisher is not connected (before ICE completes, while Janus is
//! down) is not sent, as a live microphone's would be lost; on reconnection the publisher joins
//! again with the same feed id and continues at the current position.
//!
//! ```text
//! appsrc (16 kHz F32, live, timestamped on push) ▶ audioconvert ▶ opusenc ▶ rtpopuspay ▶ webrtcbin
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use serde_json::json;
use tokio::sync::watch;

use super::{AttachError, Janus, VIDEOROOM};
use crate::media::{self, AudioSource, DecodeSettings, MediaEvent, SAMPLE_RATE};
use crate::sfu::media::{MediaSettings, PeerError};
use crate::sfu::{BACKOFF_MIN, next_backoff};

/// Samples per pushed buffer (20 ms, one Opus frame).
const CHUNK: usize = SAMPLE_RATE as usize / 50;
/// Longest wait for the ICE/DTLS connection after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who publishes what.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub url: String,
    /// VideoRoom room id.
    pub room: u64,
    /// Feed id (kept across rejoins and reconnections).
    pub id: u64,
    pub display: String,
    pub media: MediaSettings,
}

/// Publishing state, for callers that wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishState {
    Connecting,
    /// Audio is being sent.
    Sending,
    /// The whole recording was sent.
    Finished,
    Stopped,
}

/// A running publisher. Dropping it (or [`FilePublisher::stop`]) leaves the room.
pub struct FilePublisher {
    state: watch::Receiver<PublishState>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    sent: Arc<AtomicU64>,
}

impl FilePublisher {
    /// Decodes `path` and starts publishing it on the meeting clock `origin`.
    pub async fn start(
        settings: PublishSettings,
        path: &str,
        origin: Instant,
    ) -> Result<FilePublisher, PeerError> {
        let path = path.to_owned();
        let audio = tokio::task::spawn_blocking(move || decode_all(&path))
            .await
            .map_err(|e| PeerError::Gst(format!("decode task: {e}")))??;
        let (state_tx, state) = watch::channel(PublishState::Connecting);
        let (stop, stop_rx) = watch::channel(false);
        let sent = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            settings,
            Arc::new(audio),
            origin,
            state_tx,
            stop_rx,
            Arc::clone(&sent),
        ));
        Ok(FilePublisher {
            state,
            stop,
            task: Some(task),
            sent,
        })
    }

    /// Waits until the state satisfies `f`, or `timeout`.
    pub async fn wait_for(
        &mut self,
        f: impl Fn(PublishState) -> bool,
        timeout: Duration,
    ) -> Option<PublishState> {
        tokio::time::timeout(timeout, self.state.wait_for(|s| f(*s)))
            .await
            .ok()?
            .ok()
            .map(|s| *s)
    }

    /// Samples sent so far.
    pub fn sent_samples(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Leaves the room and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for FilePublisher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn decode_all(path: &str) -> Result<Vec<f32>, PeerError> {
    let source = AudioSource::open(path, &DecodeSettings::default())?;
    let mut out = Vec::new();
    for event in source.receiver() {
        match event {
            MediaEvent::Audio(chunk) => {
                out.resize(chunk.first_sample as usize, 0.0);
                out.extend_from_slice(&chunk.samples);
            }
            MediaEvent::Eos => break,
            MediaEvent::Error(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn run(
    settings: PublishSettings,
    audio: Arc<Vec<f32>>,
    origin: Instant,
    state: watch::Sender<PublishState>,
    mut stop: watch::Receiver<bool>,
    sent: Arc<AtomicU64>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let _ = state.send(PublishState::Connecting);
        let result = session(&settings, &audio, origin, &state, &mut stop, &sent).await;
        match result {
            Ok(true) => {
                let _ = state.send(PublishState::Finished);
                return;
            }
            Ok(false) => break,
            Err(e) => tracing::info!(id = settings.id, "publisher: session ended: {e}"),
        }
        if origin.elapsed().as_secs_f64() * f64::from(SAMPLE_RATE) >= audio.len() as f64 {
            let _ = state.send(PublishState::Finished);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::sfu::stopped(&mut stop) => break,
        }
        backoff = next_backoff(backoff);
    }
    let _ = state.send(PublishState::Stopped);
}

/// One publishing session: `Ok(true)` when the recording ended, `Ok(false)` when stopped.
async fn session(
    settings: &PublishSettings,
    audio: &Arc<Vec<f32>>,
    origin: Instant,
    state: &watch::Sender<PublishState>,
    stop: &mut watch::Receiver<bool>,
    sent: &Arc<AtomicU64>,
) -> Result<bool, AttachError> {
    let (janus, mut events) = Janus::connect(&settings.url).await?;
    let handle = janus.attach(VIDEOROOM).await?;
    let (joined, _) = janus
        .request(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": settings.room,
                   "id": settings.id, "display": settings.display}),
            None,
        )
        .await?;
    if joined["videoroom"] != "joined" {
        return Err(AttachError::Protocol(format!("join answered {joined}")));
    }
    let media = settings.media.clone();
    let sender = tokio::task::spawn_blocking(move || Sender::offer(&media))
        .await
        .map_err(|e| AttachError::Protocol(format!("offer task: {e}")))??;
    tracing::debug!(id = settings.id, "publisher: offer ready");
    let (_, answer) = janus
        .request(
            handle,
            json!({"request": "publish", "audio": true, "video": false}),
            Some(json!({"type": "offer", "sdp": sender.offer})),
        )
        .await?;
    let answer = answer.ok_or_else(|| AttachError::Protocol("publish without an answer".into()))?;
    let sdp = answer["sdp"].as_str().unwrap_or_default().to_owned();
    tracing::debug!(id = settings.id, "publisher: answer received");
    sender.answer(&sdp)?;
    let _ = janus.trickle(handle, None).await;
    let connected = {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            if sender.connected() {
                break true;
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => sender.on_event(&ev.body),
                    None => break false,
                },
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    };
    if !connected {
        return Err(AttachError::Protocol(
            "publisher ICE/DTLS did not connect".into(),
        ));
    }
    tracing::debug!(id = settings.id, "publisher: connected");
    let _ = state.send(PublishState::Sending);
    let feeder = sender.feed(Arc::clone(audio), origin, Arc::clone(sent));
    let outcome = loop {
        tokio::select! {
            _ = crate::sfu::stopped(stop) => break Ok(false),
            ev = events.recv() => match ev {
                Some(ev) => {
                    if ev.body["janus"] == "hangup" {
                        break Err(AttachError::Protocol("Janus hung up".into()));
                    }
                    sender.on_event(&ev.body);
                }
                None => break Err(AttachError::Janus(super::JanusError::Closed)),
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if feeder.done.load(Ordering::SeqCst) {
                    break Ok(true);
                }
            }
        }
    };
    feeder.stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(t) = feeder.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        drop(sender);
    })
    .await;
    if outcome.is_ok() {
        let _ = janus
            .request(handle, json!({"request": "leave"}), None)
            .await;
        janus.close().await;
    }
    outcome
}

/// The sending pipeline of one session.
struct Sender {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    appsrc: gst_app::AppSrc,
    offer: String,
}

struct Feeder {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sender {
    /// Builds the pipeline and makes the offer (with our candidates). Blocking.
    fn offer(settings: &MediaSettings) -> Result<Sender, PeerError> {
        media::init()?;
        let text = format!(
            "appsrc name=src is-live=true format=time do-timestamp=true \
               caps=audio/x-raw,format=F32LE,rate={SAMPLE_RATE},channels=1,layout=interleaved \
             ! audioconvert ! audioresample ! opusenc bitrate=32000 frame-size=20 \
             ! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 \
             ! webrtcbin name=webrtc bundle-policy=max-bundle"
        );
        let pipeline = gst::parse::launch(&text)
            .map_err(|e| PeerError::Gst(format!("publisher pipeline: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| PeerError::Gst("not a pipeline".into()))?;
        let webrtc = pipeline
            .by_name("webrtc")
            .ok_or_else(|| PeerError::Gst("no webrtcbin".into()))?;
        let appsrc = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| PeerError::Gst("no appsrc".into()))?;
        if !settings.ice_addresses.is_empty() {
            let agent = webrtc.property::<gst::glib::Object>("ice-agent");
            for address in &settings.ice_addresses {
                agent.emit_by_name::<bool>("add-local-ip-address", &[address]);
            }
        }
        let (neg_tx, neg_rx) = crossbeam_channel::bounded::<()>(1);
        webrtc.connect("on-negotiation-needed", false, move |_| {
            let _ = neg_tx.try_send(());
            None
        });
        let gathered = crate::sfu::media::watch_gathering(&webrtc);
        let _ = pipeline.set_state(gst::State::Playing);
        // webrtcbin negotiates once caps reached its pad: send 20 ms of silence to get them there
        let _ = appsrc.push_buffer(gst::Buffer::from_mut_slice(vec![0_u8; CHUNK * 4]));
        let mut sender = Sender {
            pipeline,
            webrtc,
            appsrc,
            offer: String::new(),
        };
        neg_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| PeerError::Negotiation("webrtcbin never asked for negotiation".into()))?;
        if let Some(t) = sender
            .webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
        {
            t.set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
        }
        let (p, rx) = reply();
        sender
            .webrtc
            .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &p]);
        let offer = rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .and_then(|r| {
                r.value("offer")
                    .ok()
                    .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            })
            .ok_or_else(|| PeerError::Negotiation("create-offer failed".into()))?;
        sender
            .webrtc
            .emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        if !gathered.wait() {
            tracing::warn!("publisher: no ICE candidate gathered; offering without");
        }
        let local = sender
            .webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or_else(|| PeerError::Negotiation("no local description".into()))?;
        sender.offer = local
            .sdp()
            .as_text()
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        Ok(sender)
    }

    fn answer(&self, sdp: &str) -> Result<(), PeerError> {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|e| PeerError::Sdp(format!("answer: {e}")))?;
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
        Ok(())
    }

    fn on_event(&self, body: &serde_json::Value) {
        if body["janus"] == "trickle"
            && let (Some(c), Some(m)) = (
                body["candidate"]["candidate"].as_str(),
                body["candidate"]["sdpMLineIndex"].as_u64(),
            )
        {
            self.webrtc
                .emit_by_name::<()>("add-ice-candidate", &[&(m as u32), &c]);
        }
    }

    fn connected(&self) -> bool {
        self.webrtc
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
            == gst_webrtc::WebRTCPeerConnectionState::Connected
    }

    /// Starts the thread that pushes the recording at real time on the meeting clock.
    fn feed(&self, audio: Arc<Vec<f32>>, origin: Instant, sent: Arc<AtomicU64>) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let appsrc = self.appsrc.clone();
        let (s, d) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::Builder::new()
            .name("janus-publish".into())
            .spawn(move || {
                let rate = f64::from(SAMPLE_RATE);
                // start at the current position of the meeting clock, on a chunk boundary
                let mut pos = ((origin.elapsed().as_secs_f64() * rate) as usize / CHUNK) * CHUNK;
                while !s.load(Ordering::SeqCst) {
                    if pos >= audio.len() {
                        d.store(true, Ordering::SeqCst);
                        break;
                    }
                    let due = origin + Duration::from_secs_f64(pos as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        // pacing a live source: wait for the chunk's time to come
                        std::thread::sleep(wait);
                    }
                    let end = (pos + CHUNK).min(audio.len());
                    let bytes: Vec<u8> = audio[pos..end]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                    if appsrc
                        .push_buffer(gst::Buffer::from_mut_slice(bytes))
                        .is_err()
                    {
                        break;
                    }
                    sent.fetch_add((end - pos) as u64, Ordering::Relaxed);
                    pos = end;
                }
            })
            .ok();
        Feeder {
            stop,
            done,
            thread: Mutex::new(thread),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn reply() -> (
    gst::Promise,
    crossbeam_channel::Receiver<Option<gst::Structure>>,
) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.try_send(r.ok().flatten().map(|s| s.to_owned()));
    });
    (p, rx)
}
