//! Finding the subscriber's token in an HTTP upgrade request, without depending on any HTTP
//! library: headers are `(name, value)` string pairs, the query is the raw query string.

use std::borrow::Cow;

/// Prefix of the `Sec-WebSocket-Protocol` entry that carries a token: a browser opens
/// `new WebSocket(url, ["soustitre.v1", "bearer." + jwt])`. JWT characters (base64url and `.`)
/// are all valid in a subprotocol token (RFC 6455 §4.1).
///
/// The server must answer with one of the *other* offered subprotocols (see
/// [`is_token_protocol`]), never echo the token entry.
pub const WS_PROTOCOL_TOKEN_PREFIX: &str = "bearer.";

/// The query parameter that carries a token: `/rooms/standup/captions?token=<jwt>`.
pub const QUERY_TOKEN_PARAM: &str = "token";

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <jwt>`.
    AuthorizationHeader,
    /// A `bearer.<jwt>` entry of `Sec-WebSocket-Protocol`.
    WebSocketProtocol,
    /// The `token` query parameter.
    Query,
}

/// A token found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestToken<'a> {
    pub source: TokenSource,
    pub token: Cow<'a, str>,
}

/// Whether a `Sec-WebSocket-Protocol` entry carries a token (so the server must not select it).
pub fn is_token_protocol(protocol: &str) -> bool {
    protocol
        .trim()
        .get(..WS_PROTOCOL_TOKEN_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(WS_PROTOCOL_TOKEN_PREFIX))
}

/// The request's token, by precedence:
/// 1. the first `Authorization` header with the `Bearer` scheme (case-insensitive);
/// 2. the first `Sec-WebSocket-Protocol` entry `bearer.<jwt>` (headers may repeat and hold
///    comma-separated lists);
/// 3. the first non-empty `token` query parameter (`%XX` escapes decoded).
///
/// Header names are matched case-insensitively. Empty values count as absent. Headers come first
/// because URLs are logged by proxies and kept in browser history. Nothing is validated here:
/// [`super::Verifier::authorize`] does that.
pub fn token_from_request<'a, N, V>(
    headers: &'a [(N, V)],
    query: Option<&'a str>,
) -> Option<RequestToken<'a>>
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.as_ref().trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    };
    let found = |source, token: Cow<'a, str>| Some(RequestToken { source, token });

    for value in values("authorization") {
        let value = value.trim();
        if let Some((scheme, rest)) = value.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !rest.trim().is_empty()
        {
            return found(TokenSource::AuthorizationHeader, Cow::Borrowed(rest.trim()));
        }
    }
    for value in values("sec-websocket-protocol") {
        for entry in value.split(',').map(str::trim) {
            if is_token_protocol(entry) {
                let token = &entry[WS_PROTOCOL_TOKEN_PREFIX.len()..];
                if !token.is_empty() {
                    return found(TokenSource::WebSocketProtocol, Cow::Borrowed(token));
                }
            }
        }
    }
    for pair in query?.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == QUERY_TOKEN_PARAM && !value.is_empty() {
            return found(TokenSource::Query, percent_decode(value));
        }
    }
    None
}

/// `%XX` decoding; a value with an invalid escape is returned as is (the verifier then refuses
/// it as malformed). `+` is kept: a JWT never contains one.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => out.push(b),
                None => return Cow::Borrowed(s),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(s), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(
        headers: &'a [(&'a str, &'a str)],
        query: Option<&'a str>,
    ) -> Option<(TokenSource, String)> {
        token_from_request(headers, query).map(|t| (t.source, t.token.into_owned()))
    }

    #[test]
    fn precedence_is_header_then_protocol_then_query() {
        let all = [
            ("Sec-WebSocket-Protocol", "soustitre.v1, bearer.from-proto"),
            ("AUTHORIZATION", "bearer  from-header "),
        ];
        assert_eq!(
            find(&all, Some("token=from-query")),
            Some((TokenSource::AuthorizationHeader, "from-header".into()))
        );
        assert_eq!(
            find(&all[..1], Some("token=from-query")),
            Some((TokenSource::WebSocketProtocol, "from-proto".into()))
        );
        assert_eq!(
            find(&[], Some("room=a&token=from%2Equery&x")),
            Some((TokenSource::Query, "from.query".into()))
        );
        assert_eq!(find(&[], Some("token=&tokens=x")), None);
        assert_eq!(find(&[], None), None);
    }

    #[test]
    fn other_schemes_and_empty_values_are_skipped() {
        let h = [
            ("Authorization", "Basic dXNlcjpwYXNz"),
            ("Authorization", "Bearer "),
            ("Sec-WebSocket-Protocol", "bearer."),
            ("Sec-WebSocket-Protocol", "soustitre.v1"),
            ("Sec-WebSocket-Protocol", "x, Bearer.tok"),
        ];
        assert_eq!(
            find(&h, Some("token=q")),
            Some((TokenSource::WebSocketProtocol, "tok".into()))
        );
        assert!(is_token_protocol("bearer.abc"));
        assert!(!is_token_protocol("soustitre.v1"));
    }

    #[test]
    fn owned_header_pairs_work_too() {
        let h = vec![("authorization".to_string(), "Bearer abc".to_string())];
        let t = token_from_request(&h, None).unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }
}
