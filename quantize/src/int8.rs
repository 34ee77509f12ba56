//! The INT8 rewrite in standard ONNX QDQ form: int8 weights (symmetric, per output channel or
//! per tensor) behind DequantizeLinear, int32 biases at `x_scale · w_scale`, and a
//! QuantizeLinear → DequantizeLinear pair (uint8, asymmetric) on each calibrated activation.
//! QDQ is the form every runtime reads (onnxruntime fuses it into QLinearConv; patched tract
//! folds it into integer convolutions); see the crate docs for why it beats QLinearConv in tract.

use std::collections::{HashMap, HashSet};

use fieldkit_runtime::onnx_graph::{attr_int, pb, tensor_f32};

use crate::error::Result;
use crate::graph::{node, raw_tensor, Model, Target, INT32, INT8, UINT8};
use crate::ranges::uint8_params;

/// Where activations get a QuantizeLinear/DequantizeLinear pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Inputs of quantized layers only: fewer quantized tensors, but a layer whose output
    /// feeds a float operator (a residual Add) stays a float layer in both runtimes.
    Inputs,
    /// Inputs and outputs (after a following Relu/Clip), as onnxruntime's quantize_static
    /// writes it: onnxruntime fuses every layer into an integer kernel, and tract (patched,
    /// third_party/tract PATCHES.md §8) runs each such convolution as an integer one.
    InputsOutputs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Options {
    pub per_channel: bool,
    /// Weights only: no activation quantization (no calibration needed).
    pub weights_only: bool,
    pub placement: Placement,
    /// 7-bit weights ([-63, 63]): onnxruntime's fused u8 x s8 kernels on x86 CPUs without
    /// VNNI add pairs of products in 16 bits, which full-range weights can saturate.
    pub reduce_range: bool,
}

/// Activation tensors that need a calibrated range for `targets` under `placement`.
pub fn activation_tensors(model: &Model, targets: &[Target], placement: Placement) -> Vec<String> {
    let consumers = model.consumers();
    let mut out: Vec<String> = Vec::new();
    let push = |t: String, out: &mut Vec<String>| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for t in targets {
        push(t.activation.clone(), &mut out);
        if placement == Placement::InputsOutputs {
            push(model.activated_output(t, &consumers), &mut out);
        }
    }
    out
}

/// Symmetric int8 in [-qmax, qmax] (127, or 63 for reduced range) along `axis` (or one scale
/// for the whole tensor). Each
/// channel's scale is the one, from its max |w| down to half of it, with the least squared
/// rounding-plus-clipping error: one outlier weight no longer coarsens the whole channel.
pub fn quantize_weight(dims: &[i64], w: &[f32], axis: usize, per_channel: bool, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    let channels = if per_channel { dims[axis] as usize } else { 1 };
    let inner: usize = if per_channel { dims[axis + 1..].iter().product::<i64>() as usize } else { w.len() };
    let channel_of = |i: usize| if per_channel { (i / inner) % channels } else { 0 };
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); channels];
    for (i, v) in w.iter().enumerate() {
        members[channel_of(i)].push(*v);
    }
    let scales: Vec<f32> = members.iter().map(|m| best_scale(m, qmax)).collect();
    let q = w.iter().enumerate().map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-qmax, qmax) as i8).collect();
    (q, scales)
}

fn best_scale(values: &[f32], qmax: f32) -> f32 {
    let amax = values.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    if amax == 0.0 {
        return 1.0;
    }
    let err = |scale: f32| -> f64 {
        values
            .iter()
            .map(|&v| {
                let q = (v / scale).round().clamp(-qmax, qmax) * scale;
                ((v - q) as f64).powi(2)
            })
            .sum()
    };
    let mut best = (err(amax / qmax), amax / qmax);
    for k in 1..=25 {
        let scale = amax * (1.0 - 0.02 * k as f32) / qmax;
        let e = err(scale);
        if e < best.0 {
            best = (e, scale);
        }
    }
    best.1
}

/// Layers held back from quantization, by name.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Entirely in float (weights too).
    pub fp32: HashSet<String>,
    /// int8 weights, but the input activation stays float: the first fallback step, which
    /// removes most of a layer's error (activation noise times large BN-folded weights)
    /// while keeping the size gain.
    pub float_input: HashSet<String>,
}

impl Keep {
    pub fn fp32(names: &[String]) -> Self {
        Keep { fp32: names.iter().cloned().collect(), float_input: HashSet::new() }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.fp32.contains(name) || self.float_input.contains(name)
    }
}

