//! CAM++ speaker embeddings (ONNX): raw 16 kHz waveform in, one 192-dimensional vector out.
//!
//! The graph computes its own Kaldi fbank with per-utterance mean normalisation, so the window is
//! passed as is. The output is not normalised; [`CampPlus::embed`] returns it L2-normalised so
//! that a dot product is the cosine similarity.
//!
//! Cost: ~30 ms per 1.5 s window on one core (one intra-op thread).

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use crate::onnx::{self, OnnxError};

/// Dimension of a CAM++ embedding.
pub const EMBEDDING_DIM: usize = 192;
/// Shortest window the graph accepts (one 25 ms fbank frame).
pub const MIN_SAMPLES: usize = 400;
const MODEL: &str = "campplus";

/// A CAM++ session.
pub struct CampPlus {
    session: Session,
}

impl CampPlus {
    /// Loads the model (ONNX Runtime must be initialised).
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        Ok(Self {
            session: onnx::session(path)?,
        })
    }

    /// The L2-normalised embedding of `samples` (16 kHz, in [-1, 1]). Windows shorter than
    /// [`MIN_SAMPLES`] are refused.
    pub fn embed(&mut self, samples: &[f32]) -> Result<Vec<f32>, OnnxError> {
        if samples.len() < MIN_SAMPLES {
            return Err(OnnxError::Run {
                model: MODEL,
                detail: format!("window of {} samples is below {MIN_SAMPLES}", samples.len()),
            });
        }
        let input = TensorRef::from_array_view(([1usize, samples.len()], samples))
            .map_err(onnx::run_err(MODEL))?;
        let outputs = self
            .session
            .run(ort::inputs!["waveform" => input])
            .map_err(onnx::run_err(MODEL))?;
        let (_, e) = outputs["embedding"]
            .try_extract_tensor::<f32>()
            .map_err(onnx::out_err(MODEL))?;
        if e.len() != EMBEDDING_DIM {
            return Err(OnnxError::Output {
                model: MODEL,
                detail: format!("embedding has {} values, expected {EMBEDDING_DIM}", e.len()),
            });
        }
        let mut v = e.to_vec();
        normalise(&mut v);
        if v.iter().any(|x| !x.is_finite()) {
            return Err(OnnxError::Output {
                model: MODEL,
                detail: "embedding is not finite".into(),
            });
        }
        Ok(v)
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
