//! The HTTP side of WHEP (RFC 9725): POST the offer, PATCH (answer of a server-sent offer),
//! DELETE the resource, and reading what the server says in its headers (`Location`, `ETag`,
//! `Accept-Patch`, `Link: <stun:...>; rel="ice-server"`). Blocking (ureq): called from the
//! attachment's blocking negotiation thread, never from a GStreamer streaming thread.

use std::time::Duration;

use crate::sfu::media::IceServers;

/// Longest wait for one HTTP exchange with the WHEP server.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest body read from the WHEP server (an SDP is a few kilobytes).
const MAX_BODY: u64 = 256 * 1024;

/// What can go wrong talking to a WHEP server. The text is what the operator sees in the
/// room's attachment status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach the WHEP server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("WHEP server refused the token ({status} at {url}): {body}")]
    Unauthorized {
        url: String,
        status: u16,
        body: String,
    },
    #[error("no such WHEP endpoint ({status} at {url}): {body}")]
    NotFound {
        url: String,
        status: u16,
        body: String,
    },
    #[error("WHEP server answered {status} at {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("WHEP server sent {content_type:?} instead of application/sdp at {url}")]
    ContentType { url: String, content_type: String },
    #[error("WHEP server sent no Location for the new resource at {url}")]
    NoLocation { url: String },
    #[error("invalid SDP from the WHEP server: {0}")]
    Sdp(String),
}

impl HttpError {
    /// HTTP status of the refusal, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Unauthorized { status, .. }
            | HttpError::NotFound { status, .. }
            | HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The server's description in the reply to the POST.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `201 Created` with the answer to our offer (RFC 9725).
    Answer(String),
    /// `406 Not Acceptable` with an offer of the server's own, to be answered with a PATCH
    /// `application/sdp` to the resource (a mode of Meetecho's janus-whep-server, for Janus
    /// plugins that cannot take a subscriber's offer; not part of RFC 9725).
    ServerOffer(String),
}

/// A created WHEP resource (the session on the server).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Absolute URL of the resource (`Location`, resolved against the endpoint URL).
    pub url: String,
    /// `ETag` of the session, sent back as `If-Match` on PATCH.
    pub etag: Option<String>,
    /// The server takes trickled candidates (`Accept-Patch: application/trickle-ice-sdpfrag`).
    pub trickle: bool,
    /// ICE servers announced in `Link` headers.
    pub ice: IceServers,
}

