//! Who may subscribe to a room's captions, and who may drive the operator API.
//!
//! Subscribers present a JWT signed by the application that runs the meeting (its backend mints
//! one per participant, as LiveKit does for media). The service only *verifies*: it holds an
//! HS256 shared secret or an RS256/EdDSA public key, never a private key. A token grants exactly
//! one room (`room` claim) until `exp`. The check runs **before** the WebSocket upgrade: a refused
//! request gets an HTTP status and a short reason, and no socket is ever opened.
//!
//! ```text
//! request ─▶ token_from_request(headers, query) ─▶ Verifier::authorize(token, Origin, room)
//!                                                        │ Ok(Subscriber)      │ Err(AuthError)
//!                                                   upgrade to WebSocket   http_status() + public_reason()
//! ```
//!
//! # What is checked, in order
//! 1. **Origin** (browsers only send it): must be in `allowed_origins`, else 403. A request
//!    without `Origin` is a non-browser client and is judged by its token alone.
//! 2. **Presence and size** of the token (401; `max_token_bytes` bounds all later work).
//! 3. **Shape and header**: three base64url parts; `alg` must be exactly the configured algorithm.
//!    `alg: none` is refused outright, and so is any other algorithm, which closes the classic key
//!    confusion (an HS256 token "signed" with the RS256 public key). Tokens with a `crit` header
//!    are refused (no extension is understood).
//! 4. **Signature** with the configured key, then `exp` (required), `nbf` and `iat` (if present),
//!    with `leeway_s` of clock skew; `aud` and `iss` must be present and match when configured.
//!    A token that names an audience is refused when no `audience` is configured (RFC 7519 §4.1.3).
//! 5. **Room**: the `room` claim must equal the requested room, else 403.
//!
//! Status codes follow RFC 6750: 401 means "these are not valid credentials for this service"
//! (missing, malformed, oversized, badly signed, wrong algorithm, expired, not yet valid, wrong
//! audience or issuer: a token minted for another service is not a credential here), 403 means
//! "valid credentials that do not grant this" (another room) or "not from an allowed web page"
//! (Origin). The public reason is deliberately coarse: every signature/algorithm/audience/issuer
//! failure reads `invalid token`, so a prober learns nothing about which check failed; the full
//! reason (Display of [`AuthError`]) is for the service's logs.
//!
//! # Where the token comes from
//! [`token_from_request`] looks, in this order, at `Authorization: Bearer <jwt>`, a
//! `Sec-WebSocket-Protocol` entry `bearer.<jwt>` (browsers cannot set headers on a WebSocket), and
//! the `token` query parameter (last: URLs end up in access logs and browser history, so prefer
//! short-lived tokens there).
//!
//! # Operator API
//! [`AdminAuth`] is a separate static bearer token for the admin listener, compared in constant
//! time (SHA-256 digests, so neither content nor length leaks through timing).
//!
//! # Latency
//! Not on the caption path: once per connection. HS256 and EdDSA verify in microseconds, RS256
//! 2048 in well under a millisecond.
//!
//! # Example
//! ```
//! use soustitre::auth::{AuthSettings, Claims, Verifier, mint_hs256};
//! let secret = "0123456789abcdef0123456789abcdef";
//! let settings = AuthSettings::with_hs256_secret(secret);
//! let verifier = Verifier::new(&settings)?;
//! let token = mint_hs256(secret.as_bytes(), &Claims::expiring_in("standup", 3600))?;
//! let subscriber = verifier.authorize(Some(&token), None, "standup")?;
//! assert_eq!(subscriber.room, "standup");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod admin;
mod b64;
mod error;
mod mint;
mod origin;
mod request;
#[cfg(test)]
mod test_keys;
mod verify;

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use admin::{AdminAuth, MIN_ADMIN_TOKEN_BYTES, constant_time_eq};
pub use error::AuthError;
pub use mint::{MintError, mint_hs256};
pub use request::{
    QUERY_TOKEN_PARAM, RequestToken, TokenSource, WS_PROTOCOL_TOKEN_PREFIX, is_token_protocol,
    token_from_request,
};
pub use verify::{Audience, Claims, Subscriber, Verifier};

