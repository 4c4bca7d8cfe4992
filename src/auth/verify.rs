//! Token verification: [`Verifier::authorize`].

use std::collections::HashSet;
use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::echo;
use super::origin::OriginPolicy;
use super::{
    AuthError, AuthSettings, InvalidAuthSetting, JwtAlgorithm, MAX_LEEWAY_S, MAX_TOKEN_BYTES_RANGE,
    MIN_HS256_SECRET_BYTES, MIN_RSA_BITS, b64, read_key_file,
};

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims of a subscriber token. Other claims may be present and are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one room this token grants.
    pub room: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience; checked when `audience` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer; checked when `issuer` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Participant identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Participant display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Claims {
    /// Claims for `room` expiring at `exp`; everything else unset.
    pub fn new(room: impl Into<String>, exp: u64) -> Self {
        Self {
            room: room.into(),
            exp,
            nbf: None,
            iat: None,
            aud: None,
            iss: None,
            sub: None,
            name: None,
        }
    }

    /// Claims for `room` issued now (`iat`) and expiring `ttl_s` seconds from now.
    pub fn expiring_in(room: impl Into<String>, ttl_s: u64) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            iat: Some(now),
            ..Self::new(room, now.saturating_add(ttl_s))
        }
    }
}

/// An authorised subscriber, from the verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The room granted (equal to the requested one).
    pub room: String,
    /// Participant identity (`sub`), if the token carries one.
    pub identity: Option<String>,
    /// Display name (`name`), if the token carries one.
    pub name: Option<String>,
    /// `exp`, seconds since the Unix epoch: the server may close the socket then.
    pub expires_at: u64,
}

/// Verifies subscriber tokens against one key and one algorithm. Build it once at start.
#[derive(Clone)]
pub struct Verifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    leeway_s: u64,
    max_token_bytes: usize,
    origins: OriginPolicy,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("leeway_s", &self.leeway_s)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("origins", &self.origins)
            .finish()
    }
}

impl Verifier {
    /// Checks the settings and loads the key (reading `secret_file` / `public_key_file`).
    /// The error names the offending field of `[auth]`.
    pub fn new(settings: &AuthSettings) -> Result<Self, InvalidAuthSetting> {
        if settings.leeway_s > MAX_LEEWAY_S {
            return Err(InvalidAuthSetting::new(
                "leeway_s",
                format!("{} is above {MAX_LEEWAY_S}", settings.leeway_s),
            ));
        }
        if !MAX_TOKEN_BYTES_RANGE.contains(&settings.max_token_bytes) {
            return Err(InvalidAuthSetting::new(
                "max_token_bytes",
                format!(
                    "{} is outside {}..={}",
                    settings.max_token_bytes,
                    MAX_TOKEN_BYTES_RANGE.start(),
                    MAX_TOKEN_BYTES_RANGE.end()
                ),
            ));
        }
        for (field, value) in [
            ("audience", &settings.audience),
            ("issuer", &settings.issuer),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(InvalidAuthSetting::new(
                    field,
                    "is empty; remove it to not check the claim",
                ));
            }
        }
        let origins = OriginPolicy::new(&settings.allowed_origins)?;
        let key = load_key(settings)?;

