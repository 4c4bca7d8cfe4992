//! `soustitre bench-fanout`: the caption delivery benchmark.
//!
//! Starts the real service in-process ([`Service::start`]: both listeners on `127.0.0.1:0`, a
//! fresh data directory, HS256 tokens, no sources), creates `--rooms` rooms, opens
//! `--subscribers` real WebSocket connections per room over loopback (tokio-tungstenite, each
//! with its own token sent as the `bearer.<jwt>` subprotocol entry, as browsers do), then replays
//! a caption event log into every room's hub ([`Hub::publish`], one publisher thread per room,
//! as a room's source threads do) and measures on every client the **added delivery latency**:
//! receive instant − instant the event was handed to [`Hub::publish`]. That covers the
//! serialisation, the room log append + fsync of finals, the per-client queue, the service's
//! WebSocket write, loopback TCP and the client's frame decode.
//!
//! The publish instant travels in the event itself: each replayed event's `emitted_at` is
//! replaced, just before the publish call, by the `CLOCK_MONOTONIC` time in seconds; a client
//! reads the same clock on receipt. The clock is system-wide, so this works whether the clients
//! run in the bench's process or in a child process.
//!
//! Clients run in the bench's process when the open-file limit allows two sockets per subscriber
//! (raised with `setrlimit` if possible); otherwise (e.g. 100 × 100 under a hard limit of 20 000
//! without `CAP_SYS_RESOURCE`) in a child process (`soustitre bench-fanout-clients`, fed a plan on
//! stdin), so that each process needs only one socket per subscriber. `--clients` forces either.
//! With a child process the service's CPU and memory are reported apart from the clients'.
//!
//! Correctness is checked on every client, not assumed: every final of its room exactly once,
//! in seq order, with the segment id that was published at that seq; caption seqs strictly
//! increasing (partials may be coalesced by the hub's overflow policy, never reordered). A client
//! closed as a slow consumer reconnects with `?from_seq=` as the protocol says, and the check
//! continues across the reconnection. Any violation makes the command fail.
//!
//! Example: `soustitre bench-fanout --rooms 100 --subscribers 100 --seconds 20 --json out/fanout.json`

use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{Claims, MintError, WS_PROTOCOL_TOKEN_PREFIX, mint_hs256};
use crate::captions::{CaptionEvent, EventKind, LogReadError, read_log};
use crate::config::{CliOverrides, ConfigError, Env, RoomConfig, ServiceConfig};
use crate::hub::Hub;
use crate::protocol::close;
use crate::server::{RoomError, ServeError, Service};

/// Default number of rooms.
pub const DEFAULT_ROOMS: usize = 100;
/// Default number of subscribers per room.
pub const DEFAULT_SUBSCRIBERS: usize = 100;
/// Default length of the replay, seconds.
pub const DEFAULT_SECONDS: f64 = 20.0;
/// Default caption log, relative to the checkout.
pub const DEFAULT_LOG: &str = "../shared/score/examples/dev_en_3spk_simulated.jsonl";
/// Default time allowed after the last publish for every client to get every final, seconds.
pub const DEFAULT_DRAIN_TIMEOUT_S: f64 = 30.0;
/// The product's target: p99 added delivery latency at 100 rooms × 100 subscribers, ms.
pub const TARGET_P99_MS: f64 = 50.0;
/// The hidden subcommand that runs the clients in a child process.
pub const CLIENTS_SUBCOMMAND: &str = "bench-fanout-clients";

/// The subprotocol the service selects (`server::public::SUBPROTOCOL`).
const SUBPROTOCOL: &str = "soustitre.v1";
/// Connections being opened at once (more would only overflow the accept backlog and add SYN
/// retransmits to the setup time).
const CONNECT_CONCURRENCY: usize = 256;
/// Read buffer of a client connection. tungstenite's default (128 KiB) is zero-filled before
/// every read, which at 10 000 connections costs more CPU than everything else a client does,
/// and 1.3 GB of memory; caption messages are well under 1 KiB.
const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// Bound of one connection's TCP connect plus WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of the whole connection phase.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Token lifetime: far beyond any run.
const TOKEN_TTL_S: u64 = 6 * 3600;
/// Bound of the wait for the clients to see their rooms close, after delivery.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Violations kept verbatim in the report (all are counted).
const MAX_REPORTED_VIOLATIONS: usize = 20;
/// Open files beyond the sockets (listeners, room logs, runtime, libraries).
const FD_HEADROOM: u64 = 1024;
/// Thread names: publishers, the service's runtime, the clients' runtime.
const PUBLISHER_THREAD: &str = "fanout-pub";
const SERVER_THREAD: &str = "fanout-server";
const CLIENT_THREAD: &str = "fanout-client";

/// Where the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientsMode {
    /// In the bench's process if the open-file limit allows, else in a child process.
    #[default]
    Auto,
    /// In the bench's process (needs two open files per subscriber).
    InProcess,
    /// In a child process (`soustitre bench-fanout-clients`).
    Child,
}

/// Options of `soustitre bench-fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = DEFAULT_ROOMS)]
    pub rooms: usize,
    /// WebSocket subscribers per room.
    #[arg(long, default_value_t = DEFAULT_SUBSCRIBERS)]
    pub subscribers: usize,
    /// Length of the replay, seconds.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    pub seconds: f64,
    /// Caption events per second and room, cycling through the log (default: the log's own
    /// timing, compressed or stretched so that one pass lasts `--seconds`).
    #[arg(long)]
    pub rate_hz: Option<f64>,
    /// Caption event log (JSONL) to replay (default: the dev corpus's simulated 3-speaker log,
    /// `../shared/score/examples/dev_en_3spk_simulated.jsonl` beside the checkout).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for the room logs (default: a fresh directory in the system temp directory,
    /// removed afterwards). Its file system's fsync time is part of every final's latency.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Publish into every room at the same instants (worst-case bursts) instead of spreading
    /// the rooms' timelines over one mean inter-event interval.
    #[arg(long)]
    pub aligned: bool,
    /// Time allowed after the last publish for every client to get every final, seconds.
    #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT_S)]
    pub drain_timeout_s: f64,
    /// Where the clients run.
    #[arg(long, value_enum, default_value_t = ClientsMode::Auto)]
    pub clients: ClientsMode,
    /// Executable run as the client process (default: this one).
    #[arg(long, hide = true)]
    pub clients_exe: Option<PathBuf>,
    /// Worker threads of the service's runtime (default: one per CPU).
    #[arg(long)]
    pub server_threads: Option<usize>,
    /// Worker threads of the clients' runtime (default: one per CPU).
    #[arg(long)]
    pub client_threads: Option<usize>,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            rooms: DEFAULT_ROOMS,
            subscribers: DEFAULT_SUBSCRIBERS,
            seconds: DEFAULT_SECONDS,
            rate_hz: None,
            log: None,
            json: None,
            data_dir: None,
            aligned: false,
            drain_timeout_s: DEFAULT_DRAIN_TIMEOUT_S,
            clients: ClientsMode::Auto,
            clients_exe: None,
            server_threads: None,
            client_threads: None,
        }
    }
}

