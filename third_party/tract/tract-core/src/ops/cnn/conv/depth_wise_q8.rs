//! fieldkit patch 13: a quantized depthwise convolution runs on its 8-bit tensors directly.
//!
//! tract 0.23.9 lowers every convolution with quantization parameters through
//! `wire_as_quant_im2col`; a depthwise one becomes an eager im2col and one m = 1, k = 9 matrix
//! product per channel, with the zero-point terms and the requantization as passes of their
//! own. So patch 8 left QDQ depthwise convolutions in float, between a DequantizeLinear and a
//! QuantizeLinear: two extra passes over every depthwise layer's input and output.
//!
//! Here a quantized depthwise convolution whose parameters are constants (the QDQ fold's, or an
//! ONNX QLinearConv's) becomes a [`DepthWise`] in 8-bit mode: it reads the u8 / i8 input, sums
//! `k * x` per channel in f32 and writes the requantized u8 / i8 output in the same pass. The
//! sums are exact: every operand is an integer (the int8 weights and the zero-point-corrected
//! bias are stored as f32), each product is below 2^15 and the wiring declines when a sum could
//! reach 2^24, so the f32 total is the i32 accumulator an integer kernel would hold, value for
//! value. The requantization is `RequantizeI32`'s (`x * scale[c]`, ties to even, the zero point,
//! clamped to the type), with the scale formed as tract's quantized matmuls form it,
//! `k_scale[c] * x_scale / y_scale`. The input zero point is folded into a bias per zone of
//! the patch (the taps a zone reads), so padded taps add nothing, as the zero point pads a
//! quantized tensor.
//!
//! Channel-last (the layout fieldkit runs) walks the zones with the channels on the vector
//! lanes, the loop compiled for AVX-512 and AVX2 + FMA and picked at run time on x86_64. Other
//! layouts go through the f32 depthwise on the zero-point-corrected input and requantize after,
//! with the same result.
//!
//! `TRACT_QDQ_DEPTHWISE=0` keeps QDQ depthwise convolutions in float (for A/B measurements).

use crate::internal::*;
use crate::ops::cnn::conv::{Conv, KernelFormat};
use crate::ops::cnn::patches::ZoneScanner;
use crate::ops::cnn::pools::ConcretePoolGeometry;
use crate::ops::quant::{QuantizedByte, quantize_to_range};

use super::depth_wise::DepthWise;

/// The sums stay exact in f32 below this.
const EXACT_F32: f64 = (1u32 << 24) as f64;

pub(super) fn qdq_depthwise_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRACT_QDQ_DEPTHWISE").map_or(true, |v| v != "0"))
}

/// The 8-bit mode of a [`DepthWise`]: its inputs are the u8 / i8 image, the int8 weights as f32
/// and the i32 bias as f32; its output is `y_dt`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DepthWiseQ8 {
    pub x_zero_point: i32,
    pub y_zero_point: i32,
    /// U8 or I8.
    pub y_dt: DatumType,
    /// Per channel, `k_scale[c] * x_scale / y_scale` as f32 bits (so the op stays `Hash + Eq`).
    pub scales: Vec<u32>,
    /// Channel-last only, per zone of the patch: the bias less `x_zero_point` times the weights
    /// of the taps the zone reads, per channel, as f32 bits. The kernel is a constant, so this
    /// is computed once when the op is wired.
    pub zone_bias: Vec<Vec<u32>>,
}

fn as_f32(bits: &[u32]) -> &[f32] {
    // SAFETY: u32 and f32 have the same size and alignment, and every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const f32, bits.len()) }
}

impl DepthWiseQ8 {
    fn scales_f32(&self) -> &[f32] {
        as_f32(&self.scales)
    }

    fn range(&self) -> (i32, i32) {
        super::qdq_fold::range_of(self.y_dt)
    }
}

/// An 8-bit tensor element: read as f32, written from an in-range i32 (`QuantizedByte`).
trait Byte: QuantizedByte + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl Byte for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Byte for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

fn constant<'a>(model: &'a TypedModel, outlet: OutletId) -> Option<&'a Arc<Tensor>> {
    model.outlet_fact(outlet).ok()?.konst.as_ref()
}

