//! End-to-end tests of the `soustitre` binary: the real executable, the real models of the
//! checkout (`models/cache`, fetched from `../shared/models`), ONNX Runtime from `.local/lib` and
//! the shared corpus (`../shared/corpus/dev`). Each test runs the binary with stdin closed and
//! stdout/stderr captured (so stdout is not a terminal), then checks what it wrote: exit code,
//! the event log read back with `captions::read_log` and checked with `validate_log`, the
//! subtitle files parsed here, and the one-line error contract of `main.rs`.
//!
//! The environment variables that redirect the binary (`SOUSTITRE_*`, `ORT_DYLIB_PATH`) are
//! removed from every run, so the tests exercise the checkout defaults unless a test sets one.
//!
//! Run with `cargo test --release --test cli` (inference is slow in debug builds).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use soustitre::captions::{CaptionEvent, read_log, validate_log};

/// The shared dev corpus.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/dev");
/// The shared model mirror (what `models/cache` is filled from).
const SHARED_MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models");

/// "The new budget proposal needs to be approved by the finance committee before the end of the
/// month." (synthetic voice, English).
const EN_01: &str = "utterances/synth/en_01.wav";
/// Duration of `EN_01` as given by the corpus manifest (88 719 samples at 16 kHz).
const EN_01_DURATION_S: f64 = 5.545;
/// Ten seconds of white noise at -50 dBFS: no speech.
const NOISE: &str = "nonspeech/white_noise_m50dBFS_10s.wav";

/// Variables that would point the binary somewhere else than the checkout.
const REDIRECTING_VARS: [&str; 6] = [
    "SOUSTITRE_LOG",
    "SOUSTITRE_HOME",
    "SOUSTITRE_MODEL_DIR",
    "SOUSTITRE_MODEL_MIRROR",
    "ORT_DYLIB_PATH",
    "XDG_DATA_HOME",
];

/// The files a `transcribe` with the default model needs from a mirror (the `whisper-base` and
/// `silero-vad` bundles of `models/manifest.toml`).
const WHISPER_BASE_FILES: [&str; 5] = [
    "whisper80_conv.onnx",
    "whisper-base/encoder.int8.onnx",
    "whisper-base/decoder.int8.onnx",
    "whisper-base/tokenizer.json",
    "whisper-base/whisper_config.json",
];
const SILERO: &str = "silero_vad.onnx";

fn corpus(rel: &str) -> PathBuf {
    Path::new(CORPUS).join(rel)
}

/// The binary with stdin closed and a clean environment for its own variables.
fn soustitre() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soustitre"));
    cmd.stdin(Stdio::null());
    for var in REDIRECTING_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// What one run produced.
struct Run {
    /// `None` when killed by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().expect("cannot start the soustitre binary");
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        self.assert_no_panic_nor_log();
    }

    fn assert_no_panic_nor_log(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "a panic instead of an error: {}",
            self.describe()
        );
        let logs: Vec<&str> = self.stderr.lines().filter(|l| is_tracing_line(l)).collect();
        assert!(
            logs.is_empty(),
            "tracing lines on stderr at the default level: {logs:#?}\n{}",
            self.describe()
        );
    }

    /// The one-line error of a failed run (exit 1 or 2, not a panic's 101 nor a signal): stderr
    /// holds exactly one non-empty line besides tracing lines and lines `ignore` accepts, and it
    /// starts with `soustitre: `.
    fn error_line_ignoring(&self, ignore: impl Fn(&str) -> bool) -> String {
        assert!(
            matches!(self.code, Some(1 | 2)),
            "expected exit 1 or 2: {}",
            self.describe()
        );
        self.assert_no_panic_nor_log();
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !is_tracing_line(l) && !ignore(l))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line: {}",
            self.describe()
        );
        assert!(
            lines[0].starts_with("soustitre: "),
            "error line without the program name: {}",
            self.describe()
        );
        lines[0].to_string()
    }

    fn error_line(&self) -> String {
        self.error_line_ignoring(|_| false)
    }
}

