//! Decoder graph edit: the output projection for the rows the decoder reads, not for every
//! position fed in.
//!
//! The Whisper decoders end in `LayerNorm → DynamicQuantizeLinear → MatMulInteger → Cast → Mul`
//! (or `MatMul [→ Add]` unquantised): a projection onto the whole vocabulary (51,865 tokens for
//! the multilingual models) computed for every position of the step. A prompt step feeds up to
//! ~110 positions (previous text, the start-of-transcript sequence, a forced prefix) and the
//! decoder reads at most two rows of its logits (the start-of-transcript row, for the no-speech
//! and language probabilities, and the last row, for the next token): projecting the others is
//! about half of the step's multiply-adds.
//!
//! [`select_logit_rows`] rewrites a decoder, in memory when it is loaded, so that the
//! projection's left operand first goes through a `Gather` on a new int64 input
//! [`ROWS_INPUT`] (shape `[K]`, the positions wanted, negative indices counting from the end):
//! `logits` becomes `[1, K, vocab]`. Only the projection and the element-wise nodes after it
//! change; quantised models keep their per-tensor activation scale computed over every position,
//! so the rows kept are bit-identical to the full model's.
//!
//! The edit works on the protobuf wire format ([`crate::onnx::graph`]). A graph that does not
//! end in such a projection is refused with [`EditError::Pattern`]; the caller then uses the
//! model as published.

use std::collections::{HashMap, HashSet};

use crate::onnx::graph::{
    ATTR_I, ATTR_NAME, ATTR_TYPE, ATTR_TYPE_INT, EditError, Field, GRAPH_INPUT, GRAPH_NODE,
    GRAPH_OUTPUT, GRAPH_VALUE_INFO, NODE_ATTRIBUTE, NODE_INPUT, NODE_NAME, NODE_OP_TYPE,
    NODE_OUTPUT, Node, SHAPE_DIM, TENSOR_ELEM_TYPE, TENSOR_SHAPE, TYPE_TENSOR, VALUE_INFO_TYPE,
    edit_model, parse, put_bytes, put_varint_field, rename_input, symbolic_dim, value_info,
    value_info_name,
};

/// Name of the input added by [`select_logit_rows`]: int64 `[K]`, the positions whose logits
/// are computed.
pub const ROWS_INPUT: &str = "logit_rows";
/// Name of the graph output edited.
const LOGITS: &str = "logits";
/// Name given to the symbolic dimension of the selected rows.
const ROWS_DIM: &str = "K";
/// Nodes followed back from the logits to the projection: element-wise, row by row.
const PASS_THROUGH: [&str; 3] = ["Mul", "Cast", "Add"];
/// Projection ops whose first input holds one row per position.
const PROJECTIONS: [&str; 2] = ["MatMulInteger", "MatMul"];
/// Steps followed back from the logits before giving up.
const MAX_DEPTH: usize = 6;

/// Returns `model` (a serialized ONNX `ModelProto`) with the logits computed only for the
/// positions given in the new input [`ROWS_INPUT`].
pub fn select_logit_rows(model: &[u8]) -> Result<Vec<u8>, EditError> {
    edit_model(model, edit_graph)
}

