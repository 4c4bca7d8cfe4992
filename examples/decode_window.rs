//! Decodes one 16 kHz mono 16-bit WAV file (at most 30 s) in a single Whisper window, without
//! the streaming policy, and prints the text, timestamps and guards.
//!
//! `cargo run --release --example decode_window -- FILE.wav [en|fr|auto] [--timestamps]
//! [--context "PREVIOUS TEXT"]`

use std::path::Path;

use soustitre::asr::{DecodeOptions, Language};
use soustitre::engine::{DEFAULT_MODEL, Engine};

fn read_wav(path: &Path) -> anyhow::Result<Vec<f32>> {
    let b = std::fs::read(path)?;
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into()?) as usize;
        if &b[i..i + 4] == b"data" {
            let data = &b[i + 8..(i + 8 + len).min(b.len())];
            return Ok(data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect());
        }
        i += 8 + len + (len & 1);
    }
    anyhow::bail!(
        "{}: no data chunk (16-bit PCM WAV expected)",
        path.display()
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        anyhow::bail!("usage: decode_window FILE.wav [en|fr|auto] [--timestamps]")
    };
    let language = match args.get(1).map(String::as_str).unwrap_or("en") {
        "auto" => Language::Detect {
            prefer: None,
            switch_confidence: 1.0,
            among: Vec::new(),
        },
        code => Language::Fixed(code.to_string()),
    };
    let model = std::env::var("SOUSTITRE_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string());
    let engine = Engine::prepare_default(&model)?;
    let mut whisper = engine.whisper()?;
    let audio = read_wav(Path::new(file))?;
    let context = match args.iter().position(|a| a == "--context") {
        Some(i) => whisper.encode_text(&format!(" {}", args.get(i + 1).map_or("", |s| s)))?,
        None => Vec::new(),
    };
    let opts = DecodeOptions {
        language,
        timestamps: args.iter().any(|a| a == "--timestamps"),
        context,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let d = whisper.transcribe(&audio, &opts)?;
    println!("{}", d.text);
    eprintln!(
        "{model}: {:.2} s of audio in {:.3} s; language {:?} (p={:.2}), no-speech {:.2}, avg logprob {:.2}, guards {:?}",
        audio.len() as f64 / 16_000.0,
        t.elapsed().as_secs_f64(),
        d.language,
        d.language_prob,
        d.no_speech_prob,
        d.avg_logprob,
        d.guards
    );
    for p in &d.pieces {
        eprintln!("  [{:?} .. {:?}] {}", p.start, p.end, p.text.trim());
    }
    Ok(())
}
