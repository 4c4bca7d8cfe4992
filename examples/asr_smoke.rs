//! Decodes a 16 kHz mono 16-bit WAV file in one window and prints the text.
//! `cargo run --release --example asr_smoke -- FILE [en|fr|auto] [ts]`
use soustitre::asr::{DecodeOptions, Language, ModelFiles, Whisper};
use std::path::Path;

fn read_wav(path: &str) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
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
    panic!("no data chunk");
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let lang = args.get(2).map(String::as_str).unwrap_or("en");
    let ts = args.get(3).is_some_and(|a| a == "ts");
    let model = std::env::var("MODEL").unwrap_or("whisper-base".into());
    soustitre::onnx::init(Path::new(
        "/tmp/ortx/onnxruntime/capi/libonnxruntime.so.1.31.1",
    ))?;
    let shared = Path::new("/work/shared/models");
    let t = std::time::Instant::now();
    let mut w = Whisper::load(
        &model,
        &ModelFiles::in_dir(&shared.join(&model), &shared.join("whisper80_conv.onnx")),
    )?;
    eprintln!("load {:?}", t.elapsed());
    let audio = read_wav(&args[1]);
    let opts = DecodeOptions {
        language: if lang == "auto" {
            Language::Detect {
                prefer: None,
                switch_confidence: 0.8,
            }
        } else {
            Language::Fixed(lang.into())
        },
        timestamps: ts,
        ..Default::default()
    };
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let d = w.transcribe(&audio, &opts)?;
        println!(
            "{:?} {:.2}s audio in {:?}: {:?} lang={:?} p={:.2} nsp={:.2} lp={:.2} guards={:?}",
            model,
            audio.len() as f32 / 16000.0,
            t.elapsed(),
            d.text,
            d.language,
            d.language_prob,
            d.no_speech_prob,
            d.avg_logprob,
            d.guards
        );
        for p in &d.pieces {
            println!("   {:?}", p);
        }
    }
    Ok(())
}
