//! The service configuration: `soustitre serve --config soustitre.toml`.
//!
//! One TOML file (every table `deny_unknown_fields`; see `soustitre.example.toml` at the repo root
//! for every field with its default), then environment variables, then command-line flags, each
//! layer winning over the previous one:
//!
//! | setting | file | environment | flag |
//! |---|---|---|---|
//! | public listen address | `server.listen` | `SOUSTITRE_LISTEN` | [`CliOverrides::listen`] |
//! | admin listen address | `admin.listen` | `SOUSTITRE_ADMIN_LISTEN` | [`CliOverrides::admin_listen`] |
//! | admin token | `admin.token` / `admin.token_file` | `SOUSTITRE_ADMIN_TOKEN` | (none: argv is visible to every local user) |
//! | HS256 secret | `auth.hs256_secret` / `auth.secret_file` | `SOUSTITRE_JWT_SECRET` | (none) |
//! | data directory | `storage.data_dir` | `SOUSTITRE_DATA_DIR` | [`CliOverrides::data_dir`] |
//!
//! An empty variable counts as unset. The environment is passed in (an [`Env`] map, see
//! [`process_env`]) so tests never touch the process's own.
//!
//! Everything is validated once, at start, by [`ServiceConfig::load`]; errors name the field
//! path (`rooms[1].stream.partial_interval_ms`, `limits.idle_timeout_s`, `auth.hs256_secret`).
//! Relative paths in the file (`secret_file`, `public_key_file`, `token_file`, `data_dir`,
//! `model_dir`, a directory `mirror`, source `uri`s that are plain paths) are taken from the
//! directory of the file, so a configuration works from any current directory.
//!
//! Rooms: `[defaults.stream]` is the [`StreamSettings`] of every room; a `[[rooms]]` entry may
//! override any subset of it in `[rooms.stream]` (a partial table merged over the defaults, then
//! validated as a whole). Key files are read and keys parsed during `load`, so a bad key is a
//! startup error, never a refusal of every subscriber later.
//!
//! ```no_run
//! use soustitre::config::{ServiceConfig, process_env};
//! let config = ServiceConfig::load(Some("soustitre.toml".as_ref()), &process_env())?;
//! println!("captions on ws://{}", config.server.listen);
//! # Ok::<_, soustitre::config::ConfigError>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{AdminAuth, AuthSettings, InvalidAuthSetting, JwtAlgorithm, Secret, Verifier};
use crate::diarize::DiarizeSettings;
use crate::engine::{DEFAULT_MODEL, MODELS};
use crate::models::Mirror;
use crate::stream::StreamSettings;

/// Default public (caption WebSocket) listen address.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default operator API listen address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

/// Overrides `server.listen`.
pub const ENV_LISTEN: &str = "SOUSTITRE_LISTEN";
/// Overrides `admin.listen`.
pub const ENV_ADMIN_LISTEN: &str = "SOUSTITRE_ADMIN_LISTEN";
/// Overrides `admin.token` and `admin.token_file`.
pub const ENV_ADMIN_TOKEN: &str = "SOUSTITRE_ADMIN_TOKEN";
/// Overrides `auth.hs256_secret` and `auth.secret_file` (HS256 only).
pub const ENV_JWT_SECRET: &str = "SOUSTITRE_JWT_SECRET";
/// Overrides `storage.data_dir`.
pub const ENV_DATA_DIR: &str = "SOUSTITRE_DATA_DIR";

/// Default largest control message a client may send, bytes.
pub const DEFAULT_MAX_CONTROL_MESSAGE_BYTES: usize = 16 * 1024;
/// Default control messages per second a client may send.
pub const DEFAULT_MAX_CONTROL_MESSAGES_PER_S: u32 = 10;
/// Default per-client queue of partials (overflow: the oldest partial is dropped; a newer
/// partial of the same segment supersedes it anyway).
pub const DEFAULT_CLIENT_PARTIAL_QUEUE: usize = 16;
/// Default per-client queue of finals and other must-deliver events (overflow: the client is too
/// slow and is closed with a reason; finals are never dropped silently).
pub const DEFAULT_CLIENT_FINAL_QUEUE: usize = 256;
/// Default time between two pings to a client, seconds.
pub const DEFAULT_PING_INTERVAL_S: u32 = 10;
/// Default silence (no pong, no message) after which a client is dropped, seconds.
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 20;
/// Default number of rooms captioned at once (each runs its own recognition; size it to the CPU).
pub const DEFAULT_MAX_ROOMS: usize = 4;
/// Default subscribers per room.
pub const DEFAULT_MAX_SUBSCRIBERS_PER_ROOM: usize = 200;
/// Data directory inside a checkout (`<root>/.local/data`, already ignored by git).
pub const CHECKOUT_DATA_DIR: &str = ".local/data";
/// Longest room id or track id.
pub const MAX_ID_LEN: usize = 64;
/// Longest participant or display name of a source.
pub const MAX_NAME_LEN: usize = 128;

/// Environment variables by name (only the `SOUSTITRE_*` ones matter).
pub type Env = BTreeMap<String, String>;

/// The process's `SOUSTITRE_*` variables (values that are not UTF-8 are skipped).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("SOUSTITRE_"))
        .collect()
}

/// Command-line overrides (they win over the file and the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOverrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The file, as written.

/// The configuration file as written (before environment, flags and validation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerConfig,
    pub admin: AdminFile,
    pub auth: AuthSettings,
    pub storage: StorageFile,
    pub limits: LimitsConfig,
    pub defaults: DefaultsFile,
    pub models: ModelsFile,
    pub rooms: Vec<RoomFile>,
}

/// `[server]`: the public side (caption WebSockets, viewer page).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `IP:port` to listen on. Put a TLS-terminating proxy in front for anything but localhost.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
        }
    }
}

/// `[admin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    /// `IP:port` of the operator API. A non-loopback address requires a token.
    pub listen: SocketAddr,
    /// Static bearer token, inline. Prefer `token_file` or `SOUSTITRE_ADMIN_TOKEN`.
    pub token: Option<Secret>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN,
            token: None,
            token_file: None,
        }
    }
}

/// `[storage]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageFile {
    /// Where room state and caption logs are kept. Default: `<checkout>/.local/data`, or the
    /// installation's data directory (`/var/lib/soustitre`, `$XDG_DATA_HOME/soustitre`, ...).
    pub data_dir: Option<PathBuf>,
}

/// `[limits]`: resource bounds per client, room and service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest control message from a client, bytes; a larger one closes the socket.
    pub max_control_message_bytes: usize,
    /// Control messages per second a client may send; beyond, the socket is closed.
    pub max_control_messages_per_s: u32,
    /// Partials queued per client (oldest dropped on overflow).
    pub client_partial_queue: usize,
    /// Finals and other must-deliver events queued per client (client closed on overflow).
    pub client_final_queue: usize,
    /// Seconds between pings.
    pub ping_interval_s: u32,
    /// Seconds without any frame from a client before it is dropped (above `ping_interval_s`).
    pub idle_timeout_s: u32,
    /// Rooms captioned at once (preconfigured plus created through the admin API).
    pub max_rooms: usize,
    /// Subscribers per room.
    pub max_subscribers_per_room: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_control_message_bytes: DEFAULT_MAX_CONTROL_MESSAGE_BYTES,
            max_control_messages_per_s: DEFAULT_MAX_CONTROL_MESSAGES_PER_S,
            client_partial_queue: DEFAULT_CLIENT_PARTIAL_QUEUE,
            client_final_queue: DEFAULT_CLIENT_FINAL_QUEUE,
            ping_interval_s: DEFAULT_PING_INTERVAL_S,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_subscribers_per_room: DEFAULT_MAX_SUBSCRIBERS_PER_ROOM,
        }
    }
}

/// `[defaults]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsFile {
    /// `[defaults.stream]`: the streaming policy of every room unless overridden.
    pub stream: StreamSettings,
    /// `[defaults.diarization]`: speaker diarization knobs of the tracks that diarize.
    pub diarization: DiarizeSettings,
}

/// `[models]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsFile {
    /// Recognition model (`whisper-base`, `whisper-tiny.en`).
    pub model: String,
    /// Model directory; default as `SOUSTITRE_MODEL_DIR` / `paths::default_model_dir`.
    pub model_dir: Option<PathBuf>,
    /// Mirror to fetch missing models from (directory, `file://`, `http(s)://`).
    pub mirror: Option<String>,
}

impl Default for ModelsFile {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_string(),
            model_dir: None,
            mirror: None,
        }
    }
}

