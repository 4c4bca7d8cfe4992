//! Attaching to a real Janus VideoRoom (Debian's janus) with real webrtcbin publishers, inside a
//! network namespace of the test's own (see `common/janus.rs`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use soustitre::media::{AudioSource, MediaEvent};
use soustitre::sfu::janus::publish::{FilePublisher, PublishSettings, PublishState};
use soustitre::sfu::janus::{self as sfu_janus, JanusSettings};
use soustitre::sfu::media::{MediaSettings, RoomMedia};
use soustitre::sfu::{AttachState, AttachStatus, RemoteParticipant, RoomSink};
use tokio::sync::watch;

use common::janus::{ICE_ADDRESS, JanusServer, ROOM, in_netns, url};

/// Time given to publishers and soustitre to connect before the meeting clock starts.
const CONNECT_LEAD: Duration = Duration::from_secs(14);

fn media_settings() -> MediaSettings {
    MediaSettings {
        ice_addresses: vec![ICE_ADDRESS.to_owned()],
        ..MediaSettings::default()
    }
}

fn publisher(id: u64, display: &str) -> PublishSettings {
    PublishSettings {
        url: url(),
        room: ROOM,
        id,
        display: display.to_owned(),
        media: media_settings(),
    }
}

/// Collects what the attachment reports.
struct Collect {
    audio: Sender<(RemoteParticipant, AudioSource)>,
    states: Mutex<Vec<AttachState>>,
    outages: Mutex<Vec<(f64, f64)>>,
}

impl RoomSink for Collect {
    fn audio(&self, participant: &RemoteParticipant, source: AudioSource) {
        self.audio.send((participant.clone(), source)).unwrap();
    }
    fn participants(&self, _: &[RemoteParticipant]) {}
    fn outage(&self, from_s: f64, to_s: f64) {
        self.outages.lock().unwrap().push((from_s, to_s));
    }
    fn status(&self, status: &AttachStatus) {
        self.states.lock().unwrap().push(status.state);
    }
}

fn collector() -> (Arc<Collect>, Receiver<(RemoteParticipant, AudioSource)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Arc::new(Collect {
            audio: tx,
            states: Mutex::new(Vec::new()),
            outages: Mutex::new(Vec::new()),
        }),
        rx,
    )
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Reads `seconds` of audio from a source (gaps counted as silence), by sample index.
fn read_audio(source: &AudioSource, seconds: f64) -> (u64, Vec<f32>) {
    let mut first = None;
    let mut out = Vec::new();
    let want = (seconds * 16_000.0) as usize;
    while out.len() < want {
        match source.receiver().recv_timeout(Duration::from_secs(10)) {
            Ok(MediaEvent::Audio(c)) => {
                let f = *first.get_or_insert(c.first_sample);
                out.resize((c.first_sample - f) as usize, 0.0);
                out.extend_from_slice(&c.samples);
            }
            other => panic!("audio stopped: {other:?}"),
        }
    }
    (first.unwrap(), out)
}

#[test]
fn a_publishers_audio_reaches_its_participants_track() {
    if !in_netns("a_publishers_audio_reaches_its_participants_track") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("soustitre=debug")
        .with_test_writer()
        .try_init();
    let janus = JanusServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let media = Arc::new(RoomMedia::start("plumbing", media_settings()).unwrap());
        let (sink, audio) = collector();
        let (stop, stop_rx) = watch::channel(false);
        let attach = tokio::spawn(sfu_janus::run(
            JanusSettings {
                url: url(),
                room: ROOM.to_string(),
                pin: None,
                display: sfu_janus::DEFAULT_DISPLAY.into(),
                media: media_settings(),
            },
            media.clone(),
            sink.clone(),
            stop_rx,
        ));
        let track = common::corpus("meetings/en_3spk/tracks/A.wav");
        // the meeting clock starts once everyone had time to connect (ICE takes ~10 s in the
        // test namespace: Janus finds no address of its own and the pair is found by checks)
        let origin = Instant::now() + CONNECT_LEAD;
        let mut alice =
            FilePublisher::start(publisher(11, "Alice"), track.to_str().unwrap(), origin)
                .await
                .unwrap();
        assert_eq!(
            alice
                .wait_for(|s| s == PublishState::Sending, Duration::from_secs(20))
                .await,
            Some(PublishState::Sending),
            "publisher connected; janus log:\n{}",
            janus.log()
        );
        let (who, source) = tokio::task::spawn_blocking(move || {
            audio
                .recv_timeout(Duration::from_secs(20))
                .expect("audio announced")
        })
        .await
        .unwrap();
        assert_eq!(who.track, "janus-11");
        assert_eq!(who.name, "Alice");
        assert_eq!(who.identity, "11");
        // A speaks from 0.917 s to 4.587 s of the recording: the first 8 s that arrive hold
        // speech, well above the track's -66 dBFS noise floor
        let (first, samples) = tokio::task::spawn_blocking(move || read_audio(&source, 8.0))
            .await
            .unwrap();
        let loud = samples.chunks(1600).filter(|w| rms(w) > 0.01).count();
        assert!(
            loud >= 15,
            "speech windows received: {loud} of 80 (rms {})",
            rms(&samples)
        );
        // on the room timeline, the first sample is where the room was when it arrived
        let at = first as f64 / 16_000.0;
        assert!(at <= media.now_s(), "first sample at {at:.2} s, after now");
        alice.stop().await;
        stop.send(true).unwrap();
        attach.await.unwrap();
        assert_eq!(
            sink.states.lock().unwrap().last(),
            Some(&AttachState::Stopped)
        );
    });
}
