//! Writing and reading ONNX protobuf: the small builder the trainer's exporter and the
//! quantizer share. The message types are tract-onnx's prost-generated `onnx.proto`, so the
//! graphs we write are parsed by the same code that later runs them.

use std::path::Path;

use pb::tensor_proto::DataType;
use prost::Message;
pub use tract_onnx::pb;

use fieldkit_core::{fsio, CoreError};

use crate::error::{Result, RuntimeError};

/// A dimension of a graph input or output: fixed, or named and free (`"N"` for the batch).
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Param(String),
}

/// Accumulates nodes, initializers, inputs and outputs in topological order.
#[derive(Debug, Default, Clone)]
pub struct GraphBuilder {
    pub graph: pb::GraphProto,
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v),
                Dim::Param(p) => Value::DimParam(p.clone()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// An f32 tensor stored as little-endian raw bytes (the compact form every runtime reads).
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An i64 tensor (shapes, axes).
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_string(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder { graph: pb::GraphProto { name: name.to_string(), ..Default::default() } }
    }

    pub fn input_f32(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(value_info(name, DataType::Float, dims));
    }

    pub fn output_f32(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, DataType::Float, dims));
    }

    /// Adds a constant tensor and returns its name for use as a node input.
    pub fn initializer(&mut self, tensor: pb::TensorProto) -> String {
        let name = tensor.name.clone();
        self.graph.initializer.push(tensor);
        name
    }

    /// Appends a node named after its first output.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<pb::AttributeProto>) {
        self.graph.node.push(pb::NodeProto {
            name: outputs.first().map(|o| format!("{op}_{o}")).unwrap_or_default(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
    }

    /// Wraps the graph in a model with the default-domain opset `opset`.
    pub fn into_model(self, opset: i64, producer: &str) -> pb::ModelProto {
        pb::ModelProto {
            // IR 7 goes with opsets 12-14; onnxruntime and tract both accept it.
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }],
            producer_name: producer.to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// Serializes atomically (temp file + rename): a crash never leaves half a model.
pub fn save(model: &pb::ModelProto, path: &Path) -> Result<()> {
    fsio::write_atomic(path, &model.encode_to_vec()).map_err(RuntimeError::Core)
}

pub fn load(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::Core(CoreError::io(path, e)))?;
    pb::ModelProto::decode(bytes.as_slice())
        .map_err(|e| RuntimeError::Core(CoreError::invalid(path, format!("not an ONNX model: {e}"))))
}

/// Reads an f32 initializer (raw or `float_data`) into its dims and values.
pub fn read_f32(t: &pb::TensorProto) -> Option<(Vec<i64>, Vec<f32>)> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    let values = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    Some((t.dims.clone(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes_and_tract() {
        let mut g = GraphBuilder::new("t");
        g.input_f32("x", &[Dim::Param("N".into()), Dim::Fixed(3)]);
        let w = g.initializer(tensor_f32("w", &[3], &[1.0, 2.0, 3.0]));
        g.node("Mul", &["x", &w], &["y"], vec![]);
        g.output_f32("y", &[Dim::Param("N".into()), Dim::Fixed(3)]);
        let model = g.into_model(13, "test");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        save(&model, &p).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back, model);
        assert_eq!(read_f32(&back.graph.as_ref().unwrap().initializer[0]).unwrap().1, vec![1.0, 2.0, 3.0]);

        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx()
            .model_for_path(&p)
            .unwrap()
            .with_input_fact(0, f32::fact([2, 3]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::arr2(&[[1f32, 1., 1.], [2., 2., 2.]]).into_tensor();
        let y = plan.run(tvec!(x.into())).unwrap();
        let y = y[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(y.as_slice().unwrap(), &[1., 2., 3., 2., 4., 6.]);
        assert!(load(&dir.path().join("missing.onnx")).is_err());
        std::fs::write(dir.path().join("junk.onnx"), b"\xff\xff\xff not protobuf").unwrap();
        assert!(load(&dir.path().join("junk.onnx")).is_err());
    }
}