/// A line of `tracing_subscriber::fmt` (`<RFC 3339 time> <LEVEL> ...`, maybe with ANSI colours).
fn is_tracing_line(line: &str) -> bool {
    let plain = strip_ansi(line);
    let mut words = plain.split_whitespace();
    let (Some(time), Some(level)) = (words.next(), words.next()) else {
        return false;
    };
    let t = time.as_bytes();
    t.len() >= 19
        && t[..4].iter().all(u8::is_ascii_digit)
        && t[4] == b'-'
        && t[10] == b'T'
        && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
}

/// `text` without ANSI CSI sequences (`ESC [ ... final-byte`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One subtitle cue as written in a file: times in milliseconds and its text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileCue {
    start_ms: u64,
    end_ms: u64,
    lines: Vec<String>,
}

/// `HH:MM:SS<sep>mmm` (hours may exceed two digits).
fn parse_timestamp(s: &str, sep: char) -> u64 {
    let (hms, ms) = s
        .split_once(sep)
        .unwrap_or_else(|| panic!("timestamp {s:?} has no `{sep}` before the milliseconds"));
    let parts: Vec<&str> = hms.split(':').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() >= 2
            && parts[1].len() == 2
            && parts[2].len() == 2
            && ms.len() == 3
            && hms.chars().all(|c| c.is_ascii_digit() || c == ':')
            && ms.chars().all(|c| c.is_ascii_digit()),
        "malformed timestamp {s:?}"
    );
    let n = |p: &str| p.parse::<u64>().unwrap();
    let (h, m, sec) = (n(parts[0]), n(parts[1]), n(parts[2]));
    assert!(m < 60 && sec < 60, "malformed timestamp {s:?}");
    ((h * 60 + m) * 60 + sec) * 1000 + n(ms)
}

/// `start --> end` with `sep` before the milliseconds.
fn parse_timing(line: &str, sep: char) -> (u64, u64) {
    let (start, end) = line
        .split_once(" --> ")
        .unwrap_or_else(|| panic!("timing line {line:?} has no ` --> `"));
    (parse_timestamp(start, sep), parse_timestamp(end, sep))
}

