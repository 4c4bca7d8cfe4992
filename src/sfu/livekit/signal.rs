//! Wire format of LiveKit signalling: the WebSocket URL, binary protobuf frames, and the ICE
//! candidate JSON carried inside `trickle` messages.

use livekit_protocol as proto;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Signalling protocol version announced in the URL (`protocol=`). The same value as
/// `livekit-signaling` 0.1.8's `PROTOCOL_VERSION` (the signalling crate of `livekit-api` 0.10).
/// On the `/rtc` path (two peer connections) LiveKit's Rust SDK at this version still opens the
/// `_reliable`/`_lossy` data channels in-band; pre-negotiated channel ids (100, 101) are only
/// used in its single-connection mode (`/rtc/v1`), which this layer does not use.
pub const PROTOCOL_VERSION: u32 = 18;
/// `sdk=` value: the server maps it to its `ClientInfo.SDK` enum.
pub const SDK: &str = "rust";
/// Path of the signalling endpoint below the server URL.
pub const RTC_PATH: &str = "rtc";

/// A URL that cannot be used for signalling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("LiveKit url {0:?} must start with wss://, ws://, https:// or http://")]
    Scheme(String),
    #[error("LiveKit url {0:?} has no host")]
    NoHost(String),
    #[error("LiveKit url {0:?} must not carry a query or fragment")]
    Query(String),
    #[error("access token is empty")]
    EmptyToken,
}

/// What the signalling URL announces besides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlOptions {
    /// `auto_subscribe=1`: the server subscribes the sidecar to every track (video too).
    /// Off (the default here): the session subscribes to audio tracks explicitly.
    pub auto_subscribe: bool,
    /// `version=`: the client version reported to the server.
    pub version: String,
}

