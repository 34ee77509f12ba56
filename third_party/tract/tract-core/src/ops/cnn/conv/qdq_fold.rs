//! fieldkit patch 8: an ONNX QDQ convolution becomes an integer convolution.
//!
//! A QDQ model writes each quantized convolution as float operators between quantization
//! nodes: `DequantizeLinear(x_q) -> Conv(w = DequantizeLinear(w_q), b) -> [Relu/Clip] ->
//! QuantizeLinear`. tract 0.23.9 const-folds the weight dequantization and runs the convolution
//! in float; no pass turns the sandwich into a `Conv` with `q_params`, the form tract's int8
//! kernels (VNNI, SDOT) run (sonos/tract PR #2725 proposes one). This rule does, for `group == 1`
//! convolutions: the 1x1 ones then declutter into quantized `EinSum`s, the others into the
//! quantized im2col path. Depthwise convolutions (`group` = channels) fold too since patch 13,
//! where their shape is concrete: codegen then runs them as an 8-bit `DepthWise`
//! (`depth_wise_q8`), not tract's quantized grouped path (one m = 1 matmul per channel over an
//! eager im2col, far slower than the float depthwise kernels). Other grouped convolutions stay
//! float.
//!
//! The weights reach the convolution already multiplied out (`PropConst` runs first), so the
//! rule recovers the integers: per output channel it finds the scale that puts every weight on
//! an integer grid (max |w| / 127, or / 63 for 7-bit weights, per channel or for the whole
//! tensor) and declines unless every weight is within 1e-3 of a step of that grid. A float
//! convolution is never approximated; only a dequantized one is turned back into its integers.
//! The activation on either side is taken from a `DequantizeLinearF32` of an 8-bit tensor, or
//! from a `FakeQuantizeLinear` (a Q -> DQ pair already folded by patch 3), whose quantization is
//! then wired again. Clamps between the convolution and its QuantizeLinear (Relu, Relu6) must be
//! no-ops in the 8-bit range (calibrated ranges make them so), or the rule declines.
//!
//! `TRACT_QDQ_CONV_FOLD=0` turns the rule off (for A/B measurements).

use crate::internal::*;
use crate::ops::binary::TypedBinOp;
use crate::ops::cnn::conv::KernelFormat;
use crate::ops::element_wise::ElementWiseOp;
use crate::ops::quant::{
    DequantizeLinearF32, FakeQuantizeLinear, QuantizeLinearI8, QuantizeLinearU8,
    quantize_linear_i8, quantize_linear_u8,
};

use super::Conv;

fn enabled() -> bool {
    std::env::var("TRACT_QDQ_CONV_FOLD").map(|v| v != "0").unwrap_or(true)
}

/// An 8-bit activation: where its tensor comes from, and its ONNX scale and zero point.
struct QuantizedActivation {
    /// The 8-bit tensor, or the float tensor to quantize again (with this op).
    source: OutletId,
    requantize: Option<ElementWiseOp>,
    scale: f32,
    zero_point: i32,
}

pub(super) fn range_of(dt: DatumType) -> (i32, i32) {
    if dt == DatumType::U8 { (0, 255) } else { (-128, 127) }
}

/// The multiplier (1 / scale), zero point and type of a QuantizeLinear node.
fn quantize_params(node: &TypedNode) -> Option<(f32, i32, DatumType)> {
    let ew = node.op_as::<ElementWiseOp>()?;
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        Some((q.scale, q.zero_point as i32, DatumType::U8))
    } else {
        ew.0.downcast_ref::<QuantizeLinearI8>()
            .map(|q| (q.scale, q.zero_point as i32, DatumType::I8))
    }
}

fn fake_quantize(node: &TypedNode) -> Option<(&FakeQuantizeLinear, DatumType)> {
    let fq = node.op_as::<ElementWiseOp>()?.0.downcast_ref::<FakeQuantizeLinear>()?;
    let dt = match (fq.lo, fq.hi) {
        (0, 255) => DatumType::U8,
        (-128, 127) => DatumType::I8,
        _ => return None,
    };
    // The pair one QDQ tensor writes: the same zero point, reciprocal scales.
    let consistent =
        fq.q_zero_point == fq.dq_zero_point && ((fq.q_scale * fq.dq_scale) - 1.0).abs() < 1e-5;
    consistent.then_some((fq, dt))
}

fn quantized_input(model: &TypedModel, wire: OutletId) -> TractResult<Option<QuantizedActivation>> {
    let node = model.node(wire.node);
    if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
        let dt = model.outlet_fact(node.inputs[0])?.datum_type;
        rule_if!(dt == DatumType::U8 || dt == DatumType::I8);
        return Ok(Some(QuantizedActivation {
            source: node.inputs[0],
            requantize: None,
            scale: dq.scale,
            zero_point: dq.zero_point,
        }));
    }
    rule_if_some!((fq, dt) = fake_quantize(node));
    let requantize = if dt == DatumType::U8 {
        quantize_linear_u8(fq.q_scale, fq.q_zero_point as u8)
    } else {
        quantize_linear_i8(fq.q_scale, fq.q_zero_point as i8)
    };
    Ok(Some(QuantizedActivation {
        source: node.inputs[0],
        requantize: Some(requantize),
        scale: fq.dq_scale,
        zero_point: fq.q_zero_point,
    }))
}

