//! Small, exact edits of ONNX graphs on the protobuf wire format.
//!
//! The published models are used as they are hashed in the manifest; a few of them compute
//! more than the captioner reads (a 30 s window, logits for every position). The edits that
//! remove that work (`asr::logit_rows`, `asr::mel`) are applied in memory when a model is loaded
//! and leave the results bit-identical. This module gives them what they need and no more: the
//! fields of a `ModelProto` and of its `GraphProto` are walked, nodes, inputs, outputs and
//! `value_info` entries are decoded, and every other field (weights, metadata, opsets) is copied
//! byte for byte. No `.proto` compiler or ONNX library is involved.

/// Why a model could not be edited.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    /// The bytes are not a well-formed protobuf message.
    #[error("not a valid ONNX protobuf: {0}")]
    Wire(&'static str),
    /// The graph does not have the shape the edit expects.
    #[error("graph not editable: {0}")]
    Pattern(String),
}

// Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
// ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto, Dimension).
pub(crate) const MODEL_GRAPH: u32 = 7;
pub(crate) const GRAPH_NODE: u32 = 1;
pub(crate) const GRAPH_INITIALIZER: u32 = 5;
pub(crate) const GRAPH_INPUT: u32 = 11;
pub(crate) const GRAPH_OUTPUT: u32 = 12;
pub(crate) const GRAPH_VALUE_INFO: u32 = 13;
pub(crate) const NODE_INPUT: u32 = 1;
pub(crate) const NODE_OUTPUT: u32 = 2;
pub(crate) const NODE_NAME: u32 = 3;
pub(crate) const NODE_OP_TYPE: u32 = 4;
pub(crate) const NODE_ATTRIBUTE: u32 = 5;
pub(crate) const ATTR_NAME: u32 = 1;
pub(crate) const ATTR_I: u32 = 3;
pub(crate) const ATTR_S: u32 = 4;
pub(crate) const ATTR_TYPE: u32 = 20;
pub(crate) const ATTR_TYPE_INT: u64 = 2;
pub(crate) const VALUE_INFO_NAME: u32 = 1;
pub(crate) const VALUE_INFO_TYPE: u32 = 2;
pub(crate) const TYPE_TENSOR: u32 = 1;
pub(crate) const TENSOR_ELEM_TYPE: u32 = 1;
pub(crate) const TENSOR_SHAPE: u32 = 2;
pub(crate) const SHAPE_DIM: u32 = 1;
#[cfg(test)]
pub(crate) const DIM_VALUE: u32 = 1;
pub(crate) const DIM_PARAM: u32 = 2;
#[cfg(test)]
pub(crate) const ELEM_FLOAT: u64 = 1;
pub(crate) const ELEM_INT64: u64 = 7;

/// Returns `model` (a serialized `ModelProto`) with its graph replaced by `edit(graph)`.
pub(crate) fn edit_model(
    model: &[u8],
    edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, EditError>,
) -> Result<Vec<u8>, EditError> {
    let fields = parse(model)?;
    let graphs: Vec<&Field> = fields.iter().filter(|f| f.number == MODEL_GRAPH).collect();
    let [graph] = graphs.as_slice() else {
        return Err(EditError::Pattern(format!(
            "{} graph fields in the model",
            graphs.len()
        )));
    };
    let edited = edit(graph.payload()?)?;
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

/// One node of a graph: its inputs, outputs, operator and attributes.
#[derive(Debug)]
pub(crate) struct Node<'a> {
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub op_type: &'a str,
    pub attributes: Vec<Attribute<'a>>,
}

/// A node attribute's name and, when set, its integer or bytes value.
#[derive(Debug)]
pub(crate) struct Attribute<'a> {
    pub name: &'a str,
    pub i: Option<u64>,
    pub s: Option<&'a [u8]>,
}