/// A `[[rooms]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomFile {
    /// Room id (`[A-Za-z0-9._-]`, at most [`MAX_ID_LEN`]); the `room` claim of tokens.
    pub id: String,
    /// `[rooms.stream]`: any subset of the stream settings, merged over `[defaults.stream]`.
    #[serde(default)]
    pub stream: toml::Table,
    /// `[[rooms.sources]]`: inputs captioned from start.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Label several speakers inside each track of the room (default off: a participant's
    /// track is usually one person); a source's own `diarize` overrides it.
    #[serde(default)]
    pub diarize: bool,
    /// `[rooms.diarization]`: any subset of the diarization knobs, merged over
    /// `[defaults.diarization]` (a room of shared microphones may allow more speakers, say).
    #[serde(default)]
    pub diarization: toml::Table,
    /// `[rooms.janus]`: attach the room to a Janus VideoRoom; every publisher becomes a track.
    #[serde(default)]
    pub janus: Option<JanusFile>,
    /// `[rooms.whep]`: play WHEP endpoints; each one is a participant's track.
    #[serde(default)]
    pub whep: Option<WhepFile>,
    /// `[rooms.livekit]`: attach the room to a LiveKit room; every participant's audio track
    /// becomes a track, and the captions are published back into the LiveKit room.
    #[serde(default)]
    pub livekit: Option<crate::sfu::livekit::LiveKitConfig>,
}

/// A `[rooms.janus]` table: the Janus VideoRoom a room is attached to.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JanusFile {
    /// Janus WebSocket API URL (`ws://host:8188/` or `wss://`).
    pub url: String,
    /// VideoRoom room id (number, or string for `string_ids` rooms).
    pub room: toml::Value,
    /// Room PIN, if the room has one.
    #[serde(default)]
    pub pin: Option<String>,
    /// Display name of soustitre in the room.
    #[serde(default)]
    pub display: Option<String>,
    /// Jitter buffer latency of the subscribed tracks, ms (default 60, at most 2000).
    #[serde(default)]
    pub jitter_ms: Option<u32>,
    /// Restrict ICE to these local addresses (default: all interfaces).
    #[serde(default)]
    pub ice_addresses: Vec<String>,
    /// STUN server `stun://host:port`, when the SFU is behind NAT.
    #[serde(default)]
    pub stun_server: Option<String>,
}

/// Longest jitter buffer latency accepted for SFU tracks, ms.
pub const MAX_SFU_JITTER_MS: u32 = 2000;

/// The media settings of an SFU attachment table (`[rooms.janus]`, `[rooms.whep]`,
/// `[rooms.livekit]`): jitter buffer at most [`MAX_SFU_JITTER_MS`], IP addresses for ICE, a
/// `stun://host:port` STUN server; errors name `at.<field>`.
pub fn resolve_media(
    at: &str,
    jitter_ms: Option<u32>,
    ice_addresses: &[String],
    stun_server: Option<&String>,
) -> Result<crate::sfu::media::MediaSettings, ConfigError> {
    let jitter_ms = jitter_ms.unwrap_or(crate::sfu::media::DEFAULT_JITTER_MS);
    if jitter_ms > MAX_SFU_JITTER_MS {
        return Err(ConfigError::invalid(
            format!("{at}.jitter_ms"),
            format!("must be at most {MAX_SFU_JITTER_MS}"),
        ));
    }
    for (i, a) in ice_addresses.iter().enumerate() {
        if a.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::invalid(
                format!("{at}.ice_addresses[{i}]"),
                format!("{a:?} is not an IP address"),
            ));
        }
    }
    if let Some(stun) = stun_server
        && !(stun.starts_with("stun://") && stun.len() > "stun://".len())
    {
        return Err(ConfigError::invalid(
            format!("{at}.stun_server"),
            format!("{stun:?} is not a stun://host:port URL"),
        ));
    }
    Ok(crate::sfu::media::MediaSettings {
        jitter_ms,
        ice_addresses: ice_addresses.to_vec(),
        stun_server: stun_server.cloned(),
    })
}

impl JanusFile {
    /// Checks the table and turns it into attachment settings; errors name `at.<field>`.
    pub fn resolve(&self, at: &str) -> Result<crate::sfu::janus::JanusSettings, ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.len() < 6 {
            return Err(ConfigError::invalid(
                format!("{at}.url"),
                "must be a ws:// or wss:// URL of Janus's WebSocket API",
            ));
        }
        let room = match &self.room {
            toml::Value::Integer(n) if *n > 0 => n.to_string(),
            toml::Value::String(r) if !r.trim().is_empty() => r.clone(),
            _ => {
                return Err(ConfigError::invalid(
                    format!("{at}.room"),
                    "must be a positive number or a non-empty string",
                ));
            }
        };
        let media = resolve_media(
            at,
            self.jitter_ms,
            &self.ice_addresses,
            self.stun_server.as_ref(),
        )?;
        Ok(crate::sfu::janus::JanusSettings {
            url: url.to_owned(),
            room,
            pin: self.pin.clone(),
            display: self
                .display
                .clone()
                .unwrap_or_else(|| crate::sfu::janus::DEFAULT_DISPLAY.to_owned()),
            media,
        })
    }
}

/// A `[rooms.whep]` table: WHEP (RFC 9725) endpoints the room plays, each one participant's
/// track. One endpoint is written inline (`url`, `token`, `name`...); several go in `endpoints`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhepFile {
    /// Endpoint URL (`http://` or `https://`), for a room with one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bearer token of that endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Display name of that endpoint's speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Participant identity of that speaker (default: the URL's last path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Track id (default `whep-<identity>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// `[[rooms.whep.endpoints]]`: several endpoints (instead of `url`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WhepEndpointFile>,
    /// Jitter buffer latency, ms (default 60, at most 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u32>,
    /// Restrict ICE to these local addresses (default: all interfaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_addresses: Vec<String>,
    /// STUN server `stun://host:port` (the server's `Link` headers override it after the first
    /// connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun_server: Option<String>,
    /// Longest wait for the first audio after the POST, s (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_s: Option<f64>,
    /// Longest stretch without audio packets before reconnecting, s (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_timeout_s: Option<f64>,
}

/// One of `[[rooms.whep.endpoints]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhepEndpointFile {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

/// Longest WHEP connect or media timeout accepted, s.
pub const MAX_WHEP_TIMEOUT_S: f64 = 600.0;

impl WhepFile {
    /// Checks the table and turns it into attachment settings; errors name `at.<field>`.
    pub fn resolve(&self, at: &str) -> Result<crate::sfu::whep::WhepSettings, ConfigError> {
        use crate::sfu::whep;
        let inline = WhepEndpointFile {
            url: self.url.clone().unwrap_or_default(),
            token: self.token.clone(),
            name: self.name.clone(),
            identity: self.identity.clone(),
            track: self.track.clone(),
        };
        let has_inline = self.url.is_some()
            || self.token.is_some()
            || self.name.is_some()
            || self.identity.is_some()
            || self.track.is_some();
        let list: Vec<(String, &WhepEndpointFile)> = match (has_inline, self.endpoints.is_empty()) {
            (true, true) => vec![(at.to_owned(), &inline)],
            (false, false) => self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{at}.endpoints[{i}]"), e))
                .collect(),
            (true, false) => {
                return Err(ConfigError::invalid(
                    format!("{at}.endpoints"),
                    "set `url` (one endpoint) or `endpoints` (several), not both",
                ));
            }
            (false, true) => {
                return Err(ConfigError::invalid(
                    format!("{at}.url"),
                    "missing: the WHEP endpoint URL (or `endpoints` for several)",
                ));
            }
        };
        let mut endpoints = Vec::with_capacity(list.len());
        let mut tracks = HashSet::new();
        for (n, (at, e)) in list.into_iter().enumerate() {
            let url = e.url.trim();
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::invalid(
                    format!("{at}.url"),
                    "must be an http:// or https:// URL of the WHEP endpoint",
                ));
            }
            if let Some(t) = &e.token
                && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(ConfigError::invalid(
                    format!("{at}.token"),
                    "must be a non-empty token without spaces",
                ));
            }
            for (field, value) in [("name", &e.name), ("identity", &e.identity)] {
                if let Some(v) = value
                    && (v.trim().is_empty()
                        || v.chars().count() > MAX_NAME_LEN
                        || v.chars().any(char::is_control))
                {
                    return Err(ConfigError::invalid(
                        format!("{at}.{field}"),
                        format!("must have 1 to {MAX_NAME_LEN} printable characters"),
                    ));
                }
            }
            let identity = e.identity.clone().unwrap_or_else(|| {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                match path.trim_end_matches('/').rsplit('/').next() {
                    Some(seg) if !seg.is_empty() && !seg.contains(':') => seg.to_owned(),
                    _ => format!("endpoint-{}", n + 1),
                }
            });
            let track = match &e.track {
                Some(t) => t.clone(),
                None => {
                    let safe: String = identity
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                                c
                            } else {
                                '-'
                            }
                        })
                        .take(MAX_ID_LEN - 5)
                        .collect();
                    format!("whep-{safe}")
                }
            };
            check_id(format!("{at}.track"), &track)?;
            if !tracks.insert(track.clone()) {
                return Err(ConfigError::invalid(
                    format!("{at}.track"),
                    format!("track {track:?} is used by another endpoint"),
                ));
            }
            endpoints.push(whep::WhepEndpoint {
                url: url.to_owned(),
                token: e.token.clone(),
                participant: crate::sfu::RemoteParticipant {
                    track,
                    name: e.name.clone().unwrap_or_else(|| identity.clone()),
                    identity,
                },
            });
        }
        let media = resolve_media(
            at,
            self.jitter_ms,
            &self.ice_addresses,
            self.stun_server.as_ref(),
        )?;
        let timeout = |field: &str, v: Option<f64>, default: std::time::Duration| match v {
            None => Ok(default),
            Some(s) if s > 0.0 && s <= MAX_WHEP_TIMEOUT_S => {
                Ok(std::time::Duration::from_secs_f64(s))
            }
            Some(_) => Err(ConfigError::invalid(
                format!("{at}.{field}"),
                format!("must be more than 0 and at most {MAX_WHEP_TIMEOUT_S} s"),
            )),
        };
        Ok(whep::WhepSettings {
            endpoints,
            media,
            connect_timeout: timeout(
                "connect_timeout_s",
                self.connect_timeout_s,
                whep::DEFAULT_CONNECT_TIMEOUT,
            )?,
            media_timeout: timeout(
                "media_timeout_s",
                self.media_timeout_s,
                whep::DEFAULT_MEDIA_TIMEOUT,
            )?,
        })
    }
}

