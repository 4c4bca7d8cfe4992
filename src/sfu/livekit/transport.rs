//! The signalling WebSocket: connects, and drives a [`Session`] with frames, commands and
//! time.
//!
//! This is a small tokio-tungstenite loop rather than `livekit-api`'s signal client
//! (`signal-client` feature, `livekit-signaling` 0.1.8): without its `signal-client-native`
//! feature that client has no WebSocket transport at all (`livekit-net` returns "no network
//! transport registered" unless one is registered process-wide), and the native one pulls a
//! second WebSocket and HTTP stack. It also keeps its own join, ping and token state, which
//! [`Session`] already holds in a form that tests can drive message by message. So only the
//! `access-token` feature of `livekit-api` is enabled.
//!
//! [`drive`] is generic over the socket, so tests run it on an in-memory duplex stream with
//! real WebSocket framing; [`connect`] opens the real one (`ws://` or `wss://`, rustls with the
//! webpki roots).

use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use livekit_protocol as proto;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};

use super::session::{Action, RejoinReason, Session};
use super::signal::{self, IceCandidateInit, Target};

/// What the media side asks the session to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Answer to the last [`Action::RemoteOffer`].
    LocalAnswer(String),
    /// Offer of the publisher connection.
    PublisherOffer(String),
    /// A local candidate; `None` when gathering is complete.
    LocalCandidate {
        target: Target,
        candidate: Option<IceCandidateInit>,
    },
    /// Leave the room.
    Leave,
}

/// How a [`drive`] loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DriveEnd {
    /// The sidecar left ([`Command::Leave`]).
    Left,
    /// Join again with a new session.
    Rejoin(RejoinReason),
    /// The server ended the session for good.
    Disconnected(proto::DisconnectReason),
    /// The socket closed without a `leave`: join again.
    SocketClosed,
    /// Every command sender was dropped: the media side is gone.
    CommandsClosed,
}

impl DriveEnd {
    /// True when joining again makes sense (not after the sidecar left, nor after the server
    /// ended the session for good: room deleted, sidecar removed, duplicate identity...).
    pub fn should_rejoin(&self) -> bool {
        matches!(self, DriveEnd::Rejoin(_) | DriveEnd::SocketClosed)
    }
}

/// Default first delay before a rejoin.
pub const DEFAULT_REJOIN_INITIAL: Duration = Duration::from_secs(1);
/// Default longest delay between rejoin attempts.
pub const DEFAULT_REJOIN_MAX: Duration = Duration::from_secs(30);

/// Delays between rejoin attempts: doubling from `initial` up to `max`, back to `initial`
/// once a join succeeds ([`RejoinBackoff::joined`]). Each attempt mints a fresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinBackoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for RejoinBackoff {
    fn default() -> Self {
        Self::new(DEFAULT_REJOIN_INITIAL, DEFAULT_REJOIN_MAX)
    }
}

impl RejoinBackoff {
    /// `max` below `initial` is raised to `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// A join succeeded: the next failure waits `initial` again.
    pub fn joined(&mut self) {
        self.next = self.initial;
    }
}

/// Failures of the signalling transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to the LiveKit server: {0}")]
    Connect(#[source] tungstenite::Error),
    #[error("signalling socket failed: {0}")]
    Socket(#[source] tungstenite::Error),
    #[error("the action receiver was dropped")]
    EventsClosed,
}

/// The signalling socket type [`connect`] returns.
pub type SignalSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the signalling WebSocket at `url` (from [`signal::signal_url`]). An HTTP refusal
/// (401 for a bad token, 404 for a wrong path) is a [`TransportError::Connect`] carrying the
/// status.
pub async fn connect(url: &str) -> Result<SignalSocket, TransportError> {
    let (socket, _response) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(TransportError::Connect)?;
    Ok(socket)
}

/// Runs `session` on `socket` until the session ends: server frames and [`Session::tick`]
/// deadlines go in, [`Action::Send`]s go out as binary frames, every other action goes to
/// `events` (bounded: a slow media side slows the loop, nothing is dropped). Refused or
/// undecodable server messages are logged and counted by the session, and the loop goes on.
pub async fn drive<S>(
    mut socket: S,
    session: &mut Session,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Action>,
) -> Result<DriveEnd, TransportError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    loop {
        let deadline = session.next_deadline();
        let wake = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let actions = tokio::select! {
            frame = socket.next() => match frame {
                None | Some(Ok(Message::Close(_))) => return Ok(DriveEnd::SocketClosed),
                Some(Err(e)) => return Err(TransportError::Socket(e)),
                Some(Ok(Message::Binary(bytes))) => {
                    match session.handle_frame(&bytes, now()) {
                        Ok(actions) => actions,
                        Err(e) => {
                            tracing::warn!(error = %e, "LiveKit signalling message refused");
                            Vec::new()
                        }
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    tracing::warn!("LiveKit signalling sent a text frame; only protobuf binary frames are understood");
                    Vec::new()
                }
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(_)) => {
                    socket.flush().await.map_err(TransportError::Socket)?;
                    Vec::new()
                }
            },
            command = commands.recv() => {
                let result = match command {
                    None => return Ok(DriveEnd::CommandsClosed),
                    Some(Command::LocalAnswer(sdp)) => session.local_answer(sdp),
                    Some(Command::PublisherOffer(sdp)) => session.publisher_offer(sdp),
                    Some(Command::LocalCandidate { target, candidate }) => {
                        session.local_candidate(target, candidate)
                    }
                    Some(Command::Leave) => Ok(session.leave()),
                };
                match result {
                    Ok(actions) => actions,
                    Err(e) => {
                        tracing::warn!(error = %e, "LiveKit signalling command refused");
                        Vec::new()
                    }
                }
            },
            () = wake => session.tick(now()),
        };
        let mut end = None;
        for action in actions {
            match action {
                Action::Send(request) => {
                    let left = matches!(request, proto::signal_request::Message::Leave(_));
                    socket
                        .send(Message::Binary(signal::encode_request(request).into()))
                        .await
                        .map_err(TransportError::Socket)?;
                    if left {
                        end = Some(DriveEnd::Left);
                    }
                }
                other => {
                    match &other {
                        Action::Rejoin { reason } if end.is_none() => {
                            end = Some(DriveEnd::Rejoin(*reason))
                        }
                        Action::Disconnected { reason } if end.is_none() => {
                            end = Some(DriveEnd::Disconnected(*reason))
                        }
                        _ => {}
                    }
                    events
                        .send(other)
                        .await
                        .map_err(|_| TransportError::EventsClosed)?;
                }
            }
        }
        if let Some(end) = end {
            // Best effort: the server may already be gone.
            let _ = socket.close().await;
            return Ok(end);
        }
    }
}

fn now() -> Instant {
    // tokio's clock, so that tests with a paused clock see time pass.
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoin_delays_double_up_to_the_cap_and_reset_after_a_join() {
        let mut b = RejoinBackoff::default();
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        b.joined();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        let mut odd = RejoinBackoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(odd.next_delay(), Duration::from_secs(5));
        assert_eq!(odd.next_delay(), Duration::from_secs(5));
    }

    #[test]
    fn only_transient_ends_call_for_a_rejoin() {
        assert!(DriveEnd::Rejoin(RejoinReason::PingTimeout).should_rejoin());
        assert!(DriveEnd::SocketClosed.should_rejoin());
        assert!(!DriveEnd::Left.should_rejoin());
        assert!(!DriveEnd::CommandsClosed.should_rejoin());
        assert!(!DriveEnd::Disconnected(proto::DisconnectReason::RoomDeleted).should_rejoin());
    }
}