fn scalar_i32(model: &TypedModel, outlet: OutletId) -> Option<i32> {
    let t = constant(model, outlet)?;
    (t.len() == 1).then(|| t.cast_to_scalar::<i32>().ok()).flatten()
}

fn scalar_f32(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let t = constant(model, outlet)?;
    (t.len() == 1).then(|| t.cast_to_scalar::<f32>().ok()).flatten()
}

/// Wires a quantized depthwise `conv` over `inputs` (`x, kernel, bias, x0, x_scale, k0,
/// k_scale, y0, y_scale`, already in `patch`) as an 8-bit [`DepthWise`], or returns `None` when
/// it is not one this handles: a shape known only symbolically, a parameter that is not a
/// constant, a weight zero point other than zero, or sums that could leave f32's exact integers.
pub(super) fn wire_as_quant_depth_wise(
    conv: &Conv,
    patch: &mut TypedModel,
    name: &str,
    inputs: &[OutletId],
) -> TractResult<Option<OutletId>> {
    let channels = conv.output_channels();
    rule_if!(conv.is_depthwise());
    rule_if!(inputs.len() == 9 && conv.kernel_fmt == KernelFormat::OIHW);
    rule_if_some!(y_dt = conv.q_params);
    rule_if!(matches!(y_dt.unquantized(), DatumType::U8 | DatumType::I8));
    let x_fact = patch.outlet_fact(inputs[0])?.clone();
    rule_if!(matches!(x_fact.datum_type.unquantized(), DatumType::U8 | DatumType::I8));
    rule_if_some!(x_shape = x_fact.shape.as_concrete());
    let x_shape: TVec<usize> = x_shape.into();
    let model: &TypedModel = patch;
    rule_if_some!(kernel = constant(model, inputs[1]).cloned());
    rule_if!(matches!(kernel.datum_type().unquantized(), DatumType::I8 | DatumType::U8));
    rule_if_some!(bias = constant(model, inputs[2]).cloned());
    rule_if!(bias.len() == 1 || bias.len() == channels);
    rule_if_some!(x_zero_point = scalar_i32(model, inputs[3]));
    rule_if_some!(x_scale = scalar_f32(model, inputs[4]));
    rule_if_some!(k0 = constant(model, inputs[5]));
    rule_if!(k0.cast_to::<i32>()?.try_as_plain_ram()?.as_slice::<i32>()?.iter().all(|z| *z == 0));
    rule_if_some!(k_scale = constant(model, inputs[6]).cloned());
    rule_if!(k_scale.len() == 1 || k_scale.len() == channels);
    rule_if_some!(y_zero_point = scalar_i32(model, inputs[7]));
    rule_if_some!(y_scale = scalar_f32(model, inputs[8]));

    let kernel_f32 = kernel.cast_to::<f32>()?.into_owned();
    let bias_i32 = bias.cast_to::<i32>()?;
    let bias_i32 = bias_i32.try_as_plain_ram()?;
    let bias_i32 = bias_i32.as_slice::<i32>()?;
    let bias_f32: Vec<f32> =
        (0..channels).map(|c| bias_i32[if bias_i32.len() == 1 { 0 } else { c }] as f32).collect();
    // Largest |sum| a channel can reach: the bias, the zero-point correction and the products
    // (each weight at most 128, each input at most 255 from zero).
    let taps = conv.pool_spec.kernel_shape.iter().product::<usize>() as f64;
    let worst = bias_i32.iter().map(|b| (*b as f64).abs()).fold(0f64, f64::max)
        + 2.0 * taps * 128.0 * 255.0;
    rule_if!(worst < EXACT_F32);
    let k_scales = k_scale.cast_to::<f32>()?;
    let k_scales = k_scales.try_as_plain_ram()?;
    let k_scales = k_scales.as_slice::<f32>()?;
    let scales: Vec<u32> = (0..channels)
        .map(|c| {
            let ks = k_scales[if k_scales.len() == 1 { 0 } else { c }];
            ((ks * x_scale) / y_scale).to_bits()
        })
        .collect();

    let ConcretePoolGeometry { input_shape, patch: geo, output_shape } =
        conv.pool_spec.compute_geo(&x_fact.shape)?.to_concrete(&x_shape)?.into_owned();
    // The OIHW kernel, [C, 1, kh, kw]: channel c's tap t at c * taps + t, the tap index zones
    // use.
    let zone_bias = if conv.pool_spec.data_format.c_is_last() {
        let k = kernel_f32.try_as_plain_ram()?;
        let k = k.as_slice::<f32>()?;
        let taps = k.len() / channels;
        let zp = x_zero_point as f32;
        geo.zones
            .iter()
            .map(|zone| {
                (0..channels)
                    .map(|c| {
                        let sum: f32 = zone.values_offsets.iter().map(|p| k[c * taps + p.0]).sum();
                        (bias_f32[c] - zp * sum).to_bits()
                    })
                    .collect()
            })
            .collect()
    } else {
        vec![]
    };
    let x = inputs[0];
    let kernel = patch.add_const(format!("{name}.kernel_f32"), kernel_f32)?;
    let kernel = conv.wire_kernel_as_g_o_ihw(patch, name, kernel)?;
    // Channel-last DepthWise reads the kernel tap-major, [G, HW, O], as the f32 one does.
    let kernel = if conv.pool_spec.data_format.c_is_last() {
        patch.wire_node(format!("{name}.kernel_c_inner"), AxisOp::Move(0, 2), &kernel)?[0]
    } else {
        kernel[0]
    };
    let bias = patch.add_const(format!("{name}.bias_f32"), tensor1(&bias_f32))?;
    let q = DepthWiseQ8 { x_zero_point, y_zero_point, y_dt: y_dt.unquantized(), scales, zone_bias };
    let op = DepthWise::new_q8(geo, input_shape, output_shape, q);
    Ok(Some(patch.wire_node(name, op, &[x, kernel, bias])?[0]))
}

