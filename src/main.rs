//! `soustitre`: the command-line edge. Errors are printed as one line and exit non-zero.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use soustitre::captions::{
    CaptionEvent, CueSettings, JsonlWriter, TerminalRenderer, build_cues, to_srt, to_vtt,
};
use soustitre::diarize::{DiarizeSettings, speakers_of, write_rttm};
use soustitre::engine::{DEFAULT_MODEL, Engine};
use soustitre::media::DecodeSettings;
use soustitre::models::ModelStore;
use soustitre::stream::{LanguageSetting, StreamSettings};

#[derive(Parser)]
#[command(
    name = "soustitre",
    version,
    about = "Live captions for WebRTC meetings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Caption an audio file or URI: live captions on the terminal, event log and subtitles.
    Transcribe(TranscribeArgs),
    /// Fetch and verify models from the mirror.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Run every file with references in a corpus directory and print WER, latency and cost.
    Bench(soustitre::bench::BenchArgs),
    /// Caption delivery benchmark: the real service in-process, rooms × WebSocket subscribers
    /// over loopback, a caption log replayed into every room; added latency, CPU, memory.
    BenchFanout(soustitre::bench_fanout::FanoutArgs),
    /// The client side of `bench-fanout` in its own process (plan on stdin; internal).
    #[command(hide = true)]
    BenchFanoutClients,
    /// Run the caption service: rooms, caption WebSockets, viewer, operator API.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Service configuration file (TOML; see soustitre.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also open a `demo` room captioning the dev corpus meeting's three speaker tracks in a loop,
    /// and print a viewer URL with a token (a random HS256 secret is made if none is set).
    #[arg(long)]
    demo: bool,
    /// Public listener (caption WebSockets, viewer, exports), IP:port.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Operator listener (room API, metrics), IP:port.
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// Directory for room logs.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch (if missing) and verify model bundles.
    Fetch {
        /// Every bundle of the manifest.
        #[arg(long)]
        all: bool,
        /// Bundles to fetch (default: the recognizer and the VAD).
        bundles: Vec<String>,
    },
    /// Re-hash model bundles already in the model directory.
    Verify {
        #[arg(long)]
        all: bool,
        bundles: Vec<String>,
    },
    /// List the bundles of the manifest and where models are kept.
    List,
}

/// Options shared by everything that captions.
#[derive(Args, Clone)]
pub struct CaptionOpts {
    /// Language: en, fr, ... or auto (detect, then lock per stream).
    #[arg(long, default_value = "auto")]
    lang: LanguageSetting,
    /// Recognition model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Stream settings file (TOML, the fields of the streaming policy).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Do not emit partials (finals only).
    #[arg(long)]
    no_partials: bool,
    /// Audio time between partials, ms.
    #[arg(long)]
    partial_interval_ms: Option<u32>,
    /// Silence that ends a segment, ms.
    #[arg(long)]
    endpoint_silence_ms: Option<u32>,
    /// Longest segment, seconds.
    #[arg(long)]
    max_segment_s: Option<f32>,
}

impl CaptionOpts {
    fn stream_settings(&self) -> Result<StreamSettings> {
        let mut s = match &self.settings {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<StreamSettings>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
            }
            None => StreamSettings::default(),
        };
        s.language = self.lang.clone();
        if self.no_partials {
            s.partials = false;
        }
        if let Some(v) = self.partial_interval_ms {
            s.partial_interval_ms = v;
        }
        if let Some(v) = self.endpoint_silence_ms {
            s.endpoint_silence_ms = v;
        }
        if let Some(v) = self.max_segment_s {
            s.max_segment_s = v;
        }
        s.validate()?;
        Ok(s)
    }
}

#[derive(Args)]
struct TranscribeArgs {
    /// Audio file path or URI (anything GStreamer decodes: WAV, Ogg/Opus, MP3, MP4...).
    input: String,
    #[command(flatten)]
    caption: CaptionOpts,
    /// Pace the input at real time, as a live track arrives.
    #[arg(long)]
    realtime: bool,
    /// Track name in the events.
    #[arg(long, default_value = "mix")]
    track: String,
    /// Write the caption event log (JSONL) here.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Write WebVTT subtitles here.
    #[arg(long)]
    vtt: Option<PathBuf>,
    /// Write SRT subtitles here.
    #[arg(long)]
    srt: Option<PathBuf>,
    /// Characters per subtitle line.
    #[arg(long, default_value_t = soustitre::captions::DEFAULT_MAX_LINE_CHARS)]
    max_line_chars: usize,
    /// Lines per subtitle cue.
    #[arg(long, default_value_t = soustitre::captions::DEFAULT_MAX_LINES)]
    max_lines: usize,
    /// Print nothing on the terminal.
    #[arg(long, short)]
    quiet: bool,
    /// Label speakers inside the track (several voices on one input).
    #[arg(long)]
    diarize: bool,
    /// Write the speaker turns (RTTM) here; needs --diarize.
    #[arg(long, requires = "diarize")]
    rttm: Option<PathBuf>,
    /// Most speakers found (with --diarize).
    #[arg(long, requires = "diarize")]
    max_speakers: Option<u32>,
    /// Cosine similarity under which a voice is new (with --diarize).
    #[arg(long, requires = "diarize")]
    speaker_similarity: Option<f32>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOUSTITRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // one line: the error itself, without the usage block
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("soustitre: {first} (see `soustitre --help`)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("soustitre: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Transcribe(args) => transcribe(args),
        Command::Models(cmd) => models(cmd),
        Command::Serve(args) => serve(args),
        Command::Bench(args) => {
            let report = soustitre::bench::run(&args)?;
            println!("{}", report.table());
            Ok(())
        }
        Command::BenchFanout(args) => {
            let report = soustitre::bench_fanout::run(&args)?;
            println!("{}", report.table());
            if !report.correct() {
                bail!(
                    "delivery is not exactly-once: {} violations, {} of {} finals delivered in order",
                    report.violations,
                    report.finals_delivered,
                    report.finals_expected
                );
            }
            Ok(())
        }
        Command::BenchFanoutClients => Ok(soustitre::bench_fanout::clients_process_main()?),
    }
}