/// The blocks of a subtitle file (separated by blank lines), each as its lines.
fn blocks(text: &str) -> Vec<Vec<&str>> {
    text.split("\n\n")
        .map(|b| b.lines().collect::<Vec<_>>())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Parses a WebVTT file as `to_vtt` writes it: `WEBVTT`, then cues with an optional identifier,
/// a `HH:MM:SS.mmm --> HH:MM:SS.mmm` timing line and text lines (entities decoded).
fn parse_vtt(text: &str) -> Vec<FileCue> {
    assert!(text.starts_with("WEBVTT"), "not a WebVTT file:\n{text}");
    assert!(!text.contains('\r'), "carriage return in WebVTT:\n{text}");
    let all = blocks(text);
    assert_eq!(all[0], ["WEBVTT"], "WebVTT header block:\n{text}");
    all[1..]
        .iter()
        .map(|block| {
            let timing = block
                .iter()
                .position(|l| l.contains("-->"))
                .unwrap_or_else(|| panic!("cue without timing line: {block:?}"));
            assert!(
                timing <= 1,
                "more than an identifier before the timing: {block:?}"
            );
            let (start_ms, end_ms) = parse_timing(block[timing], '.');
            let lines = block[timing + 1..]
                .iter()
                .map(|l| {
                    l.replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&")
                })
                .collect();
            FileCue {
                start_ms,
                end_ms,
                lines,
            }
        })
        .collect()
}

/// Parses an SRT file: blocks numbered 1, 2, ..., a `HH:MM:SS,mmm --> HH:MM:SS,mmm` timing line,
/// then text lines.
fn parse_srt(text: &str) -> Vec<FileCue> {
    assert!(!text.contains('\r'), "carriage return in SRT:\n{text}");
    blocks(text)
        .iter()
        .enumerate()
        .map(|(k, block)| {
            assert!(block.len() >= 3, "SRT block too short: {block:?}");
            assert_eq!(block[0], (k + 1).to_string(), "SRT numbering: {block:?}");
            let (start_ms, end_ms) = parse_timing(block[1], ',');
            FileCue {
                start_ms,
                end_ms,
                lines: block[2..].iter().map(|l| l.to_string()).collect(),
            }
        })
        .collect()
}

/// Cues are non-empty, in order, do not overlap, and respect the line layout.
fn check_cues(cues: &[FileCue], max_line_chars: usize, max_lines: usize) {
    assert!(!cues.is_empty(), "no cues");
    for (k, cue) in cues.iter().enumerate() {
        assert!(cue.start_ms < cue.end_ms, "cue {}: {cue:?}", k + 1);
        assert!(
            !cue.lines.is_empty() && cue.lines.len() <= max_lines,
            "cue {} has {} lines (max {max_lines}): {cue:?}",
            k + 1,
            cue.lines.len()
        );
        for line in &cue.lines {
            assert!(!line.trim().is_empty(), "cue {}: blank line", k + 1);
            assert!(
                line.chars().count() <= max_line_chars,
                "cue {}: line {line:?} has {} chars (max {max_line_chars})",
                k + 1,
                line.chars().count()
            );
        }
        if k > 0 {
            assert!(
                cues[k - 1].end_ms <= cue.start_ms,
                "cues {k} and {} overlap: {:?} / {cue:?}",
                k + 1,
                cues[k - 1]
            );
        }
    }
}

/// The words of some texts, whitespace-normalised.
fn words<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    texts
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

fn cue_words(cues: &[FileCue]) -> Vec<String> {
    words(cues.iter().flat_map(|c| c.lines.iter().map(String::as_str)))
}

fn finals(events: &[CaptionEvent]) -> Vec<&CaptionEvent> {
    events.iter().filter(|e| e.is_final()).collect()
}

fn read_events(path: &Path) -> Vec<CaptionEvent> {
    read_log(path).unwrap_or_else(|e| panic!("event log {}: {e}", path.display()))
}

fn assert_valid_log(events: &[CaptionEvent], duration_s: f64) {
    let violations = validate_log(events, duration_s);
    assert!(
        violations.is_empty(),
        "event log violations:\n{}",
        violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `transcribe <corpus file>` with extra arguments.
fn transcribe(input: &Path, args: &[&str]) -> Command {
    let mut cmd = soustitre();
    cmd.arg("transcribe").arg(input).args(args);
    cmd
}

#[test]
fn transcribes_an_utterance_to_a_log_vtt_and_srt() {
    let tmp = tempfile::tempdir().unwrap();
    let (events, vtt, srt) = (
        tmp.path().join("en_01.jsonl"),
        tmp.path().join("en_01.vtt"),
        tmp.path().join("en_01.srt"),
    );
    let run = Run::of(
        transcribe(&corpus(EN_01), &["--lang", "en"])
            .arg("--events")
            .arg(&events)
            .arg("--vtt")
            .arg(&vtt)
            .arg("--srt")
            .arg(&srt),
    );
    run.assert_success();

    // The event log: consistent, with the key word of the sentence in a final.
    let log = read_events(&events);
    assert_valid_log(&log, EN_01_DURATION_S);
    let finals = finals(&log);
    assert!(
        finals
            .iter()
            .any(|f| f.text.to_lowercase().contains("budget")),
        "no final mentions the budget: {finals:#?}"
    );
    for f in &finals {
        assert_eq!(f.language.as_deref(), Some("en"), "{f:?}");
        assert_eq!(f.track, "mix", "{f:?}");
    }

    // WebVTT: the default layout (42 characters, 2 lines), the finals' words in order.
    let vtt_text = fs::read_to_string(&vtt).unwrap();
    let vtt_cues = parse_vtt(&vtt_text);
    check_cues(&vtt_cues, 42, 2);
    assert_eq!(
        cue_words(&vtt_cues),
        words(finals.iter().map(|f| f.text.as_str())),
        "the cues do not spell the finals:\n{vtt_text}"
    );

    // SRT: numbered, comma milliseconds, the same cues as the WebVTT.
    let srt_text = fs::read_to_string(&srt).unwrap();
    assert!(srt_text.contains(" --> "), "{srt_text}");
    assert_eq!(
        parse_srt(&srt_text),
        vtt_cues,
        "SRT and WebVTT differ:\n{srt_text}\n{vtt_text}"
    );

    // stdout is a pipe: one plain line per final, `[mm:ss mix] text`, nothing rewritten.
    assert!(
        !run.stdout.contains('\r') && !run.stdout.contains('\x1b'),
        "terminal control on a pipe: {:?}",
        run.stdout
    );
    let expected: Vec<String> = finals
        .iter()
        .map(|f| {
            let s = f.start as u64;
            format!("[{:02}:{:02} mix] {}", s / 60, s % 60, f.text)
        })
        .collect();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        expected,
        "stdout should hold the finals, one per line"
    );

    // stderr: only the closing summary.
    let summary: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(summary.len(), 1, "{}", run.describe());
    assert!(
        summary[0].starts_with(&format!("{} finals, ", finals.len())),
        "{}",
        run.describe()
    );
}

#[test]
fn line_length_and_line_count_options_shape_the_cues() {
    let tmp = tempfile::tempdir().unwrap();
    let vtt = tmp.path().join("narrow.vtt");
    let events = tmp.path().join("narrow.jsonl");
    let run = Run::of(
        transcribe(
            &corpus(EN_01),
            &["--lang", "en", "--max-line-chars", "20", "--max-lines", "3"],
        )
        .arg("--vtt")
        .arg(&vtt)
        .arg("--events")
        .arg(&events),
    );
    run.assert_success();
    let vtt_text = fs::read_to_string(&vtt).unwrap();
    let cues = parse_vtt(&vtt_text);
    check_cues(&cues, 20, 3);
    assert!(
        cues.iter().any(|c| c.lines.len() == 3),
        "with 20-character lines the ~100-character sentence should fill a 3-line cue:\n{vtt_text}"
    );
    let log = read_events(&events);
    assert_eq!(
        cue_words(&cues),
        words(finals(&log).iter().map(|f| f.text.as_str())),
        "narrow lines lost or changed words:\n{vtt_text}"
    );
}

#[test]
fn missing_input_is_one_line_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-recording.wav");
    let run = Run::of(&mut transcribe(&missing, &[]));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("not found"), "{line}");
    assert!(line.contains(&missing.display().to_string()), "{line}");
}

