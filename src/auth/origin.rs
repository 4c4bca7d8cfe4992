//! The `Origin` check: which web pages may open a caption socket (cross-site WebSocket
//! hijacking protection; browsers always send `Origin` on a WebSocket handshake).

use super::error::echo;
use super::{ANY_ORIGIN, AuthError, InvalidAuthSetting};

/// Compiled `allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OriginPolicy {
    /// `"*"`: every page.
    Any,
    /// These normalised origins only (empty: no browser page).
    List(Vec<String>),
}

impl OriginPolicy {
    /// Checks and normalises the configured entries.
    pub(super) fn new(entries: &[String]) -> Result<Self, InvalidAuthSetting> {
        if entries.iter().any(|e| e.trim() == ANY_ORIGIN) {
            return Ok(OriginPolicy::Any);
        }
        let bad = |entry: &str, reason: &str| {
            InvalidAuthSetting::new(
                "allowed_origins",
                format!("{entry:?} {reason} (use scheme://host[:port], or \"*\" for any)"),
            )
        };
        let mut list = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(norm) = normalize(entry) else {
                return Err(bad(entry, "is not an origin"));
            };
            if norm == "null" {
                return Err(bad(
                    entry,
                    "would allow every sandboxed or file:// page; it is refused",
                ));
            }
            list.push(norm);
        }
        Ok(OriginPolicy::List(list))
    }

    /// `None` (no `Origin` header: not a browser) passes; otherwise the origin must be listed.
    pub(super) fn check(&self, origin: Option<&str>) -> Result<(), AuthError> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let allowed = match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(list) => normalize(origin).is_some_and(|o| list.contains(&o)),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed {
                origin: echo(origin),
            })
        }
    }
}

/// `scheme://host[:port]` lowercased, default port (80 for http, 443 for https) and a trailing
/// `/` removed; `null` kept as is; `None` if it is not an origin (path, query, spaces...).
fn normalize(origin: &str) -> Option<String> {
    let o = origin.trim().to_ascii_lowercase();
    if o == "null" {
        return Some(o);
    }
    let o = o.strip_suffix('/').unwrap_or(&o);
    let (scheme, authority) = o.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let authority_ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !scheme_ok || !authority_ok {
        return None;
    }
    let authority = match scheme {
        "http" => authority.strip_suffix(":80").unwrap_or(authority),
        "https" => authority.strip_suffix(":443").unwrap_or(authority),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn listed_origins_pass_after_normalisation() {
        let p = policy(&["https://Meet.Example.org/", "http://127.0.0.1:8080"]);
        assert!(p.check(Some("https://meet.example.org")).is_ok());
        assert!(p.check(Some("https://meet.example.org:443")).is_ok());
        assert!(p.check(Some("http://127.0.0.1:8080")).is_ok());
        assert!(p.check(None).is_ok(), "no Origin: not a browser");
        for bad in [
            "http://meet.example.org",
            "https://meet.example.org.evil.com",
            "https://evil.com",
            "null",
            "http://127.0.0.1:8081",
            "",
        ] {
            let err = p.check(Some(bad)).unwrap_err();
            assert_eq!(err.http_status(), 403, "{bad}");
        }
    }

    #[test]
    fn empty_list_allows_no_browser_and_star_allows_all() {
        let none = policy(&[]);
        assert!(none.check(Some("http://127.0.0.1:8080")).is_err());
        assert!(none.check(None).is_ok());
        let any = policy(&["*"]);
        assert!(any.check(Some("https://anything.example")).is_ok());
        assert!(any.check(Some("null")).is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["meet.example.org", "https://x/path", "null", "https://a b"] {
            let err = OriginPolicy::new(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.field, "allowed_origins", "{bad}");
        }
    }
}
