//! Whisper's 80-bin log-mel front end (`whisper80_conv.onnx`).
//!
//! The audio is padded with zeros or cut to `n_frames * 160` samples and `n_frames` frames are
//! returned. The published graph first pads any input to a 30 s window and always computes 3000
//! frames (~15 ms on one core, whatever the audio's length); it is loaded without that padding
//! ([`without_window_pad`]), so it computes the frames asked for (~2 ms for 3 s). The features
//! are bit-identical: the frames past the audio are zeros either way (the decoder's context
//! always ends in [`super::CONTEXT_PAD_FRAMES`] of silence, or is the full window), and they
//! cannot raise the window maximum the log-mel is clamped against.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use crate::onnx::graph::{EditError, GRAPH_INPUT, GRAPH_NODE, GRAPH_VALUE_INFO, Node};
use crate::onnx::graph::{edit_model, parse, put_bytes, rename_input, value_info_name};
use crate::onnx::{self, OnnxError};

/// Samples per mel frame (10 ms at 16 kHz).
pub const HOP: usize = 160;
/// Frames of the standard 30 s Whisper window.
pub const MAX_FRAMES: usize = 3000;
/// Mel bins.
pub const N_MELS: usize = 80;
const MODEL: &str = "whisper mel front end";
/// The graph's audio input.
const WAVE_INPUT: &str = "waveforms";

/// The log-mel front end.
pub struct MelFrontend {
    session: Session,
    buf: Vec<f32>,
}

impl MelFrontend {
    /// Loads `whisper80_conv.onnx` (without its window padding when the graph allows it).
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        let (session, _) = onnx::edited_session(
            path,
            without_window_pad,
            "the mel front end computes a 30 s window every time",
        )?;
        Ok(Self {
            session,
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

/// Returns the front end `model` without the node padding its audio input with zeros (to a
/// 30 s window): its consumers read the input directly.
pub fn without_window_pad(model: &[u8]) -> Result<Vec<u8>, EditError> {
    edit_model(model, |graph| {
        let fields = parse(graph)?;
        let mut inputs = Vec::new();
        let mut pads = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            match f.number {
                GRAPH_INPUT => inputs.push(value_info_name(f.payload()?)?),
                GRAPH_NODE => {
                    let node = Node::parse(f.payload()?)?;
                    let constant = node
                        .attribute("mode")
                        .and_then(|a| a.s)
                        .is_none_or(|m| m == b"constant");
                    if node.op_type == "Pad"
                        && constant
                        && node.inputs.first() == Some(&WAVE_INPUT)
                        && node.outputs.len() == 1
                    {
                        pads.push((i, node.outputs[0]));
                    }
                }
                _ => {}
            }
        }
        if !inputs.contains(&WAVE_INPUT) {
            return Err(EditError::Pattern(format!("no input `{WAVE_INPUT}`")));
        }
        let [(pad, padded)] = pads.as_slice() else {
            return Err(EditError::Pattern(format!(
                "{} zero pads of `{WAVE_INPUT}`",
                pads.len()
            )));
        };
        let mut out = Vec::with_capacity(graph.len());
        for (i, f) in fields.iter().enumerate() {
            match f.number {
                GRAPH_NODE if i == *pad => {}
                GRAPH_NODE => put_bytes(
                    &mut out,
                    GRAPH_NODE,
                    &rename_input(f.payload()?, padded, WAVE_INPUT)?,
                ),
                GRAPH_VALUE_INFO if value_info_name(f.payload()?)? == *padded => {}
                _ => out.extend_from_slice(f.raw),
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::build::{graph_of, model, node, nodes, string_attr};
    use crate::onnx::graph::{ELEM_FLOAT, value_info};

    /// waveforms → Pad (zeros, to the window) → Pad (reflect) → Conv → features.
    fn front_end(first_pad_mode: Option<&str>) -> Vec<u8> {
        let attrs: Vec<Vec<u8>> = first_pad_mode
            .map(|m| string_attr("mode", m))
            .into_iter()
            .collect();
        let mut graph = Vec::new();
        for n in [
            node(&["waveforms"], &["len"], "Shape", &[]),
            node(&["waveforms", "pads"], &["w30"], "Pad", &attrs),
            node(
                &["w30", "edges"],
                &["wr"],
                "Pad",
                &[string_attr("mode", "reflect")],
            ),
            node(&["wr", "k"], &["features"], "Conv", &[]),
        ] {
            put_bytes(&mut graph, GRAPH_NODE, &n);
        }
        put_bytes(
            &mut graph,
            GRAPH_INPUT,
            &value_info(WAVE_INPUT, ELEM_FLOAT, &[]),
        );
        put_bytes(
            &mut graph,
            GRAPH_VALUE_INFO,
            &value_info("w30", ELEM_FLOAT, &[]),
        );
        model(&graph)
    }

    #[test]
    fn the_zero_pad_goes_and_the_reflect_pad_reads_the_input() {
        for mode in [None, Some("constant")] {
            let edited = without_window_pad(&front_end(mode)).unwrap();
            let graph = graph_of(&edited);
            let nodes = nodes(&graph);
            let ops: Vec<&str> = nodes.iter().map(|n| n.op_type).collect();
            assert_eq!(ops, ["Shape", "Pad", "Conv"]);
            assert_eq!(nodes[1].inputs, [WAVE_INPUT, "edges"]);
            assert!(
                !graph.windows(3).any(|w| w == b"w30"),
                "no trace of the padded tensor"
            );
        }
    }

    #[test]
    fn a_graph_without_a_zero_pad_of_the_input_is_refused() {
        assert!(matches!(
            without_window_pad(&front_end(Some("reflect"))),
            Err(EditError::Pattern(_))
        ));
        let mut graph = Vec::new();
        put_bytes(
            &mut graph,
            GRAPH_NODE,
            &node(&["x"], &["features"], "Conv", &[]),
        );
        assert!(matches!(
            without_window_pad(&model(&graph)),
            Err(EditError::Pattern(_))
        ));
    }
}
