//! Weights shared between the sessions of one model.
//!
//! Every track runs its own sessions (one thread each, no locking between tracks), and ONNX
//! Runtime would copy a model's initializers, then the kernels' packed forms of them, into every
//! session it builds: about 110 MB per whisper-base recognizer, most of it the same bytes for
//! every track. Here the larger initializers of a model are read once into tensors that all its
//! sessions use (ONNX Runtime's `AddInitializer`), and the packed forms go to one process-wide
//! container (`CreateSessionWithPrepackedWeightsContainer`), keyed by ONNX Runtime on the
//! kernel and the weights' contents. Same arithmetic on the same bytes: outputs are unchanged.
//!
//! Lifetime: a model's shared tensors and packed forms, once read, stay for the life of the
//! process (a service loads the same models for every track it starts; reading them again for
//! each would churn tens of megabytes). A model file replaced on disk is read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use ort::session::builder::PrepackedWeights;
use ort::value::{DynValue, Tensor};

use super::graph::{self, EditError};

/// Initializers smaller than this stay in each session (not worth a shared tensor).
pub const MIN_SHARED_BYTES: usize = 4096;

/// ONNX `TensorProto.DataType` codes of the element types shared.
const FLOAT: u64 = 1;
const UINT8: u64 = 2;
const INT8: u64 = 3;
const INT32: u64 = 6;
const INT64: u64 = 7;

/// A model file as it was when its weights were read: a file replaced on disk (a new model
/// fetched) gets its own entry.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

type Shared = Vec<(String, Arc<DynValue>)>;
type Registry = HashMap<FileKey, Shared>;

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
static PREPACKED: OnceLock<PrepackedWeights> = OnceLock::new();

/// The process-wide container of packed weights.
pub(crate) fn prepacked() -> &'static PrepackedWeights {
    PREPACKED.get_or_init(PrepackedWeights::new)
}

/// The shared initializers of the model at `path`, whose serialized form (possibly edited, see
/// [`super::edited_session`], with the same initializers) is `bytes`: read from `bytes` by the
/// first session of the model, kept for the next ones. A model whose initializers cannot be read
/// is loaded unshared.
pub(crate) fn weights(path: &Path, bytes: &[u8]) -> Shared {
    let Some(key) = std::fs::metadata(path).ok().map(|m| FileKey {
        path: path.to_path_buf(),
        len: m.len(),
        modified: m.modified().ok(),
    }) else {
        return Vec::new();
    };
    let registry = REGISTRY.get_or_init(Mutex::default);
    let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(values) = registry.get(&key) {
        return values.clone();
    }
    match read(bytes) {
        Ok(values) => {
            registry.insert(key, values.clone());
            values
        }
        Err(e) => {
            tracing::warn!(
                "{}: initializers not shared between sessions: {e}",
                path.display()
            );
            Vec::new()
        }
    }
}

/// The initializers of the serialized model `model` of at least [`MIN_SHARED_BYTES`] stored as
/// raw data in a type listed above; the others stay with the model.
pub(crate) fn read(model: &[u8]) -> Result<Shared, EditError> {
    let mut out = Vec::new();
    for field in graph::parse(model)? {
        if field.number != graph::MODEL_GRAPH {
            continue;
        }
        for g in graph::parse(field.payload()?)? {
            if g.number == graph::GRAPH_INITIALIZER
                && let Some((name, value)) = tensor(g.payload()?)?
            {
                out.push((name, value));
            }
        }
    }
    Ok(out)
}

/// A `TensorProto` as a tensor, when it is large enough and of a shared type.
fn tensor(proto: &[u8]) -> Result<Option<(String, Arc<DynValue>)>, EditError> {
    let mut dims = Vec::new();
    let mut elem = None;
    let mut name = None;
    let mut raw: Option<&[u8]> = None;
    let mut external = false;
    for f in graph::parse(proto)? {
        match f.number {
            1 => match f.varint() {
                Ok(d) => dims.push(d),
                Err(_) => dims.extend(graph::packed_varints(f.payload()?)?),
            },
            2 => elem = Some(f.varint()?),
            8 => name = Some(f.string()?.to_string()),
            9 => raw = Some(f.payload()?),
            13 | 14 => external = true,
            _ => {}
        }
    }
    let (Some(name), Some(elem), Some(raw)) = (name, elem, raw) else {
        return Ok(None);
    };
    if external || raw.len() < MIN_SHARED_BYTES {
        return Ok(None);
    }
    let shape: Vec<i64> = dims
        .iter()
        .map(|&d| i64::try_from(d).map_err(|_| EditError::Wire("tensor dimension")))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or(EditError::Wire("tensor dimensions overflow"))?;
    let value: DynValue = match elem {
        FLOAT => make::<f32, 4>(&shape, raw, count, f32::from_le_bytes)?,
        UINT8 => make::<u8, 1>(&shape, raw, count, u8::from_le_bytes)?,
        INT8 => make::<i8, 1>(&shape, raw, count, i8::from_le_bytes)?,
        INT32 => make::<i32, 4>(&shape, raw, count, i32::from_le_bytes)?,
        INT64 => make::<i64, 8>(&shape, raw, count, i64::from_le_bytes)?,
        _ => return Ok(None),
    };
    Ok(Some((name, Arc::new(value))))
}

