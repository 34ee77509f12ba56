#![allow(clippy::unnecessary_cast)]

use crate::internal::*;
use crate::ops::element_wise::ElementWiseOp;
use crate::ops::math::QScale;
use num_traits::AsPrimitive;
use tract_linalg::Scaler;
use tract_linalg::lut::Lut;
use tract_linalg::mmm::RoundingPolicy;

use super::binary::TypedBinOp;
use super::math::round_ties_to_even;

// `f32::round_ties_even` is the function `round_ties_to_even` computes (IEEE roundTiesToEven;
// NaN and the infinities pass through to the same saturating cast and clamp), but it lowers to
// one rounding instruction instead of the bit-twiddling branches, so a loop over these
// functions vectorises (see `quantize_f32_run`).
//
// The clamp happens in f32, before the conversion to i32: Rust's `as i32` saturates and maps
// NaN to 0, which x86 has no packed instruction for, so LLVM splits such a loop back into
// scalar conversions with compare-and-move fix-ups (that was half of a QuantizeLinear pass).
// Clamped first, the value is an exact small integer and the unchecked conversion is one
// `vcvttps2dq`. NaN still goes to the zero point, as the saturating cast made it. The one
// difference from the cast-then-clamp form is at ±inf with a non-zero zero point: there
// `i32::MAX + zero_point` overflowed (wrapping to the wrong end of the range in release builds,
// a panic in debug ones); now ±inf saturates, as ONNX's QuantizeLinear specifies.
#[inline(always)]
pub(crate) fn quantize_to_range(x: f32, scale: f32, zero_point: i32, lo: i32, hi: i32) -> i32 {
    let r = (x * scale).round_ties_even();
    let r = if r.is_nan() { 0.0 } else { r };
    let (lo, hi) = ((lo - zero_point) as f32, (hi - zero_point) as f32);
    let r = if r < lo { lo } else { r };
    let r = if r > hi { hi } else { r };
    // SAFETY: r is an integer in [lo - zero_point, hi - zero_point], well inside i32.
    unsafe { r.to_int_unchecked::<i32>() + zero_point }
}

#[inline(always)]
pub fn quantize_linear_f32_u8(x: f32, scale: f32, zero_point: i32) -> u8 {
    quantize_to_range(x, scale, zero_point, u8::MIN as i32, u8::MAX as i32) as u8
}

#[inline(always)]
pub fn quantize_linear_f32_i8(x: f32, scale: f32, zero_point: i32) -> i8 {
    quantize_to_range(x, scale, zero_point, i8::MIN as i32, i8::MAX as i32) as i8
}

/// An 8-bit type QuantizeLinear writes, and its scalar quantizer.
pub(crate) trait QuantizedByte: Copy {
    fn quantize(x: f32, scale: f32, zero_point: i32) -> Self;
    /// A value already within the type's range.
    fn from_i32(v: i32) -> Self;
}

impl QuantizedByte for u8 {
    #[inline(always)]
    fn quantize(x: f32, scale: f32, zero_point: i32) -> u8 {
        quantize_linear_f32_u8(x, scale, zero_point)
    }
    #[inline(always)]
    fn from_i32(v: i32) -> u8 {
        v as u8
    }
}

impl QuantizedByte for i8 {
    #[inline(always)]
    fn quantize(x: f32, scale: f32, zero_point: i32) -> i8 {
        quantize_linear_f32_i8(x, scale, zero_point)
    }
    #[inline(always)]
    fn from_i32(v: i32) -> i8 {
        v as i8
    }
}

/// `quantize_linear_f32_u8` / `_i8` over a run. With the rounding of those functions this loop
/// vectorises; with `round_ties_to_even` it stayed scalar (~3.7 ns per element, the largest
/// cost of a QDQ model on x86).
#[inline(always)]
fn quantize_f32_body<Q: QuantizedByte>(xs: &[f32], ys: &mut [Q], scale: f32, zero_point: i32) {
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        *y = Q::quantize(*x, scale, zero_point);
    }
}

/// The body compiled for AVX2, where rounding is `vroundps` and eight lanes go at once; the
/// baseline x86-64 target has no packed rounding instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_f32_avx2<Q: QuantizedByte>(xs: &[f32], ys: &mut [Q], scale: f32, zero_point: i32) {
    quantize_f32_body(xs, ys, scale, zero_point)
}

fn quantize_f32_run<Q: QuantizedByte>(xs: &[f32], ys: &mut [Q], scale: f32, zero_point: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return unsafe { quantize_f32_avx2(xs, ys, scale, zero_point) };
    }
    quantize_f32_body(xs, ys, scale, zero_point)
}

element_wise_oop!(quantize_linear_u8,
 QuantizeLinearU8 {
     scale: f32,
     zero_point: u8
 },
 [f16] => u8 |op, xs, ys| {
     xs.iter().zip(ys.iter_mut()).for_each(|(x,y)|
                                           *y = quantize_linear_f32_u8(x.to_f32(), op.scale, op.zero_point as i32)
                                          );
     Ok(())
 },
 [f32] => u8 |op, xs, ys| {
     quantize_f32_run(xs, ys, op.scale, op.zero_point as i32);
     Ok(())
 },
 [i32] => u8 |op, xs, ys| {
     xs.iter().zip(ys.iter_mut()).for_each(|(x,y)|
                                           *y = quantize_linear_f32_u8(*x as f32, op.scale, op.zero_point as i32)
                                          );
     Ok(())
 };
 info: info_quantize_linear_u8
);

fn info_quantize_linear_u8(q: &QuantizeLinearU8) -> TractResult<Vec<String>> {
    Ok(vec![format!(
        "scale: {} zero_point: {} 1/scale: {}",
        q.scale,
        q.zero_point,
        q.scale.recip()
    )])
}

element_wise_oop!(quantize_linear_i8,
 QuantizeLinearI8 {
     scale: f32,
     zero_point: i8
 },
 [f32] => i8 |op, xs, ys| {
     quantize_f32_run(xs, ys, op.scale, op.zero_point as i32);
     Ok(())
 },
 [i32] => i8 |op, xs, ys| {
     xs.iter().zip(ys.iter_mut()).for_each(|(x,y)|
                                           *y = quantize_linear_f32_i8(*x as f32, op.scale, op.zero_point as i32)
                                          );
     Ok(())
 };
 info: info_quantize_linear_i8
);

fn info_quantize_linear_i8(q: &QuantizeLinearI8) -> TractResult<Vec<String>> {
    Ok(vec![format!(
        "scale: {} zero_point: {} 1/scale: {}",
        q.scale,
        q.zero_point,
        q.scale.recip()
    )])
}

