//! A room playing a real WHEP server: Meetecho's janus-whep-server (npm, `make setup` installs it
//! under tests/fixtures/whep/node_modules) in front of Debian's Janus and its Streaming plugin,
//! fed in real time over RTP/Opus by a GStreamer sender playing a dev-corpus speaker track.
//! Everything runs inside a network namespace of the test's own (see `common/janus.rs`).
//!
//! Debian 12's Janus (1.1.2) cannot take a subscriber's offer in the Streaming plugin (1.1.3
//! can): asked with one, it sends its own offer back, which janus-whep-server relays in a `201`
//! as if it were the answer. The fixture therefore runs janus-whep-server in its server-sent
//! offer mode (`406` + offer, answer PATCHed), which soustitre supports beside RFC 9725's
//! client offer; see `tests/fixtures/whep/server.mjs`.

use crate::common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use soustitre::captions::CaptionEvent;
use soustitre::config::{CliOverrides, Env, ServiceConfig};
use soustitre::server::Service;

use crate::common::janus::{ICE_ADDRESS, JanusServer, PORT, RTP_PORT, in_netns};
use crate::common::ws;

const SECRET: &str = "0123456789abcdef0123456789abcdef-whep-e2e";
const ORIGIN: &str = "https://stage.example";
/// HTTP port of the WHEP server inside the namespace.
const WHEP_PORT: u16 = 7090;
/// The WHEP endpoint and its token.
const ENDPOINT: &str = "speaker";
const TOKEN: &str = "verysecret";
/// The Streaming plugin mountpoint of `tests/fixtures/whep/janus`.
const MOUNTPOINT: u64 = 1;
/// Who the endpoint's speaker is, as configured.
const NAME: &str = "Alice";
const TRACK: &str = "whep-speaker";
/// The speaker track played, and its reference.
const AUDIO: &str = "meetings/en_3spk/tracks/A";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whep")
}

fn endpoint_url() -> String {
    endpoint_url_on(WHEP_PORT)
}

fn endpoint_url_on(port: u16) -> String {
    format!("http://{ICE_ADDRESS}:{port}/whep/endpoint/{ENDPOINT}")
}

/// Port of a second WHEP server, in the library's default (client offer) mode.
const STANDARD_PORT: u16 = 7091;

/// janus-whep-server run by node; its JSON event lines are collected.
struct WhepServer {
    child: Option<Child>,
    events: crossbeam_channel::Receiver<serde_json::Value>,
    log: Arc<Mutex<String>>,
}

impl WhepServer {
    /// janus-whep-server in its server-sent offer mode on [`WHEP_PORT`].
    fn start() -> WhepServer {
        Self::start_mode(WHEP_PORT, "server-offers")
    }

