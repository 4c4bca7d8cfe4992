//! The live RTP/Opus input: `rtp-opus://ADDRESS:PORT[?payload=96&jitter_ms=60]`, parsed and
//! validated before any socket is opened, and the placeholder values of `pipelines/rtp_opus.gst`.

use std::fmt;
use std::net::IpAddr;

use super::MediaError;
use super::description::Placeholders;

/// URI scheme of a live RTP/Opus input (compared without regard to case, as URI schemes are).
pub const RTP_OPUS_SCHEME: &str = "rtp-opus";

/// RTP payload type assumed when the URI does not give one (the first dynamic type, what most
/// senders and SFUs pick for Opus).
pub const DEFAULT_RTP_PAYLOAD: u8 = 96;

/// Dynamic RTP payload types (RFC 3551): Opus has no static type, so its type is one of these.
pub const MIN_RTP_PAYLOAD: u8 = 96;
pub const MAX_RTP_PAYLOAD: u8 = 127;

/// Jitter-buffer latency assumed when the URI does not give one, in milliseconds: enough for a
/// sender on the same host or LAN (an SFU beside the captioner). Added to the caption latency.
pub const DEFAULT_JITTER_MS: u32 = 60;

/// Upper bound of `jitter_ms`: beyond it the captions would lag more than they help.
pub const MAX_JITTER_MS: u32 = 2000;

/// Query parameter names (also the `field` of [`MediaError::InvalidSettings`] when they are bad).
const PAYLOAD_KEY: &str = "payload";
const JITTER_KEY: &str = "jitter_ms";

/// Where and how to receive one live Opus track over RTP/UDP.
///
/// ```
/// use soustitre::media::RtpOpusInput;
/// let input = RtpOpusInput::parse("rtp-opus://127.0.0.1:5004?jitter_ms=120")?.unwrap();
/// assert_eq!((input.port, input.payload, input.jitter_ms), (5004, 96, 120));
/// assert_eq!(input.to_string(), "rtp-opus://127.0.0.1:5004?payload=96&jitter_ms=120");
/// // Not an RTP input: goes through the file/URI decoder.
/// assert!(RtpOpusInput::parse("meeting.ogg")?.is_none());
/// # Ok::<(), soustitre::media::MediaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpOpusInput {
    /// Address to listen on: a local address, `0.0.0.0`/`::` for all, or a multicast group.
    pub address: IpAddr,
    /// UDP port, 1..=65535.
    pub port: u16,
    /// RTP payload type of the Opus stream, [`MIN_RTP_PAYLOAD`]..=[`MAX_RTP_PAYLOAD`].
    pub payload: u8,
    /// Jitter-buffer latency, 0..=[`MAX_JITTER_MS`] ms.
    pub jitter_ms: u32,
}

impl RtpOpusInput {
    /// An input on `address:port` with the default payload type and jitter latency.
    pub fn new(address: IpAddr, port: u16) -> Self {
        Self {
            address,
            port,
            payload: DEFAULT_RTP_PAYLOAD,
            jitter_ms: DEFAULT_JITTER_MS,
        }
    }

    /// Parses an `rtp-opus://` input. `Ok(None)` when `input` is not one (a path, another URI);
    /// an `rtp-opus://` input that is malformed or out of range is
    /// [`MediaError::InvalidSettings`] naming the bad part (`address`, `port`, `payload`,
    /// `jitter_ms`, `query`, `path`).
    pub fn parse(input: &str) -> Result<Option<Self>, MediaError> {
        let Some((scheme, rest)) = input.split_once("://") else {
            return Ok(None);
        };
        if !scheme.eq_ignore_ascii_case(RTP_OPUS_SCHEME) {
            return Ok(None);
        }
        let bad = |field: &'static str, reason: String| MediaError::InvalidSettings {
            field,
            reason: format!("{reason} (in {input})"),
        };
        if rest.contains('#') {
            return Err(bad("path", "a fragment (#...) is not allowed".to_owned()));
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = location
            .find('/')
            .map_or((location, ""), |slash| location.split_at(slash));
        if !(path.is_empty() || path == "/") {
            return Err(bad(
                "path",
                format!("an rtp-opus input has no path, got `{path}`"),
            ));
        }
        if authority.contains('@') {
            return Err(bad("address", "user info is not allowed".to_owned()));
        }
        let (host, port) = split_host_port(authority).map_err(|reason| bad("address", reason))?;
        let address = parse_address(host).map_err(|reason| bad("address", reason))?;
        let port = match port {
            None | Some("") => {
                return Err(bad(
                    "port",
                    "missing: write rtp-opus://ADDRESS:PORT".to_owned(),
                ));
            }
            Some(port) => parse_number(port).map_err(|reason| bad("port", reason))?,
        };
        let port = u16::try_from(port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| bad("port", format!("must be between 1 and 65535, got {port}")))?;

        let mut parsed = Self::new(address, port);
        let (mut seen_payload, mut seen_jitter) = (false, false);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad("query", format!("expected key=value, got `{pair}`")));
            };
            let (field, seen) = match key {
                PAYLOAD_KEY => (PAYLOAD_KEY, &mut seen_payload),
                JITTER_KEY => (JITTER_KEY, &mut seen_jitter),
                other => {
                    return Err(bad(
                        "query",
                        format!("unknown parameter `{other}` (known: {PAYLOAD_KEY}, {JITTER_KEY})"),
                    ));
                }
            };
            if std::mem::replace(seen, true) {
                return Err(bad(field, "given twice".to_owned()));
            }
            let number = parse_number(value).map_err(|reason| bad(field, reason))?;
            // Out-of-type values are named here; in-type ones by `validate` below.
            if field == PAYLOAD_KEY {
                parsed.payload =
                    u8::try_from(number).map_err(|_| bad(field, payload_range(number)))?;
            } else {
                parsed.jitter_ms =
                    u32::try_from(number).map_err(|_| bad(field, jitter_range(number)))?;
            }
        }
        parsed
            .validate()
            .map_err(|err| match err {
                MediaError::InvalidSettings { field, reason } => bad(field, reason),
                other => other,
            })
            .map(|()| Some(parsed))
    }

    /// Checks every field (as [`parse`](Self::parse) does), for inputs built in code.
    pub fn validate(&self) -> Result<(), MediaError> {
        let bad = |field: &'static str, reason: String| {
            Err(MediaError::InvalidSettings { field, reason })
        };
        if self.port == 0 {
            return bad("port", "must be between 1 and 65535, got 0".to_owned());
        }
        if !(MIN_RTP_PAYLOAD..=MAX_RTP_PAYLOAD).contains(&self.payload) {
            return bad(PAYLOAD_KEY, payload_range(u64::from(self.payload)));
        }
        if self.jitter_ms > MAX_JITTER_MS {
            return bad(JITTER_KEY, jitter_range(u64::from(self.jitter_ms)));
        }
        Ok(())
    }
}