fn edit_graph(graph: &[u8]) -> Result<Vec<u8>, EditError> {
    let fields = parse(graph)?;
    let mut nodes = Vec::new();
    let mut node_field = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        match f.number {
            GRAPH_NODE => {
                let node = Node::parse(f.payload()?)?;
                names.extend(node.outputs.iter().copied());
                nodes.push(node);
                node_field.push(i);
            }
            GRAPH_INPUT => {
                names.insert(value_info_name(f.payload()?)?);
            }
            _ => {}
        }
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (*o, i)))
        .collect();

    // Walk back from the logits through element-wise nodes to the projection.
    let start = *producer
        .get(LOGITS)
        .ok_or_else(|| EditError::Pattern(format!("no node produces `{LOGITS}`")))?;
    let mut projections = Vec::new();
    let mut after = Vec::new();
    let mut stack = vec![(start, 0usize)];
    let mut seen = HashSet::new();
    while let Some((i, depth)) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let node = &nodes[i];
        if PROJECTIONS.contains(&node.op_type) {
            projections.push(i);
        } else if PASS_THROUGH.contains(&node.op_type) && depth < MAX_DEPTH {
            after.push(i);
            for input in &node.inputs {
                if let Some(&p) = producer.get(input) {
                    stack.push((p, depth + 1));
                }
            }
        }
    }
    let [projection] = projections.as_slice() else {
        return Err(EditError::Pattern(format!(
            "{} projections found before `{LOGITS}`",
            projections.len()
        )));
    };
    let projection = *projection;
    let operand = *nodes[projection]
        .inputs
        .first()
        .ok_or_else(|| EditError::Pattern("the projection has no input".into()))?;
    let selected = format!("{operand}.{ROWS_INPUT}");
    for name in [ROWS_INPUT, selected.as_str()] {
        if names.contains(name) {
            return Err(EditError::Pattern(format!("`{name}` already exists")));
        }
    }
    // Tensors whose shape changes: the projection's and the element-wise nodes' outputs.
    let changed: HashSet<&str> = after
        .iter()
        .chain(std::iter::once(&projection))
        .flat_map(|i| nodes[*i].outputs.iter().copied())
        .collect();

    let mut out = Vec::with_capacity(graph.len() + 256);
    let mut last_input = None;
    for (i, f) in fields.iter().enumerate() {
        match f.number {
            GRAPH_NODE if i == node_field[projection] => {
                put_bytes(&mut out, GRAPH_NODE, &gather_node(operand, &selected));
                put_bytes(
                    &mut out,
                    GRAPH_NODE,
                    &rename_input(f.payload()?, operand, &selected)?,
                );
            }
            GRAPH_VALUE_INFO if changed.contains(value_info_name(f.payload()?)?) => {}
            GRAPH_OUTPUT if value_info_name(f.payload()?)? == LOGITS => {
                put_bytes(&mut out, GRAPH_OUTPUT, &rows_logits(f.payload()?)?);
            }
            _ => out.extend_from_slice(f.raw),
        }
        if f.number == GRAPH_INPUT {
            last_input = Some(out.len());
        }
    }
    // The new input goes after the last existing one (the order of inputs is kept).
    let mut shape = Vec::new();
    put_bytes(&mut shape, SHAPE_DIM, &symbolic_dim(ROWS_DIM));
    let mut input = Vec::new();
    put_bytes(
        &mut input,
        GRAPH_INPUT,
        &value_info(ROWS_INPUT, crate::onnx::graph::ELEM_INT64, &shape),
    );
    let at = last_input.unwrap_or(out.len());
    out.splice(at..at, input);
    Ok(out)
}

/// `Gather(operand, rows, axis = 1) → selected`.
fn gather_node(operand: &str, selected: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    put_bytes(&mut attr, ATTR_NAME, b"axis");
    put_varint_field(&mut attr, ATTR_I, 1);
    put_varint_field(&mut attr, ATTR_TYPE, ATTR_TYPE_INT);
    let mut node = Vec::new();
    put_bytes(&mut node, NODE_INPUT, operand.as_bytes());
    put_bytes(&mut node, NODE_INPUT, ROWS_INPUT.as_bytes());
    put_bytes(&mut node, NODE_OUTPUT, selected.as_bytes());
    put_bytes(
        &mut node,
        NODE_NAME,
        format!("{selected}.gather").as_bytes(),
    );
    put_bytes(&mut node, NODE_OP_TYPE, b"Gather");
    put_bytes(&mut node, NODE_ATTRIBUTE, &attr);
    node
}

