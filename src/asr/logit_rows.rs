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
//! The edit works on the protobuf wire format: the model's and graph's fields are walked, the
//! graph's nodes, inputs, outputs and `value_info` entries are read, and everything else
//! (weights, metadata, opsets) is copied byte for byte. A graph that does not end in such a
//! projection is refused with [`GraphEditError::Pattern`]; the caller then uses the model as
//! published.

use std::collections::{HashMap, HashSet};

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

// Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
// ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto, Dimension).
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const ATTR_NAME: u32 = 1;
const ATTR_I: u32 = 3;
const ATTR_TYPE: u32 = 20;
const ATTR_TYPE_INT: u64 = 2;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
const TYPE_TENSOR: u32 = 1;
const TENSOR_ELEM_TYPE: u32 = 1;
const TENSOR_SHAPE: u32 = 2;
const SHAPE_DIM: u32 = 1;
#[cfg(test)]
const DIM_VALUE: u32 = 1;
const DIM_PARAM: u32 = 2;
const ELEM_INT64: u64 = 7;

/// Why a model could not be edited.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphEditError {
    /// The bytes are not a well-formed protobuf message.
    #[error("not a valid ONNX protobuf: {0}")]
    Wire(&'static str),
    /// The graph does not have the shape the edit expects.
    #[error("decoder graph not editable: {0}")]
    Pattern(String),
}