/// Default clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_S: u64 = 30;
/// Largest accepted `leeway_s`.
pub const MAX_LEEWAY_S: u64 = 300;
/// Default largest token accepted, in bytes (an RS256 token with a few claims is ~600 bytes).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Bounds of `max_token_bytes`.
pub const MAX_TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256..=65_536;
/// Shortest HS256 secret accepted (256 bits, the size of the HMAC-SHA256 output; RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Shortest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest key or secret file read (anything bigger is not a key).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The `allowed_origins` entry that allows every Origin.
pub const ANY_ORIGIN: &str = "*";

/// The signature algorithm tokens must use. Exactly one is accepted per deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`hs256_secret` or `secret_file`).
    #[default]
    HS256,
    /// RSASSA-PKCS1-v1_5 SHA-256 with an RSA public key (`public_key_pem` or `public_key_file`).
    RS256,
    /// Ed25519 with a public key (`public_key_pem` or `public_key_file`).
    EdDSA,
}

impl JwtAlgorithm {
    /// The JOSE name (`alg` header value).
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret string (HS256 secret, admin token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; only for the code that uses it as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Subscriber authentication settings (`[auth]` of the service configuration).
///
/// Key material: with `HS256`, exactly one of `hs256_secret` / `secret_file`; with `RS256` or
/// `EdDSA`, exactly one of `public_key_pem` / `public_key_file` (a *public* key: a private key is
/// refused). The secret's UTF-8 bytes are the HMAC key, at least [`MIN_HS256_SECRET_BYTES`]
/// (`openssl rand -hex 32` gives a good one); files are read at start, trailing whitespace
/// (the final newline) removed.
///
/// `allowed_origins`: the web pages allowed to open caption sockets, as `scheme://host[:port]`
/// (`https://meet.example.org`). **Empty (the default) allows no browser page at all**: only
/// clients that send no `Origin` (native apps, bots, `curl`) can connect. `"*"` explicitly allows
/// every page (tokens are then the only protection). Add the service's own address (e.g.
/// `http://127.0.0.1:8080`) to use its built-in viewer page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Signature algorithm of subscriber tokens.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret, inline. Prefer `secret_file` or `SOUSTITRE_JWT_SECRET`.
    pub hs256_secret: Option<Secret>,
    /// File holding the HS256 shared secret.
    pub secret_file: Option<PathBuf>,
    /// RS256/EdDSA public key, PEM (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
    pub public_key_pem: Option<String>,
    /// File holding the RS256/EdDSA public key, PEM.
    pub public_key_file: Option<PathBuf>,
    /// Required `aud` claim value, if set.
    pub audience: Option<String>,
    /// Required `iss` claim value, if set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub leeway_s: u64,
    /// Largest token accepted, bytes.
    pub max_token_bytes: usize,
    /// Origins allowed to connect from a browser (see the type's docs). `"*"` = any.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            hs256_secret: None,
            secret_file: None,
            public_key_pem: None,
            public_key_file: None,
            audience: None,
            issuer: None,
            leeway_s: DEFAULT_LEEWAY_S,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            allowed_origins: Vec::new(),
        }
    }
}

impl AuthSettings {
    /// HS256 with an inline secret, other settings at their defaults.
    pub fn with_hs256_secret(secret: impl Into<String>) -> Self {
        Self {
            hs256_secret: Some(Secret::new(secret)),
            ..Self::default()
        }
    }

    /// `algorithm` with an inline public key PEM, other settings at their defaults.
    pub fn with_public_key_pem(algorithm: JwtAlgorithm, pem: impl Into<String>) -> Self {
        Self {
            algorithm,
            public_key_pem: Some(pem.into()),
            ..Self::default()
        }
    }

    /// Checks every setting and loads the key (reading key files): the error names the field.
    pub fn validate(&self) -> Result<(), InvalidAuthSetting> {
        Verifier::new(self).map(drop)
    }
}

/// An auth setting with an invalid value. `field` is the name inside `[auth]` (or `[admin]` for
/// the admin token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{field}`: {reason}")]
pub struct InvalidAuthSetting {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidAuthSetting {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Reads a small key/secret file, trailing whitespace removed.
fn read_key_file(
    field: &'static str,
    path: &std::path::Path,
) -> Result<String, InvalidAuthSetting> {
    use std::io::Read;
    let bad = |reason: String| InvalidAuthSetting::new(field, reason);
    let file = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(bad(format!(
            "{} is larger than {MAX_KEY_FILE_BYTES} bytes: not a key",
            path.display()
        )));
    }
    text.truncate(text.trim_end().len());
    Ok(text)
}
