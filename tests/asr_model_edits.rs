//! The models as the captioner loads them compute exactly what the published ones do, for what
//! it reads: the decoder edited to compute only the logit rows asked for gives, for those rows,
//! the published decoder's logits (and the same self-attention cache), on both Whisper models;
//! the mel front end without its 30 s window gives the published front end's first frames.

use crate::common;

use ort::session::Session;
use ort::value::Tensor;
use rand::{Rng, SeedableRng};
use soustitre::asr::{MelFrontend, ROWS_INPUT, select_logit_rows};
use soustitre::models::ModelStore;
use soustitre::onnx;

/// Seeded uniform values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

struct Step {
    logits: Vec<f32>,
    rows: usize,
    self_k: Vec<f32>,
}

fn run(session: &mut Session, tokens: &[i64], rows: Option<&[i64]>, frames: usize) -> Step {
    let (layers, dim) = (
        session_dim(session, "cross_k", 0),
        session_dim(session, "cross_k", 3),
    );
    let empty = Tensor::from_array(([layers, 1, 0, dim], Vec::<f32>::new())).unwrap();
    let cross = noise(layers * frames * dim, 7);
    let cross_k = Tensor::from_array(([layers, 1, frames, dim], cross.clone())).unwrap();
    let cross_v = Tensor::from_array(([layers, 1, frames, dim], noise(cross.len(), 11))).unwrap();
    let toks = Tensor::from_array(([1, tokens.len()], tokens.to_vec())).unwrap();
    let mut inputs = ort::inputs![
        "tokens" => toks,
        "self_k" => &empty,
        "self_v" => &empty,
        "cross_k" => cross_k,
        "cross_v" => cross_v,
    ];
    if let Some(rows) = rows {
        let t = Tensor::from_array(([rows.len()], rows.to_vec())).unwrap();
        inputs.push((ROWS_INPUT.into(), t.into()));
    }
    let out = session.run(inputs).unwrap();
    let (shape, logits) = out["logits"].try_extract_tensor::<f32>().unwrap();
    let (_, self_k) = out["new_self_k"].try_extract_tensor::<f32>().unwrap();
    Step {
        logits: logits.to_vec(),
        rows: shape[1] as usize,
        self_k: self_k.to_vec(),
    }
}

/// A fixed dimension of a decoder input, from the session's metadata.
fn session_dim(session: &Session, input: &str, axis: usize) -> usize {
    let i = session.inputs().iter().find(|i| i.name() == input).unwrap();
    let shape = i.dtype().tensor_shape().unwrap();
    shape[axis] as usize
}

fn check(model: &str) {
    common::engine(model);
    let store = ModelStore::open_default().unwrap();
    let bundle = store.ensure(model).unwrap();
    let path = bundle.require("decoder.int8.onnx").unwrap();
    let bytes = std::fs::read(path).unwrap();
    let edited = select_logit_rows(&bytes).expect("the published decoder is editable");
    let mut published = onnx::session(path).unwrap();
    let mut selecting = onnx::session_from_memory(path, &edited).unwrap();
    assert!(selecting.inputs().iter().any(|i| i.name() == ROWS_INPUT));

    // A prompt step of 40 positions over 3 s of (noise) encoder output.
    let tokens: Vec<i64> = (0..40).map(|i| 220 + 37 * i).collect();
    let full = run(&mut published, &tokens, None, 150);
    assert_eq!(full.rows, tokens.len());
    let vocab = full.logits.len() / full.rows;
    let rows = [5i64, 39, -1, 0];
    let some = run(&mut selecting, &tokens, Some(&rows), 150);
    assert_eq!(some.rows, rows.len());
    for (k, r) in rows.iter().enumerate() {
        let r = r.rem_euclid(tokens.len() as i64) as usize;
        assert_eq!(
            some.logits[k * vocab..(k + 1) * vocab],
            full.logits[r * vocab..(r + 1) * vocab],
            "{model}: row {r}"
        );
    }
    assert_eq!(some.self_k, full.self_k, "{model}: self-attention cache");
    // One position (a single-token step).
    let one = run(&mut published, &tokens[..1], None, 150);
    let sel = run(&mut selecting, &tokens[..1], Some(&[0]), 150);
    assert_eq!(sel.logits, one.logits, "{model}: single step");
}

#[test]
fn selected_rows_equal_the_published_decoders_rows_whisper_base() {
    check("whisper-base");
}

#[test]
fn selected_rows_equal_the_published_decoders_rows_whisper_tiny_en() {
    check("whisper-tiny.en");
}

/// Features `[80, T]` of the published front end for `wave`, and T.
fn published_mel(session: &mut Session, wave: &[f32]) -> (Vec<f32>, usize) {
    let w = Tensor::from_array(([1, wave.len()], wave.to_vec())).unwrap();
    let len = Tensor::from_array(([1], vec![wave.len() as i64])).unwrap();
    let out = session
        .run(ort::inputs!["waveforms" => w, "waveforms_lens" => len])
        .unwrap();
    let (shape, data) = out["features"].try_extract_tensor::<f32>().unwrap();
    (data.to_vec(), shape[2] as usize)
}

#[test]
fn the_mel_front_end_without_its_window_gives_the_published_frames() {
    common::engine("whisper-base");
    let store = ModelStore::open_default().unwrap();
    let bundle = store.ensure("whisper-base").unwrap();
    let path = bundle.require("whisper80_conv.onnx").unwrap();
    let mut published = onnx::session(path).unwrap();
    let mut mel = MelFrontend::load(path).unwrap();
    let speech = common::read_wav(&common::corpus("meetings/en_3spk/meeting.wav"));
    // As the recognizer calls it: the audio, then at least a second of silence (the context
    // pad), or a full window; and a window cut from longer audio.
    for (audio_s, frames) in [
        (0.5, 150),
        (3.2, 420),
        (11.0, 1200),
        (29.0, 3000),
        (40.0, 3000),
    ] {
        let audio = &speech[16_000..16_000 + (audio_s * 16_000.0) as usize];
        let mut wave = audio.to_vec();
        wave.resize(3000 * 160, 0.0);
        let (full, t) = published_mel(&mut published, &wave[..3000 * 160]);
        assert_eq!(t, 3000);
        let ours = mel.compute(audio, frames).unwrap();
        assert_eq!(ours.len(), 80 * frames, "{audio_s} s");
        for bin in 0..80 {
            assert_eq!(
                ours[bin * frames..(bin + 1) * frames],
                full[bin * t..bin * t + frames],
                "{audio_s} s of audio, {frames} frames: mel bin {bin}"
            );
        }
    }
}