#[derive(Clone, Debug, new, PartialEq)]
pub struct DequantizeLinearF32 {
    pub scale: f32,
    pub zero_point: i32,
}

impl Eq for DequantizeLinearF32 {}

/// `(x - zero_point) * scale` over a run.
#[inline(always)]
fn dequantize_body<T: Copy + AsPrimitive<i32>>(xs: &[T], ys: &mut [f32], scale: f32, zero_point: i32) {
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        *y = (x.as_() - zero_point) as f32 * scale;
    }
}

/// The same loop for AVX2: eight lanes of widening, subtraction, conversion and product where
/// the baseline target does four (and splits the byte widening into several shuffles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_avx2<T: Copy + AsPrimitive<i32>>(
    xs: &[T],
    ys: &mut [f32],
    scale: f32,
    zero_point: i32,
) {
    dequantize_body(xs, ys, scale, zero_point)
}

fn dequantize_run<T: Copy + AsPrimitive<i32>>(xs: &[T], ys: &mut [f32], scale: f32, zero_point: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return unsafe { dequantize_avx2(xs, ys, scale, zero_point) };
    }
    dequantize_body(xs, ys, scale, zero_point)
}

impl DequantizeLinearF32 {
    fn eval_t<T: Datum + AsPrimitive<i32>>(&self, input: &Tensor) -> TractResult<Tensor> {
        let mut output = unsafe { Tensor::uninitialized::<f32>(input.shape())? };
        dequantize_run(
            input.try_as_plain_ram()?.as_slice::<T>()?,
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            self.scale,
            self.zero_point,
        );
        Ok(output)
    }
}

impl Op for DequantizeLinearF32 {
    fn name(&self) -> StaticName {
        "DequantizeLinearF32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("scale: {} zero_point: {}", self.scale, self.zero_point)])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for DequantizeLinearF32 {
    op_out_of_plan!();
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let output = match inputs[0].datum_type() {
            DatumType::I8 => self.eval_t::<i8>(&inputs[0])?,
            DatumType::I32 => self.eval_t::<i32>(&inputs[0])?,
            DatumType::U8 => self.eval_t::<u8>(&inputs[0])?,
            dt => bail!("Unsupported type {:?}", dt),
        };
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DequantizeLinearF32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::natural(inputs, outputs)
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        Ok(Some(AxisChangeConsequence::new(model, node, None, change)))
    }

    fn declutter(
        &self,
        model: &TypedModel,
        dequant: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        let mut current = dequant;
        let incoming_dt = model.node_input_facts(dequant.id)?[0].datum_type;
        while let Some(quant) = model.single_succ(current.id)? {
            let q_params = if let Some(op) = quant.op_as::<ElementWiseOp>() {
                if let Some(mop) = op.0.downcast_ref::<QuantizeLinearU8>() {
                    Some((mop.scale, mop.zero_point as i32, u8::datum_type()))
                } else {
                    op.0.downcast_ref::<QuantizeLinearI8>()
                        .map(|mop| (mop.scale, mop.zero_point as i32, i8::datum_type()))
                }
            } else {
                None
            };
            if let Some((scale, zero_point, dt)) = q_params {
                // first, try Op::quantize() on all ops in the chain
                let mut patch = TypedModelPatch::default();
                let mut wire: OutletId = patch.tap_model(model, dequant.inputs[0])?;
                let mut next = model.single_succ(dequant.id)?.unwrap();
                loop {
                    if let Some(op) = next
                        .op
                        .quantize(model, dequant, dt, scale, zero_point)
                        .with_context(|| format!("Quantizing {next}"))?
                    {
                        wire = patch.wire_node(&*next.name, op, [wire].as_ref())?[0];
                    } else {
                        break;
                    }
                    if next.id == current.id {
                        patch.shunt_outside(model, OutletId::new(quant.id, 0), wire)?;
                        return Ok(Some(patch));
                    } else {
                        next = model.single_succ(next.id)?.unwrap();
                    }
                }
                // or else make a lookup table
                if incoming_dt == DatumType::I8 || incoming_dt == DatumType::U8 {
                    let mut adhoc_model = TypedModel::default();
                    let mut wire = adhoc_model.add_source("ad-hoc", dt.fact([256]))?;
                    let mut next = model.single_succ(dequant.id)?.unwrap();
                    let mut name = None;
                    // plug in dequant
                    wire = adhoc_model.wire_node(
                        &*dequant.name,
                        dequant.op.clone(),
                        [wire].as_ref(),
                    )?[0];
                    while next.id != quant.id {
                        name.get_or_insert(&*next.name);
                        wire =
                            adhoc_model.wire_node(&*next.name, next.op.clone(), [wire].as_ref())?
                                [0];
                        next = model.single_succ(next.id)?.unwrap();
                    }
                    // plug in quant
                    wire =
                        adhoc_model.wire_node(&*quant.name, quant.op.clone(), [wire].as_ref())?[0];
                    adhoc_model.select_output_outlets(&[wire])?;
                    let input = (0u8..=255).collect::<Vec<u8>>();
                    let input = match dt {
                        DatumType::I8 => unsafe {
                            tensor1(std::mem::transmute::<&[u8], &[i8]>(&*input))
                        },
                        DatumType::U8 => tensor1(&input),
                        _ => unreachable!(),
                    };
                    let output =
                        SimplePlan::new(adhoc_model)?.run(tvec!(input.into_tvalue()))?.remove(0);
                    let table: &[u8] = match dt {
                        DatumType::I8 => unsafe {
                            std::mem::transmute::<&[i8], &[u8]>(
                                output.try_as_plain_ram()?.as_slice::<i8>()?,
                            )
                        },
                        DatumType::U8 => output.try_as_plain_ram()?.as_slice::<u8>()?,
                        _ => unreachable!(),
                    };
                    let op = lookup_table(tract_linalg::routines::lut_u8(table)?);
                    let mut patch = TypedModelPatch::default();
                    let mut wire: OutletId = patch.tap_model(model, dequant.inputs[0])?;

                    wire = patch.wire_node(name.unwrap_or(&*dequant.name), op, [wire].as_ref())?[0];
                    patch.shunt_outside(model, OutletId::new(quant.id, 0), wire)?;
                    return Ok(Some(patch));
                }
            }
            let (input_facts, output_facts) = model.node_facts(quant.id)?;
            let invariants = quant
                .op
                .axes_mapping(&input_facts, &output_facts)
                .with_context(|| format!("Querying invariants for {quant}"))?;
            if invariants.is_element_wise_unary() {
                current = quant;
            } else {
                break;
            }
        }
        // No integer chain to fold into: the pair in front of a float operator becomes one pass.
        fold_quantize_dequantize(model, dequant, self)
    }

