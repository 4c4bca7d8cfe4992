//! The public listener: caption WebSockets, transcript exports, the viewer page, health.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::auth::{AuthError, Subscriber, token_from_request};
use crate::captions::{CaptionEvent, CueSettings, build_cues, to_srt, to_vtt};
use crate::hub::SubscriberOptions;
use crate::protocol::{RESUME_QUERY_PARAM, ServerMessage};

use super::AppState;
use super::ws::{ClientLimits, client_loop};

/// The subprotocol the server selects (a `bearer.<jwt>` entry is never echoed back).
pub const SUBPROTOCOL: &str = "soustitre.v1";
/// Largest WebSocket message read from a client; above the control-message limit so that an
/// oversized control message gets an `error` answer rather than a closed socket.
const TRANSPORT_MAX_MESSAGE: usize = 64 * 1024;
/// Read buffer of a caption connection. Clients only send small control messages (a larger
/// frame still gets a buffer of its size), and tungstenite zero-fills the whole read buffer each
/// time the connection is polled for reading, which `client_loop` does after every message it
/// sends: with the default 128 KiB that was a third of the service's CPU and 1.3 GB of memory
/// at 10 000 connections (`soustitre bench-fanout`).
const READ_BUFFER_BYTES: usize = 4 * 1024;

const VIEWER_HTML: &str = include_str!("../../web/viewer.html");
const VIEWER_JS: &str = include_str!("../../web/viewer.js");
const VIEWER_CSS: &str = include_str!("../../web/viewer.css");

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/viewer/") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/viewer", get(|| async { Redirect::permanent("/viewer/") }))
        .route(
            "/viewer/",
            get(|| async { asset(VIEWER_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/viewer/viewer.js",
            get(|| async { asset(VIEWER_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/viewer/viewer.css",
            get(|| async { asset(VIEWER_CSS, "text/css; charset=utf-8") }),
        )
        .route("/rooms/{room}/ws", get(ws_upgrade))
        .route("/rooms/{room}/{file}", get(export))
        .with_state(state)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn refuse(e: &AuthError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    tracing::info!("refused: {e}");
    let mut resp = (status, e.public_reason()).into_response();
    if let Some(v) = e.www_authenticate()
        && let Ok(v) = HeaderValue::from_str(v)
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Checks the request's token and origin for `room`.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    room: &str,
) -> Result<Subscriber, AuthError> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")))
        .collect();
    let token = token_from_request(&pairs, query);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    state
        .verifier
        .authorize(token.as_ref().map(|t| t.token.as_ref()), origin, room)
}

fn query_u64(query: Option<&str>, key: &str) -> Result<Option<u64>, String> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        if let Some((k, v)) = pair.split_once('=')
            && k == key
        {
            return v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("`{key}` must be a number"));
        }
    }
    Ok(None)
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let subscriber = match authorize(&state, &headers, query.as_deref(), &room) {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    let resume_from = match query_u64(query.as_deref(), RESUME_QUERY_PARAM) {
        Ok(v) => v,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    let Some(r) = state.room(&room).await else {
        return (StatusCode::NOT_FOUND, "no such room").into_response();
    };
    if r.hub_stats().subscribers >= state.limits.max_subscribers_per_room {
        return (StatusCode::SERVICE_UNAVAILABLE, "room is full").into_response();
    }
    let opts = SubscriberOptions {
        resume_from,
        ..SubscriberOptions::default()
    };
    let sub = match r.hub().subscribe(opts).await {
        Ok(s) => s,
        Err(e) => {
            // e.g. resuming beyond the room's last seq: say so before any socket exists
            let body =
                ServerMessage::error(crate::protocol::ErrorCode::ResumeUnavailable, e.to_string())
                    .to_json();
            return (StatusCode::CONFLICT, body).into_response();
        }
    };
    let limits = ClientLimits::from_config(&state.limits, Some(subscriber.expires_at));
    ws.protocols([SUBPROTOCOL])
        .max_message_size(TRANSPORT_MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| client_loop(socket, sub, limits))
}

/// `GET /rooms/{room}/transcript.{vtt,srt,json,txt}`: the room's finals from its durable log.
async fn export(
    State(state): State<Arc<AppState>>,
    Path((room, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(ext) = file.strip_prefix("transcript.") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !matches!(ext, "vtt" | "srt" | "json" | "txt") {
        return (
            StatusCode::NOT_FOUND,
            "formats: transcript.vtt, .srt, .json, .txt",
        )
            .into_response();
    }
    if let Err(e) = authorize(&state, &headers, query.as_deref(), &room) {
        return refuse(&e);
    }
    let Some(r) = state.room(&room).await else {
        return (StatusCode::NOT_FOUND, "no such room").into_response();
    };
    let path = r.log_path().to_path_buf();
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the log: {e}"),
            )
                .into_response();
        }
    };
    let transcript = Transcript::from_log(&text);
    let (body, ctype) = match ext {
        "vtt" => (transcript.vtt(), "text/vtt; charset=utf-8"),
        "srt" => (transcript.srt(), "application/x-subrip; charset=utf-8"),
        "json" => (transcript.json(&room), "application/json"),
        _ => (transcript.txt(), "text/plain; charset=utf-8"),
    };
    let disposition = format!("inline; filename=\"{room}.{ext}\"");
    (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// The finals of a room log, with speaker names.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Room seq and final event, in seq order.
    pub finals: Vec<(u64, CaptionEvent)>,
}

impl Transcript {
    /// Reads a room log (JSONL of room messages); unreadable lines are skipped with a warning.
    pub fn from_log(text: &str) -> Transcript {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        // speaker renames per track (label → name), from the latest participant list
        let mut renames: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        // one final per segment: each final is its own entry, in room seq order
        let mut finals: Vec<(u64, CaptionEvent)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ServerMessage>(line) {
                Ok(ServerMessage::Caption(c)) if c.event.is_final() => {
                    finals.push((c.seq, c.event))
                }
                Ok(ServerMessage::Participants(p)) => {
                    renames.clear();
                    for x in p.participants {
                        renames.insert(
                            x.track.clone(),
                            x.speakers.into_iter().map(|s| (s.label, s.name)).collect(),
                        );
                        names.insert(x.track, x.name);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("room log line {}: {e}", i + 1),
            }
        }
        finals.retain(|(_, e)| !e.text.is_empty());
        for (_, e) in finals.iter_mut() {
            if e.speaker.is_none() {
                e.speaker = names.get(&e.track).cloned();
            }
            if let (Some(s), Some(r)) = (&mut e.speaker, renames.get(&e.track))
                && let Some(n) = r.get(s.as_str())
            {
                *s = n.clone();
            }
        }
        finals.sort_by_key(|(seq, _)| *seq);
        Transcript { finals }
    }

    fn events(&self) -> Vec<CaptionEvent> {
        self.finals.iter().map(|(_, e)| e.clone()).collect()
    }

    fn cue_settings() -> CueSettings {
        CueSettings {
            show_speaker_names: true,
            ..CueSettings::default()
        }
    }

    pub fn vtt(&self) -> String {
        to_vtt(&build_cues(&self.events(), &Self::cue_settings()).unwrap_or_default())
    }

    pub fn srt(&self) -> String {
        to_srt(&build_cues(&self.events(), &Self::cue_settings()).unwrap_or_default())
    }

    pub fn json(&self, room: &str) -> String {
        let finals: Vec<serde_json::Value> = self
            .finals
            .iter()
            .map(|(seq, e)| serde_json::json!({"room_seq": seq, "event": e}))
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({"room": room, "finals": finals}))
            .unwrap_or_default()
    }

    pub fn txt(&self) -> String {
        let mut out = String::new();
        for (_, e) in &self.finals {
            let t = e.start.max(0.0) as u64;
            let who = e.speaker.clone().unwrap_or_else(|| e.track.clone());
            out += &format!(
                "[{:02}:{:02}:{:02}] {who}: {}\n",
                t / 3600,
                t / 60 % 60,
                t % 60,
                e.text
            );
        }
        out
    }
}
