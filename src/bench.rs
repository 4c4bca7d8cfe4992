//! `soustitre bench`: runs every audio file with a reference in a corpus directory through the
//! streaming captioner (at real-time pace by default, as live tracks arrive) and through two
//! offline decodes with the same model, then scores them with the corpus scorers
//! (`score/wer.py`, `score/latency.py`) and prints a table and JSON.
//!
//! The two offline references separate what streaming costs from what segmentation costs:
//! * *whole-segment* ([`segment_offline_transcript`]): the same VAD gating, each segment decoded
//!   once, after its end, as long as Whisper's window allows: no partials, hence no joints and,
//!   with `auto`, no language settled by partials (the stream's detection decides), and no forced
//!   cut before [`OFFLINE_WINDOW_S`]; no diarization. Streaming WER over this one is the cost of
//!   the streaming policy; it is the ratio the targets speak of.
//! * *whole-file* ([`offline_transcript`]): no VAD gating, the file in windows of at most
//!   [`OFFLINE_WINDOW_S`] cut at the quietest frames. It also shows what decoding from the start
//!   of the speech instead of from the start of the file changes.
//!
//! Figures: WER (streaming and both offline, and the ratios) and partial and final latency p50/p95
//! as `latency.py` defines them, over all files and per group (`en`, `fr`, ... by the language
//! of each file's description, `mixed` when it gives several, `real` for recorded speech), so
//! that a figure pooled over the corpus does not hide a language or kind of speech; real-time
//! factor (inference seconds per audio second), process CPU seconds per audio second, and peak
//! resident memory; and the steadiness of the partials (flicker and corrections by the final,
//! see [`crate::captions::stability`]).
//!
//! With `--audio-clock`, the files are decoded as fast as possible, no partial is skipped and
//! every event is stamped with the audio consumed when it was emitted
//! ([`crate::run::EventClock::Audio`]): the latency figures are then the streaming policy's
//! alone, without decode time, and the same from run to run whatever the machine's load.
//!
//! With `--diarize`, every file is captioned with speaker diarization and, for files with an
//! `.rttm` reference, the finals' speaker turns are scored with `score/der.py` (collar ±0.25 s):
//! DER, speaker-count error, label latency (speech end → the final carrying its label:
//! `emitted_at − end` of each labelled final) and diarization CPU per audio second.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::asr::{DecodeOptions, Language};
use crate::captions::{CaptionEvent, JsonlWriter, Stability, stability};
use crate::diarize::{DiarizeSettings, speakers_of, write_rttm};
use crate::engine::{DEFAULT_MODEL, Engine, EngineError};
use crate::media::{AudioSource, DecodeSettings, MediaEvent};
use crate::run::{EventClock, Interrupt, RunError, caption_input_interruptible, peak_rss_bytes};
use crate::stream::{LanguageSetting, StreamSettings};
use crate::vad::FRAME_SAMPLES;

/// Longest offline window, seconds (Whisper's context is 30 s).
pub const OFFLINE_WINDOW_S: f64 = 28.0;
/// The offline window is cut at the quietest frame of its last this-many seconds.
const OFFLINE_CUT_SEARCH_S: f64 = 5.0;

/// Options of `soustitre bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Corpus directory: every `.wav` with a `.stm` or `.txt` reference beside it is run.
    pub corpus: PathBuf,
    /// Recognition model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for the per-file caption logs and offline transcripts.
    #[arg(long, default_value = "out/bench")]
    pub out_dir: PathBuf,
    /// Directory holding wer.py and latency.py (default: `score/` beside the corpus's parent).
    #[arg(long)]
    pub score_dir: Option<PathBuf>,
    /// Only files whose relative path contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Decode as fast as possible instead of at real-time pace (latency figures are then
    /// meaningless).
    #[arg(long)]
    pub fast: bool,
    /// Decode as fast as possible, skip no partial and stamp each event with the audio
    /// consumed when it was emitted (decode time not counted): the latency figures are those
    /// of the streaming policy alone, identical from run to run whatever the load (to compare
    /// settings). The WER is the real-time run's; RTF and CPU are those of a fast run.
    #[arg(long, conflicts_with = "fast")]
    pub audio_clock: bool,
    /// Stream settings file (TOML).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Caption with speaker diarization and score it on files with an `.rttm` reference.
    #[arg(long)]
    pub diarize: bool,
    /// Diarization settings file (TOML, the fields of `[defaults.diarization]`); needs --diarize.
    #[arg(long, requires = "diarize")]
    pub diarize_settings: Option<PathBuf>,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("corpus {0}: {1}")]
    Corpus(PathBuf, String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{file}: {source}")]
    Run { file: String, source: RunError },
    #[error("scorer {script}: {detail}")]
    Scorer { script: String, detail: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("settings: {0}")]
    Settings(String),
}

