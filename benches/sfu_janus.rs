//! End-to-end benchmark through a real Janus: a dev-corpus meeting's speaker tracks are published
//! in real time by webrtcbin publishers (a child process), the caption service attached to the
//! Janus room captions them, and a WebSocket subscriber timestamps every final on arrival.
//!
//! ```text
//! cargo bench --bench sfu_janus -- [--meeting en_3spk] [--json out/sfu_janus.json]
//! ```
//! (`make bench-sfu` does the same). Needs root (a private network namespace, as the Janus tests)
//! and Debian's `janus`.
//!
//! Figures:
//! * **publisher → WebSocket final latency**, per reference sentence: the wall time at which the
//!   subscriber received the final holding the end of the sentence, minus the wall time at which
//!   the publisher sent the sentence's last audio (meeting clock origin + reference end time).
//!   It includes Opus encoding, the SFU hop, the jitter buffer, decoding, endpointing,
//!   recognition and delivery.
//! * **room-timeline final latency**, per final (`emitted_at - end`, what `score/latency.py`
//!   calls final_event) for comparison: the same without the publisher side and delivery.
//! * **CPU per attached track**: the service process's CPU time (user + system) over the meeting,
//!   divided by the number of tracks, per wall second (cores) and per second of track audio.
//!   The publishers run in another process and Janus in its own, neither is counted.
//! * WER per participant (score/wer.py) as a sanity check of what was measured.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use soustitre::captions::CaptionEvent;
use soustitre::config::{CliOverrides, Env, ServiceConfig};
use soustitre::server::Service;
use soustitre::sfu::janus::publish::{FilePublisher, PublishSettings, PublishState};
use soustitre::sfu::media::MediaSettings;

use common::janus::{ICE_ADDRESS, JanusServer, ROOM, url};

/// Time given to the publishers and the service to connect before the meeting clock starts
/// (ICE takes 10-15 s in the namespace, see tests/common/janus.rs).
const CONNECT_LEAD: Duration = Duration::from_secs(22);
/// Longest wait for the last finals after the recordings ended.
const DRAIN: Duration = Duration::from_secs(30);
/// Silence on the WebSocket after the recordings ended that means every final arrived.
const QUIET: Duration = Duration::from_secs(4);
const SECRET: &str = "0123456789abcdef0123456789abcdef-janus-bench";
const ORIGIN: &str = "https://visio.example";
const ROLE_ENV: &str = "SOUSTITRE_BENCH_ROLE";
const NETNS_ENV: &str = "SOUSTITRE_TEST_NETNS";

struct Args {
    meeting: String,
    json: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        meeting: "en_3spk".into(),
        json: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("out/sfu_janus.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // added by cargo bench
            "--meeting" => a.meeting = it.next().expect("--meeting NAME"),
            "--json" => a.json = PathBuf::from(it.next().expect("--json PATH")),
            other => {
                eprintln!(
                    "unknown argument {other}; usage: sfu_janus [--meeting NAME] [--json PATH]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

/// One participant of the meeting: feed id, display name, track file stem.
fn people(meeting: &str) -> Vec<(u64, String, String)> {
    let dir = common::corpus(&format!("meetings/{meeting}/tracks"));
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the meeting needs per-speaker tracks)",
                dir.display()
            )
        })
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "wav").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    stems.sort();
    stems
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, format!("Speaker {s}"), s))
        .collect()
}

fn track_path(meeting: &str, stem: &str, ext: &str) -> PathBuf {
    common::corpus(&format!("meetings/{meeting}/tracks/{stem}.{ext}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn main() {
    let args = parse_args();
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("publisher") => return publish(&args),
        Ok(other) => panic!("unknown {ROLE_ENV} {other}"),
        Err(_) => {}
    }
    if std::env::var_os(NETNS_ENV).is_none() {
        // a private network namespace, as the Janus tests use (see tests/common/janus.rs)
        let status = Command::new("unshare")
            .arg("-n")
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env(NETNS_ENV, "1")
            .status()
            .expect("unshare (util-linux) runs; the benchmark needs root");
        std::process::exit(status.code().unwrap_or(1));
    }
    common::janus::setup_network();
    run(&args);
}

/// The publishers' process: every track of the meeting, sample 0 at the origin given (unix s).
fn publish(args: &Args) {
    let origin_unix: f64 = std::env::var("SOUSTITRE_BENCH_ORIGIN")
        .expect("origin")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let origin = Instant::now() + Duration::from_secs_f64((origin_unix - unix_now()).max(0.0));
        let mut pubs = Vec::new();
        for (id, name, stem) in people(&args.meeting) {
            let settings = PublishSettings {
                url: url(),
                room: ROOM,
                id,
                display: name,
                media: MediaSettings {
                    ice_addresses: vec![ICE_ADDRESS.to_owned()],
                    ..MediaSettings::default()
                },
            };
            let path = track_path(&args.meeting, &stem, "wav");
            pubs.push(
                FilePublisher::start(settings, path.to_str().unwrap(), origin)
                    .await
                    .unwrap(),
            );
        }
        for p in &mut pubs {
            let s = p
                .wait_for(|s| s == PublishState::Finished, Duration::from_secs(3600))
                .await;
            assert_eq!(s, Some(PublishState::Finished));
        }
        for p in pubs {
            p.stop().await;
        }
    });
}

