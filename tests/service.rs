//! The caption service over real sockets on 127.0.0.1: protocol round trip, the user's toggle,
//! resume after a disconnect and after a restart, slow and fast clients, authentication before
//! the upgrade, room isolation, bad control messages, exports.
//!
//! Captions are published straight into the rooms' hubs (no audio): these tests are about
//! delivery; recognition is tested elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use soustitre::auth::{Claims, mint_hs256};
use soustitre::captions::{CaptionEvent, EventKind, Word};
use soustitre::config::{CliOverrides, Env, ServiceConfig};
use soustitre::server::Service;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const ORIGIN: &str = "http://meet.example.org";
/// Longest wait for something that must happen (a hang becomes a failure, not a sleep).
const WAIT: Duration = Duration::from_secs(20);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config(data_dir: &std::path::Path, extra: &str) -> ServiceConfig {
    let text = format!(
        "[auth]\nalgorithm = \"HS256\"\nhs256_secret = \"{SECRET}\"\naudience = \"soustitre\"\n\
         allowed_origins = [\"{ORIGIN}\"]\n\n\
         [[rooms]]\nid = \"a\"\n\n[[rooms]]\nid = \"b\"\n{extra}"
    );
    let cli = CliOverrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.to_path_buf()),
    };
    ServiceConfig::from_toml(&text, None, &Env::new(), &cli).unwrap()
}

async fn start(data_dir: &std::path::Path, extra: &str) -> Service {
    Service::start(
        config(data_dir, extra),
        Some(SECRET.as_bytes().to_vec()),
        false,
    )
    .await
    .unwrap()
}

fn token_for(room: &str) -> String {
    let mut c = Claims::expiring_in(room, 600);
    c.aud = Some(soustitre::auth::Audience::One("soustitre".into()));
    mint_hs256(SECRET.as_bytes(), &c).unwrap()
}

fn request(
    addr: SocketAddr,
    room: &str,
    token: Option<&str>,
    query: &str,
) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/rooms/{room}/ws{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    if let Some(t) = token {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("soustitre.v1, bearer.{t}").parse().unwrap(),
        );
    }
    req
}

async fn connect(addr: SocketAddr, room: &str, query: &str) -> Ws {
    let (ws, resp) =
        tokio_tungstenite::connect_async(request(addr, room, Some(&token_for(room)), query))
            .await
            .unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "soustitre.v1"
    );
    ws
}

/// The next JSON text message (pings are answered by the library).
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Messages up to the `pong` that answers a `ping` sent now: everything the server had sent
/// before handling the ping.
async fn drain_until_pong(ws: &mut Ws) -> Vec<serde_json::Value> {
    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let v = next_json(ws).await;
        if v["type"] == "pong" {
            return out;
        }
        out.push(v);
    }
}

fn event(kind: EventKind, track: &str, seg: &str, revision: u32, text: &str) -> CaptionEvent {
    let words: Vec<Word> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| Word {
            w: w.into(),
            start: i as f64 * 0.3,
            end: i as f64 * 0.3 + 0.25,
            speaker: None,
        })
        .collect();
    CaptionEvent {
        seq: 0,
        kind,
        segment_id: seg.into(),
        revision,
        track: track.into(),
        speaker: Some(format!("Speaker {track}")),
        language: Some("en".into()),
        text: text.into(),
        stable_text: String::new(),
        start: 0.0,
        end: words.last().map_or(0.0, |w| w.end),
        emitted_at: 1.0,
        words,
    }
}

async fn publish(svc: &Service, room: &str, ev: CaptionEvent) -> u64 {
    svc.state
        .room(room)
        .await
        .unwrap()
        .hub()
        .publish(ev)
        .unwrap()
}