/// The 8-bit eval: `img` u8 / i8, `kernel` and `bias` integer-valued f32.
pub(super) fn eval_q8(
    dw: &DepthWise,
    q: &DepthWiseQ8,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    match (inputs[0].datum_type().unquantized(), q.y_dt) {
        (DatumType::U8, DatumType::U8) => eval_typed::<u8, u8>(dw, q, inputs),
        (DatumType::U8, DatumType::I8) => eval_typed::<u8, i8>(dw, q, inputs),
        (DatumType::I8, DatumType::U8) => eval_typed::<i8, u8>(dw, q, inputs),
        (DatumType::I8, DatumType::I8) => eval_typed::<i8, i8>(dw, q, inputs),
        (x, y) => bail!("8-bit DepthWiseConv from {x:?} to {y:?}"),
    }
}

fn eval_typed<X: Byte + Datum, Y: Byte + Datum>(
    dw: &DepthWise,
    q: &DepthWiseQ8,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    if dw.input_shape.fmt.c_is_last() {
        eval_channel_last::<X, Y>(dw, q, inputs)
    } else {
        eval_via_f32::<X, Y>(dw, q, inputs)
    }
}

/// Any layout: the f32 depthwise over `x - x_zero_point`, then the requantization.
fn eval_via_f32<X: Byte + Datum, Y: Byte + Datum>(
    dw: &DepthWise,
    q: &DepthWiseQ8,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let (img, kernel, bias) = args_3!(inputs);
    let zp = q.x_zero_point as f32;
    let mut shifted = unsafe { Tensor::uninitialized::<f32>(img.shape())? };
    let xs = unsafe { img.as_slice_unchecked::<X>() };
    for (x, s) in xs.iter().zip(unsafe { shifted.as_slice_mut_unchecked::<f32>() }) {
        *s = x.to_f32() - zp;
    }
    let float = dw.float_twin();
    let out = float.eval_gen::<f32>(tvec!(shifted.into_tvalue(), kernel, bias))?.remove(0);
    let out = out.try_as_plain_ram()?;
    let out = out.as_slice::<f32>()?;
    let mut y = unsafe { Tensor::uninitialized::<Y>(&dw.output_shape.shape)? };
    let ys = unsafe { y.as_slice_mut_unchecked::<Y>() };
    let (lo, hi) = q.range();
    // `c_stride` consecutive values share a channel (a whole plane channel-first).
    let plane = *dw.output_shape.c_stride();
    unsafe { requantize_fn::<Y>()(out, ys, plane, q.scales_f32(), q.y_zero_point, lo, hi) };
    Ok(tvec!(y.into_tvalue()))
}

