//! RFC 9725's own flow (client offer, `201 Created` with the answer, `Location`, `DELETE`), which
//! Debian's Janus cannot serve (see `tests/sfu_whep.rs`): a minimal WHEP endpoint written here,
//! whose media side is a GStreamer `webrtcbin` answering soustitre's offer and sending a 440 Hz
//! Opus tone. Everything stays on 127.0.0.1 inside this process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use soustitre::media::{AudioSource, MediaEvent};
use soustitre::sfu::media::{MediaSettings, RoomMedia};
use soustitre::sfu::whep::{self, WhepEndpoint, WhepSettings};
use soustitre::sfu::{AttachState, AttachStatus, RemoteParticipant, RoomSink};
use tokio::sync::watch;

const TOKEN: &str = "rfc9725-token";

/// The test's WHEP server: its sessions and what it saw.
#[derive(Default)]
struct Server {
    sessions: Mutex<Vec<gst::Pipeline>>,
    posts: Mutex<Vec<(Option<String>, String)>>,
    deletes: Mutex<Vec<String>>,
}

fn answer_with_tone(offer: &str) -> Result<(gst::Pipeline, String), String> {
    gst::init().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample \
         ! opusenc ! rtpopuspay pt=111 name=pay \
         ! capsfilter caps=application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111 \
           name=rtpcaps \
         webrtcbin name=w bundle-policy=max-bundle",
    )
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline".to_string())?;
    let webrtc = pipeline.by_name("w").unwrap();
    let agent = webrtc.property::<gst::glib::Object>("ice-agent");
    assert!(agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]));
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).map_err(|e| e.to_string())?;
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
    let wait = |signal: &str, arg: Option<&gst_webrtc::WebRTCSessionDescription>| {
        let (tx, rx) = std::sync::mpsc::channel();
        let promise = gst::Promise::with_change_func(move |r| {
            let _ = tx.send(r.ok().flatten().map(|s| s.to_owned()));
        });
        match arg {
            Some(d) => webrtc.emit_by_name::<()>(signal, &[d, &promise]),
            None => webrtc.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]),
        }
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("{signal}: no reply"))
    };
    // a sending transceiver, which the offered m-line is matched to
    let sink = webrtc.request_pad_simple("sink_0").ok_or("no sink pad")?;
    pipeline
        .by_name("rtpcaps")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .link(&sink)
        .map_err(|e| format!("link: {e:?}"))?;
    if let Some(t) = sink.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver") {
        t.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
    }
    wait("set-remote-description", Some(&offer))?;
    let (gathered_tx, gathered) = std::sync::mpsc::channel();
    webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
        if w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            == gst_webrtc::WebRTCICEGatheringState::Complete
        {
            let _ = gathered_tx.send(());
        }
    });
    let reply = wait("create-answer", None)?.ok_or("no answer")?;
    let answer = reply
        .value("answer")
        .map_err(|e| e.to_string())?
        .get::<gst_webrtc::WebRTCSessionDescription>()
        .map_err(|e| e.to_string())?;
    wait("set-local-description", Some(&answer))?;
    let _ = gathered.recv_timeout(Duration::from_secs(3));
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or("no local description")?;
    Ok((pipeline, local.sdp().as_text().map_err(|e| e.to_string())?))
}

