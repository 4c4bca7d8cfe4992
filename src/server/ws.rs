//! One caption client connection: hello, then room messages from its subscription, client
//! control messages in, keepalive, limits.
//!
//! Written over any `Sink + Stream` of WebSocket messages so it can be driven by in-memory
//! channels in tests as well as by a real socket.

use std::time::Duration;

use tokio::time::Instant;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::hub::{Delivery, Subscription};
use crate::protocol::{self, ErrorCode, ServerMessage, close};

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Largest control message accepted (larger: `error`, connection kept).
    pub max_message_bytes: usize,
    /// Control messages per second; beyond: `error rate_limited`; beyond three times that:
    /// the connection is closed (policy).
    pub max_messages_per_s: u32,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Unix time the client's token expires (the connection ends then).
    pub expires_at: Option<u64>,
}

impl ClientLimits {
    /// From the service limits.
    pub fn from_config(l: &crate::config::LimitsConfig, expires_at: Option<u64>) -> Self {
        Self {
            max_message_bytes: l.max_control_message_bytes,
            max_messages_per_s: l.max_control_messages_per_s,
            ping_interval: Duration::from_secs(l.ping_interval_s as u64),
            idle_timeout: Duration::from_secs(l.idle_timeout_s as u64),
            expires_at,
        }
    }
}

async fn send_json<S>(tx: &mut S, msg: &ServerMessage) -> bool
where
    S: Sink<Message> + Unpin,
{
    tx.send(Message::Text(msg.to_json().into())).await.is_ok()
}

async fn send_close<S>(tx: &mut S, code: u16, reason: String)
where
    S: Sink<Message> + Unpin,
{
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Sends every message the subscription has ready now. False when the connection is gone or
/// the subscription was closed (the close frame is sent).
async fn flush_ready<S>(sub: &mut Subscription, tx: &mut S) -> bool
where
    S: Sink<Message> + Unpin,
{
    while let Some(d) = sub.try_next() {
        match d {
            Delivery::Message(frame) => {
                if tx
                    .send(Message::Text(frame.text().to_owned().into()))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            Delivery::Closed(reason) => {
                send_close(tx, reason.code(), reason.reason()).await;
                return false;
            }
        }
    }
    true
}

/// Serves one client until it leaves, misbehaves, stops answering, its token expires, or the
/// hub closes its subscription.
pub async fn client_loop<S, E>(socket: S, mut sub: Subscription, limits: ClientLimits)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    let (mut tx, mut rx) = socket.split();
    if tx
        .send(Message::Text(sub.hello().text().to_owned().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let (mut window, mut count) = (Instant::now(), 0u32);
    let expiry = match limits.expires_at {
        Some(exp) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now))
        }
        None => tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600),
    };
    let expiry = tokio::time::sleep_until(expiry);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            d = sub.next() => match d {
                Delivery::Message(frame) => {
                    if tx.send(Message::Text(frame.text().to_owned().into())).await.is_err() {
                        break;
                    }
                }
                Delivery::Closed(reason) => {
                    send_close(&mut tx, reason.code(), reason.reason()).await;
                    break;
                }
            },
            m = rx.next() => match m {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Binary(_))) => {
                    last_heard = Instant::now();
                    let e = ServerMessage::error(ErrorCode::BinaryUnsupported, "the protocol is JSON text frames");
                    if !send_json(&mut tx, &e).await {
                        break;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    // answer after everything already queued for this client, so that a reply
                    // (a `pong` in particular) acknowledges every message published before it
                    if !flush_ready(&mut sub, &mut tx).await {
                        break;
                    }
                    if window.elapsed() >= Duration::from_secs(1) {
                        (window, count) = (Instant::now(), 0);
                    }
                    count += 1;
                    if count > limits.max_messages_per_s.saturating_mul(3) {
                        send_close(&mut tx, close::POLICY, "too many control messages".into()).await;
                        break;
                    }
                    let reply = if count > limits.max_messages_per_s {
                        Some(ServerMessage::error(
                            ErrorCode::RateLimited,
                            format!("at most {} control messages per second", limits.max_messages_per_s),
                        ))
                    } else {
                        match protocol::parse_client(text.as_str(), limits.max_message_bytes) {
                            Ok(msg) => sub.control(msg).await,
                            Err(e) => Some(e.to_message()),
                        }
                    };
                    if let Some(reply) = reply
                        && !send_json(&mut tx, &reply).await
                    {
                        break;
                    }
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.idle_timeout {
                    send_close(&mut tx, close::GOING_AWAY, "no answer to pings".into()).await;
                    break;
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            },
            _ = &mut expiry => {
                send_close(&mut tx, close::AUTH, "token expired".into()).await;
                break;
            }
        }
    }
}