fn make<T, const N: usize>(
    shape: &[i64],
    raw: &[u8],
    count: usize,
    from: fn([u8; N]) -> T,
) -> Result<DynValue, EditError>
where
    T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    if raw.len() != count * N {
        return Err(EditError::Wire("tensor raw data does not match its shape"));
    }
    let data: Vec<T> = raw
        .chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunks of N bytes")))
        .collect();
    Tensor::from_array((shape.to_vec(), data))
        .map(|t| t.into_dyn())
        .map_err(|_| EditError::Wire("tensor not accepted by ONNX Runtime"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::{build, put_bytes, put_varint_field};

    fn init() {
        crate::onnx::init(&crate::paths::onnxruntime_library().unwrap())
            .expect("ONNX Runtime is set up (make setup)");
    }

    /// A serialized `TensorProto`: `dims` packed or one field each, raw little-endian data.
    fn tensor_proto(name: &str, elem: u64, dims: &[u64], packed: bool, raw: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        if packed {
            let mut p = Vec::new();
            for &d in dims {
                let mut one = Vec::new();
                put_varint_field(&mut one, 1, d);
                p.extend_from_slice(&one[1..]);
            }
            put_bytes(&mut t, 1, &p);
        } else {
            for &d in dims {
                put_varint_field(&mut t, 1, d);
            }
        }
        put_varint_field(&mut t, 2, elem);
        put_bytes(&mut t, 8, name.as_bytes());
        put_bytes(&mut t, 9, raw);
        t
    }

    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        put_bytes(
            &mut graph,
            graph::GRAPH_NODE,
            &build::node(&["x", "w"], &["y"], "MatMul", &[]),
        );
        for t in tensors {
            put_bytes(&mut graph, graph::GRAPH_INITIALIZER, t);
        }
        build::model(&graph)
    }

    #[test]
    fn large_raw_initializers_are_read_with_their_shape_and_values() {
        init();
        let floats: Vec<f32> = (0..2048).map(|i| i as f32 * 0.5 - 3.0).collect();
        let raw_f: Vec<u8> = floats.iter().flat_map(|v| v.to_le_bytes()).collect();
        let int8s: Vec<i8> = (0..4096).map(|i| (i % 251) as i8).collect();
        let raw_i: Vec<u8> = int8s.iter().map(|&v| v as u8).collect();
        let mut external = tensor_proto("external", FLOAT, &[2048], false, &raw_f);
        put_varint_field(&mut external, 14, 1);
        let m = model(&[
            tensor_proto("w", FLOAT, &[2, 1024], true, &raw_f),
            tensor_proto("q", INT8, &[64, 64], false, &raw_i),
            tensor_proto("small", FLOAT, &[4], false, &raw_f[..16]),
            tensor_proto("strings", 8, &[8192], false, &[0; 8192]),
            external,
        ]);
        let shared = read(&m).unwrap();
        let names: Vec<&str> = shared.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "q"]);
        let (shape, data) = shared[0].1.try_extract_tensor::<f32>().unwrap();
        assert_eq!(&shape[..], &[2, 1024]);
        assert_eq!(data, &floats[..]);
        let (shape, data) = shared[1].1.try_extract_tensor::<i8>().unwrap();
        assert_eq!(&shape[..], &[64, 64]);
        assert_eq!(data, &int8s[..]);
    }

    #[test]
    fn raw_data_that_does_not_match_its_shape_is_refused() {
        init();
        let m = model(&[tensor_proto("w", FLOAT, &[4096], false, &[0; 8192])]);
        assert!(matches!(read(&m), Err(EditError::Wire(_))));
        let truncated = &m[..m.len() - 100];
        assert!(read(truncated).is_err());
    }
}