/// One corpus file.
#[derive(Debug, Clone)]
struct Item {
    name: String,
    wav: PathBuf,
    reference: PathBuf,
    language: Option<String>,
    rttm: Option<PathBuf>,
}

/// Figures of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    pub name: String,
    pub language: Option<String>,
    pub audio_s: f64,
    pub ref_words: u64,
    pub stream_errors: u64,
    pub stream_hyp_words: u64,
    pub stream_wer: Option<f64>,
    /// Whole-segment offline decode (see the module docs).
    pub segment_errors: u64,
    pub segment_wer: Option<f64>,
    /// Whole-file offline decode.
    pub offline_errors: u64,
    pub offline_wer: Option<f64>,
    pub rtf: f64,
    pub cpu_per_audio_s: f64,
    pub partials: u64,
    pub finals: u64,
    pub skipped_partials: u64,
    /// Steadiness of the partials.
    pub stability: Stability,
    /// Diarization figures (with `--diarize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diarization: Option<DiarFigures>,
}

/// Diarization figures of one file.
#[derive(Debug, Clone, Serialize)]
pub struct DiarFigures {
    /// DER (percent, collar ±0.25 s), when the reference has speech.
    pub der: Option<f64>,
    pub ref_speakers: usize,
    pub hyp_speakers: usize,
    /// |found − reference| speakers.
    pub speaker_count_error: usize,
    /// Speaker-embedding seconds per audio second (diarization thread).
    pub cpu_per_audio_s: f64,
    /// Seconds finals waited for the diarization thread.
    pub wait_s: f64,
    /// `emitted_at − end` of each labelled final, seconds.
    pub label_latency_s: Vec<f64>,
}

/// Diarization figures over the files with an RTTM reference.
#[derive(Debug, Clone, Serialize)]
pub struct DiarSummary {
    pub files: usize,
    /// Mean DER over the files with reference speech, percent.
    pub mean_der: Option<f64>,
    pub max_der: Option<f64>,
    /// Sum of |found − reference| speakers.
    pub speaker_count_error: usize,
    pub label_latency_p50: Option<f64>,
    pub label_latency_p95: Option<f64>,
    /// Speaker-embedding seconds per audio second.
    pub cpu_per_audio_s: f64,
}

