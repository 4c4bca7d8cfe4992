//! Shared helpers of the integration tests: corpus paths, models, WAV reading, scoring with the
//! corpus scorers.
#![allow(dead_code)]

pub mod janus;
pub mod livekit;
pub mod ws;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use soustitre::captions::{CaptionEvent, JsonlWriter};
use soustitre::engine::Engine;
use soustitre::media::DecodeSettings;
use soustitre::stream::StreamSettings;

/// Lower-case words of `text`, split at anything but letters and digits.
pub fn plain_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// `../shared` beside the checkout.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// A file of the dev corpus.
pub fn corpus(rel: &str) -> PathBuf {
    shared().join("corpus/dev").join(rel)
}

/// The engine of `model` in `cells` (one per model the tests use: whisper-base, whisper-tiny.en),
/// made by `prepare` the first time in this test process (the tests of one binary share a
/// process under `cargo test`).
fn once_per_model<E: std::fmt::Display>(
    cells: &'static [OnceLock<Engine>; 2],
    model: &str,
    prepare: fn(&str) -> Result<Engine, E>,
) -> &'static Engine {
    let cell = &cells[usize::from(model == "whisper-tiny.en")];
    let e = cell.get_or_init(|| {
        prepare(model)
            .unwrap_or_else(|e| panic!("models and ONNX Runtime are set up (make setup): {e}"))
    });
    assert_eq!(e.model(), model, "a model the tests prepare");
    e
}

/// The engine for `model`, prepared once per model and test process.
pub fn engine(model: &str) -> &'static Engine {
    static CELLS: [OnceLock<Engine>; 2] = [OnceLock::new(), OnceLock::new()];
    once_per_model(&CELLS, model, Engine::prepare_default)
}

/// Writes `samples` as a 16 kHz mono 16-bit PCM WAV file.
pub fn write_wav(path: &Path, samples: &[f32]) {
    let mut b = Vec::new();
    let data = (samples.len() * 2) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&32_000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Samples of a 16-bit PCM mono WAV file, as int16 / 32768.
pub fn read_wav(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            return b[i + 8..i + 8 + len]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
        }
        i += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Captions a file through the whole product path (GStreamer decode, worker, captioner), as fast
/// as possible.
pub fn caption_file(model: &str, path: &Path, settings: &StreamSettings) -> Vec<CaptionEvent> {
    let mut events = Vec::new();
    soustitre::run::caption_input(
        &path.to_string_lossy(),
        &DecodeSettings::default(),
        engine(model),
        settings,
        "mix",
        |e| events.push(e.clone()),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    events
}

/// WER (fraction) and reference word count of `events` against `reference`, scored by the
/// corpus's `score/wer.py`.
pub fn wer(reference: &Path, events: &[CaptionEvent]) -> (f64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hyp.jsonl");
    write_log(&log, events);
    wer_files(&[(reference.to_path_buf(), log)])
}

/// Writes `events` as a caption log (JSON lines) at `path`.
pub fn write_log(path: &Path, events: &[CaptionEvent]) {
    let mut w = JsonlWriter::create(path).unwrap();
    for e in events {
        w.write_event(e).unwrap();
    }
    w.flush().unwrap();
}

/// Pooled WER over (reference, hypothesis file) pairs: (wer, errors, reference words).
pub fn wer_files(pairs: &[(PathBuf, PathBuf)]) -> (f64, u64, u64) {
    let mut cmd = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.arg(shared().join("score/wer.py"));
    for (r, h) in pairs {
        cmd.arg(r).arg(h);
    }
    let out = cmd.output().expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("(N="))
        .unwrap_or_else(|| panic!("wer.py: {text}"));
    let num = |key: &str| -> u64 {
        let i = line.find(key).unwrap() + key.len();
        line[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let n = num("N=");
    let errors = num("S=") + num("D=") + num("I=");
    eprintln!("{}", text.trim());
    (errors as f64 / n.max(1) as f64, errors, n)
}

/// The final events.
pub fn finals(events: &[CaptionEvent]) -> Vec<&CaptionEvent> {
    events.iter().filter(|e| e.is_final()).collect()
}

/// All words of all events with text.
pub fn word_count(events: &[CaptionEvent]) -> usize {
    events
        .iter()
        .map(|e| e.text.split_whitespace().count())
        .sum()
}

/// The engine for `model` with the diarization model, prepared once per model and test process.
pub fn diarize_engine(model: &str) -> &'static Engine {
    static CELLS: [OnceLock<Engine>; 2] = [OnceLock::new(), OnceLock::new()];
    once_per_model(&CELLS, model, Engine::prepare_default_with_diarization)
}

/// DER (fraction) of hypothesis RTTM `hyp` against reference RTTM `reference`, scored by the
/// corpus's `score/der.py` (collar ±0.25 s, overlap scored).
pub fn der(reference: &Path, hyp: &Path) -> f64 {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(shared().join("score/der.py"))
        .arg(reference)
        .arg(hyp)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "der.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", text.trim());
    let i = text
        .find("DER ")
        .unwrap_or_else(|| panic!("der.py: {text}"));
    text[i + 4..]
        .split('%')
        .next()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("der.py: {text}"))
        / 100.0
}

/// Distinct speakers of an RTTM file.
pub fn rttm_speakers(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut v: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    v.sort();
    v.dedup();
    v.len()
}

/// (start, end, language) of the reference utterances of a dev-corpus meeting (`meetings/NAME`).
pub fn reference_turns(meeting: &str) -> Vec<(f64, f64, String)> {
    let text = std::fs::read_to_string(corpus(&format!("{meeting}/meeting.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["start"].as_f64().unwrap(),
                u["end"].as_f64().unwrap(),
                u["language"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
