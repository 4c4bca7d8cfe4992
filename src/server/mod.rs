//! The caption service: rooms with captioned sources, a public listener (caption WebSockets,
//! transcript exports, the viewer page) and a separate operator listener (room API, metrics).
//!
//! ```text
//! sources (files/URIs at real-time pace) ─▶ track threads (VAD + ASR) ─▶ room hub (seq, durable
//! log, replay ring) ─▶ per-client bounded queues ─▶ WebSocket connections
//! ```
//!
//! Authentication is checked before the WebSocket upgrade (HTTP 401/403, no socket). The admin
//! API and metrics live on their own listener, on loopback by default.
//!
//! Latency added by delivery: one serialisation per room message, one queue operation per client,
//! plus an fsync of the room log per final (measured by `soustitre bench-fanout`).

mod admin;
mod public;
mod room;
mod sfu;
mod source;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::RwLock;

use crate::auth::{AdminAuth, Verifier};
use crate::config::{LimitsConfig, RoomConfig, ServiceConfig};
use crate::engine::{Engine, EngineError};
use crate::hub::HubSettings;
use crate::stream::StreamSettings;

pub use room::{Room, RoomError, RoomInfo};
pub use source::{TrackState, TrackStats};
pub use ws::{ClientLimits, client_loop};

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("room `{room}`: {source}")]
    Room { room: String, source: RoomError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Shared state of both listeners.
pub struct AppState {
    pub rooms: RwLock<BTreeMap<String, Arc<Room>>>,
    pub engine: Engine,
    pub hub_settings: HubSettings,
    pub default_stream: StreamSettings,
    pub verifier: Verifier,
    pub admin_auth: Option<AdminAuth>,
    pub limits: LimitsConfig,
    /// The HS256 secret when tokens may be minted by the admin API (`POST /rooms/{id}/token`).
    pub mint_secret: Option<Vec<u8>>,
    pub config: ServiceConfig,
}

impl AppState {
    /// Creates and starts a room.
    pub async fn create_room(self: &Arc<Self>, cfg: RoomConfig) -> Result<Arc<Room>, RoomError> {
        let mut rooms = self.rooms.write().await;
        if rooms.contains_key(&cfg.id) {
            return Err(RoomError::Exists(cfg.id));
        }
        if rooms.len() >= self.limits.max_rooms {
            return Err(RoomError::TooMany(self.limits.max_rooms));
        }
        let room = Arc::new(Room::start(cfg, &self.engine, &self.hub_settings)?);
        rooms.insert(room.id().to_string(), room.clone());
        Ok(room)
    }

    /// The room named `id`.
    pub async fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.rooms.read().await.get(id).cloned()
    }
}

/// The running service: its listeners' addresses and a handle to stop it.
pub struct Service {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Prepares the models, binds both listeners and opens the preconfigured rooms.
    /// `allow_own_origin` adds the public listener's own address to the allowed origins (so its
    /// viewer page can connect), `mint_secret` enables `POST /rooms/{id}/token`.
    pub async fn start(
        config: ServiceConfig,
        mint_secret: Option<Vec<u8>>,
        allow_own_origin: bool,
    ) -> Result<Service, ServeError> {
        let store = match (&config.models.model_dir, &config.models.mirror) {
            (None, None) => crate::models::ModelStore::open_default().map_err(EngineError::from)?,
            (dir, mirror) => crate::models::ModelStore::new(
                dir.clone().unwrap_or_else(crate::paths::default_model_dir),
                match mirror {
                    Some(m) => Some(m.clone()),
                    None => crate::paths::default_mirror().map_err(EngineError::from)?,
                },
            ),
        };
        let model = config.models.model.clone();
        // the diarization model is prepared when a configured room diarizes any track
        let diarize = config.rooms.iter().any(|r| r.any_diarized());
        let engine = tokio::task::spawn_blocking(move || {
            let e = Engine::prepare(&store, &model)?;
            if diarize {
                e.with_diarization(&store)
            } else {
                Ok(e)
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let public = bind(config.server.listen).await?;
        let admin = bind(config.admin.listen).await?;
        let public_addr = public.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let verifier = if allow_own_origin {
            let mut auth = config.auth.clone();
            auth.allowed_origins.push(format!("http://{public_addr}"));
            auth.allowed_origins
                .push(format!("http://localhost:{}", public_addr.port()));
            Verifier::new(&auth).map_err(|e| std::io::Error::other(e.to_string()))?
        } else {
            config.verifier.clone()
        };
        let hub_settings = HubSettings {
            data_dir: config.storage.data_dir.join("rooms"),
            queue_capacity: config.limits.client_final_queue + config.limits.client_partial_queue,
            max_pending_finals: config.limits.client_final_queue,
            ..HubSettings::default()
        };
        let state = Arc::new(AppState {
            rooms: RwLock::new(BTreeMap::new()),
            engine,
            hub_settings,
            default_stream: config.default_stream.clone(),
            verifier,
            admin_auth: config.admin.auth.clone(),
            limits: config.limits.clone(),
            mint_secret,
            config: config.clone(),
        });
        for room in config.rooms.clone() {
            let id = room.id.clone();
            state
                .create_room(room)
                .await
                .map_err(|source| ServeError::Room { room: id, source })?;
        }
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let serve = |listener: tokio::net::TcpListener,
                     router: axum::Router,
                     mut rx: tokio::sync::watch::Receiver<bool>| {
            tokio::spawn(async move {
                use axum::serve::ListenerExt as _;
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                let stop = async move {
                    let _ = rx.wait_for(|v| *v).await;
                };
                // No Nagle: a caption written while the client's delayed ACK of the previous one
                // is pending would otherwise wait for that ACK (tens of ms).
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                });
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!("listener stopped: {e}");
                }
            })
        };
        let tasks = vec![
            serve(public, public::router(state.clone()), rx.clone()),
            serve(admin, admin::router(state.clone()), rx),
        ];
        Ok(Service {
            public_addr,
            admin_addr,
            state,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, closes every room (their last finals are flushed to the logs) and waits
    /// for the listeners.
    pub async fn shutdown(self) {
        let rooms: Vec<Arc<Room>> = self.state.rooms.write().await.values().cloned().collect();
        for room in rooms {
            let _ = tokio::task::spawn_blocking(move || room.stop()).await;
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The demo room: the three speaker tracks of the dev corpus meeting, looping, in English.
pub fn demo_room(corpus: &std::path::Path) -> RoomConfig {
    let tracks = corpus.join("meetings/en_3spk/tracks");
    RoomConfig {
        id: "demo".into(),
        stream: StreamSettings {
            language: crate::stream::LanguageSetting::Fixed("en".into()),
            ..Default::default()
        },
        sources: ["A", "B", "C"]
            .iter()
            .map(|t| crate::config::SourceConfig {
                track: (*t).into(),
                uri: tracks
                    .join(format!("{t}.wav"))
                    .to_string_lossy()
                    .into_owned(),
                participant: Some(format!("speaker-{}", t.to_ascii_lowercase())),
                name: Some(format!("Speaker {t}")),
                looped: true,
                diarize: None,
            })
            .collect(),
        diarize: false,
        diarization: Default::default(),
        janus: None,
        whep: None,
        livekit: None,
    }
}

/// The dev corpus beside the checkout, if present.
pub fn default_corpus() -> Option<PathBuf> {
    let root = crate::paths::project_root()?;
    let c = root.join("../shared/corpus/dev");
    c.is_dir().then_some(c)
}