/// Pooled WER of a group of files.
#[derive(Debug, Clone, Serialize)]
pub struct Pooled {
    pub group: String,
    pub files: usize,
    pub ref_words: u64,
    pub stream_wer: f64,
    /// Whole-segment offline WER, percent.
    pub segment_wer: f64,
    /// Whole-file offline WER, percent.
    pub offline_wer: f64,
    /// Streaming errors over whole-segment offline errors: the cost of streaming.
    pub segment_ratio: f64,
    /// Streaming errors over whole-file offline errors.
    pub file_ratio: f64,
    /// `latency.py --json` over the group's streaming logs (null before it is scored).
    pub latency: serde_json::Value,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub realtime: bool,
    /// Events stamped with the audio consumed (`--audio-clock`).
    pub audio_clock: bool,
    pub cores: usize,
    pub files: Vec<FileFigures>,
    pub pooled: Vec<Pooled>,
    /// `latency.py --json` over the streaming logs of the speech files.
    pub latency: serde_json::Value,
    pub audio_s: f64,
    pub rtf: f64,
    pub cpu_per_audio_s: f64,
    pub peak_rss_mb: f64,
    /// Steadiness of the partials over the speech files.
    pub stability: Stability,
    /// Share of the words partials show that the next partial rewrites, percent.
    pub flicker_percent: Option<f64>,
    /// Word edits from partials to their final, per partial word, percent.
    pub final_mismatch_percent: Option<f64>,
    /// Diarization summary (with `--diarize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diarization: Option<DiarSummary>,
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    let items = discover(&args.corpus, args.filter.as_deref())?;
    if items.is_empty() {
        return Err(BenchError::Corpus(
            args.corpus.clone(),
            "no .wav file with a .stm or .txt reference".into(),
        ));
    }
    let score_dir = match &args.score_dir {
        Some(d) => d.clone(),
        None => find_score_dir(&args.corpus).ok_or_else(|| {
            BenchError::Corpus(
                args.corpus.clone(),
                "no score/wer.py found; pass --score-dir".into(),
            )
        })?,
    };
    let base_settings = match &args.settings {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| BenchError::Io(p.clone(), e))?;
            toml::from_str::<StreamSettings>(&text)
                .map_err(|e| BenchError::Settings(e.message().to_string()))?
        }
        None => StreamSettings::default(),
    };
    base_settings
        .validate()
        .map_err(|e| BenchError::Settings(e.to_string()))?;
    std::fs::create_dir_all(&args.out_dir).map_err(|e| BenchError::Io(args.out_dir.clone(), e))?;
    let engine = if args.diarize {
        Engine::prepare_default_with_diarization(&args.model)?
    } else {
        Engine::prepare_default(&args.model)?
    };
    let diarize = match (&args.diarize_settings, args.diarize) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).map_err(|e| BenchError::Io(p.clone(), e))?;
            let d = toml::from_str::<DiarizeSettings>(&text)
                .map_err(|e| BenchError::Settings(e.message().to_string()))?;
            d.validate()
                .map_err(|e| BenchError::Settings(e.to_string()))?;
            Some(d)
        }
        (None, true) => Some(DiarizeSettings::default()),
        (None, false) => None,
    };
    let mut files = Vec::new();
    let mut logs = Vec::new();
    let mut pairs_stream = Vec::new();
    let mut pairs_offline = Vec::new();
    let (mut total_audio, mut total_asr, mut total_cpu) = (0.0, 0.0, 0.0);
    for item in &items {
        eprintln!("bench: {} ...", item.name);
        let mut settings = base_settings.clone();
        if let Some(lang) = &item.language
            && engine.whisper_knows(lang)
        {
            settings.language = LanguageSetting::Fixed(lang.clone());
        }
        let stem = item
            .name
            .replace('/', "__")
            .trim_end_matches(".wav")
            .to_string();
        let log_path = args.out_dir.join(format!("{stem}.jsonl"));
        let mut log =
            JsonlWriter::create(&log_path).map_err(|e| BenchError::Io(log_path.clone(), e))?;
        let decode = DecodeSettings {
            realtime: !args.fast && !args.audio_clock,
            ..Default::default()
        };
        let clock = if args.audio_clock {
            EventClock::Audio
        } else {
            EventClock::Wall
        };
        let input = item.wav.to_string_lossy().to_string();
        let mut write_err = None;
        let mut events = Vec::new();
        let report = caption_input_interruptible(
            &input,
            &decode,
            &engine,
            &settings,
            diarize.as_ref(),
            "mix",
            &Interrupt::default(),
            clock,
            |ev: &CaptionEvent| {
                if let Err(e) = log.write_event(ev) {
                    write_err.get_or_insert(e);
                }
                events.push(ev.clone());
            },
        )
        .map_err(|source| BenchError::Run {
            file: item.name.clone(),
            source,
        })?;
        if let Some(e) = write_err {
            return Err(BenchError::Io(log_path, e));
        }
        log.flush()
            .map_err(|e| BenchError::Io(log_path.clone(), e))?;
        // the two offline references, each written beside the caption log and scored like it
        let offline = |suffix: &str, text: Result<String, RunError>| {
            let text = text.map_err(|source| BenchError::Run {
                file: item.name.clone(),
                source,
            })?;
            let path = args.out_dir.join(format!("{stem}.{suffix}.txt"));
            std::fs::write(&path, format!("{text}\n"))
                .map_err(|e| BenchError::Io(path.clone(), e))?;
            Ok::<_, BenchError>(path)
        };
        let off_path = offline("offline", offline_transcript(&engine, &item.wav, &settings))?;
        let seg_path = offline(
            "segments",
            segment_offline_transcript(&engine, &item.wav, &settings),
        )?;
        let finals: Vec<CaptionEvent> = events.iter().filter(|e| e.is_final()).cloned().collect();
        let steadiness = stability(&events);
        let s = score_wer(&score_dir, &item.reference, &log_path)?;
        let o = score_wer(&score_dir, &item.reference, &off_path)?;
        let g = score_wer(&score_dir, &item.reference, &seg_path)?;
        let diarization = match (&diarize, &item.rttm) {
            (Some(_), Some(reference)) => Some(diar_figures(
                &score_dir,
                reference,
                &args.out_dir.join(format!("{stem}.rttm")),
                &finals,
                &report,
            )?),
            _ => None,
        };
        total_audio += report.audio_s;
        total_asr += report.stats.asr_s + report.stats.vad_s;
        total_cpu += report.cpu_s;
        files.push(FileFigures {
            name: item.name.clone(),
            language: item.language.clone(),
            audio_s: round3(report.audio_s),
            ref_words: s.n,
            stream_errors: s.errors,
            stream_hyp_words: s.hyp_words,
            stream_wer: s.wer(),
            segment_errors: g.errors,
            segment_wer: g.wer(),
            offline_errors: o.errors,
            offline_wer: o.wer(),
            rtf: round3((report.stats.asr_s + report.stats.vad_s) / report.audio_s.max(1e-9)),
            cpu_per_audio_s: round3(report.cpu_s / report.audio_s.max(1e-9)),
            partials: report.stats.partials,
            finals: report.stats.finals,
            skipped_partials: report.stats.skipped_partials,
            stability: steadiness,
            diarization,
        });
        if s.n > 0 {
            logs.push((log_path.clone(), files.len() - 1));
        }
        pairs_stream.push(log_path);
        pairs_offline.push(off_path);
    }
    let all_logs: Vec<PathBuf> = logs.iter().map(|(p, _)| p.clone()).collect();
    let latency = if all_logs.is_empty() {
        serde_json::Value::Null
    } else {
        score_latency(&score_dir, &all_logs)?
    };
    let mut pooled = pool(&files);
    for p in &mut pooled {
        let group_logs: Vec<PathBuf> = logs
            .iter()
            .filter(|(_, i)| group_of(&files[*i]) == p.group)
            .map(|(l, _)| l.clone())
            .collect();
        if !group_logs.is_empty() {
            p.latency = score_latency(&score_dir, &group_logs)?;
        }
    }
    let mut steadiness = Stability::default();
    for f in files.iter().filter(|f| f.ref_words > 0) {
        steadiness.add(&f.stability);
    }
    let diarization = args.diarize.then(|| diar_summary(&files));
    Ok(BenchReport {
        model: args.model.clone(),
        realtime: !args.fast && !args.audio_clock,
        audio_clock: args.audio_clock,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        files,
        pooled,
        latency,
        audio_s: round3(total_audio),
        rtf: round3(total_asr / total_audio.max(1e-9)),
        cpu_per_audio_s: round3(total_cpu / total_audio.max(1e-9)),
        peak_rss_mb: round3(peak_rss_bytes() as f64 / 1_048_576.0),
        stability: steadiness,
        flicker_percent: steadiness.flicker_percent().map(round3),
        final_mismatch_percent: steadiness.final_mismatch_percent().map(round3),
        diarization,
    })
    .and_then(|r| {
        if let Some(p) = &args.json {
            let text = serde_json::to_string_pretty(&r).expect("report serialises");
            std::fs::write(p, text).map_err(|e| BenchError::Io(p.clone(), e))?;
        }
        Ok(r)
    })
}