/// Where the convolution's float output is quantized: the node whose output the integer
/// convolution replaces, and how.
enum QuantizedOutput {
    /// A QuantizeLinear: the integer convolution writes its 8-bit tensor.
    Quantize { node: usize, scale: f32, zero_point: i32, dt: DatumType },
    /// A FakeQuantizeLinear: the integer convolution, then a DequantizeLinear.
    FakeQuantize { node: usize, scale: f32, zero_point: i32, dt: DatumType },
}

fn quantized_output(model: &TypedModel, conv: &TypedNode) -> TractResult<Option<QuantizedOutput>> {
    let outputs = model.output_outlets()?;
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut current = conv;
    loop {
        rule_if!(!outputs.contains(&OutletId::new(current.id, 0)));
        rule_if_some!(next = model.single_succ(current.id)?);
        let (out, multiplier) = if let Some((multiplier, zero_point, dt)) = quantize_params(next) {
            (
                QuantizedOutput::Quantize {
                    node: next.id,
                    scale: multiplier.recip(),
                    zero_point,
                    dt,
                },
                multiplier,
            )
        } else if let Some((fq, dt)) = fake_quantize(next) {
            let out = QuantizedOutput::FakeQuantize {
                node: next.id,
                scale: fq.dq_scale,
                zero_point: fq.q_zero_point,
                dt,
            };
            (out, fq.q_scale)
        } else {
            rule_if_some!(bin = next.op_as::<TypedBinOp>());
            rule_if!(next.inputs.len() == 2);
            let slot = if next.inputs[0] == OutletId::new(current.id, 0) { 1 } else { 0 };
            let fact = model.outlet_fact(next.inputs[slot])?;
            rule_if!(fact.datum_type == DatumType::F32);
            rule_if_some!(k = &fact.uniform);
            let k = k.cast_to_scalar::<f32>()?;
            match bin.0.name() {
                "Max" => lo = lo.max(k),
                "Min" => hi = hi.min(k),
                _ => return Ok(None),
            }
            current = next;
            continue;
        };
        // The clamps must change nothing once quantized: Q(lo) at or below the type's
        // minimum, Q(hi) at or above its maximum.
        let (zero_point, dt) = match out {
            QuantizedOutput::Quantize { zero_point, dt, .. }
            | QuantizedOutput::FakeQuantize { zero_point, dt, .. } => (zero_point, dt),
        };
        let (tlo, thi) = range_of(dt);
        let q = |v: f32| (v * multiplier).round_ties_even() + zero_point as f32;
        rule_if!(lo == f32::NEG_INFINITY || q(lo) <= tlo as f32);
        rule_if!(hi == f32::INFINITY || q(hi) >= thi as f32);
        return Ok(Some(out));
    }
}

/// The integers and per-channel scales behind dequantized weights `w` (`channels` rows), or
/// None when some weight is not on the grid of any candidate scale.
pub(crate) fn integer_weights(w: &[f32], channels: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    if channels == 0 || w.len() % channels != 0 || w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let inner = w.len() / channels;
    let global = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for row in w.chunks(inner) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max == 0.0 {
            q.extend(std::iter::repeat_n(0i8, inner));
            scales.push(if global > 0.0 { global / 127.0 } else { 1.0 });
            continue;
        }
        let on_grid = |s: f32| {
            row.iter().all(|v| {
                let r = v / s;
                r.round().abs() <= 127.0 && (r - r.round()).abs() <= 1e-3
            })
        };
        let scale = [max / 127.0, max / 63.0, global / 127.0, global / 63.0]
            .into_iter()
            .find(|s| *s > 0.0 && on_grid(*s))?;
        q.extend(row.iter().map(|v| (v / scale).round() as i8));
        scales.push(scale);
    }
    Some((q, scales))
}

