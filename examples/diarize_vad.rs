//! Diarizes WAV files without recognition (VAD segments + CAM++ windows + online clustering) and
//! writes one RTTM per file, for scoring with `../shared/score/der.py`.
//!
//! ```text
//! cargo run --release --example diarize_vad -- OUT_DIR meeting.wav [more.wav ...]
//! ```
//! Settings can be overridden with `DIAR_SIM`, `DIAR_MIN_NEW`, `DIAR_WINDOW_MS`, `DIAR_HOP_MS`,
//! `DIAR_MIN_RUN_MS`.

use std::path::Path;

use anyhow::{Context, Result};
use soustitre::diarize::{DiarizeSettings, diarize_samples, write_rttm};
use soustitre::engine::Engine;
use soustitre::stream::StreamSettings;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, files) = args.split_first().context("usage: OUT_DIR WAV...")?;
    let d = DiarizeSettings::default();
    let settings = DiarizeSettings {
        new_speaker_similarity: env("DIAR_SIM", d.new_speaker_similarity),
        min_new_windows: env("DIAR_MIN_NEW", d.min_new_windows),
        window_ms: env("DIAR_WINDOW_MS", d.window_ms),
        hop_ms: env("DIAR_HOP_MS", d.hop_ms),
        min_run_ms: env("DIAR_MIN_RUN_MS", d.min_run_ms),
        ..d
    };
    settings.validate()?;
    let engine = Engine::prepare_default_with_diarization("whisper-tiny.en")?;
    let mut vad = engine.vad()?;
    let mut emb = engine.campplus()?;
    std::fs::create_dir_all(out)?;
    for f in files {
        let samples = soustitre::media::read_wav_mono16k(Path::new(f))?;
        let r = diarize_samples(
            &samples,
            &StreamSettings::default(),
            &settings,
            &mut vad,
            &mut emb,
        )?;
        let name = Path::new(f)
            .parent()
            .and_then(|p| p.file_name())
            .map_or("rec".into(), |n| n.to_string_lossy().to_string());
        let path = Path::new(out).join(format!("{name}.rttm"));
        write_rttm(std::fs::File::create(&path)?, &name, &r.turns)?;
        println!(
            "{name}: {} speakers, {} windows, embed {:.2} s for {:.1} s audio ({:.3} s/s)",
            r.speakers,
            r.stats.windows,
            r.stats.embed_s,
            samples.len() as f64 / 16_000.0,
            r.stats.embed_s / (samples.len() as f64 / 16_000.0)
        );
    }
    Ok(())
}