impl Engine {
    /// Whether the recognizer can be told this language.
    fn whisper_knows(&self, lang: &str) -> bool {
        self.model() != "whisper-tiny.en" || lang == "en"
    }
}

/// Scores the speaker turns of the run (voiced audio labelled with the finals' labels) against
/// `reference` and writes them to `hyp`.
fn diar_figures(
    score_dir: &Path,
    reference: &Path,
    hyp: &Path,
    finals: &[CaptionEvent],
    report: &crate::run::RunReport,
) -> Result<DiarFigures, BenchError> {
    let turns = &report.turns;
    let name = reference
        .file_stem()
        .map_or("recording".into(), |s| s.to_string_lossy().to_string());
    let file = std::fs::File::create(hyp).map_err(|e| BenchError::Io(hyp.to_path_buf(), e))?;
    write_rttm(std::io::BufWriter::new(file), &name, turns)
        .map_err(|e| BenchError::Io(hyp.to_path_buf(), e))?;
    let ref_text =
        std::fs::read_to_string(reference).map_err(|e| BenchError::Io(reference.into(), e))?;
    let mut ref_speakers: Vec<&str> = ref_text
        .lines()
        .filter(|l| l.starts_with("SPEAKER"))
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    ref_speakers.sort_unstable();
    ref_speakers.dedup();
    let der = if ref_speakers.is_empty() {
        None
    } else {
        Some(score_der(score_dir, reference, hyp)?)
    };
    let hyp_speakers = speakers_of(finals).len();
    Ok(DiarFigures {
        der,
        ref_speakers: ref_speakers.len(),
        hyp_speakers,
        speaker_count_error: hyp_speakers.abs_diff(ref_speakers.len()),
        cpu_per_audio_s: round3(report.stats.diarize_s / report.audio_s.max(1e-9)),
        wait_s: round3(report.stats.diarize_wait_s),
        label_latency_s: finals
            .iter()
            .filter(|e| e.speaker.is_some())
            .map(|e| round3(e.emitted_at - e.end))
            .collect(),
    })
}