    /// On `port`; `mode` is `server-offers` or `client-offers` (the library's default).
    fn start_mode(port: u16, mode: &str) -> WhepServer {
        assert!(
            fixtures().join("node_modules/janus-whep-server").is_dir(),
            "janus-whep-server is not installed: run `make setup` (npm ci in tests/fixtures/whep)"
        );
        let mut child = Command::new("node")
            .arg(fixtures().join("server.mjs"))
            .args([
                &format!("ws://127.0.0.1:{PORT}"),
                &port.to_string(),
                ENDPOINT,
                &MOUNTPOINT.to_string(),
                TOKEN,
                mode,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (v18+) is installed");
        let (tx, events) = crossbeam_channel::unbounded();
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    if line.starts_with("{\"event\"")
                        && let Ok(v) = serde_json::from_str(&line)
                    {
                        let _ = tx.send(v);
                    }
                }
            });
        }
        let server = WhepServer {
            child: Some(child),
            events,
            log,
        };
        server.wait_event("listening", Duration::from_secs(20));
        server
    }

    /// Waits for the next event named `name` (earlier other events are skipped).
    fn wait_event(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            match self.events.recv_deadline(deadline) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => {}
                Err(_) => panic!(
                    "WHEP server: no `{name}` in {timeout:?}; log:\n{}",
                    self.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WhepServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A live RTP/Opus sender to the mountpoint: silence, and the recordings it is asked to play,
/// in real time (the UDP sink waits on the clock).
struct Sender {
    pipeline: gst::Pipeline,
    queue: Arc<Mutex<std::collections::VecDeque<i16>>>,
    /// Wall-clock instant of each played recording's first sample.
    started: crossbeam_channel::Receiver<Instant>,
    /// Samples queued so far.
    queued: Mutex<u64>,
    pending: Arc<Mutex<Vec<u64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

const FRAME: usize = 320; // 20 ms at 16 kHz

impl Sender {
    fn start() -> Sender {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src is-live=true format=time block=true max-bytes=3840 \
               caps=audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved \
             ! audioconvert ! audioresample ! capsfilter caps=audio/x-raw,rate=48000 \
             ! opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={RTP_PORT} sync=true"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let base = Instant::now();
        let queue: Arc<Mutex<std::collections::VecDeque<i16>>> = Arc::default();
        let pending: Arc<Mutex<Vec<u64>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started_tx, started) = crossbeam_channel::unbounded();
        {
            let (queue, pending, stop) = (queue.clone(), pending.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                let mut played: u64 = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let frame: Vec<i16> = {
                        let mut q = queue.lock().unwrap();
                        let take = q.len().min(FRAME);
                        let mut f: Vec<i16> = q.drain(..take).collect();
                        f.resize(FRAME, 0);
                        if take > 0 {
                            let mut p = pending.lock().unwrap();
                            if p.first().is_some_and(|&start| start < played + take as u64) {
                                p.remove(0);
                                let _ = started_tx.send(base + Duration::from_millis(n * 20));
                            }
                            played += take as u64;
                        }
                        f
                    };
                    let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                    let mut buf = gst::Buffer::from_mut_slice(bytes);
                    {
                        let b = buf.get_mut().unwrap();
                        b.set_pts(gst::ClockTime::from_mseconds(n * 20));
                        b.set_duration(gst::ClockTime::from_mseconds(20));
                    }
                    if src.push_buffer(buf).is_err() {
                        break;
                    }
                    n += 1;
                }
            });
        }
        Sender {
            pipeline,
            queue,
            started,
            queued: Mutex::new(0),
            pending,
            stop,
        }
    }

    /// Queues a 16 kHz mono recording; returns when its first sample is played.
    fn play(&self, path: &Path) -> Instant {
        let samples: Vec<i16> = common::read_wav(path)
            .iter()
            .map(|s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16)
            .collect();
        {
            let mut q = self.queue.lock().unwrap();
            let mut p = self.pending.lock().unwrap();
            let mut total = self.queued.lock().unwrap();
            // the count of samples taken by the sender at which this recording starts
            p.push(*total);
            *total += samples.len() as u64;
            q.extend(samples);
        }
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("the sender started playing")
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn service_config(data: &Path) -> ServiceConfig {
    let text = format!(
        "[auth]\nalgorithm = \"HS256\"\nhs256_secret = \"{SECRET}\"\naudience = \"soustitre\"\n\
         allowed_origins = [\"{ORIGIN}\"]\n\n\
         [[rooms]]\nid = \"stage\"\n[rooms.stream]\nlanguage = \"en\"\n\
         [rooms.whep]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nname = \"{NAME}\"\n\
         ice_addresses = [\"{ICE_ADDRESS}\"]\nmedia_timeout_s = 2\n",
        endpoint_url()
    );
    let cli = CliOverrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data.to_path_buf()),
    };
    ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap()
}

fn texts(f: &[CaptionEvent]) -> Vec<(f64, f64, String)> {
    f.iter().map(|e| (e.start, e.end, e.text.clone())).collect()
}

/// The admin API (blocking HTTP, run on a blocking thread).
async fn admin(
    method: &'static str,
    url: String,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = match (method, body) {
            ("POST", Some(b)) => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b.to_string())
                .unwrap(),
            ("DELETE", _) => agent.delete(&url).call().unwrap(),
            _ => agent.get(&url).call().unwrap(),
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    })
    .await
    .unwrap()
}

/// End of the last utterance of the reference.
fn last_end(stm: &Path) -> f64 {
    std::fs::read_to_string(stm)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .fold(0.0, f64::max)
}