#[test]
fn text_file_is_not_an_audio_input() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("x.txt");
    fs::write(&text, "hello\n").unwrap();
    let run = Run::of(&mut transcribe(&text, &[]));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("not an audio input"), "{line}");
    assert!(line.contains(&text.display().to_string()), "{line}");
}

#[test]
fn a_wav_without_samples_is_captioned_as_nothing() {
    // a well-formed 16 kHz mono 16-bit WAV header whose data chunk is empty
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("empty.wav");
    common::write_wav(&wav, &[]);
    let events = tmp.path().join("empty.jsonl");
    let run = Run::of(transcribe(&wav, &[]).arg("--events").arg(&events));
    run.assert_success();
    assert!(read_events(&events).is_empty(), "{}", run.describe());
    let summary = run.stderr.lines().last().unwrap_or_default();
    assert!(summary.starts_with("0 finals, 0.0 s of audio"), "{summary}");
    assert!(
        !summary.contains("per audio second"),
        "no ratio over no audio: {summary}"
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    let run = Run::of(&mut transcribe(&corpus(EN_01), &["--frobnicate"]));
    assert_eq!(run.code, Some(2), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("--frobnicate"), "{line}");
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn invalid_stream_settings_name_the_field_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, field) in [
        (["--partial-interval-ms", "5"], "partial_interval_ms"),
        (["--max-segment-s", "100"], "max_segment_s"),
    ] {
        let events = tmp.path().join(format!("{field}.jsonl"));
        let run = Run::of(
            transcribe(&corpus(EN_01), &args)
                .arg("--events")
                .arg(&events),
        );
        assert_ne!(run.code, Some(0), "{args:?}: {}", run.describe());
        let line = run.error_line();
        assert!(line.contains(field), "{args:?}: {line}");
        assert!(
            !events.exists(),
            "{args:?}: the event log was created although the settings are invalid"
        );
    }
}

