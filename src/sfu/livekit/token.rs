//! Access tokens for the captioning participant.
//!
//! The sidecar mints its own LiveKit access token from the project's API key and secret, with
//! the narrowest grant that lets it listen and publish captions in one room:
//!
//! | grant | value | why |
//! |---|---|---|
//! | `roomJoin` / `room` | `true` / the configured room | one room only |
//! | `canSubscribe` | `true` | receive the participants' audio |
//! | `canPublish` | `false` | never publishes media |
//! | `canPublishData` | `true` | captions travel as data packets |
//! | `hidden` | `true` | does not appear in other participants' lists |
//!
//! Tokens are short-lived ([`DEFAULT_TOKEN_TTL`]); [`MintedToken::needs_refresh`] says when a new
//! one must be minted (a reconnect needs a valid token; the server also pushes refreshed tokens
//! over the signalling connection, see the session's `TokenRefreshed` action).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_api::access_token::{AccessToken, Claims, VideoGrants};

/// Default participant identity of the sidecar.
pub const DEFAULT_IDENTITY: &str = "soustitre-captions";
/// Default display name of the sidecar.
pub const DEFAULT_NAME: &str = "Captions";
/// Default token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Shortest accepted token lifetime (must leave room for [`REFRESH_MARGIN`]).
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(2 * 60);
/// Longest accepted token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(6 * 60 * 60);
/// A token is renewed this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest identity or display name accepted.
pub const MAX_IDENTITY_LEN: usize = 128;

/// Who the sidecar is in the room and how long its tokens live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Participant identity (`sub` claim).
    pub identity: String,
    /// Display name (`name` claim).
    pub name: String,
    /// Lifetime of each minted token, within [`MIN_TOKEN_TTL`]..=[`MAX_TOKEN_TTL`].
    pub ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            identity: DEFAULT_IDENTITY.to_string(),
            name: DEFAULT_NAME.to_string(),
            ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// Why a token cannot be minted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("LiveKit API key is empty")]
    EmptyApiKey,
    #[error("LiveKit API secret is empty")]
    EmptyApiSecret,
    #[error("LiveKit room name is empty")]
    EmptyRoom,
    #[error("participant identity is empty")]
    EmptyIdentity,
    #[error("{field} is longer than {MAX_IDENTITY_LEN} bytes")]
    TooLong { field: &'static str },
    #[error("token ttl {ttl:?} is outside {MIN_TOKEN_TTL:?}..={MAX_TOKEN_TTL:?}")]
    Ttl { ttl: Duration },
    #[error("cannot encode the access token: {0}")]
    Encode(String),
}

/// Mints tokens for one room. Holds the API secret (never shown by `Debug`).
#[derive(Clone)]
pub struct TokenMinter {
    api_key: String,
    api_secret: String,
    room: String,
    settings: TokenSettings,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("room", &self.room)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A minted token with its validity window (read back from the token itself).
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The JWT, as sent in `access_token=`.
    pub jwt: String,
    /// `nbf` claim.
    pub not_before: SystemTime,
    /// `exp` claim.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("jwt", &format_args!("<{} bytes>", self.jwt.len()))
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl MintedToken {
    /// When a replacement should be minted: [`REFRESH_MARGIN`] before expiry.
    pub fn refresh_at(&self) -> SystemTime {
        self.expires_at
            .checked_sub(REFRESH_MARGIN)
            .unwrap_or(self.not_before)
    }

    /// True once `now` is within [`REFRESH_MARGIN`] of the expiry (or past it).
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        now >= self.refresh_at()
    }
}

impl TokenMinter {
    /// Checks the inputs once; every later [`TokenMinter::mint`] uses them as they are.
    pub fn new(
        api_key: &str,
        api_secret: &str,
        room: &str,
        settings: TokenSettings,
    ) -> Result<Self, TokenError> {
        if api_key.trim().is_empty() {
            return Err(TokenError::EmptyApiKey);
        }
        if api_secret.trim().is_empty() {
            return Err(TokenError::EmptyApiSecret);
        }
        if room.trim().is_empty() {
            return Err(TokenError::EmptyRoom);
        }
        if settings.identity.trim().is_empty() {
            return Err(TokenError::EmptyIdentity);
        }
        if settings.identity.len() > MAX_IDENTITY_LEN {
            return Err(TokenError::TooLong { field: "identity" });
        }
        if settings.name.len() > MAX_IDENTITY_LEN {
            return Err(TokenError::TooLong { field: "name" });
        }
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&settings.ttl) {
            return Err(TokenError::Ttl { ttl: settings.ttl });
        }
        Ok(Self {
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            room: room.to_string(),
            settings,
        })
    }

    /// The room the tokens grant.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The identity the tokens carry.
    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// The grant every token carries (see the module documentation).
    pub fn grants(&self) -> VideoGrants {
        VideoGrants {
            room_join: true,
            room: self.room.clone(),
            can_subscribe: Some(true),
            can_publish: Some(false),
            can_publish_data: Some(true),
            hidden: true,
            ..Default::default()
        }
    }

    /// Mints a token valid from now for the configured lifetime.
    pub fn mint(&self) -> Result<MintedToken, TokenError> {
        let jwt = AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_identity(&self.settings.identity)
            .with_name(&self.settings.name)
            .with_ttl(self.settings.ttl)
            .with_grants(self.grants())
            .to_jwt()
            .map_err(|e| TokenError::Encode(e.to_string()))?;
        // The library stamps `nbf`/`exp` from its own clock reading: take them from the token.
        let claims =
            Claims::from_unverified(&jwt).map_err(|e| TokenError::Encode(e.to_string()))?;
        Ok(MintedToken {
            jwt,
            not_before: UNIX_EPOCH + Duration::from_secs(claims.nbf as u64),
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp as u64),
        })
    }
}