    as_op!();
}

/// `DequantizeLinear(QuantizeLinear(x))` in one pass, f32 to f32 in place: what a QDQ model's
/// activation pair computes when the next operator runs in float (every convolution of a QDQ
/// model in tract today). The same arithmetic as the two ops, so the same bits, without the
/// 8-bit tensor between them, its allocation, and the second pass over memory.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantizeLinear {
    /// QuantizeLinear's multiplier (1 / the ONNX scale), zero point and output range.
    pub q_scale: f32,
    pub q_zero_point: i32,
    pub lo: i32,
    pub hi: i32,
    /// DequantizeLinear's scale and zero point.
    pub dq_scale: f32,
    pub dq_zero_point: i32,
}

impl Eq for FakeQuantizeLinear {}

impl FakeQuantizeLinear {
    #[inline(always)]
    fn body(&self, xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let q = quantize_to_range(*x, self.q_scale, self.q_zero_point, self.lo, self.hi);
            *x = (q - self.dq_zero_point) as f32 * self.dq_scale;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn body_avx2(&self, xs: &mut [f32]) {
        self.body(xs)
    }

    fn run(&self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            return unsafe { self.body_avx2(xs) };
        }
        self.body(xs)
    }
}

impl ElementWiseMiniOp for FakeQuantizeLinear {
    fn name(&self) -> String {
        "FakeQuantizeLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "quantize: 1/scale {} zero point {} range [{}, {}]; dequantize: scale {} zero point {}",
            self.q_scale, self.q_zero_point, self.lo, self.hi, self.dq_scale, self.dq_zero_point
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    fn eval_in_place(&self, t: &mut Tensor, out_dt: Option<DatumType>) -> TractResult<()> {
        ensure!(
            t.datum_type() == f32::datum_type() && out_dt.is_none_or(|dt| dt == f32::datum_type()),
            "FakeQuantizeLinear runs on f32, got {:?}",
            t.datum_type()
        );
        let mut plain = t.try_as_plain_ram_mut()?;
        let xs = plain.as_slice_mut::<f32>()?;
        let len = xs.len();
        tract_linalg::multithread::par_chunks_mut(xs, 1, len, |_, chunk| {
            self.run(chunk);
            Ok(())
        })
    }
}

/// A QuantizeLinear (f32 to u8 / i8) whose only consumer is `dequant`, fused with it.
fn fold_quantize_dequantize(
    model: &TypedModel,
    dequant: &TypedNode,
    dq: &DequantizeLinearF32,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(quant) = model.single_prec(dequant.id)? else { return Ok(None) };
    let Some(ew) = quant.op_as::<ElementWiseOp>() else { return Ok(None) };
    let (q_scale, q_zero_point, lo, hi) = if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        (q.scale, q.zero_point as i32, u8::MIN as i32, u8::MAX as i32)
    } else if let Some(q) = ew.0.downcast_ref::<QuantizeLinearI8>() {
        (q.scale, q.zero_point as i32, i8::MIN as i32, i8::MAX as i32)
    } else {
        return Ok(None);
    };
    let quantized = OutletId::new(quant.id, 0);
    if ew.1.is_some()
        || model.outlet_fact(quant.inputs[0])?.datum_type != f32::datum_type()
        || model.single_succ(quant.id)?.map(|n| n.id) != Some(dequant.id)
        || model.output_outlets()?.contains(&quantized)
    {
        return Ok(None);
    }
    let op = FakeQuantizeLinear {
        q_scale,
        q_zero_point,
        lo,
        hi,
        dq_scale: dq.scale,
        dq_zero_point: dq.zero_point,
    };
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, quant.inputs[0])?;
    let y = patch.wire_node(&*dequant.name, ElementWiseOp(Box::new(op), None), &[x])?[0];
    patch.shunt_outside(model, dequant.id.into(), y)?;
    Ok(Some(patch))
}

element_wise_oop!(lookup_table,
 LookupTable {
     table: Box<dyn Lut>
 },
 [i8] => i8 |op, xs, ys| {
     ys.copy_from_slice(xs);
     unsafe {
         let casted = std::slice::from_raw_parts_mut(ys.as_mut_ptr() as *mut u8, ys.len());
         op.table.run(casted);
     }
     Ok(())
 },
 [u8] => u8 |op, xs, ys| {
     ys.copy_from_slice(xs);
     op.table.run(ys);
     Ok(())
 }
);

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Scale;

impl crate::ops::binary::BinMiniOp for Scale {
    fn name(&self) -> &'static str {
        "Scale"
    }
    fn result_datum_type(&self, a: DatumType, b: DatumType) -> TractResult<DatumType> {
        if !a.is_float() {
            bail!("Scale left operand must be float, got {:?}", a);
        }
        Ok(b)
    }

    fn operating_datum_type(&self, a: DatumType, b: DatumType) -> TractResult<DatumType> {
        if !a.is_float() {
            bail!("Scale left operand must be float, got {:?}", a);
        }
        Ok(b)
    }

    fn eval_out_of_place(&self, c: &mut Tensor, a: &Tensor, b: &Tensor) -> TractResult<()> {
        let a = a.cast_to::<f32>()?;
        let a = a.to_plain_array_view::<f32>()?;
        unsafe fn eval_out_of_place_t<T: Datum + AsPrimitive<f32>>(
            c: &mut Tensor,
            a: &ndarray::ArrayViewD<f32>,
            b: &Tensor,
        ) where
            f32: AsPrimitive<T>,
        {
            let b = unsafe { b.to_array_view_unchecked::<T>() };
            let mut c = unsafe { c.to_array_view_mut_unchecked::<T>() };
            ndarray::Zip::from(&mut c)
                .and_broadcast(a)
                .and_broadcast(b)
                .for_each(|c, a, b| *c = scale_by(*b, *a))
        }
        unsafe { dispatch_numbers!(eval_out_of_place_t(b.datum_type())(c, &a, b)) }
        Ok(())
    }

    fn eval_in_a(&self, a: &mut Tensor, b: &Tensor) -> TractResult<()> {
        let mut a_plain = a.try_as_plain_ram_mut()?;
        let a = a_plain.to_array_view_mut::<f32>()?;
        let b = b.to_plain_array_view::<f32>()?;
        ndarray::Zip::from(a).and_broadcast(b).for_each(|a, b| *a = scale_by(*b, *a));
        Ok(())
    }

    fn is_commutative(&self) -> bool {
        false
    }

    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        let a = model.outlet_fact(node.inputs[0])?;
        if let Some(a) = &a.uniform {
            if a.cast_to_scalar::<f32>()? == 1. {
                return Ok(Some(TypedModelPatch::rewire(
                    model,
                    &node.inputs[1..2],
                    &[node.id.into()],
                    &|_p, x| Ok(x.into()),
                )?));
            } else if node.outputs[0].fact.datum_type == DatumType::I32 {
                let factor = a.cast_to_scalar::<f32>()?;
                let scaler = Scaler::new(factor, RoundingPolicy::Even);

                let op = ElementWiseOp(Box::new(QScale { scaler }), None);
                let patch =
                    TypedModelPatch::replace_single_op(model, node, &node.inputs[1..2], op)?;

                return Ok(Some(patch));
            }
        }
        requantize_chain(model, node)
    }
}