/// A `[[rooms.sources]]` entry: one captioned track.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Track id, unique in the room (`[A-Za-z0-9._-]`).
    pub track: String,
    /// A file path or any URI GStreamer reads (`file://`, `http(s)://`, `rtsp://`...). A relative
    /// path is taken from the configuration file's directory.
    pub uri: String,
    /// Participant identity of the speaker.
    #[serde(default)]
    pub participant: Option<String>,
    /// Display name of the speaker.
    #[serde(default)]
    pub name: Option<String>,
    /// Restart the input at its end (demo rooms fed from a file).
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// Label several speakers inside this track (a shared microphone); unset: the room's
    /// `diarize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diarize: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// The validated service configuration, with environment and flags applied.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    /// Subscriber authentication as configured (key files made absolute).
    pub auth: AuthSettings,
    /// The verifier built from `auth` (keys already read and parsed).
    pub verifier: Verifier,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    /// `[defaults.stream]`: settings of rooms created without overrides.
    pub default_stream: StreamSettings,
    /// `[defaults.diarization]`: knobs of the tracks that diarize.
    pub default_diarization: DiarizeSettings,
    pub models: ModelsConfig,
    /// Rooms to create at start, with their merged stream settings.
    pub rooms: Vec<RoomConfig>,
}

/// The operator API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `None` only on a loopback address without a configured token (open to local users).
    pub auth: Option<AdminAuth>,
}

/// Storage, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
}

/// Models, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsConfig {
    pub model: String,
    /// `None`: the default lookup of [`crate::paths::default_model_dir`].
    pub model_dir: Option<PathBuf>,
    /// `None`: the default lookup of [`crate::paths::default_mirror`].
    pub mirror: Option<Mirror>,
}

/// A room to create at start.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub id: String,
    /// `[defaults.stream]` with this room's overrides merged in, validated.
    pub stream: StreamSettings,
    pub sources: Vec<SourceConfig>,
    /// Diarize the room's tracks unless a source says otherwise.
    pub diarize: bool,
    /// Diarization knobs (`[defaults.diarization]`), validated.
    pub diarization: DiarizeSettings,
    /// The Janus room this room is attached to, if any.
    pub janus: Option<crate::sfu::janus::JanusSettings>,
    /// The WHEP endpoints this room plays, if any.
    pub whep: Option<crate::sfu::whep::WhepSettings>,
    /// The LiveKit room this room is attached to, if any.
    pub livekit: Option<crate::sfu::livekit::LiveKitSettings>,
}

impl RoomConfig {
    /// Whether `source` of this room is diarized.
    pub fn diarizes(&self, source: &SourceConfig) -> bool {
        source.diarize.unwrap_or(self.diarize)
    }

    /// Whether any track of the room is diarized.
    pub fn any_diarized(&self) -> bool {
        self.sources.iter().any(|s| self.diarizes(s))
    }
}

/// A configuration that cannot be used. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field, or a value of the wrong type.
    #[error("{file}{}: {}{message}", line.map(|l| format!(":{l}")).unwrap_or_default(), field.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default())]
    Parse {
        file: String,
        line: Option<usize>,
        /// Path of the table or key, e.g. `rooms[1].sources[0].uri`.
        field: Option<String>,
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// An environment variable that cannot be used (its value is shown: only non-secret
    /// variables produce this error).
    #[error("{var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// The field path the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { field, .. } => field.as_deref(),
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Env { .. } => None,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl ServiceConfig {
    /// Reads `path` (or starts from the defaults without one), applies `env`, validates.
    pub fn load(path: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        Self::load_with(path, env, &CliOverrides::default())
    }

    /// [`ServiceConfig::load`] with command-line overrides on top.
    pub fn load_with(
        path: Option<&Path>,
        env: &Env,
        cli: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return resolve(
                ConfigFile::default(),
                None,
                None,
                env,
                cli,
                &default_data_dir,
            );
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = parse(&text, &path.display().to_string())?;
        let base = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        resolve(file, Some(path), base, env, cli, &default_data_dir)
    }

    /// Parses and validates configuration text; relative paths are taken from `base_dir`.
    pub fn from_toml(
        text: &str,
        base_dir: Option<&Path>,
        env: &Env,
        cli: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        let file = parse(text, "<config>")?;
        resolve(file, None, base_dir, env, cli, &default_data_dir)
    }

    /// Stream settings for a room created at run time (admin API) with `overrides` merged over
    /// `[defaults.stream]`; errors name `path.field`.
    pub fn stream_for(
        &self,
        overrides: &toml::Table,
        path: &str,
    ) -> Result<StreamSettings, ConfigError> {
        merge_stream(&self.default_stream, overrides, path)
    }

    /// Diarization knobs for a room created at run time (admin API) with `overrides` merged
    /// over `[defaults.diarization]`; errors name `path.field`.
    pub fn diarization_for(
        &self,
        overrides: &toml::Table,
        path: &str,
    ) -> Result<DiarizeSettings, ConfigError> {
        merge_diarization(&self.default_diarization, overrides, path)
    }
}

/// `<checkout>/.local/data`, else the installation's data directory (the parent of
/// [`crate::paths::installed_model_dir`]).
fn default_data_dir() -> PathBuf {
    match crate::paths::project_root() {
        Some(root) => root.join(CHECKOUT_DATA_DIR),
        None => {
            let models = crate::paths::installed_model_dir();
            models.parent().map(Path::to_path_buf).unwrap_or(models)
        }
    }
}

/// Parses the file; errors carry the line and the field path.
pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, field) = match e.span() {
            Some(span) => (
                Some(text[..span.start.min(text.len())].matches('\n').count() + 1),
                field_at(text, span),
            ),
            None => (None, None),
        };
        ConfigError::Parse {
            file: origin.to_string(),
            line,
            field,
            message: e.message().trim().to_string(),
        }
    })
}

/// The dotted path of what `span` points at: the enclosing table (with indices of arrays of
/// tables, `rooms[1].sources[0]`), plus the key of the line if the line is `key = value`.
fn field_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    // An error on a header line (a missing required field, a duplicate table) is about that
    // table: count it too.
    let on_header = header_name(line).is_some();
    let scan_end = if on_header { line_end } else { line_start };
    // Count arrays of tables and find the current table.
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut table: Option<String> = None;
    for l in text[..scan_end].lines().map(str::trim) {
        if let Some(name) = header_name(l) {
            if l.starts_with("[[") {
                *counts.entry(name.clone()).or_default() += 1;
                let nested = format!("{name}.");
                counts.retain(|k, _| !k.starts_with(&nested));
            }
            table = Some(name);
        }
    }
    let mut path = String::new();
    if let Some(name) = &table {
        let mut prefix = String::new();
        for segment in name.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
                path.push('.');
            }
            prefix.push_str(segment);
            path.push_str(segment);
            if let Some(n) = counts.get(&prefix) {
                path.push_str(&format!("[{}]", n.saturating_sub(1)));
            }
        }
    }
    if !on_header && let Some((key, _)) = line.split_once('=') {
        let key: Vec<&str> = key
            .split('.')
            .map(|k| k.trim().trim_matches(['"', '\'']))
            .collect();
        if !key.iter().any(|k| k.is_empty()) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key.join("."));
        }
    }
    (!path.is_empty()).then_some(path)
}

