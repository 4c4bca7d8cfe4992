//! The connection loop over in-memory channels with a paused clock: keepalive pings, the idle
//! drop, token expiry, and the close of a slow consumer, without sockets or real waiting.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use soustitre::hub::{Hub, HubSettings, SubscriberOptions};
use soustitre::server::{ClientLimits, client_loop};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A WebSocket stand-in: what the server sends goes to `out`, what the client sends comes from
/// `inp`.
struct Duplex {
    out: UnboundedSender<Message>,
    inp: UnboundedReceiver<Message>,
}

impl Sink<Message> for Duplex {
    type Error = ();
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
        self.out.send(item).map_err(|_| ())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for Duplex {
    type Item = Result<Message, ()>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inp.poll_recv(cx).map(|m| m.map(Ok))
    }
}

fn limits(expires_in: Option<u64>) -> ClientLimits {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ClientLimits {
        max_message_bytes: 16 * 1024,
        max_messages_per_s: 10,
        ping_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(20),
        expires_at: expires_in.map(|s| now + s),
    }
}

/// Starts a connection on a fresh room; returns the server's output and the client's input.
async fn connect(
    dir: &std::path::Path,
    limits: ClientLimits,
) -> (
    UnboundedReceiver<Message>,
    UnboundedSender<Message>,
    tokio::task::JoinHandle<()>,
    Hub,
) {
    let hub = Hub::open("r", &HubSettings::with_data_dir(dir)).unwrap();
    let sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    let (out_tx, out_rx) = unbounded_channel();
    let (in_tx, in_rx) = unbounded_channel();
    let task = tokio::spawn(client_loop(
        Duplex {
            out: out_tx,
            inp: in_rx,
        },
        sub,
        limits,
    ));
    (out_rx, in_tx, task, hub)
}

fn close_code(m: &Message) -> Option<u16> {
    match m {
        Message::Close(Some(f)) => Some(f.code),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn pings_then_drops_a_silent_client() {
    let dir = tempfile::tempdir().unwrap();
    let (mut out, _inp, task, _hub) = connect(dir.path(), limits(None)).await;
    assert!(matches!(out.recv().await, Some(Message::Text(t)) if t.as_str().contains("\"hello\"")));
    let t0 = tokio::time::Instant::now();
    assert!(matches!(out.recv().await, Some(Message::Ping(_))));
    assert_eq!(t0.elapsed().as_secs(), 10, "first ping after the interval");
    assert!(matches!(out.recv().await, Some(Message::Ping(_))));
    // nothing heard for more than 20 s: dropped with 1001 at the next ping time
    let m = out.recv().await.unwrap();
    assert_eq!(close_code(&m), Some(1001), "{m:?}");
    assert_eq!(t0.elapsed().as_secs(), 30);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (mut out, inp, task, _hub) = connect(dir.path(), limits(None)).await;
    out.recv().await.unwrap(); // hello
    for _ in 0..6 {
        assert!(matches!(out.recv().await, Some(Message::Ping(_))));
        inp.send(Message::Pong(Vec::new().into())).unwrap();
    }
    drop(inp);
    // the client went away: the loop ends
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_connection_ends_when_the_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (mut out, inp, task, _hub) = connect(dir.path(), limits(Some(15))).await;
    out.recv().await.unwrap(); // hello
    loop {
        let m = out.recv().await.unwrap();
        match m {
            Message::Ping(_) => inp.send(Message::Pong(Vec::new().into())).unwrap(),
            other => {
                assert_eq!(close_code(&other), Some(4001), "{other:?}");
                break;
            }
        }
    }
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn too_many_control_messages_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (mut out, inp, task, _hub) = connect(dir.path(), limits(None)).await;
    out.recv().await.unwrap(); // hello
    for _ in 0..40 {
        inp.send(Message::Text(r#"{"type":"ping"}"#.into()))
            .unwrap();
    }
    let (mut pongs, mut limited) = (0, 0);
    let code = loop {
        match out.recv().await.unwrap() {
            Message::Text(t) if t.as_str().contains("pong") => pongs += 1,
            Message::Text(t) if t.as_str().contains("rate_limited") => limited += 1,
            m => break close_code(&m),
        }
    };
    assert_eq!(pongs, 10, "the first 10 per second are served");
    assert_eq!(limited, 20, "the next ones are refused");
    assert_eq!(code, Some(4000), "then the connection is closed");
    task.await.unwrap();
}