        let mut validation = Validation::new(settings.algorithm.jwt());
        validation.leeway = settings.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        let mut required = HashSet::from(["exp".to_string()]);
        if let Some(aud) = &settings.audience {
            validation.set_audience(&[aud]);
            required.insert("aud".into());
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        validation.required_spec_claims = required;

        Ok(Self {
            algorithm: settings.algorithm,
            key,
            validation,
            leeway_s: settings.leeway_s,
            max_token_bytes: settings.max_token_bytes,
            origins,
        })
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Decides whether a request may subscribe to `room`: `token` as found by
    /// [`super::token_from_request`], `origin` the `Origin` header if any. See the module docs
    /// for the order of the checks and the status codes.
    pub fn authorize(
        &self,
        token: Option<&str>,
        origin: Option<&str>,
        room: &str,
    ) -> Result<Subscriber, AuthError> {
        self.origins.check(origin)?;
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        if token.len() > self.max_token_bytes {
            return Err(AuthError::OversizedToken {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        self.check_header(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;

        let granted = match claims.get("room") {
            Some(Value::String(r)) if !r.is_empty() => r,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(AuthError::MissingClaim("room"));
            }
            Some(_) => return Err(AuthError::Malformed("`room` is not a string")),
        };
        let expires_at = numeric_date(claims.get("exp"))
            .ok_or(AuthError::Malformed("`exp` is not a NumericDate"))?;
        if let Some(iat) = claims.get("iat").filter(|v| !v.is_null()) {
            let iat = numeric_date(Some(iat))
                .ok_or(AuthError::Malformed("`iat` is not a NumericDate"))?;
            let now = jsonwebtoken::get_current_timestamp();
            if iat > now.saturating_add(self.leeway_s) {
                return Err(AuthError::NotYetValid);
            }
        }
        let identity = optional_string(&claims, "sub")?;
        let name = optional_string(&claims, "name")?;

        if granted != room {
            return Err(AuthError::WrongRoom {
                requested: echo(room),
                granted: echo(granted),
            });
        }
        Ok(Subscriber {
            room: granted.clone(),
            identity,
            name,
            expires_at,
        })
    }

    /// Shape and header checks before any signature work: three base64url parts, a JSON header
    /// whose `alg` is exactly the configured one, no `crit`.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated parts"));
        };
        if header.is_empty()
            || payload.is_empty()
            || ![header, payload, signature]
                .iter()
                .all(|p| b64::is_b64url(p))
        {
            return Err(AuthError::Malformed("parts are not base64url"));
        }
        let header: Map<String, Value> = b64::decode(header)
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(AuthError::Malformed(
                "header is not a base64url JSON object",
            ))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(AuthError::Malformed("header has no `alg`")),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        if alg != self.algorithm.name() {
            return Err(AuthError::AlgorithmMismatch {
                found: echo(alg),
                expected: self.algorithm.name(),
            });
        }
        if header.contains_key("crit") {
            return Err(AuthError::Malformed("unsupported critical header (`crit`)"));
        }
        if signature.is_empty() {
            return Err(AuthError::BadSignature);
        }
        Ok(())
    }
}

/// A NumericDate (integer, or a non-negative float as some issuers write) in whole seconds.
fn numeric_date(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::Malformed(match name {
            "sub" => "`sub` is not a string",
            _ => "`name` is not a string",
        })),
    }
}

/// Maps the JWT library's verdict onto ours.
fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        // The header was checked already; this is the library's own family check.
        ErrorKind::InvalidAlgorithm => AuthError::Malformed("algorithm refused by the JWT library"),
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "iss" => "iss",
            "nbf" => "nbf",
            "sub" => "sub",
            _ => "?",
        }),
        ErrorKind::InvalidClaimFormat(_) => {
            AuthError::Malformed("a time claim is not a NumericDate")
        }
        ErrorKind::Json(_) => AuthError::Malformed("payload is not a JSON object"),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            AuthError::Malformed("undecodable part")
        }
        // Key errors cannot happen with a key checked at start; never accept on doubt.
        _ => AuthError::BadSignature,
    }
}

