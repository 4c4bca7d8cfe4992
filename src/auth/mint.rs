//! Minting HS256 tokens **for tests, demos and the built-in viewer page only**.
//!
//! In production the meeting application's backend mints subscriber tokens with its own JWT
//! library (the service only verifies). This helper exists so that tests, `soustitre` demo
//! commands and the local viewer can produce a token for a shared secret without another tool.

use jsonwebtoken::{EncodingKey, Header};

use super::{Claims, MIN_HS256_SECRET_BYTES};

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("HS256 secret of {len} bytes is too short; at least {MIN_HS256_SECRET_BYTES}")]
    SecretTooShort { len: usize },
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Mints an HS256 token for `claims` with `secret` (test/demo helper; see the module docs).
/// Refuses secrets the verifier would refuse.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, MintError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(MintError::SecretTooShort { len: secret.len() });
    }
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| MintError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_what_the_verifier_accepts_and_refuses_short_secrets() {
        assert_eq!(
            mint_hs256(b"short", &Claims::new("r", 1)),
            Err(MintError::SecretTooShort { len: 5 })
        );
        let token = mint_hs256(&[7u8; 32], &Claims::new("r", 1)).unwrap();
        assert_eq!(token.split('.').count(), 3);
    }
}