/// fieldkit patch 6. A quantized matmul's requantization with a scale per output channel
/// (onnxruntime's per-channel weights) is wired by `matmul::quant::requant` as five passes over
/// the i32 accumulators: `Scale`, `Add` (zero point), `Min`, `Max`, `Cast`. Only a uniform scale
/// fuses into the matmul epilogue (as `QScale`), so with a vector scale all five ran, each over
/// the whole tensor. This folds the chain into one `RequantizeI32` pass: the same rounding
/// (ties to even), zero point, clamps and output type.
fn requantize_chain(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    rule_if!(node.outputs[0].fact.datum_type == DatumType::I32);
    let scale_fact = model.outlet_fact(node.inputs[0])?;
    rule_if_some!(scale = &scale_fact.konst);
    rule_if!(scale.datum_type().is_float());
    let shape = node.outputs[0].fact.shape.as_concrete().map(|s| s.to_vec());
    rule_if_some!(shape = shape);
    // One axis of channels (or none): the scale broadcasts along every other axis.
    let varying: TVec<usize> = (0..scale.rank()).filter(|&ax| scale.shape()[ax] != 1).collect();
    rule_if!(varying.len() <= 1 && scale.rank() == shape.len());
    let axis = varying.first().copied().unwrap_or(0);
    rule_if!(varying.is_empty() || scale.shape()[axis] == shape[axis]);
    let scales: Vec<f32> = scale.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();

    let outputs = model.output_outlets()?;
    let uniform_i32 = |n: &TypedNode, slot: usize| -> TractResult<Option<i32>> {
        let fact = model.outlet_fact(n.inputs[slot])?;
        Ok(match &fact.uniform {
            Some(u) if fact.datum_type.is_integer() => Some(u.cast_to_scalar::<i32>()?),
            _ => None,
        })
    };
    let (mut zero_point, mut lo, mut hi) = (0i32, i32::MIN, i32::MAX);
    let mut seen_clamp = false;
    let mut current = node;
    loop {
        rule_if!(!outputs.contains(&OutletId::new(current.id, 0)));
        rule_if_some!(next = model.single_succ(current.id)?);
        if let Some(cast) = next.op_as::<crate::ops::cast::Cast>() {
            rule_if!(cast.to == DatumType::U8 || cast.to == DatumType::I8);
            let (tlo, thi) = if cast.to == DatumType::U8 { (0, 255) } else { (-128, 127) };
            // The saturating cast after the clamps: an unclamped value would wrap instead.
            rule_if!(lo >= tlo && hi <= thi);
            let op = RequantizeI32 { axis, scales, zero_point, lo, hi, dt: cast.to };
            let mut patch = TypedModelPatch::new("requantize-i32");
            let x = patch.tap_model(model, node.inputs[1])?;
            let y = patch.wire_node(&*next.name, op, &[x])?[0];
            patch.shunt_outside(model, OutletId::new(next.id, 0), y)?;
            return Ok(Some(patch));
        }
        rule_if_some!(bin = next.op_as::<crate::ops::binary::TypedBinOp>());
        rule_if!(next.inputs.len() == 2);
        let slot = if next.inputs[0] == OutletId::new(current.id, 0) { 1 } else { 0 };
        rule_if_some!(k = uniform_i32(next, slot)?);
        let mini = bin.0.name();
        if mini == "Add" && !seen_clamp {
            zero_point = zero_point.checked_add(k).context("zero point overflow")?;
        } else if mini == "Min" {
            hi = hi.min(k);
            seen_clamp = true;
        } else if mini == "Max" {
            lo = lo.max(k);
            seen_clamp = true;
        } else {
            return Ok(None);
        }
        current = next;
    }
}

/// `clamp(round_ties_even(x * scale[c]) + zero_point, lo, hi)` from i32 to u8 / i8, the scale
/// taken along `axis` (one value when `scales` has one): what `Scale` → `Add` → `Min` → `Max` →
/// `Cast` compute, in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct RequantizeI32 {
    pub axis: usize,
    pub scales: Vec<f32>,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
    pub dt: DatumType,
}

impl Eq for RequantizeI32 {}

impl std::hash::Hash for RequantizeI32 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.axis.hash(state);
        self.scales.iter().for_each(|s| s.to_bits().hash(state));
        (self.zero_point, self.lo, self.hi, self.dt).hash(state);
    }
}

/// One run of `xs` sharing `scale`, or (`per_lane`) one scale per element.
#[inline(always)]
fn requantize_body<T: QuantizedByte>(
    xs: &[i32],
    ys: &mut [T],
    scales: &[f32],
    per_lane: bool,
    zero_point: i32,
    lo: i32,
    hi: i32,
) {
    if per_lane {
        for ((x, y), s) in xs.iter().zip(ys.iter_mut()).zip(scales.iter()) {
            *y = T::from_i32(quantize_to_range(*x as f32, *s, zero_point, lo, hi));
        }
    } else {
        let s = scales[0];
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            *y = T::from_i32(quantize_to_range(*x as f32, s, zero_point, lo, hi));
        }
    }
}

/// The whole tensor: channel-last (`inner` 1) rows of `channels` values taking the scales lane
/// by lane, or runs of `inner` values sharing one. One call for the tensor, so that a row of 16
/// channels is not a function call of its own (it was, and cost more than its arithmetic).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn requantize_all<T: QuantizedByte>(
    xs: &[i32],
    ys: &mut [T],
    scales: &[f32],
    channels: usize,
    inner: usize,
    zero_point: i32,
    lo: i32,
    hi: i32,
) {
    if inner == 1 && channels > 1 {
        for (xs, ys) in xs.chunks_exact(channels).zip(ys.chunks_exact_mut(channels)) {
            requantize_body(xs, ys, scales, true, zero_point, lo, hi);
        }
    } else {
        for (ix, (xs, ys)) in xs.chunks(inner).zip(ys.chunks_mut(inner)).enumerate() {
            requantize_body(xs, ys, &scales[ix % channels..][..1], false, zero_point, lo, hi);
        }
    }
}