#[test]
fn invalid_language_code_is_refused() {
    let run = Run::of(&mut transcribe(&corpus(EN_01), &["--lang", "fr!"]));
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("fr!"), "{line}");
}

#[test]
fn unknown_model_is_refused() {
    let run = Run::of(&mut transcribe(&corpus(EN_01), &["--model", "nope"]));
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("unknown model"), "{line}");
    assert!(line.contains("nope"), "{line}");
}

#[test]
fn english_only_model_refuses_french() {
    let run = Run::of(&mut transcribe(
        &corpus(EN_01),
        &["--model", "whisper-tiny.en", "--lang", "fr"],
    ));
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains("not supported"), "{line}");
    assert!(line.contains("`fr`"), "{line}");
    assert!(line.contains("whisper-tiny.en"), "{line}");
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn missing_onnx_runtime_is_one_line() {
    let run = Run::of(
        transcribe(&corpus(EN_01), &[]).env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
    );
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(
        line.contains("ORT_DYLIB_PATH") || line.contains("ONNX Runtime"),
        "{line}"
    );
    assert!(line.contains("/nonexistent/libonnxruntime.so"), "{line}");
}

#[test]
fn onnx_runtime_that_is_not_a_library_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("libonnxruntime.so");
    fs::write(&fake, "this is not a shared library\n").unwrap();
    let run = Run::of(transcribe(&corpus(EN_01), &[]).env("ORT_DYLIB_PATH", &fake));
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(
        line.contains("ORT_DYLIB_PATH") || line.contains("ONNX Runtime"),
        "{line}"
    );
    assert!(line.contains(&fake.display().to_string()), "{line}");
}

/// A mirror under `dir` holding the files of `whisper-base` as symlinks into the shared mirror
/// (the store opens them like regular files; this saves copying 82 MB into the mirror) and the
/// VAD, as a symlink too or as a copy with one byte flipped.
fn make_mirror(dir: &Path, silero: Silero) -> PathBuf {
    let mirror = dir.join("mirror");
    for file in WHISPER_BASE_FILES {
        let link = mirror.join(file);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(Path::new(SHARED_MODELS).join(file), &link).unwrap();
    }
    let good = Path::new(SHARED_MODELS).join(SILERO);
    match silero {
        Silero::Good => std::os::unix::fs::symlink(&good, mirror.join(SILERO)).unwrap(),
        Silero::Corrupt => {
            let mut bytes = fs::read(&good).unwrap();
            bytes[1000] ^= 0x01;
            fs::write(mirror.join(SILERO), bytes).unwrap();
        }
    }
    mirror
}

#[derive(Clone, Copy)]
enum Silero {
    Good,
    Corrupt,
}

/// Files of `dir` whose name mentions `name` (the file itself or a `.name.part-*` temp file).
fn leftovers(dir: &Path, name: &str) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name))
        .collect()
}

