//! Attaching to a real Janus VideoRoom (Debian's janus) with real webrtcbin publishers, inside a
//! network namespace of the test's own (see `common/janus.rs`).

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use soustitre::media::{AudioSource, MediaEvent};
use soustitre::sfu::janus::publish::{FilePublisher, PublishSettings, PublishState};
use soustitre::sfu::janus::{self as sfu_janus, JanusSettings};
use soustitre::sfu::media::{MediaSettings, RoomMedia};
use soustitre::sfu::{AttachState, AttachStatus, RemoteParticipant, RoomSink};
use tokio::sync::watch;

use crate::common::janus::{ICE_ADDRESS, JanusServer, ROOM, in_netns, url};
use crate::common::ws;

/// Time given to publishers and soustitre to connect before the meeting clock starts.
const CONNECT_LEAD: Duration = Duration::from_secs(22);

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
    if !in_netns(
        module_path!(),
        "a_publishers_audio_reaches_its_participants_track",
    ) {
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
        // the meeting clock starts once everyone had time to connect (ICE takes 10-15 s in the
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

mod meeting {
    //! The whole product path: the service attached to a Janus room through its configuration,
    //! three webrtcbin publishers playing the dev meeting's speaker tracks in real time, and a
    //! WebSocket subscriber checking what each participant said.

    use super::*;
    use soustitre::captions::CaptionEvent;
    use soustitre::config::{CliOverrides, Env, ServiceConfig};
    use soustitre::server::Service;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-janus-e2e";
    const ORIGIN: &str = "https://visio.example";
    /// (feed id, display name, track file) of the meeting's participants.
    const PEOPLE: [(u64, &str, &str); 3] = [(1, "Alice", "A"), (2, "Bob", "B"), (3, "Carol", "C")];

    fn service_config(data: &std::path::Path) -> ServiceConfig {
        let text = format!(
            "[auth]\nalgorithm = \"HS256\"\nhs256_secret = \"{SECRET}\"\naudience = \"soustitre\"\n\
             allowed_origins = [\"{ORIGIN}\"]\n\n\
             [[rooms]]\nid = \"visio\"\n[rooms.stream]\nlanguage = \"en\"\n\
             [rooms.janus]\nurl = \"{}\"\nroom = {ROOM}\nice_addresses = [\"{ICE_ADDRESS}\"]\n",
            url()
        );
        let cli = CliOverrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.to_path_buf()),
        };
        ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap()
    }

    #[test]
    fn a_janus_meeting_is_captioned_per_participant_and_survives_a_janus_restart() {
        if !in_netns(
            module_path!(),
            "a_janus_meeting_is_captioned_per_participant_and_survives_a_janus_restart",
        ) {
            return;
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("soustitre=info")
            .with_test_writer()
            .try_init();
        let _ = common::engine("whisper-base");
        let mut janus = JanusServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let data = tempfile::tempdir().unwrap();
            let svc = Service::start(service_config(data.path()), None, false)
                .await
                .unwrap();
            let mut rx = ws::subscribe(svc.public_addr, "visio", SECRET, ORIGIN).await;
            let mut seen = Vec::new();

            // the meeting: three participants publishing their microphone in real time
            let origin = Instant::now() + CONNECT_LEAD;
            let mut publishers = Vec::new();
            for (id, name, file) in PEOPLE {
                let path = common::corpus(&format!("meetings/en_3spk/tracks/{file}.wav"));
                publishers.push(
                    FilePublisher::start(publisher(id, name), path.to_str().unwrap(), origin)
                        .await
                        .unwrap(),
                );
            }
            for p in &mut publishers {
                let state = p
                    .wait_for(
                        |s| s == PublishState::Finished,
                        CONNECT_LEAD + Duration::from_secs(60),
                    )
                    .await;
                assert_eq!(
                    state,
                    Some(PublishState::Finished),
                    "janus log:\n{}",
                    janus.log()
                );
            }
            // every participant left at the end of the recording: wait for each one's final of
            // their last sentence (the room timeline started before the meeting clock, so a
            // sentence ends later on it than in the recording)
            let last_end = |file: &str| -> f64 {
                let stm = std::fs::read_to_string(common::corpus(&format!(
                    "meetings/en_3spk/tracks/{file}.stm"
                )))
                .unwrap();
                stm.lines()
                    .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
                    .fold(0.0, f64::max)
            };
            let all_done = |seen: &[serde_json::Value]| {
                let f = ws::finals(seen);
                PEOPLE.iter().all(|(id, _, file)| {
                    f.iter().any(|e| {
                        e.track == format!("janus-{id}")
                            && e.end > last_end(file) - 1.0 + CONNECT_LEAD.as_secs_f64() - 1.0
                    })
                })
            };
            assert!(
                ws::until(&mut rx, &mut seen, Duration::from_secs(20), all_done).await,
                "last finals: {:?}",
                ws::finals(&seen)
                    .iter()
                    .map(|e| (&e.track, e.end, &e.text))
                    .collect::<Vec<_>>()
            );
            let before = ws::finals(&seen);
            for (id, name, file) in PEOPLE {
                let mine: Vec<CaptionEvent> = before
                    .iter()
                    .filter(|e| e.track == format!("janus-{id}"))
                    .cloned()
                    .collect();
                assert!(mine.len() >= 3, "{name}: {} finals", mine.len());
                assert!(
                    mine.iter().all(|e| e.speaker.as_deref() == Some(name)),
                    "{name}'s finals carry their name: {:?}",
                    mine.iter().map(|e| &e.speaker).collect::<Vec<_>>()
                );
                let (wer, errors, words) = common::wer(
                    &common::corpus(&format!("meetings/en_3spk/tracks/{file}.stm")),
                    &mine,
                );
                for e in &mine {
                    println!("{name} [{:.2}-{:.2}] {}", e.start, e.end, e.text);
                }
                println!(
                    "{name}: WER {:.1} % ({errors}/{words}) over {} finals",
                    wer * 100.0,
                    mine.len()
                );
                assert!(wer <= 0.15, "{name}: WER {:.1} % > 15 %", wer * 100.0);
            }
            let participants = seen
                .iter()
                .rev()
                .find(|m| m["type"] == "participants")
                .unwrap();
            assert!(participants.to_string().contains("Alice"), "{participants}");

            // Janus dies and comes back; soustitre reconnects, reports the outage as a gap on
            // every track, and a participant rejoining continues on their track
            janus.restart();
            let gaps = |seen: &[serde_json::Value]| {
                seen.iter()
                    .filter(|m| m["type"] == "gap" && m["reason"] == "sfu_unreachable")
                    .count()
                    >= 3
            };
            assert!(
                ws::until(&mut rx, &mut seen, Duration::from_secs(30), gaps).await,
                "outage gaps"
            );
            let origin = Instant::now() + CONNECT_LEAD;
            let path = common::corpus("meetings/en_3spk/tracks/A.wav");
            let alice = FilePublisher::start(publisher(1, "Alice"), path.to_str().unwrap(), origin)
                .await
                .unwrap();
            let n = before.len();
            let again = |seen: &[serde_json::Value]| {
                ws::finals(seen)[n..]
                    .iter()
                    .any(|e| e.track == "janus-1" && e.text.to_lowercase().contains("budget"))
            };
            assert!(
                ws::until(
                    &mut rx,
                    &mut seen,
                    CONNECT_LEAD + Duration::from_secs(30),
                    again
                )
                .await,
                "Alice's first sentence after the restart: {:?}",
                ws::finals(&seen)[n..]
                    .iter()
                    .map(|e| &e.text)
                    .collect::<Vec<_>>()
            );
            // nothing from before the outage was lost or changed
            assert_eq!(ws::finals(&seen)[..n], before[..]);
            alice.stop().await;
            drop(publishers);
            svc.shutdown().await;
        });
    }
}
