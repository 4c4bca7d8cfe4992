//! A client of the Janus WebSocket API (subprotocol `janus-protocol`): one session, its plugin
//! handles, requests matched to their replies by transaction, and the session's unsolicited
//! events (plugin events, trickle, hangup...) on a bounded channel.
//!
//! Janus answers a request with `ack` then, for asynchronous plugin requests, an `event` carrying
//! the same transaction; synchronous ones get `success` (or `error`) directly. [`Janus::request`]
//! waits for the first reply that is not an `ack`.
//!
//! The session is kept alive with a `keepalive` every [`KEEPALIVE`] (Janus destroys idle sessions
//! after its `session_timeout`, 60 s by default). When the socket closes or fails, every pending
//! request fails with [`JanusError::Closed`] and the event channel ends: the caller reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// Interval of session keepalives.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// Longest wait for a reply to one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the WebSocket connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unsolicited events buffered for the caller. Janus sends a few per participant change; when the
/// caller falls this far behind the session is considered broken (closed), never silently thinned.
const EVENT_QUEUE: usize = 1024;
/// Outgoing messages buffered for the socket writer.
const SEND_QUEUE: usize = 256;

/// Errors talking to Janus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JanusError {
    #[error("cannot connect to Janus at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("Janus connection closed")]
    Closed,
    #[error("no reply from Janus to `{0}` in time")]
    Timeout(String),
    #[error("Janus refused `{request}`: {reason}")]
    Refused { request: String, reason: String },
    #[error("unexpected reply from Janus to `{request}`: {reply}")]
    Protocol { request: String, reply: String },
}

/// An unsolicited message of the session (no pending transaction).
#[derive(Debug, Clone)]
pub struct Event {
    /// The handle it concerns (`sender`), when any.
    pub handle: Option<u64>,
    /// The whole message (`janus` is `event`, `trickle`, `webrtcup`, `hangup`, `media`...).
    pub body: Value,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A connected Janus session.
pub struct Janus {
    url: String,
    session: u64,
    out: mpsc::Sender<Message>,
    pending: Pending,
    next: AtomicU64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Janus {
    /// Connects to `url` (`ws://host:8188/`) and creates a session. Returns the session and its
    /// event stream.
    pub async fn connect(url: &str) -> Result<(Janus, mpsc::Receiver<Event>), JanusError> {
        let connect_err = |reason: String| JanusError::Connect {
            url: url.to_owned(),
            reason,
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| connect_err(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| connect_err("timed out".into()))?
                .map_err(|e| connect_err(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(SEND_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move {
                while let Some(Ok(m)) = stream.next().await {
                    let text = match m {
                        Message::Text(t) => t.to_string(),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let Ok(body) = serde_json::from_str::<Value>(&text) else {
                        tracing::warn!("janus: unparsable message ignored: {text:.200}");
                        continue;
                    };
                    if !route(&pending, &events_tx, body) {
                        tracing::warn!("janus: event queue full; dropping the session");
                        break;
                    }
                }
                // fail every waiter: their senders are dropped
                pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
            })
        };
        let mut janus = Janus {
            url: url.to_owned(),
            session: 0,
            out,
            pending,
            next: AtomicU64::new(1),
            tasks: vec![writer, reader],
        };
        let reply = janus.call(json!({"janus": "create"}), "create").await?;
        janus.session = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol {
                request: "create".into(),
                reply: reply.to_string(),
            })?;
        let keepalive = {
            let out = janus.out.clone();
            let session = janus.session;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEEPALIVE);
                tick.tick().await;
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    n += 1;
                    let m = json!({"janus": "keepalive", "session_id": session, "transaction": format!("ka{n}")});
                    if out.send(Message::text(m.to_string())).await.is_err() {
                        break;
                    }
                }
            })
        };
        janus.tasks.push(keepalive);
        tracing::info!(url, session = janus.session, "janus: session created");
        Ok((janus, events))
    }

