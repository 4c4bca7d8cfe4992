//! `[rooms.livekit]`: how a room attaches to a LiveKit server.
//!
//! ```toml
//! [[rooms]]
//! id = "weekly"
//!
//! [rooms.livekit]
//! url = "wss://livekit.example.org"             # the server (ws://, wss://, http://, https://)
//! room = "weekly-sync"                          # LiveKit room name
//! api_key = "APIxxxxxxxx"                       # or api_key_env = "SOUSTITRE_LIVEKIT_API_KEY"
//! api_secret_env = "SOUSTITRE_LIVEKIT_API_SECRET"   # or api_secret_file, or api_secret (inline)
//! identity = "soustitre-captions"               # participant identity (hidden participant)
//! name = "Captions"                             # display name
//! token_ttl_s = 600                             # lifetime of each minted token
//! text_streams = true                           # captions as `lk.transcription` text streams
//! legacy_transcription = true                   # and as legacy Transcription packets
//! jitter_ms = 60                                # jitter buffer of the subscribed tracks, 0..=2000
//! ice_addresses = ["10.0.0.5"]                  # restrict ICE to these local addresses
//! stun_server = "stun://stun.example.org:3478"  # when the server is behind NAT
//! ```
//!
//! Key and secret: exactly one source each. Environment references are looked up in the
//! [`crate::config::Env`] map, which holds only `SOUSTITRE_*` variables, so the names must
//! start with `SOUSTITRE_`. A secret file is read once, its trailing whitespace removed.
//! Errors name the field path given to [`LiveKitConfig::resolve`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::signal::{self, UrlOptions};
use super::token::{
    DEFAULT_IDENTITY, DEFAULT_NAME, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL, MIN_TOKEN_TTL, TokenMinter,
    TokenSettings,
};
use super::transcription::PublishSettings;
use crate::auth::Secret;
use crate::config::{ConfigError, Env};
use crate::sfu::media::MediaSettings;

/// Prefix every environment reference must have.
pub const ENV_PREFIX: &str = "SOUSTITRE_";

/// `[rooms.livekit]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitConfig {
    pub url: String,
    pub room: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_secret: Option<Secret>,
    #[serde(default)]
    pub api_secret_env: Option<String>,
    #[serde(default)]
    pub api_secret_file: Option<PathBuf>,
    #[serde(default = "default_identity")]
    pub identity: String,
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_ttl_s")]
    pub token_ttl_s: u64,
    #[serde(default = "yes")]
    pub text_streams: bool,
    #[serde(default = "yes")]
    pub legacy_transcription: bool,
    /// Jitter buffer latency of the subscribed tracks, ms (default 60, at most
    /// [`crate::config::MAX_SFU_JITTER_MS`]).
    #[serde(default)]
    pub jitter_ms: Option<u32>,
    /// Restrict ICE host candidates to these local addresses (default: all interfaces).
    #[serde(default)]
    pub ice_addresses: Vec<String>,
    /// STUN server `stun://host:port`.
    #[serde(default)]
    pub stun_server: Option<String>,
}

fn default_identity() -> String {
    DEFAULT_IDENTITY.to_string()
}
fn default_name() -> String {
    DEFAULT_NAME.to_string()
}
fn default_ttl_s() -> u64 {
    DEFAULT_TOKEN_TTL.as_secs()
}
fn yes() -> bool {
    true
}

/// A validated LiveKit attachment.
#[derive(Debug, Clone)]
pub struct LiveKitSettings {
    /// Server URL as configured (checked by building a signalling URL with it).
    pub url: String,
    /// Mints the sidecar's tokens.
    pub minter: TokenMinter,
    pub url_options: UrlOptions,
    pub publish: PublishSettings,
    /// The room pipeline's peers (jitter buffer, ICE).
    pub media: MediaSettings,
}