fn diar_summary(files: &[FileFigures]) -> DiarSummary {
    let d: Vec<&DiarFigures> = files
        .iter()
        .filter_map(|f| f.diarization.as_ref())
        .collect();
    let ders: Vec<f64> = d.iter().filter_map(|x| x.der).collect();
    let mut lat: Vec<f64> = d.iter().flat_map(|x| x.label_latency_s.clone()).collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| -> Option<f64> {
        (!lat.is_empty()).then(|| lat[((lat.len() - 1) as f64 * p).round() as usize])
    };
    let audio: f64 = files
        .iter()
        .filter(|f| f.diarization.is_some())
        .map(|f| f.audio_s)
        .sum();
    let cpu: f64 = files
        .iter()
        .filter_map(|f| {
            f.diarization
                .as_ref()
                .map(|d| d.cpu_per_audio_s * f.audio_s)
        })
        .sum();
    DiarSummary {
        files: d.len(),
        mean_der: (!ders.is_empty()).then(|| round3(ders.iter().sum::<f64>() / ders.len() as f64)),
        max_der: (!ders.is_empty()).then(|| round3(ders.iter().copied().fold(0.0, f64::max))),
        speaker_count_error: d.iter().map(|x| x.speaker_count_error).sum(),
        label_latency_p50: q(0.5),
        label_latency_p95: q(0.95),
        cpu_per_audio_s: round3(cpu / audio.max(1e-9)),
    }
}

/// DER in percent from `der.py`.
fn score_der(score_dir: &Path, reference: &Path, hyp: &Path) -> Result<f64, BenchError> {
    let script = score_dir.join("der.py");
    let err = |detail: String| BenchError::Scorer {
        script: script.display().to_string(),
        detail,
    };
    let out = Command::new(python())
        .arg(&script)
        .arg(reference)
        .arg(hyp)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).to_string()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let i = text
        .find("DER ")
        .ok_or_else(|| err(format!("no DER in: {text}")))?;
    text[i + 4..]
        .split('%')
        .next()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| err(format!("no DER in: {text}")))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `errors / reference_errors`; 1 when both are 0.
fn error_ratio(errors: u64, reference_errors: u64) -> f64 {
    if reference_errors == 0 {
        if errors == 0 { 1.0 } else { f64::INFINITY }
    } else {
        round3(errors as f64 / reference_errors as f64)
    }
}

/// The pooling group of a file: `real` for recorded speech, else its language (`mixed` when
/// its description gives several).
fn group_of(f: &FileFigures) -> String {
    if f.name.contains("real/") {
        "real".to_string()
    } else {
        f.language.clone().unwrap_or_else(|| "mixed".into())
    }
}