#[test]
fn a_whep_endpoint_is_captioned_and_survives_a_whep_server_restart() {
    if !in_netns(
        module_path!(),
        "a_whep_endpoint_is_captioned_and_survives_a_whep_server_restart",
    ) {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("soustitre=info")
        .with_test_writer()
        .try_init();
    let _ = common::engine("whisper-base");
    let janus = JanusServer::start_from(&fixtures().join("janus"));
    let mut whep = WhepServer::start();
    let sender = Sender::start();
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
        let after_start = Instant::now();
        let admin_base = format!("http://{}", svc.admin_addr);
        let mut rx = ws::subscribe(svc.public_addr, "stage", SECRET, ORIGIN).await;
        let mut seen = Vec::new();

        // the session comes up (POST, 406 + server offer, PATCH answer, ICE, DTLS) while the
        // sender sends silence; then the speaker talks
        let sub = tokio::task::block_in_place(|| {
            whep.wait_event("new-subscriber", Duration::from_secs(30))
        });
        println!("WHEP server: {sub}");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let (_, info) = admin("GET", format!("{admin_base}/rooms/stage"), None).await;
            let flowing = info["sfu"]["participants"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["track"] == TRACK));
            if flowing {
                assert_eq!(info["sfu"]["state"], "connected", "{info}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no audio from the WHEP session: {info}\njanus log:\n{}",
                janus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await; // polling a condition
        }
        let stm = common::corpus(&format!("{AUDIO}.stm"));
        let wav = common::corpus(&format!("{AUDIO}.wav"));
        let started = tokio::task::block_in_place(|| sender.play(&wav));
        // on the room timeline (which starts during Service::start) the recording starts at
        // least this late
        // the room timeline starts inside Service::start: on it, the recording starts at least
        // this late
        let offset_min = started.saturating_duration_since(after_start).as_secs_f64();
        let end = last_end(&stm);
        let heard_all = |seen: &[serde_json::Value]| {
            ws::finals(seen)
                .iter()
                .any(|e| e.track == TRACK && e.end > offset_min + end - 2.0)
        };
        assert!(
            ws::until(&mut rx, &mut seen, Duration::from_secs(90), heard_all).await,
            "finals so far: {:?}",
            texts(&ws::finals(&seen))
        );
        let before = ws::finals(&seen);
        let mine: Vec<CaptionEvent> = before
            .iter()
            .filter(|e| e.track == TRACK)
            .cloned()
            .collect();
        assert_eq!(mine.len(), before.len(), "only the WHEP track speaks");
        assert!(
            mine.iter().all(|e| e.speaker.as_deref() == Some(NAME)),
            "finals carry the configured name: {:?}",
            mine.iter().map(|e| &e.speaker).collect::<Vec<_>>()
        );
        for e in &mine {
            println!("{NAME} [{:.2}-{:.2}] {}", e.start, e.end, e.text);
        }
        let (wer, errors, words) = common::wer(&stm, &mine);
        println!(
            "{NAME}: WER {:.1} % ({errors}/{words}) over {} finals",
            wer * 100.0,
            mine.len()
        );
        assert!(wer <= 0.15, "WER {:.1} % > 15 %", wer * 100.0);
        let participants = seen
            .iter()
            .rev()
            .find(|m| m["type"] == "participants")
            .expect("a participants message");
        assert!(participants.to_string().contains(NAME), "{participants}");

        // a room with the wrong token: a clear refusal in its status, no subscriber
        let (status, _) = admin(
            "POST",
            format!("{admin_base}/rooms"),
            Some(serde_json::json!({
                "id": "intruder",
                "whep": {"url": endpoint_url(), "token": "wrong", "ice_addresses": [ICE_ADDRESS]},
            })),
        )
        .await;
        assert_eq!(status, 201);
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let (_, info) = admin("GET", format!("{admin_base}/rooms/intruder"), None).await;
            if let Some(e) = info["sfu"]["error"].as_str() {
                break (e.to_owned(), info["sfu"]["state"].clone());
            }
            assert!(Instant::now() < deadline, "no error in {info}");
            tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
        };
        println!("wrong token: {refused:?}");
        assert!(
            refused.0.contains("refused the token") && refused.0.contains("403"),
            "{refused:?}"
        );
        assert_eq!(refused.1, "reconnecting");
        assert_eq!(
            admin("DELETE", format!("{admin_base}/rooms/intruder"), None)
                .await
                .0,
            200
        );

        // RFC 9725's flow against Debian's Janus: janus-whep-server passes our offer to the
        // Streaming plugin, which (before Janus 1.1.3) ignores it and sends an offer of its own
        // back in the 201; soustitre names the problem instead of failing in webrtcbin
        let standard = WhepServer::start_mode(STANDARD_PORT, "client-offers");
        let (status, _) = admin(
            "POST",
            format!("{admin_base}/rooms"),
            Some(serde_json::json!({
                "id": "standard",
                "whep": {"url": endpoint_url_on(STANDARD_PORT), "token": TOKEN,
                         "ice_addresses": [ICE_ADDRESS]},
            })),
        )
        .await;
        assert_eq!(status, 201);
        let deadline = Instant::now() + Duration::from_secs(20);
        let error = loop {
            let (_, info) = admin("GET", format!("{admin_base}/rooms/standard"), None).await;
            if let Some(e) = info["sfu"]["error"].as_str() {
                break e.to_owned();
            }
            assert!(Instant::now() < deadline, "no error in {info}");
            tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
        };
        println!("client offer to Janus 1.1.2: {error}");
        assert!(error.contains("carries an offer"), "{error}");
        assert_eq!(
            admin("DELETE", format!("{admin_base}/rooms/standard"), None)
                .await
                .0,
            200
        );
        // the resource of the failed negotiation was deleted
        let gone = tokio::task::block_in_place(|| {
            standard.wait_event("subscriber-gone", Duration::from_secs(10))
        });
        assert_eq!(gone["subscribers"], 0, "{gone}");
        drop(standard);

        // the WHEP server dies mid-sentence and comes back: the session is noticed dead, the
        // endpoint is subscribed again, the outage is a gap, and later speech is captioned
        let n = before.len();
        let _ = tokio::task::block_in_place(|| sender.play(&wav));
        let again = |seen: &[serde_json::Value]| {
            ws::finals(seen)[n..]
                .iter()
                .any(|e| e.text.to_lowercase().contains("budget"))
        };
        assert!(
            ws::until(&mut rx, &mut seen, Duration::from_secs(30), again).await,
            "first sentence of the second playing: {:?}",
            texts(&ws::finals(&seen)[n..])
        );
        let kept = ws::finals(&seen);
        whep.kill();
        whep = WhepServer::start();
        let gap = |seen: &[serde_json::Value]| {
            seen.iter().any(|m| {
                m["type"] == "gap" && m["reason"] == "sfu_unreachable" && m["track"] == TRACK
            })
        };
        assert!(
            ws::until(&mut rx, &mut seen, Duration::from_secs(60), gap).await,
            "outage gap; WHEP server log:\n{}",
            whep.log()
        );
        let g = seen.iter().find(|m| m["type"] == "gap").unwrap().clone();
        println!("gap: {g}");
        let resumed = |seen: &[serde_json::Value]| {
            let f = ws::finals(seen);
            f[kept.len()..].iter().any(|e| {
                let t = e.text.to_lowercase();
                e.start >= g["from_s"].as_f64().unwrap()
                    && (t.contains("meeting") || t.contains("pilot") || t.contains("council"))
            })
        };
        assert!(
            ws::until(&mut rx, &mut seen, Duration::from_secs(60), resumed).await,
            "speech after the restart: {:?}",
            texts(&ws::finals(&seen)[kept.len()..])
        );
        // nothing from before the outage was lost or changed
        assert_eq!(ws::finals(&seen)[..kept.len()], kept[..]);
        let (_, info) = admin("GET", format!("{admin_base}/rooms/stage"), None).await;
        assert!(info["sfu"]["connections"].as_u64() >= Some(2), "{info}");

        // detaching the room deletes the WHEP resource on the server
        assert_eq!(
            admin("DELETE", format!("{admin_base}/rooms/stage"), None)
                .await
                .0,
            200
        );
        let gone = tokio::task::block_in_place(|| {
            whep.wait_event("subscriber-gone", Duration::from_secs(10))
        });
        assert_eq!(gone["subscribers"], 0, "{gone}");
        assert!(
            whep.log().contains("Terminating WHEP session"),
            "DELETE reached the server; log:\n{}",
            whep.log()
        );
        svc.shutdown().await;
    });
    drop(sender);
}