pub(super) fn declutter_qdq_conv(
    conv: &Conv,
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<TypedModelPatch>> {
    rule_if!(conv.q_params.is_none() && node.inputs.len() == 3);
    // Depthwise convolutions (patch 13) fold where codegen runs them as an 8-bit DepthWise:
    // concrete shapes (elsewhere tract's quantized grouped path would be far slower than float).
    let depthwise = conv.is_depthwise()
        && model.outlet_fact(node.inputs[0])?.shape.as_concrete().is_some()
        && super::depth_wise_q8::qdq_depthwise_enabled();
    rule_if!(conv.group == 1 || depthwise);
    rule_if!(conv.kernel_fmt == KernelFormat::OIHW);
    rule_if!(model.outlet_fact(node.inputs[0])?.datum_type == DatumType::F32);
    rule_if!(enabled());
    rule_if_some!(input = quantized_input(model, node.inputs[0])?);
    let kernel_fact = model.outlet_fact(node.inputs[1])?;
    rule_if_some!(kernel = &kernel_fact.konst);
    rule_if!(kernel.datum_type() == DatumType::F32);
    let bias_fact = model.outlet_fact(node.inputs[2])?;
    rule_if_some!(bias = &bias_fact.konst);
    rule_if!(bias.datum_type() == DatumType::F32);
    rule_if_some!(output = quantized_output(model, node)?);

    let channels = conv.output_channels();
    let w = kernel.try_as_plain_ram()?;
    rule_if_some!((q, k_scales) = integer_weights(w.as_slice::<f32>()?, channels));
    let b = bias.try_as_plain_ram()?;
    let b = b.as_slice::<f32>()?;
    rule_if!(b.len() == 1 || b.len() == channels);
    let mut bias_q = Vec::with_capacity(channels);
    for (c, ks) in k_scales.iter().enumerate() {
        let v = (b[if b.len() == 1 { 0 } else { c }] as f64 / (input.scale as f64 * *ks as f64))
            .round();
        rule_if!(v.abs() < i32::MAX as f64 / 2.0);
        bias_q.push(v as i32);
    }

    let name = &node.name;
    let mut patch = TypedModelPatch::new("qdq-conv-fold");
    let mut x = patch.tap_model(model, input.source)?;
    if let Some(op) = input.requantize {
        x = patch.wire_node(format!("{name}.quantize_input"), op, &[x])?[0];
    }
    let kernel_q = Tensor::from_shape(kernel.shape(), &q)?;
    let k = patch.add_const(format!("{name}.kernel_i8"), kernel_q)?;
    let bias = patch.add_const(format!("{name}.bias_i32"), tensor1(&bias_q))?;
    let x0 = patch.add_const(format!("{name}.x0"), tensor0(input.zero_point))?;
    let x_scale = patch.add_const(format!("{name}.x_scale"), tensor0(input.scale))?;
    let k0 = patch.add_const(format!("{name}.k0"), tensor0(0i32))?;
    let k_scale = if k_scales.iter().all(|s| *s == k_scales[0]) {
        tensor0(k_scales[0])
    } else {
        tensor1(&k_scales)
    };
    let k_scale = patch.add_const(format!("{name}.k_scale"), k_scale)?;
    let (replaced, y_scale, y_zero_point, dt, dequantize) = match output {
        QuantizedOutput::Quantize { node, scale, zero_point, dt } => {
            (node, scale, zero_point, dt, false)
        }
        QuantizedOutput::FakeQuantize { node, scale, zero_point, dt } => {
            (node, scale, zero_point, dt, true)
        }
    };
    let y0 = patch.add_const(format!("{name}.y0"), tensor0(y_zero_point))?;
    let y_scale_w = patch.add_const(format!("{name}.y_scale"), tensor0(y_scale))?;
    let op = Conv { q_params: Some(dt), ..conv.clone() };
    let mut y =
        patch.wire_node(&**name, op, &[x, k, bias, x0, x_scale, k0, k_scale, y0, y_scale_w])?[0];
    if dequantize {
        y = patch.wire_node(
            format!("{name}.dequantize_output"),
            DequantizeLinearF32::new(y_scale, y_zero_point),
            &[y],
        )?[0];
    }
    patch.shunt_outside(model, OutletId::new(replaced, 0), y)?;
    Ok(Some(patch))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn integer_weights_recovers_per_channel_and_per_tensor_grids() {
        // Channel 0 on a 127-grid, channel 1 on a 63-grid (7-bit), channel 2 all zero.
        let (s0, s1) = (0.0123f32, 0.047f32);
        let q0: Vec<i8> = vec![127, -3, 0, 55, -127, 9];
        let q1: Vec<i8> = vec![-63, 1, 2, 63, 0, -17];
        let mut w: Vec<f32> = q0.iter().map(|q| *q as f32 * s0).collect();
        w.extend(q1.iter().map(|q| *q as f32 * s1));
        w.extend([0f32; 6]);
        let (q, s) = integer_weights(&w, 3).unwrap();
        assert_eq!(&q[..6], &q0[..]);
        assert_eq!(&q[6..12], &q1[..]);
        assert_eq!(&q[12..], &[0i8; 6]);
        assert!((s[0] - s0).abs() < 1e-7 && (s[1] - s1).abs() < 1e-7);
        // Per tensor: one scale, the second channel's max below 127 steps.
        let q2: Vec<i8> = vec![5, -20, 100, 3, 0, -1];
        let mut w: Vec<f32> = q0.iter().map(|q| *q as f32 * s0).collect();
        w.extend(q2.iter().map(|q| *q as f32 * s0));
        let (q, s) = integer_weights(&w, 2).unwrap();
        assert_eq!(&q[6..], &q2[..]);
        assert!((s[1] - s0).abs() < 1e-7);
        // Float weights are not on any grid: no fold.
        let w: Vec<f32> = (0..12).map(|i| ((i * 7919) % 1000) as f32 * 1e-4 + 0.01).collect();
        assert!(integer_weights(&w, 2).is_none());
        assert!(integer_weights(&[f32::NAN, 1.0], 1).is_none());
    }
}