/// `a.b` for a `[a.b]` or `[[a.b]]` line (comments after it allowed).
fn header_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let (inner, close) = match inner.strip_prefix('[') {
        Some(i) => (i, "]]"),
        None => (inner, "]"),
    };
    let end = inner.find(close)?;
    let name: Vec<&str> = inner[..end]
        .split('.')
        .map(|s| s.trim().trim_matches(['"', '\'']))
        .collect();
    Some(name.join("."))
}

/// A set, non-empty variable.
fn var<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn env_addr(env: &Env, name: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
    var(env, name)
        .map(|v| {
            v.trim().parse().map_err(|e| ConfigError::Env {
                var: name,
                value: v.to_string(),
                reason: format!("not an IP:port address ({e})"),
            })
        })
        .transpose()
}

/// A path from the file: relative ones are taken from the file's directory.
fn from_base(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

/// Whether an input is a URI (`scheme://...` with a scheme of two or more characters, or
/// `data:`) rather than a file path.
fn is_uri(input: &str) -> bool {
    if input.starts_with("data:") {
        return true;
    }
    input.split_once("://").is_some_and(|(scheme, _)| {
        scheme.len() >= 2
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

/// A room or track id.
fn check_id(field: String, id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ConfigError::invalid(
            field,
            format!("{id:?} must have 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ConfigError::invalid(
            field,
            format!("{id:?} may only hold letters, digits, `.`, `_` and `-`"),
        ));
    }
    Ok(())
}

fn auth_error(e: InvalidAuthSetting, from_env: bool) -> ConfigError {
    let note = if from_env && matches!(e.field, "hs256_secret") {
        format!(" (value from {ENV_JWT_SECRET})")
    } else {
        String::new()
    };
    ConfigError::invalid(format!("auth.{}", e.field), format!("{}{note}", e.reason))
}

/// Applies environment and flags, then validates everything.
fn resolve(
    file: ConfigFile,
    path: Option<&Path>,
    base: Option<&Path>,
    env: &Env,
    cli: &CliOverrides,
    default_data_dir: &dyn Fn() -> PathBuf,
) -> Result<ServiceConfig, ConfigError> {
    let ConfigFile {
        mut server,
        admin,
        mut auth,
        storage,
        limits,
        defaults,
        models,
        rooms,
    } = file;

    // Server and admin addresses: file < env < flags.
    if let Some(a) = env_addr(env, ENV_LISTEN)? {
        server.listen = a;
    }
    if let Some(a) = cli.listen {
        server.listen = a;
    }
    let mut admin_listen = admin.listen;
    if let Some(a) = env_addr(env, ENV_ADMIN_LISTEN)? {
        admin_listen = a;
    }
    if let Some(a) = cli.admin_listen {
        admin_listen = a;
    }
    // port 0 asks the system for a free port: two such listeners never collide
    if admin_listen == server.listen && admin_listen.port() != 0 {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!("{admin_listen} is also server.listen; the operator API needs its own address"),
        ));
    }

    // Admin token: env wins over the file's token and token_file.
    let (token, token_field) = if let Some(t) = var(env, ENV_ADMIN_TOKEN) {
        (
            Some(t.to_string()),
            format!("admin.token (from {ENV_ADMIN_TOKEN})"),
        )
    } else {
        match (admin.token, admin.token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "admin.token_file",
                    "set either admin.token or admin.token_file, not both",
                ));
            }
            (Some(t), None) => (Some(t.expose().to_string()), "admin.token".to_string()),
            (None, Some(p)) => {
                let p = from_base(base, p);
                let t = std::fs::read_to_string(&p).map_err(|e| {
                    ConfigError::invalid(
                        "admin.token_file",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                (
                    Some(t.trim_end().to_string()),
                    "admin.token_file".to_string(),
                )
            }
            (None, None) => (None, "admin.token".to_string()),
        }
    };
    let admin_auth = token
        .map(|t| AdminAuth::new(&t).map_err(|e| ConfigError::invalid(token_field, e.reason)))
        .transpose()?;
    if admin_auth.is_none() && !admin_listen.ip().is_loopback() {
        return Err(ConfigError::invalid(
            "admin.token",
            format!(
                "admin.listen = {admin_listen} is not a loopback address: an operator API reachable from the network needs a token (admin.token, admin.token_file or {ENV_ADMIN_TOKEN})"
            ),
        ));
    }

    // Subscriber auth: env secret wins over the file's.
    auth.secret_file = auth.secret_file.map(|p| from_base(base, p));
    auth.public_key_file = auth.public_key_file.map(|p| from_base(base, p));
    let env_secret = var(env, ENV_JWT_SECRET);
    if let Some(secret) = env_secret {
        if auth.algorithm != JwtAlgorithm::HS256 {
            return Err(ConfigError::invalid(
                "auth.algorithm",
                format!(
                    "{ENV_JWT_SECRET} is set but auth.algorithm = \"{}\"; the variable only provides an HS256 secret",
                    auth.algorithm
                ),
            ));
        }
        auth.hs256_secret = Some(Secret::new(secret));
        auth.secret_file = None;
    }
    let verifier = Verifier::new(&auth).map_err(|e| auth_error(e, env_secret.is_some()))?;

    // Storage: file < env < flags, default from the checkout or installation.
    let data_dir = cli
        .data_dir
        .clone()
        .or_else(|| var(env, ENV_DATA_DIR).map(PathBuf::from))
        .or_else(|| storage.data_dir.map(|p| from_base(base, p)))
        .unwrap_or_else(default_data_dir);
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("storage.data_dir", "is empty"));
    }

    validate_limits(&limits)?;

    let default_stream = defaults.stream;
    let default_diarization = defaults.diarization;
    default_diarization
        .validate()
        .map_err(|e| ConfigError::invalid(format!("defaults.{}", e.field), e.reason))?;
    default_stream
        .validate()
        .map_err(|e| ConfigError::invalid(format!("defaults.stream.{}", e.field), e.reason))?;

    // Models.
    if !MODELS.contains(&models.model.as_str()) {
        return Err(ConfigError::invalid(
            "models.model",
            format!(
                "unknown model {:?} (one of {})",
                models.model,
                MODELS.join(", ")
            ),
        ));
    }
    let mirror = models
        .mirror
        .as_deref()
        .map(|m| {
            Mirror::parse(m)
                .map(|mirror| match mirror {
                    Mirror::Dir(d) => Mirror::Dir(from_base(base, d)),
                    other => other,
                })
                .map_err(|e| ConfigError::invalid("models.mirror", e.to_string()))
        })
        .transpose()?;
    let models = ModelsConfig {
        model: models.model,
        model_dir: models.model_dir.map(|p| from_base(base, p)),
        mirror,
    };

    // Rooms.
    if rooms.len() > limits.max_rooms {
        return Err(ConfigError::invalid(
            "rooms",
            format!(
                "{} rooms configured but limits.max_rooms = {}",
                rooms.len(),
                limits.max_rooms
            ),
        ));
    }
    let mut ids = HashSet::new();
    let mut resolved = Vec::with_capacity(rooms.len());
    for (i, room) in rooms.into_iter().enumerate() {
        let at = format!("rooms[{i}]");
        check_id(format!("{at}.id"), &room.id)?;
        if !ids.insert(room.id.clone()) {
            return Err(ConfigError::invalid(
                format!("{at}.id"),
                format!("room {:?} is configured twice", room.id),
            ));
        }
        let stream = merge_stream(&default_stream, &room.stream, &format!("{at}.stream"))?;
        let mut tracks = HashSet::new();
        let mut sources = Vec::with_capacity(room.sources.len());
        for (j, mut source) in room.sources.into_iter().enumerate() {
            let at = format!("{at}.sources[{j}]");
            check_id(format!("{at}.track"), &source.track)?;
            if !tracks.insert(source.track.clone()) {
                return Err(ConfigError::invalid(
                    format!("{at}.track"),
                    format!(
                        "track {:?} appears twice in room {:?}",
                        source.track, room.id
                    ),
                ));
            }
            let uri = source.uri.trim();
            if uri.is_empty() || uri.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{at}.uri"),
                    "must be a non-empty path or URI without control characters",
                ));
            }
            if !is_uri(uri) {
                source.uri = from_base(base, PathBuf::from(uri)).display().to_string();
            }
            for (name, value) in [("participant", &source.participant), ("name", &source.name)] {
                if let Some(v) = value
                    && (v.trim().is_empty()
                        || v.chars().count() > MAX_NAME_LEN
                        || v.chars().any(char::is_control))
                {
                    return Err(ConfigError::invalid(
                        format!("{at}.{name}"),
                        format!("must have 1 to {MAX_NAME_LEN} printable characters"),
                    ));
                }
            }
            sources.push(source);
        }
        let janus = match &room.janus {
            Some(j) => Some(j.resolve(&format!("{at}.janus"))?),
            None => None,
        };
        let whep = match &room.whep {
            Some(_) if janus.is_some() => {
                return Err(ConfigError::invalid(
                    format!("{at}.whep"),
                    "a room attaches to one SFU: `janus` or `whep`, not both",
                ));
            }
            Some(w) => Some(w.resolve(&format!("{at}.whep"))?),
            None => None,
        };
        let livekit = match &room.livekit {
            Some(_) if janus.is_some() || whep.is_some() => {
                return Err(ConfigError::invalid(
                    format!("{at}.livekit"),
                    "a room attaches to one SFU: keep one of [rooms.janus], [rooms.whep] or [rooms.livekit]",
                ));
            }
            Some(l) => Some(l.resolve(&format!("{at}.livekit"), env, base)?),
            None => None,
        };
        resolved.push(RoomConfig {
            id: room.id,
            stream,
            sources,
            diarize: room.diarize,
            diarization: merge_diarization(
                &default_diarization,
                &room.diarization,
                &format!("{at}.diarization"),
            )?,
            janus,
            whep,
            livekit,
        });
    }

    Ok(ServiceConfig {
        file: path.map(Path::to_path_buf),
        server,
        admin: AdminConfig {
            listen: admin_listen,
            auth: admin_auth,
        },
        auth,
        verifier,
        storage: StorageConfig { data_dir },
        limits,
        default_stream,
        default_diarization,
        models,
        rooms: resolved,
    })
}