/// The rewritten model with `keep` held back.
pub fn rewrite(
    model: &Model,
    targets: &[Target],
    ranges: &HashMap<String, (f32, f32)>,
    opts: Int8Options,
    keep: &Keep,
) -> Result<Model> {
    let mut out = model.clone();
    out.require_opset(if opts.per_channel { 13 } else { 10 }, "per-channel quantization")?;
    let active: Vec<&Target> = targets.iter().filter(|t| !keep.fp32.contains(&t.name)).collect();
    // int32 biases cost a scale per channel; only onnxruntime's fusion needs them (it fuses a
    // layer only when every input comes from a DequantizeLinear), and only the
    // inputs-and-outputs placement gives it whole layers to fuse.
    let int32_bias = opts.placement == Placement::InputsOutputs;
    let act_params: HashMap<&str, (f32, u8)> = if opts.weights_only {
        HashMap::new()
    } else {
        ranges.iter().map(|(k, &(lo, hi))| (k.as_str(), uint8_params(lo, hi))).collect()
    };

    let mut inits: Vec<pb::TensorProto> = Vec::new();
    let mut head: Vec<pb::NodeProto> = Vec::new();
    // Node index -> (input slot, new tensor) replacements.
    let mut replace: HashMap<usize, Vec<(usize, String)>> = HashMap::new();
    let mut done_weights: HashMap<String, (String, Vec<f32>)> = HashMap::new();
    let mut used_inits: HashSet<String> = HashSet::new();

    for t in &active {
        let (dims, w) = model.float_initializer(&t.weight).expect("targets have float weights");
        if !done_weights.contains_key(&t.weight) {
            let qmax = if opts.reduce_range { 63.0 } else { 127.0 };
            let (q, scales) = quantize_weight(&dims, &w, t.axis, opts.per_channel, qmax);
            let base = &t.weight;
            let sdims: Vec<i64> = if opts.per_channel { vec![scales.len() as i64] } else { vec![] };
            // Symmetric: the zero point is 0, ONNX's default, so it is not stored.
            inits.push(raw_tensor(&format!("{base}_q"), &dims, INT8, q.iter().map(|v| *v as u8).collect()));
            inits.push(tensor_f32(&format!("{base}_s"), &sdims, &scales));
            let attrs = if opts.per_channel { vec![attr_int("axis", t.axis as i64)] } else { vec![] };
            head.push(node(
                "DequantizeLinear",
                format!("{base}_dq"),
                vec![format!("{base}_q"), format!("{base}_s")],
                vec![format!("{base}_dq")],
                attrs,
            ));
            done_weights.insert(t.weight.clone(), (format!("{base}_dq"), scales));
        }
        let (wname, wscales) = &done_weights[&t.weight];
        replace.entry(t.node).or_default().push((1, wname.clone()));
        used_inits.insert(t.weight.clone());

        // Bias in int32 at the product scale, only when the input activation is quantized.
        let input_quantized = !keep.float_input.contains(&t.name);
        let xs = act_params.get(t.activation.as_str()).filter(|_| int32_bias && input_quantized).map(|p| p.0);
        if let (Some(b), Some(xs)) = (&t.bias, xs) {
            let (bdims, bv) = model.float_initializer(b).expect("targets have float biases");
            let channels = bv.len();
            let scales: Vec<f32> =
                (0..channels).map(|c| xs * wscales[if wscales.len() == 1 { 0 } else { c }]).collect();
            let q: Vec<f64> = bv.iter().zip(&scales).map(|(v, s)| (*v as f64 / *s as f64).round()).collect();
            if q.iter().all(|v| v.abs() < i32::MAX as f64) {
                let name = format!("{b}_{}", t.node);
                inits.push(raw_tensor(
                    &format!("{name}_q"),
                    &bdims,
                    INT32,
                    q.iter().flat_map(|v| (*v as i32).to_le_bytes()).collect(),
                ));
                inits.push(tensor_f32(&format!("{name}_s"), &[channels as i64], &scales));
                head.push(node(
                    "DequantizeLinear",
                    format!("{name}_dq"),
                    vec![format!("{name}_q"), format!("{name}_s")],
                    vec![format!("{name}_dq")],
                    vec![attr_int("axis", 0)],
                ));
                replace.entry(t.node).or_default().push((2, format!("{name}_dq")));
                used_inits.insert(b.clone());
            }
        }
    }

    // Activation pairs, placed right after the producer (graph inputs: first).
    let skipped_nodes: HashSet<usize> = targets.iter().filter(|t| keep.contains(&t.name)).map(|t| t.node).collect();
    let producers = model.producers();
    let consumers = model.consumers();
    let mut after: HashMap<Option<usize>, Vec<pb::NodeProto>> = HashMap::new();
    let mut names: Vec<&&str> = act_params.keys().collect();
    names.sort();
    for &&tensor in &names {
        let Some(users) = consumers.get(tensor) else { continue };
        let readers: Vec<usize> = users.iter().copied().filter(|u| !skipped_nodes.contains(u)).collect();
        if readers.is_empty() {
            continue;
        }
        let (scale, zp) = act_params[tensor];
        inits.push(tensor_f32(&format!("{tensor}_s"), &[], &[scale]));
        inits.push(raw_tensor(&format!("{tensor}_zp"), &[], UINT8, vec![zp]));
        let params = [format!("{tensor}_s"), format!("{tensor}_zp")];
        let q = node(
            "QuantizeLinear",
            format!("{tensor}_qlin"),
            vec![tensor.to_string(), params[0].clone(), params[1].clone()],
            vec![format!("{tensor}_q")],
            vec![],
        );
        let dq = node(
            "DequantizeLinear",
            format!("{tensor}_dq"),
            vec![format!("{tensor}_q"), params[0].clone(), params[1].clone()],
            vec![format!("{tensor}_dq")],
            vec![],
        );
        after.entry(producers.get(tensor).copied()).or_default().extend([q, dq]);
        for r in readers {
            let n = &model.graph().node[r];
            for (slot, input) in n.input.iter().enumerate() {
                if input == tensor {
                    replace.entry(r).or_default().push((slot, format!("{tensor}_dq")));
                }
            }
        }
    }

    let g = out.graph_mut();
    let old_nodes = std::mem::take(&mut g.node);
    let mut nodes = head;
    nodes.extend(after.remove(&None).unwrap_or_default());
    for (i, mut n) in old_nodes.into_iter().enumerate() {
        for (slot, name) in replace.remove(&i).unwrap_or_default() {
            n.input[slot] = name;
        }
        nodes.push(n);
        nodes.extend(after.remove(&Some(i)).unwrap_or_default());
    }
    g.node = nodes;
    // Float originals no node reads any more go; their int8 versions replace them.
    let still_read: HashSet<String> = g.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    g.initializer.retain(|t| !used_inits.contains(&t.name) || still_read.contains(&t.name));
    g.input.retain(|i| !used_inits.contains(&i.name) || still_read.contains(&i.name));
    g.initializer.extend(inits);
    // Shapes and types of intermediate tensors changed; runtimes infer them again.
    g.value_info.clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_use_each_channels_range() {
        // Two output channels of 2 values: [1, -0.5] and [0.01, 0.02].
        let w = [1.0, -0.5, 0.01, 0.02];
        let (q, s) = quantize_weight(&[2, 2], &w, 0, true, 127.0);
        assert_eq!(s.len(), 2);
        // Each channel's own scale (its max |w| / 127, or slightly less where that rounds better).
        assert!(s[0] <= 1.0 / 127.0 + 1e-9 && s[0] >= 0.5 / 127.0);
        assert!(s[1] <= 0.02 / 127.0 + 1e-9 && s[1] >= 0.01 / 127.0);
        for (i, v) in w.iter().enumerate() {
            let back = q[i] as f32 * s[i / 2];
            assert!((back - v).abs() <= s[i / 2] * 0.5 + 1e-7, "{v} -> {back}");
        }
        // The chosen scale never rounds worse than plain max scaling.
        let heavy: Vec<f32> = (0..500).map(|i| ((i * 37 % 101) as f32 / 100.0 - 0.5).powi(3) * 8.0).collect();
        let (q, s) = quantize_weight(&[1, 500], &heavy, 0, true, 127.0);
        let amax = heavy.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let err = |q: &[i8], s: f32| heavy.iter().zip(q).map(|(v, q)| (v - *q as f32 * s).powi(2)).sum::<f32>();
        let plain: Vec<i8> = heavy.iter().map(|v| (v / (amax / 127.0)).round() as i8).collect();
        assert!(err(&q, s[0]) <= err(&plain, amax / 127.0) + 1e-9);
        // Per tensor, the small channel collapses to a couple of levels.
        let (q, s) = quantize_weight(&[2, 2], &w, 0, false, 127.0);
        let (q7, _) = quantize_weight(&[2, 2], &w, 0, true, 63.0);
        assert!(q7.iter().all(|v| v.abs() <= 63), "{q7:?}");
        assert_eq!(s.len(), 1);
        assert!(q[2].abs() <= 2 && q[3].abs() <= 3, "{q:?}");
        // Axis 1 (a MatMul weight [K, N]): channels are columns.
        let (_, s) = quantize_weight(&[2, 2], &[1.0, 0.1, -2.0, 0.1], 1, true, 127.0);
        assert!(s[0] > 1.0 / 127.0 && s[0] <= 2.0 / 127.0 + 1e-9 && (s[1] - 0.1 / 127.0).abs() < 1e-9, "{s:?}");
        // An all-zero channel keeps a finite scale.
        let (q, s) = quantize_weight(&[1, 2], &[0.0, 0.0], 0, true, 127.0);
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
    }
}