impl FanoutArgs {
    fn validate(&self) -> Result<(), FanoutError> {
        let bad = |opt: &'static str, why: String| Err(FanoutError::Args(opt, why));
        if !(1..=1024).contains(&self.rooms) {
            return bad("rooms", format!("{} is outside 1..=1024", self.rooms));
        }
        if !(1..=100_000).contains(&self.subscribers) {
            return bad(
                "subscribers",
                format!("{} is outside 1..=100000", self.subscribers),
            );
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= 3600.0) {
            return bad("seconds", format!("{} is outside (0, 3600]", self.seconds));
        }
        if let Some(r) = self.rate_hz
            && !(r.is_finite() && r > 0.0 && r * self.seconds <= 1e6)
        {
            return bad(
                "rate-hz",
                format!("{r} must be positive, at most 1e6 events per room in all"),
            );
        }
        if !(self.drain_timeout_s.is_finite() && self.drain_timeout_s > 0.0) {
            return bad(
                "drain-timeout-s",
                format!("{} must be positive", self.drain_timeout_s),
            );
        }
        for (opt, v) in [
            ("server-threads", self.server_threads),
            ("client-threads", self.client_threads),
        ] {
            if v == Some(0) {
                return bad(opt, "must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Errors that stop a run (a run that completes with lost or repeated messages is not an error
/// here: see [`FanoutReport::correct`]).
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("--{0}: {1}")]
    Args(&'static str, String),
    #[error("no --log given and the default caption log {0} is missing")]
    NoLog(PathBuf),
    #[error(transparent)]
    Log(#[from] LogReadError),
    #[error("caption log {0} has no events")]
    EmptyLog(PathBuf),
    #[error("open files: {0}")]
    FdLimit(String),
    #[error("service configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("room {room}: {source}")]
    Room { room: String, source: RoomError },
    #[error("cannot mint a token: {0}")]
    Mint(#[from] MintError),
    #[error("publishing into room {room}: {reason}")]
    Publish { room: String, reason: String },
    #[error("{failed} of {total} clients could not connect; first: {first}")]
    Connect {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("client process: {0}")]
    ClientProcess(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FanoutError {
    move |source| FanoutError::Io {
        what: what.into(),
        source,
    }
}

// -------------------------------------------------------------------------------------------------
// Report

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of samples in microseconds (sorted in place).
    fn of_us(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1000.0
        };
        Self {
            samples: samples.len() as u64,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// CPU seconds over the measured window, by part.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuSplit {
    /// The service's runtime threads: HTTP, WebSocket writes, subscription queues.
    pub service_runtime_s: f64,
    /// The publisher threads: serialisation, room log append + fsync, fan-out into the queues.
    pub publishers_s: f64,
    /// The benchmark's clients: WebSocket reads, JSON parse, checks (whole child process when
    /// the clients run in one).
    pub clients_s: f64,
    /// The rest of the bench's process (main thread, exited threads).
    pub other_s: f64,
}

/// Figures of one run (also the JSON written by `--json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FanoutReport {
    pub rooms: usize,
    pub subscribers_per_room: usize,
    pub connections: usize,
    /// Where the clients ran.
    pub clients_process: ClientsMode,
    /// The replayed log and how.
    pub log: String,
    pub seconds: f64,
    pub rate_hz: Option<f64>,
    pub aligned: bool,
    pub events_per_room: usize,
    pub finals_per_room: usize,
    /// Caption messages published, all rooms.
    pub messages_published: u64,
    pub finals_published: u64,
    /// Caption messages that reached a client (all kinds), all clients.
    pub messages_delivered: u64,
    /// `messages_published × subscribers`: what would arrive with no partial ever coalesced.
    pub messages_expected: u64,
    pub delivered_ratio: f64,
    /// Finals received exactly once and in order, all clients.
    pub finals_delivered: u64,
    pub finals_expected: u64,
    pub finals_delivered_ratio: f64,
    /// Added delivery latency of every caption message (receive − publish call), ms.
    pub latency_ms: Percentiles,
    /// The same, finals only (they include the room log's fsync).
    pub final_latency_ms: Percentiles,
    pub partial_latency_ms: Percentiles,
    /// Duration of `Hub::publish` calls, ms.
    pub publish_call_final_ms: Percentiles,
    pub publish_call_partial_ms: Percentiles,
    /// How late publishes started compared with their schedule, ms.
    pub publish_schedule_lag_ms: Percentiles,
    /// Deliveries by second of publish: whether late messages are spread or bunched.
    pub timeline: Vec<TimelineSecond>,
    /// Time to open every connection, seconds.
    pub connect_s: f64,
    /// Measured window: first publish to every client having every final, seconds.
    pub wall_s: f64,
    /// CPU of everything (service, publishers, clients) over the window.
    pub cpu_s: f64,
    pub cpu_s_per_wall_s: f64,
    pub cpu_s_per_1000_delivered: f64,
    /// CPU of the service alone (its runtime and the publishers standing in for the sources).
    pub service_cpu_s: f64,
    pub service_cpu_s_per_wall_s: f64,
    pub service_cpu_s_per_1000_delivered: f64,
    pub cpu_split: CpuSplit,
    /// Peak resident memory of the bench's process (service and publishers; clients too when
    /// they run in it).
    pub peak_rss_mb: f64,
    /// Peak resident memory of the client process, when there is one.
    pub clients_peak_rss_mb: Option<f64>,
    /// From the hubs' counters.
    pub slow_consumer_closes: u64,
    pub coalesced_partials: u64,
    pub dropped_partials: u64,
    /// Client reconnections (after slow-consumer closes).
    pub reconnects: u64,
    /// Exactly-once / order violations seen by the clients (all counted, first few listed).
    pub violations: u64,
    pub violation_examples: Vec<String>,
    pub target_p99_ms: f64,
    pub target_met: bool,
    /// 1-minute load average before and after the run (the machine may be shared).
    pub loadavg_before: f64,
    pub loadavg_after: f64,
    pub cpus: usize,
    pub server_threads: usize,
    pub client_threads: usize,
    pub data_dir: String,
}

impl FanoutReport {
    /// Every client got every final of its room exactly once, in order, and nothing else broke.
    pub fn correct(&self) -> bool {
        self.violations == 0 && self.finals_delivered == self.finals_expected
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("{k:<34} {v}\n"));
        s.push_str(&format!(
            "bench-fanout: {} rooms × {} subscribers = {} WebSockets ({}); {} events/room ({} finals) in {:.1} s{}\n",
            self.rooms,
            self.subscribers_per_room,
            self.connections,
            match self.clients_process {
                ClientsMode::Child => "clients in a child process",
                _ => "clients in-process",
            },
            self.events_per_room,
            self.finals_per_room,
            self.seconds,
            if self.aligned { ", rooms aligned" } else { "" }
        ));
        s.push_str(&format!(
            "log {}\n{} CPUs, load average {:.2} before, {:.2} after; service threads {}, client threads {}\n",
            self.log,
            self.cpus,
            self.loadavg_before,
            self.loadavg_after,
            self.server_threads,
            self.client_threads
        ));
        line(
            &mut s,
            "connect (all clients)",
            format!("{:.2} s", self.connect_s),
        );
        line(
            &mut s,
            "messages published",
            format!(
                "{} ({} finals)",
                self.messages_published, self.finals_published
            ),
        );
        line(
            &mut s,
            "messages delivered / expected",
            format!(
                "{} / {} = {:.4}",
                self.messages_delivered, self.messages_expected, self.delivered_ratio
            ),
        );
        line(
            &mut s,
            "finals delivered / expected",
            format!(
                "{} / {} = {:.4}",
                self.finals_delivered, self.finals_expected, self.finals_delivered_ratio
            ),
        );
        let p = |x: &Percentiles| {
            format!(
                "p50 {:7.2}  p95 {:7.2}  p99 {:7.2}  max {:7.2}",
                x.p50, x.p95, x.p99, x.max
            )
        };
        line(&mut s, "added latency, all (ms)", p(&self.latency_ms));
        line(
            &mut s,
            "added latency, finals (ms)",
            p(&self.final_latency_ms),
        );
        line(
            &mut s,
            "added latency, partials (ms)",
            p(&self.partial_latency_ms),
        );
        line(
            &mut s,
            "Hub::publish call, finals (ms)",
            p(&self.publish_call_final_ms),
        );
        line(
            &mut s,
            "Hub::publish call, partials (ms)",
            p(&self.publish_call_partial_ms),
        );
        line(
            &mut s,
            "publish schedule lag (ms)",
            p(&self.publish_schedule_lag_ms),
        );
        line(
            &mut s,
            "CPU s per wall s, all",
            format!(
                "{:.3} ({:.2} s CPU in {:.2} s)",
                self.cpu_s_per_wall_s, self.cpu_s, self.wall_s
            ),
        );
        line(
            &mut s,
            "CPU s per wall s, service",
            format!("{:.3}", self.service_cpu_s_per_wall_s),
        );
        line(
            &mut s,
            "CPU s per 1000 delivered",
            format!(
                "{:.4} all, {:.4} service",
                self.cpu_s_per_1000_delivered, self.service_cpu_s_per_1000_delivered
            ),
        );
        let c = &self.cpu_split;
        line(
            &mut s,
            "CPU split (s)",
            format!(
                "service runtime {:.2}, publishers {:.2}, clients {:.2}, other {:.2}",
                c.service_runtime_s, c.publishers_s, c.clients_s, c.other_s
            ),
        );
        line(
            &mut s,
            "peak RSS",
            match self.clients_peak_rss_mb {
                Some(c) => format!("{:.1} MB service, {c:.1} MB clients", self.peak_rss_mb),
                None => format!("{:.1} MB (service and clients)", self.peak_rss_mb),
            },
        );
        line(
            &mut s,
            "slow-consumer closes",
            format!(
                "{} (reconnects {}; partials coalesced {}, dropped {})",
                self.slow_consumer_closes,
                self.reconnects,
                self.coalesced_partials,
                self.dropped_partials
            ),
        );
        let late: Vec<String> = self
            .timeline
            .iter()
            .filter(|t| t.over_target > 0)
            .map(|t| {
                format!(
                    "{:.0}s: {} (max {:.0} ms)",
                    t.t_s.max(0.0),
                    t.over_target,
                    t.max_ms
                )
            })
            .collect();
        line(
            &mut s,
            &format!("over {} ms, by second", self.target_p99_ms),
            if late.is_empty() {
                "none".into()
            } else {
                late.join(", ")
            },
        );
        line(&mut s, "violations", self.violations.to_string());
        for v in &self.violation_examples {
            s.push_str(&format!("  {v}\n"));
        }
        line(
            &mut s,
            &format!("target p99 <= {} ms", self.target_p99_ms),
            if self.target_met { "met" } else { "NOT met" }.into(),
        );
        s
    }
}

// -------------------------------------------------------------------------------------------------
// The replay script

/// The events every room receives and when, relative to the room's start.
#[derive(Debug)]
struct Script {
    events: Vec<CaptionEvent>,
    at: Vec<Duration>,
    /// Indexes (into `events`) of the finals.
    finals: Vec<usize>,
}

impl Script {
    fn new(log: &[CaptionEvent], seconds: f64, rate_hz: Option<f64>) -> Script {
        let n = log.len();
        let (events, at): (Vec<CaptionEvent>, Vec<f64>) = match rate_hz {
            Some(rate) => {
                let count = ((rate * seconds).round() as usize).max(1);
                (0..count)
                    .map(|k| {
                        let mut ev = log[k % n].clone();
                        let pass = k / n;
                        if pass > 0 {
                            // later passes are new segments, not revisions of the first pass's
                            ev.segment_id = format!("{}-p{pass}", ev.segment_id);
                        }
                        (ev, k as f64 / rate)
                    })
                    .unzip()
            }
            None => {
                let t0 = log[0].emitted_at;
                let span = log.iter().map(|e| e.emitted_at).fold(t0, f64::max) - t0;
                let mut last = 0.0f64;
                log.iter()
                    .enumerate()
                    .map(|(k, ev)| {
                        let t = if span > 0.0 && ev.emitted_at.is_finite() {
                            ((ev.emitted_at - t0) / span * seconds).max(last)
                        } else {
                            k as f64 * seconds / n as f64
                        };
                        last = t;
                        (ev.clone(), t)
                    })
                    .unzip()
            }
        };
        let events: Vec<CaptionEvent> = events
            .into_iter()
            .enumerate()
            .map(|(k, mut ev)| {
                ev.seq = k as u64;
                ev
            })
            .collect();
        let finals = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_final())
            .map(|(k, _)| k)
            .collect();
        Script {
            events,
            at: at.into_iter().map(Duration::from_secs_f64).collect(),
            finals,
        }
    }

    fn load(log: &Path, seconds: f64, rate_hz: Option<f64>) -> Result<Script, FanoutError> {
        let events = read_log(log)?;
        if events.is_empty() {
            return Err(FanoutError::EmptyLog(log.to_path_buf()));
        }
        Ok(Script::new(&events, seconds, rate_hz))
    }

    /// Mean interval between two events of a room.
    fn mean_gap(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds / self.events.len() as f64)
    }
}

/// `CLOCK_MONOTONIC`, seconds: one clock for every process of the machine.
fn monotonic_s() -> f64 {
    clock_s(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread, seconds.
fn thread_cpu_s() -> f64 {
    clock_s(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

// -------------------------------------------------------------------------------------------------
// Clients

/// What the clients need to know (sent as one JSON line to a client process).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientPlan {
    addr: SocketAddr,
    log: PathBuf,
    seconds: f64,
    rate_hz: Option<f64>,
    threads: usize,
    rooms: Vec<PlanRoom>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanRoom {
    id: String,
    /// The room's last seq before the run: event `k` gets seq `base + 1 + k`.
    base: u64,
    /// One token per subscriber.
    tokens: Vec<String>,
}

impl ClientPlan {
    fn connections(&self) -> usize {
        self.rooms.iter().map(|r| r.tokens.len()).sum()
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientOutcome {
    partial_latencies_us: Vec<u32>,
    final_latencies_us: Vec<u32>,
    /// By whole `CLOCK_MONOTONIC` second of publish, in order (seqs, hence publish instants,
    /// increase along a connection).
    timeline: Vec<(i64, Second)>,
    delivered: u64,
    finals_in_order: u64,
    reconnects: u64,
    violations: u64,
    examples: Vec<String>,
}

impl ClientOutcome {
    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.examples.len() < 3 {
            self.examples.push(what);
        }
    }
}

/// Deliveries of the messages published in one second.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Second {
    messages: u64,
    over_target: u64,
    max_us: u32,
}

impl Second {
    fn add(&mut self, other: Second) {
        self.messages += other.messages;
        self.over_target += other.over_target;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// Deliveries of the messages published in one second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelineSecond {
    /// Start of the second, relative to the first publish, s.
    pub t_s: f64,
    /// Caption messages delivered.
    pub messages: u64,
    /// Of which later than the target p99.
    pub over_target: u64,
    /// Largest added latency, ms.
    pub max_ms: f64,
}

/// What all the clients saw (sent back as one JSON line by a client process).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ClientsSummary {
    delivered: u64,
    finals_in_order: u64,
    reconnects: u64,
    violations: u64,
    examples: Vec<String>,
    latency_ms: Percentiles,
    final_latency_ms: Percentiles,
    partial_latency_ms: Percentiles,
    /// By whole `CLOCK_MONOTONIC` second of publish.
    timeline: Vec<(i64, Second)>,
    /// CPU of the client process over its window (child process only).
    cpu_s: Option<f64>,
    peak_rss_mb: Option<f64>,
}

impl ClientsSummary {
    fn of(outcomes: Vec<ClientOutcome>) -> Self {
        let mut s = ClientsSummary::default();
        let (mut all, mut fin, mut part) = (Vec::new(), Vec::new(), Vec::new());
        let mut timeline: BTreeMap<i64, Second> = BTreeMap::new();
        for o in outcomes {
            for (t, sec) in &o.timeline {
                timeline.entry(*t).or_default().add(*sec);
            }
            s.delivered += o.delivered;
            s.finals_in_order += o.finals_in_order;
            s.reconnects += o.reconnects;
            s.violations += o.violations;
            for e in o.examples {
                if s.examples.len() < MAX_REPORTED_VIOLATIONS {
                    s.examples.push(e);
                }
            }
            all.extend_from_slice(&o.partial_latencies_us);
            all.extend_from_slice(&o.final_latencies_us);
            part.extend(o.partial_latencies_us);
            fin.extend(o.final_latencies_us);
        }
        s.latency_ms = Percentiles::of_us(&mut all);
        s.final_latency_ms = Percentiles::of_us(&mut fin);
        s.partial_latency_ms = Percentiles::of_us(&mut part);
        s.timeline = timeline.into_iter().collect();
        s
    }
}

/// The fields of a server message a client needs (the rest is skipped by serde).
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    event: Option<ProbeEvent>,
}

#[derive(Deserialize)]
struct ProbeEvent {
    #[serde(rename = "type")]
    kind: EventKind,
    segment_id: String,
    /// The publish instant, `CLOCK_MONOTONIC` seconds (see the module doc).
    emitted_at: f64,
}

/// The exactly-once and ordering check of one client, across reconnections.
struct Check<'a> {
    script: &'a Script,
    base: u64,
    /// Index into `script.finals` of the next expected final.
    next_final: usize,
    /// Highest caption seq received (reset to the resume point on reconnection).
    last_seq: u64,
    /// Seq of the last final received.
    last_final_seq: u64,
}

impl<'a> Check<'a> {
    fn new(script: &'a Script, base: u64) -> Self {
        Check {
            script,
            base,
            next_final: 0,
            last_seq: base,
            last_final_seq: base,
        }
    }

    fn complete(&self) -> bool {
        self.next_final == self.script.finals.len()
    }

    fn seq_of(&self, event: usize) -> u64 {
        self.base + 1 + event as u64
    }

    /// Checks one text message received at `now` (`CLOCK_MONOTONIC` seconds).
    fn on_text(&mut self, text: &str, now: f64, out: &mut ClientOutcome, who: &str) {
        let probe: Probe = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                return out.violation(format!("{who}: unreadable message ({e}): {text:.80}"));
            }
        };
        match probe.kind.as_str() {
            "caption" => {}
            "hello" | "resumed" | "participants" => return,
            other => return out.violation(format!("{who}: unexpected `{other}`: {text:.120}")),
        }
        let (Some(seq), Some(ev)) = (probe.seq, probe.event) else {
            return out.violation(format!("{who}: caption without seq or event: {text:.80}"));
        };
        let k = seq.checked_sub(self.base + 1).map(|k| k as usize);
        let Some(k) = k.filter(|k| *k < self.script.events.len()) else {
            return out.violation(format!("{who}: caption seq {seq} was never published"));
        };
        let us = ((now - ev.emitted_at) * 1e6).clamp(0.0, u32::MAX as f64) as u32;
        out.delivered += 1;
        let second = ev.emitted_at.floor() as i64;
        let one = Second {
            messages: 1,
            over_target: u64::from(us as f64 > TARGET_P99_MS * 1000.0),
            max_us: us,
        };
        match out.timeline.iter_mut().rev().find(|(t, _)| *t <= second) {
            Some((t, sec)) if *t == second => sec.add(one),
            _ => {
                out.timeline.push((second, one));
                out.timeline.sort_unstable_by_key(|(t, _)| *t);
            }
        }
        if seq <= self.last_seq {
            out.violation(format!(
                "{who}: caption seq {seq} after seq {} (out of order or repeated)",
                self.last_seq
            ));
        }
        self.last_seq = self.last_seq.max(seq);
        let published = &self.script.events[k];
        if ev.segment_id != published.segment_id || ev.kind != published.kind {
            out.violation(format!(
                "{who}: seq {seq} is {:?} {} but {:?} {} was published",
                ev.kind, ev.segment_id, published.kind, published.segment_id
            ));
        }
        if ev.kind != EventKind::Final {
            out.partial_latencies_us.push(us);
            return;
        }
        out.final_latencies_us.push(us);
        let finals = &self.script.finals;
        match finals.get(self.next_final).map(|&f| self.seq_of(f)) {
            Some(expected) if expected == seq => {
                self.next_final += 1;
                out.finals_in_order += 1;
            }
            Some(expected) if seq > expected => {
                let missing: Vec<u64> = finals[self.next_final..]
                    .iter()
                    .map(|&f| self.seq_of(f))
                    .take_while(|&s| s < seq)
                    .collect();
                out.violation(format!(
                    "{who}: final seq {seq} arrived but finals {missing:?} never did"
                ));
                self.next_final += missing.len();
                if finals.get(self.next_final).map(|&f| self.seq_of(f)) == Some(seq) {
                    self.next_final += 1;
                    out.finals_in_order += 1;
                }
            }
            _ => out.violation(format!(
                "{who}: final seq {seq} again (last final was seq {})",
                self.last_final_seq
            )),
        }
        self.last_final_seq = self.last_final_seq.max(seq);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(
    addr: SocketAddr,
    room: &str,
    token: &str,
    from_seq: Option<u64>,
) -> Result<Ws, String> {
    let query = from_seq.map(|n| format!("?{}={n}", crate::protocol::RESUME_QUERY_PARAM));
    let url = format!("ws://{addr}/rooms/{room}/ws{}", query.unwrap_or_default());
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let protocols = format!("{SUBPROTOCOL}, {WS_PROTOCOL_TOKEN_PREFIX}{token}");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&protocols).map_err(|e| e.to_string())?,
    );
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let selected = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if selected != Some(SUBPROTOCOL) {
        return Err(format!("the server selected subprotocol {selected:?}"));
    }
    Ok(ws)
}

/// How one connection ended.
enum End {
    Closed { code: u16, reason: String },
    Gone(String),
    Aborted,
}

async fn read_until_end(
    ws: &mut Ws,
    check: &mut Check<'_>,
    out: &mut ClientOutcome,
    complete: &AtomicUsize,
    abort: &mut tokio::sync::watch::Receiver<bool>,
    who: &str,
) -> End {
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = abort.wait_for(|v| *v) => return End::Aborted,
        };
        let now = monotonic_s();
        match msg {
            Some(Ok(Message::Text(text))) => {
                let was_complete = check.complete();
                check.on_text(text.as_str(), now, out, who);
                if !was_complete && check.complete() {
                    complete.fetch_add(1, Ordering::Release);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => End::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.as_str().to_owned(),
                    },
                    None => End::Closed {
                        code: 1005,
                        reason: String::new(),
                    },
                };
            }
            Some(Ok(Message::Binary(_))) => out.violation(format!("{who}: binary frame")),
            // pings are answered by tungstenite on the next read
            Some(Ok(_)) => {}
            Some(Err(e)) => return End::Gone(e.to_string()),
            None => return End::Gone("stream ended without a close frame".into()),
        }
    }
}

/// `... from_seq=N` → N.
fn resume_point(reason: &str) -> Option<u64> {
    reason.rsplit_once("from_seq=")?.1.trim().parse().ok()
}

/// What every client task shares.
struct FleetShared {
    script: Script,
    addr: SocketAddr,
    gate: tokio::sync::Semaphore,
    /// Clients whose first connection succeeded or failed.
    ready: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// Clients that have every final of their room.
    complete: AtomicUsize,
}

async fn client(
    fleet: Arc<FleetShared>,
    room: String,
    base: u64,
    index: usize,
    token: String,
    mut abort: tokio::sync::watch::Receiver<bool>,
) -> ClientOutcome {
    let who = format!("{room}#{index}");
    let mut out = ClientOutcome::default();
    let mut check = Check::new(&fleet.script, base);
    let first = {
        let _permit = fleet.gate.acquire().await;
        tokio::time::timeout(CONNECT_TIMEOUT, connect(fleet.addr, &room, &token, None)).await
    };
    let failed = |why: String| {
        let mut f = fleet.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.push(format!("{who}: {why}"));
        fleet.ready.fetch_add(1, Ordering::Release);
    };
    let mut ws = match first {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            failed(e);
            return out;
        }
        Err(_) => {
            failed(format!("no connection within {CONNECT_TIMEOUT:?}"));
            return out;
        }
    };
    fleet.ready.fetch_add(1, Ordering::Release);
    loop {
        let end = read_until_end(
            &mut ws,
            &mut check,
            &mut out,
            &fleet.complete,
            &mut abort,
            &who,
        )
        .await;
        match end {
            End::Closed { code, reason } if code == close::SLOW_CONSUMER => {
                // what a real client does: reconnect and resume where the server says
                let from = resume_point(&reason).unwrap_or(check.last_final_seq);
                out.reconnects += 1;
                check.last_seq = from;
                match connect(fleet.addr, &room, &token, Some(from)).await {
                    Ok(fresh) => ws = fresh,
                    Err(e) => {
                        out.violation(format!("{who}: cannot resume from seq {from}: {e}"));
                        break;
                    }
                }
            }
            End::Closed { code, reason }
                if code == close::GOING_AWAY && reason == "room closed" =>
            {
                break;
            }
            End::Closed { code, reason } => {
                out.violation(format!("{who}: closed by the server: {code} {reason}"));
                break;
            }
            End::Gone(e) => {
                out.violation(format!("{who}: connection lost: {e}"));
                break;
            }
            End::Aborted => break,
        }
    }
    if !check.complete() {
        let missing = fleet.script.finals.len() - check.next_final;
        out.violation(format!("{who}: {missing} finals never arrived"));
    }
    out
}