#[test]
fn corrupt_or_missing_model_in_the_mirror_is_one_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let mirror = make_mirror(tmp.path(), Silero::Corrupt);
    let with_store = |cmd: &mut Command| {
        cmd.env("SOUSTITRE_MODEL_DIR", &models)
            .env("SOUSTITRE_MODEL_MIRROR", &mirror);
    };

    // Corrupt in the mirror: the recognizer is fetched, the VAD copy fails its checksum.
    let mut cmd = transcribe(&corpus(EN_01), &[]);
    with_store(&mut cmd);
    let run = Run::of(&mut cmd);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    // Off a terminal the store prints one progress line per file it copies (models/README.md).
    let progress = format!(" (from {}): ", mirror.display());
    let line = run.error_line_ignoring(|l| l.contains(&progress));
    assert!(line.contains("sha256"), "{line}");
    assert!(line.contains(SILERO), "{line}");
    assert!(
        leftovers(&models, SILERO).is_empty(),
        "a bad copy was left in the model dir: {:?}",
        leftovers(&models, SILERO)
    );
    for file in WHISPER_BASE_FILES {
        assert!(models.join(file).is_file(), "{file} was not fetched");
    }

    // Not in the mirror at all: named with the mirror; nothing else is fetched again.
    fs::remove_file(mirror.join(SILERO)).unwrap();
    let mut cmd = transcribe(&corpus(EN_01), &[]);
    with_store(&mut cmd);
    let run = Run::of(&mut cmd);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = run.error_line();
    assert!(line.contains(SILERO), "{line}");
    assert!(line.contains(&mirror.display().to_string()), "{line}");
    assert!(
        leftovers(&models, SILERO).is_empty(),
        "{:?}",
        leftovers(&models, SILERO)
    );
}

#[test]
fn corrupt_local_model_is_repaired_from_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let mirror = make_mirror(tmp.path(), Silero::Good);
    fs::create_dir_all(&models).unwrap();
    let good = fs::read(Path::new(SHARED_MODELS).join(SILERO)).unwrap();
    let mut bad = good.clone();
    bad[1000] ^= 0x01;
    fs::write(models.join(SILERO), &bad).unwrap();

    let run = Run::of(
        soustitre()
            .args(["models", "fetch", "silero-vad"])
            .env("SOUSTITRE_MODEL_DIR", &models)
            .env("SOUSTITRE_MODEL_MIRROR", &mirror),
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    // A recoverable anomaly: one warning at the default level (this also shows that
    // `is_tracing_line` recognises the subscriber's real output).
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| is_tracing_line(l) && l.contains("WARN") && l.contains("corrupt"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.describe());
    assert!(
        run.stdout.starts_with("silero-vad: 1 files ok"),
        "{}",
        run.describe()
    );
    assert!(
        fs::read(models.join(SILERO)).unwrap() == good,
        "the corrupt copy was not replaced"
    );
    assert_eq!(leftovers(&models, SILERO), [SILERO]);
}

#[test]
fn models_list_and_verify() {
    let run = Run::of(soustitre().args(["models", "list"]));
    run.assert_success();
    let bundles: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in ["whisper-base", "whisper-tiny.en", "silero-vad"] {
        assert!(bundles.contains(&name), "{name} not listed: {}", run.stdout);
    }
    assert!(
        run.stdout.lines().next()
            == Some(&*format!(
                "model directory: {}/models/cache",
                env!("CARGO_MANIFEST_DIR")
            )),
        "{}",
        run.stdout
    );

    let run = Run::of(soustitre().args(["models", "verify", "silero-vad"]));
    run.assert_success();
    assert_eq!(run.stdout, "silero-vad: 1 files verified\n");
}