/// A WHEP client for one endpoint.
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<&str>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("soustitre/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            endpoint: endpoint.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// POSTs our offer to the endpoint: the server's description (not checked yet: see
    /// [`check_answer`] and [`check_sdp`]) and the new resource.
    pub fn post(&self, offer: &str) -> Result<(Reply, Resource), HttpError> {
        let url = &self.endpoint;
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/sdp")
            .header("Accept", "application/sdp");
        if let Some(auth) = self.authorization() {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.send(offer).map_err(|e| unreachable(url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(&mut resp);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if status != 201 && status != 406 {
            return Err(refusal(url, status, body));
        }
        let content_type = header("content-type").unwrap_or_default();
        let location = header("location");
        if !is_sdp(&content_type) {
            if let Some(location) = &location {
                // a session may exist on the server anyway: end it
                let _ = self.delete(&Resource {
                    url: resolve_url(url, location),
                    etag: None,
                    trickle: false,
                    ice: IceServers::default(),
                });
            }
            // a 406 without an SDP is a plain refusal
            if status == 406 {
                return Err(refusal(url, status, body));
            }
            return Err(HttpError::ContentType {
                url: url.clone(),
                content_type,
            });
        }
        let location = location.ok_or_else(|| HttpError::NoLocation { url: url.clone() })?;
        let links: Vec<String> = headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let trickle = headers
            .get_all("accept-patch")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',').any(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/trickle-ice-sdpfrag")
                })
            });
        let resource = Resource {
            url: resolve_url(url, &location),
            etag: header("etag"),
            trickle,
            ice: ice_servers(&links),
        };
        // the description is checked by the caller, which deletes the resource if it is wrong
        let reply = if status == 201 {
            Reply::Answer(body)
        } else {
            Reply::ServerOffer(body)
        };
        Ok((reply, resource))
    }

    /// Sends our answer to a server-sent offer ([`Reply::ServerOffer`]).
    pub fn patch_answer(&self, resource: &Resource, answer: &str) -> Result<(), HttpError> {
        let url = &resource.url;
        let mut req = self
            .agent
            .patch(url)
            .header("Content-Type", "application/sdp");
        if let Some(auth) = self.authorization() {
            req = req.header("Authorization", auth);
        }
        if let Some(etag) = &resource.etag {
            req = req.header("If-Match", etag);
        }
        let mut resp = req.send(answer).map_err(|e| unreachable(url, e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(refusal(url, status, read_body(&mut resp)))
        }
    }

    /// Ends the session on the server (DELETE the resource). A resource the server no longer
    /// knows (404) is already gone: that is fine.
    pub fn delete(&self, resource: &Resource) -> Result<(), HttpError> {
        let url = &resource.url;
        let mut req = self.agent.delete(url);
        if let Some(auth) = self.authorization() {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.call().map_err(|e| unreachable(url, e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(refusal(url, status, read_body(&mut resp)))
        }
    }
}

fn unreachable(url: &str, e: ureq::Error) -> HttpError {
    HttpError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

fn read_body(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    resp.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .unwrap_or_default()
}

fn refusal(url: &str, status: u16, body: String) -> HttpError {
    let body: String = body.trim().chars().take(200).collect();
    let url = url.to_owned();
    match status {
        401 | 403 => HttpError::Unauthorized { url, status, body },
        404 => HttpError::NotFound { url, status, body },
        _ => HttpError::Status { url, status, body },
    }
}

fn is_sdp(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
}

/// A description must at least look like SDP with an audio section.
pub fn check_sdp(sdp: &str) -> Result<(), HttpError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(HttpError::Sdp("the body does not start with v=0".into()));
    }
    if !sdp.lines().any(|l| l.starts_with("m=audio")) {
        return Err(HttpError::Sdp("no audio section (m=audio)".into()));
    }
    Ok(())
}

/// An answer must be one: `a=setup:actpass` is only valid in an offer (RFC 5763). Janus before
/// 1.1.3 behind janus-whep-server sends the Streaming plugin's own offer in a `201`.
pub fn check_answer(sdp: &str) -> Result<(), HttpError> {
    check_sdp(sdp)?;
    if sdp.lines().any(|l| l.trim() == "a=setup:actpass") {
        return Err(HttpError::Sdp(
            "the 201 reply carries an offer (a=setup:actpass), not an answer: the server \
             ignored our offer (Janus < 1.1.3 Streaming plugin? use its server-sent offers)"
                .into(),
        ));
    }
    Ok(())
}

/// Resolves a `Location` against the endpoint URL (absolute, network-path, absolute-path and
/// relative-path references, dot segments removed).
pub fn resolve_url(base: &str, reference: &str) -> String {
    let reference = reference.trim();
    if reference.contains("://") {
        return reference.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(net) = reference.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if reference.starts_with('/') {
        return format!("{scheme}://{authority}{}", remove_dots(reference));
    }
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!(
        "{scheme}://{authority}{}",
        remove_dots(&format!("{dir}{reference}"))
    )
}

/// Removes `.` and `..` segments of an absolute path (RFC 3986, 5.2.4), keeping its query.
fn remove_dots(path: &str) -> String {
    let (path, query) = match path.find(['?', '#']) {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}{query}", out.join("/"))
}

/// ICE servers of `Link: <uri>; rel="ice-server"[; username=...; credential=...]` headers, in
/// webrtcbin's form (`stun://host:port`, `turn(s)://user:password@host:port`). The first STUN
/// server is kept; every TURN server with credentials is.
pub fn ice_servers(links: &[String]) -> IceServers {
    let mut out = IceServers::default();
    for link in links.iter().flat_map(|l| split_links(l)) {
        let Some((uri, params)) = parse_link(&link) else {
            continue;
        };
        let param = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if !param("rel").is_some_and(|r| r.split_whitespace().any(|r| r == "ice-server")) {
            continue;
        }
        let (kind, host) = match uri.split_once(':') {
            Some((k, h)) => (k.to_ascii_lowercase(), h.trim_start_matches("//")),
            None => continue,
        };
        let host = host.split('?').next().unwrap_or(host);
        if host.is_empty() {
            continue;
        }
        match kind.as_str() {
            "stun" if out.stun.is_none() => out.stun = Some(format!("stun://{host}")),
            "turn" | "turns" => {
                if let (Some(user), Some(pass)) = (param("username"), param("credential")) {
                    out.turn.push(format!("{kind}://{user}:{pass}@{host}"));
                }
            }
            _ => {}
        }
    }
    out
}

/// Splits a header value holding several links at the commas between them.
fn split_links(value: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut in_uri, mut in_quote) = (false, false);
    for c in value.chars() {
        match c {
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            '"' if !in_uri => in_quote = !in_quote,
            ',' if !in_uri && !in_quote => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.retain(|l| !l.trim().is_empty());
    out
}

/// `<uri>; k=v; k="v"` → (uri, params).
fn parse_link(link: &str) -> Option<(String, Vec<(String, String)>)> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let end = rest.find('>')?;
    let uri = rest[..end].trim().to_owned();
    let params = rest[end + 1..]
        .split(';')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect();
    Some((uri, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_endpoint() {
        let base = "http://10.0.0.1:7090/whep/endpoint/speaker?x=1";
        assert_eq!(
            resolve_url(base, "/whep/resource/abc"),
            "http://10.0.0.1:7090/whep/resource/abc"
        );
        assert_eq!(resolve_url(base, "https://other/r/1"), "https://other/r/1");
        assert_eq!(resolve_url(base, "//cdn:8443/r/2"), "http://cdn:8443/r/2");
        assert_eq!(
            resolve_url(base, "res/3"),
            "http://10.0.0.1:7090/whep/endpoint/res/3"
        );
        assert_eq!(resolve_url("https://h", "/r"), "https://h/r");
        assert_eq!(
            resolve_url(base, "../resource/1"),
            "http://10.0.0.1:7090/whep/resource/1"
        );
        assert_eq!(
            resolve_url(base, "./a/../b?x=../y"),
            "http://10.0.0.1:7090/whep/endpoint/b?x=../y"
        );
        assert_eq!(resolve_url(base, "/a/./b/../"), "http://10.0.0.1:7090/a/");
    }

    #[test]
    fn ice_servers_come_from_link_headers() {
        let links = vec![
            r#"<stun:stun.example.net:3478>; rel="ice-server", <turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="u"; credential="p, q"; credential-type="password""#.to_owned(),
            r#"<stun:second:3478>; rel="ice-server""#.to_owned(),
            r#"<https://example.net/doc>; rel="help""#.to_owned(),
            r#"<turns:no-credentials:5349>; rel="ice-server""#.to_owned(),
        ];
        let ice = ice_servers(&links);
        assert_eq!(ice.stun.as_deref(), Some("stun://stun.example.net:3478"));
        assert_eq!(
            ice.turn,
            vec!["turn://u:p, q@turn.example.net:3478".to_owned()]
        );
        assert_eq!(ice_servers(&[]), IceServers::default());
    }

    #[test]
    fn answers_are_checked() {
        let answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:active\r\n";
        assert!(check_answer(answer).is_ok());
        let offer = answer.replace("setup:active", "setup:actpass");
        assert!(matches!(check_answer(&offer), Err(HttpError::Sdp(m)) if m.contains("offer")));
        assert!(check_answer("<html>oops</html>").is_err());
        assert!(check_answer("v=0\r\nm=video 9 RTP/AVP 96\r\n").is_err());
        assert!(is_sdp("application/sdp; charset=utf-8"));
        assert!(!is_sdp("text/html"));
    }

    #[test]
    fn refusals_are_named() {
        let e = refusal("http://h/e", 403, "Unauthorized".into());
        assert_eq!(e.status(), Some(403));
        assert!(e.to_string().contains("refused the token"), "{e}");
        assert!(matches!(
            refusal("u", 404, String::new()),
            HttpError::NotFound { .. }
        ));
        assert!(matches!(
            refusal("u", 503, String::new()),
            HttpError::Status { status: 503, .. }
        ));
    }
}