fn pool(files: &[FileFigures]) -> Vec<Pooled> {
    let mut groups: Vec<(String, Vec<&FileFigures>)> = Vec::new();
    for f in files.iter().filter(|f| f.ref_words > 0) {
        let g = group_of(f);
        match groups.iter_mut().find(|(n, _)| *n == g) {
            Some((_, v)) => v.push(f),
            None => groups.push((g, vec![f])),
        }
    }
    groups
        .into_iter()
        .map(|(group, v)| {
            let n: u64 = v.iter().map(|f| f.ref_words).sum();
            let se: u64 = v.iter().map(|f| f.stream_errors).sum();
            let ge: u64 = v.iter().map(|f| f.segment_errors).sum();
            let oe: u64 = v.iter().map(|f| f.offline_errors).sum();
            let pct = |e: u64| round3(e as f64 / n.max(1) as f64 * 100.0);
            Pooled {
                group,
                files: v.len(),
                ref_words: n,
                stream_wer: pct(se),
                segment_wer: pct(ge),
                offline_wer: pct(oe),
                segment_ratio: error_ratio(se, ge),
                file_ratio: error_ratio(se, oe),
                latency: serde_json::Value::Null,
            }
        })
        .collect()
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {} ({} mode, {} cores)\n{:<44} {:>6} {:>5} {:>8} {:>8} {:>8} {:>6} {:>6} {:>4} {:>4}\n",
            self.model,
            match (self.realtime, self.audio_clock) {
                (true, _) => "real-time",
                (false, true) => "audio-clock",
                (false, false) => "fast",
            },
            self.cores,
            "file",
            "audio",
            "words",
            "WER%",
            "segm.%",
            "file%",
            "RTF",
            "CPU/s",
            "part",
            "fin"
        );
        for f in &self.files {
            let w = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}", v * 100.0));
            s += &format!(
                "{:<44} {:>6.1} {:>5} {:>8} {:>8} {:>8} {:>6.3} {:>6.3} {:>4} {:>4}{}\n",
                f.name,
                f.audio_s,
                f.ref_words,
                w(f.stream_wer),
                w(f.segment_wer),
                w(f.offline_wer),
                f.rtf,
                f.cpu_per_audio_s,
                f.partials,
                f.finals,
                if f.ref_words == 0 {
                    format!("  ({} words on non-speech)", f.stream_hyp_words)
                } else {
                    String::new()
                }
            );
        }
        s += "\npooled WER: streaming / offline whole-segment (ratio) / offline whole-file (ratio)\n";
        for p in &self.pooled {
            s += &format!(
                "  {:<8} {:>2} files {:>5} words  {:>6.2}% / {:>6.2}% ({:.3}) / {:>6.2}% ({:.3})\n",
                p.group,
                p.files,
                p.ref_words,
                p.stream_wer,
                p.segment_wer,
                p.segment_ratio,
                p.offline_wer,
                p.file_ratio
            );
        }
        s += "\nlatency (s)                 p50     p95\n";
        for k in [
            "partial_word_first_seen",
            "partial_event",
            "final_word",
            "final_event",
            "final_minus_segment_end",
        ] {
            if let (Some(a), Some(b)) = (
                latency_figure(&self.latency, k, "p50"),
                latency_figure(&self.latency, k, "p95"),
            ) {
                s += &format!("  {k:<24} {a:>6.3}  {b:>6.3}\n");
            }
        }
        if self.pooled.iter().any(|p| !p.latency.is_null()) {
            s += "\nlatency by group (s)   partial word p50    p95   final after speech p50    p95\n";
            for p in &self.pooled {
                let f = |k: &str, q: &str| {
                    latency_figure(&p.latency, k, q).map_or("-".to_string(), |v| format!("{v:.3}"))
                };
                s += &format!(
                    "  {:<8} {:>20} {:>6} {:>24} {:>6}\n",
                    p.group,
                    f("partial_word_first_seen", "p50"),
                    f("partial_word_first_seen", "p95"),
                    f("final_minus_segment_end", "p50"),
                    f("final_minus_segment_end", "p95"),
                );
            }
        }
        if let (Some(f), Some(m)) = (self.flicker_percent, self.final_mismatch_percent) {
            s += &format!(
                "\npartials: {f:.1}% of shown words rewritten by the next partial (flicker), {m:.1}% corrected by the final\n"
            );
        }
        if let Some(d) = &self.diarization {
            s += "\ndiarization                              DER%  spk(ref)  diar CPU/s\n";
            for f in &self.files {
                if let Some(x) = &f.diarization {
                    s += &format!(
                        "  {:<38} {:>6} {:>4}({:>2}) {:>10.3}\n",
                        f.name,
                        x.der.map_or("-".into(), |v| format!("{v:.2}")),
                        x.hyp_speakers,
                        x.ref_speakers,
                        x.cpu_per_audio_s
                    );
                }
            }
            let o = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            s += &format!(
                "  {} files: mean DER {}%, max {}%, speaker-count error {}, label latency p50 {} s p95 {} s, diarization CPU {:.3} s per audio second\n",
                d.files,
                d.mean_der.map_or("-".into(), |v| format!("{v:.2}")),
                d.max_der.map_or("-".into(), |v| format!("{v:.2}")),
                d.speaker_count_error,
                o(d.label_latency_p50),
                o(d.label_latency_p95),
                d.cpu_per_audio_s
            );
        }
        s += &format!(
            "\naudio {:.1} s, real-time factor {:.3}, CPU {:.3} s per audio second, peak RSS {:.0} MB\n",
            self.audio_s, self.rtf, self.cpu_per_audio_s, self.peak_rss_mb
        );
        s
    }
}

fn discover(corpus: &Path, filter: Option<&str>) -> Result<Vec<Item>, BenchError> {
    if !corpus.is_dir() {
        return Err(BenchError::Corpus(
            corpus.to_path_buf(),
            "not a directory".into(),
        ));
    }
    let mut wavs = Vec::new();
    let mut stack = vec![corpus.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| BenchError::Io(dir.clone(), e))?;
        for entry in rd.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "wav") {
                wavs.push(p);
            }
        }
    }
    wavs.sort();
    let mut items = Vec::new();
    for wav in wavs {
        let name = wav
            .strip_prefix(corpus)
            .unwrap_or(&wav)
            .to_string_lossy()
            .to_string();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let reference = ["stm", "txt"]
            .iter()
            .map(|e| wav.with_extension(e))
            .find(|p| p.exists());
        let Some(reference) = reference else { continue };
        let rttm = Some(wav.with_extension("rttm")).filter(|p| p.exists());
        items.push(Item {
            language: language_hint(&wav),
            name,
            wav,
            reference,
            rttm,
        });
    }
    Ok(items)
}