fn validate_limits(l: &LimitsConfig) -> Result<(), ConfigError> {
    let range = |field: &str, value: usize, lo: usize, hi: usize| {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                format!("limits.{field}"),
                format!("{value} is outside {lo}..={hi}"),
            ))
        }
    };
    range(
        "max_control_message_bytes",
        l.max_control_message_bytes,
        256,
        1 << 20,
    )?;
    range(
        "max_control_messages_per_s",
        l.max_control_messages_per_s as usize,
        1,
        1000,
    )?;
    range("client_partial_queue", l.client_partial_queue, 1, 1024)?;
    range("client_final_queue", l.client_final_queue, 1, 65_536)?;
    range("ping_interval_s", l.ping_interval_s as usize, 1, 300)?;
    range("idle_timeout_s", l.idle_timeout_s as usize, 2, 3600)?;
    if l.idle_timeout_s <= l.ping_interval_s {
        return Err(ConfigError::invalid(
            "limits.idle_timeout_s",
            format!(
                "{} must be above ping_interval_s = {} (else healthy clients are dropped between pings)",
                l.idle_timeout_s, l.ping_interval_s
            ),
        ));
    }
    range("max_rooms", l.max_rooms, 1, 1024)?;
    range(
        "max_subscribers_per_room",
        l.max_subscribers_per_room,
        1,
        100_000,
    )?;
    Ok(())
}

/// `base` with the keys of `overrides` replaced, validated; errors name `path.key`.
fn merge_stream(
    base: &StreamSettings,
    overrides: &toml::Table,
    path: &str,
) -> Result<StreamSettings, ConfigError> {
    merge_settings(base, overrides, path, |s: &StreamSettings| {
        s.validate().map_err(|e| (e.field.to_string(), e.reason))
    })
}

/// Diarization knobs: `base` with the keys of `overrides` replaced, validated; errors name
/// `path.key`.
fn merge_diarization(
    base: &DiarizeSettings,
    overrides: &toml::Table,
    path: &str,
) -> Result<DiarizeSettings, ConfigError> {
    merge_settings(base, overrides, path, |s: &DiarizeSettings| {
        s.validate().map_err(|e| {
            let field = e.field.strip_prefix("diarize.").unwrap_or(e.field);
            (field.to_string(), e.reason)
        })
    })
}