impl LiveKitConfig {
    /// Validates and resolves secrets. `path` is the field path of this table (e.g.
    /// `rooms[0].livekit`); relative files are taken from `base_dir`.
    pub fn resolve(
        &self,
        path: &str,
        env: &Env,
        base_dir: Option<&Path>,
    ) -> Result<LiveKitSettings, ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            field: format!("{path}.{field}"),
            reason,
        };
        // Any non-empty token checks the URL shape.
        signal::signal_url(&self.url, "t", &UrlOptions::default())
            .map_err(|e| invalid("url", e.to_string()))?;
        if self.room.trim().is_empty() {
            return Err(invalid("room", "must not be empty".into()));
        }
        let api_key = match (&self.api_key, &self.api_key_env) {
            (Some(k), None) => k.clone(),
            (None, Some(var)) => lookup(env, var).map_err(|r| invalid("api_key_env", r))?,
            _ => {
                return Err(invalid(
                    "api_key",
                    "set exactly one of api_key / api_key_env".into(),
                ));
            }
        };
        let api_secret = match (
            &self.api_secret,
            &self.api_secret_env,
            &self.api_secret_file,
        ) {
            (Some(s), None, None) => s.expose().to_string(),
            (None, Some(var), None) => {
                lookup(env, var).map_err(|r| invalid("api_secret_env", r))?
            }
            (None, None, Some(file)) => {
                let file = match base_dir {
                    Some(base) if file.is_relative() => base.join(file),
                    _ => file.clone(),
                };
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    invalid(
                        "api_secret_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                text.trim_end().to_string()
            }
            _ => {
                return Err(invalid(
                    "api_secret",
                    "set exactly one of api_secret / api_secret_env / api_secret_file".into(),
                ));
            }
        };
        let ttl = Duration::from_secs(self.token_ttl_s);
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(invalid(
                "token_ttl_s",
                format!(
                    "must be within {}..={} seconds",
                    MIN_TOKEN_TTL.as_secs(),
                    MAX_TOKEN_TTL.as_secs()
                ),
            ));
        }
        let settings = TokenSettings {
            identity: self.identity.clone(),
            name: self.name.clone(),
            ttl,
        };
        let minter =
            TokenMinter::new(&api_key, &api_secret, &self.room, settings).map_err(|e| {
                use super::token::TokenError as E;
                let field = match e {
                    E::EmptyApiKey => "api_key",
                    E::EmptyApiSecret => "api_secret",
                    E::EmptyRoom => "room",
                    E::EmptyIdentity | E::TooLong { field: "identity" } => "identity",
                    E::TooLong { .. } => "name",
                    E::Ttl { .. } => "token_ttl_s",
                    E::Encode(_) => "api_secret",
                };
                invalid(field, e.to_string())
            })?;
        if !self.text_streams && !self.legacy_transcription {
            return Err(invalid(
                "text_streams",
                "at least one of text_streams / legacy_transcription must be on".into(),
            ));
        }
        let media = crate::config::resolve_media(
            path,
            self.jitter_ms,
            &self.ice_addresses,
            self.stun_server.as_ref(),
        )?;
        Ok(LiveKitSettings {
            media,
            url: self.url.clone(),
            minter,
            url_options: UrlOptions::default(),
            publish: PublishSettings {
                text_streams: self.text_streams,
                legacy_transcription: self.legacy_transcription,
                ..PublishSettings::default()
            },
        })
    }
}

