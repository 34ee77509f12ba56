//! FP16: float weights and compute in half precision, with the numerically sensitive ops
//! (exponentials, reductions, normalisations) computed in f32 between Casts, and the inputs
//! that ONNX fixes to float32 (Resize scales) left alone.

use std::collections::{HashMap, HashSet};

use fieldkit_runtime::onnx_graph::{attr_int, pb, read_f32};
use half::f16;

use crate::error::Result;
use crate::graph::{node, Model, FLOAT, FLOAT16};

/// Ops kept in f32: their range or accumulation overflows or loses too much in f16. Gemm
/// (a classifier head, K = 1280) also because tract 0.23 cannot type an f16 Gemm (its
/// expansion yields f32).
pub const KEEP_F32_OPS: &[&str] = &[
    "Gemm",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "ReduceSum",
    "ReduceMean",
    "ReduceL2",
    "ReduceLogSumExp",
    "LayerNormalization",
    "InstanceNormalization",
];

/// (op, input slot) that ONNX types as float32 whatever the data type.
fn fixed_f32(op: &str, slot: usize) -> bool {
    matches!((op, slot), ("Resize", 1) | ("Resize", 2) | ("Upsample", 1))
}

fn to_f16_tensor(t: &pb::TensorProto, name: &str) -> Option<pb::TensorProto> {
    let (dims, v) = read_f32(t)?;
    Some(pb::TensorProto {
        name: name.to_string(),
        dims,
        data_type: FLOAT16,
        raw_data: v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        ..Default::default()
    })
}

fn cast(input: &str, output: &str, to: i32) -> pb::NodeProto {
    node(
        "Cast",
        format!("Cast_{input}_to_{output}"),
        vec![input.into()],
        vec![output.into()],
        vec![attr_int("to", to as i64)],
    )
}

fn elem_type_mut(v: &mut pb::ValueInfoProto) -> Option<&mut i32> {
    let pb::type_proto::Value::TensorType(t) = v.r#type.as_mut()?.value.as_mut()?;
    Some(&mut t.elem_type)
}