    /// The Janus URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Attaches a handle to `plugin` (e.g. `janus.plugin.videoroom`).
    pub async fn attach(&self, plugin: &str) -> Result<u64, JanusError> {
        let reply = self
            .call(json!({"janus": "attach", "plugin": plugin}), "attach")
            .await?;
        reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol {
                request: "attach".into(),
                reply: reply.to_string(),
            })
    }

    /// Sends a plugin message (`body`, and `jsep` when negotiating) on `handle` and waits for the
    /// plugin's reply: its `plugindata.data` and the reply's `jsep`, if any. A plugin-level error
    /// (`error_code` in the data) is [`JanusError::Refused`].
    pub async fn request(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>), JanusError> {
        let what = body["request"].as_str().unwrap_or("message").to_owned();
        let mut m = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            m["jsep"] = jsep;
        }
        let reply = self.call(m, &what).await?;
        let data = reply["plugindata"]["data"].clone();
        if let Some(code) = data.get("error_code") {
            return Err(JanusError::Refused {
                request: what,
                reason: format!(
                    "{} (code {code})",
                    data["error"].as_str().unwrap_or("error")
                ),
            });
        }
        Ok((data, reply.get("jsep").cloned()))
    }

    /// Sends our ICE candidate, or the end of candidates with `None`.
    pub async fn trickle(&self, handle: u64, candidate: Option<Value>) -> Result<(), JanusError> {
        let candidate = candidate.unwrap_or_else(|| json!({"completed": true}));
        self.call(
            json!({"janus": "trickle", "handle_id": handle, "candidate": candidate}),
            "trickle",
        )
        .await
        .map(|_| ())
    }

    /// Detaches a handle (its peer connection is closed by Janus).
    pub async fn detach(&self, handle: u64) -> Result<(), JanusError> {
        self.call(json!({"janus": "detach", "handle_id": handle}), "detach")
            .await
            .map(|_| ())
    }

    /// Destroys the session (best effort) and closes the socket.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.call(json!({"janus": "destroy"}), "destroy"),
        )
        .await;
    }

    /// Sends a request and waits for its first non-`ack` reply (`success`, `event` or `error`).
    async fn call(&self, mut m: Value, what: &str) -> Result<Value, JanusError> {
        let transaction = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        m["transaction"] = Value::String(transaction.clone());
        if self.session != 0 {
            m["session_id"] = json!(self.session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(transaction.clone(), tx);
        if self.out.send(Message::text(m.to_string())).await.is_err() {
            return Err(JanusError::Closed);
        }
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(JanusError::Closed),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&transaction);
                return Err(JanusError::Timeout(what.to_owned()));
            }
        };
        if reply["janus"] == "error" {
            return Err(JanusError::Refused {
                request: what.to_owned(),
                reason: reply["error"]["reason"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
            });
        }
        Ok(reply)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Hands a message to its waiting request, or to the event channel. False when the event channel
/// is full or closed.
fn route(pending: &Pending, events: &mpsc::Sender<Event>, body: Value) -> bool {
    let kind = body["janus"].as_str().unwrap_or("");
    if let Some(transaction) = body["transaction"].as_str() {
        if kind == "ack" && body.get("hint").is_none() {
            // `ack` only says the request was received; keepalive acks end here too
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            if transaction.starts_with("ka") {
                p.remove(transaction);
            }
            return true;
        }
        if let Some(waiter) = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(transaction)
        {
            let _ = waiter.send(body);
            return true;
        }
    }
    if kind == "ack" || kind == "success" {
        return true;
    }
    let handle = body["sender"].as_u64();
    match events.try_send(Event { handle, body }) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => false,
        Err(mpsc::error::TrySendError::Closed(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Pending, mpsc::Sender<Event>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(2);
        (Arc::new(Mutex::new(HashMap::new())), tx, rx)
    }

    #[test]
    fn replies_reach_their_request_and_acks_are_skipped() {
        let (pending, tx, mut rx) = setup();
        let (wtx, mut wrx) = oneshot::channel();
        pending.lock().unwrap().insert("t1".into(), wtx);
        assert!(route(
            &pending,
            &tx,
            json!({"janus": "ack", "transaction": "t1"})
        ));
        assert!(wrx.try_recv().is_err(), "an ack is not the reply");
        let event = json!({"janus": "event", "transaction": "t1", "sender": 7, "plugindata": {"data": {"videoroom": "joined"}}});
        assert!(route(&pending, &tx, event.clone()));
        assert_eq!(wrx.try_recv().unwrap(), event);
        assert!(rx.try_recv().is_err(), "a reply is not an event");
    }

    #[test]
    fn unsolicited_messages_are_events_and_a_full_queue_is_reported() {
        let (pending, tx, mut rx) = setup();
        let ev = |n: u64| json!({"janus": "event", "sender": n, "plugindata": {"data": {"videoroom": "event", "leaving": n}}});
        assert!(route(&pending, &tx, ev(1)));
        assert!(route(&pending, &tx, ev(2)));
        assert!(!route(&pending, &tx, ev(3)), "queue of 2 is full");
        let first = rx.try_recv().unwrap();
        assert_eq!(first.handle, Some(1));
        assert_eq!(first.body["plugindata"]["data"]["leaving"], 1);
        // an event whose transaction nobody waits for (a late reply) is still delivered
        assert!(route(
            &pending,
            &tx,
            json!({"janus": "hangup", "transaction": "gone", "sender": 5})
        ));
        assert_eq!(rx.try_recv().unwrap().handle, Some(2));
        assert_eq!(rx.try_recv().unwrap().body["janus"], "hangup");
    }
}
