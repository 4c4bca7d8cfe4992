//! The operator API over real sockets, with a real captioned source: create a room from a file,
//! watch it in the room list, read its transcript, stop it, delete it; admin token; refusals.

use std::time::Duration;

use soustitre::config::{CliOverrides, Env, ServiceConfig};
use soustitre::server::Service;

const SECRET: &str = "0123456789abcdef0123456789abcdef-admin-test";
const ADMIN_TOKEN: &str = "admin-token-admin-token-admin-token-0123";

fn corpus(rel: &str) -> String {
    format!("{}/../shared/corpus/dev/{rel}", env!("CARGO_MANIFEST_DIR"))
}

async fn start(dir: &std::path::Path) -> Service {
    let text = format!("[auth]\nhs256_secret = \"{SECRET}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n");
    let cli = CliOverrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
    };
    let config = ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap();
    Service::start(config, Some(SECRET.as_bytes().to_vec()), false)
        .await
        .unwrap()
}

/// (status, body) of an admin request.
async fn call(
    method: &'static str,
    url: String,
    body: Option<serde_json::Value>,
    token: Option<&'static str>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(t) = token {
                    r = r.header("authorization", format!("Bearer {t}"));
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(t) = token {
                    r = r.header("authorization", format!("Bearer {t}"));
                }
                r.call()
            }
            (_, body) => {
                let mut r = agent.post(&url).header("content-type", "application/json");
                if let Some(t) = token {
                    r = r.header("authorization", format!("Bearer {t}"));
                }
                r.send(body.map(|b| b.to_string()).unwrap_or_default())
            }
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
async fn rooms_are_created_captioned_listed_stopped_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let admin = format!("http://{}", svc.admin_addr);
    let t = Some(ADMIN_TOKEN);
    // the admin API needs its token
    assert_eq!(
        call("GET", format!("{admin}/rooms"), None, None).await.0,
        401
    );
    assert_eq!(
        call(
            "GET",
            format!("{admin}/rooms"),
            None,
            Some("wrong-wrong-wrong-wrong-wrong-wrong")
        )
        .await
        .0,
        401
    );
    // refusals name the problem
    let (s, b) = call(
        "POST",
        format!("{admin}/rooms"),
        Some(serde_json::json!({"id": "x", "colour": 1})),
        t,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("colour"), "{b}");
    let (s, b) = call(
        "POST",
        format!("{admin}/rooms"),
        Some(serde_json::json!({"id": "x", "stream": {"partial_interval_ms": 5}})),
        t,
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("partial_interval_ms"), "{b}");
    let (s, b) = call(
        "POST",
        format!("{admin}/rooms"),
        Some(serde_json::json!({"id": "x", "diarize": true, "diarization": {"max_speakers": 0}})),
        t,
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("diarization.max_speakers"), "{b}");
    let (s, _) = call(
        "POST",
        format!("{admin}/rooms"),
        Some(serde_json::json!({"id": "../etc"})),
        t,
    )
    .await;
    assert_eq!(s, 400);
    // a room captioning one utterance in real time
    let body = serde_json::json!({
        "id": "council",
        "stream": {"language": "en"},
        "sources": [{"track": "mic1", "uri": corpus("utterances/synth/en_01.wav"), "name": "Alice"}]
    });
    let (s, b) = call("POST", format!("{admin}/rooms"), Some(body.clone()), t).await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = call("POST", format!("{admin}/rooms"), Some(body), t).await;
    assert_eq!(s, 409, "duplicate room");
    // poll the room until its source has finished (bounded)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let info = loop {
        let (s, b) = call("GET", format!("{admin}/rooms/council"), None, t).await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        if v["tracks"][0]["state"] == "finished" {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source did not finish: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(info["tracks"][0]["name"], "Alice");
    assert!(info["finals"].as_u64().unwrap() >= 1);
    assert!(info["tracks"][0]["last_final_latency_s"].as_f64().is_some());
    let (_, list) = call("GET", format!("{admin}/rooms"), None, t).await;
    assert!(list.contains("\"council\""));
    // a viewer token from the operator API reads the transcript
    let (s, b) = call(
        "POST",
        format!("{admin}/rooms/council/token"),
        Some(serde_json::json!({"ttl_s": 60})),
        t,
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
            "http://{}/rooms/council/transcript.txt?token={token}",
            svc.public_addr
        ),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(txt.to_lowercase().contains("budget proposal"), "{txt}");
    assert!(txt.contains("Alice: "), "{txt}");
    // metrics
    let (s, m) = call("GET", format!("{admin}/metrics"), None, t).await;
    assert_eq!(s, 200);
    assert!(
        m.contains("soustitre_track_finals_total{room=\"council\",track=\"mic1\"}"),
        "{m}"
    );
    let load_s: f64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("soustitre_track_model_load_seconds{room=\"council\",track=\"mic1\"} ")
        })
        .unwrap_or_else(|| panic!("no model load time in {m}"))
        .parse()
        .unwrap();
    assert!(load_s > 0.0 && load_s < 60.0, "{load_s}");
    // stop, then delete
    let (s, b) = call("POST", format!("{admin}/rooms/council/stop"), None, t).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"stopped\""));
    assert_eq!(
        call("DELETE", format!("{admin}/rooms/council"), None, t)
            .await
            .0,
        200
    );
    assert_eq!(
        call("GET", format!("{admin}/rooms/council"), None, t)
            .await
            .0,
        404
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_room_flushes_the_open_segment() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let admin = format!("http://{}", svc.admin_addr);
    let t = Some(ADMIN_TOKEN);
    // a long recording, stopped in the middle of speech
    let body = serde_json::json!({
        "id": "long",
        "stream": {"language": "en"},
        "sources": [{"track": "mix", "uri": corpus("utterances/real/librivox_0870.wav")}]
    });
    assert_eq!(
        call("POST", format!("{admin}/rooms"), Some(body), t)
            .await
            .0,
        201
    );
    // wait until speech has been heard (a partial or more), then stop
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = call("GET", format!("{admin}/rooms/long"), None, t).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        if v["tracks"][0]["partials"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(
                v["tracks"][0]["finals"], 0,
                "stopped before the end of the utterance"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, b) = call("POST", format!("{admin}/rooms/long/stop"), None, t).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["tracks"][0]["state"], "stopped");
    assert_eq!(v["finals"], 1, "what was heard became a final: {b}");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_rooms_are_validated_and_show_their_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path()).await;
    let base = format!("http://{}", svc.admin_addr);
    let lk = |extra: serde_json::Value| {
        let mut table = serde_json::json!({
            "url": "ws://127.0.0.1:9",
            "room": "weekly-sync",
            "api_key": "APIkey",
            "api_secret": "a-secret-for-the-admin-api-test",
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                table.as_object_mut().unwrap().remove(k);
            } else {
                table[k] = v.clone();
            }
        }
        table
    };
    for (extra, field) in [
        (
            serde_json::json!({"url": "livekit.example.org"}),
            "livekit.url",
        ),
        (
            serde_json::json!({"api_secret": null}),
            "livekit.api_secret",
        ),
        (
            serde_json::json!({"api_secret_env": "SOUSTITRE_UNSET_LK_SECRET", "api_secret": null}),
            "livekit.api_secret_env",
        ),
        (serde_json::json!({"jitter_ms": 5000}), "livekit.jitter_ms"),
    ] {
        let (status, body) = call(
            "POST",
            format!("{base}/rooms"),
            Some(serde_json::json!({"id": "lk", "livekit": lk(extra)})),
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(field), "{field}: {body}");
    }
    let (status, body) = call(
        "POST",
        format!("{base}/rooms"),
        Some(serde_json::json!({
            "id": "lk",
            "janus": {"url": "ws://127.0.0.1:9/", "room": 1},
            "livekit": lk(serde_json::json!({})),
        })),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("one SFU"), "{body}");

    // nothing listens on port 9: the room exists, its attachment keeps trying
    let (status, body) = call(
        "POST",
        format!("{base}/rooms"),
        Some(serde_json::json!({"id": "lk", "livekit": lk(serde_json::json!({}))})),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["sfu"]["connections"], 0, "{info}");
    assert!(!body.contains("a-secret-for"), "the secret is never shown");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let info = loop {
        let (_, body) = call("GET", format!("{base}/rooms/lk"), None, Some(ADMIN_TOKEN)).await;
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        if info["sfu"]["state"] == "reconnecting" {
            break info;
        }
        assert!(std::time::Instant::now() < deadline, "{info}");
        // polling the operator API, as an operator would
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        info["sfu"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "{info}"
    );
    let (status, _) = call(
        "DELETE",
        format!("{base}/rooms/lk"),
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    svc.shutdown().await;
}