#[test]
fn noise_gives_no_words() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("noise.jsonl");
    let run = Run::of(transcribe(&corpus(NOISE), &[]).arg("--events").arg(&events));
    run.assert_success();
    let log = read_events(&events);
    assert_valid_log(&log, 10.0);
    let texts: Vec<&str> = log
        .iter()
        .map(|e| e.text.as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    assert!(texts.is_empty(), "words on white noise: {texts:?}");
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn ctrl_c_finishes_the_open_caption_and_writes_the_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, vtt) = (tmp.path().join("live.jsonl"), tmp.path().join("live.vtt"));
    // the 49 s meeting at real-time pace, interrupted once its first final is out
    let child = transcribe(
        &corpus("meetings/en_3spk/meeting.wav"),
        &["--lang", "en", "--realtime", "--quiet", "--events"],
    )
    .arg(&log)
    .arg("--vtt")
    .arg(&vtt)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs::read_to_string(&log).is_ok_and(|t| t.contains("\"type\":\"final\"")) {
        assert!(std::time::Instant::now() < deadline, "no final within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50)); // polling a file, not syncing
    }
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let events = read_events(&log);
    // stopped well before the end, and nothing left open: every segment has its final
    let last_end = events.iter().map(|e| e.end).fold(0.0, f64::max);
    assert!(last_end < 40.0, "ran to {last_end} s");
    assert_valid_log(&events, 49.3);
    assert!(events.last().unwrap().is_final());
    let cues = parse_vtt(&fs::read_to_string(&vtt).unwrap());
    assert_eq!(
        cue_words(&cues),
        words(finals(&events).iter().map(|e| e.text.as_str())),
        "the subtitles hold every final"
    );
}

/// `bench` on the synthetic English utterances in audio-clock mode (deterministic latency): a
/// table and a JSON report whose per-file, pooled and per-group latency figures agree with each
/// other and with the scorers run on the logs it leaves.
#[test]
fn bench_reports_wer_and_latency_per_group() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, json) = (tmp.path().join("out"), tmp.path().join("bench.json"));
    let run = Run::of(
        soustitre()
            .arg("bench")
            .arg(CORPUS)
            .args(["--filter", "utterances/synth/en_0", "--audio-clock"])
            .arg("--out-dir")
            .arg(&out)
            .arg("--json")
            .arg(&json),
    );
    run.assert_success();
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{report:#}");
    let pooled = report["pooled"].as_array().unwrap();
    assert_eq!(pooled.len(), 1, "one language group: {report:#}");
    let en = &pooled[0];
    assert_eq!(en["group"], "en");
    let words: u64 = files.iter().map(|f| f["ref_words"].as_u64().unwrap()).sum();
    assert_eq!(en["ref_words"].as_u64(), Some(words));
    // one group: its latency is the whole run's, scored over the same logs
    assert_eq!(en["latency"], report["latency"], "{report:#}");
    let partial = &en["latency"]["partial_word_first_seen"];
    let shown = partial["count"].as_u64().unwrap();
    assert!(shown >= words / 2, "{shown} partial words of {words}");
    let p95 = partial["p95"].as_f64().unwrap();
    assert!(
        (0.0..=0.8).contains(&p95),
        "English partial p95 {p95} s, audio clock"
    );
    let final_p95 = en["latency"]["final_minus_segment_end"]["p95"]
        .as_f64()
        .unwrap();
    assert!(final_p95 <= 1.0, "final p95 {final_p95} s");
    // the table shows the group's row with the same figures
    let row = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("latency by group"))
        .find(|l| l.trim_start().starts_with("en "))
        .unwrap_or_else(|| panic!("no group row: {}", run.describe()));
    assert!(row.contains(&format!("{p95:.3}")), "{row}");
    // the logs it leaves score the same with the scorer
    let logs: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(logs.len(), 3);
    let scored = Command::new("python3")
        .arg(Path::new(CORPUS).join("../../score/latency.py"))
        .args(&logs)
        .arg("--json")
        .output()
        .unwrap();
    assert!(scored.status.success());
    let scored: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(scored["partial_word_first_seen"], *partial);
}
