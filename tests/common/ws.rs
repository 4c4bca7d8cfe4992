//! A caption WebSocket subscriber of the running service (`GET /rooms/{room}/ws`), as a viewer
//! would open it: HS256 bearer token in the subprotocol, an allowed `Origin`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use soustitre::auth::{Audience, Claims, mint_hs256};
use soustitre::captions::CaptionEvent;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

/// Subscribes to `room`'s captions; every message goes to the returned channel with its arrival
/// time (unix seconds), taken when it is read off the socket.
pub async fn subscribe_timed(
    addr: std::net::SocketAddr,
    room: &str,
    secret: &str,
    origin: &str,
) -> UnboundedReceiver<(f64, serde_json::Value)> {
    let mut claims = Claims::expiring_in(room, 3600);
    claims.aud = Some(Audience::One("soustitre".into()));
    let token = mint_hs256(secret.as_bytes(), &claims).unwrap();
    let mut req = format!("ws://{addr}/rooms/{room}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("soustitre.v1, bearer.{token}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                if tx
                    .send((at, serde_json::from_str(t.as_str()).unwrap()))
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    rx
}

/// [`subscribe_timed`] without the arrival times.
pub async fn subscribe(
    addr: std::net::SocketAddr,
    room: &str,
    secret: &str,
    origin: &str,
) -> UnboundedReceiver<serde_json::Value> {
    let mut timed = subscribe_timed(addr, room, secret, origin).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, m)) = timed.recv().await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receives messages until `done` says so about the ones so far; `false` after `timeout`.
pub async fn until(
    rx: &mut UnboundedReceiver<serde_json::Value>,
    seen: &mut Vec<serde_json::Value>,
    timeout: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => seen.push(m),
            _ => return false,
        }
    }
    true
}

/// The final caption events among the messages.
pub fn finals(seen: &[serde_json::Value]) -> Vec<CaptionEvent> {
    seen.iter()
        .filter(|m| m["type"] == "caption" && m["event"]["type"] == "final")
        .map(|m| serde_json::from_value(m["event"].clone()).unwrap())
        .collect()
}
