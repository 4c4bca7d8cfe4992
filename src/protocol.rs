//! The caption WebSocket protocol: the JSON messages a caption client and the service exchange.
//!
//! This module is the wire contract and nothing else (serde types, limits, close codes, the
//! client-message parser), so that clients, the hub and tests depend on it alone. The prose
//! version, with an example of every message, is `docs/protocol.md`; keep the two in step.
//!
//! * Server → client ([`ServerMessage`]): `hello`, `caption`, `gap`, `participants`, `resumed`,
//!   `error`, `pong`. Every *room* message (`caption`, `gap`, `participants`) carries the room's
//!   `seq`, strictly increasing across all of them; `resume` is expressed in that seq.
//! * Client → server ([`ClientMessage`]): `captions`, `partials`, `filter`, `resume`, `ping`.
//!   They are parsed strictly by [`parse_client`] (size limit, then JSON, then known `type`, then
//!   known fields), and a refused message is answered with an `error` message: the connection
//!   survives it.
//!
//! A caption is sent *nested*: `{"type": "caption", "room", "seq", "event": {...}}` where `event`
//! is the [`CaptionEvent`] exactly as in the caption event log. Flattening is not possible without
//! renaming: the event has its own `type` (`partial`/`final`) and its own per-track `seq`.
//!
//! Latency: parsing is one `serde_json` pass over at most [`MAX_CLIENT_MESSAGE_BYTES`]; server
//! messages are serialised once per room message ([`Frame`]) and the same text is sent to every
//! subscriber and written to the room log.
//!
//! Example: `let msg = soustitre::protocol::parse_client(r#"{"type":"ping"}"#, 16 * 1024)?;`

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::captions::{CaptionEvent, EventKind};

/// Version announced in `hello`; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// Query parameter of the WebSocket URL carrying a reconnecting client's resume point
/// (`?from_seq=N`); equivalent to `resume { from_seq: N }` before anything is sent.
pub const RESUME_QUERY_PARAM: &str = "from_seq";
/// Largest client message accepted, bytes of UTF-8 text.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;
/// Client messages accepted per second and connection; more are refused with `rate_limited`.
pub const MAX_CLIENT_MESSAGES_PER_SECOND: u32 = 10;
/// The server sends a WebSocket ping this often, seconds.
pub const PING_INTERVAL_S: u64 = 10;
/// A connection from which nothing (pong, message) arrived for this long is dropped, seconds.
pub const IDLE_TIMEOUT_S: u64 = 20;

/// WebSocket close codes used by the service.
pub mod close {
    /// Normal end (the client asked for it).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, the room ended, or the client stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame above the transport limit.
    pub const TOO_BIG: u16 = 1009;
    /// Policy violation (binary frames, repeated protocol errors, sustained rate abuse).
    pub const POLICY: u16 = 4000;
    /// Authentication failed or the token expired.
    pub const AUTH: u16 = 4001;
    /// The client did not read fast enough; the reason text says `resume with from_seq=N`.
    pub const SLOW_CONSUMER: u16 = 4008;
}

// ---------------------------------------------------------------------------------------------
// Server → client

/// A message from the service to a caption client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of a connection.
    Hello(Hello),
    /// A partial or final caption event.
    Caption(Caption),
    /// Audio of a track was lost: no caption exists for that time (never fabricated text).
    Gap(Gap),
    /// The participants of the room and their speaker names (a full list, replacing the last).
    Participants(Participants),
    /// A refused client message or request; the connection stays open.
    Error(ErrorReport),
    /// End of a replay requested by `resume`: what follows is live.
    Resumed(Resumed),
    /// Answer to a client `ping`.
    Pong,
}

/// `hello`: protocol version and where the room is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Room name.
    pub room: String,
    /// Seq of the last room message published before this connection subscribed (0: none).
    pub last_seq: u64,
    /// Tracks known in the room.
    pub tracks: Vec<String>,
}

/// `caption`: one caption event of the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    /// Room name.
    pub room: String,
    /// Room seq (the number to resume from), not to be confused with `event.seq` (per track).
    pub seq: u64,
    /// The event, exactly as in the caption event log.
    pub event: CaptionEvent,
}