/// The language of a corpus file when its JSON description gives one language for all
/// utterances.
fn language_hint(wav: &Path) -> Option<String> {
    let mut candidates = vec![wav.with_extension("json")];
    if let Some(dir) = wav.parent() {
        candidates.push(dir.join("tracks.json"));
    }
    for json in candidates {
        let Ok(text) = std::fs::read_to_string(&json) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mut langs: Vec<String> = Vec::new();
        collect_languages(&v, &mut langs);
        langs.sort();
        langs.dedup();
        if langs.len() == 1 {
            return langs.pop();
        }
        if !langs.is_empty() {
            return None;
        }
    }
    None
}

fn collect_languages(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "language" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_languages(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_languages(x, out)),
        _ => {}
    }
}

fn find_score_dir(corpus: &Path) -> Option<PathBuf> {
    let abs = std::fs::canonicalize(corpus).ok()?;
    abs.ancestors()
        .map(|a| a.join("score"))
        .find(|d| d.join("wer.py").exists())
}

/// Decodes every speech segment of the file once it is complete, with the streaming settings'
/// VAD gating and decoding (pads, endpoint, language setting, context of the previous finals)
/// but no partials, hence no joints or trims and, with `auto`, each segment in the language the
/// stream's detection decides; segments are cut only past [`OFFLINE_WINDOW_S`], and there is no
/// diarization: what the captioner would give if it could wait for the end of every segment.
pub fn segment_offline_transcript(
    engine: &Engine,
    wav: &Path,
    settings: &StreamSettings,
) -> Result<String, RunError> {
    let settings = whole_segment_settings(settings);
    let mut texts = Vec::new();
    caption_input_interruptible(
        &wav.to_string_lossy(),
        &DecodeSettings::default(),
        engine,
        &settings,
        None,
        "offline",
        &Interrupt::default(),
        EventClock::Audio,
        |ev: &CaptionEvent| {
            if ev.is_final() && !ev.text.is_empty() {
                texts.push(ev.text.clone());
            }
        },
    )?;
    Ok(texts.join(" "))
}

/// The streaming settings with partials off and the longest segment Whisper's window takes.
fn whole_segment_settings(settings: &StreamSettings) -> StreamSettings {
    StreamSettings {
        partials: false,
        language_change_cut: false,
        max_segment_s: OFFLINE_WINDOW_S as f32,
        ..settings.clone()
    }
}

/// Decodes the whole file offline: windows of at most `OFFLINE_WINDOW_S` cut at quiet frames,
/// each decoded once with timestamps; no VAD gating, no streaming.
pub fn offline_transcript(
    engine: &Engine,
    wav: &Path,
    settings: &StreamSettings,
) -> Result<String, RunError> {
    crate::media::init()?;
    let source = AudioSource::open(&wav.to_string_lossy(), &DecodeSettings::default())?;
    let mut audio = Vec::new();
    for ev in source.receiver().iter() {
        match ev {
            MediaEvent::Audio(c) => audio.extend_from_slice(&c.samples),
            MediaEvent::Eos => break,
            MediaEvent::Error(e) => return Err(e.into()),
        }
    }
    let mut vad = engine.vad()?;
    let mut probs = Vec::with_capacity(audio.len() / FRAME_SAMPLES + 1);
    for f in audio.chunks(FRAME_SAMPLES) {
        let mut frame = [0.0f32; FRAME_SAMPLES];
        frame[..f.len()].copy_from_slice(f);
        probs.push(
            vad.process(&frame)
                .map_err(crate::stream::CaptionError::from)?,
        );
    }
    let mut whisper = engine.whisper()?;
    let language = match &settings.language {
        LanguageSetting::Fixed(c) => Language::Fixed(c.clone()),
        LanguageSetting::Auto => Language::Detect {
            prefer: None,
            switch_confidence: 1.0,
            among: settings.auto_languages.clone(),
        },
    };
    let opts = DecodeOptions {
        language,
        timestamps: true,
        ..Default::default()
    };
    let win = (OFFLINE_WINDOW_S * 16_000.0) as usize;
    let mut texts = Vec::new();
    let mut start = 0usize;
    while start < audio.len() {
        let mut end = (start + win).min(audio.len());
        if end < audio.len() {
            let lo = (end - (OFFLINE_CUT_SEARCH_S * 16_000.0) as usize) / FRAME_SAMPLES;
            let hi = end / FRAME_SAMPLES;
            let quiet = (lo..hi)
                .min_by(|a, b| probs[*a].total_cmp(&probs[*b]))
                .unwrap_or(hi);
            end = quiet * FRAME_SAMPLES;
        }
        let d = whisper
            .transcribe(&audio[start..end], &opts)
            .map_err(crate::stream::CaptionError::from)?;
        if !d.text.is_empty() {
            texts.push(d.text);
        }
        start = end;
    }
    Ok(texts.join(" "))
}

