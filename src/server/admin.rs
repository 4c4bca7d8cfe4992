//! The operator listener: rooms (create, list, inspect, stop, delete), viewer tokens, metrics.
//! Every request carries the admin bearer token when one is configured.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{Claims, mint_hs256};
use crate::config::{RoomConfig, SourceConfig};

use super::AppState;
use super::room::RoomError;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/rooms", get(list).post(create))
        .route("/rooms/{room}", get(show).delete(delete))
        .route("/rooms/{room}/stop", post(stop))
        .route("/rooms/{room}/token", post(token))
        .route("/rooms/{room}/speakers/rename", post(rename_speaker))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), admin_auth))
        .with_state(state)
}

async fn admin_auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(auth) = &state.admin_auth {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = auth.authorize(header) {
            return (
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.public_reason(),
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    let rooms: Vec<_> = state
        .rooms
        .read()
        .await
        .values()
        .map(|r| r.info())
        .collect();
    Json(serde_json::json!({"rooms": rooms})).into_response()
}

async fn show(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match state.room(&room).await {
        Some(r) => Json(r.info()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such room"),
    }
}

/// `POST /rooms` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    id: String,
    /// Stream settings merged over the service defaults.
    #[serde(default)]
    stream: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    sources: Vec<SourceConfig>,
    /// Diarize the room's tracks (unless a source says otherwise).
    #[serde(default)]
    diarize: bool,
    /// Diarization knobs of the room, merged over `[defaults.diarization]`.
    #[serde(default)]
    diarization: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attach the room to a Janus VideoRoom (same fields as `[rooms.janus]` in the config file).
    #[serde(default)]
    janus: Option<crate::config::JanusFile>,
    /// Play WHEP endpoints (same fields as `[rooms.whep]` in the config file).
    #[serde(default)]
    whep: Option<crate::config::WhepFile>,
    /// Attach the room to a LiveKit room (same fields as `[rooms.livekit]`; secrets from
    /// `SOUSTITRE_*` environment variables of the service, or inline).
    #[serde(default)]
    livekit: Option<crate::sfu::livekit::LiveKitConfig>,
}

async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Json<CreateRoom>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Err(e) = crate::hub::validate_room_name(&req.id) {
        return error(StatusCode::BAD_REQUEST, format!("id: {e}"));
    }
    let overrides: toml::Table = match req.stream {
        None => toml::Table::new(),
        Some(map) => match serde_json::from_value(serde_json::Value::Object(map)) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("stream: {e}")),
        },
    };
    let stream = match state.config.stream_for(&overrides, "stream") {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let diarization: toml::Table = match req.diarization {
        None => toml::Table::new(),
        Some(map) => match serde_json::from_value(serde_json::Value::Object(map)) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("diarization: {e}")),
        },
    };
    let diarization = match state.config.diarization_for(&diarization, "diarization") {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let janus = match req.janus.as_ref().map(|j| j.resolve("janus")).transpose() {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let whep = match req.whep.as_ref().map(|w| w.resolve("whep")).transpose() {
        Ok(_) if janus.is_some() && req.whep.is_some() => {
            return error(
                StatusCode::BAD_REQUEST,
                "whep: a room attaches to one SFU: `janus` or `whep`, not both",
            );
        }
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if req.livekit.is_some() && (janus.is_some() || whep.is_some()) {
        return error(
            StatusCode::BAD_REQUEST,
            "livekit: a room attaches to one SFU (janus, whep or livekit)".to_string(),
        );
    }
    let env = crate::config::process_env();
    let livekit = match req
        .livekit
        .as_ref()
        .map(|l| l.resolve("livekit", &env, None))
        .transpose()
    {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let cfg = RoomConfig {
        id: req.id,
        stream,
        sources: req.sources,
        diarize: req.diarize,
        diarization,
        janus,
        whep,
        livekit,
    };
    let st = state.clone();
    match st.create_room(cfg).await {
        Ok(room) => (StatusCode::CREATED, Json(room.info())).into_response(),
        Err(e @ RoomError::Exists(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ RoomError::TooMany(_)) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Err(e @ RoomError::DuplicateTrack(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /rooms/{room}/speakers/rename` body: speaker `label` of `track` is shown as `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameSpeaker {
    track: String,
    label: String,
    name: String,
}

/// Renames a speaker label of a track ("voice 2 = Marie"): later captions carry the name, the
/// room's participant list (the `participants` message) lists it, and exports apply it.
async fn rename_speaker(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<RenameSpeaker>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(r) = state.room(&room).await else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    match r.rename_speaker(&req.track, &req.label, &req.name) {
        Ok(speakers) => {
            Json(serde_json::json!({"track": req.track, "speakers": speakers})).into_response()
        }
        Err(e @ RoomError::NoSuchTrack(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ RoomError::Rename(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn stop(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    let Some(r) = state.room(&room).await else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    let r2 = r.clone();
    let _ = tokio::task::spawn_blocking(move || r2.stop()).await;
    Json(r.info()).into_response()
}

async fn delete(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    let Some(r) = state.rooms.write().await.remove(&room) else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    let info = {
        let r = r.clone();
        tokio::task::spawn_blocking(move || {
            r.close();
            r.info()
        })
        .await
    };
    match info {
        Ok(info) => Json(info).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /rooms/{room}/token` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Default lifetime of a minted viewer token, seconds.
const DEFAULT_TOKEN_TTL_S: u64 = 3600;

async fn token(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Option<Json<TokenRequest>>,
) -> Response {
    let Some(secret) = &state.mint_secret else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "tokens are minted by the meeting application (no HS256 secret here)",
        );
    };
    if state.room(&room).await.is_none() {
        return error(StatusCode::NOT_FOUND, "no such room");
    }
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let mut claims = Claims::expiring_in(room, req.ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S));
    claims.sub = req.sub;
    claims.name = req.name;
    if let Some(aud) = &state.config.auth.audience {
        claims.aud = Some(crate::auth::Audience::One(aud.clone()));
    }
    claims.iss = state.config.auth.issuer.clone();
    match mint_hs256(secret, &claims) {
        Ok(t) => Json(serde_json::json!({"token": t, "expires_at": claims.exp})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A room metric: name, type, help, value.
type RoomMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&super::RoomInfo) -> f64,
);
/// A track metric: name, type, help, value (absent: not reported).
type TrackMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&super::room::TrackInfo) -> Option<f64>,
);

/// The HELP and TYPE lines of a metric family.
fn family(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        m,
        "# HELP soustitre_{name} {help}\n# TYPE soustitre_{name} {kind}"
    );
}

/// Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let rooms: Vec<_> = state
        .rooms
        .read()
        .await
        .values()
        .map(|r| r.info())
        .collect();
    let mut m = String::new();
    family(&mut m, "rooms", "gauge", "Rooms open.");
    let _ = writeln!(m, "soustitre_rooms {}", rooms.len());
    let room_metrics: [RoomMetric; 6] = [
        (
            "room_subscribers",
            "gauge",
            "Caption clients connected.",
            |r| r.subscribers as f64,
        ),
        (
            "room_last_seq",
            "gauge",
            "Last room sequence number.",
            |r| r.last_seq as f64,
        ),
        (
            "room_messages_published_total",
            "counter",
            "Room messages published.",
            |r| r.published as f64,
        ),
        (
            "room_finals_logged_total",
            "counter",
            "Finals written to the room log.",
            |r| r.finals as f64,
        ),
        (
            "room_slow_consumer_closes_total",
            "counter",
            "Clients closed for reading too slowly.",
            |r| r.slow_consumer_closes as f64,
        ),
        (
            "room_partials_dropped_total",
            "counter",
            "Partials dropped from full client queues.",
            |r| r.dropped_partials as f64,
        ),
    ];
    for (name, kind, help, f) in room_metrics {
        family(&mut m, name, kind, help);
        for r in &rooms {
            let _ = writeln!(m, "soustitre_{name}{{room=\"{}\"}} {}", r.id, f(r));
        }
    }
    let track_metrics: [TrackMetric; 11] = [
        ("track_finals_total", "counter", "Finals emitted.", |t| {
            Some(t.stats.finals as f64)
        }),
        (
            "track_partials_total",
            "counter",
            "Partials emitted.",
            |t| Some(t.stats.partials as f64),
        ),
        (
            "track_audio_seconds_total",
            "counter",
            "Audio captioned.",
            |t| Some(t.stats.audio_s),
        ),
        (
            "track_asr_seconds_total",
            "counter",
            "Recognition compute time.",
            |t| Some(t.stats.asr_s),
        ),
        ("track_gap_seconds_total", "counter", "Audio lost.", |t| {
            Some(t.stats.gaps_s)
        }),
        (
            "track_diarize_seconds_total",
            "counter",
            "Speaker-embedding compute time (diarized tracks).",
            |t| t.stats.diarized.then_some(t.stats.diarize_s),
        ),
        (
            "track_diarize_wait_seconds_total",
            "counter",
            "Time the captioner waited for the diarization thread (diarized tracks).",
            |t| t.stats.diarized.then_some(t.stats.diarize_wait_s),
        ),
        (
            "track_speakers",
            "gauge",
            "Speaker labels given on the track (diarized tracks).",
            |t| t.stats.diarized.then_some(t.stats.speakers.len() as f64),
        ),
        (
            "track_model_load_seconds",
            "gauge",
            "Time the track's models took to load (absent while they load).",
            |t| t.stats.model_load_s,
        ),
        (
            "track_startup_backlog_seconds",
            "gauge",
            "Audio that arrived while the track's models loaded, captioned once they were ready.",
            |t| Some(t.stats.startup_backlog_s),
        ),
        (
            "track_last_final_latency_seconds",
            "gauge",
            "Latency of the last final after the end of its speech.",
            |t| t.stats.last_final_latency_s,
        ),
    ];
    for (name, kind, help, f) in track_metrics {
        family(&mut m, name, kind, help);
        for r in &rooms {
            for t in &r.tracks {
                if let Some(v) = f(t) {
                    let _ = writeln!(
                        m,
                        "soustitre_{name}{{room=\"{}\",track=\"{}\"}} {v}",
                        r.id, t.source.track
                    );
                }
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}