async fn on_post(State(s): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    s.posts.lock().unwrap().push((auth.clone(), content_type));
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let offer = String::from_utf8_lossy(&body).to_string();
    let answered = tokio::task::spawn_blocking(move || answer_with_tone(&offer))
        .await
        .unwrap();
    match answered {
        Ok((pipeline, answer)) => {
            let id = {
                let mut sessions = s.sessions.lock().unwrap();
                sessions.push(pipeline);
                sessions.len()
            };
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, format!("../resource/{id}")),
                    (header::ETAG, format!("\"session-{id}\"")),
                    (
                        header::LINK,
                        "<stun:127.0.0.1:3478>; rel=\"ice-server\"".to_owned(),
                    ),
                ],
                answer,
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn on_delete(
    State(s): State<Arc<Server>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> StatusCode {
    s.deletes.lock().unwrap().push(id);
    StatusCode::OK
}

struct Collect {
    audio: crossbeam_channel::Sender<(RemoteParticipant, AudioSource)>,
    states: Mutex<Vec<AttachStatus>>,
}

impl RoomSink for Collect {
    fn audio(&self, participant: &RemoteParticipant, source: AudioSource) {
        let _ = self.audio.send((participant.clone(), source));
    }
    fn participants(&self, _: &[RemoteParticipant]) {}
    fn outage(&self, _: f64, _: f64) {}
    fn status(&self, status: &AttachStatus) {
        self.states.lock().unwrap().push(status.clone());
    }
}

#[test]
fn a_201_answer_is_taken_and_the_resource_deleted() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("soustitre=debug")
        .with_test_writer()
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Arc::new(Server::default());
        let app = Router::new()
            .route("/whep/endpoint/tone", post(on_post))
            .route("/whep/resource/{id}", delete(on_delete))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let media_settings = MediaSettings {
            ice_addresses: vec!["127.0.0.1".into()],
            ..MediaSettings::default()
        };
        let media = Arc::new(RoomMedia::start("rfc9725", media_settings.clone()).unwrap());
        let (tx, audio) = crossbeam_channel::unbounded();
        let sink = Arc::new(Collect {
            audio: tx,
            states: Mutex::new(Vec::new()),
        });
        let participant = RemoteParticipant {
            track: "whep-tone".into(),
            identity: "tone".into(),
            name: "Tone".into(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let attach = tokio::spawn(whep::run(
            WhepSettings {
                endpoints: vec![WhepEndpoint {
                    url: format!("http://{addr}/whep/endpoint/tone"),
                    token: Some(TOKEN.into()),
                    participant: participant.clone(),
                }],
                media: media_settings,
                connect_timeout: whep::DEFAULT_CONNECT_TIMEOUT,
                media_timeout: whep::DEFAULT_MEDIA_TIMEOUT,
            },
            media.clone(),
            sink.clone(),
            stop_rx,
        ));
        let (who, source) = tokio::task::spawn_blocking(move || {
            audio
                .recv_timeout(Duration::from_secs(20))
                .expect("the tone's track flows")
        })
        .await
        .unwrap();
        assert_eq!(who, participant);
        // two seconds of the tone: loud all along
        let samples = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            while out.len() < 32_000 {
                match source.receiver().recv_timeout(Duration::from_secs(5)) {
                    Ok(MediaEvent::Audio(c)) => out.extend_from_slice(&c.samples),
                    other => panic!("audio stopped: {other:?}"),
                }
            }
            out
        })
        .await
        .unwrap();
        let tail = &samples[16_000..];
        let rms = (tail.iter().map(|v| v * v).sum::<f32>() / tail.len() as f32).sqrt();
        assert!(rms > 0.05, "tone rms {rms}");
        {
            let posts = server.posts.lock().unwrap();
            assert_eq!(posts.len(), 1, "{posts:?}");
            assert_eq!(posts[0].0.as_deref(), Some(&*format!("Bearer {TOKEN}")));
            assert_eq!(posts[0].1, "application/sdp");
        }
        let connected =
            sink.states.lock().unwrap().iter().any(|s| {
                s.state == AttachState::Connected && s.participants == [participant.clone()]
            });
        assert!(connected, "{:?}", sink.states.lock().unwrap());

        // detach: the resource (Location `../resource/1`, resolved against the endpoint URL) is
        // deleted before the attachment ends
        stop.send(true).unwrap();
        attach.await.unwrap();
        assert_eq!(*server.deletes.lock().unwrap(), vec!["1".to_string()]);
        assert_eq!(
            sink.states.lock().unwrap().last().map(|s| s.state),
            Some(AttachState::Stopped)
        );
        for p in server.sessions.lock().unwrap().drain(..) {
            let _ = p.set_state(gst::State::Null);
        }
    });
}