fn payload_range(got: u64) -> String {
    format!("must be a dynamic RTP payload type, {MIN_RTP_PAYLOAD}..={MAX_RTP_PAYLOAD}, got {got}")
}

fn jitter_range(got: u64) -> String {
    format!("must be between 0 and {MAX_JITTER_MS} ms, got {got}")
}

/// `host:port`, `[v6]:port`, `host`, `[v6]`. A bare IPv6 address is refused (its colons make the
/// port ambiguous).
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{authority}`"))?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or_else(|| format!("unexpected `{after}` after `]`")),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(format!(
            "an IPv6 address goes in brackets, e.g. rtp-opus://[{host}]:PORT"
        )),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn parse_address(host: &str) -> Result<IpAddr, String> {
    if host.is_empty() {
        return Err(
            "missing: write rtp-opus://ADDRESS:PORT (0.0.0.0 listens on all interfaces)".to_owned(),
        );
    }
    host.parse().map_err(|_| {
        format!(
            "`{host}` is not an IP address (host names are not resolved: give the local address \
             to listen on, 0.0.0.0 for all interfaces, or a multicast group)"
        )
    })
}

/// A decimal number, digits only (no sign, no spaces).
fn parse_number(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a number: `{text}`"));
    }
    // Many digits: saturate, the range check then names the value.
    Ok(text.parse().unwrap_or(u64::MAX))
}

impl fmt::Display for RtpOpusInput {
    /// The canonical URI, every parameter spelt out (IPv6 addresses in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            address,
            port,
            payload,
            jitter_ms,
        } = self;
        match address {
            IpAddr::V4(v4) => write!(f, "{RTP_OPUS_SCHEME}://{v4}:{port}")?,
            IpAddr::V6(v6) => write!(f, "{RTP_OPUS_SCHEME}://[{v6}]:{port}")?,
        }
        write!(f, "?{PAYLOAD_KEY}={payload}&{JITTER_KEY}={jitter_ms}")
    }
}

impl Placeholders for RtpOpusInput {
    fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            "address" => super::description::quote(&self.address.to_string()),
            "port" => self.port.to_string(),
            "reuse" => self.address.is_multicast().to_string(),
            "payload" => self.payload.to_string(),
            "jitter_ms" => self.jitter_ms.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn parse(input: &str) -> RtpOpusInput {
        RtpOpusInput::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .unwrap_or_else(|| panic!("{input}: not taken as rtp-opus"))
    }

    fn field_of(input: &str) -> (&'static str, String) {
        match RtpOpusInput::parse(input) {
            Err(MediaError::InvalidSettings { field, reason }) => (field, reason),
            other => panic!("{input}: expected InvalidSettings, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_parameters() {
        let input = parse("rtp-opus://127.0.0.1:5004");
        assert_eq!(
            input,
            RtpOpusInput::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5004)
        );
        assert_eq!(
            (input.payload, input.jitter_ms),
            (DEFAULT_RTP_PAYLOAD, DEFAULT_JITTER_MS)
        );
        let input = parse("RTP-Opus://0.0.0.0:65535/?jitter_ms=0&payload=127&");
        assert_eq!(input.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            (input.port, input.payload, input.jitter_ms),
            (65535, 127, 0)
        );
        let input = parse("rtp-opus://[::1]:1?payload=96&jitter_ms=2000");
        assert_eq!(input.address, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!((input.port, input.jitter_ms), (1, 2000));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "rtp-opus://127.0.0.1:5004?payload=96&jitter_ms=60",
            "rtp-opus://[::1]:5004?payload=111&jitter_ms=200",
            "rtp-opus://239.1.2.3:6000?payload=100&jitter_ms=0",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn other_inputs_are_not_rtp() {
        for input in [
            "a.wav",
            "/tmp/rtp-opus.wav",
            "file:///tmp/a.wav",
            "rtp://127.0.0.1:5004",
            "udp://127.0.0.1:5004",
            "rtp-opus:127.0.0.1:5004",
        ] {
            assert_eq!(RtpOpusInput::parse(input).unwrap(), None, "{input}");
        }
    }

    #[test]
    fn bad_parts_are_named() {
        let cases = [
            ("rtp-opus://", "address"),
            ("rtp-opus://:5004", "address"),
            ("rtp-opus://localhost:5004", "address"),
            ("rtp-opus://example.org:5004", "address"),
            ("rtp-opus://256.1.1.1:5004", "address"),
            ("rtp-opus://::1:5004", "address"),
            ("rtp-opus://[::1:5004", "address"),
            ("rtp-opus://[::1]x:5004", "address"),
            ("rtp-opus://user@127.0.0.1:5004", "address"),
            ("rtp-opus://127.0.0.1", "port"),
            ("rtp-opus://127.0.0.1:", "port"),
            ("rtp-opus://127.0.0.1:0", "port"),
            ("rtp-opus://127.0.0.1:65536", "port"),
            ("rtp-opus://127.0.0.1:-1", "port"),
            ("rtp-opus://127.0.0.1:50x", "port"),
            ("rtp-opus://127.0.0.1:99999999999999999999999", "port"),
            ("rtp-opus://127.0.0.1:5004?payload=95", "payload"),
            ("rtp-opus://127.0.0.1:5004?payload=128", "payload"),
            ("rtp-opus://127.0.0.1:5004?payload=300", "payload"),
            ("rtp-opus://127.0.0.1:5004?payload=", "payload"),
            ("rtp-opus://127.0.0.1:5004?payload=opus", "payload"),
            ("rtp-opus://127.0.0.1:5004?payload=96&payload=97", "payload"),
            ("rtp-opus://127.0.0.1:5004?jitter_ms=2001", "jitter_ms"),
            ("rtp-opus://127.0.0.1:5004?jitter_ms=-5", "jitter_ms"),
            ("rtp-opus://127.0.0.1:5004?jitter_ms=1.5", "jitter_ms"),
            ("rtp-opus://127.0.0.1:5004?latency=60", "query"),
            ("rtp-opus://127.0.0.1:5004?payload", "query"),
            ("rtp-opus://127.0.0.1:5004/track", "path"),
            ("rtp-opus://127.0.0.1:5004#x", "path"),
        ];
        for (input, expected) in cases {
            let (field, reason) = field_of(input);
            assert_eq!(field, expected, "{input}: {reason}");
            assert!(reason.contains(input), "{input}: {reason}");
            let message = RtpOpusInput::parse(input).unwrap_err().to_string();
            assert!(message.contains(&format!("`{expected}`")), "{message}");
        }
        let (_, reason) = field_of("rtp-opus://127.0.0.1:5004?payload=128");
        assert!(
            reason.contains("96..=127") && reason.contains("128"),
            "{reason}"
        );
        let (_, reason) = field_of("rtp-opus://127.0.0.1:70000");
        assert!(reason.contains("70000"), "{reason}");
        let (_, reason) = field_of("rtp-opus://localhost:5004");
        assert!(reason.contains("not an IP address"), "{reason}");
    }

    #[test]
    fn validate_checks_inputs_built_in_code() {
        let good = RtpOpusInput::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5004);
        good.validate().unwrap();
        for (bad, field) in [
            (RtpOpusInput { port: 0, ..good }, "port"),
            (RtpOpusInput { payload: 0, ..good }, "payload"),
            (
                RtpOpusInput {
                    jitter_ms: MAX_JITTER_MS + 1,
                    ..good
                },
                "jitter_ms",
            ),
        ] {
            assert!(
                matches!(bad.validate(), Err(MediaError::InvalidSettings { field: f, .. }) if f == field),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn placeholders() {
        let input = parse("rtp-opus://[::1]:5004?payload=100&jitter_ms=80");
        assert_eq!(input.value("address").as_deref(), Some("\"::1\""));
        assert_eq!(input.value("port").as_deref(), Some("5004"));
        assert_eq!(input.value("payload").as_deref(), Some("100"));
        assert_eq!(input.value("jitter_ms").as_deref(), Some("80"));
        assert_eq!(input.value("reuse").as_deref(), Some("false"));
        assert_eq!(input.value("uri"), None);
        let multicast = parse("rtp-opus://239.1.2.3:5004");
        assert_eq!(multicast.value("reuse").as_deref(), Some("true"));
    }
}