/// `ys = requantize(xs)`, the scale of channel `(i / plane) % channels` for element `i`.
#[inline(always)]
fn requantize<Y: Byte>(
    xs: &[f32],
    ys: &mut [Y],
    plane: usize,
    scales: &[f32],
    y_zero_point: i32,
    lo: i32,
    hi: i32,
) {
    for (ix, (x, y)) in xs.chunks(plane).zip(ys.chunks_mut(plane)).enumerate() {
        let s = scales[ix % scales.len()];
        for (x, y) in x.iter().zip(y.iter_mut()) {
            *y = Y::from_i32(quantize_to_range(*x, s, y_zero_point, lo, hi));
        }
    }
}

type RequantizeFn<Y> = unsafe fn(&[f32], &mut [Y], usize, &[f32], i32, i32, i32);

/// Baseline x86-64 has no packed rounding (`round_ties_even` is a libm call per element
/// there), so the loop is compiled for AVX2 too and picked at run time, as patch 2 does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requantize_avx2<Y: Byte>(
    xs: &[f32],
    ys: &mut [Y],
    plane: usize,
    scales: &[f32],
    y_zero_point: i32,
    lo: i32,
    hi: i32,
) {
    requantize(xs, ys, plane, scales, y_zero_point, lo, hi)
}

unsafe fn requantize_plain<Y: Byte>(
    xs: &[f32],
    ys: &mut [Y],
    plane: usize,
    scales: &[f32],
    y_zero_point: i32,
    lo: i32,
    hi: i32,
) {
    requantize(xs, ys, plane, scales, y_zero_point, lo, hi)
}

fn requantize_fn<Y: Byte>() -> RequantizeFn<Y> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return requantize_avx2::<Y>;
    }
    requantize_plain::<Y>
}

/// Channels `c..c + B` of one output position (see `row`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<X: Byte, Y: Byte, const FUSED: bool, const B: usize>(
    x: *const X,
    offsets: &[isize],
    k_rows: &[*const f32],
    bias: *const f32,
    scales: *const f32,
    y: *mut Y,
    c: usize,
    y_zero_point: i32,
    lo: i32,
    hi: i32,
) {
    unsafe {
        let mut acc = [0f32; B];
        acc.copy_from_slice(std::slice::from_raw_parts(bias.add(c), B));
        for (off, k) in offsets.iter().zip(k_rows) {
            let xs = &*(x.offset(*off).add(c) as *const [X; B]);
            let ks = &*(k.add(c) as *const [f32; B]);
            for j in 0..B {
                acc[j] = madd::<FUSED>(acc[j], ks[j], xs[j].to_f32());
            }
        }
        let s = &*(scales.add(c) as *const [f32; B]);
        let mut out = [Y::from_i32(0); B];
        for j in 0..B {
            out[j] = Y::from_i32(quantize_to_range(acc[j], s[j], y_zero_point, lo, hi));
        }
        std::ptr::copy_nonoverlapping(out.as_ptr(), y.add(c), B);
    }
}

/// `acc + k * x`, fused or not (equal here: see `row`).
#[inline(always)]
fn madd<const FUSED: bool>(acc: f32, k: f32, x: f32) -> f32 {
    if FUSED { k.mul_add(x, acc) } else { acc + k * x }
}