/// A reference sentence of one track (meeting time, seconds).
struct Sentence {
    track: String,
    start: f64,
    end: f64,
}

fn sentences(meeting: &str, people: &[(u64, String, String)]) -> Vec<Sentence> {
    let mut out = Vec::new();
    for (id, _, stem) in people {
        let stm = std::fs::read_to_string(track_path(meeting, stem, "stm")).unwrap();
        for l in stm.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 5 && !l.starts_with(";;") {
                out.push(Sentence {
                    track: format!("janus-{id}"),
                    start: f[3].parse().unwrap(),
                    end: f[4].parse().unwrap(),
                });
            }
        }
    }
    out
}

fn pct(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let k = (v.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, k.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (k - lo as f64)
}

fn stats(xs: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50": pct(xs, 50.0), "p95": pct(xs, 95.0),
        "max": xs.iter().copied().fold(f64::NAN, f64::max), "count": xs.len(),
    })
}

fn run(args: &Args) {
    let language = match args.meeting.split('_').next() {
        Some("en") => "en",
        Some("fr") => "fr",
        _ => "auto",
    };
    let people = people(&args.meeting);
    let refs = sentences(&args.meeting, &people);
    let _janus = JanusServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let text = format!(
            "[auth]\nalgorithm = \"HS256\"\nhs256_secret = \"{SECRET}\"\naudience = \"soustitre\"\n\
             allowed_origins = [\"{ORIGIN}\"]\n\n\
             [[rooms]]\nid = \"bench\"\n[rooms.stream]\nlanguage = \"{language}\"\n\
             [rooms.janus]\nurl = \"{}\"\nroom = {ROOM}\nice_addresses = [\"{ICE_ADDRESS}\"]\n",
            url()
        );
        let cli = CliOverrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.path().to_path_buf()),
        };
        let config = ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap();
        let svc = Service::start(config, None, false).await.unwrap();
        let mut rx = common::ws::subscribe_timed(svc.public_addr, "bench", SECRET, ORIGIN).await;

        let origin_unix = unix_now() + CONNECT_LEAD.as_secs_f64();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env(ROLE_ENV, "publisher")
            .env("SOUSTITRE_BENCH_ORIGIN", format!("{origin_unix:.6}"))
            .spawn()
            .unwrap();
        // CPU and wall time from the meeting's start
        tokio::time::sleep_until(
            tokio::time::Instant::now() + CONNECT_LEAD, // waiting for the meeting clock, not syncing
        )
        .await;
        let cpu0 = soustitre::run::cpu_seconds();
        let wall0 = Instant::now();
        let duration = people
            .iter()
            .map(|(_, _, s)| {
                common::read_wav(&track_path(&args.meeting, s, "wav")).len() as f64 / 16_000.0
            })
            .fold(0.0, f64::max);
        let last_end = refs.iter().map(|r| r.end).fold(0.0, f64::max);
        // finals until every sentence is covered, the recordings ended and nothing came for a
        // while, or the drain deadline
        let mut finals: Vec<(f64, CaptionEvent)> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(duration) + DRAIN;
        loop {
            // once the recordings ended, a quiet spell means the last finals are in (each
            // publisher leaving closes its participant's open segment)
            let wait = if unix_now() > origin_unix + duration.max(last_end) + 1.0 {
                (tokio::time::Instant::now() + QUIET).min(deadline)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Ok(Some((t, m))) => push_final(&mut finals, t, m),
                _ => break,
            }
        }
        let cpu = soustitre::run::cpu_seconds() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        let _ = child.wait();

        // each final's interval mapped to meeting time: the room timeline started before the
        // meeting clock by `offset`, estimated as the median of (final end - nearest sentence end)
        let tracks: Vec<String> = people
            .iter()
            .map(|(id, _, _)| format!("janus-{id}"))
            .collect();
        let mut diffs = Vec::new();
        for (_, e) in &finals {
            if let Some(r) = refs.iter().filter(|r| r.track == e.track).min_by(|a, b| {
                (a.end - e.end + CONNECT_LEAD.as_secs_f64())
                    .abs()
                    .total_cmp(&(b.end - e.end + CONNECT_LEAD.as_secs_f64()).abs())
            }) {
                diffs.push(e.end - r.end);
            }
        }
        let offset = pct(&diffs, 50.0);
        let mut e2e = Vec::new();
        let mut unmatched = 0;
        for r in &refs {
            // the final holding the sentence's end: on its track, overlapping the sentence, with
            // its end closest to the sentence's end
            let hit = finals
                .iter()
                .filter(|(_, e)| {
                    e.track == r.track && e.start - offset < r.end && e.end - offset > r.start
                })
                .min_by(|(_, a), (_, b)| {
                    (a.end - offset - r.end)
                        .abs()
                        .total_cmp(&(b.end - offset - r.end).abs())
                });
            match hit {
                Some((t, _)) => e2e.push(t - (origin_unix + r.end)),
                None => unmatched += 1,
            }
        }
        let room_final: Vec<f64> = finals.iter().map(|(_, e)| e.emitted_at - e.end).collect();
        let audio_s = duration;
        let n = tracks.len() as f64;
        let mut wers = serde_json::Map::new();
        for (id, name, stem) in &people {
            let mine: Vec<CaptionEvent> = finals
                .iter()
                .filter(|(_, e)| e.track == format!("janus-{id}"))
                .map(|(_, e)| e.clone())
                .collect();
            let (wer, _, words) = common::wer(&track_path(&args.meeting, stem, "stm"), &mine);
            wers.insert(
                name.clone(),
                serde_json::json!({"wer": wer, "words": words, "finals": mine.len()}),
            );
        }
        let report = serde_json::json!({
            "meeting": args.meeting,
            "tracks": tracks.len(),
            "sentences": refs.len(),
            "unmatched_sentences": unmatched,
            "publisher_to_ws_final_s": stats(&e2e),
            "room_timeline_final_s": stats(&room_final),
            "room_timeline_offset_s": offset,
            "cpu_s": cpu,
            "wall_s": wall,
            "cpu_cores_per_track": cpu / wall / n,
            "cpu_s_per_audio_s_per_track": cpu / audio_s / n,
            "peak_rss_mb": soustitre::run::peak_rss_bytes() as f64 / 1e6,
            "wer": wers,
        });
        print_report(&report);
        if let Some(dir) = args.json.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&args.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", args.json.display());
        svc.shutdown().await;
    });
}