fn lookup(env: &Env, var: &str) -> Result<String, String> {
    if !var.starts_with(ENV_PREFIX) {
        return Err(format!("{var:?} must start with {ENV_PREFIX}"));
    }
    match env.get(var) {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err(format!("environment variable {var} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LiveKitConfig {
        toml::from_str(text).unwrap()
    }

    const BASE: &str = "url = \"wss://lk.example.org\"\nroom = \"weekly-sync\"\n";

    #[test]
    fn resolves_env_references_with_defaults() {
        let c = parse(&format!(
            "{BASE}api_key_env = \"SOUSTITRE_LK_KEY\"\napi_secret_env = \"SOUSTITRE_LK_SECRET\"\n"
        ));
        assert_eq!(c.identity, "soustitre-captions");
        assert_eq!(c.token_ttl_s, 600);
        let env = Env::from([
            ("SOUSTITRE_LK_KEY".to_string(), "APIkey".to_string()),
            (
                "SOUSTITRE_LK_SECRET".to_string(),
                "s3cret-s3cret".to_string(),
            ),
        ]);
        let s = c.resolve("rooms[0].livekit", &env, None).unwrap();
        assert_eq!(s.minter.room(), "weekly-sync");
        assert_eq!(s.minter.identity(), "soustitre-captions");
        assert!(s.publish.text_streams && s.publish.legacy_transcription);
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn reads_a_secret_file_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lk.secret"), "file-secret\n").unwrap();
        let c = parse(&format!(
            "{BASE}api_key = \"APIkey\"\napi_secret_file = \"lk.secret\"\ntoken_ttl_s = 300\n"
        ));
        c.resolve("rooms[0].livekit", &Env::new(), Some(dir.path()))
            .unwrap();
    }

    /// The commented `[rooms.livekit]` example of `soustitre.example.toml`, uncommented, is a
    /// valid table.
    #[test]
    fn example_file_block_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("soustitre.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| l.trim() != "# [rooms.livekit]")
            .skip(1)
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let c = parse(&block);
        assert_eq!(c.url, "wss://livekit.example.org");
        assert_eq!(
            c.api_secret_env.as_deref(),
            Some("SOUSTITRE_LIVEKIT_API_SECRET")
        );
        let env = Env::from([(
            "SOUSTITRE_LIVEKIT_API_SECRET".to_string(),
            "secret".to_string(),
        )]);
        let s = c.resolve("rooms[1].livekit", &env, None).unwrap();
        assert_eq!(s.minter.room(), "weekly-sync");
        assert_eq!(s.media.jitter_ms, 60);
    }

    #[test]
    fn errors_name_the_field() {
        let env = Env::from([("SOUSTITRE_EMPTY".to_string(), String::new())]);
        let cases = [
            (
                "url = \"lk.example.org\"\nroom = \"r\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "url",
            ),
            (
                "url = \"wss://h\"\nroom = \" \"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "room",
            ),
            (&format!("{BASE}api_secret = \"s\"\n"), "api_key"),
            (
                &format!(
                    "{BASE}api_key = \"k\"\napi_key_env = \"SOUSTITRE_X\"\napi_secret = \"s\"\n"
                ),
                "api_key",
            ),
            (&format!("{BASE}api_key = \"k\"\n"), "api_secret"),
            (
                &format!(
                    "{BASE}api_key = \"k\"\napi_secret = \"s\"\napi_secret_env = \"SOUSTITRE_S\"\n"
                ),
                "api_secret",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret_env = \"LIVEKIT_API_SECRET\"\n"),
                "api_secret_env",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret_env = \"SOUSTITRE_EMPTY\"\n"),
                "api_secret_env",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret_file = \"/nonexistent/lk.secret\"\n"),
                "api_secret_file",
            ),
            (
                &format!("{BASE}api_key = \"\"\napi_secret = \"s\"\n"),
                "api_key",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret = \"s\"\ntoken_ttl_s = 30\n"),
                "token_ttl_s",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret = \"s\"\nidentity = \"\"\n"),
                "identity",
            ),
            (
                &format!(
                    "{BASE}api_key = \"k\"\napi_secret = \"s\"\ntext_streams = false\nlegacy_transcription = false\n"
                ),
                "text_streams",
            ),
            (
                &format!("{BASE}api_key = \"k\"\napi_secret = \"s\"\njitter_ms = 2001\n"),
                "jitter_ms",
            ),
            (
                &format!(
                    "{BASE}api_key = \"k\"\napi_secret = \"s\"\nice_addresses = [\"10.0.0.1\", \"eth0\"]\n"
                ),
                "ice_addresses[1]",
            ),
            (
                &format!(
                    "{BASE}api_key = \"k\"\napi_secret = \"s\"\nstun_server = \"stun.example.org\"\n"
                ),
                "stun_server",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text)
                .resolve("rooms[2].livekit", &env, None)
                .unwrap_err();
            assert_eq!(
                err.field(),
                Some(format!("rooms[2].livekit.{field}").as_str()),
                "{text}: {err}"
            );
        }
        assert!(toml::from_str::<LiveKitConfig>(&format!("{BASE}apikey = \"k\"\n")).is_err());
    }
}