/// The clients of a run, on their own runtime.
struct Fleet {
    rt: tokio::runtime::Runtime,
    shared: Arc<FleetShared>,
    tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>,
    abort: tokio::sync::watch::Sender<bool>,
    total: usize,
}

impl Fleet {
    /// Starts connecting every client of `plan`.
    fn start(plan: &ClientPlan, script: Script) -> Result<Fleet, FanoutError> {
        let rt = runtime(CLIENT_THREAD, plan.threads)?;
        let shared = Arc::new(FleetShared {
            script,
            addr: plan.addr,
            gate: tokio::sync::Semaphore::new(CONNECT_CONCURRENCY),
            ready: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
            complete: AtomicUsize::new(0),
        });
        let (abort, abort_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::with_capacity(plan.connections());
        for room in &plan.rooms {
            for (i, token) in room.tokens.iter().enumerate() {
                tasks.push(rt.spawn(client(
                    shared.clone(),
                    room.id.clone(),
                    room.base,
                    i,
                    token.clone(),
                    abort_rx.clone(),
                )));
            }
        }
        Ok(Fleet {
            rt,
            shared,
            total: tasks.len(),
            tasks,
            abort,
        })
    }

    /// Waits until every client is connected or failed; returns the failures.
    fn wait_ready(&self) -> Vec<String> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while self.shared.ready.load(Ordering::Acquire) < self.total && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut failures = self
            .shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ready = self.shared.ready.load(Ordering::Acquire);
        if ready < self.total {
            failures.push(format!(
                "{} clients not connected after {SETUP_TIMEOUT:?}",
                self.total - ready
            ));
        }
        failures
    }