/// A settings struct with some keys replaced by `overrides`, then validated by `validate`
/// (which names the bad field).
fn merge_settings<T: serde::Serialize + serde::de::DeserializeOwned>(
    base: &T,
    overrides: &toml::Table,
    path: &str,
    validate: impl Fn(&T) -> Result<(), (String, String)>,
) -> Result<T, ConfigError> {
    // Every field serialises, so the keys of the serialised defaults are the accepted keys.
    let base_table = toml::Table::try_from(base)
        .map_err(|e| ConfigError::invalid(path, format!("cannot serialise the defaults: {e}")))?;
    let mut merged = base_table.clone();
    for (key, value) in overrides {
        if !base_table.contains_key(key) {
            let known: Vec<&str> = base_table.keys().map(String::as_str).collect();
            return Err(ConfigError::invalid(
                format!("{path}.{key}"),
                format!("unknown field, expected one of {}", known.join(", ")),
            ));
        }
        // Try the key alone first so that a wrong type names its own key.
        let mut one = base_table.clone();
        one.insert(key.clone(), value.clone());
        if let Err(e) = one.try_into::<T>() {
            return Err(ConfigError::invalid(
                format!("{path}.{key}"),
                e.message().trim().to_string(),
            ));
        }
        merged.insert(key.clone(), value.clone());
    }
    let settings: T = merged
        .try_into()
        .map_err(|e| ConfigError::invalid(path, e.message().trim().to_string()))?;
    validate(&settings)
        .map_err(|(field, reason)| ConfigError::invalid(format!("{path}.{field}"), reason))?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{DEFAULT_ENDPOINT_SILENCE_MS, LanguageSetting};

    const SECRET: &str = "test-only-secret-0123456789abcdef-0123";
    const ADMIN_TOKEN: &str = "test-only-admin-token-0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads `text` with relative paths under `/etc/soustitre` and a fixed default data dir.
    fn load(text: &str, env: &Env) -> Result<ServiceConfig, ConfigError> {
        let file = parse(text, "test.toml")?;
        resolve(
            file,
            None,
            Some(Path::new("/etc/soustitre")),
            env,
            &CliOverrides::default(),
            &|| PathBuf::from("/default/data"),
        )
    }

    fn minimal() -> String {
        format!("[auth]\nhs256_secret = \"{SECRET}\"\n")
    }

    fn field_of(r: Result<ServiceConfig, ConfigError>) -> String {
        let err = r.unwrap_err();
        err.field()
            .unwrap_or_else(|| panic!("no field in {err}"))
            .to_string()
    }

    #[test]
    fn room_diarization_merges_over_the_defaults_field_by_field() {
        let room = |defaults: &str, table: &str| {
            format!(
                "{}{defaults}[[rooms]]\nid = \"board\"\ndiarize = true\n[rooms.diarization]\n{table}",
                minimal()
            )
        };
        let cfg = load(
            &room(
                "[defaults.diarization]\nnew_speaker_similarity = 0.55\n",
                "max_speakers = 10\n",
            ),
            &Env::new(),
        )
        .unwrap();
        let d = &cfg.rooms[0].diarization;
        assert_eq!(d.max_speakers, 10);
        assert_eq!(d.new_speaker_similarity, 0.55, "the service default stays");
        assert_eq!(d.window_ms, crate::diarize::DEFAULT_WINDOW_MS);
        assert_eq!(
            cfg.diarization_for(&toml::Table::new(), "diarization")
                .unwrap()
                .new_speaker_similarity,
            0.55
        );
        for (table, field) in [
            ("max_speakers = 0\n", "rooms[0].diarization.max_speakers"),
            ("window_ms = \"long\"\n", "rooms[0].diarization.window_ms"),
            ("window_ms = 200\n", "rooms[0].diarization.window_ms"),
            ("speakers = 3\n", "rooms[0].diarization.speakers"),
        ] {
            assert_eq!(
                field_of(load(&room("", table), &Env::new())),
                field,
                "{table}"
            );
        }
    }

    #[test]
    fn janus_rooms_are_checked_field_by_field() {
        let room = |table: &str| {
            format!(
                "{}[[rooms]]\nid = \"visio\"\n[rooms.janus]\n{table}",
                minimal()
            )
        };
        let cfg = load(
            &room("url = \"ws://127.0.0.1:8188/\"\nroom = 1234\nice_addresses = [\"10.0.0.5\"]\n"),
            &Env::new(),
        )
        .unwrap();
        let janus = cfg.rooms[0].janus.clone().unwrap();
        assert_eq!(janus.url, "ws://127.0.0.1:8188/");
        assert_eq!(janus.room, "1234");
        assert_eq!(janus.display, crate::sfu::janus::DEFAULT_DISPLAY);
        assert_eq!(janus.media.jitter_ms, crate::sfu::media::DEFAULT_JITTER_MS);
        assert_eq!(janus.media.ice_addresses, vec!["10.0.0.5".to_string()]);
        let named = load(&room("url = \"wss://j\"\nroom = \"board\"\n"), &Env::new()).unwrap();
        assert_eq!(named.rooms[0].janus.as_ref().unwrap().room, "board");
        for (table, field) in [
            ("url = \"http://j:8088\"\nroom = 1\n", "rooms[0].janus.url"),
            ("url = \"ws://j\"\nroom = 0\n", "rooms[0].janus.room"),
            ("url = \"ws://j\"\nroom = \" \"\n", "rooms[0].janus.room"),
            (
                "url = \"ws://j\"\nroom = 1\njitter_ms = 5000\n",
                "rooms[0].janus.jitter_ms",
            ),
            (
                "url = \"ws://j\"\nroom = 1\nice_addresses = [\"eth0\"]\n",
                "rooms[0].janus.ice_addresses[0]",
            ),
        ] {
            assert_eq!(field_of(load(&room(table), &Env::new())), field, "{table}");
        }
        assert!(
            load(
                &room("url = \"ws://j\"\nroom = 1\nbogus = 2\n"),
                &Env::new()
            )
            .is_err()
        );
    }

    #[test]
    fn whep_rooms_are_checked_field_by_field() {
        let room = |table: &str| {
            format!(
                "{}[[rooms]]\nid = \"stage\"\n[rooms.whep]\n{table}",
                minimal()
            )
        };
        let cfg = load(
            &room("url = \"http://10.0.0.9:7090/whep/endpoint/alice\"\ntoken = \"s3cret\"\nname = \"Alice\"\nice_addresses = [\"10.0.0.5\"]\n"),
            &Env::new(),
        )
        .unwrap();
        let whep = cfg.rooms[0].whep.clone().unwrap();
        assert_eq!(whep.endpoints.len(), 1);
        let e = &whep.endpoints[0];
        assert_eq!(e.url, "http://10.0.0.9:7090/whep/endpoint/alice");
        assert_eq!(e.token.as_deref(), Some("s3cret"));
        assert_eq!(e.participant.identity, "alice");
        assert_eq!(e.participant.name, "Alice");
        assert_eq!(e.participant.track, "whep-alice");
        assert_eq!(whep.media.jitter_ms, crate::sfu::media::DEFAULT_JITTER_MS);
        assert_eq!(whep.media.ice_addresses, vec!["10.0.0.5".to_string()]);
        assert_eq!(whep.media_timeout, crate::sfu::whep::DEFAULT_MEDIA_TIMEOUT);
        assert_eq!(
            whep.connect_timeout,
            crate::sfu::whep::DEFAULT_CONNECT_TIMEOUT
        );
        let several = load(
            &room("media_timeout_s = 8\n[[rooms.whep.endpoints]]\nurl = \"https://w/e/1\"\nidentity = \"bob@example.org\"\n[[rooms.whep.endpoints]]\nurl = \"https://w/e/2\"\ntrack = \"carol\"\nname = \"Carol\"\n"),
            &Env::new(),
        )
        .unwrap();
        let w = several.rooms[0].whep.clone().unwrap();
        assert_eq!(w.media_timeout, std::time::Duration::from_secs(8));
        let tracks: Vec<&str> = w
            .endpoints
            .iter()
            .map(|e| e.participant.track.as_str())
            .collect();
        assert_eq!(tracks, ["whep-bob-example.org", "carol"]);
        assert_eq!(w.endpoints[0].participant.name, "bob@example.org");
        assert_eq!(w.endpoints[1].participant.identity, "2");
        for (table, field) in [
            ("token = \"t\"\n", "rooms[0].whep.url"),
            ("url = \"ws://w/e\"\n", "rooms[0].whep.url"),
            ("url = \"http:///e\"\n", "rooms[0].whep.url"),
            (
                "url = \"http://w/e\"\ntoken = \"a b\"\n",
                "rooms[0].whep.token",
            ),
            ("url = \"http://w/e\"\nname = \" \"\n", "rooms[0].whep.name"),
            (
                "url = \"http://w/e\"\ntrack = \"a/b\"\n",
                "rooms[0].whep.track",
            ),
            (
                "url = \"http://w/e\"\njitter_ms = 5000\n",
                "rooms[0].whep.jitter_ms",
            ),
            (
                "url = \"http://w/e\"\nice_addresses = [\"eth0\"]\n",
                "rooms[0].whep.ice_addresses[0]",
            ),
            (
                "url = \"http://w/e\"\nstun_server = \"stun.example:3478\"\n",
                "rooms[0].whep.stun_server",
            ),
            (
                "url = \"http://w/e\"\nmedia_timeout_s = 0\n",
                "rooms[0].whep.media_timeout_s",
            ),
            (
                "url = \"http://w/e\"\nconnect_timeout_s = 900\n",
                "rooms[0].whep.connect_timeout_s",
            ),
            (
                "url = \"http://w/e\"\n[[rooms.whep.endpoints]]\nurl = \"http://w/f\"\n",
                "rooms[0].whep.endpoints",
            ),
            (
                "[[rooms.whep.endpoints]]\nurl = \"http://w/x/e\"\n[[rooms.whep.endpoints]]\nurl = \"http://w/y/e\"\n",
                "rooms[0].whep.endpoints[1].track",
            ),
            (
                "[[rooms.whep.endpoints]]\nurl = \"ftp://w/e\"\n",
                "rooms[0].whep.endpoints[0].url",
            ),
        ] {
            assert_eq!(field_of(load(&room(table), &Env::new())), field, "{table}");
        }
        assert!(load(&room("url = \"http://w/e\"\nbogus = 2\n"), &Env::new()).is_err());
        let both = format!(
            "{}[[rooms]]\nid = \"x\"\n[rooms.janus]\nurl = \"ws://j\"\nroom = 1\n[rooms.whep]\nurl = \"http://w/e\"\n",
            minimal()
        );
        assert_eq!(field_of(load(&both, &Env::new())), "rooms[0].whep");
    }

    #[test]
    fn livekit_rooms_are_checked_field_by_field() {
        let room = |table: &str| {
            format!(
                "{}[[rooms]]\nid = \"visio\"\n[rooms.livekit]\n{table}",
                minimal()
            )
        };
        let base = "url = \"wss://lk.example.org\"\nroom = \"weekly\"\napi_key = \"APIk\"\n";
        let env = Env::from([("SOUSTITRE_LK_SECRET".to_string(), "s3cret".to_string())]);
        let cfg = load(
            &room(&format!(
                "{base}api_secret_env = \"SOUSTITRE_LK_SECRET\"\njitter_ms = 80\nice_addresses = [\"10.0.0.5\"]\n"
            )),
            &env,
        )
        .unwrap();
        let lk = cfg.rooms[0].livekit.clone().unwrap();
        assert!(cfg.rooms[0].janus.is_none());
        assert_eq!(lk.url, "wss://lk.example.org");
        assert_eq!(lk.minter.room(), "weekly");
        assert_eq!(lk.media.jitter_ms, 80);
        assert_eq!(lk.media.ice_addresses, vec!["10.0.0.5".to_string()]);
        for (table, field) in [
            (
                "url = \"lk.example.org\"\nroom = \"r\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "rooms[0].livekit.url",
            ),
            (
                &format!("{base}api_secret_env = \"SOUSTITRE_MISSING\"\n"),
                "rooms[0].livekit.api_secret_env",
            ),
            (
                &format!("{base}api_secret = \"s\"\ntoken_ttl_s = 10\n"),
                "rooms[0].livekit.token_ttl_s",
            ),
            (
                &format!("{base}api_secret = \"s\"\njitter_ms = 9000\n"),
                "rooms[0].livekit.jitter_ms",
            ),
            (
                &format!("{base}api_secret = \"s\"\nice_addresses = [\"eth0\"]\n"),
                "rooms[0].livekit.ice_addresses[0]",
            ),
        ] {
            assert_eq!(field_of(load(&room(table), &env)), field, "{table}");
        }
        let both = format!(
            "{}[[rooms]]\nid = \"visio\"\n[rooms.janus]\nurl = \"ws://j\"\nroom = 1\n\
             [rooms.livekit]\n{base}api_secret = \"s\"\n",
            minimal()
        );
        assert_eq!(field_of(load(&both, &env)), "rooms[0].livekit");
        assert!(
            load(
                &room(&format!("{base}api_secret = \"s\"\nbogus = 1\n")),
                &env
            )
            .is_err()
        );
    }

    #[test]
    fn example_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("soustitre.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = parse(&text, "soustitre.example.toml").unwrap();
        assert!(!file.rooms.is_empty(), "the example shows a room");
        // The example says its values are the defaults: keep it true as defaults change.
        let table = |s: &StreamSettings| toml::Table::try_from(s).unwrap();
        assert_eq!(
            table(&file.defaults.stream),
            table(&StreamSettings::default()),
            "[defaults.stream] of the example differs from StreamSettings::default()"
        );
        assert_eq!(file.limits, LimitsConfig::default());
        assert_eq!(file.server, ServerConfig::default());
        assert_eq!(file.admin, AdminFile::default());
        assert_eq!(file.auth, AuthSettings::default());
        assert_eq!(file.storage, StorageFile::default());
        assert_eq!(file.models, ModelsFile::default());
        // The example leaves the secret to the environment, as it recommends.
        let err = ServiceConfig::load(Some(&path), &Env::new()).unwrap_err();
        assert_eq!(err.field(), Some("auth.hs256_secret"), "{err}");
        let c = ServiceConfig::load(Some(&path), &env(&[(ENV_JWT_SECRET, SECRET)])).unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN);
        assert_eq!(c.admin.listen, DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.verifier.algorithm(), JwtAlgorithm::HS256);
        assert!(c.rooms.iter().all(|r| !r.sources.is_empty()));
        // Relative source paths are taken from the file's directory.
        let dir = path.parent().unwrap().display().to_string();
        assert!(
            c.rooms[0].sources[0].uri.starts_with(&dir),
            "{}",
            c.rooms[0].sources[0].uri
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load(&minimal(), &Env::new()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert!(
            c.admin.auth.is_none(),
            "loopback admin without token is allowed"
        );
        assert_eq!(c.storage.data_dir, Path::new("/default/data"));
        assert_eq!(c.limits.max_control_message_bytes, 16 * 1024);
        assert_eq!(c.limits.max_control_messages_per_s, 10);
        assert_eq!(
            (c.limits.ping_interval_s, c.limits.idle_timeout_s),
            (10, 20)
        );
        assert_eq!(c.models.model, DEFAULT_MODEL);
        assert!(c.rooms.is_empty());
        // No file at all: defaults plus the environment.
        let c = ServiceConfig::load(None, &env(&[(ENV_JWT_SECRET, SECRET)])).unwrap();
        assert_eq!(c.file, None);
        assert!(ServiceConfig::load(None, &Env::new()).is_err(), "no key");
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let cases = [
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n",
                "server.listn",
            ),
            ("[servr]\nlisten = 1\n", "servr"),
            ("[auth]\nalgoritm = \"HS256\"\n", "auth.algoritm"),
            ("[limits]\nmax_roms = 3\n", "limits.max_roms"),
            (
                "[defaults.stream]\npartial_interval = 300\n",
                "defaults.stream.partial_interval",
            ),
            ("[models]\nname = \"x\"\n", "models.name"),
            (
                "[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"b\"\n[[rooms.sources]]\ntrack = \"t\"\nuri = \"x.wav\"\nurl = \"y\"\n",
                "rooms[1].sources[0].url",
            ),
            (
                "[[rooms]]\nid = \"a\"\ncolour = \"red\"\n",
                "rooms[0].colour",
            ),
            (
                "[[rooms]]\nid = \"a\"\n[rooms.stream]\nx = 1\n[[rooms.sources]]\ntrack = \"t\"\nuri = \"u\"\nloops = true\n",
                "rooms[0].sources[0].loops",
            ),
        ];
        for (text, field) in cases {
            // Parse errors come before validation: no key needed.
            let err = load(text, &Env::new()).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
            assert_eq!(err.field(), Some(field), "{err}");
            let key = field.rsplit('.').next().unwrap();
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = load(&format!("top_level = 1\n{}", minimal()), &Env::new()).unwrap_err();
        assert_eq!(err.field(), Some("top_level"), "{err}");
        // Unknown keys in a room's stream overrides (a free table until merged).
        let text = format!(
            "{}[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"b\"\n[rooms.stream]\nendpoint_silence = 300\n",
            minimal()
        );
        let err = load(&text, &Env::new()).unwrap_err();
        assert_eq!(
            err.field(),
            Some("rooms[1].stream.endpoint_silence"),
            "{err}"
        );
        assert!(
            err.to_string().contains("endpoint_silence_ms"),
            "suggests: {err}"
        );
    }

    #[test]
    fn invalid_values_name_the_field_path() {
        let m = minimal();
        let room = |stream: &str| {
            format!("{m}[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"b\"\n[rooms.stream]\n{stream}\n")
        };
        let cases = [
            (
                room("partial_interval_ms = 5"),
                "rooms[1].stream.partial_interval_ms",
            ),
            (
                room("partial_interval_ms = \"fast\""),
                "rooms[1].stream.partial_interval_ms",
            ),
            (room("language = \"klingon!\""), "rooms[1].stream.language"),
            (
                format!("{m}[defaults.stream]\nvad_threshold = 2.0\n"),
                "defaults.stream.vad_threshold",
            ),
            (
                format!("{m}[limits]\nidle_timeout_s = 10\n"),
                "limits.idle_timeout_s",
            ),
            (
                format!("{m}[limits]\nmax_control_message_bytes = 0\n"),
                "limits.max_control_message_bytes",
            ),
            (
                format!("{m}[server]\nlisten = \"localhost\"\n"),
                "server.listen",
            ),
            (
                format!("{m}[models]\nmodel = \"whisper-huge\"\n"),
                "models.model",
            ),
            (
                format!("{m}[models]\nmirror = \"ftp://x\"\n"),
                "models.mirror",
            ),
            (format!("{m}[[rooms]]\nid = \"a b\"\n"), "rooms[0].id"),
            (
                format!("{m}[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"a\"\n"),
                "rooms[1].id",
            ),
            (
                format!(
                    "{m}[[rooms]]\nid = \"a\"\n[[rooms.sources]]\ntrack = \"t\"\nuri = \"a.wav\"\n[[rooms.sources]]\ntrack = \"t\"\nuri = \"b.wav\"\n"
                ),
                "rooms[0].sources[1].track",
            ),
            (
                format!("{m}[[rooms]]\nid = \"a\"\n[[rooms.sources]]\ntrack = \"t\"\nuri = \"\"\n"),
                "rooms[0].sources[0].uri",
            ),
            (
                "[auth]\nhs256_secret = \"short\"\n".to_string(),
                "auth.hs256_secret",
            ),
            (
                format!("{m}[auth]\n"), // a duplicate table is a TOML error at its header
                "auth",
            ),
            (
                format!("{m}[admin]\nlisten = \"127.0.0.1:8080\"\n"),
                "admin.listen",
            ),
            (format!("{m}[admin]\ntoken = \"short\"\n"), "admin.token"),
        ];
        for (text, field) in cases {
            let err = load(&text, &Env::new()).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}\n---\n{text}");
        }
        let text = format!("{m}[[rooms]]\nid = \"a\"\n[[rooms]]\n[[rooms]]\nid = \"c\"\n");
        assert_eq!(field_of(load(&text, &Env::new())), "rooms[1]", "missing id");
        let text =
            format!("{m}[limits]\nmax_rooms = 1\n[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"b\"\n");
        assert_eq!(field_of(load(&text, &Env::new())), "rooms");
        // Parse errors also carry the line.
        let err = load(&room("partial_interval_ms = \"fast\""), &Env::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("rooms[1].stream.partial_interval_ms"),
            "{err}"
        );
        let err = load(&format!("{m}[limits]\nping_interval_s = -1\n"), &Env::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.toml:4: `limits.ping_interval_s`"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:1000\"\n[admin]\nlisten = \"127.0.0.1:1001\"\ntoken = \"{ADMIN_TOKEN}\"\n[storage]\ndata_dir = \"data\"\n[auth]\nhs256_secret = \"{SECRET}\"\n"
        );
        let c = load(&text, &Env::new()).unwrap();
        assert_eq!(c.server.listen.port(), 1000);
        assert_eq!(c.admin.listen.port(), 1001);
        assert_eq!(
            c.storage.data_dir,
            Path::new("/etc/soustitre/data"),
            "from the file's dir"
        );
        assert!(c.admin.auth.as_ref().unwrap().verify(ADMIN_TOKEN));

        let env_token = "env-admin-token-0123456789abcdef-0123456";
        let env_secret = "env-jwt-secret-0123456789abcdef-0123456";
        let e = env(&[
            (ENV_LISTEN, "0.0.0.0:2000"),
            (ENV_ADMIN_LISTEN, "127.0.0.1:2001"),
            (ENV_ADMIN_TOKEN, env_token),
            (ENV_JWT_SECRET, env_secret),
            (ENV_DATA_DIR, "/srv/soustitre"),
        ]);
        let c = load(&text, &e).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:2000");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:2001");
        assert_eq!(c.storage.data_dir, Path::new("/srv/soustitre"));
        let admin = c.admin.auth.as_ref().unwrap();
        assert!(admin.verify(env_token) && !admin.verify(ADMIN_TOKEN));
        let token = crate::auth::mint_hs256(
            env_secret.as_bytes(),
            &crate::auth::Claims::expiring_in("r", 60),
        )
        .unwrap();
        assert!(
            c.verifier.authorize(Some(&token), None, "r").is_ok(),
            "env secret is used"
        );

        // Flags win over the environment.
        let cli = CliOverrides {
            listen: Some("127.0.0.1:3000".parse().unwrap()),
            admin_listen: None,
            data_dir: Some(PathBuf::from("/cli/data")),
        };
        let c = resolve(
            parse(&text, "t").unwrap(),
            None,
            None,
            &e,
            &cli,
            &PathBuf::new,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 3000);
        assert_eq!(c.admin.listen.port(), 2001);
        assert_eq!(c.storage.data_dir, Path::new("/cli/data"));

        // Empty variables count as unset; bad ones name the variable.
        let c = load(&text, &env(&[(ENV_LISTEN, "")])).unwrap();
        assert_eq!(c.server.listen.port(), 1000);
        let err = load(&text, &env(&[(ENV_LISTEN, "nope")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Env {
                    var: ENV_LISTEN,
                    ..
                }
            ),
            "{err}"
        );
        // A JWT secret variable with a public-key algorithm is a contradiction.
        let rs = "[auth]\nalgorithm = \"RS256\"\npublic_key_pem = \"x\"\n";
        assert_eq!(
            field_of(load(rs, &env(&[(ENV_JWT_SECRET, SECRET)]))),
            "auth.algorithm"
        );
        // A weak env secret is reported on the field, saying where it came from, not its value.
        let err = load(&text, &env(&[(ENV_JWT_SECRET, "weak")])).unwrap_err();
        assert_eq!(err.field(), Some("auth.hs256_secret"));
        assert!(
            err.to_string().contains(ENV_JWT_SECRET) && !err.to_string().contains("weak"),
            "{err}"
        );
    }

    #[test]
    fn partial_stream_overrides_merge_over_the_defaults() {
        let text = format!(
            "{}[defaults.stream]\nlanguage = \"fr\"\npartial_interval_ms = 700\n\n\
             [[rooms]]\nid = \"plain\"\n\n\
             [[rooms]]\nid = \"quick\"\n[rooms.stream]\nendpoint_silence_ms = 300\n\n\
             [[rooms]]\nid = \"english\"\nstream = {{ language = \"en\", partials = false }}\n",
            minimal()
        );
        let c = load(&text, &Env::new()).unwrap();
        let [plain, quick, english] = &c.rooms[..] else {
            panic!("{:?}", c.rooms)
        };
        assert_eq!(
            c.default_stream.language,
            LanguageSetting::Fixed("fr".into())
        );
        assert_eq!(plain.stream.partial_interval_ms, 700);
        assert_eq!(
            plain.stream.endpoint_silence_ms,
            DEFAULT_ENDPOINT_SILENCE_MS
        );
        // Only endpoint_silence_ms changes; the file's defaults stay.
        assert_eq!(quick.stream.endpoint_silence_ms, 300);
        assert_eq!(quick.stream.partial_interval_ms, 700);
        assert_eq!(quick.stream.language, LanguageSetting::Fixed("fr".into()));
        assert_eq!(quick.stream.vad_threshold, c.default_stream.vad_threshold);
        assert_eq!(quick.stream.max_segment_s, c.default_stream.max_segment_s);
        assert_eq!(english.stream.language, LanguageSetting::Fixed("en".into()));
        assert!(!english.stream.partials);
        assert_eq!(english.stream.partial_interval_ms, 700);
        // A merge that is invalid as a whole names the field that fails validation.
        let text = format!(
            "{}[[rooms]]\nid = \"a\"\n[rooms.stream]\nendpoint_silence_ms = 150\n",
            minimal()
        );
        assert_eq!(
            field_of(load(&text, &Env::new())),
            "rooms[0].stream.long_segment_endpoint_ms"
        );
        // Run-time rooms use the same merge.
        let overrides: toml::Table = toml::from_str("min_speech_ms = 100").unwrap();
        let s = c.stream_for(&overrides, "request.stream").unwrap();
        assert_eq!((s.min_speech_ms, s.partial_interval_ms), (100, 700));
        let bad: toml::Table = toml::from_str("min_speech = 100").unwrap();
        assert_eq!(
            c.stream_for(&bad, "request.stream").unwrap_err().field(),
            Some("request.stream.min_speech")
        );
    }

    #[test]
    fn admin_on_a_public_address_needs_a_token() {
        for listen in ["0.0.0.0:9090", "[::]:9090", "192.168.1.10:9090"] {
            let text = format!("{}[admin]\nlisten = \"{listen}\"\n", minimal());
            let err = load(&text, &Env::new()).unwrap_err();
            assert_eq!(err.field(), Some("admin.token"), "{listen}: {err}");
            assert!(err.to_string().contains("loopback"), "{err}");
            // Same through the environment.
            let err = load(&minimal(), &env(&[(ENV_ADMIN_LISTEN, listen)])).unwrap_err();
            assert_eq!(err.field(), Some("admin.token"));
            // With a token (file or env) it is allowed.
            let with = format!("{text}token = \"{ADMIN_TOKEN}\"\n");
            assert!(load(&with, &Env::new()).unwrap().admin.auth.is_some());
            let c = load(&text, &env(&[(ENV_ADMIN_TOKEN, ADMIN_TOKEN)])).unwrap();
            assert!(c.admin.auth.is_some());
        }
        let text = format!("{}[admin]\nlisten = \"[::1]:9090\"\n", minimal());
        assert!(load(&text, &Env::new()).unwrap().admin.auth.is_none());
    }

    #[test]
    fn token_and_key_files_are_read_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("jwt.secret"), format!("{SECRET}\n")).unwrap();
        let path = dir.path().join("soustitre.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:9999\"\ntoken_file = \"admin.token\"\n\
             [auth]\nsecret_file = \"jwt.secret\"\n\
             [[rooms]]\nid = \"demo\"\n[[rooms.sources]]\ntrack = \"mic\"\nuri = \"audio/a.wav\"\nloop = true\n\
             [[rooms.sources]]\ntrack = \"cam\"\nuri = \"rtsp://cam.local/stream\"\nparticipant = \"bob\"\n",
        )
        .unwrap();
        let c = ServiceConfig::load(Some(&path), &Env::new()).unwrap();
        assert!(c.admin.auth.unwrap().verify(ADMIN_TOKEN));
        assert_eq!(c.auth.secret_file, Some(dir.path().join("jwt.secret")));
        let src = &c.rooms[0].sources;
        assert_eq!(
            src[0].uri,
            dir.path().join("audio/a.wav").display().to_string()
        );
        assert!(src[0].looped);
        assert_eq!(src[1].uri, "rtsp://cam.local/stream", "URIs are kept");
        assert_eq!(src[1].participant.as_deref(), Some("bob"));

        let err =
            ServiceConfig::load(Some(&dir.path().join("missing.toml")), &Env::new()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let text = format!("{}[admin]\ntoken = \"{ADMIN_TOKEN}\"\n", minimal());
        let c = load(&text, &Env::new()).unwrap();
        let dump = format!("{c:?}");
        assert!(
            !dump.contains(SECRET) && !dump.contains(ADMIN_TOKEN),
            "{dump}"
        );
    }
}