/// One output position, channels `0..width` (all pointers already at the first channel):
/// `bias` is the zone's (zero point folded in), `k_rows[t]` the weights of tap `t`, read at
/// `x + offsets[t]`. `FUSED` sums with fused multiply-adds: every product and partial sum is
/// an integer below 2^24, so fused or not the f32 result is the same.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row<X: Byte, Y: Byte, const FUSED: bool>(
    x: *const X,
    offsets: &[isize],
    k_rows: &[*const f32],
    bias: *const f32,
    scales: *const f32,
    y: *mut Y,
    width: usize,
    y_zero_point: i32,
    lo: i32,
    hi: i32,
) {
    // 32 channels a step (two 16-lane accumulators: independent chains for the adder), then
    // one 16- and one 8-channel step, so that only the last < 8 channels run one at a time
    // (144 channels ran 16 of them scalar: 2x the time of the vector steps).
    unsafe {
        let mut c = 0usize;
        while c + 32 <= width {
            block::<X, Y, FUSED, 32>(x, offsets, k_rows, bias, scales, y, c, y_zero_point, lo, hi);
            c += 32;
        }
        if c + 16 <= width {
            block::<X, Y, FUSED, 16>(x, offsets, k_rows, bias, scales, y, c, y_zero_point, lo, hi);
            c += 16;
        }
        if c + 8 <= width {
            block::<X, Y, FUSED, 8>(x, offsets, k_rows, bias, scales, y, c, y_zero_point, lo, hi);
            c += 8;
        }
        while c < width {
            let mut acc = *bias.add(c);
            for (off, k) in offsets.iter().zip(k_rows) {
                acc = madd::<FUSED>(acc, *k.add(c), (*x.offset(*off).add(c)).to_f32());
            }
            *y.add(c) = Y::from_i32(quantize_to_range(acc, *scales.add(c), y_zero_point, lo, hi));
            c += 1;
        }
    }
}

/// `len` output positions `out_stride` apart, reading `in_stride` apart.
#[allow(clippy::too_many_arguments)]
type RowsFn<X, Y> = unsafe fn(
    *const X,
    isize,
    &[isize],
    &[*const f32],
    *const f32,
    *const f32,
    *mut Y,
    isize,
    usize,
    usize,
    i32,
    i32,
    i32,
);

macro_rules! rows_with_features {
    ($name:ident, $fused:literal $(, $features:literal)?) => {
        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<X: Byte, Y: Byte>(
            x: *const X,
            in_stride: isize,
            offsets: &[isize],
            k_rows: &[*const f32],
            bias: *const f32,
            scales: *const f32,
            y: *mut Y,
            out_stride: isize,
            len: usize,
            width: usize,
            y_zero_point: i32,
            lo: i32,
            hi: i32,
        ) {
            for i in 0..len as isize {
                unsafe {
                    row::<X, Y, $fused>(
                        x.offset(in_stride * i),
                        offsets,
                        k_rows,
                        bias,
                        scales,
                        y.offset(out_stride * i),
                        width,
                        y_zero_point,
                        lo,
                        hi,
                    )
                }
            }
        }
    };
}

rows_with_features!(rows_avx512, true, "avx512f,avx512bw,avx512vl,avx2,fma");
rows_with_features!(rows_avx2, true, "avx2,fma");
rows_with_features!(rows_plain, false);

/// The widest compiled loop this CPU runs.
fn rows_fn<X: Byte, Y: Byte>() -> RowsFn<X, Y> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("fma")
        {
            return rows_avx512::<X, Y>;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return rows_avx2::<X, Y>;
        }
    }
    rows_plain::<X, Y>
}