macro_rules! requantize_with_features {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<T: QuantizedByte>(
            xs: &[i32],
            ys: &mut [T],
            scales: &[f32],
            channels: usize,
            inner: usize,
            zero_point: i32,
            lo: i32,
            hi: i32,
        ) {
            requantize_all(xs, ys, scales, channels, inner, zero_point, lo, hi)
        }
    };
}

requantize_with_features!(requantize_avx512, "avx512f,avx512bw,avx512vl,avx2");
requantize_with_features!(requantize_avx2, "avx2");

impl RequantizeI32 {
    fn eval_t<T: QuantizedByte + Datum>(&self, x: &Tensor) -> TractResult<Tensor> {
        let shape = x.shape();
        let channels = if self.scales.len() == 1 { 1 } else { shape[self.axis] };
        ensure!(self.scales.len() == channels, "RequantizeI32: {} scales for {channels} channels", self.scales.len());
        let inner: usize = if channels == 1 { x.len().max(1) } else { shape[self.axis + 1..].iter().product() };
        let mut y = unsafe { Tensor::uninitialized::<T>(shape)? };
        let xs = x.try_as_plain_ram()?;
        let xs = xs.as_slice::<i32>()?;
        let mut ys = y.try_as_plain_ram_mut()?;
        let ys = ys.as_slice_mut::<T>()?;
        let (scales, zp, lo, hi) = (&self.scales[..], self.zero_point, self.lo, self.hi);
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vl") {
                unsafe { requantize_avx512(xs, ys, scales, channels, inner, zp, lo, hi) };
                return Ok(y);
            }
            if std::is_x86_feature_detected!("avx2") {
                unsafe { requantize_avx2(xs, ys, scales, channels, inner, zp, lo, hi) };
                return Ok(y);
            }
        }
        requantize_all(xs, ys, scales, channels, inner, zp, lo, hi);
        Ok(y)
    }
}

impl Op for RequantizeI32 {
    fn name(&self) -> StaticName {
        "RequantizeI32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} scales along axis {}, zero point {}, range [{}, {}] -> {:?}",
            self.scales.len(),
            self.axis,
            self.zero_point,
            self.lo,
            self.hi,
            self.dt
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for RequantizeI32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let y = match self.dt {
            DatumType::U8 => self.eval_t::<u8>(&x)?,
            DatumType::I8 => self.eval_t::<i8>(&x)?,
            dt => bail!("RequantizeI32 to {dt:?}"),
        };
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for RequantizeI32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::I32);
        Ok(tvec!(self.dt.fact(inputs[0].shape.clone())))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::natural(inputs, outputs)
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        if self.scales.len() == 1 {
            return Ok(Some(AxisChangeConsequence::new(model, node, None, change)));
        }
        rule_if_some!(axis = change.transform_axis(self.axis));
        // Only moves that keep the channel axis whole; a reshape through it would not.
        rule_if!(!matches!(change, AxisOp::Reshape(..)));
        let op = RequantizeI32 { axis, ..self.clone() };
        Ok(Some(AxisChangeConsequence::new(model, node, Some(Box::new(op)), change)))
    }

    /// Writes i8 itself when an `OffsetU8asI8` follows (see `offset_u8_as_i8_successor`).
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        rule_if_some!(dt = offset_u8_as_i8_successor(model, node)?);
        let op = RequantizeI32 {
            zero_point: self.zero_point - 128,
            lo: self.lo - 128,
            hi: self.hi - 128,
            dt,
            ..self.clone()
        };
        Ok(Some(TypedModelPatch::fuse_with_next(model, node, op)?))
    }

    as_op!();
}

#[inline]
pub(crate) fn scale_by<T: Datum + AsPrimitive<f32>>(b: T, a: f32) -> T
where
    f32: AsPrimitive<T>,
{
    let b = b.as_();
    (round_ties_to_even(b.abs() * a) * b.signum()).as_()
}

pub fn scale() -> TypedBinOp {
    TypedBinOp(Box::new(Scale), None)
}

/// Offsets i8 integers as u8 integers.
pub(crate) fn offset_i8_as_u8_elementwise(x: i8) -> u8 {
    (x as u8).wrapping_add(128)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetI8asU8;
impl ElementWiseMiniOp for OffsetI8asU8 {
    fn name(&self) -> String {
        format!("{}{}", self.prefix(), stringify!(OffsetI8asU8))
    }
    fn output_type(&self, input_type: DatumType) -> Option<DatumType> {
        Some(if let DatumType::QI8(qp) = input_type {
            let (zp, scale) = qp.zp_scale();
            DatumType::QU8(QParams::ZpScale { zero_point: zp + 128, scale })
        } else if input_type == DatumType::I8 {
            DatumType::U8
        } else {
            input_type
        })
    }
    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let output_type = out_dt.unwrap_or(self.output_type(t.datum_type()).unwrap());
        let mut dst = unsafe { Tensor::uninitialized_dt(output_type, t.shape())? };
        if t.datum_type().unquantized() == i8::datum_type() {
            t.try_as_plain_ram()?
                .as_slice::<i8>()?
                .iter()
                .zip(dst.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?.iter_mut())
                .for_each(|(x, y)| *y = offset_i8_as_u8_elementwise(*x));
            return Ok(dst);
        }

        bail!("{} does not support {:?}", self.name(), t.datum_type());
    }
}

pub fn offset_i8_as_u8() -> ElementWiseOp {
    ElementWiseOp(Box::new(OffsetI8asU8 {}), None)
}