/// Why audio of a track is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Audio never reached the service (packet loss, network, a muted or stalled sender).
    AudioLost,
    /// The service could not keep up and skipped audio.
    Overload,
    /// Decoding or recognition failed for that stretch.
    PipelineError,
    /// The SFU the room is attached to could not be reached (connection lost, SFU restarted):
    /// nothing was received from any participant of the room.
    SfuUnreachable,
}

/// `gap`: the time range of a track for which no caption can exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Room name.
    pub room: String,
    /// Room seq.
    pub seq: u64,
    /// Track whose audio is missing.
    pub track: String,
    /// Start of the missing audio, seconds on the track's clock.
    pub from_s: f64,
    /// End of the missing audio, seconds on the track's clock.
    pub to_s: f64,
    /// Why it is missing.
    pub reason: GapReason,
}

/// A speaker label of a track with the name to show for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speaker {
    /// Label used in caption events (`speaker`).
    pub label: String,
    /// Name to show.
    pub name: String,
}

/// One participant of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Track id used in caption events.
    pub track: String,
    /// Participant identity (stable id in the meeting).
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Speakers of this track (several when diarised).
    #[serde(default)]
    pub speakers: Vec<Speaker>,
}

/// `participants`: the full participant list, replacing the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participants {
    /// Room name.
    pub room: String,
    /// Room seq.
    pub seq: u64,
    /// Everyone in the room now.
    pub participants: Vec<Participant>,
}

/// Machine-readable error codes of `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Message above [`MAX_CLIENT_MESSAGE_BYTES`].
    TooLarge,
    /// Not JSON, or not a JSON object.
    Malformed,
    /// Missing or unknown `type`.
    UnknownType,
    /// A field the message type does not have.
    UnknownField,
    /// A known field with a wrong value (or a required field missing).
    InvalidMessage,
    /// More than [`MAX_CLIENT_MESSAGES_PER_SECOND`].
    RateLimited,
    /// A `resume` that cannot be served (e.g. `from_seq` beyond the room's last seq).
    ResumeUnavailable,
    /// A binary frame (the protocol is text only).
    BinaryUnsupported,
    /// The server failed; the message may be retried.
    Internal,
}

/// `error`: a refused client message; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// `resumed`: the replay asked by `resume` is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// The `from_seq` of the request.
    pub from_seq: u64,
    /// Room messages replayed (seq in `from_seq+1..=last_seq`, after the connection's filters).
    pub replayed: u64,
    /// Last room seq covered by the replay; live messages follow with higher seqs.
    pub last_seq: u64,
}

impl ServerMessage {
    /// The room seq of a room message (`caption`, `gap`, `participants`).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Caption(c) => Some(c.seq),
            Self::Gap(g) => Some(g.seq),
            Self::Participants(p) => Some(p.seq),
            Self::Hello(_) | Self::Error(_) | Self::Resumed(_) | Self::Pong => None,
        }
    }

    /// True for the room messages kept in the room log and replayed on `resume`: final
    /// captions, gaps and participant lists (partials are superseded, never replayed).
    pub fn is_durable(&self) -> bool {
        match self {
            Self::Caption(c) => c.event.kind == EventKind::Final,
            Self::Gap(_) | Self::Participants(_) => true,
            _ => false,
        }
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorReport {
            code,
            message: message.into(),
        })
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Only maps with string keys and plain data: serialisation cannot fail. Non-finite
        // floats would become `null`; the hub refuses them before they get here.
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// A server message with its JSON text, serialised once and shared by every recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    message: ServerMessage,
    text: String,
}

impl Frame {
    /// Serialise `message`.
    pub fn new(message: ServerMessage) -> Self {
        let text = message.to_json();
        Self { message, text }
    }

    /// Parse a frame back from its text (a room log line), keeping the text as is.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let message = serde_json::from_str(text)?;
        Ok(Self {
            message,
            text: text.to_owned(),
        })
    }

    /// The message.
    pub fn message(&self) -> &ServerMessage {
        &self.message
    }

    /// The JSON text to send.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Room seq, for room messages.
    pub fn seq(&self) -> Option<u64> {
        self.message.seq()
    }
}

// ---------------------------------------------------------------------------------------------
// Client → server

/// Which captions a client wants. `None` means no restriction; an empty list lets nothing through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionFilter {
    /// Tracks to receive.
    #[serde(default)]
    pub tracks: Option<Vec<String>>,
    /// Language codes to receive; captions whose language is not known yet always pass.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
}