impl Default for UrlOptions {
    fn default() -> Self {
        Self {
            auto_subscribe: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// `wss://host[/prefix]/rtc?access_token=..&auto_subscribe=0|1&sdk=rust&protocol=18&version=..`.
/// `http(s)://` is turned into `ws(s)://` as LiveKit SDKs do.
pub fn signal_url(base: &str, token: &str, options: &UrlOptions) -> Result<String, UrlError> {
    let (scheme, rest) = if let Some(r) = base.strip_prefix("wss://") {
        ("wss", r)
    } else if let Some(r) = base.strip_prefix("https://") {
        ("wss", r)
    } else if let Some(r) = base.strip_prefix("ws://") {
        ("ws", r)
    } else if let Some(r) = base.strip_prefix("http://") {
        ("ws", r)
    } else {
        return Err(UrlError::Scheme(base.to_string()));
    };
    if rest.contains(['?', '#']) {
        return Err(UrlError::Query(base.to_string()));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(UrlError::NoHost(base.to_string()));
    }
    if token.is_empty() {
        return Err(UrlError::EmptyToken);
    }
    let path = path.trim_end_matches('/');
    let mut url = format!("{scheme}://{host}/");
    if !path.is_empty() {
        url.push_str(path);
        url.push('/');
    }
    url.push_str(RTC_PATH);
    let pairs = [
        ("access_token", token),
        (
            "auto_subscribe",
            if options.auto_subscribe { "1" } else { "0" },
        ),
        ("sdk", SDK),
        ("protocol", &PROTOCOL_VERSION.to_string()),
        ("version", &options.version),
    ];
    for (i, (k, v)) in pairs.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(k);
        url.push('=');
        url.push_str(&query_escape(v));
    }
    Ok(url)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A signalling frame that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable signalling frame ({len} bytes): {source}")]
pub struct FrameError {
    pub len: usize,
    #[source]
    pub source: prost::DecodeError,
}

/// One binary WebSocket frame carrying `request`.
pub fn encode_request(request: proto::signal_request::Message) -> Vec<u8> {
    proto::SignalRequest {
        message: Some(request),
    }
    .encode_to_vec()
}

/// Decodes a binary WebSocket frame from the server.
pub fn decode_response(frame: &[u8]) -> Result<proto::SignalResponse, FrameError> {
    proto::SignalResponse::decode(frame).map_err(|source| FrameError {
        len: frame.len(),
        source,
    })
}

/// One binary WebSocket frame carrying `response` (for tests and fixtures).
pub fn encode_response(response: proto::signal_response::Message) -> Vec<u8> {
    proto::SignalResponse {
        message: Some(response),
    }
    .encode_to_vec()
}

/// Decodes a frame sent by the client (for tests and fixtures).
pub fn decode_request(frame: &[u8]) -> Result<proto::SignalRequest, FrameError> {
    proto::SignalRequest::decode(frame).map_err(|source| FrameError {
        len: frame.len(),
        source,
    })
}

/// Which peer connection a candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The connection on which the server offers the participants' media.
    Subscriber,
    /// The connection the sidecar offers (data channels for captions).
    Publisher,
}

impl Target {
    /// The protocol value.
    pub fn to_proto(self) -> proto::SignalTarget {
        match self {
            Target::Subscriber => proto::SignalTarget::Subscriber,
            Target::Publisher => proto::SignalTarget::Publisher,
        }
    }

    /// From the protocol value; `None` for an unknown value.
    pub fn from_proto(value: i32) -> Option<Self> {
        match proto::SignalTarget::try_from(value).ok()? {
            proto::SignalTarget::Subscriber => Some(Target::Subscriber),
            proto::SignalTarget::Publisher => Some(Target::Publisher),
        }
    }
}

/// An ICE candidate as LiveKit carries it: the JSON of a browser `RTCIceCandidateInit`,
/// `{"candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// The `candidate:` line without the `a=` prefix (webrtcbin's `add-ice-candidate` string).
    pub candidate: String,
    /// Media stream id of the m-line, when known.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// Index of the m-line (webrtcbin's `mlineindex`).
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_m_line_index: Option<u32>,
}

impl IceCandidateInit {
    /// Parses the `candidate_init` string of a trickle message.
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The `candidate_init` string of a trickle message.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_signalling_url() {
        let opts = UrlOptions {
            auto_subscribe: false,
            version: "0.1.0".into(),
        };
        assert_eq!(
            signal_url("wss://lk.example.org", "aa.bb.cc", &opts).unwrap(),
            "wss://lk.example.org/rtc?access_token=aa.bb.cc&auto_subscribe=0&sdk=rust&protocol=18&version=0.1.0"
        );
        assert_eq!(
            signal_url(
                "https://lk.example.org:7880/prefix/",
                "a+b/c=",
                &UrlOptions {
                    auto_subscribe: true,
                    version: "1 2".into()
                }
            )
            .unwrap(),
            "wss://lk.example.org:7880/prefix/rtc?access_token=a%2Bb%2Fc%3D&auto_subscribe=1&sdk=rust&protocol=18&version=1%202"
        );
        assert_eq!(
            signal_url("http://127.0.0.1:7880", "t", &opts).unwrap(),
            "ws://127.0.0.1:7880/rtc?access_token=t&auto_subscribe=0&sdk=rust&protocol=18&version=0.1.0"
        );
        assert_eq!(
            signal_url("lk.example.org", "t", &opts),
            Err(UrlError::Scheme("lk.example.org".into()))
        );
        assert_eq!(
            signal_url("wss:///rtc", "t", &opts),
            Err(UrlError::NoHost("wss:///rtc".into()))
        );
        assert_eq!(
            signal_url("wss://h/?x=1", "t", &opts),
            Err(UrlError::Query("wss://h/?x=1".into()))
        );
        assert_eq!(signal_url("wss://h", "", &opts), Err(UrlError::EmptyToken));
    }

    #[test]
    fn frames_round_trip() {
        let frame = encode_request(proto::signal_request::Message::Leave(proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        }));
        let back = decode_request(&frame).unwrap();
        match back.message {
            Some(proto::signal_request::Message::Leave(l)) => {
                assert_eq!(l.reason(), proto::DisconnectReason::ClientInitiated)
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = decode_response(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.len, 3);
        assert!(
            err.to_string()
                .starts_with("undecodable signalling frame (3 bytes)")
        );
    }

    #[test]
    fn candidate_json_matches_the_browser_init_format() {
        let c = IceCandidateInit {
            candidate: "candidate:1 1 UDP 2122252543 10.0.0.2 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        };
        assert_eq!(
            c.to_json(),
            r#"{"candidate":"candidate:1 1 UDP 2122252543 10.0.0.2 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#
        );
        assert_eq!(IceCandidateInit::from_json(&c.to_json()).unwrap(), c);
        // Browsers add usernameFragment; null mid is allowed.
        let js = r#"{"candidate":"candidate:2 1 udp 1 1.2.3.4 9 typ host","sdpMid":null,"sdpMLineIndex":1,"usernameFragment":"abcd"}"#;
        let c = IceCandidateInit::from_json(js).unwrap();
        assert_eq!(c.sdp_mid, None);
        assert_eq!(c.sdp_m_line_index, Some(1));
        assert!(IceCandidateInit::from_json("{").is_err());
    }
}