fn push_final(finals: &mut Vec<(f64, CaptionEvent)>, t: f64, m: serde_json::Value) {
    if m["type"] == "caption" && m["event"]["type"] == "final" {
        finals.push((t, serde_json::from_value(m["event"].clone()).unwrap()));
    }
}

fn print_report(r: &serde_json::Value) {
    let s = |k: &str| &r[k];
    println!(
        "\nsoustitre through Janus: meeting {}, {} tracks, {} sentences ({} unmatched)",
        s("meeting"),
        s("tracks"),
        s("sentences"),
        s("unmatched_sentences")
    );
    for (label, k) in [
        ("publisher -> WebSocket final", "publisher_to_ws_final_s"),
        (
            "room timeline final (emitted_at - end)",
            "room_timeline_final_s",
        ),
    ] {
        println!(
            "  {label:<40} p50 {:.2} s  p95 {:.2} s  max {:.2} s  (n={})",
            s(k)["p50"].as_f64().unwrap_or(f64::NAN),
            s(k)["p95"].as_f64().unwrap_or(f64::NAN),
            s(k)["max"].as_f64().unwrap_or(f64::NAN),
            s(k)["count"]
        );
    }
    println!(
        "  CPU per attached track                   {:.3} cores, {:.3} CPU s per audio s  (service process: {:.1} CPU s over {:.1} s; peak RSS {:.0} MB)",
        s("cpu_cores_per_track").as_f64().unwrap(),
        s("cpu_s_per_audio_s_per_track").as_f64().unwrap(),
        s("cpu_s").as_f64().unwrap(),
        s("wall_s").as_f64().unwrap(),
        s("peak_rss_mb").as_f64().unwrap()
    );
    if let Some(w) = r["wer"].as_object() {
        for (name, v) in w {
            println!(
                "  WER {name:<10} {:.1} % over {} words, {} finals",
                v["wer"].as_f64().unwrap() * 100.0,
                v["words"],
                v["finals"]
            );
        }
    }
}
