//! The ONNX model as protobuf, with the lookups the rewrites need: initializers by name,
//! consumers of a tensor, the default-domain opset, and which nodes can be quantized.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use fieldkit_runtime::onnx_graph::{self, pb};
use pb::tensor_proto::DataType;

use crate::error::{QuantizeError, Result};

/// Element types as stored in `TensorProto.data_type`.
pub const FLOAT: i32 = DataType::Float as i32;
pub const UINT8: i32 = DataType::Uint8 as i32;
pub const INT8: i32 = DataType::Int8 as i32;
pub const INT32: i32 = DataType::Int32 as i32;
pub const FLOAT16: i32 = DataType::Float16 as i32;

/// Ops whose meaning changes between opset 10–12 and 13 (attributes that became inputs, a
/// different softmax axis rule): a model holding one cannot simply be relabelled opset 13.
const CHANGED_BY_OPSET_13: &[&str] =
    &["Split", "Squeeze", "Unsqueeze", "ReduceSum", "Softmax", "LogSoftmax", "Hardmax", "Dropout", "Upsample"];

#[derive(Debug, Clone)]
pub struct Model {
    pub path: PathBuf,
    pub proto: pb::ModelProto,
}

/// A node whose weights (and input activation) can be quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Index into `graph.node`.
    pub node: usize,
    /// The node's name, or its first output when unnamed: how reports and `--keep` name it.
    pub name: String,
    pub op: String,
    /// Float activation input.
    pub activation: String,
    /// Float weight initializer.
    pub weight: String,
    /// Output-channel axis of the weight.
    pub axis: usize,
    /// 1-D bias initializer with one value per output channel.
    pub bias: Option<String>,
    pub output: String,
    /// Depthwise convolution (group == input channels).
    pub depthwise: bool,
    /// Multiply-accumulates per output element (kernel volume × input channels per group).
    pub fan_in: usize,
}

impl Model {
    pub fn load(path: &Path) -> Result<Self> {
        let proto = onnx_graph::load(path)?;
        let model = Model { path: path.to_path_buf(), proto };
        if model.proto.graph.is_none() {
            return Err(model.err("the ONNX file holds no graph"));
        }
        Ok(model)
    }

    pub fn err(&self, msg: impl Into<String>) -> QuantizeError {
        QuantizeError::Model { path: self.path.clone(), msg: msg.into() }
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    pub fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.proto.graph.as_mut().expect("checked at load")
    }

    /// Version of the default ("" / "ai.onnx") domain.
    pub fn opset(&self) -> i64 {
        self.proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(1)
    }

    /// Raises the default-domain opset to `to` when no op in the graph changed meaning on
    /// the way (per-axis QuantizeLinear needs 13).
    pub fn require_opset(&mut self, to: i64, why: &str) -> Result<()> {
        let from = self.opset();
        if from >= to {
            return Ok(());
        }
        let changed: HashSet<&str> = self
            .graph()
            .node
            .iter()
            .filter(|n| n.domain.is_empty() && CHANGED_BY_OPSET_13.contains(&n.op_type.as_str()))
            .map(|n| n.op_type.as_str())
            .collect();
        if !changed.is_empty() {
            let mut ops: Vec<&str> = changed.into_iter().collect();
            ops.sort();
            return Err(self.err(format!(
                "{why} needs opset {to}, the model is opset {from} and uses {} whose meaning changed by then; \
                 re-export it at opset {to} or pass --per-tensor",
                ops.join(", ")
            )));
        }
        for o in &mut self.proto.opset_import {
            if o.domain.is_empty() || o.domain == "ai.onnx" {
                o.version = to;
            }
        }
        self.proto.ir_version = self.proto.ir_version.max(7);
        Ok(())
    }

    pub fn initializer(&self, name: &str) -> Option<&pb::TensorProto> {
        self.graph().initializer.iter().find(|t| t.name == name)
    }

    /// An f32 initializer's dims and values.
    pub fn float_initializer(&self, name: &str) -> Option<(Vec<i64>, Vec<f32>)> {
        self.initializer(name).and_then(onnx_graph::read_f32)
    }