fn final_seqs(msgs: &[serde_json::Value]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m["type"] == "caption" && m["event"]["type"] == "final")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_round_trip_and_toggle() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let mut ws = connect(svc.public_addr, "a", "").await;
    let hello = next_json(&mut ws).await;
    assert_eq!(
        (
            hello["type"].as_str(),
            hello["room"].as_str(),
            hello["protocol"].as_u64()
        ),
        (Some("hello"), Some("a"), Some(1))
    );
    let p = publish(
        &svc,
        "a",
        event(EventKind::Partial, "t1", "s0001", 0, "good morning"),
    )
    .await;
    let got = drain_until_pong(&mut ws).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["event"]["type"].as_str(), got[0]["seq"].as_u64()),
        (Some("partial"), Some(p))
    );
    let f = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0001", 1, "good morning everyone"),
    )
    .await;
    assert!(p < f);
    let got = drain_until_pong(&mut ws).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["event"]["text"], "good morning everyone");
    assert_eq!(got[0]["event"]["words"][2]["w"], "everyone");
    assert_eq!(got[0]["seq"].as_u64(), Some(f));
    // the user's toggle: off stops delivery
    ws.send(Message::Text(
        r#"{"type":"captions","enabled":false}"#.into(),
    ))
    .await
    .unwrap();
    publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0002", 0, "not shown"),
    )
    .await;
    let got = drain_until_pong(&mut ws).await;
    assert!(
        got.iter().all(|m| m["type"] != "caption"),
        "captions while off: {got:?}"
    );
    // on again: live captions flow (no replay of what was skipped)
    ws.send(Message::Text(
        r#"{"type":"captions","enabled":true}"#.into(),
    ))
    .await
    .unwrap();
    let _ = drain_until_pong(&mut ws).await;
    let f3 = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0003", 0, "shown again"),
    )
    .await;
    let got = drain_until_pong(&mut ws).await;
    assert_eq!(final_seqs(&got), vec![f3]);
    // partials off
    ws.send(Message::Text(
        r#"{"type":"partials","enabled":false}"#.into(),
    ))
    .await
    .unwrap();
    let _ = drain_until_pong(&mut ws).await;
    publish(
        &svc,
        "a",
        event(EventKind::Partial, "t1", "s0004", 0, "hidden partial"),
    )
    .await;
    let f4 = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0004", 1, "final kept"),
    )
    .await;
    let got = drain_until_pong(&mut ws).await;
    assert!(got.iter().all(|m| m["event"]["type"] != "partial"));
    assert_eq!(final_seqs(&got), vec![f4]);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_messages_get_errors_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let mut ws = connect(svc.public_addr, "a", "").await;
    next_json(&mut ws).await;
    for (msg, code) in [
        ("not json".to_string(), "malformed"),
        (r#"{"type":"dance"}"#.to_string(), "unknown_type"),
        (
            r#"{"type":"captions","enabled":true,"extra":1}"#.to_string(),
            "unknown_field",
        ),
        (
            format!(r#"{{"type":"filter","tracks":["{}"]}}"#, "x".repeat(20_000)),
            "too_large",
        ),
    ] {
        ws.send(Message::Text(msg.into())).await.unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], code, "{reply}");
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "binary_unsupported");
    // still alive, room still publishing
    let f = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0001", 0, "still here"),
    )
    .await;
    assert_eq!(final_seqs(&drain_until_pong(&mut ws).await), vec![f]);
    // a message above the transport limit closes this connection only
    ws.send(Message::Text("y".repeat(100_000).into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    let mut other = connect(svc.public_addr, "a", "").await;
    next_json(&mut other).await;
    let f = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0002", 0, "room survives"),
    )
    .await;
    assert_eq!(final_seqs(&drain_until_pong(&mut other).await), vec![f]);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_disconnect_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let mut ws = connect(svc.public_addr, "a", "").await;
    next_json(&mut ws).await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(
            publish(
                &svc,
                "a",
                event(
                    EventKind::Final,
                    "t1",
                    &format!("s{i:04}"),
                    0,
                    &format!("first {i}"),
                ),
            )
            .await,
        );
    }
    let seen = final_seqs(&drain_until_pong(&mut ws).await);
    assert_eq!(seen, all);
    let last_seen = *seen.last().unwrap();
    drop(ws);
    // missed while disconnected (partials too, which are never replayed)
    let mut missed = Vec::new();
    for i in 5..9 {
        publish(
            &svc,
            "a",
            event(EventKind::Partial, "t1", &format!("s{i:04}"), 0, "partial"),
        )
        .await;
        missed.push(
            publish(
                &svc,
                "a",
                event(
                    EventKind::Final,
                    "t1",
                    &format!("s{i:04}"),
                    1,
                    &format!("missed {i}"),
                ),
            )
            .await,
        );
    }
    let mut ws = connect(svc.public_addr, "a", &format!("?from_seq={last_seen}")).await;
    next_json(&mut ws).await;
    let got = drain_until_pong(&mut ws).await;
    assert_eq!(
        final_seqs(&got),
        missed,
        "exactly the missed finals, once each"
    );
    assert!(got.iter().any(|m| m["type"] == "resumed"));
    let last_seen = *missed.last().unwrap();
    drop(ws);
    // restart the service on the same data directory
    svc.shutdown().await;
    let svc = start(dir.path(), "").await;
    let after: Vec<u64> = {
        let mut v = Vec::new();
        for i in 9..12 {
            v.push(
                publish(
                    &svc,
                    "a",
                    event(
                        EventKind::Final,
                        "t1",
                        &format!("s{i:04}"),
                        0,
                        &format!("after {i}"),
                    ),
                )
                .await,
            );
        }
        v
    };
    assert!(after[0] > last_seen, "seq continues across restarts");
    let mut ws = connect(svc.public_addr, "a", &format!("?from_seq={last_seen}")).await;
    next_json(&mut ws).await;
    assert_eq!(final_seqs(&drain_until_pong(&mut ws).await), after);
    // from the very start: everything, once, in order
    let mut ws = connect(svc.public_addr, "a", "?from_seq=0").await;
    next_json(&mut ws).await;
    let everything: Vec<u64> = all.iter().chain(&missed).chain(&after).copied().collect();
    assert_eq!(final_seqs(&drain_until_pong(&mut ws).await), everything);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_closed_with_a_reason_while_a_fast_one_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        dir.path(),
        "[limits]\nclient_final_queue = 32\nclient_partial_queue = 4\n",
    )
    .await;
    let mut fast = connect(svc.public_addr, "a", "").await;
    next_json(&mut fast).await;
    let mut slow = connect(svc.public_addr, "a", "").await;
    next_json(&mut slow).await;
    // large finals fill the slow client's socket buffers, then its queue
    const N: usize = 300;
    let text = "word ".repeat(20_000);
    // the fast client reads everything as it comes; the publisher goes on as soon as the fast
    // client has each final, so the fast client is never behind, while the slow one never reads
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let fast_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < N {
            let v = next_json(&mut fast).await;
            if v["type"] == "caption" {
                let seq = v["seq"].as_u64().unwrap();
                got.push(seq);
                seen_tx.send(seq).unwrap();
            }
        }
        got
    });
    let mut published = Vec::new();
    for i in 0..N {
        let seq = publish(
            &svc,
            "a",
            event(EventKind::Final, "t1", &format!("s{i:04}"), 0, &text),
        )
        .await;
        published.push(seq);
        let seen = tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .expect("fast client in time");
        assert_eq!(seen, Some(seq));
    }
    let fast_got = tokio::time::timeout(WAIT, fast_reader)
        .await
        .expect("fast client in time")
        .unwrap();
    assert_eq!(fast_got, published, "the fast client misses nothing");
    // the slow client now reads: some finals, then a close naming where to resume
    let mut slow_got = Vec::new();
    let close = tokio::time::timeout(WAIT * 3, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "caption" {
                        slow_got.push(v["seq"].as_u64().unwrap());
                    }
                }
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("close in time")
    .expect("close frame");
    assert_eq!(u16::from(close.code), 4008, "{close:?}");
    let reason = close.reason.to_string();
    let resume: u64 = reason
        .rsplit("from_seq=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        Some(&resume),
        slow_got.last(),
        "resume point is the last final delivered"
    );
    assert!(slow_got.len() < published.len());
    // resuming gives exactly the rest
    let mut again = connect(svc.public_addr, "a", &format!("?from_seq={resume}")).await;
    next_json(&mut again).await;
    let mut rest = Vec::new();
    while rest.len() < published.len() - slow_got.len() {
        rest.extend(final_seqs(&drain_until_pong(&mut again).await));
    }
    let joined: Vec<u64> = slow_got.iter().chain(&rest).copied().collect();
    assert_eq!(joined, published, "0 missing, 0 duplicates");
    assert!(
        svc.state
            .room("a")
            .await
            .unwrap()
            .hub_stats()
            .slow_consumer_closes
            >= 1
    );
    svc.shutdown().await;
}