pub fn convert(model: &Model, keep_io_f32: bool) -> Result<(Model, Vec<String>)> {
    let mut out = model.clone();
    let g = out.graph_mut();
    let float_inits: HashSet<String> =
        g.initializer.iter().filter(|t| t.data_type == FLOAT).map(|t| t.name.clone()).collect();
    let keep_nodes: Vec<usize> = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.domain.is_empty() && KEEP_F32_OPS.contains(&n.op_type.as_str()))
        .map(|(i, _)| i)
        .collect();
    let keep_set: HashSet<usize> = keep_nodes.iter().copied().collect();
    let kept_names: Vec<String> = keep_nodes
        .iter()
        .map(|&i| if g.node[i].name.is_empty() { g.node[i].output[0].clone() } else { g.node[i].name.clone() })
        .collect();

    // Which initializers are read as f16 and which must stay f32.
    let mut wants16: HashSet<String> = HashSet::new();
    let mut wants32: HashSet<String> = HashSet::new();
    for (i, n) in g.node.iter().enumerate() {
        for (slot, input) in n.input.iter().enumerate() {
            if float_inits.contains(input) {
                if keep_set.contains(&i) || fixed_f32(&n.op_type, slot) {
                    wants32.insert(input.clone());
                } else {
                    wants16.insert(input.clone());
                }
            }
        }
    }
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut extra = Vec::new();
    for t in g.initializer.iter_mut().filter(|t| wants16.contains(&t.name)) {
        if wants32.contains(&t.name) {
            let name = format!("{}_fp16", t.name);
            extra.extend(to_f16_tensor(t, &name));
            renamed.insert(t.name.clone(), name);
        } else if let Some(h) = to_f16_tensor(t, &t.name.clone()) {
            *t = h;
        }
    }
    g.initializer.extend(extra);

    // Tensors that feed only float32-typed slots (shape arithmetic for Resize) stay f32.
    let mut fixed_readers: HashMap<String, (usize, usize)> = HashMap::new(); // (fixed uses, all uses)
    for n in &g.node {
        for (slot, input) in n.input.iter().enumerate() {
            let e = fixed_readers.entry(input.clone()).or_default();
            e.1 += 1;
            if fixed_f32(&n.op_type, slot) {
                e.0 += 1;
            }
        }
    }
    let only_fixed = |t: &str| fixed_readers.get(t).is_some_and(|&(f, a)| f > 0 && f == a);

    let old = std::mem::take(&mut g.node);
    let mut nodes = Vec::with_capacity(old.len() + 8);
    let mut input_casts = Vec::new();
    let graph_inputs: Vec<String> =
        g.input.iter().filter(|i| !float_inits.contains(&i.name)).map(|i| i.name.clone()).collect();
    let float_inputs: Vec<String> = g
        .input
        .iter()
        .filter(|i| graph_inputs.contains(&i.name))
        .filter(|i| {
            i.r#type
                .as_ref()
                .and_then(|t| t.value.as_ref())
                .is_some_and(|v| matches!(v, pb::type_proto::Value::TensorType(t) if t.elem_type == FLOAT))
        })
        .map(|i| i.name.clone())
        .collect();
    if keep_io_f32 {
        for i in &float_inputs {
            input_casts.push(cast(i, &format!("{i}_fp16"), FLOAT16));
            renamed.insert(i.clone(), format!("{i}_fp16"));
        }
    }
    nodes.extend(input_casts);
    for (i, mut n) in old.into_iter().enumerate() {
        let keep = keep_set.contains(&i);
        for (slot, input) in n.input.iter_mut().enumerate() {
            if keep || fixed_f32(&n.op_type, slot) {
                continue;
            }
            if let Some(r) = renamed.get(input.as_str()) {
                *input = r.clone();
            }
        }
        match n.op_type.as_str() {
            "Cast" if !only_fixed(&n.output[0]) => {
                for a in n.attribute.iter_mut().filter(|a| a.name == "to" && a.i == FLOAT as i64) {
                    a.i = FLOAT16 as i64;
                }
            }
            "Constant" | "ConstantOfShape" if !only_fixed(&n.output[0]) => {
                for a in n.attribute.iter_mut() {
                    if let Some(t) = a.t.as_ref().and_then(|t| to_f16_tensor(t, &t.name)) {
                        a.t = Some(t);
                    }
                }
            }
            _ => {}
        }
        if keep {
            // Activations in: cast up (initializers were left f32 above).
            for input in n.input.iter_mut().filter(|s| !s.is_empty() && !float_inits.contains(*s)) {
                let up = format!("{input}_to_f32_{i}");
                nodes.push(cast(input, &up, FLOAT));
                *input = up;
            }
            let outs: Vec<String> = n.output.clone();
            for o in n.output.iter_mut() {
                *o = format!("{o}_f32");
            }
            nodes.push(n);
            for o in outs {
                nodes.push(cast(&format!("{o}_f32"), &o, FLOAT16));
            }
        } else {
            nodes.push(n);
        }
    }
    // Graph outputs: cast back to f32, or declare them f16.
    let outputs: Vec<String> = g.output.iter().map(|o| o.name.clone()).collect();
    if keep_io_f32 {
        for o in &outputs {
            let half = format!("{o}_fp16");
            for n in nodes.iter_mut() {
                for t in n.output.iter_mut().chain(n.input.iter_mut()) {
                    if t == o {
                        *t = half.clone();
                    }
                }
            }
            nodes.push(cast(&half, o, FLOAT));
        }
    } else {
        for v in g.input.iter_mut().filter(|i| float_inputs.contains(&i.name)) {
            if let Some(e) = elem_type_mut(v) {
                *e = FLOAT16;
            }
        }
        for v in g.output.iter_mut() {
            if let Some(e) = elem_type_mut(v).filter(|e| **e == FLOAT) {
                *e = FLOAT16;
            }
        }
    }
    g.node = nodes;
    g.value_info.clear();
    Ok((out, kept_names))
}