    /// Graph inputs that are real inputs (older exporters also list initializers there).
    pub fn inputs(&self) -> Vec<&pb::ValueInfoProto> {
        let inits: HashSet<&str> = self.graph().initializer.iter().map(|t| t.name.as_str()).collect();
        self.graph().input.iter().filter(|i| !inits.contains(i.name.as_str())).collect()
    }

    /// Tensor name -> indices of the nodes reading it.
    pub fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in self.graph().node.iter().enumerate() {
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                map.entry(input.clone()).or_default().push(i);
            }
        }
        map
    }

    /// Tensor name -> index of the node writing it.
    pub fn producers(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (i, n) in self.graph().node.iter().enumerate() {
            for o in &n.output {
                map.insert(o.clone(), i);
            }
        }
        map
    }

    /// Every Conv, Gemm and MatMul with a constant float weight.
    pub fn targets(&self) -> Vec<Target> {
        let g = self.graph();
        let mut out = Vec::new();
        for (i, n) in g.node.iter().enumerate() {
            if !n.domain.is_empty() || n.input.len() < 2 {
                continue;
            }
            let Some((wdims, _)) = self.float_initializer(&n.input[1]) else { continue };
            let name = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
            let (axis, bias, depthwise, fan_in) = match n.op_type.as_str() {
                "Conv" if wdims.len() >= 3 => {
                    let group = attr_i(n, "group").unwrap_or(1);
                    let per_group_in = wdims[1];
                    let kernel: i64 = wdims[2..].iter().product();
                    let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
                    (0, bias, group > 1 && per_group_in == 1, (per_group_in * kernel) as usize)
                }
                "Gemm" if wdims.len() == 2 => {
                    if attr_i(n, "transA").unwrap_or(0) != 0 {
                        continue;
                    }
                    let trans_b = attr_i(n, "transB").unwrap_or(0) != 0;
                    let (axis, k) = if trans_b { (0, wdims[1]) } else { (1, wdims[0]) };
                    let unit = attr_f(n, "alpha").unwrap_or(1.0) == 1.0 && attr_f(n, "beta").unwrap_or(1.0) == 1.0;
                    let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned().filter(|b| {
                        unit && self.float_initializer(b).is_some_and(|(d, _)| d.len() == 1 && d[0] == wdims[axis])
                    });
                    (axis, bias, false, k as usize)
                }
                "MatMul" if wdims.len() == 2 => (1, None, false, wdims[0] as usize),
                _ => continue,
            };
            if let Some(b) = &bias {
                if !self.float_initializer(b).is_some_and(|(d, _)| d.len() == 1 && d[0] == wdims[axis]) {
                    continue;
                }
            }
            out.push(Target {
                node: i,
                name,
                op: n.op_type.clone(),
                activation: n.input[0].clone(),
                weight: n.input[1].clone(),
                axis,
                bias,
                output: n.output[0].clone(),
                depthwise,
                fan_in,
            });
        }
        out
    }

    /// The tensor a target's result is read from: the output of a Relu/Clip that is its only
    /// consumer (the pre-activation of a BN-folded layer holds large negative values that the
    /// activation throws away), else the target's own output.
    pub fn activated_output(&self, t: &Target, consumers: &HashMap<String, Vec<usize>>) -> String {
        let nodes = &self.graph().node;
        match consumers.get(&t.output).map(|c| c.as_slice()) {
            Some([one]) if matches!(nodes[*one].op_type.as_str(), "Relu" | "Clip") => nodes[*one].output[0].clone(),
            _ => t.output.clone(),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(onnx_graph::save(&self.proto, path)?)
    }
}

pub fn attr_i(n: &pb::NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

pub fn attr_f(n: &pb::NodeProto, name: &str) -> Option<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// A tensor of raw little-endian values of element type `data_type`.
pub fn raw_tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto { name: name.to_string(), dims: dims.to_vec(), data_type, raw_data: raw, ..Default::default() }
}

pub fn node(
    op: &str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto { name, op_type: op.to_string(), input: inputs, output: outputs, attribute, ..Default::default() }
}
