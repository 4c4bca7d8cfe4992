//! Why a request was refused: the detailed reason for logs, an HTTP status and a coarse public
//! reason for the client.

/// A refused subscriber or operator request.
///
/// `Display` is the detailed reason, for the service's logs (it never contains the token; any
/// client-supplied text in it is escaped and truncated). Clients get [`AuthError::http_status`]
/// and [`AuthError::public_reason`] only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the request.
    #[error("no token in the request")]
    MissingToken,
    /// The token is larger than `max_token_bytes` (it is not parsed at all).
    #[error("token of {len} bytes exceeds max_token_bytes = {max}")]
    OversizedToken { len: usize, max: usize },
    /// Not a JWT (shape, base64url, JSON, claim types).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header says `alg: none` (an unsigned token).
    #[error("unsigned token (`alg: none`) refused")]
    AlgNone,
    /// The header names another algorithm than the configured one (key confusion attempt or a
    /// misconfigured issuer).
    #[error("token algorithm {found:?} is not the configured {expected}")]
    AlgorithmMismatch {
        found: String,
        expected: &'static str,
    },
    /// The signature does not verify with the configured key.
    #[error("token signature does not verify")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid (nbf or iat in the future)")]
    NotYetValid,
    /// A required claim is absent (`room`, `exp`, and `aud`/`iss` when configured).
    #[error("token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    /// `aud` does not match the configured audience (or is set while none is configured).
    #[error("token audience does not match")]
    WrongAudience,
    /// `iss` does not match the configured issuer.
    #[error("token issuer does not match")]
    WrongIssuer,
    /// A valid token for another room.
    #[error("token grants room {granted:?}, not the requested {requested:?}")]
    WrongRoom { requested: String, granted: String },
    /// A browser page whose Origin is not in `allowed_origins`.
    #[error("origin {origin:?} is not in allowed_origins")]
    OriginNotAllowed { origin: String },
    /// The operator API token does not match.
    #[error("admin token does not match")]
    InvalidAdminToken,
}

/// Longest client-supplied text kept in an error (for logs).
const MAX_ECHO_CHARS: usize = 64;

/// Client-supplied text for a log line: at most [`MAX_ECHO_CHARS`] characters (`Debug`
/// formatting in the messages escapes control characters).
pub(super) fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ECHO_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl AuthError {
    /// The HTTP status to answer with: 401 when the request carries no valid credentials for
    /// this service, 403 when valid credentials do not grant the room or the page's Origin is not
    /// allowed. See the module docs for the reasoning.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::WrongRoom { .. } | AuthError::OriginNotAllowed { .. } => 403,
            _ => 401,
        }
    }

    /// A short reason safe to send to the client. Signature, algorithm, audience and issuer
    /// failures all read `invalid token`; the room and origin are not echoed.
    pub fn public_reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing token",
            AuthError::OversizedToken { .. } => "token too large",
            AuthError::Malformed(_) => "malformed token",
            AuthError::AlgNone
            | AuthError::AlgorithmMismatch { .. }
            | AuthError::BadSignature
            | AuthError::WrongAudience
            | AuthError::WrongIssuer
            | AuthError::MissingClaim(_)
            | AuthError::InvalidAdminToken => "invalid token",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongRoom { .. } => "token does not grant this room",
            AuthError::OriginNotAllowed { .. } => "origin not allowed",
        }
    }

    /// The `WWW-Authenticate` header value to send with a 401 (RFC 6750 §3), `None` for a 403.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            AuthError::WrongRoom { .. } | AuthError::OriginNotAllowed { .. } => None,
            AuthError::MissingToken => Some("Bearer realm=\"soustitre\""),
            _ => Some("Bearer realm=\"soustitre\", error=\"invalid_token\""),
        }
    }
}