impl CaptionFilter {
    /// Everything passes.
    pub fn all() -> Self {
        Self::default()
    }

    /// True if a message of `track` passes the track filter.
    pub fn accepts_track(&self, track: &str) -> bool {
        self.tracks
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == track))
    }

    /// True if a caption of `track` in `language` passes (unknown language passes the language
    /// filter: hiding it would hide the first words of every track until detection).
    pub fn accepts(&self, track: &str, language: Option<&str>) -> bool {
        self.accepts_track(track)
            && match (&self.languages, language) {
                (Some(ls), Some(l)) => ls.iter().any(|x| x.eq_ignore_ascii_case(l)),
                _ => true,
            }
    }
}

/// A message from a caption client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The user's captions toggle: off stops caption and gap messages (nothing is queued while
    /// off); on continues live (no replay: use `resume` for that).
    Captions {
        /// On or off.
        enabled: bool,
    },
    /// Receive partial captions or finals only.
    Partials {
        /// On or off.
        enabled: bool,
    },
    /// Restrict captions and gaps to tracks and languages; both `null`/absent: everything.
    Filter {
        /// Tracks to receive.
        #[serde(default)]
        tracks: Option<Vec<String>>,
        /// Language codes to receive.
        #[serde(default)]
        languages: Option<Vec<String>>,
    },
    /// Replay every final, gap and participant list with seq > `from_seq`, then `resumed`, then
    /// live.
    Resume {
        /// The last room seq the client has.
        from_seq: u64,
    },
    /// Keepalive from clients that cannot send WebSocket pings; answered with `pong`.
    Ping,
}

/// Fields of each client message type (without `type`), checked before serde so the error can
/// name the offending field.
const CLIENT_FIELDS: &[(&str, &[&str])] = &[
    ("captions", &["enabled"]),
    ("partials", &["enabled"]),
    ("filter", &["tracks", "languages"]),
    ("resume", &["from_seq"]),
    ("ping", &[]),
];

/// Why a client message was refused.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// Above the size limit.
    #[error("message of {size} bytes is above the limit of {max} bytes")]
    TooLarge {
        /// Size of the message, bytes.
        size: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// Not JSON.
    #[error("malformed JSON: {reason}")]
    Malformed {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser objected to, with the position.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("a message must be a JSON object with a `type`")]
    NotAnObject,
    /// No `type` field, or not a string.
    #[error("missing `type` (one of captions, partials, filter, resume, ping)")]
    MissingType,
    /// A `type` this protocol does not have.
    #[error("unknown message type `{found}` (one of captions, partials, filter, resume, ping)")]
    UnknownType {
        /// The type received.
        found: String,
    },
    /// A field the message type does not have.
    #[error("unknown field `{field}` in `{message_type}` (expected {expected})")]
    UnknownField {
        /// The message type.
        message_type: String,
        /// The unknown field.
        field: String,
        /// The fields of that type, for the message.
        expected: String,
    },
    /// Known fields with wrong values, or a required field missing.
    #[error("invalid `{message_type}` message: {reason}")]
    Invalid {
        /// The message type.
        message_type: String,
        /// What serde objected to.
        reason: String,
    },
}

impl ProtocolError {
    /// The code of the `error` message answering this.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Malformed { .. } | Self::NotAnObject => ErrorCode::Malformed,
            Self::MissingType | Self::UnknownType { .. } => ErrorCode::UnknownType,
            Self::UnknownField { .. } => ErrorCode::UnknownField,
            Self::Invalid { .. } => ErrorCode::InvalidMessage,
        }
    }

    /// The `error` message answering this.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code(), self.to_string())
    }
}