/// Loads the configured key, checking that exactly the fields of the algorithm are set.
fn load_key(s: &AuthSettings) -> Result<DecodingKey, InvalidAuthSetting> {
    let alg = s.algorithm;
    match alg {
        JwtAlgorithm::HS256 => {
            for (field, set) in [
                ("public_key_pem", s.public_key_pem.is_some()),
                ("public_key_file", s.public_key_file.is_some()),
            ] {
                if set {
                    return Err(InvalidAuthSetting::new(
                        field,
                        "is for RS256/EdDSA; with algorithm = \"HS256\" set hs256_secret or secret_file",
                    ));
                }
            }
            let (field, secret) = match (&s.hs256_secret, &s.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(InvalidAuthSetting::new(
                        "secret_file",
                        "set either hs256_secret or secret_file, not both",
                    ));
                }
                (Some(secret), None) => ("hs256_secret", secret.expose().to_string()),
                (None, Some(path)) => ("secret_file", read_key_file("secret_file", path)?),
                (None, None) => {
                    return Err(InvalidAuthSetting::new(
                        "hs256_secret",
                        "no HS256 secret: set hs256_secret, secret_file or SOUSTITRE_JWT_SECRET",
                    ));
                }
            };
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(InvalidAuthSetting::new(
                    field,
                    format!(
                        "the secret is {} bytes; at least {MIN_HS256_SECRET_BYTES} are required (openssl rand -hex 32)",
                        secret.len()
                    ),
                ));
            }
            if secret.contains("-----BEGIN") {
                return Err(InvalidAuthSetting::new(
                    field,
                    "holds a PEM key: a public key is not a shared secret (use algorithm = \"RS256\" or \"EdDSA\" with public_key_pem)",
                ));
            }
            Ok(DecodingKey::from_secret(secret.as_bytes()))
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
            for (field, set) in [
                ("hs256_secret", s.hs256_secret.is_some()),
                ("secret_file", s.secret_file.is_some()),
            ] {
                if set {
                    return Err(InvalidAuthSetting::new(
                        field,
                        format!(
                            "is for HS256; with algorithm = \"{alg}\" set public_key_pem or public_key_file"
                        ),
                    ));
                }
            }
            let (field, pem) = match (&s.public_key_pem, &s.public_key_file) {
                (Some(_), Some(_)) => {
                    return Err(InvalidAuthSetting::new(
                        "public_key_file",
                        "set either public_key_pem or public_key_file, not both",
                    ));
                }
                (Some(pem), None) => ("public_key_pem", pem.clone()),
                (None, Some(path)) => ("public_key_file", read_key_file("public_key_file", path)?),
                (None, None) => {
                    return Err(InvalidAuthSetting::new(
                        "public_key_pem",
                        format!("no public key for {alg}: set public_key_pem or public_key_file"),
                    ));
                }
            };
            if pem.contains("PRIVATE KEY") {
                return Err(InvalidAuthSetting::new(
                    field,
                    "holds a private key; the service only needs (and must only get) the public key",
                ));
            }
            let key = match alg {
                JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                    InvalidAuthSetting::new(
                        field,
                        "is not an RSA public key in PEM (PUBLIC KEY or RSA PUBLIC KEY)",
                    )
                })?,
                _ => DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| {
                    InvalidAuthSetting::new(
                        field,
                        "is not an Ed25519 public key in PEM (PUBLIC KEY)",
                    )
                })?,
            };
            if alg == JwtAlgorithm::RS256
                && let Ok(der) = key.try_get_as_bytes()
                && let Some(bits) = rsa_modulus_bits(der)
                && bits < MIN_RSA_BITS
            {
                return Err(InvalidAuthSetting::new(
                    field,
                    format!("the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"),
                ));
            }
            if alg == JwtAlgorithm::EdDSA && key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
                return Err(InvalidAuthSetting::new(
                    field,
                    "is not an Ed25519 public key (32 bytes)",
                ));
            }
            Ok(key)
        }
    }
}