impl<'a> Node<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EditError> {
        let mut node = Node {
            inputs: Vec::new(),
            outputs: Vec::new(),
            op_type: "",
            attributes: Vec::new(),
        };
        for f in parse(bytes)? {
            match f.number {
                NODE_INPUT => node.inputs.push(f.string()?),
                NODE_OUTPUT => node.outputs.push(f.string()?),
                NODE_OP_TYPE => node.op_type = f.string()?,
                NODE_ATTRIBUTE => {
                    let mut attr = Attribute {
                        name: "",
                        i: None,
                        s: None,
                    };
                    for a in parse(f.payload()?)? {
                        match a.number {
                            ATTR_NAME => attr.name = a.string()?,
                            ATTR_I => attr.i = Some(a.varint()?),
                            ATTR_S => attr.s = Some(a.payload()?),
                            _ => {}
                        }
                    }
                    node.attributes.push(attr);
                }
                _ => {}
            }
        }
        Ok(node)
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// `node` (serialized) with each input `from` replaced by `to`.
pub(crate) fn rename_input(node: &[u8], from: &str, to: &str) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(node.len() + to.len());
    for f in parse(node)? {
        if f.number == NODE_INPUT && f.string()? == from {
            put_bytes(&mut out, NODE_INPUT, to.as_bytes());
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// The name of a serialized `ValueInfoProto` ("" when unset).
pub(crate) fn value_info_name(bytes: &[u8]) -> Result<&str, EditError> {
    parse(bytes)?
        .into_iter()
        .find(|f| f.number == VALUE_INFO_NAME)
        .map_or(Ok(""), |f| f.string())
}

/// A `ValueInfoProto` for a tensor of element type `elem` and serialized `TensorShapeProto`
/// `shape` (empty: no shape).
pub(crate) fn value_info(name: &str, elem: u64, shape: &[u8]) -> Vec<u8> {
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

/// A serialized `TensorShapeProto.Dimension` with a symbolic size.
pub(crate) fn symbolic_dim(name: &str) -> Vec<u8> {
    let mut dim = Vec::new();
    put_bytes(&mut dim, DIM_PARAM, name.as_bytes());
    dim
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a message: its number, wire type, whole encoding (key included) and value
/// bytes (a varint's bytes, or a length-delimited field's content).
pub(crate) struct Field<'a> {
    pub number: u32,
    wire: u8,
    pub raw: &'a [u8],
    value: &'a [u8],
}

impl<'a> Field<'a> {
    /// The content of a length-delimited field (a message, string or bytes).
    pub fn payload(&self) -> Result<&'a [u8], EditError> {
        if self.wire == WIRE_LEN {
            Ok(self.value)
        } else {
            Err(EditError::Wire("expected a length-delimited field"))
        }
    }

    pub fn string(&self) -> Result<&'a str, EditError> {
        std::str::from_utf8(self.payload()?).map_err(|_| EditError::Wire("string not UTF-8"))
    }

    pub fn varint(&self) -> Result<u64, EditError> {
        if self.wire != WIRE_VARINT {
            return Err(EditError::Wire("expected a varint field"));
        }
        let mut at = 0;
        read_varint(self.value, &mut at)
    }
}

/// The top-level fields of one message, in order.
pub(crate) fn parse(buf: &[u8]) -> Result<Vec<Field<'_>>, EditError> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = read_varint(buf, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| EditError::Wire("field number"))?;
        if number == 0 {
            return Err(EditError::Wire("field number 0"));
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
                let len = usize::try_from(len).map_err(|_| EditError::Wire("length"))?;
                value_start = at;
                at = at
                    .checked_add(len)
                    .ok_or(EditError::Wire("length overflows"))?;
            }
            _ => return Err(EditError::Wire("unsupported wire type")),
        }
        if at > buf.len() {
            return Err(EditError::Wire("truncated field"));
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

fn read_varint(buf: &[u8], at: &mut usize) -> Result<u64, EditError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or(EditError::Wire("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(EditError::Wire("varint longer than 10 bytes"))
}

/// The values of a packed repeated varint field.
pub(crate) fn packed_varints(payload: &[u8]) -> Result<Vec<u64>, EditError> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < payload.len() {
        out.push(read_varint(payload, &mut at)?);
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, (u64::from(number) << 3) | u64::from(WIRE_VARINT));
    put_varint(out, value);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Builders of small test graphs, for the edits' tests.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// A serialized node.
    pub fn node(inputs: &[&str], outputs: &[&str], op: &str, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, NODE_OUTPUT, o.as_bytes());
        }
        put_bytes(&mut n, NODE_OP_TYPE, op.as_bytes());
        for a in attrs {
            put_bytes(&mut n, NODE_ATTRIBUTE, a);
        }
        n
    }

    /// A serialized string attribute.
    pub fn string_attr(name: &str, s: &str) -> Vec<u8> {
        let mut a = Vec::new();
        put_bytes(&mut a, ATTR_NAME, name.as_bytes());
        put_bytes(&mut a, ATTR_S, s.as_bytes());
        a
    }

    /// A model of `graph` fields, with an IR version before and metadata after the graph.
    pub fn model(graph: &[u8]) -> Vec<u8> {
        let mut model = Vec::new();
        put_varint_field(&mut model, 1, 8);
        put_bytes(&mut model, MODEL_GRAPH, graph);
        put_bytes(&mut model, 14, b"opaque metadata");
        model
    }

    /// The graph of a serialized model.
    pub fn graph_of(model: &[u8]) -> Vec<u8> {
        parse(model)
            .unwrap()
            .into_iter()
            .find(|f| f.number == MODEL_GRAPH)
            .unwrap()
            .payload()
            .unwrap()
            .to_vec()
    }

    /// The nodes of a serialized graph.
    pub fn nodes(graph: &[u8]) -> Vec<Node<'_>> {
        parse(graph)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| Node::parse(f.payload().unwrap()).unwrap())
            .collect()
    }

    /// The names of the `number` value-info fields of a serialized graph.
    pub fn names(graph: &[u8], number: u32) -> Vec<&str> {
        parse(graph)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == number)
            .map(|f| value_info_name(f.payload().unwrap()).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn the_model_around_the_graph_is_copied() {
        let mut graph = Vec::new();
        put_bytes(&mut graph, GRAPH_NODE, &node(&["a"], &["b"], "Relu", &[]));
        let model = model(&graph);
        let same = edit_model(&model, |g| Ok(g.to_vec())).unwrap();
        assert_eq!(same, model);
        let edited = edit_model(&model, |_| Ok(b"x".to_vec())).unwrap();
        let top: Vec<u32> = parse(&edited).unwrap().iter().map(|f| f.number).collect();
        assert_eq!(top, [1, MODEL_GRAPH, 14]);
        assert_eq!(graph_of(&edited), b"x");
        assert!(edited.ends_with(b"opaque metadata"));
    }

    #[test]
    fn nodes_read_back_with_their_attributes() {
        let bytes = node(
            &["x", "p"],
            &["y"],
            "Pad",
            &[string_attr("mode", "reflect")],
        );
        let n = Node::parse(&bytes).unwrap();
        assert_eq!(
            (n.inputs, n.outputs, n.op_type),
            (vec!["x", "p"], vec!["y"], "Pad")
        );
        assert_eq!(
            n.attributes[0].s,
            Some(&b"reflect"[..]),
            "{:?}",
            n.attributes
        );
        let renamed = rename_input(&bytes, "p", "q").unwrap();
        assert_eq!(Node::parse(&renamed).unwrap().inputs, ["x", "q"]);
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let edit = |m: &[u8]| edit_model(m, |g| Ok(g.to_vec()));
        // A length running past the end, a truncated varint, a group wire type, two graphs.
        assert_eq!(
            edit(&[0x3a, 0x05, 0x01]),
            Err(EditError::Wire("truncated field"))
        );
        assert_eq!(
            edit(&[0x3a, 0xff]),
            Err(EditError::Wire("truncated varint"))
        );
        assert_eq!(edit(&[0x3b]), Err(EditError::Wire("unsupported wire type")));
        assert!(matches!(
            edit(&[0x3a, 0x00, 0x3a, 0x00]),
            Err(EditError::Pattern(_))
        ));
        assert!(matches!(edit(&[0x08, 0x01]), Err(EditError::Pattern(_))));
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