/// Returns `model` (a serialized ONNX `ModelProto`) with the logits computed only for the
/// positions given in the new input [`ROWS_INPUT`].
pub fn select_logit_rows(model: &[u8]) -> Result<Vec<u8>, GraphEditError> {
    let fields = parse(model)?;
    let graphs: Vec<&Field> = fields.iter().filter(|f| f.number == MODEL_GRAPH).collect();
    let [graph] = graphs.as_slice() else {
        return Err(GraphEditError::Pattern(format!(
            "{} graph fields in the model",
            graphs.len()
        )));
    };
    let graph = graph.payload()?;
    let edited = edit_graph(graph)?;
    let mut out = Vec::with_capacity(model.len() + 256);
    for f in &fields {
        if f.number == MODEL_GRAPH {
            put_bytes(&mut out, MODEL_GRAPH, &edited);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// One node of the graph, as far as the edit needs it.
struct Node<'a> {
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    op_type: &'a str,
}

fn edit_graph(graph: &[u8]) -> Result<Vec<u8>, GraphEditError> {
    let fields = parse(graph)?;
    let mut nodes = Vec::new();
    let mut node_field = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        match f.number {
            GRAPH_NODE => {
                let node = parse_node(f.payload()?)?;
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
        .ok_or_else(|| GraphEditError::Pattern(format!("no node produces `{LOGITS}`")))?;
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
        return Err(GraphEditError::Pattern(format!(
            "{} projections found before `{LOGITS}`",
            projections.len()
        )));
    };
    let projection = *projection;
    let operand = *nodes[projection]
        .inputs
        .first()
        .ok_or_else(|| GraphEditError::Pattern("the projection has no input".into()))?;
    let selected = format!("{operand}.{ROWS_INPUT}");
    for name in [ROWS_INPUT, selected.as_str()] {
        if names.contains(name) {
            return Err(GraphEditError::Pattern(format!("`{name}` already exists")));
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
                    &replace_first_input(f.payload()?, &selected)?,
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
    let mut input = Vec::new();
    put_bytes(&mut input, GRAPH_INPUT, &rows_input());
    let at = last_input.unwrap_or(out.len());
    out.splice(at..at, input);
    Ok(out)
}

fn parse_node(bytes: &[u8]) -> Result<Node<'_>, GraphEditError> {
    let mut node = Node {
        inputs: Vec::new(),
        outputs: Vec::new(),
        op_type: "",
    };
    for f in parse(bytes)? {
        match f.number {
            NODE_INPUT => node.inputs.push(f.string()?),
            NODE_OUTPUT => node.outputs.push(f.string()?),
            NODE_OP_TYPE => node.op_type = f.string()?,
            _ => {}
        }
    }
    Ok(node)
}

fn value_info_name(bytes: &[u8]) -> Result<&str, GraphEditError> {
    parse(bytes)?
        .into_iter()
        .find(|f| f.number == VALUE_INFO_NAME)
        .map_or(Ok(""), |f| f.string())
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

fn replace_first_input(node: &[u8], input: &str) -> Result<Vec<u8>, GraphEditError> {
    let mut out = Vec::with_capacity(node.len() + input.len());
    let mut done = false;
    for f in parse(node)? {
        if f.number == NODE_INPUT && !done {
            put_bytes(&mut out, NODE_INPUT, input.as_bytes());
            done = true;
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// `logit_rows: int64 [K]`.
fn rows_input() -> Vec<u8> {
    let mut dim = Vec::new();
    put_bytes(&mut dim, DIM_PARAM, ROWS_DIM.as_bytes());
    let mut shape = Vec::new();
    put_bytes(&mut shape, SHAPE_DIM, &dim);
    value_info(ROWS_INPUT, ELEM_INT64, &shape)
}

/// The logits output with its second dimension renamed [`ROWS_DIM`] (the rest of its type
/// kept).
fn rows_logits(value_info_bytes: &[u8]) -> Result<Vec<u8>, GraphEditError> {
    let bad = |what: &str| GraphEditError::Pattern(format!("`{LOGITS}` output: {what}"));
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
                let mut dim = Vec::new();
                put_bytes(&mut dim, DIM_PARAM, ROWS_DIM.as_bytes());
                put_bytes(&mut shape, SHAPE_DIM, &dim);
            } else {
                shape.extend_from_slice(d.raw);
            }
        }
    }
    let name = value_info_name(value_info_bytes)?;
    Ok(value_info(name, elem, &shape))
}

fn value_info(name: &str, elem: u64, shape: &[u8]) -> Vec<u8> {
    let mut tensor = Vec::new();
    put_varint_field(&mut tensor, TENSOR_ELEM_TYPE, elem);
    if !shape.is_empty() {
        put_bytes(&mut tensor, TENSOR_SHAPE, shape);
    }
    let mut ty = Vec::new();
    put_bytes(&mut ty, TYPE_TENSOR, &tensor);
    let mut vi = Vec::new();
    put_bytes(&mut vi, VALUE_INFO_NAME, name.as_bytes());
    put_bytes(&mut vi, VALUE_INFO_TYPE, &ty);
    vi
}

// --- Protobuf wire format ---------------------------------------------------------------

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a message: its number, wire type, whole encoding (key included) and value
/// bytes (a varint's bytes, or a length-delimited field's content).
struct Field<'a> {
    number: u32,
    wire: u8,
    raw: &'a [u8],
    value: &'a [u8],
}

impl<'a> Field<'a> {
    fn payload(&self) -> Result<&'a [u8], GraphEditError> {
        if self.wire == WIRE_LEN {
            Ok(self.value)
        } else {
            Err(GraphEditError::Wire("expected a length-delimited field"))
        }
    }

    fn string(&self) -> Result<&'a str, GraphEditError> {
        std::str::from_utf8(self.payload()?).map_err(|_| GraphEditError::Wire("string not UTF-8"))
    }

    fn varint(&self) -> Result<u64, GraphEditError> {
        if self.wire != WIRE_VARINT {
            return Err(GraphEditError::Wire("expected a varint field"));
        }
        let mut at = 0;
        read_varint(self.value, &mut at)
    }
}

/// The top-level fields of one message.
fn parse(buf: &[u8]) -> Result<Vec<Field<'_>>, GraphEditError> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = read_varint(buf, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| GraphEditError::Wire("field number"))?;
        if number == 0 {
            return Err(GraphEditError::Wire("field number 0"));
        }
        let wire = (key & 7) as u8;
        let value_start;
        match wire {
            WIRE_VARINT => {
                value_start = at;
                read_varint(buf, &mut at)?;
            }
            WIRE_I64 | WIRE_I32 => {
                value_start = at;
                at += if wire == WIRE_I64 { 8 } else { 4 };
            }
            WIRE_LEN => {
                let len = read_varint(buf, &mut at)?;
                let len = usize::try_from(len).map_err(|_| GraphEditError::Wire("length"))?;
                value_start = at;
                at = at
                    .checked_add(len)
                    .ok_or(GraphEditError::Wire("length overflows"))?;
            }
            _ => return Err(GraphEditError::Wire("unsupported wire type")),
        }
        if at > buf.len() {
            return Err(GraphEditError::Wire("truncated field"));
        }
        fields.push(Field {
            number,
            wire,
            raw: &buf[start..at],
            value: &buf[value_start..at],
        });
    }
    Ok(fields)
}