/// The validity window of a token received from the server (`refresh_token`), read without
/// verifying the signature (the sidecar does not hold the key that would verify it, and only
/// uses the times to schedule work). `None` if it is not a readable JWT.
pub fn token_window(jwt: &str) -> Option<MintedToken> {
    let claims = Claims::from_unverified(jwt).ok()?;
    Some(MintedToken {
        jwt: jwt.to_string(),
        not_before: UNIX_EPOCH + Duration::from_secs(claims.nbf as u64),
        expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    const KEY: &str = "APIdevkey";
    const SECRET: &str = "a-secret-of-at-least-32-bytes-for-tests";

    fn decode(jwt: &str) -> serde_json::Value {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[KEY]);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(
            jwt,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            &v,
        )
        .expect("valid HS256 token signed with the secret")
        .claims
    }

    #[test]
    fn grants_exactly_the_narrow_room_permissions() {
        let minter =
            TokenMinter::new(KEY, SECRET, "weekly-sync", TokenSettings::default()).unwrap();
        let token = minter.mint().unwrap();
        let claims = decode(&token.jwt);
        assert_eq!(claims["iss"], KEY);
        assert_eq!(claims["sub"], DEFAULT_IDENTITY);
        assert_eq!(claims["name"], DEFAULT_NAME);
        assert_eq!(
            claims["video"],
            serde_json::json!({
                "roomJoin": true,
                "room": "weekly-sync",
                "canSubscribe": true,
                "canPublish": false,
                "canPublishData": true,
                "hidden": true,
            })
        );
        // Nothing else is granted: no metadata, attributes, room config, other grant families.
        let mut keys: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, ["exp", "iss", "name", "nbf", "sub", "video"]);
        let exp = claims["exp"].as_u64().unwrap();
        let nbf = claims["nbf"].as_u64().unwrap();
        assert_eq!(exp - nbf, DEFAULT_TOKEN_TTL.as_secs());
        assert_eq!(token.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
        assert_eq!(token.not_before, UNIX_EPOCH + Duration::from_secs(nbf));
    }

    #[test]
    fn identity_name_and_ttl_are_configurable() {
        let settings = TokenSettings {
            identity: "captions-fr".into(),
            name: "Sous-titres".into(),
            ttl: Duration::from_secs(300),
        };
        let token = TokenMinter::new(KEY, SECRET, "r", settings)
            .unwrap()
            .mint()
            .unwrap();
        let claims = decode(&token.jwt);
        assert_eq!(claims["sub"], "captions-fr");
        assert_eq!(claims["name"], "Sous-titres");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            300
        );
    }

    #[test]
    fn refresh_is_due_one_margin_before_expiry() {
        let token = TokenMinter::new(KEY, SECRET, "r", TokenSettings::default())
            .unwrap()
            .mint()
            .unwrap();
        let due = token.expires_at - REFRESH_MARGIN;
        assert_eq!(token.refresh_at(), due);
        assert!(!token.needs_refresh(token.not_before));
        assert!(!token.needs_refresh(due - Duration::from_secs(1)));
        assert!(token.needs_refresh(due));
        assert!(token.needs_refresh(token.expires_at + Duration::from_secs(5)));
        // The server's refreshed tokens are read the same way.
        assert_eq!(token_window(&token.jwt).unwrap(), token);
        assert_eq!(token_window("not.a.jwt"), None);
    }

    #[test]
    fn refuses_unusable_inputs_with_clear_errors() {
        let ok = TokenSettings::default();
        let cases: Vec<(&str, &str, &str, TokenSettings, TokenError)> = vec![
            ("", SECRET, "r", ok.clone(), TokenError::EmptyApiKey),
            (KEY, " ", "r", ok.clone(), TokenError::EmptyApiSecret),
            (KEY, SECRET, "", ok.clone(), TokenError::EmptyRoom),
            (
                KEY,
                SECRET,
                "r",
                TokenSettings {
                    identity: String::new(),
                    ..ok.clone()
                },
                TokenError::EmptyIdentity,
            ),
            (
                KEY,
                SECRET,
                "r",
                TokenSettings {
                    ttl: Duration::from_secs(60),
                    ..ok.clone()
                },
                TokenError::Ttl {
                    ttl: Duration::from_secs(60),
                },
            ),
            (
                KEY,
                SECRET,
                "r",
                TokenSettings {
                    ttl: MAX_TOKEN_TTL + Duration::from_secs(1),
                    ..ok.clone()
                },
                TokenError::Ttl {
                    ttl: MAX_TOKEN_TTL + Duration::from_secs(1),
                },
            ),
            (
                KEY,
                SECRET,
                "r",
                TokenSettings {
                    name: "n".repeat(MAX_IDENTITY_LEN + 1),
                    ..ok.clone()
                },
                TokenError::TooLong { field: "name" },
            ),
        ];
        for (key, secret, room, settings, want) in cases {
            assert_eq!(
                TokenMinter::new(key, secret, room, settings).unwrap_err(),
                want
            );
        }
        assert_eq!(
            TokenError::EmptyRoom.to_string(),
            "LiveKit room name is empty"
        );
        let minter = TokenMinter::new(KEY, SECRET, "r", ok).unwrap();
        assert!(!format!("{minter:?}").contains(SECRET));
    }
}