/// Offsets u8 integers as i8 integers.
pub(crate) fn offset_u8_as_i8_elementwise(x: u8) -> i8 {
    x.wrapping_sub(128) as i8
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetU8asI8;
impl ElementWiseMiniOp for OffsetU8asI8 {
    fn name(&self) -> String {
        format!("{}{}", self.prefix(), stringify!(OffsetU8asI8))
    }
    fn output_type(&self, input_type: DatumType) -> Option<DatumType> {
        Some(if let DatumType::QU8(qp) = input_type {
            let (zp, scale) = qp.zp_scale();
            DatumType::QI8(QParams::ZpScale { zero_point: zp - 128, scale })
        } else if input_type == DatumType::U8 {
            DatumType::I8
        } else {
            input_type
        })
    }
    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let output_type = out_dt.unwrap_or(self.output_type(t.datum_type()).unwrap());
        let mut dst = unsafe { Tensor::uninitialized_dt(output_type, t.shape())? };
        if t.datum_type().unquantized() == u8::datum_type() {
            t.try_as_plain_ram()?
                .as_slice::<u8>()?
                .iter()
                .zip(dst.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?.iter_mut())
                .for_each(|(x, y)| *y = offset_u8_as_i8_elementwise(*x));
            return Ok(dst);
        }

        bail!("{} does not support {:?}", self.name(), t.datum_type());
    }

    /// A plain u8 QuantizeLinear read only through this offset quantizes to i8 itself, its
    /// zero point less 128 (exact, as in `offset_u8_as_i8_successor`; patch 19).
    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        rule_if_some!(prec = model.single_prec(node.id)?);
        rule_if_some!(
            q = prec
                .op_as::<ElementWiseOp>()
                .filter(|ew| ew.1.is_none())
                .and_then(|ew| ew.0.downcast_ref::<QuantizeLinearU8>())
        );
        rule_if!(model.single_succ(prec.id)?.map(|n| n.id) == Some(node.id));
        rule_if!(!model.output_outlets()?.contains(&prec.id.into()));
        rule_if!(prec.outputs[0].fact.datum_type == u8::datum_type());
        rule_if!(node.outputs[0].fact.datum_type == i8::datum_type());
        let input_dt = model.outlet_fact(prec.inputs[0])?.datum_type;
        rule_if!(input_dt == f32::datum_type() || input_dt == i32::datum_type());
        let op = quantize_linear_i8(q.scale, (q.zero_point as i32 - 128) as i8);
        let mut patch = TypedModelPatch::new(format!("fusing {node} into {prec}"));
        let x = patch.tap_model(model, prec.inputs[0])?;
        let wire = patch.wire_node(&prec.name, op, &[x])?[0];
        patch.shunt_outside(model, node.id.into(), wire)?;
        Ok(Some(patch))
    }
}
pub fn offset_u8_as_i8() -> ElementWiseOp {
    ElementWiseOp(Box::new(OffsetU8asI8 {}), None)
}

