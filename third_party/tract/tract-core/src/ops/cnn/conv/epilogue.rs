//! What a convolution can absorb from the op after it (fieldkit patches 9 and 20): a Clip or
//! Relu6, written by the ONNX importer as a Max and a Min by scalar constants.

use crate::internal::*;

/// `min(max(x, lo), hi)` as tract's Max and Min ops compute it (`f32::max`, `f32::min`: a NaN
/// becomes `lo`), written as the compare-selects that are one `maxps` and one `minps`.
pub(super) fn clamp_f32(values: &mut [f32], lo: f32, hi: f32) {
    for x in values {
        let v = if *x > lo { *x } else { lo };
        *x = if v < hi { v } else { hi };
    }
}

/// `TRACT_DEPTHWISE_CLAMP_FUSE=0` leaves a Clip after a convolution as its own ops.
fn clamp_fuse_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRACT_DEPTHWISE_CLAMP_FUSE").map_or(true, |v| v != "0"))
}

/// The clamp range `node` (an f32 convolution already clamping to `current`, or not) has once
/// it absorbs its only successor, when that successor is a Max or a Min by a scalar constant.
/// Returns the successor too: the caller wires its op under the successor's name.
pub(super) fn following_clamp<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
    current: Option<(f32, f32)>,
) -> TractResult<Option<(&'m TypedNode, f32, f32)>> {
    use crate::ops::binary::{OptBinByScalar, TypedBinOp};
    use crate::ops::math::{Max, Min};
    rule_if!(clamp_fuse_enabled());
    rule_if!(model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type());
    rule_if!(node.outputs[0].successors.len() == 1);
    rule_if!(!model.output_outlets()?.contains(&node.id.into()));
    let succ = model.node(node.outputs[0].successors[0].node);
    let binop: &dyn crate::ops::binary::BinMiniOp = if let Some(op) = succ.op_as::<TypedBinOp>() {
        &*op.0
    } else if let Some(op) = succ.op_as::<OptBinByScalar>() {
        &*op.binop
    } else {
        return Ok(None);
    };
    rule_if!(succ.inputs.len() == 2);
    let other = if succ.inputs[0].node == node.id { succ.inputs[1] } else { succ.inputs[0] };
    rule_if!(other.node != node.id);
    let other = model.outlet_fact(other)?;
    rule_if_some!(konst = &other.konst);
    rule_if!(konst.datum_type() == f32::datum_type() && konst.len() == 1);
    let v = konst.cast_to_scalar::<f32>()?;
    rule_if!(!v.is_nan());
    rule_if!(succ.outputs[0].fact.datum_type == f32::datum_type());
    rule_if!(succ.outputs[0].fact.shape == node.outputs[0].fact.shape);
    let (lo, hi) = current.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    if binop.is::<Max>() {
        // max after a min is not a clamp of the same form.
        rule_if!(hi == f32::INFINITY);
        Ok(Some((succ, lo.max(v), hi)))
    } else if binop.is::<Min>() {
        Ok(Some((succ, lo, hi.min(v))))
    } else {
        Ok(None)
    }
}

/// The patch that replaces `node` and its successor `succ` by `op`, under `succ`'s name.
pub(super) fn absorb_successor(
    model: &TypedModel,
    node: &TypedNode,
    succ: &TypedNode,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::new(format!("fusing {succ} into {node}"));
    let taps = patch.taps(model, &node.inputs)?;
    let wire = patch.wire_node(&succ.name, op, &taps)?[0];
    patch.shunt_outside(model, succ.id.into(), wire)?;
    Ok(patch)
}