/// Bits of the modulus of a PKCS#1 `RSAPublicKey` DER (`SEQUENCE { INTEGER n, INTEGER e }`).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    /// Reads a DER tag and length at `pos`; returns (content start, content length).
    fn tlv(der: &[u8], pos: usize, tag: u8) -> Option<(usize, usize)> {
        if *der.get(pos)? != tag {
            return None;
        }
        let first = *der.get(pos + 1)?;
        if first < 0x80 {
            return Some((pos + 2, usize::from(first)));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(pos + 2 + i)?);
        }
        Some((pos + 2 + n, len))
    }
    let (seq, _) = tlv(der, 0, 0x30)?;
    let (start, len) = tlv(der, seq, 0x02)?;
    let n = der.get(start..start + len)?;
    let first = n.iter().position(|&b| b != 0)?;
    Some((n.len() - first) * 8 - n[first].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::super::test_keys::*;
    use super::super::{ANY_ORIGIN, mint_hs256};
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "test-only-secret-0123456789abcdef-0123";
    const ROOM: &str = "standup";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Claims {
        Claims {
            sub: Some("alice".into()),
            name: Some("Alice".into()),
            ..Claims::expiring_in(ROOM, 3600)
        }
    }

    fn hs256() -> Verifier {
        Verifier::new(&AuthSettings::with_hs256_secret(SECRET)).unwrap()
    }

    fn mint(c: &Claims) -> String {
        mint_hs256(SECRET.as_bytes(), c).unwrap()
    }

    fn sign(alg: jsonwebtoken::Algorithm, key: &EncodingKey, c: &impl Serialize) -> String {
        jsonwebtoken::encode(&Header::new(alg), c, key).unwrap()
    }

    fn rsa_signer() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap()
    }

    /// A token with a hand-written header, the given claims and signature part.
    fn craft(header: &str, c: &impl Serialize, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            b64::encode(header.as_bytes()),
            b64::encode(&serde_json::to_vec(c).unwrap())
        )
    }

    fn check(v: &Verifier, token: &str) -> Result<Subscriber, AuthError> {
        v.authorize(Some(token), None, ROOM)
    }

    #[test]
    fn valid_hs256_token_is_accepted() {
        let sub = check(&hs256(), &mint(&claims())).unwrap();
        assert_eq!(
            sub,
            Subscriber {
                room: ROOM.into(),
                identity: Some("alice".into()),
                name: Some("Alice".into()),
                expires_at: claims().exp,
            }
        );
        // Extra claims are ignored; only room and exp are needed.
        let mut extra = serde_json::to_value(Claims::new(ROOM, now() + 60)).unwrap();
        extra["video"] = serde_json::json!({"roomJoin": true});
        let token = sign(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &extra,
        );
        let sub = check(&hs256(), &token).unwrap();
        assert_eq!((sub.identity, sub.name), (None, None));
    }

    #[test]
    fn missing_token_is_401() {
        for token in [None, Some(""), Some("   ")] {
            let err = hs256().authorize(token, None, ROOM).unwrap_err();
            assert_eq!(err, AuthError::MissingToken);
            assert_eq!(err.http_status(), 401);
            assert_eq!(err.www_authenticate(), Some("Bearer realm=\"soustitre\""));
        }
    }

    #[test]
    fn bad_signature_is_401() {
        let other = mint_hs256(b"another-secret-0123456789abcdef-0123", &claims()).unwrap();
        let err = check(&hs256(), &other).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.http_status(), 401);
        assert_eq!(err.public_reason(), "invalid token");

        // A valid token whose payload was swapped for another room's: the signature breaks.
        let token = mint(&claims());
        let forged = Claims::expiring_in("boardroom", 3600);
        let parts: Vec<&str> = token.split('.').collect();
        let payload = b64::encode(&serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        let err = hs256()
            .authorize(Some(&tampered), None, "boardroom")
            .unwrap_err();
        assert_eq!(err, AuthError::BadSignature);

        // Empty signature.
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            check(&hs256(), &unsigned).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            for signature in ["", "c2ln"] {
                let token = craft(&header, &claims(), signature);
                let err = check(&hs256(), &token).unwrap_err();
                assert_eq!(err, AuthError::AlgNone, "{alg} {signature:?}");
                assert_eq!(err.http_status(), 401);
            }
        }
        // Also with a public-key verifier.
        let rs = Verifier::new(&AuthSettings::with_public_key_pem(
            JwtAlgorithm::RS256,
            RSA_PUBLIC_PEM,
        ))
        .unwrap();
        let token = craft(r#"{"alg":"none"}"#, &claims(), "");
        assert_eq!(check(&rs, &token).unwrap_err(), AuthError::AlgNone);
    }

    #[test]
    fn hs256_rs256_key_confusion_is_refused() {
        let rs = Verifier::new(&AuthSettings::with_public_key_pem(
            JwtAlgorithm::RS256,
            RSA_PUBLIC_PEM,
        ))
        .unwrap();
        // The attacker knows the public key and uses its bytes as an HMAC secret.
        let confused = sign(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
            &claims(),
        );
        let err = check(&rs, &confused).unwrap_err();
        assert!(
            matches!(&err, AuthError::AlgorithmMismatch { found, expected: "RS256" } if found == "HS256"),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 401);
        // Also with the DER bytes the library would hold.
        let der = DecodingKey::from_rsa_pem(RSA_PUBLIC_PEM.as_bytes()).unwrap();
        let confused = sign(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(der.try_get_as_bytes().unwrap()),
            &claims(),
        );
        assert!(matches!(
            check(&rs, &confused).unwrap_err(),
            AuthError::AlgorithmMismatch { .. }
        ));

        // And the other way: an HS256 verifier refuses an RS256 token, even a valid one.
        let rs_token = sign(jsonwebtoken::Algorithm::RS256, &rsa_signer(), &claims());
        assert!(matches!(
            check(&hs256(), &rs_token).unwrap_err(),
            AuthError::AlgorithmMismatch {
                expected: "HS256",
                ..
            }
        ));
        // Same family, other hash: still refused (only the configured algorithm).
        let hs512 = sign(
            jsonwebtoken::Algorithm::HS512,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims(),
        );
        assert!(matches!(
            check(&hs256(), &hs512).unwrap_err(),
            AuthError::AlgorithmMismatch { .. }
        ));
    }

    #[test]
    fn expired_is_401_beyond_leeway_only() {
        let c = Claims {
            exp: now() - 3600,
            ..claims()
        };
        let err = check(&hs256(), &mint(&c)).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.http_status(), 401);
        assert_eq!(err.public_reason(), "token expired");
        // Within the default leeway (30 s): still accepted.
        let c = Claims {
            exp: now() - 5,
            ..claims()
        };
        assert!(check(&hs256(), &mint(&c)).is_ok());
        // Missing exp.
        let no_exp = serde_json::json!({"room": ROOM});
        let token = sign(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &no_exp,
        );
        assert_eq!(
            check(&hs256(), &token).unwrap_err(),
            AuthError::MissingClaim("exp")
        );
    }

    #[test]
    fn not_yet_valid_is_401() {
        let c = Claims {
            nbf: Some(now() + 3600),
            ..claims()
        };
        let err = check(&hs256(), &mint(&c)).unwrap_err();
        assert_eq!(err, AuthError::NotYetValid);
        assert_eq!(err.http_status(), 401);
        let c = Claims {
            iat: Some(now() + 3600),
            ..claims()
        };
        assert_eq!(
            check(&hs256(), &mint(&c)).unwrap_err(),
            AuthError::NotYetValid
        );
        let c = Claims {
            nbf: Some(now() - 10),
            ..claims()
        };
        assert!(check(&hs256(), &mint(&c)).is_ok());
    }

    fn with_aud_iss() -> Verifier {
        Verifier::new(&AuthSettings {
            audience: Some("soustitre".into()),
            issuer: Some("https://meet.example.org".into()),
            ..AuthSettings::with_hs256_secret(SECRET)
        })
        .unwrap()
    }

    fn aud_iss(aud: Option<Audience>, iss: Option<&str>) -> Claims {
        Claims {
            aud,
            iss: iss.map(str::to_string),
            ..claims()
        }
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let v = with_aud_iss();
        let iss = Some("https://meet.example.org");
        let ok = aud_iss(Some(Audience::One("soustitre".into())), iss);
        assert!(check(&v, &mint(&ok)).is_ok());
        let many = aud_iss(
            Some(Audience::Many(vec!["other".into(), "soustitre".into()])),
            iss,
        );
        assert!(check(&v, &mint(&many)).is_ok());

        let wrong = aud_iss(Some(Audience::One("livekit".into())), iss);
        let err = check(&v, &mint(&wrong)).unwrap_err();
        assert_eq!(err, AuthError::WrongAudience);
        assert_eq!(err.http_status(), 401);
        assert_eq!(err.public_reason(), "invalid token");
        let absent = aud_iss(None, iss);
        assert_eq!(
            check(&v, &mint(&absent)).unwrap_err(),
            AuthError::MissingClaim("aud")
        );
        // A token that names an audience is refused where none is configured.
        assert_eq!(
            check(&hs256(), &mint(&ok)).unwrap_err(),
            AuthError::WrongAudience
        );
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let v = with_aud_iss();
        let aud = Some(Audience::One("soustitre".into()));
        let wrong = aud_iss(aud.clone(), Some("https://evil.example"));
        let err = check(&v, &mint(&wrong)).unwrap_err();
        assert_eq!(err, AuthError::WrongIssuer);
        assert_eq!(err.http_status(), 401);
        let absent = aud_iss(aud, None);
        assert_eq!(
            check(&v, &mint(&absent)).unwrap_err(),
            AuthError::MissingClaim("iss")
        );
        // Not configured: any issuer passes.
        let c = aud_iss(None, Some("https://anyone.example"));
        assert!(check(&hs256(), &mint(&c)).is_ok());
    }

    #[test]
    fn token_for_another_room_is_403() {
        let err = hs256()
            .authorize(Some(&mint(&claims())), None, "boardroom")
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongRoom {
                requested: "boardroom".into(),
                granted: ROOM.into()
            }
        );
        assert_eq!(err.http_status(), 403);
        assert_eq!(err.www_authenticate(), None);
        assert!(
            !err.public_reason().contains(ROOM),
            "the room is not echoed"
        );
        // Room matching is exact.
        let err = hs256()
            .authorize(Some(&mint(&claims())), None, "Standup")
            .unwrap_err();
        assert_eq!(err.http_status(), 403);
        // A token without a room grants nothing.
        let no_room = serde_json::json!({"exp": now() + 60});
        let token = sign(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &no_room,
        );
        assert_eq!(
            check(&hs256(), &token).unwrap_err(),
            AuthError::MissingClaim("room")
        );
    }

    #[test]
    fn origin_is_checked_before_the_token() {
        let v = Verifier::new(&AuthSettings {
            allowed_origins: vec!["https://meet.example.org".into()],
            ..AuthSettings::with_hs256_secret(SECRET)
        })
        .unwrap();
        let token = mint(&claims());
        assert!(
            v.authorize(Some(&token), Some("https://meet.example.org"), ROOM)
                .is_ok()
        );
        assert!(v.authorize(Some(&token), None, ROOM).is_ok(), "non-browser");
        let err = v
            .authorize(Some(&token), Some("https://evil.example"), ROOM)
            .unwrap_err();
        assert!(matches!(err, AuthError::OriginNotAllowed { .. }), "{err:?}");
        assert_eq!(err.http_status(), 403);
        assert_eq!(err.public_reason(), "origin not allowed");
        // Default (empty list): no browser page at all, even with a valid token.
        let err = hs256()
            .authorize(Some(&token), Some("https://meet.example.org"), ROOM)
            .unwrap_err();
        assert_eq!(err.http_status(), 403);
        let any = Verifier::new(&AuthSettings {
            allowed_origins: vec![ANY_ORIGIN.into()],
            ..AuthSettings::with_hs256_secret(SECRET)
        })
        .unwrap();
        assert!(
            any.authorize(Some(&token), Some("https://evil.example"), ROOM)
                .is_ok()
        );
    }

    #[test]
    fn oversized_token_is_401_before_parsing() {
        let big = Claims {
            name: Some("x".repeat(5000)),
            ..claims()
        };
        let err = check(&hs256(), &mint(&big)).unwrap_err();
        assert!(
            matches!(err, AuthError::OversizedToken { max: 4096, .. }),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 401);
        // Not parsed: garbage of the same size gets the same answer.
        let err = check(&hs256(), &"!".repeat(4097)).unwrap_err();
        assert!(matches!(err, AuthError::OversizedToken { .. }));
    }

    #[test]
    fn garbage_is_401_malformed() {
        let valid = mint(&claims());
        let parts: Vec<&str> = valid.split('.').collect();
        for garbage in [
            "garbage".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            "..".to_string(),
            "Bearer x.y.z".to_string(),
            "%%%.%%%.%%%".to_string(),
            format!("{}.{}.{}", b64::encode(b"not json"), parts[1], parts[2]),
            format!("{}.{}.{}", b64::encode(b"[1,2]"), parts[1], parts[2]),
            craft(r#"{"typ":"JWT"}"#, &claims(), "c2ln"),
            craft(r#"{"alg":"HS256","crit":["b64"]}"#, &claims(), "c2ln"),
            format!("{}.{}.{}", parts[0], b64::encode(b"not json"), parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], "A"),
        ] {
            let err = check(&hs256(), &garbage).unwrap_err();
            assert_eq!(err.http_status(), 401, "{garbage}: {err:?}");
            assert!(
                matches!(err, AuthError::Malformed(_) | AuthError::BadSignature),
                "{garbage}: {err:?}"
            );
        }
    }

    #[test]
    fn valid_rs256_token_and_tampering() {
        let v = Verifier::new(&AuthSettings::with_public_key_pem(
            JwtAlgorithm::RS256,
            RSA_PUBLIC_PEM,
        ))
        .unwrap();
        let token = sign(jsonwebtoken::Algorithm::RS256, &rsa_signer(), &claims());
        assert_eq!(
            check(&v, &token).unwrap().identity.as_deref(),
            Some("alice")
        );
        // Flip one character of the signature.
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(check(&v, &tampered).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn valid_eddsa_token_and_foreign_key() {
        let v = Verifier::new(&AuthSettings::with_public_key_pem(
            JwtAlgorithm::EdDSA,
            ED25519_PUBLIC_PEM,
        ))
        .unwrap();
        let key = EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()).unwrap();
        let token = sign(jsonwebtoken::Algorithm::EdDSA, &key, &claims());
        assert_eq!(check(&v, &token).unwrap().room, ROOM);
        let other = EncodingKey::from_ed_pem(OTHER_ED25519_PRIVATE_PEM.as_bytes()).unwrap();
        let forged = sign(jsonwebtoken::Algorithm::EdDSA, &other, &claims());
        assert_eq!(check(&v, &forged).unwrap_err(), AuthError::BadSignature);
        // An RS256 token is refused by the EdDSA verifier.
        let rs = sign(jsonwebtoken::Algorithm::RS256, &rsa_signer(), &claims());
        assert!(matches!(
            check(&v, &rs).unwrap_err(),
            AuthError::AlgorithmMismatch { .. }
        ));
    }

    #[test]
    fn settings_errors_name_the_field() {
        let field = |s: AuthSettings| Verifier::new(&s).unwrap_err().field;
        assert_eq!(field(AuthSettings::default()), "hs256_secret");
        assert_eq!(
            field(AuthSettings::with_hs256_secret("too-short")),
            "hs256_secret"
        );
        assert_eq!(
            field(AuthSettings::with_hs256_secret(RSA_PUBLIC_PEM)),
            "hs256_secret",
            "a PEM key is not a shared secret"
        );
        assert_eq!(
            field(AuthSettings {
                public_key_pem: Some(RSA_PUBLIC_PEM.into()),
                ..AuthSettings::with_hs256_secret(SECRET)
            }),
            "public_key_pem"
        );
        assert_eq!(
            field(AuthSettings {
                hs256_secret: Some(super::super::Secret::new(SECRET)),
                ..AuthSettings::with_public_key_pem(JwtAlgorithm::RS256, RSA_PUBLIC_PEM)
            }),
            "hs256_secret"
        );
        assert_eq!(
            field(AuthSettings::with_public_key_pem(
                JwtAlgorithm::RS256,
                RSA_PRIVATE_PEM
            )),
            "public_key_pem",
            "private keys are refused"
        );
        assert_eq!(
            field(AuthSettings::with_public_key_pem(
                JwtAlgorithm::RS256,
                RSA_1024_PUBLIC_PEM
            )),
            "public_key_pem",
            "RSA 1024 is refused"
        );
        assert_eq!(
            field(AuthSettings::with_public_key_pem(
                JwtAlgorithm::RS256,
                ED25519_PUBLIC_PEM
            )),
            "public_key_pem"
        );
        assert_eq!(
            field(AuthSettings::with_public_key_pem(
                JwtAlgorithm::EdDSA,
                RSA_PUBLIC_PEM
            )),
            "public_key_pem"
        );
        assert_eq!(
            field(AuthSettings::with_public_key_pem(
                JwtAlgorithm::EdDSA,
                "junk"
            )),
            "public_key_pem"
        );
        assert_eq!(
            field(AuthSettings {
                leeway_s: 3600,
                ..AuthSettings::with_hs256_secret(SECRET)
            }),
            "leeway_s"
        );
        assert_eq!(
            field(AuthSettings {
                max_token_bytes: 10,
                ..AuthSettings::with_hs256_secret(SECRET)
            }),
            "max_token_bytes"
        );
        assert_eq!(
            field(AuthSettings {
                allowed_origins: vec!["meet.example.org".into()],
                ..AuthSettings::with_hs256_secret(SECRET)
            }),
            "allowed_origins"
        );
        assert_eq!(
            field(AuthSettings {
                audience: Some(" ".into()),
                ..AuthSettings::with_hs256_secret(SECRET)
            }),
            "audience"
        );
    }

    #[test]
    fn key_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let v = Verifier::new(&AuthSettings {
            secret_file: Some(secret.clone()),
            ..AuthSettings::default()
        })
        .unwrap();
        assert!(
            check(&v, &mint(&claims())).is_ok(),
            "trailing newline removed"
        );

        let pem = dir.path().join("jwt.pub");
        std::fs::write(&pem, ED25519_PUBLIC_PEM).unwrap();
        let s = AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            public_key_file: Some(pem),
            ..AuthSettings::default()
        };
        assert!(s.validate().is_ok());

        let missing = AuthSettings {
            secret_file: Some(dir.path().join("nope")),
            ..AuthSettings::default()
        };
        assert_eq!(missing.validate().unwrap_err().field, "secret_file");
        let both = AuthSettings {
            secret_file: Some(secret),
            ..AuthSettings::with_hs256_secret(SECRET)
        };
        assert_eq!(both.validate().unwrap_err().field, "secret_file");
    }

    #[test]
    fn settings_parse_with_unknown_fields_refused() {
        let s: AuthSettings = toml::from_str(
            "algorithm = \"EdDSA\"\npublic_key_pem = \"x\"\nallowed_origins = [\"*\"]",
        )
        .unwrap();
        assert_eq!(s.algorithm, JwtAlgorithm::EdDSA);
        assert_eq!(s.leeway_s, super::super::DEFAULT_LEEWAY_S);
        let err = toml::from_str::<AuthSettings>("algoritm = \"HS256\"").unwrap_err();
        assert!(err.to_string().contains("algoritm"), "{err}");
        let err = toml::from_str::<AuthSettings>("algorithm = \"none\"").unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
        // Secrets do not leak through Debug.
        let s = AuthSettings::with_hs256_secret(SECRET);
        assert!(!format!("{s:?}").contains(SECRET));
        assert!(!format!("{:?}", hs256()).contains(SECRET));
    }
}