/// When `node` writes plain u8 and its only consumer is an `OffsetU8asI8` (what the quantized
/// matmul wiring puts before a u8 activation), that consumer's (i8) output type: a producer
/// that writes u8 through a zero point can write the i8 itself, with the zero point less 128
/// (exact: the offset subtracts 128 from every byte), and the pass over the tensor goes
/// (patch 19). `TypedModelPatch::fuse_with_next` then replaces the pair.
pub(crate) fn offset_u8_as_i8_successor(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<DatumType>> {
    rule_if_some!(succ = model.single_succ(node.id)?);
    rule_if!(!model.output_outlets()?.contains(&node.id.into()));
    rule_if!(node.outputs[0].fact.datum_type == u8::datum_type());
    rule_if!(
        succ.op_as::<ElementWiseOp>().is_some_and(|ew| ew.0.downcast_ref::<OffsetU8asI8>().is_some())
    );
    let dt = succ.outputs[0].fact.datum_type;
    Ok((dt == i8::datum_type()).then_some(dt))
}

#[cfg(test)]
pub mod scale {
    use crate::internal::*;
    use crate::ops::einsum::EinSum;
    use crate::ops::math::round_ties_to_even;
    use proptest::prelude::*;

    fn test_scale(a: i8, b: i8, scale: f32) {
        let expected = (((a as i32) * (b as i32)) as f32) / scale;
        let expected = round_ties_to_even(expected.abs()) * expected.signum();
        let expected = (expected as i32).clamp(-128, 127);

        let input = tvec!(tensor2(&[[b]]).into_tvalue());
        let mut model = TypedModel::default();
        let a = model.add_const("a", tensor2(&[[a]])).unwrap();
        let b = model.add_source("b", i8::fact([1, 1])).unwrap();
        let bias = model.add_const("bias", tensor0(0i32)).unwrap();
        let a0 = model.add_const("a0", tensor0(0i8)).unwrap();
        let a_scale = model.add_const("a_scale", tensor0(1f32)).unwrap();
        let b0 = model.add_const("b0", tensor0(0i8)).unwrap();
        let b_scale = model.add_const("b_scale", tensor0(1f32)).unwrap();
        let c0 = model.add_const("c0", tensor0(0i8)).unwrap();
        let c_scale = model.add_const("c_scale", tensor0(scale)).unwrap();
        let op = EinSum {
            axes: "mk,kn,,,,,,,->mn".parse().unwrap(),
            operating_dt: i32::datum_type(),
            q_params: Some(i8::datum_type()),
        };
        let output = model
            .wire_node("mmm", op, &[a, b, bias, a0, a_scale, b0, b_scale, c0, c_scale])
            .unwrap();
        model.select_output_outlets(&output).unwrap();

        let plain = model.clone().into_runnable().unwrap().run(input.clone()).unwrap();
        let optim = model.into_optimized().unwrap().into_runnable().unwrap().run(input).unwrap();

        // The reference divides in f32, the plain path multiplies by the folded f32 scale, the
        // optimized one by its Q0_31 fixed-point form: three roundings that can straddle a tie.
        for (label, found) in [("plain", &plain[0]), ("optimized", &optim[0])] {
            let found = found.cast_to_scalar::<i32>().unwrap();
            assert!((found - expected).abs() <= 1, "{label}: expected {expected}, found {found}");
        }
    }

    proptest! {
        #[test]
        fn prop(a in any::<i8>(), b in any::<i8>(), scale in 0.00001f32..1000.) {
            test_scale(a, b, scale);
        }
    }

    #[test]
    fn t1() {
        test_scale(-117, 15, 37.753822);
    }

    #[test]
    fn t2() {
        test_scale(-4, -60, 475.21674);
    }

    #[test]
    fn t3() {
        test_scale(120, 101, 692.5715);
    }
}

#[cfg(test)]
mod quantize_run {
    use super::*;

    /// What QuantizeLinear computed before these patches: tract-data's `round_ties_to_even`,
    /// the saturating cast, then the clamp; in i64, so that ±inf with a non-zero zero point
    /// saturates (in i32 it overflowed) as ONNX specifies.
    fn reference(x: f32, scale: f32, zp: i32, lo: i64, hi: i64) -> i64 {
        ((round_ties_to_even(x * scale) as i32) as i64 + zp as i64).clamp(lo, hi)
    }

    fn reference_u8(x: f32, scale: f32, zp: i32) -> u8 {
        reference(x, scale, zp, 0, 255) as u8
    }

    fn reference_i8(x: f32, scale: f32, zp: i32) -> i8 {
        reference(x, scale, zp, -128, 127) as i8
    }

    /// A QuantizeLinear -> DequantizeLinear pair declutters into one FakeQuantizeLinear whose
    /// output is the pair's, bit for bit; a pair whose 8-bit tensor is also a model output stays.
    #[test]
    fn quantize_dequantize_pair_folds() -> TractResult<()> {
        let mut xs: Vec<f32> = vec![0.0, -0.0, 0.5, 1.5, -2.5, 1e9, -1e9, f32::NAN, f32::INFINITY];
        xs.extend((0..100).map(|i| (i as f32 * 0.731 - 37.0) * 0.37));
        let n = xs.len();
        for (signed, zp) in [(false, 0i32), (false, 131), (true, -5), (true, 0)] {
            for expose_q in [false, true] {
                let mut model = TypedModel::default();
                let x = model.add_source("x", f32::fact([n]))?;
                let q = if signed {
                    quantize_linear_i8(1.0 / 0.07, zp as i8)
                } else {
                    quantize_linear_u8(1.0 / 0.07, zp as u8)
                };
                let q = model.wire_node("q", q, &[x])?;
                let dq = model.wire_node("dq", DequantizeLinearF32::new(0.07, zp), &q)?;
                let outputs = if expose_q { vec![dq[0], q[0]] } else { vec![dq[0]] };
                model.select_output_outlets(&outputs)?;
                let input = tensor1(&xs);
                let want = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;
                let decluttered = model.into_decluttered()?;
                let folded = decluttered.nodes().iter().any(|node| {
                    node.op_as::<ElementWiseOp>()
                        .is_some_and(|ew| ew.0.downcast_ref::<FakeQuantizeLinear>().is_some())
                });
                assert_eq!(folded, !expose_q, "signed {signed} zero point {zp} exposed {expose_q}");
                let got = decluttered.into_runnable()?.run(tvec!(input.into()))?;
                let (want, got) = (want[0].try_as_plain_ram()?, got[0].try_as_plain_ram()?);
                let (want, got) = (want.as_slice::<f32>()?, got.as_slice::<f32>()?);
                for (i, (w, g)) in want.iter().zip(got).enumerate() {
                    assert_eq!(w.to_bits(), g.to_bits(), "x = {} signed {signed} zero point {zp}", xs[i]);
                }
            }
        }
        Ok(())
    }

    /// The vectorised dequantization is the scalar formula, bit for bit, for each input type.
    #[test]
    fn dequantize_matches_scalar() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..77).map(|i| (i * 37 % 256) as u8)).collect();
        for scale in [1.0f32, 0.0235, 3.7] {
            for zp in [0i32, 3, 128, 255] {
                for len in [0, 1, 7, 8, 9, 31, 33, bytes.len()] {
                    let u = &bytes[..len];
                    let mut got = vec![0f32; len];
                    dequantize_run(u, &mut got, scale, zp);
                    let want: Vec<f32> = u.iter().map(|x| (*x as i32 - zp) as f32 * scale).collect();
                    assert_eq!(got, want, "u8 scale {scale} zero point {zp} len {len}");
                    let i: Vec<i8> = u.iter().map(|x| *x as i8).collect();
                    dequantize_run(&i, &mut got, scale, zp - 128);
                    let want: Vec<f32> = i.iter().map(|x| (*x as i32 - (zp - 128)) as f32 * scale).collect();
                    assert_eq!(got, want, "i8 scale {scale} zero point {} len {len}", zp - 128);
                    let w: Vec<i32> = u.iter().map(|x| (*x as i32 - 100) * 70001).collect();
                    dequantize_run(&w, &mut got, scale, zp);
                    let want: Vec<f32> = w.iter().map(|x| (*x - zp) as f32 * scale).collect();
                    assert_eq!(got, want, "i32 scale {scale} zero point {zp} len {len}");
                }
            }
        }
    }

    /// The vectorised run and the scalar functions give what `round_ties_to_even` gave, bit
    /// for bit, on ties (both parities, both signs), values that clamp, NaN and the
    /// infinities, for every zero point that matters, over lengths that leave vector tails.
    #[test]
    fn matches_round_ties_to_even() {
        let mut xs: Vec<f32> = vec![
            0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 128.5, -127.5, -128.5, 254.5,
            255.5, 1e9, -1e9, 8388609.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.49999997,
        ];
        xs.extend((0..300).map(|i| (i as f32 * 0.731 - 110.0) * 1.37));
        for scale in [1.0f32, 0.5, 1.0 / 0.0235, 3.0] {
            for zp in [0i32, 3, 128, 255] {
                let zp8 = zp - 128;
                for len in [0, 1, 7, 8, 9, 31, 33, xs.len()] {
                    let want: Vec<u8> = xs[..len].iter().map(|x| reference_u8(*x, scale, zp)).collect();
                    let mut got = vec![0u8; len];
                    quantize_f32_run(&xs[..len], &mut got, scale, zp);
                    assert_eq!(got, want, "u8 scale {scale} zero point {zp} len {len}");
                    let scalar: Vec<u8> =
                        xs[..len].iter().map(|x| quantize_linear_f32_u8(*x, scale, zp)).collect();
                    assert_eq!(scalar, want, "scalar u8 scale {scale} zero point {zp} len {len}");
                    let want: Vec<i8> = xs[..len].iter().map(|x| reference_i8(*x, scale, zp8)).collect();
                    let mut got = vec![0i8; len];
                    quantize_f32_run(&xs[..len], &mut got, scale, zp8);
                    assert_eq!(got, want, "i8 scale {scale} zero point {zp8} len {len}");
                    let scalar: Vec<i8> =
                        xs[..len].iter().map(|x| quantize_linear_f32_i8(*x, scale, zp8)).collect();
                    assert_eq!(scalar, want, "scalar i8 scale {scale} zero point {zp8} len {len}");
                }
            }
        }
    }

    /// `requant`'s five-pass chain (per-channel Scale, zero point, Min, Max, Cast) declutters
    /// into one RequantizeI32 with the chain's output, value for value: channels first and
    /// channels last, u8 and i8, a Relu6-like clamp inside the type's range; the chain stays
    /// when one of its tensors is a model output.
    #[test]
    fn per_channel_requantization_folds() -> TractResult<()> {
        use crate::ops::change_axes::wire_with_rank_broadcast;
        let channels = 5usize;
        let spatial = 11usize;
        let scales: Vec<f32> = (0..channels).map(|c| 0.0031 * (c as f32 + 1.0) + 0.0007).collect();
        let xs: Vec<i32> = (0..channels * spatial)
            .map(|i| ((i as i64 * 7919) % 60011 - 30000) as i32 / if i % 3 == 0 { 1 } else { 37 })
            .chain([0])
            .take(channels * spatial)
            .collect();
        for channel_last in [false, true] {
            for (dt, zp, clamp) in
                [(DatumType::U8, 3i32, Some((3i32, 200i32))), (DatumType::I8, -7, None), (DatumType::U8, 0, None)]
            {
                for expose in [false, true] {
                    let (shape, sshape) = if channel_last {
                        (vec![1, spatial, channels], vec![1, 1, channels])
                    } else {
                        (vec![1, channels, spatial], vec![1, channels, 1])
                    };
                    let mut model = TypedModel::default();
                    let x = model.add_source("x", i32::fact(&shape))?;
                    let s = model.add_const("s", tensor1(&scales).into_shape(&sshape)?)?;
                    let mut w = wire_with_rank_broadcast("scale", &mut model, scale(), &[s, x])?[0];
                    let exposed = w;
                    let z = model.add_const("zp", tensor0(zp))?;
                    w = wire_with_rank_broadcast("zeropoint", &mut model, crate::ops::math::add(), &[w, z])?[0];
                    if let Some((lo, hi)) = clamp {
                        let hi = model.add_const("relu.hi", tensor0(hi))?;
                        w = wire_with_rank_broadcast("relu.min", &mut model, crate::ops::math::min(), &[w, hi])?[0];
                        let lo = model.add_const("relu.lo", tensor0(lo))?;
                        w = wire_with_rank_broadcast("relu.max", &mut model, crate::ops::math::max(), &[w, lo])?[0];
                    }
                    w = crate::ops::matmul::quant::clamp_and_cast_to(&mut model, "q", dt, w)?;
                    let outputs = if expose { vec![w, exposed] } else { vec![w] };
                    model.select_output_outlets(&outputs)?;
                    let input = tensor1(&xs).into_shape(&shape)?;
                    let want = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;
                    let decluttered = model.into_decluttered()?;
                    let folded = decluttered.nodes().iter().any(|n| n.op_is::<RequantizeI32>());
                    let case = format!("channel last {channel_last} {dt:?} zp {zp} clamp {clamp:?} exposed {expose}");
                    assert_eq!(folded, !expose, "{case}");
                    let got = decluttered.into_runnable()?.run(tvec!(input.into()))?;
                    assert_eq!(want[0].datum_type(), got[0].datum_type(), "{case}");
                    let (want, got) = (want[0].cast_to::<i32>()?, got[0].cast_to::<i32>()?);
                    let (want, got) = (want.try_as_plain_ram()?, got.try_as_plain_ram()?);
                    assert_eq!(want.as_slice::<i32>()?, got.as_slice::<i32>()?, "{case}");
                }
            }
        }
        Ok(())
    }

    /// A u8 QuantizeLinear read through `OffsetU8asI8` quantizes to i8 itself (patch 19).
    #[test]
    fn quantize_linear_writes_i8_for_an_offset() -> TractResult<()> {
        let xs: Vec<f32> = (0..97).map(|i| (i as f32 - 48.0) * 0.37).collect();
        for (scale, zp) in [(3.1f32, 114u8), (0.7, 0), (11.0, 255)] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([97]))?;
            let u = model.wire_node("q", quantize_linear_u8(scale, zp), &[x])?[0];
            let i = model.wire_node("offset", offset_u8_as_i8(), &[u])?[0];
            model.select_output_outlets(&[i])?;
            let input = tensor1(&xs);
            let want = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;
            let optimized = model.into_optimized()?;
            let offsets = optimized
                .nodes()
                .iter()
                .filter(|n| n.op_as::<ElementWiseOp>().is_some_and(|e| e.0.downcast_ref::<OffsetU8asI8>().is_some()))
                .count();
            assert_eq!(offsets, 0, "scale {scale} zp {zp}");
            let got = optimized.into_runnable()?.run(tvec!(input.into()))?;
            assert_eq!(want[0].try_as_plain_ram()?.as_slice::<i8>()?, got[0].try_as_plain_ram()?.as_slice::<i8>()?);
        }
        Ok(())
    }

    /// A u8 `RequantizeI32` read through `OffsetU8asI8` writes the i8 itself (patch 19): the
    /// offset is gone from the optimized plan and every byte is the same; the offset stays
    /// when the u8 tensor is also a model output.
    #[test]
    fn requantize_writes_i8_for_an_offset() -> TractResult<()> {
        let channels = 5usize;
        let spatial = 11usize;
        let xs: Vec<i32> = (0..channels * spatial).map(|i| (i as i32 * 7919) % 60011 - 30000).collect();
        for expose in [false, true] {
            for (zp, lo, hi) in [(94, 0, 255), (0, 0, 255), (12, 12, 180)] {
                let mut model = TypedModel::default();
                let x = model.add_source("x", i32::fact([1, spatial, channels]))?;
                let rq = RequantizeI32 {
                    axis: 2,
                    scales: (0..channels).map(|c| 0.0031 * (c as f32 + 1.0)).collect(),
                    zero_point: zp,
                    lo,
                    hi,
                    dt: DatumType::U8,
                };
                let u = model.wire_node("rq", rq, &[x])?[0];
                let i = model.wire_node("offset", offset_u8_as_i8(), &[u])?[0];
                model.select_output_outlets(&if expose { vec![i, u] } else { vec![i] })?;
                let input = tensor1(&xs).into_shape(&[1, spatial, channels])?;
                let want = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;
                let optimized = model.into_optimized()?;
                let offsets = optimized
                    .nodes()
                    .iter()
                    .filter(|n| {
                        n.op_as::<ElementWiseOp>()
                            .is_some_and(|e| e.0.downcast_ref::<OffsetU8asI8>().is_some())
                    })
                    .count();
                let case = format!("zp {zp} range [{lo}, {hi}] exposed {expose}");
                assert_eq!(offsets, expose as usize, "{case}");
                let got = optimized.into_runnable()?.run(tvec!(input.into()))?;
                assert_eq!(got[0].datum_type(), DatumType::I8, "{case}");
                assert_eq!(want[0].try_as_plain_ram()?.as_slice::<i8>()?, got[0].try_as_plain_ram()?.as_slice::<i8>()?, "{case}");
            }
        }
        Ok(())
    }
}