/// The logits output with its second dimension renamed [`ROWS_DIM`] (the rest of its type
/// kept).
fn rows_logits(value_info_bytes: &[u8]) -> Result<Vec<u8>, EditError> {
    let bad = |what: &str| EditError::Pattern(format!("`{LOGITS}` output: {what}"));
    let fields = parse(value_info_bytes)?;
    let ty = fields
        .iter()
        .find(|f| f.number == VALUE_INFO_TYPE)
        .ok_or_else(|| bad("no type"))?;
    let tensor = parse(ty.payload()?)?
        .into_iter()
        .find(|f| f.number == TYPE_TENSOR)
        .ok_or_else(|| bad("not a tensor"))?;
    let tensor = parse(tensor.payload()?)?;
    let elem = tensor
        .iter()
        .find(|f| f.number == TENSOR_ELEM_TYPE)
        .ok_or_else(|| bad("no element type"))?
        .varint()?;
    let mut shape = Vec::new();
    if let Some(s) = tensor.iter().find(|f| f.number == TENSOR_SHAPE) {
        let dims: Vec<Field> = parse(s.payload()?)?
            .into_iter()
            .filter(|f| f.number == SHAPE_DIM)
            .collect();
        if dims.len() != 3 {
            return Err(bad(&format!("rank {}, expected 3", dims.len())));
        }
        for (i, d) in dims.iter().enumerate() {
            if i == 1 {
                put_bytes(&mut shape, SHAPE_DIM, &symbolic_dim(ROWS_DIM));
            } else {
                shape.extend_from_slice(d.raw);
            }
        }
    }
    Ok(value_info(value_info_name(value_info_bytes)?, elem, &shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::build::{graph_of, model, names, node, nodes};
    use crate::onnx::graph::{DIM_VALUE, ELEM_FLOAT, ELEM_INT64, GRAPH_VALUE_INFO};

    /// A `[1, dim, 1]` logits output type (a symbolic middle dimension).
    fn logits_output(dim: &str) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in [None, Some(dim), None] {
            let dim = match d {
                Some(p) => symbolic_dim(p),
                None => {
                    let mut v = Vec::new();
                    put_varint_field(&mut v, DIM_VALUE, 1);
                    v
                }
            };
            put_bytes(&mut shape, SHAPE_DIM, &dim);
        }
        value_info(LOGITS, ELEM_FLOAT, &shape)
    }

    /// tokens → Gather → DynamicQuantizeLinear → MatMulInteger → Cast → Mul → logits, with a
    /// second Mul for the scale (which must not be taken for the projection's path).
    fn decoder_like() -> Vec<u8> {
        let mut graph = Vec::new();
        for n in [
            node(&["tokens", "w"], &["h"], "Gather", &[]),
            node(&["h"], &["q", "s", "z"], "DynamicQuantizeLinear", &[]),
            node(&["s", "ws"], &["scale"], "Mul", &[]),
            node(&["q", "wq", "z", "wz"], &["acc"], "MatMulInteger", &[]),
            node(&["acc"], &["accf"], "Cast", &[]),
            node(&["accf", "scale"], &[LOGITS], "Mul", &[]),
        ] {
            put_bytes(&mut graph, GRAPH_NODE, &n);
        }
        put_bytes(
            &mut graph,
            GRAPH_INPUT,
            &value_info("tokens", ELEM_INT64, &[]),
        );
        put_bytes(&mut graph, GRAPH_OUTPUT, &logits_output("N"));
        put_bytes(&mut graph, GRAPH_VALUE_INFO, &value_info("acc", 6, &[]));
        put_bytes(
            &mut graph,
            GRAPH_VALUE_INFO,
            &value_info("h", ELEM_FLOAT, &[]),
        );
        model(&graph)
    }

    #[test]
    fn a_gather_on_the_rows_feeds_the_projection() {
        let edited = select_logit_rows(&decoder_like()).unwrap();
        let graph = graph_of(&edited);
        let nodes = nodes(&graph);
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type).collect();
        assert_eq!(
            ops,
            [
                "Gather",
                "DynamicQuantizeLinear",
                "Mul",
                "Gather",
                "MatMulInteger",
                "Cast",
                "Mul"
            ]
        );
        assert_eq!(nodes[3].inputs, ["q", ROWS_INPUT]);
        assert_eq!(nodes[3].outputs, ["q.logit_rows"]);
        assert_eq!(nodes[3].attribute("axis").and_then(|a| a.i), Some(1));
        assert_eq!(nodes[4].inputs, ["q.logit_rows", "wq", "z", "wz"]);
        // Inputs: tokens, then the rows; the changed tensor's value_info goes, the others stay.
        assert_eq!(names(&graph, GRAPH_INPUT), ["tokens", ROWS_INPUT]);
        assert_eq!(names(&graph, GRAPH_VALUE_INFO), ["h"]);
    }

    #[test]
    fn the_logits_output_gets_a_rows_dimension() {
        let edited = select_logit_rows(&decoder_like()).unwrap();
        let graph = graph_of(&edited);
        let out = parse(&graph)
            .unwrap()
            .into_iter()
            .find(|f| f.number == GRAPH_OUTPUT)
            .unwrap();
        assert_eq!(out.payload().unwrap(), logits_output(ROWS_DIM).as_slice());
    }

    #[test]
    fn graphs_without_a_projection_are_refused() {
        let mut graph = Vec::new();
        put_bytes(
            &mut graph,
            GRAPH_NODE,
            &node(&["x"], &[LOGITS], "Softmax", &[]),
        );
        assert!(matches!(
            select_logit_rows(&model(&graph)),
            Err(EditError::Pattern(_))
        ));
        assert!(matches!(
            select_logit_rows(&model(&[])),
            Err(EditError::Pattern(_))
        ));
        // An input already named like the one added.
        let mut graph = Vec::new();
        put_bytes(
            &mut graph,
            GRAPH_NODE,
            &node(&["x", "w"], &[LOGITS], "MatMul", &[]),
        );
        put_bytes(
            &mut graph,
            GRAPH_INPUT,
            &value_info(ROWS_INPUT, ELEM_INT64, &[]),
        );
        assert!(matches!(
            select_logit_rows(&model(&graph)),
            Err(EditError::Pattern(_))
        ));
    }
}
