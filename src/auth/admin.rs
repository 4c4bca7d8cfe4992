//! The operator API's static bearer token.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{AuthError, InvalidAuthSetting};

/// Shortest admin token accepted (`openssl rand -hex 32` gives 64 characters).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// Checks `Authorization: Bearer <token>` on the operator API against one static token.
///
/// Only the SHA-256 digest of the token is kept. A presented token is hashed and the two digests
/// are compared in constant time: the time taken depends neither on where the first differing
/// byte is nor on the presented token's length.
#[derive(Clone)]
pub struct AdminAuth {
    digest: [u8; 32],
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminAuth(<redacted>)")
    }
}

impl AdminAuth {
    /// Refuses tokens shorter than [`MIN_ADMIN_TOKEN_BYTES`] or with whitespace or control
    /// characters (they cannot travel in a header intact). The error's field is `token`.
    pub fn new(token: &str) -> Result<Self, InvalidAuthSetting> {
        if token.len() < MIN_ADMIN_TOKEN_BYTES {
            return Err(InvalidAuthSetting::new(
                "token",
                format!(
                    "{} bytes is too short; at least {MIN_ADMIN_TOKEN_BYTES} (openssl rand -hex 32)",
                    token.len()
                ),
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidAuthSetting::new(
                "token",
                "contains whitespace or control characters",
            ));
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token (constant time).
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        constant_time_eq(&digest, &self.digest)
    }

    /// Checks an `Authorization` header value (`Bearer <token>`). Errors are 401:
    /// [`AuthError::MissingToken`] without a bearer token, [`AuthError::InvalidAdminToken`] for
    /// a wrong one.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let token = authorization
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        if self.verify(token) {
            Ok(())
        } else {
            Err(AuthError::InvalidAdminToken)
        }
    }
}

/// Byte-wise equality whose time does not depend on the contents: every byte pair is compared,
/// differences are OR-ed together, and the result is read once at the end through
/// [`std::hint::black_box`] so the optimiser cannot turn the loop into an early exit. Slices of
/// different lengths are unequal at once (the length is not secret for fixed-size digests, which
/// is what callers should compare).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "6f1c0e3a9b2d4c5e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c";

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"), "last byte differs");
        assert!(!constant_time_eq(b"abc", b"xbc"), "first byte differs");
        assert!(!constant_time_eq(b"abc", b"ab"), "prefix");
        assert!(!constant_time_eq(b"abc", b"abcd"), "longer");
        // Every single-bit difference anywhere is seen (no byte is skipped).
        let a = [0x5au8; 32];
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!constant_time_eq(&a, &b), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn admin_token_is_checked_exactly() {
        let auth = AdminAuth::new(TOKEN).unwrap();
        assert!(auth.verify(TOKEN));
        assert!(!auth.verify(&TOKEN[..TOKEN.len() - 1]), "prefix");
        assert!(!auth.verify(&format!("{TOKEN}0")), "longer");
        let mut last = TOKEN.to_string();
        last.replace_range(TOKEN.len() - 1.., "d");
        assert!(!auth.verify(&last), "last character differs");
        assert!(!auth.verify(""));

        assert_eq!(auth.authorize(Some(&format!("Bearer {TOKEN}"))), Ok(()));
        assert_eq!(auth.authorize(Some(&format!("bearer   {TOKEN} "))), Ok(()));
        assert_eq!(auth.authorize(None), Err(AuthError::MissingToken));
        assert_eq!(
            auth.authorize(Some(&format!("Basic {TOKEN}"))),
            Err(AuthError::MissingToken)
        );
        let err = auth.authorize(Some("Bearer nope")).unwrap_err();
        assert_eq!(err, AuthError::InvalidAdminToken);
        assert_eq!(err.http_status(), 401);
        assert!(!format!("{auth:?}").contains(TOKEN));
    }

    #[test]
    fn weak_admin_tokens_are_refused() {
        assert_eq!(AdminAuth::new("short").unwrap_err().field, "token");
        let spaced = format!("{TOKEN} x");
        assert!(AdminAuth::new(&spaced).is_err());
    }
}