fn read_varint(buf: &[u8], at: &mut usize) -> Result<u64, GraphEditError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*at)
            .ok_or(GraphEditError::Wire("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(GraphEditError::Wire("varint longer than 10 bytes"))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3 | u64::from(WIRE_VARINT));
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from(number) << 3 | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(inputs: &[&str], outputs: &[&str], op: &str) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, NODE_OUTPUT, o.as_bytes());
        }
        put_bytes(&mut n, NODE_OP_TYPE, op.as_bytes());
        n
    }

    fn logits_output() -> Vec<u8> {
        let mut shape = Vec::new();
        for d in [
            (DIM_VALUE, None, 1u64),
            (DIM_PARAM, Some("N"), 0),
            (DIM_VALUE, None, 51865),
        ] {
            let mut dim = Vec::new();
            match d.1 {
                Some(p) => put_bytes(&mut dim, DIM_PARAM, p.as_bytes()),
                None => put_varint_field(&mut dim, DIM_VALUE, d.2),
            }
            put_bytes(&mut shape, SHAPE_DIM, &dim);
        }
        value_info(LOGITS, 1, &shape)
    }

    /// tokens → LayerNorm → DynamicQuantizeLinear → MatMulInteger → Cast → Mul → logits, with a
    /// second Mul for the scale (which must not be taken for the projection's path).
    fn decoder_like() -> Vec<u8> {
        let mut graph = Vec::new();
        for n in [
            node(&["tokens", "w"], &["h"], "Gather"),
            node(&["h"], &["q", "s", "z"], "DynamicQuantizeLinear"),
            node(&["s", "ws"], &["scale"], "Mul"),
            node(&["q", "wq", "z", "wz"], &["acc"], "MatMulInteger"),
            node(&["acc"], &["accf"], "Cast"),
            node(&["accf", "scale"], &[LOGITS], "Mul"),
        ] {
            put_bytes(&mut graph, GRAPH_NODE, &n);
        }
        put_bytes(
            &mut graph,
            GRAPH_INPUT,
            &value_info("tokens", ELEM_INT64, &[]),
        );
        put_bytes(&mut graph, GRAPH_OUTPUT, &logits_output());
        put_bytes(&mut graph, GRAPH_VALUE_INFO, &value_info("acc", 6, &[]));
        put_bytes(&mut graph, GRAPH_VALUE_INFO, &value_info("h", 1, &[]));
        let mut model = Vec::new();
        put_varint_field(&mut model, 1, 8); // ir_version
        put_bytes(&mut model, MODEL_GRAPH, &graph);
        put_bytes(&mut model, 14, b"opaque metadata");
        model
    }

    fn graph_of(model: &[u8]) -> Vec<u8> {
        parse(model)
            .unwrap()
            .into_iter()
            .find(|f| f.number == MODEL_GRAPH)
            .unwrap()
            .value
            .to_vec()
    }

    #[test]
    fn a_gather_on_the_rows_feeds_the_projection() {
        let model = decoder_like();
        let edited = select_logit_rows(&model).unwrap();
        let graph = graph_of(&edited);
        let fields = parse(&graph).unwrap();
        let nodes: Vec<Node> = fields
            .iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| parse_node(f.value).unwrap())
            .collect();
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
        assert_eq!(nodes[4].inputs, ["q.logit_rows", "wq", "z", "wz"]);
        // The gather's axis attribute.
        let gather = parse(
            fields
                .iter()
                .filter(|f| f.number == GRAPH_NODE)
                .nth(3)
                .unwrap()
                .value,
        )
        .unwrap();
        let attr = gather.iter().find(|f| f.number == NODE_ATTRIBUTE).unwrap();
        let attr = parse(attr.value).unwrap();
        assert_eq!(attr[0].string().unwrap(), "axis");
        assert_eq!(attr[1].varint().unwrap(), 1);
        assert_eq!(attr[2].varint().unwrap(), ATTR_TYPE_INT);
        // Inputs: tokens, then the rows.
        let inputs: Vec<&str> = fields
            .iter()
            .filter(|f| f.number == GRAPH_INPUT)
            .map(|f| value_info_name(f.value).unwrap())
            .collect();
        assert_eq!(inputs, ["tokens", ROWS_INPUT]);
        // The changed tensor's value_info goes; the others stay.
        let infos: Vec<&str> = fields
            .iter()
            .filter(|f| f.number == GRAPH_VALUE_INFO)
            .map(|f| value_info_name(f.value).unwrap())
            .collect();
        assert_eq!(infos, ["h"]);
        // The other model fields are copied.
        let top: Vec<u32> = parse(&edited).unwrap().iter().map(|f| f.number).collect();
        assert_eq!(top, [1, MODEL_GRAPH, 14]);
        assert!(edited.ends_with(b"opaque metadata"));
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
        let mut shape = Vec::new();
        for (p, v) in [(None, 1u64), (Some(ROWS_DIM), 0), (None, 51865)] {
            let mut dim = Vec::new();
            match p {
                Some(p) => put_bytes(&mut dim, DIM_PARAM, p.as_bytes()),
                None => put_varint_field(&mut dim, DIM_VALUE, v),
            }
            put_bytes(&mut shape, SHAPE_DIM, &dim);
        }
        assert_eq!(out.value, value_info(LOGITS, 1, &shape).as_slice());
    }

    #[test]
    fn graphs_without_a_projection_are_refused() {
        let mut graph = Vec::new();
        put_bytes(&mut graph, GRAPH_NODE, &node(&["x"], &[LOGITS], "Softmax"));
        let mut model = Vec::new();
        put_bytes(&mut model, MODEL_GRAPH, &graph);
        assert!(matches!(
            select_logit_rows(&model),
            Err(GraphEditError::Pattern(_))
        ));
        let mut model = Vec::new();
        put_bytes(&mut model, MODEL_GRAPH, &[]);
        assert!(matches!(
            select_logit_rows(&model),
            Err(GraphEditError::Pattern(_))
        ));
    }

    #[test]
    fn malformed_bytes_are_refused() {
        // A length running past the end, a truncated varint, a group wire type.
        assert_eq!(
            select_logit_rows(&[0x3a, 0x05, 0x01]),
            Err(GraphEditError::Wire("truncated field"))
        );
        assert_eq!(
            select_logit_rows(&[0x3a, 0xff]),
            Err(GraphEditError::Wire("truncated varint"))
        );
        assert_eq!(
            select_logit_rows(&[0x3b]),
            Err(GraphEditError::Wire("unsupported wire type"))
        );
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 51865, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut at = 0;
            assert_eq!(read_varint(&buf, &mut at), Ok(v));
            assert_eq!(at, buf.len());
        }
    }
}
