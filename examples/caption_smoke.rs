//! Runs the captioner on a WAV file offline and prints events as JSONL.
use soustitre::asr::{ModelFiles, Whisper};
use soustitre::stream::{Captioner, StreamSettings};
use soustitre::vad::SileroVad;
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
    let model = std::env::var("MODEL").unwrap_or("whisper-base".into());
    soustitre::onnx::init(Path::new(
        "/tmp/ortx/onnxruntime/capi/libonnxruntime.so.1.31.1",
    ))?;
    let shared = Path::new("/work/shared/models");
    let w = Whisper::load(
        &model,
        &ModelFiles::in_dir(&shared.join(&model), &shared.join("whisper80_conv.onnx")),
    )?;
    let vad = SileroVad::load(&shared.join("silero_vad.onnx"))?;
    let mut settings = StreamSettings::default();
    if let Some(l) = args.get(2) {
        settings.language = l.parse().unwrap();
    }
    settings.partials = std::env::var("PARTIALS").is_ok();
    let t = std::time::Instant::now();
    let t2 = t;
    let mut c = Captioner::new(
        settings,
        "mix",
        w,
        vad,
        Box::new(move || t2.elapsed().as_secs_f64()),
    )?;
    let audio = read_wav(&args[1]);
    let mut out = Vec::new();
    for chunk in audio.chunks(1600) {
        c.push(chunk, false, &mut out)?;
        for e in out.drain(..) {
            println!("{}", serde_json::to_string(&e)?);
        }
    }
    c.finish(&mut out)?;
    for e in out.drain(..) {
        println!("{}", serde_json::to_string(&e)?);
    }
    eprintln!("{:.2}s wall, {:?}", t.elapsed().as_secs_f64(), c.stats());
    Ok(())
}