fn transcribe(args: TranscribeArgs) -> Result<()> {
    let settings = args.caption.stream_settings()?;
    let cue_settings = CueSettings {
        max_line_chars: args.max_line_chars,
        max_lines: args.max_lines,
        ..Default::default()
    };
    cue_settings.validate()?;
    for out in [&args.events, &args.vtt, &args.srt, &args.rttm]
        .into_iter()
        .flatten()
    {
        check_writable(out)?;
    }
    let diarize = if args.diarize {
        let mut d = DiarizeSettings::default();
        if let Some(v) = args.max_speakers {
            d.max_speakers = v;
        }
        if let Some(v) = args.speaker_similarity {
            d.new_speaker_similarity = v;
        }
        d.validate()?;
        Some(d)
    } else {
        None
    };
    let engine = if args.diarize {
        Engine::prepare_default_with_diarization(&args.caption.model)?
    } else {
        Engine::prepare_default(&args.caption.model)?
    };
    let decode = DecodeSettings {
        realtime: args.realtime,
        ..Default::default()
    };
    let mut log = match &args.events {
        Some(p) => {
            Some(JsonlWriter::create(p).with_context(|| format!("cannot write {}", p.display()))?)
        }
        None => None,
    };
    let mut term = (!args.quiet).then(TerminalRenderer::stdout);
    let mut finals: Vec<CaptionEvent> = Vec::new();
    let mut io_error: Option<std::io::Error> = None;
    let interrupt = soustitre::run::Interrupt::default();
    watch_interrupts(interrupt.clone());
    let report = soustitre::run::caption_input_interruptible(
        &args.input,
        &decode,
        &engine,
        &settings,
        diarize.as_ref(),
        &args.track,
        &interrupt,
        soustitre::run::EventClock::Wall,
        |ev| {
            if let Some(log) = log.as_mut()
                && let Err(e) = log.write_event(ev)
            {
                io_error.get_or_insert(e);
            }
            if let Some(t) = term.as_mut() {
                let _ = t.handle(ev);
            }
            if ev.is_final() {
                finals.push(ev.clone());
            }
        },
    )?;
    if let Some(t) = term.as_mut() {
        let _ = t.finish();
    }
    if let Some(e) = io_error {
        bail!("writing the event log failed: {e}");
    }
    if let Some(mut log) = log {
        log.flush()?;
    }
    let cues = build_cues(&finals, &cue_settings)?;
    if let Some(p) = &args.vtt {
        std::fs::write(p, to_vtt(&cues))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.srt {
        std::fs::write(p, to_srt(&cues))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.rttm {
        // who spoke when: the diarizer's labels over the voiced audio (the same labels as the
        // captions, also where the recognizer found no words)
        let turns = &report.turns;
        let name = Path::new(&args.input)
            .file_stem()
            .map_or_else(|| "recording".into(), |s| s.to_string_lossy().to_string());
        let f =
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?;
        let mut w = std::io::BufWriter::new(f);
        write_rttm(&mut w, &name, turns)
            .and_then(|_| std::io::Write::flush(&mut w))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if args.diarize {
        eprintln!(
            "speakers: {} (embedding {:.2} s for {} windows, finals waited {:.2} s)",
            speakers_of(&finals).len(),
            report.stats.diarize_s,
            report.stats.diarize_windows,
            report.stats.diarize_wait_s
        );
    }
    // a ratio over less than a second of audio says nothing: the process's start-up dominates
    let compute = if report.audio_s >= 1.0 {
        format!("{:.2} s per audio second", report.cpu_s / report.audio_s)
    } else {
        format!("{:.2} s", report.cpu_s)
    };
    eprintln!(
        "{} finals, {:.1} s of audio in {:.1} s; compute {compute} (ASR {:.2} s, VAD {:.2} s)",
        report.stats.finals, report.audio_s, report.wall_s, report.stats.asr_s, report.stats.vad_s
    );
    if interrupt.requested() {
        // everything heard was captioned and written; the exit status says it was cut short
        std::process::exit(130);
    }
    Ok(())
}

/// Ctrl-C (or SIGTERM) during a transcription: the input ends where it is, the open caption
/// becomes a final and the files are written. A second Ctrl-C exits at once.
fn watch_interrupts(interrupt: soustitre::run::Interrupt) {
    let spawned = std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                    _ = term.recv() => {}
                }
                eprintln!(
                    "\nsoustitre: interrupted: finishing the open caption and writing the outputs (Ctrl-C again to quit at once)"
                );
                interrupt.trigger();
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("no interrupt handling: {e}");
    }
}

fn check_writable(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

fn models(cmd: ModelsCommand) -> Result<()> {
    let store = ModelStore::open_default()?;
    let pick = |all: bool, bundles: Vec<String>| -> Vec<String> {
        if all {
            store
                .manifest()
                .bundle_names()
                .map(str::to_string)
                .collect()
        } else if bundles.is_empty() {
            vec![
                DEFAULT_MODEL.to_string(),
                soustitre::engine::VAD_BUNDLE.to_string(),
            ]
        } else {
            bundles
        }
    };
    match cmd {
        ModelsCommand::Fetch { all, bundles } => {
            for b in pick(all, bundles) {
                let paths = store.ensure(&b)?;
                println!(
                    "{b}: {} files ok in {}",
                    paths.files().len(),
                    store.dir().display()
                );
            }
        }
        ModelsCommand::Verify { all, bundles } => {
            for b in pick(all, bundles) {
                let paths = store.verify(&b)?;
                println!("{b}: {} files verified", paths.files().len());
            }
        }
        ModelsCommand::List => {
            println!("model directory: {}", store.dir().display());
            match store.mirror() {
                Some(m) => println!("mirror: {m}"),
                None => println!("mirror: none (set SOUSTITRE_MODEL_MIRROR)"),
            }
            for b in store.manifest().bundle_names() {
                let files = store.manifest().bundle_files(b)?;
                let bytes: u64 = files.iter().map(|f| f.bytes).sum();
                println!(
                    "  {b:<18} {:>3} files {:>7.1} MB",
                    files.len(),
                    bytes as f64 / 1e6
                );
            }
        }
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// The HS256 key, when tokens are HS256 (for minting viewer tokens).
fn hs256_key(auth: &soustitre::auth::AuthSettings) -> Option<Vec<u8>> {
    if auth.algorithm != soustitre::auth::JwtAlgorithm::HS256 {
        return None;
    }
    if let Some(s) = &auth.hs256_secret {
        return Some(s.expose().as_bytes().to_vec());
    }
    let text = std::fs::read_to_string(auth.secret_file.as_ref()?).ok()?;
    Some(text.trim_end().as_bytes().to_vec())
}

fn serve(args: ServeArgs) -> Result<()> {
    use soustitre::config::{CliOverrides, ENV_JWT_SECRET, ServiceConfig, process_env};
    let mut env = process_env();
    let has_key =
        |env: &soustitre::config::Env| env.get(ENV_JWT_SECRET).is_some_and(|v| !v.is_empty());
    if args.demo && !has_key(&env) {
        // a demo without a configured key gets a fresh one for this run (the file's key wins)
        let file_has_key = match &args.config {
            Some(p) => std::fs::read_to_string(p)
                .map(|t| {
                    t.contains("hs256_secret")
                        || t.contains("secret_file")
                        || t.contains("public_key")
                })
                .unwrap_or(false),
            None => false,
        };
        if !file_has_key {
            env.insert(ENV_JWT_SECRET.to_string(), random_hex(32)?);
        }
    }
    let cli = CliOverrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        data_dir: args.data_dir.clone(),
    };
    let mut config = ServiceConfig::load_with(args.config.as_deref(), &env, &cli)?;
    if args.demo {
        let corpus = soustitre::server::default_corpus()
            .context("--demo needs the dev corpus at ../shared/corpus/dev beside the checkout")?;
        if !config.rooms.iter().any(|r| r.id == "demo") {
            config.rooms.push(soustitre::server::demo_room(&corpus));
        }
    }
    let mint = hs256_key(&config.auth);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("soustitre-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let service = soustitre::server::Service::start(config, mint.clone(), args.demo).await?;
        println!("listening on http://{}", service.public_addr);
        println!("admin on http://{}", service.admin_addr);
        if args.demo {
            match &mint {
                Some(key) => {
                    let claims = soustitre::auth::Claims::expiring_in("demo", 12 * 3600);
                    let token = soustitre::auth::mint_hs256(key, &claims)?;
                    println!(
                        "viewer: http://{}/viewer/?room=demo&token={token}",
                        service.public_addr
                    );
                }
                None => println!(
                    "viewer: http://{}/viewer/?room=demo&token=<a token for room demo>",
                    service.public_addr
                ),
            }
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: flushing the rooms' last finals");
        service.shutdown().await;
        Ok::<(), anyhow::Error>(())
    })
}