/// WER counts from `wer.py`.
#[derive(Debug, Clone, Copy, Default)]
struct WerCounts {
    n: u64,
    errors: u64,
    hyp_words: u64,
}

impl WerCounts {
    fn wer(&self) -> Option<f64> {
        (self.n > 0).then(|| round3(self.errors as f64 / self.n as f64 * 1000.0) / 1000.0)
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a scorer script and returns its standard output.
fn run_scorer(script: &Path, args: &[&std::ffi::OsStr]) -> Result<String, BenchError> {
    let fail = |detail: String| BenchError::Scorer {
        script: script.display().to_string(),
        detail,
    };
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(stderr.lines().last().unwrap_or("failed").to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn score_wer(score_dir: &Path, reference: &Path, hyp: &Path) -> Result<WerCounts, BenchError> {
    let script = score_dir.join("wer.py");
    let text = run_scorer(&script, &[reference.as_os_str(), hyp.as_os_str()])?;
    parse_wer_line(&text).ok_or_else(|| BenchError::Scorer {
        script: script.display().to_string(),
        detail: format!("unexpected output: {}", text.trim()),
    })
}

/// Parses `... WER 6.40%  (N=125 S=5 D=2 I=1, hyp words=124)` (the last such line).
fn parse_wer_line(text: &str) -> Option<WerCounts> {
    let line = text.lines().rev().find(|l| l.contains("(N="))?;
    let num = |key: &str| -> Option<u64> {
        let i = line.find(key)? + key.len();
        let digits: String = line[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let (n, s, d, i) = (num("N=")?, num("S=")?, num("D=")?, num("I=")?);
    Some(WerCounts {
        n,
        errors: s + d + i,
        hyp_words: num("hyp words=").unwrap_or(0),
    })
}

/// One figure (`q`: p50, p95, ...) of one measure (`k`) of a `latency.py --json` report.
fn latency_figure(latency: &serde_json::Value, k: &str, q: &str) -> Option<f64> {
    latency.get(k)?.get(q)?.as_f64()
}

fn score_latency(score_dir: &Path, logs: &[PathBuf]) -> Result<serde_json::Value, BenchError> {
    let script = score_dir.join("latency.py");
    let mut args: Vec<&std::ffi::OsStr> = logs.iter().map(|p| p.as_os_str()).collect();
    args.push(std::ffi::OsStr::new("--json"));
    // latency.py prints NaN for empty figures, which is not JSON
    let text = run_scorer(&script, &args)?.replace("NaN", "null");
    serde_json::from_str(&text).map_err(|e| BenchError::Scorer {
        script: script.display().to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wer_output() {
        let c = parse_wer_line("a vs b: WER 6.40%  (N=125 S=5 D=2 I=1, hyp words=124)\n").unwrap();
        assert_eq!((c.n, c.errors, c.hyp_words), (125, 8, 124));
        assert_eq!(c.wer(), Some(0.064));
        assert!(parse_wer_line("nothing").is_none());
        let z = parse_wer_line("x: WER 100.00%  (N=0 S=0 D=0 I=11, hyp words=11)").unwrap();
        assert_eq!(z.wer(), None);
    }

    #[test]
    fn ratios_of_error_counts() {
        assert_eq!(error_ratio(3, 2), 1.5);
        assert_eq!(error_ratio(0, 0), 1.0);
        assert_eq!(error_ratio(0, 4), 0.0);
        assert!(error_ratio(1, 0).is_infinite());
    }

    #[test]
    fn whole_segment_settings_are_valid_and_make_no_partials() {
        let streaming = StreamSettings {
            language_change_cut: true,
            language: LanguageSetting::Auto,
            ..Default::default()
        };
        let w = whole_segment_settings(&streaming);
        w.validate().unwrap();
        assert!(!w.partials && !w.language_change_cut);
        assert_eq!(w.max_segment_s as f64, OFFLINE_WINDOW_S);
        assert_eq!(w.endpoint_silence_ms, streaming.endpoint_silence_ms);
        assert_eq!(w.language, streaming.language);
    }
}