/// Parse a client text message: size limit (`max_bytes`), JSON syntax, `type`, fields, values,
/// in that order, so the error says the first thing wrong.
pub fn parse_client(text: &str, max_bytes: usize) -> Result<ClientMessage, ProtocolError> {
    if text.len() > max_bytes {
        return Err(ProtocolError::TooLarge {
            size: text.len(),
            max: max_bytes,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
    let obj = value.as_object().ok_or(ProtocolError::NotAnObject)?;
    let ty = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or(ProtocolError::MissingType)?;
    let (ty, fields) = CLIENT_FIELDS
        .iter()
        .find(|(name, _)| *name == ty)
        .ok_or_else(|| ProtocolError::UnknownType { found: ty.into() })?;
    if let Some(field) = obj
        .keys()
        .find(|k| *k != "type" && !fields.contains(&k.as_str()))
    {
        return Err(ProtocolError::UnknownField {
            message_type: (*ty).into(),
            field: field.clone(),
            expected: if fields.is_empty() {
                "no fields".into()
            } else {
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Invalid {
        message_type: (*ty).into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::Word;
    use serde_json::{Value, json};

    fn event(kind: EventKind) -> CaptionEvent {
        CaptionEvent {
            seq: 4,
            kind,
            segment_id: "s0002".into(),
            revision: 1,
            track: "alice".into(),
            speaker: Some("spk1".into()),
            language: Some("fr".into()),
            text: "Bonjour".into(),
            stable_text: "Bonjour".into(),
            start: 1.0,
            end: 1.5,
            emitted_at: 2.0,
            words: vec![Word {
                w: "Bonjour".into(),
                start: 1.0,
                end: 1.5,
                speaker: None,
            }],
        }
    }

    fn all_server_messages() -> Vec<ServerMessage> {
        vec![
            ServerMessage::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                room: "r1".into(),
                last_seq: 41,
                tracks: vec!["alice".into(), "bob".into()],
            }),
            ServerMessage::Caption(Caption {
                room: "r1".into(),
                seq: 42,
                event: event(EventKind::Final),
            }),
            ServerMessage::Gap(Gap {
                room: "r1".into(),
                seq: 43,
                track: "bob".into(),
                from_s: 12.5,
                to_s: 14.0,
                reason: GapReason::AudioLost,
            }),
            ServerMessage::Participants(Participants {
                room: "r1".into(),
                seq: 44,
                participants: vec![Participant {
                    track: "alice".into(),
                    participant: "u-17".into(),
                    name: "Alice".into(),
                    speakers: vec![Speaker {
                        label: "spk1".into(),
                        name: "Alice".into(),
                    }],
                }],
            }),
            ServerMessage::error(ErrorCode::UnknownField, "unknown field `x`"),
            ServerMessage::Resumed(Resumed {
                from_seq: 10,
                replayed: 3,
                last_seq: 44,
            }),
            ServerMessage::Pong,
        ]
    }

    #[test]
    fn server_messages_round_trip_with_their_type_tag() {
        let tags = [
            "hello",
            "caption",
            "gap",
            "participants",
            "error",
            "resumed",
            "pong",
        ];
        for (msg, tag) in all_server_messages().into_iter().zip(tags) {
            let frame = Frame::new(msg.clone());
            let v: Value = serde_json::from_str(frame.text()).unwrap();
            assert_eq!(v["type"], tag, "{}", frame.text());
            let back = Frame::parse(frame.text()).unwrap();
            assert_eq!(back.message(), &msg);
            assert_eq!(back, frame);
        }
    }

    #[test]
    fn caption_is_nested_with_both_seqs() {
        let msg = ServerMessage::Caption(Caption {
            room: "r1".into(),
            seq: 42,
            event: event(EventKind::Partial),
        });
        let v: Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["event"]["seq"], 4);
        assert_eq!(v["event"]["type"], "partial");
        assert_eq!(msg.seq(), Some(42));
        assert!(!msg.is_durable());
        let gap: Value = serde_json::to_value(&all_server_messages()[2]).unwrap();
        assert_eq!(gap["reason"], "audio_lost");
        let err: Value = serde_json::to_value(&all_server_messages()[4]).unwrap();
        assert_eq!(err["code"], "unknown_field");
        assert_eq!(
            serde_json::to_value(ServerMessage::Pong).unwrap(),
            json!({"type": "pong"})
        );
    }

    #[test]
    fn client_messages_round_trip() {
        let msgs = [
            ClientMessage::Captions { enabled: false },
            ClientMessage::Partials { enabled: true },
            ClientMessage::Filter {
                tracks: Some(vec!["alice".into()]),
                languages: None,
            },
            ClientMessage::Resume { from_seq: 17 },
            ClientMessage::Ping,
        ];
        for msg in msgs {
            let text = serde_json::to_string(&msg).unwrap();
            assert_eq!(parse_client(&text, MAX_CLIENT_MESSAGE_BYTES).unwrap(), msg);
        }
        assert_eq!(
            parse_client(r#"{"type":"filter"}"#, 100).unwrap(),
            ClientMessage::Filter {
                tracks: None,
                languages: None
            }
        );
        assert_eq!(
            parse_client(r#" {"from_seq": 0, "type": "resume"} "#, 100).unwrap(),
            ClientMessage::Resume { from_seq: 0 }
        );
    }

    #[test]
    fn oversized_messages_are_refused_before_parsing() {
        let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(20_000));
        let err = parse_client(&text, MAX_CLIENT_MESSAGE_BYTES).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { max: 16384, .. }),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::TooLarge);
        // exactly at the limit is fine
        let ok = r#"{"type":"ping"}"#;
        assert!(parse_client(ok, ok.len()).is_ok());
        assert!(parse_client(ok, ok.len() - 1).is_err());
    }

    #[test]
    fn malformed_json_reports_its_position() {
        let err = parse_client("{\"type\": \"ping\",\n  oops}", 1000).unwrap_err();
        match &err {
            ProtocolError::Malformed { line, column, .. } => {
                assert_eq!((*line, *column), (2, 3), "{err}");
            }
            other => panic!("not malformed: {other}"),
        }
        assert!(err.to_string().contains("line 2 column 3"), "{err}");
        assert_eq!(err.code(), ErrorCode::Malformed);
        assert!(matches!(
            parse_client("[1, 2]", 100).unwrap_err(),
            ProtocolError::NotAnObject
        ));
        assert!(matches!(
            parse_client("", 100).unwrap_err(),
            ProtocolError::Malformed { .. }
        ));
    }

    #[test]
    fn unknown_type_and_field_are_named() {
        let err = parse_client(r#"{"type":"subscribe"}"#, 100).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::UnknownType { found } if found == "subscribe"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::UnknownType);
        assert!(matches!(
            parse_client(r#"{"enabled":true}"#, 100).unwrap_err(),
            ProtocolError::MissingType
        ));
        assert!(matches!(
            parse_client(r#"{"type":3}"#, 100).unwrap_err(),
            ProtocolError::MissingType
        ));

        let err = parse_client(r#"{"type":"captions","enabled":true,"on":1}"#, 100).unwrap_err();
        match &err {
            ProtocolError::UnknownField {
                message_type,
                field,
                ..
            } => assert_eq!((message_type.as_str(), field.as_str()), ("captions", "on")),
            other => panic!("not unknown field: {other}"),
        }
        assert!(err.to_string().contains("`enabled`"), "{err}");
        assert_eq!(err.code(), ErrorCode::UnknownField);
        let err = parse_client(r#"{"type":"ping","x":1}"#, 100).unwrap_err();
        assert!(err.to_string().contains("no fields"), "{err}");
    }

    #[test]
    fn wrong_values_are_invalid() {
        for text in [
            r#"{"type":"captions"}"#,
            r#"{"type":"captions","enabled":"yes"}"#,
            r#"{"type":"resume","from_seq":-1}"#,
            r#"{"type":"filter","tracks":"alice"}"#,
        ] {
            let err = parse_client(text, 100).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Invalid { .. }),
                "{text}: {err}"
            );
            assert_eq!(err.code(), ErrorCode::InvalidMessage);
            assert!(matches!(err.to_message(), ServerMessage::Error(_)));
        }
    }

    #[test]
    fn serde_derive_alone_is_strict_too() {
        // for users that deserialise without parse_client
        for text in [
            r#"{"type":"captions","enabled":true,"x":1}"#,
            r#"{"type":"filter","tracks":null,"colour":"red"}"#,
            r#"{"type":"nope"}"#,
        ] {
            assert!(
                serde_json::from_str::<ClientMessage>(text).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn filters_match_tracks_and_languages() {
        let all = CaptionFilter::all();
        assert!(all.accepts("alice", Some("fr")) && all.accepts("bob", None));
        let f = CaptionFilter {
            tracks: Some(vec!["alice".into()]),
            languages: Some(vec!["FR".into()]),
        };
        assert!(f.accepts("alice", Some("fr")));
        assert!(f.accepts("alice", None), "unknown language passes");
        assert!(!f.accepts("alice", Some("en")));
        assert!(!f.accepts("bob", Some("fr")));
        let none = CaptionFilter {
            tracks: Some(vec![]),
            languages: None,
        };
        assert!(!none.accepts_track("alice"));
    }
}