    fn complete(&self) -> bool {
        self.shared.complete.load(Ordering::Acquire) >= self.total
    }

    /// Once the rooms are closed: waits for every client to see it (bounded), then collects.
    fn finish(self) -> Vec<ClientOutcome> {
        let Fleet {
            rt, tasks, abort, ..
        } = self;
        let outcomes = rt.block_on(async {
            let all = futures_util::future::join_all(tasks);
            tokio::pin!(all);
            let done = tokio::select! {
                d = &mut all => d,
                _ = tokio::time::sleep(CLOSE_TIMEOUT) => {
                    let _ = abort.send(true);
                    all.await
                }
            };
            done.into_iter().map(|r| r.unwrap_or_default()).collect()
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        outcomes
    }

    fn abort(self) {
        let _ = self.abort.send(true);
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// The clients in a child process; line protocol on its stdin/stdout:
/// parent → `plan <json>`; child → `ready <json failures>`, then `complete` once every client
/// has every final; parent closes the rooms, then stdin; child → `summary <json>` and exits.
struct ChildFleet {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    complete: bool,
}

impl ChildFleet {
    fn start(exe: &Path, plan: &ClientPlan) -> Result<ChildFleet, FanoutError> {
        let mut child = Command::new(exe)
            .arg(CLIENTS_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_err(format!(
                "starting {} {CLIENTS_SUBCOMMAND}",
                exe.display()
            )))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("fanout-child-out".into())
            .spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(io_err("starting the client process reader"))?;
        let text = serde_json::to_string(plan).expect("the plan always serialises");
        writeln!(stdin, "plan {text}").map_err(io_err("writing the plan to the client process"))?;
        stdin
            .flush()
            .map_err(io_err("writing the plan to the client process"))?;
        Ok(ChildFleet {
            child,
            stdin: Some(stdin),
            lines,
            complete: false,
        })
    }

    fn expect(&mut self, tag: &str, timeout: Duration) -> Result<String, FanoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(tag) {
                        return Ok(rest.trim_start().to_string());
                    }
                    if line == "complete" {
                        self.complete = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(FanoutError::ClientProcess(format!(
                        "no `{tag}` within {timeout:?}"
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(FanoutError::ClientProcess(format!(
                        "exited ({status}) before `{tag}`"
                    )));
                }
            }
        }
    }

    fn wait_ready(&mut self) -> Result<Vec<String>, FanoutError> {
        let text = self.expect("ready", SETUP_TIMEOUT + Duration::from_secs(30))?;
        serde_json::from_str(&text).map_err(|e| FanoutError::ClientProcess(format!("ready: {e}")))
    }

    fn complete(&mut self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            if line == "complete" {
                self.complete = true;
            }
        }
        self.complete
    }

    fn finish(mut self) -> Result<ClientsSummary, FanoutError> {
        drop(self.stdin.take());
        let text = self.expect("summary", CLOSE_TIMEOUT + Duration::from_secs(30))?;
        let _ = self.child.wait();
        serde_json::from_str(&text).map_err(|e| FanoutError::ClientProcess(format!("summary: {e}")))
    }

    fn abort(mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Clients {
    InProcess(Fleet),
    Child(ChildFleet),
}

impl Clients {
    fn wait_ready(&mut self) -> Result<Vec<String>, FanoutError> {
        match self {
            Clients::InProcess(f) => Ok(f.wait_ready()),
            Clients::Child(c) => c.wait_ready(),
        }
    }

    fn complete(&mut self) -> bool {
        match self {
            Clients::InProcess(f) => f.complete(),
            Clients::Child(c) => c.complete(),
        }
    }

    fn finish(self) -> Result<ClientsSummary, FanoutError> {
        match self {
            Clients::InProcess(f) => Ok(ClientsSummary::of(f.finish())),
            Clients::Child(c) => c.finish(),
        }
    }

    fn abort(self) {
        match self {
            Clients::InProcess(f) => f.abort(),
            Clients::Child(c) => c.abort(),
        }
    }
}

/// Body of `soustitre bench-fanout-clients`: the clients of a run in their own process (see
/// `ChildFleet` for the protocol). Not meant to be run by hand.
pub fn clients_process_main() -> Result<(), FanoutError> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .map_err(io_err("reading the plan"))?;
    let plan: ClientPlan = first
        .strip_prefix("plan ")
        .ok_or_else(|| FanoutError::ClientProcess("expected `plan <json>` on stdin".into()))
        .and_then(|t| {
            serde_json::from_str(t).map_err(|e| FanoutError::ClientProcess(format!("plan: {e}")))
        })?;
    raise_fd_limit(plan.connections() as u64 + FD_HEADROOM)?;
    let script = Script::load(&plan.log, plan.seconds, plan.rate_hz)?;
    let fleet = Fleet::start(&plan, script)?;
    let failures = fleet.wait_ready();
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(format!(
        "ready {}",
        serde_json::to_string(&failures).expect("strings serialise")
    ));
    let cpu0 = crate::run::cpu_seconds();
    // stdin's end means: the rooms are closed (or the bench gave up)
    let closed = Arc::new(AtomicBool::new(false));
    {
        let closed = closed.clone();
        std::thread::Builder::new()
            .name("fanout-stdin".into())
            .spawn(move || {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
                closed.store(true, Ordering::Release);
            })
            .map_err(io_err("starting the stdin reader"))?;
    }
    let mut cpu_s = None;
    while !closed.load(Ordering::Acquire) {
        if cpu_s.is_none() && fleet.complete() {
            cpu_s = Some(crate::run::cpu_seconds() - cpu0);
            say("complete".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu_s = cpu_s.unwrap_or_else(|| crate::run::cpu_seconds() - cpu0);
    let mut summary = ClientsSummary::of(fleet.finish());
    summary.cpu_s = Some(cpu_s);
    summary.peak_rss_mb = Some(crate::run::peak_rss_bytes() as f64 / 1e6);
    say(format!(
        "summary {}",
        serde_json::to_string(&summary).expect("the summary always serialises")
    ));
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// Publishers

#[derive(Debug, Default)]
struct PublisherOutcome {
    call_final_us: Vec<u32>,
    call_partial_us: Vec<u32>,
    lag_us: Vec<u32>,
    cpu_s: f64,
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Replays the script into one room's hub from `start`; each event's `emitted_at` becomes its
/// publish instant.
fn publish_room(
    hub: Hub,
    script: Arc<Script>,
    base: u64,
    start: Instant,
) -> Result<PublisherOutcome, String> {
    let cpu0 = thread_cpu_s();
    let mut out = PublisherOutcome::default();
    for (k, event) in script.events.iter().enumerate() {
        let due = start + script.at[k];
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut event = event.clone();
        let final_ = event.is_final();
        let t0 = Instant::now();
        event.emitted_at = monotonic_s();
        let seq = hub.publish(event).map_err(|e| e.to_string())?;
        let call = t0.elapsed();
        if seq != base + 1 + k as u64 {
            return Err(format!(
                "event {k} got seq {seq}, expected {} (another publisher?)",
                base + 1 + k as u64
            ));
        }
        if final_ {
            out.call_final_us.push(us(call));
        } else {
            out.call_partial_us.push(us(call));
        }
        out.lag_us.push(us(t0.saturating_duration_since(due)));
    }
    out.cpu_s = thread_cpu_s() - cpu0;
    Ok(out)
}

// -------------------------------------------------------------------------------------------------
// Process helpers

fn nofile_limit() -> Option<libc::rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0).then_some(rl)
}

/// Raises the soft (and if needed and allowed the hard) open-file limit to `needed`.
fn raise_fd_limit(needed: u64) -> Result<(), FanoutError> {
    let Some(rl) = nofile_limit() else {
        return Err(FanoutError::FdLimit(format!(
            "getrlimit: {}",
            std::io::Error::last_os_error()
        )));
    };
    if rl.rlim_cur >= needed {
        return Ok(());
    }
    let want = libc::rlimit {
        rlim_cur: needed,
        rlim_max: rl.rlim_max.max(needed),
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        return Err(FanoutError::FdLimit(format!(
            "{needed} are needed but the limit is {} (hard {}) and cannot be raised: {}; lower --rooms/--subscribers or raise `ulimit -Hn`",
            rl.rlim_cur,
            rl.rlim_max,
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// CPU seconds of every live thread of this process, by thread name (`/proc/self/task/*/stat`).
fn cpu_by_thread_name() -> BTreeMap<String, f64> {
    // SAFETY: sysconf has no preconditions.
    let tick = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let mut by_name = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state ...`: comm may hold spaces and parentheses, so split at the last ')'
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // after the comm: state is field 3 of stat(5) (index 0 here), utime 14, stime 15
        *by_name.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / tick;
    }
    by_name
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn random_hex(bytes: usize) -> Result<String, FanoutError> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(hex::encode(buf))
}

/// The data directory of a run; a temporary one is removed on drop.
struct DataDir {
    path: PathBuf,
    remove: bool,
}

impl DataDir {
    fn new(given: Option<&Path>) -> Result<DataDir, FanoutError> {
        let (path, remove) = match given {
            Some(p) => (p.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                let name = format!("soustitre-fanout-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(DataDir { path, remove })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The service configuration of a run: loopback listeners on free ports, HS256, the room
/// limits raised to the run's size, no rooms (they are created afterwards, without sources).
/// Everything else (queues, pings) keeps the service's defaults.
fn service_config(
    args: &FanoutArgs,
    secret: &str,
    data_dir: &Path,
) -> Result<ServiceConfig, FanoutError> {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[auth]
algorithm = "HS256"
hs256_secret = {secret}

[storage]
data_dir = {data_dir}

[limits]
max_rooms = {rooms}
max_subscribers_per_room = {subs}
"#,
        secret = toml_string(secret),
        data_dir = toml_string(&data_dir.to_string_lossy()),
        rooms = args.rooms,
        subs = args
            .subscribers
            .max(crate::config::DEFAULT_MAX_SUBSCRIBERS_PER_ROOM),
    );
    Ok(ServiceConfig::from_toml(
        &text,
        None,
        &Env::new(),
        &CliOverrides::default(),
    )?)
}

fn default_log() -> PathBuf {
    crate::paths::project_root()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(DEFAULT_LOG)
}

fn runtime(name: &'static str, threads: usize) -> Result<tokio::runtime::Runtime, FanoutError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(io_err(format!("starting the {name} runtime")))
}

/// Where the clients will run: in-process if the open-file limit can cover both ends of every
/// connection, else in a child process (each process then needs one socket per connection).
fn choose_clients_mode(mode: ClientsMode, connections: u64) -> Result<ClientsMode, FanoutError> {
    let both = 2 * connections + FD_HEADROOM;
    let one = connections + FD_HEADROOM;
    match mode {
        ClientsMode::InProcess => raise_fd_limit(both).map(|_| ClientsMode::InProcess),
        ClientsMode::Child => raise_fd_limit(one).map(|_| ClientsMode::Child),
        ClientsMode::Auto => match raise_fd_limit(both) {
            Ok(()) => Ok(ClientsMode::InProcess),
            Err(_) => raise_fd_limit(one).map(|_| ClientsMode::Child),
        },
    }
}

// -------------------------------------------------------------------------------------------------
// The run

/// Runs the benchmark and writes `--json` if asked. Returns the figures; check
/// [`FanoutReport::correct`] (a run that lost or repeated a final still returns its report).
pub fn run(args: &FanoutArgs) -> Result<FanoutReport, FanoutError> {
    args.validate()?;
    let log_path = match &args.log {
        Some(p) => p.clone(),
        None => {
            let p = default_log();
            if !p.is_file() {
                return Err(FanoutError::NoLog(p));
            }
            p
        }
    };
    let script = Arc::new(Script::load(&log_path, args.seconds, args.rate_hz)?);
    let connections = args.rooms * args.subscribers;
    let mode = choose_clients_mode(args.clients, connections as u64)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_threads = args.server_threads.unwrap_or(cpus);
    let client_threads = args.client_threads.unwrap_or(cpus);
    let loadavg_before = loadavg();

    let data = DataDir::new(args.data_dir.as_deref())?;
    let secret = random_hex(32)?;
    let config = service_config(args, &secret, &data.path)?;
    let server_rt = runtime(SERVER_THREAD, server_threads)?;
    let service = server_rt.block_on(Service::start(config, None, false))?;

    // Rooms, without sources: the publishers below stand in for them.
    let mut rooms = Vec::with_capacity(args.rooms);
    let mut plan = ClientPlan {
        addr: service.public_addr,
        log: log_path.clone(),
        seconds: args.seconds,
        rate_hz: args.rate_hz,
        threads: client_threads,
        rooms: Vec::with_capacity(args.rooms),
    };
    let setup = (|| {
        for r in 0..args.rooms {
            let id = format!("fanout-{r:04}");
            let cfg = RoomConfig {
                id: id.clone(),
                stream: crate::stream::StreamSettings::default(),
                sources: Vec::new(),
                diarize: false,
                diarization: Default::default(),
                janus: None,
                whep: None,
                livekit: None,
            };
            let room = server_rt
                .block_on(service.state.create_room(cfg))
                .map_err(|source| FanoutError::Room {
                    room: id.clone(),
                    source,
                })?;
            let mut tokens = Vec::with_capacity(args.subscribers);
            for c in 0..args.subscribers {
                let mut claims = Claims::expiring_in(id.clone(), TOKEN_TTL_S);
                claims.sub = Some(format!("fanout-client-{c}"));
                tokens.push(mint_hs256(secret.as_bytes(), &claims)?);
            }
            plan.rooms.push(PlanRoom {
                id,
                base: room.hub().last_seq(),
                tokens,
            });
            rooms.push(room);
        }
        Ok::<(), FanoutError>(())
    })();
    let shutdown = |service: Service, rooms: &[Arc<crate::server::Room>]| {
        for room in rooms {
            room.close();
        }
        let _ = server_rt
            .block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, service.shutdown()).await });
    };
    if let Err(e) = setup {
        shutdown(service, &rooms);
        return Err(e);
    }

    // Clients: every one connected before anything is published.
    let connect_start = Instant::now();
    let started = match mode {
        ClientsMode::Child => {
            let exe = match &args.clients_exe {
                Some(p) => Ok(p.clone()),
                None => std::env::current_exe().map_err(io_err("locating this executable")),
            };
            exe.and_then(|exe| ChildFleet::start(&exe, &plan))
                .map(Clients::Child)
        }
        _ => Script::load(&log_path, args.seconds, args.rate_hz)
            .and_then(|s| Fleet::start(&plan, s))
            .map(Clients::InProcess),
    };
    let mut clients = match started {
        Ok(c) => c,
        Err(e) => {
            shutdown(service, &rooms);
            return Err(e);
        }
    };
    let failures = match clients.wait_ready() {
        Ok(f) => f,
        Err(e) => {
            clients.abort();
            shutdown(service, &rooms);
            return Err(e);
        }
    };
    let connect_s = connect_start.elapsed().as_secs_f64();
    if !failures.is_empty() {
        clients.abort();
        shutdown(service, &rooms);
        return Err(FanoutError::Connect {
            failed: failures.len(),
            total: connections,
            first: failures[0].clone(),
        });
    }

    // Publish.
    let gap = script.mean_gap(args.seconds);
    let cpu0 = crate::run::cpu_seconds();
    let threads0 = cpu_by_thread_name();
    let start = Instant::now() + Duration::from_millis(50);
    let start_mono = monotonic_s() + 0.05;
    let mut publishers = Vec::with_capacity(args.rooms);
    let mut spawn_error = None;
    for (r, room) in rooms.iter().enumerate() {
        let offset = if args.aligned {
            Duration::ZERO
        } else {
            gap.mul_f64(r as f64 / args.rooms as f64)
        };
        let (hub, script, base) = (room.hub().clone(), script.clone(), plan.rooms[r].base);
        match std::thread::Builder::new()
            .name(PUBLISHER_THREAD.into())
            .spawn(move || publish_room(hub, script, base, start + offset))
        {
            Ok(h) => publishers.push(h),
            Err(e) => {
                spawn_error = Some(io_err("starting a publisher thread")(e));
                break;
            }
        }
    }
    let mut pubs = PublisherOutcome::default();
    let mut publish_error = None;
    for (r, h) in publishers.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(o)) => {
                pubs.call_final_us.extend(o.call_final_us);
                pubs.call_partial_us.extend(o.call_partial_us);
                pubs.lag_us.extend(o.lag_us);
                pubs.cpu_s += o.cpu_s;
            }
            Ok(Err(reason)) => {
                publish_error.get_or_insert((r, reason));
            }
            Err(_) => {
                publish_error.get_or_insert((r, "the publisher thread panicked".into()));
            }
        }
    }
    if let Some(e) = spawn_error {
        clients.abort();
        shutdown(service, &rooms);
        return Err(e);
    }
    if let Some((r, reason)) = publish_error {
        clients.abort();
        shutdown(service, &rooms);
        return Err(FanoutError::Publish {
            room: plan.rooms[r].id.clone(),
            reason,
        });
    }

    // Delivery: wait until every client has every final (or the drain timeout).
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout_s);
    while !clients.complete() && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let end = Instant::now();
    let cpu_s_here = crate::run::cpu_seconds() - cpu0;
    let threads1 = cpu_by_thread_name();
    let wall_s = end.saturating_duration_since(start).as_secs_f64();
    let loadavg_after = loadavg();

    // Hub counters, then close the rooms: each client sees "room closed" after everything
    // queued for it, so a late duplicate would still be caught.
    let (mut slow, mut coalesced, mut dropped) = (0, 0, 0);
    for room in &rooms {
        let st = room.hub_stats();
        slow += st.slow_consumer_closes;
        coalesced += st.coalesced_partials;
        dropped += st.dropped_partials;
    }
    for room in &rooms {
        room.close();
    }
    let summary = clients.finish();
    shutdown(service, &rooms);
    drop(server_rt);
    let summary = summary?;

    // Figures.
    let events = script.events.len();
    let finals_per_room = script.finals.len();
    let published = (events * args.rooms) as u64;
    let expected = published * args.subscribers as u64;
    let finals_expected = (finals_per_room * connections) as u64;
    let delivered = summary.delivered;
    let delta = |name: &str| {
        threads1.get(name).copied().unwrap_or(0.0) - threads0.get(name).copied().unwrap_or(0.0)
    };
    let service_runtime_s = delta(SERVER_THREAD);
    let (clients_s, cpu_s, service_cpu_s) = match summary.cpu_s {
        // the clients had their own process: everything here is the service's
        Some(c) => (c, cpu_s_here + c, cpu_s_here),
        None => {
            let c = delta(CLIENT_THREAD);
            (c, cpu_s_here, (cpu_s_here - c).max(0.0))
        }
    };
    let per_1000 = |cpu: f64| cpu / (delivered.max(1) as f64 / 1000.0);
    let report = FanoutReport {
        rooms: args.rooms,
        subscribers_per_room: args.subscribers,
        connections,
        clients_process: mode,
        log: log_path.display().to_string(),
        seconds: args.seconds,
        rate_hz: args.rate_hz,
        aligned: args.aligned,
        events_per_room: events,
        finals_per_room,
        messages_published: published,
        finals_published: (finals_per_room * args.rooms) as u64,
        messages_delivered: delivered,
        messages_expected: expected,
        delivered_ratio: delivered as f64 / expected.max(1) as f64,
        finals_delivered: summary.finals_in_order,
        finals_expected,
        finals_delivered_ratio: summary.finals_in_order as f64 / finals_expected.max(1) as f64,
        target_met: summary.latency_ms.p99 <= TARGET_P99_MS,
        latency_ms: summary.latency_ms,
        final_latency_ms: summary.final_latency_ms,
        partial_latency_ms: summary.partial_latency_ms,
        publish_call_final_ms: Percentiles::of_us(&mut pubs.call_final_us),
        publish_call_partial_ms: Percentiles::of_us(&mut pubs.call_partial_us),
        publish_schedule_lag_ms: Percentiles::of_us(&mut pubs.lag_us),
        timeline: summary
            .timeline
            .iter()
            .map(|(t, sec)| TimelineSecond {
                t_s: ((*t as f64 - start_mono) * 100.0).round() / 100.0,
                messages: sec.messages,
                over_target: sec.over_target,
                max_ms: sec.max_us as f64 / 1000.0,
            })
            .collect(),
        connect_s,
        wall_s,
        cpu_s,
        cpu_s_per_wall_s: cpu_s / wall_s.max(1e-9),
        cpu_s_per_1000_delivered: per_1000(cpu_s),
        service_cpu_s,
        service_cpu_s_per_wall_s: service_cpu_s / wall_s.max(1e-9),
        service_cpu_s_per_1000_delivered: per_1000(service_cpu_s),
        cpu_split: CpuSplit {
            service_runtime_s,
            publishers_s: pubs.cpu_s,
            clients_s,
            other_s: (service_cpu_s - service_runtime_s - pubs.cpu_s).max(0.0),
        },
        peak_rss_mb: crate::run::peak_rss_bytes() as f64 / 1e6,
        clients_peak_rss_mb: summary.peak_rss_mb,
        slow_consumer_closes: slow,
        coalesced_partials: coalesced,
        dropped_partials: dropped,
        reconnects: summary.reconnects,
        violations: summary.violations,
        violation_examples: summary.examples,
        target_p99_ms: TARGET_P99_MS,
        loadavg_before,
        loadavg_after,
        cpus,
        server_threads,
        client_threads,
        data_dir: data.path.display().to_string(),
    };
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(&report).expect("the report always serialises");
        std::fs::write(path, text + "\n").map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, segment: &str, emitted_at: f64) -> CaptionEvent {
        CaptionEvent {
            seq: 0,
            kind,
            segment_id: segment.into(),
            revision: 0,
            track: "mix".into(),
            speaker: None,
            language: None,
            text: "x".into(),
            stable_text: String::new(),
            start: 0.0,
            end: 1.0,
            emitted_at,
            words: vec![],
        }
    }

    #[test]
    fn the_log_timing_is_scaled_to_the_run_and_rates_cycle_the_log() {
        let log = vec![
            event(EventKind::Partial, "s0", 1.0),
            event(EventKind::Final, "s0", 3.0),
            event(EventKind::Final, "s1", 5.0),
        ];
        let s = Script::new(&log, 10.0, None);
        assert_eq!(s.at, [0.0, 5.0, 10.0].map(Duration::from_secs_f64));
        assert_eq!(s.finals, [1, 2]);
        let s = Script::new(&log, 2.0, Some(4.0));
        assert_eq!(s.events.len(), 8);
        assert_eq!(s.events[4].segment_id, "s0-p1");
        assert_eq!(
            s.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(s.finals, [1, 2, 4, 5, 7]);
        assert_eq!(s.at[7], Duration::from_secs_f64(1.75));
    }

    fn caption(seq: u64, kind: &str, segment: &str) -> String {
        serde_json::json!({"type": "caption", "room": "r", "seq": seq,
            "event": {"type": kind, "segment_id": segment, "emitted_at": 1.0}})
        .to_string()
    }

    #[test]
    fn the_check_flags_missing_repeated_and_reordered_finals() {
        let log = vec![
            event(EventKind::Partial, "s0", 1.0),
            event(EventKind::Final, "s0", 2.0),
            event(EventKind::Final, "s1", 3.0),
            event(EventKind::Final, "s2", 4.0),
        ];
        let script = Script::new(&log, 1.0, None);
        let now = 1.002;

        // all in order, the partial coalesced away: fine
        let (mut c, mut o) = (Check::new(&script, 10), ClientOutcome::default());
        for (seq, kind, seg) in [
            (12, "final", "s0"),
            (13, "final", "s1"),
            (14, "final", "s2"),
        ] {
            c.on_text(&caption(seq, kind, seg), now, &mut o, "t");
        }
        assert!(c.complete());
        assert_eq!((o.violations, o.finals_in_order, o.delivered), (0, 3, 3));
        assert_eq!(o.final_latencies_us, [2000, 2000, 2000]);

        // a final missing, one repeated
        let (mut c, mut o) = (Check::new(&script, 10), ClientOutcome::default());
        for (seq, kind, seg) in [
            (11, "partial", "s0"),
            (13, "final", "s1"),
            (13, "final", "s1"),
        ] {
            c.on_text(&caption(seq, kind, seg), now, &mut o, "t");
        }
        assert!(!c.complete());
        assert_eq!(o.finals_in_order, 1);
        assert_eq!(o.violations, 3, "{:?}", o.examples);

        // wrong segment at a seq, and a seq never published
        let (mut c, mut o) = (Check::new(&script, 10), ClientOutcome::default());
        c.on_text(&caption(12, "final", "s9"), now, &mut o, "t");
        c.on_text(&caption(99, "final", "s0"), now, &mut o, "t");
        assert_eq!(o.violations, 2, "{:?}", o.examples);
    }

    #[test]
    fn resume_point_is_read_from_the_close_reason() {
        assert_eq!(
            resume_point("slow consumer: resume with from_seq=42"),
            Some(42)
        );
        assert_eq!(resume_point("room closed"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        let p = Percentiles::of_us(&mut v);
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.samples),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(Percentiles::of_us(&mut []), Percentiles::default());
    }
}
