//! Diarization in the service: a room whose shared-microphone track is diarized labels its two
//! voices after the participant ("Desk", "Desk — voice 2"); the operator renames a label through
//! `POST /rooms/{room}/speakers/rename`, later captions carry the new name, the participant list
//! lists it, and exports apply it to earlier captions too.

use std::time::Duration;

use crate::common::{corpus, read_wav, write_wav};
use soustitre::config::{CliOverrides, Env, ServiceConfig};
use soustitre::server::Service;

const SECRET: &str = "0123456789abcdef0123456789abcdef-diar-test";
const ADMIN_TOKEN: &str = "admin-token-admin-token-admin-token-0123";

/// Two voices on one input: A, B, A turns of the dev meeting's tracks with pauses between.
fn two_voices(path: &std::path::Path) {
    let a = read_wav(&corpus("meetings/en_3spk/tracks/A.wav"));
    let b = read_wav(&corpus("meetings/en_3spk/tracks/B.wav"));
    let cut = |x: &[f32], from: f64, to: f64| {
        x[(from * 16_000.0) as usize..(to * 16_000.0) as usize].to_vec()
    };
    let pause = vec![0.0f32; 16_000];
    let mut out = vec![0.0f32; 8_000];
    for part in [
        cut(&a, 0.8, 4.7),
        pause.clone(),
        cut(&b, 5.7, 9.6),
        pause.clone(),
        cut(&a, 14.9, 18.4),
        pause,
    ] {
        out.extend(part);
    }
    write_wav(path, &out);
}

async fn call(method: &'static str, url: String, body: Option<serde_json::Value>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut resp = match method {
            // the public API takes its own token in the query
            "GET" if url.contains("token=") => agent.get(&url).call(),
            "GET" => agent.get(&url).header("authorization", auth).call(),
            _ => agent
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .send(body.map(|b| b.to_string()).unwrap_or_default()),
        }
        .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diarized_track_labels_voices_and_renames_apply() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("desk.wav");
    two_voices(&wav);
    let text = format!(
        "[auth]\nhs256_secret = \"{SECRET}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
         [[rooms]]\nid = \"desk\"\ndiarize = true\n[rooms.stream]\nlanguage = \"en\"\n\
         [[rooms.sources]]\ntrack = \"mix\"\nuri = \"{}\"\nname = \"Desk\"\n",
        wav.display()
    );
    let cli = CliOverrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.path().join("data")),
    };
    let config = ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap();
    let svc = Service::start(config, Some(SECRET.as_bytes().to_vec()), false)
        .await
        .unwrap();
    let admin = format!("http://{}", svc.admin_addr);
    let rename = format!("{admin}/rooms/desk/speakers/rename");
    // refusals
    let (s, b) = call(
        "POST",
        rename.clone(),
        Some(serde_json::json!({"track": "nope", "label": "Desk", "name": "X"})),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = call(
        "POST",
        rename.clone(),
        Some(serde_json::json!({"track": "mix", "label": "Desk", "name": " "})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = call(
        "POST",
        format!("{admin}/rooms/none/speakers/rename"),
        Some(serde_json::json!({"track": "mix", "label": "Desk", "name": "X"})),
    )
    .await;
    assert_eq!(s, 404);
    // the second voice is named before it speaks
    let (s, b) = call(
        "POST",
        rename.clone(),
        Some(serde_json::json!({"track": "mix", "label": "Desk — voice 2", "name": "Marie"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"Marie\""), "{b}");
    // wait (bounded) for the input to end
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, b) = call("GET", format!("{admin}/rooms/desk"), None).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        if v["tracks"][0]["state"] == "finished" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not finished: {b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // the track's figures and metrics
    let (_, b) = call("GET", format!("{admin}/rooms/desk"), None).await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["tracks"][0]["diarized"], true, "{b}");
    assert_eq!(
        v["tracks"][0]["speakers"],
        serde_json::json!(["Desk", "Desk — voice 2"]),
        "{b}"
    );
    let (_, m) = call("GET", format!("{admin}/metrics"), None).await;
    assert!(
        m.contains("soustitre_track_speakers{room=\"desk\",track=\"mix\"} 2"),
        "{m}"
    );
    // the captions as published
    let log = std::fs::read_to_string(dir.path().join("data/rooms/desk/captions.jsonl")).unwrap();
    let mut speakers: Vec<String> = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "caption" && v["event"]["type"] == "final" {
            let s = v["event"]["speaker"]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            if speakers.last() != Some(&s) {
                speakers.push(s);
            }
        }
    }
    assert_eq!(speakers, ["Desk", "Marie", "Desk"], "{log}");
    assert!(
        log.contains("\"speakers\":[{\"label\":\"Desk — voice 2\",\"name\":\"Marie\"}]"),
        "{log}"
    );
    // a rename applies to exports of earlier captions
    let (s, b) = call(
        "POST",
        rename.clone(),
        Some(serde_json::json!({"track": "mix", "label": "Desk", "name": "Anne"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        "POST",
        format!("{admin}/rooms/desk/token"),
        Some(serde_json::json!({"ttl_s": 60})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let token = serde_json::from_str::<serde_json::Value>(&b).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, txt) = call(
        "GET",
        format!(
            "http://{}/rooms/desk/transcript.txt?token={token}",
            svc.public_addr
        ),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(txt.contains("Anne: ") && txt.contains("Marie: "), "{txt}");
    assert!(!txt.contains("Desk"), "{txt}");
    svc.shutdown().await;
}