/// Channel-last: every output position is a run of channels, so each zone's taps read whole
/// channel vectors and the requantized row is written while it is in registers.
fn eval_channel_last<X: Byte + Datum, Y: Byte + Datum>(
    dw: &DepthWise,
    q: &DepthWiseQ8,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let (img, kernel, _bias) = args_3!(inputs);
    let channels = *dw.input_shape.c();
    ensure!(q.zone_bias.len() == dw.patch.zones.len(), "8-bit DepthWiseConv: zone biases missing");
    let mut output = unsafe { Tensor::uninitialized::<Y>(&dw.output_shape.shape)? };
    let k_stride = kernel.strides()[1] as usize;
    let kernel = kernel.try_as_plain_ram()?;
    let kernel = kernel.as_slice::<f32>()?;
    let scales = q.scales_f32();
    let n = *dw.input_shape.n().unwrap_or(&1);
    let n_stride_i = *dw.input_shape.n_stride().unwrap_or(&0) as isize;
    let n_stride_o = *dw.output_shape.n_stride().unwrap_or(&0) as isize;
    let (lo, hi) = q.range();
    let run = rows_fn::<X, Y>();
    let iptr = unsafe { img.as_ptr_unchecked::<X>() } as usize;
    let optr = unsafe { output.as_ptr_mut_unchecked::<Y>() } as usize;
    let kptr = kernel.as_ptr() as usize;
    let block = 64usize;
    let total = output.len();
    tract_linalg::multithread::par_chunks_mut(
        &mut vec![(); channels.div_ceil(block)],
        1,
        total,
        |first, blocks| {
            let c0 = first * block;
            let c1 = channels.min((first + blocks.len()) * block);
            for (zone, zone_bias) in dw.patch.zones.iter().zip(&q.zone_bias) {
                let offsets: TVec<isize> = zone.values_offsets.iter().map(|p| p.1).collect();
                let k_rows: TVec<*const f32> = zone
                    .values_offsets
                    .iter()
                    .map(|p| unsafe { (kptr as *const f32).add(p.0 * k_stride + c0) })
                    .collect();
                let zone_bias = as_f32(zone_bias);
                for ni in 0..n as isize {
                    let iptr = unsafe { (iptr as *const X).offset(n_stride_i * ni).add(c0) };
                    let optr = unsafe { (optr as *mut Y).offset(n_stride_o * ni).add(c0) };
                    let mut visitor = ZoneScanner::new(zone, &dw.patch);
                    while !visitor.done {
                        unsafe {
                            run(
                                iptr.offset(visitor.input_center_offset),
                                visitor.inner_loop_input_full_stride,
                                &offsets,
                                &k_rows,
                                zone_bias.as_ptr().add(c0),
                                scales.as_ptr().add(c0),
                                optr.offset(visitor.output_offset),
                                visitor.inner_loop_output_stride,
                                visitor.inner_loop_len,
                                c1 - c0,
                                q.y_zero_point,
                                lo,
                                hi,
                            );
                            visitor.next_non_inner_axis()
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(tvec!(output.into_tvalue()))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ops::cnn::{PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    /// A QDQ-style depthwise convolution with q_params, run through the 8-bit DepthWise and
    /// through the reference: every output against integer arithmetic, bit for bit.
    fn check(
        fmt: DataFormat,
        stride: usize,
        x_dt: DatumType,
        y_dt: DatumType,
        channels: usize,
        nhwc_transform: bool,
    ) -> TractResult<()> {
        let (h, w) = (7usize, 6usize);
        let shape: TVec<usize> =
            fmt.from_n_c_hw(1, channels, [h, w])?.shape.iter().cloned().collect();
        let len: usize = shape.iter().product();
        let signed = x_dt == DatumType::I8;
        let xs: Vec<i32> =
            (0..len).map(|i| ((i * 37 + 11) % 256) as i32 - if signed { 128 } else { 0 }).collect();
        let kern: Vec<i8> =
            (0..channels * 9).map(|i| ((i * 53 + 7) % 255) as i32 - 127).map(|v| v as i8).collect();
        let bias: Vec<i32> = (0..channels).map(|c| c as i32 * 97 - 1500).collect();
        let k_scales: Vec<f32> = (0..channels).map(|c| 0.002 + c as f32 * 1e-4).collect();
        let (x_zp, x_scale, y_zp, y_scale) = (
            if signed { -3 } else { 121 },
            0.02f32,
            if y_dt == DatumType::U8 { 7 } else { -9 },
            0.03f32,
        );

        let mut model = TypedModel::default();
        let x_tensor = if signed {
            Tensor::from_shape(&shape, &xs.iter().map(|v| *v as i8).collect::<Vec<_>>())?
        } else {
            Tensor::from_shape(&shape, &xs.iter().map(|v| *v as u8).collect::<Vec<_>>())?
        };
        let x = model.add_source("x", x_dt.fact(&shape))?;
        let k = model.add_const("k", Tensor::from_shape(&[channels, 1, 3, 3], &kern)?)?;
        let b = model.add_const("b", tensor1(&bias))?;
        let x0 = model.add_const("x0", tensor0(x_zp))?;
        let xs_ = model.add_const("xs", tensor0(x_scale))?;
        let k0 = model.add_const("k0", tensor0(0i32))?;
        let ks = model.add_const("ks", tensor1(&k_scales))?;
        let y0 = model.add_const("y0", tensor0(y_zp))?;
        let ys = model.add_const("ys", tensor0(y_scale))?;
        let pool_spec = PoolSpec {
            data_format: fmt,
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            dilations: None,
            strides: Some(tvec!(stride, stride)),
            input_channels: channels,
            output_channels: channels,
        };
        let conv = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group: channels,
            q_params: Some(y_dt),
        };
        let y = model.wire_node("conv", conv, &[x, k, b, x0, xs_, k0, ks, y0, ys])?;
        model.select_output_outlets(&y)?;
        let mut model = model.into_decluttered()?;
        if nhwc_transform {
            let rewrite = crate::transform::get_transform("conv_nhwc")?.unwrap();
            model = rewrite.transform_into(model)?.into_decluttered()?;
        }
        let optimized = model.into_optimized()?;
        // Channel-last when asked for; a channel-first one may be moved by declutter's axis
        // changes (`Conv::suggested_axis_changes`) where its neighbours allow.
        let channel_last = fmt.c_is_last() || nhwc_transform;
        ensure!(
            optimized.nodes().iter().any(|n| n
                .op_as::<DepthWise>()
                .is_some_and(
                    |d| d.q8().is_some() && (d.input_shape.fmt.c_is_last() || !channel_last)
                )),
            "no 8-bit DepthWise (channel last: {channel_last}) in the plan: {fmt:?} {channels} channels, transform {nhwc_transform}"
        );
        let got = optimized.into_runnable()?.run(tvec!(x_tensor.into_tvalue()))?.remove(0);

        // Reference: integer sums, then the requantization formula.
        let geo = fmt.shape(&shape)?;
        let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        let oshape: TVec<usize> =
            fmt.from_n_c_hw(1, channels, [oh, ow])?.shape.iter().cloned().collect();
        let ostrides = fmt.shape(&oshape)?;
        let (lo, hi) = if y_dt == DatumType::U8 { (0, 255) } else { (-128, 127) };
        let mut want = vec![0i32; oshape.iter().product()];
        for c in 0..channels {
            let scale = (k_scales[c] * x_scale) / y_scale;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[c];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) =
                                ((oy * stride + ky) as isize - 1, (ox * stride + kx) as isize - 1);
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let at = c * *geo.c_stride()
                                + iy as usize * *geo.h_stride()
                                + ix as usize * *geo.w_stride();
                            acc += kern[c * 9 + ky * 3 + kx] as i32 * (xs[at] - x_zp);
                        }
                    }
                    let at = c * *ostrides.c_stride()
                        + oy * *ostrides.h_stride()
                        + ox * *ostrides.w_stride();
                    want[at] = quantize_to_range(acc as f32, scale, y_zp, lo, hi);
                }
            }
        }
        let got: Vec<i32> = got.cast_to::<i32>()?.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        assert_eq!(got, want, "{fmt:?} stride {stride} {x_dt:?} -> {y_dt:?} {channels} channels");
        Ok(())
    }

    #[test]
    fn quantized_depthwise_is_exact() -> TractResult<()> {
        // 16-lane blocks, the tail, and more than one 64-channel thread block.
        for channels in [5, 16, 29, 37, 80] {
            for stride in [1, 2] {
                check(DataFormat::NHWC, stride, DatumType::U8, DatumType::U8, channels, false)?;
                check(DataFormat::NCHW, stride, DatumType::U8, DatumType::U8, channels, false)?;
                // What fieldkit runs: an NCHW model moved channel-last by `conv_nhwc`.
                check(DataFormat::NCHW, stride, DatumType::U8, DatumType::U8, channels, true)?;
            }
        }
        check(DataFormat::NHWC, 1, DatumType::I8, DatumType::I8, 21, false)?;
        check(DataFormat::NHWC, 2, DatumType::U8, DatumType::I8, 21, false)?;
        check(DataFormat::NCHW, 1, DatumType::I8, DatumType::U8, 21, false)?;
        Ok(())
    }
}
