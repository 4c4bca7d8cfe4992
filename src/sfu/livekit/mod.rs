//! LiveKit attachment: tokens, signalling, captions as data packets, and the attachment of a
//! room ([`attach`]).
//!
//! Everything here is sans I/O except [`transport`] and [`attach`]. [`attach::run`] is what a
//! room with `[rooms.livekit]` runs: it drives a [`session::Session`] over the signalling
//! WebSocket, answers the subscriber connection with a receive-only webrtcbin of the room's
//! [`crate::sfu::media::RoomMedia`], offers the publisher connection
//! ([`crate::sfu::data::DataPeer`]) and publishes the room's captions on it; see that module for
//! its threads, faults and latency.
//!
//! # Flow
//!
//! 1. [`token::TokenMinter::mint`] makes a token for one room: subscribe, publish data only,
//!    hidden (other participants do not see the sidecar), 10 minutes by default.
//! 2. [`signal::signal_url`] builds `wss://host/rtc?access_token=..&auto_subscribe=0&sdk=rust&
//!    protocol=18&version=..`; [`transport::connect`] opens it; [`transport::drive`] runs a
//!    [`session::Session`] on it (or any driver calls the session directly).
//! 3. The server's `join` gives the room, the sidecar's own sid, the other participants with
//!    their tracks, the ICE servers and the ping interval/timeout → `Joined`, then
//!    `ParticipantJoined` / `TrackAdded` for each audio track, then one
//!    `Send(UpdateSubscription{subscribe: true})` for those audio tracks (video is never
//!    subscribed), then `NegotiatePublisher`.
//! 4. Subscriber connection: the server offers (`RemoteOffer`), the media side answers
//!    ([`session::Session::local_answer`]); candidates both ways (`RemoteCandidate` /
//!    [`session::Session::local_candidate`], JSON `{"candidate","sdpMid","sdpMLineIndex"}`).
//!    Each incoming pad's msid stream id is `participant_sid|track_sid`:
//!    [`session::Session::track_for_msid`] maps it to the participant's identity and name, and
//!    [`session::Session::track_for_mid`] does the same from the pad's transceiver `mid` (the
//!    session keeps the msid of every m-section of the last offer).
//! 5. Publisher connection (captions): on `NegotiatePublisher` the media side creates a
//!    webrtcbin with the data channels `_reliable` (ordered) and `_lossy` (unordered, no
//!    retransmissions), created in-band (not pre-negotiated), and offers it
//!    ([`session::Session::publisher_offer`]); the server answers (`PublisherAnswer`).
//! 6. Each caption event becomes packets ([`transcription::CaptionPublisher::packets`]) sent,
//!    protobuf-encoded ([`transcription::encode_packet`]), on `_reliable`.
//! 7. `participant_update`s bring joins, leaves, new and removed tracks and mute changes
//!    (`TrackAdded` + a new subscription, `TrackRemoved`, `TrackMuted`, `ParticipantLeft`,
//!    `ParticipantRenamed`); updates older than the known state (`version`) are ignored;
//!    `refresh_token` → `TokenRefreshed`; the session pings at the server's interval and asks
//!    for a `Rejoin` after the ping timeout without any message; `leave` → `Rejoin` when the
//!    server allows reconnecting, else `Disconnected`. A rejoin is a new [`session::Session`]
//!    on a new socket with a freshly minted token, after a [`transport::RejoinBackoff`] delay
//!    ([`transport::DriveEnd::should_rejoin`] says when).
//!
//! Server messages about the sidecar's *own* tracks (`mute`, `track_published`,
//! `track_unpublished` in livekit-protocol 0.8 answer or act on a participant's own publications) do not
//! apply: it publishes no track. Remote mute changes arrive in `participant_update`
//! (`TrackInfo.muted`) and become `TrackMuted`.
//!
//! Sending captions: each [`transcription::encode_packet`] result is one binary message on the
//! publisher connection's `_reliable` data channel (webrtcbin: `send-data` with the bytes).
//!
//! ```no_run
//! use soustitre::sfu::livekit::session::{Action, Session, SessionSettings};
//! use soustitre::sfu::livekit::signal::{UrlOptions, signal_url};
//! use soustitre::sfu::livekit::token::{TokenMinter, TokenSettings};
//! use soustitre::sfu::livekit::transport::{Command, connect, drive};
//! # fn answer_with_webrtcbin(offer: &str) -> String { offer.to_string() }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let minter = TokenMinter::new("APIkey", "secret", "weekly-sync", TokenSettings::default())?;
//! let url = signal_url("wss://livekit.example.org", &minter.mint()?.jwt, &UrlOptions::default())?;
//! let socket = connect(&url).await?;
//! let (commands_tx, mut commands) = tokio::sync::mpsc::channel(64);
//! let (events, mut actions) = tokio::sync::mpsc::channel(256);
//! let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
//! let mut session = Session::new(SessionSettings::default(), std::time::Instant::now(), unix_ms as i64);
//! let signalling = tokio::spawn(async move { drive(socket, &mut session, &mut commands, &events).await });
//! while let Some(action) = actions.recv().await {
//!     match action {
//!         Action::RemoteOffer { sdp } => {
//!             let answer = answer_with_webrtcbin(&sdp); // set-remote-description, create-answer...
//!             commands_tx.send(Command::LocalAnswer(answer)).await?
//!         }
//!         Action::TrackAdded(track) => println!("{} speaks on {}", track.name, track.track_sid),
//!         _ => {}
//!     }
//! }
//! println!("signalling ended: {:?}", signalling.await?);
//! # Ok(()) }
//! ```
//!
//! Configuration: `[rooms.livekit]` ([`config::LiveKitConfig`]) in a `[[rooms]]` entry, or
//! `"livekit": {...}` in the admin API's `POST /rooms`.
//!
//! # Latency model
//!
//! The protocol layer adds no buffering: a caption event is turned into packets as soon as the
//! captioner emits it, one text stream per revision (partial or final), each holding the full
//! current text of its segment. The cost is the data channel's: one reliable SCTP message per
//! packet (header, ⌈text/15 000 B⌉ chunks, trailer, legacy packet), i.e. one round trip to
//! the SFU and one to each viewer. Signalling adds nothing to caption latency once joined.
//!
//! # What is verified, and against what
//!
//! No LiveKit server can run where this was written. Two levels of tests:
//!
//! * Protocol level (`tests.rs` beside this module): messages built and decoded with
//!   `livekit-protocol` 0.8 types, exchanges replayed message by message, real WebSocket framing
//!   in memory.
//! * End to end against a **protocol-faithful stand-in** (`tests/sfu_livekit.rs`,
//!   `tests/common/livekit.rs`), not LiveKit: the service with `[rooms.livekit]` joins a tokio
//!   WebSocket server at `/rtc` that checks the token (HS256 with the API secret; `roomJoin` for
//!   the room, `canSubscribe`, no `canPublish`, `canPublishData`, `hidden`), sends `join` with
//!   three participants, offers the subscriber connection with only its own `_reliable` data
//!   channel (as a subscriber-primary server does), and once that is answered and the sidecar
//!   sent `UpdateSubscription` for the three audio tracks, renegotiates the same connection
//!   with a webrtcbin sending their Opus audio in real time with `a=msid:PA_..|TR_..`; it
//!   trickles candidates both ways, answers the publisher offer with a webrtcbin that receives
//!   the data channels, and sends participant updates. Verified there: the subscriber
//!   renegotiation ([`crate::sfu::media::SubscriberPeer::renegotiate`]); pads mapped to
//!   participants through mid and msid; per-participant WER of the finals
//!   published back as `lk.transcription` text streams (with the three attributes and the
//!   speaker's identity) and legacy packets; a mute closing the open segment without invented
//!   words, an unmute captioned on the same track; a participant leaving; a dropped socket
//!   followed by a rejoin with a freshly minted token and `gap`s.
//!
//! Never verified against a real LiveKit server:
//!
//! * that a server accepts the join URL as built (`sdk=rust`, `protocol=18`,
//!   `auto_subscribe=0`) from a non-libwebrtc client, and sends `join` then an `offer`;
//! * that the server forwards audio after `UpdateSubscription` with `auto_subscribe=0`, and
//!   that the subscriber msid stream id is `participant_sid|track_sid` (taken from the Rust
//!   SDK's `unpack_stream_id`; the stand-in sends it that way, it was not observed from a
//!   server);
//! * webrtcbin interoperability with a real server: its answers to the server's offers (a
//!   pion/libwebrtc SDP, not a webrtcbin one as in the stand-in; renegotiations that remove or
//!   recycle m-sections when tracks go, which the stand-in never sends: there mute and leave
//!   are participant updates only), in-band `_reliable` /
//!   `_lossy` data channels on the publisher connection at protocol 18 on the `/rtc` path, ICE
//!   with the server's candidates, and through its TURN servers (the join's STUN and TURN
//!   servers are given to both peers, `turn(s)://user:password@host:port`; the stand-in
//!   announces unreachable ones, so only their harmlessness is tested);
//! * that the server relays text streams whose `participant_identity` is the *speaker's*
//!   identity rather than the sidecar's (a server may overwrite it with the sender's
//!   identity; clients would then attribute captions to the sidecar, while the
//!   `lk.transcribed_track_id` attribute still names the track);
//! * that existing clients (components-js `useTranscriptions`, agents' UIs) display these
//!   streams and legacy packets as transcriptions; the attribute names and topic come from
//!   LiveKit's SDK sources, the legacy packet's millisecond times are an assumption;
//! * token refresh timing, the server's ping/pong cadence, and `leave` reasons in practice;
//!   session resume (`reconnect=1`) is not implemented: every reconnect is a fresh join with a
//!   freshly minted token (a token the server pushes is kept only as a fallback).

pub mod attach;
pub mod config;
pub mod session;
pub mod signal;
pub mod token;
pub mod transcription;
pub mod transport;

#[cfg(test)]
mod tests;

pub use config::{LiveKitConfig, LiveKitSettings};
pub use session::{Action, JoinInfo, RejoinReason, RemoteTrack, Session, SessionError};
pub use signal::{IceCandidateInit, Target};
pub use token::{MintedToken, TokenMinter, TokenSettings};
pub use transcription::{CaptionPublisher, PublishSettings, Speaker};