/// Status of a refused upgrade (panics if the socket was opened).
async fn refused(req: tungstenite::handshake::client::Request) -> u16 {
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("the upgrade must be refused"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_checked_before_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let addr = svc.public_addr;
    let now = jsonwebtoken::get_current_timestamp();
    let with_aud = |mut c: Claims| {
        c.aud = Some(soustitre::auth::Audience::One("soustitre".into()));
        c
    };
    let mint = |c: &Claims| mint_hs256(SECRET.as_bytes(), c).unwrap();
    let expired = mint(&with_aud(Claims::new("a", now - 3600)));
    let mut nbf = with_aud(Claims::expiring_in("a", 600));
    nbf.nbf = Some(now + 3600);
    let not_yet = mint(&nbf);
    let wrong_aud = mint_hs256(SECRET.as_bytes(), &Claims::expiring_in("a", 600)).unwrap();
    let other_secret = mint_hs256(
        b"another-secret-another-secret-123456",
        &with_aud(Claims::expiring_in("a", 600)),
    )
    .unwrap();
    let good = token_for("a");
    let alg_none = {
        let parts: Vec<&str> = good.split('.').collect();
        use base64_free::encode;
        format!("{}.{}.", encode(br#"{"alg":"none","typ":"JWT"}"#), parts[1])
    };
    let long = "x".repeat(10_000);
    let cases: [(&str, Option<&str>, u16, &str); 8] = [
        ("a", None, 401, "no token"),
        ("a", Some(&other_secret), 401, "bad signature"),
        ("a", Some(&alg_none), 401, "alg none"),
        ("a", Some(&expired), 401, "expired"),
        ("a", Some(&not_yet), 401, "not yet valid"),
        ("a", Some(&wrong_aud), 401, "no audience"),
        ("b", Some(&good), 403, "token for another room"),
        ("a", Some(&long), 401, "oversized token"),
    ];
    for (room, token, status, what) in cases {
        assert_eq!(
            refused(request(addr, room, token, "")).await,
            status,
            "{what}"
        );
    }
    let mut bad_origin = request(addr, "a", Some(&good), "");
    bad_origin
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert_eq!(refused(bad_origin).await, 403, "bad origin");
    // the same token works where it belongs, also as a query parameter
    let ok = format!("ws://{addr}/rooms/a/ws?token={good}")
        .into_client_request()
        .unwrap();
    assert!(tokio_tungstenite::connect_async(ok).await.is_ok());
    svc.shutdown().await;
}

/// Minimal base64url without padding, for hand-crafted tokens.
mod base64_free {
    pub fn encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let mut a = connect(svc.public_addr, "a", "").await;
    next_json(&mut a).await;
    let mut b = connect(svc.public_addr, "b", "").await;
    next_json(&mut b).await;
    let fa = publish(
        &svc,
        "a",
        event(EventKind::Final, "t1", "s0001", 0, "for room a"),
    )
    .await;
    let fb = publish(
        &svc,
        "b",
        event(EventKind::Final, "t1", "s0001", 0, "for room b"),
    )
    .await;
    let got_a = drain_until_pong(&mut a).await;
    let got_b = drain_until_pong(&mut b).await;
    assert_eq!(final_seqs(&got_a), vec![fa]);
    assert_eq!(final_seqs(&got_b), vec![fb]);
    assert!(
        got_a
            .iter()
            .all(|m| m["room"] == "a" || m["type"] == "resumed")
    );
    assert!(got_b.iter().all(|m| m["event"]["text"] != "for room a"));
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_match_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let texts = [
        "Good morning everyone.",
        "Thanks, I sent the spreadsheet.",
        "Let us start.",
    ];
    for (i, t) in texts.iter().enumerate() {
        publish(
            &svc,
            "a",
            event(
                EventKind::Partial,
                "t1",
                &format!("s{i:04}"),
                0,
                "partial text",
            ),
        )
        .await;
        publish(
            &svc,
            "a",
            event(EventKind::Final, "t1", &format!("s{i:04}"), 1, t),
        )
        .await;
    }
    let token = token_for("a");
    let get = |ext: &str| {
        let url = format!(
            "http://{}/rooms/a/transcript.{ext}?token={token}",
            svc.public_addr
        );
        async move {
            tokio::task::spawn_blocking(move || {
                ureq::get(&url)
                    .call()
                    .unwrap()
                    .into_body()
                    .read_to_string()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let json: serde_json::Value = serde_json::from_str(&get("json").await).unwrap();
    let finals: Vec<&str> = json["finals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(finals, texts);
    let txt = get("txt").await;
    assert_eq!(txt.lines().count(), 3);
    assert!(txt.lines().all(|l| l.contains("Speaker t1: ")), "{txt}");
    let vtt = get("vtt").await;
    assert!(vtt.starts_with("WEBVTT"));
    let srt = get("srt").await;
    for t in texts {
        let first_word = t.split_whitespace().next().unwrap();
        assert!(vtt.contains(first_word) && srt.contains(first_word), "{t}");
    }
    assert!(!vtt.contains("partial text"));
    // exports need a token for that room
    let url = format!(
        "http://{}/rooms/a/transcript.txt?token={}",
        svc.public_addr,
        token_for("b")
    );
    let status = tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
        Err(ureq::Error::StatusCode(s)) => s,
        other => panic!("{other:?}"),
    })
    .await
    .unwrap();
    assert_eq!(status, 403);
    svc.shutdown().await;
}
