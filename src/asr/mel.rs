//! Whisper's 80-bin log-mel front end (`whisper80_conv.onnx`).
//!
//! The graph always returns 3000 frames (a 30 s window); the audio is padded or cut to
//! `n_frames * 160` samples and the first `n_frames` frames are kept.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use crate::onnx::{self, OnnxError};

/// Samples per mel frame (10 ms at 16 kHz).
pub const HOP: usize = 160;
/// Frames of the standard 30 s Whisper window.
pub const MAX_FRAMES: usize = 3000;
/// Mel bins.
pub const N_MELS: usize = 80;
const MODEL: &str = "whisper mel front end";

/// The log-mel front end.
pub struct MelFrontend {
    session: Session,
    buf: Vec<f32>,
}

impl MelFrontend {
    /// Loads `whisper80_conv.onnx`.
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        Ok(Self {
            session: onnx::session(path)?,
            buf: Vec::new(),
        })
    }

    /// Log-mel features `[80, n_frames]` (row-major) of `audio`, zero-padded to `n_frames` frames.
    pub fn compute(&mut self, audio: &[f32], n_frames: usize) -> Result<Vec<f32>, OnnxError> {
        let n_frames = n_frames.min(MAX_FRAMES);
        let n = n_frames * HOP;
        self.buf.clear();
        self.buf.extend_from_slice(&audio[..audio.len().min(n)]);
        self.buf.resize(n, 0.0);
        let wave = TensorRef::from_array_view(([1usize, n], &self.buf[..]))
            .map_err(onnx::run_err(MODEL))?;
        let len = [n as i64];
        let lens =
            TensorRef::from_array_view(([1usize], &len[..])).map_err(onnx::run_err(MODEL))?;
        let outputs = self
            .session
            .run(ort::inputs!["waveforms" => wave, "waveforms_lens" => lens])
            .map_err(onnx::run_err(MODEL))?;
        let (shape, data) = outputs["features"]
            .try_extract_tensor::<f32>()
            .map_err(onnx::out_err(MODEL))?;
        if shape.len() != 3 || shape[1] != N_MELS as i64 || (shape[2] as usize) < n_frames {
            return Err(OnnxError::Output {
                model: MODEL,
                detail: format!("features shape {shape:?}"),
            });
        }
        let t = shape[2] as usize;
        let mut mel = Vec::with_capacity(N_MELS * n_frames);
        for row in 0..N_MELS {
            mel.extend_from_slice(&data[row * t..row * t + n_frames]);
        }
        Ok(mel)
    }
}
