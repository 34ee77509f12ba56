//! fieldkit patch 20: a channel-last f32 convolution with few inputs per output point, computed
//! directly.
//!
//! A stem convolution (3 or 12 input channels, a 3x3 kernel, 16 or 32 output channels) is a
//! matrix product with a short k (27..108) and a very long n (every output point). Lazy im2col
//! then spends more time gathering each panel of B than the kernel spends multiplying it, and
//! the convolution needs an explicit Pad before it: YOLOX-nano's stem (12 -> 16 channels over
//! 208x208) ran at 41 GFLOP/s plus a 0.35 ms Pad. Computed directly, an output point is
//! `oc / 16` vectors that each input value, broadcast, multiplies a row of the kernel into:
//! twelve points share every kernel row load, the input is read in place (its taps are
//! contiguous runs of `kw * ic` values along a row) and padding is the taps a border point
//! skips. A following SiLU runs on each output row while it is still in cache.
//!
//! x86-64 only (the module is not compiled elsewhere): the kernel is AVX-512.

use crate::internal::*;
use crate::ops::nn::DataShape;

/// Output points one register block computes: 12 accumulators and a kernel row fill 13 of the
/// 32 vector registers, and leave the rest for the broadcasts the loads fold into.
const POINTS: usize = 12;

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DirectChannelLastConv {
    pub input_shape: DataShape,
    pub output_shape: DataShape,
    /// `[kh, kw]`
    pub kernel_hw: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Padding before the first row and the first column.
    pub pads_before: [usize; 2],
    /// `[kh, kw, ic, oc]`: one row of `oc` values per input value a point reads.
    pub weights: Arc<Tensor>,
    /// `[oc]`
    pub bias: Arc<Tensor>,
    /// A SiLU that followed the convolution and now runs on each output row.
    pub silu: bool,
    /// A Clip / Relu6 that followed the convolution, applied before each store: the bits of
    /// `lo` and `hi`.
    pub clamp: Option<(u32, u32)>,
}

impl DirectChannelLastConv {
    /// Whether this host runs the direct kernel: it is written for AVX-512.
    pub fn host_supported() -> bool {
        std::is_x86_feature_detected!("avx512f")
    }

    fn clamp_range(&self) -> Option<(f32, f32)> {
        self.clamp.map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)))
    }

    fn ic(&self) -> usize {
        *self.input_shape.c()
    }

    fn oc(&self) -> usize {
        *self.output_shape.c()
    }

    /// The runs of one output row: for each valid kernel row, the kernel row's first weight
    /// row, the input offset from the point's origin, and how many input values it reads.
    /// `kx` is the range of kernel columns the points in question can all read.
    fn runs(&self, oy: usize, kx: std::ops::Range<usize>, runs: &mut Vec<(usize, isize, usize)>) {
        runs.clear();
        let [kh, kw] = self.kernel_hw;
        let [dh, dw] = self.dilations;
        let (ic, oc) = (self.ic(), self.oc());
        let h = self.input_shape.hw_dims()[0] as isize;
        let w = self.input_shape.hw_dims()[1] as isize;
        let iy0 = (oy * self.strides[0]) as isize - self.pads_before[0] as isize;
        for ky in 0..kh {
            let iy = iy0 + (ky * dh) as isize;
            if iy < 0 || iy >= h {
                continue;
            }
            let row = (ky * dh) as isize * w * ic as isize;
            if dw == 1 {
                // Adjacent kernel columns read adjacent pixels: one run of `len * ic` values.
                runs.push((
                    (ky * kw + kx.start) * ic * oc,
                    row + (kx.start * ic) as isize,
                    kx.len() * ic,
                ));
            } else {
                for x in kx.clone() {
                    runs.push(((ky * kw + x) * ic * oc, row + (x * dw * ic) as isize, ic));
                }
            }
        }
    }

    /// The kernel columns output column `ox` can read.
    fn valid_kx(&self, ox: usize) -> std::ops::Range<usize> {
        let kw = self.kernel_hw[1];
        let dw = self.dilations[1] as isize;
        let w = self.input_shape.hw_dims()[1] as isize;
        let ix0 = (ox * self.strides[1]) as isize - self.pads_before[1] as isize;
        let first = (0..kw).find(|&x| ix0 + x as isize * dw >= 0).unwrap_or(kw);
        let last = (0..kw).rev().find(|&x| ix0 + x as isize * dw < w).map_or(0, |x| x + 1);
        first..last.max(first)
    }

    /// Output columns whose every kernel column is inside the input.
    fn interior_columns(&self) -> std::ops::Range<usize> {
        let wo = self.output_shape.hw_dims()[1];
        let kw = self.kernel_hw[1];
        let first = (0..wo).find(|&ox| self.valid_kx(ox).len() == kw).unwrap_or(wo);
        let last =
            (first..wo).rev().find(|&ox| self.valid_kx(ox).len() == kw).map_or(first, |x| x + 1);
        first..last
    }

    /// What every register block of one evaluation shares.
    fn kernel(&self) -> Kernel {
        let (lo, hi) = self.clamp_range().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Kernel {
            step: (self.strides[1] * self.ic()) as isize,
            wts: self.weights.as_ptr::<f32>().unwrap(),
            oc: self.oc(),
            bias: self.bias.as_ptr::<f32>().unwrap(),
            lo,
            hi,
        }
    }

    /// One output row `oy` of image `x` into `y` (`wo * oc` values); `interior` is
    /// [`Self::interior_columns`].
    unsafe fn row(
        &self,
        k: &Kernel,
        interior: &std::ops::Range<usize>,
        x: *const f32,
        oy: usize,
        y: &mut [f32],
        runs: &mut Vec<(usize, isize, usize)>,
    ) {
        let (ic, oc) = (self.ic() as isize, self.oc());
        let w = self.input_shape.hw_dims()[1] as isize;
        let iy0 = (oy * self.strides[0]) as isize - self.pads_before[0] as isize;
        debug_assert_eq!(y.len(), self.output_shape.hw_dims()[1] * oc);
        // Output column ox's origin pixel (its kernel's top-left tap, maybe in the padding:
        // the runs' offsets count from it, skipped columns included) and its output.
        let at = |ox: usize| {
            x.wrapping_offset(
                (iy0 * w + (ox * self.strides[1]) as isize - self.pads_before[1] as isize) * ic,
            )
        };
        let yp = y.as_mut_ptr();
        let out = |ox: usize| unsafe { yp.add(ox * oc) };
        let border = |ox: usize, runs: &mut Vec<(usize, isize, usize)>| {
            self.runs(oy, self.valid_kx(ox), runs);
            unsafe { block_avx512::<1>(k, at(ox), runs, out(ox)) };
        };
        for ox in 0..interior.start {
            border(ox, runs);
        }
        self.runs(oy, 0..self.kernel_hw[1], runs);
        let mut ox = interior.start;
        unsafe {
            while ox + POINTS <= interior.end {
                block_avx512::<POINTS>(k, at(ox), runs, out(ox));
                ox += POINTS;
            }
            while ox + 4 <= interior.end {
                block_avx512::<4>(k, at(ox), runs, out(ox));
                ox += 4;
            }
            while ox < interior.end {
                block_avx512::<1>(k, at(ox), runs, out(ox));
                ox += 1;
            }
        }
        for ox in interior.end..self.output_shape.hw_dims()[1] {
            border(ox, runs);
        }
    }

    fn eval_f32(&self, x: &Tensor) -> TractResult<Tensor> {
        ensure!(
            x.shape() == &*self.input_shape.shape,
            "DirectChannelLastConv: input {:?}",
            x.shape()
        );
        let mut y = unsafe { Tensor::uninitialized::<f32>(&self.output_shape.shape)? };
        let [h, w] = [self.input_shape.hw_dims()[0], self.input_shape.hw_dims()[1]];
        let [ho, wo] = [self.output_shape.hw_dims()[0], self.output_shape.hw_dims()[1]];
        let image = h * w * self.ic();
        let row_len = wo * self.oc();
        let total = y.len();
        let silu =
            if self.silu { Some(tract_linalg::routines::Func::Silu.ew_f32()?) } else { None };
        ensure!(Self::host_supported(), "DirectChannelLastConv needs AVX-512");
        let x_base = x.as_ptr::<f32>()? as usize;
        let (k, interior) = (self.kernel(), self.interior_columns());
        // Output rows are disjoint: they split across the executor as they are.
        tract_linalg::multithread::par_chunks_mut(
            unsafe { y.as_slice_mut_unchecked::<f32>() },
            row_len,
            total * self.kernel_hw[0] * self.kernel_hw[1] * self.ic(),
            |first, chunk| {
                let mut runs = Vec::with_capacity(self.kernel_hw[0] * self.kernel_hw[1]);
                for (ix, out) in chunk.chunks_mut(row_len).enumerate() {
                    let (ni, oy) = ((first + ix) / ho, (first + ix) % ho);
                    let x = unsafe { (x_base as *const f32).add(ni * image) };
                    unsafe { self.row(&k, &interior, x, oy, out, &mut runs) };
                    if let Some(silu) = &silu {
                        silu.run(out)?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(y)
    }
}

/// The arguments every register block of one evaluation shares: the input step between two
/// output points, the `[kh, kw, ic, oc]` weights, `oc`, the bias and the clamp range.
#[derive(Clone, Copy)]
struct Kernel {
    step: isize,
    wts: *const f32,
    oc: usize,
    bias: *const f32,
    lo: f32,
    hi: f32,
}

// The pointers are the op's own weights and bias, read only, alive for the evaluation.
unsafe impl Sync for Kernel {}

/// `P` output points, `k.step` input values apart, from `x` (the first point's origin): each
/// run `(weight row, input offset, len)` adds `len` input values times their kernel rows.
/// Writes `P * k.oc` values at `y`.
///
/// # Safety
/// Every run's input values exist for every point, the weight rows for every run exist, `oc` is
/// a multiple of 16, `bias` holds `oc` values and `y` has room for `P * oc`.
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512<const P: usize>(
    k: &Kernel,
    x: *const f32,
    runs: &[(usize, isize, usize)],
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let Kernel { step, wts, oc, bias, lo, hi } = *k;
    unsafe {
        // Max then min as `epilogue::clamp_f32` computes them: a NaN becomes `lo`.
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for ob in (0..oc).step_by(16) {
            let mut acc = [_mm512_loadu_ps(bias.add(ob)); P];
            for &(wrow, off, len) in runs {
                // The origin may lie outside the image (a padded border); a run's start does not.
                let xp = x.wrapping_offset(off);
                let wp = wts.add(wrow + ob);
                for c in 0..len {
                    let wv = _mm512_loadu_ps(wp.add(c * oc));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*xp.offset(p as isize * step + c as isize));
                        *acc = _mm512_fmadd_ps(wv, xv, *acc);
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                let v = _mm512_min_ps(_mm512_max_ps(*acc, lo), hi);
                _mm512_storeu_ps(y.add(p * oc + ob), v);
            }
        }
    }
}

impl Op for DirectChannelLastConv {
    fn name(&self) -> StaticName {
        "DirectChannelLastConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "kernel {:?} strides {:?} dilations {:?} pads {:?} {} -> {} channels{}",
            self.kernel_hw,
            self.strides,
            self.dilations,
            self.pads_before,
            self.ic(),
            self.oc(),
            match (self.silu, self.clamp_range()) {
                (true, _) => ", SiLU fused".to_string(),
                (_, Some((lo, hi))) => format!(", clamped to [{lo}, {hi}]"),
                _ => String::new(),
            }
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DirectChannelLastConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        Ok(tvec!(self.eval_f32(&x)?.into_tvalue()))
    }
}

impl TypedOp for DirectChannelLastConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(&*self.output_shape.shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let points: usize = self.output_shape.shape.iter().product::<usize>() / self.oc();
        let macs = points * self.oc() * self.ic() * self.kernel_hw[0] * self.kernel_hw[1];
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.into())))
    }

    /// A SiLU, or a Clip / Relu6, that is the only reader of the output is computed with it:
    /// the clamp before each store, the SiLU on each output row as the row is finished.
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        if self.silu {
            return Ok(None);
        }
        if let Some((succ, lo, hi)) =
            super::epilogue::following_clamp(model, node, self.clamp_range())?
        {
            let op = Self { clamp: Some((lo.to_bits(), hi.to_bits())), ..self.clone() };
            return Ok(Some(super::epilogue::absorb_successor(model, node, succ, op)?));
        }
        if self.clamp.is_some() {
            return Ok(None);
        }
        let Some(succ) = model.single_succ(node.id)? else { return Ok(None) };
        let Some(ew) = succ.op_as::<crate::ops::element_wise::ElementWiseOp>() else {
            return Ok(None);
        };
        if !ew.0.is::<crate::ops::nn::Silu>() {
            return Ok(None);
        }
        let op = Self { silu: true, ..self.clone() };
        Ok(Some(TypedModelPatch::fuse_with_next(model, node, op)?))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use crate::internal::*;
    use crate::ops::cnn::conv::{Conv, KernelFormat};
    use crate::ops::cnn::{PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Post {
        None,
        Silu,
        Clip(f32, f32),
    }

    /// One convolution, optionally followed by a SiLU, optimised and run, against a plain
    /// loop over the same definition. Returns whether the plan used the direct kernel.
    #[allow(clippy::too_many_arguments)]
    fn check(
        n: usize,
        (h, w, ic): (usize, usize, usize),
        oc: usize,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        pad: PaddingSpec,
        post: Post,
    ) -> bool {
        let silu = post == Post::Silu;
        let x: Vec<f32> = (0..n * h * w * ic).map(|i| (i as f32 * 0.137).sin() * 0.7).collect();
        let kernel: Vec<f32> =
            (0..oc * ic * kh * kw).map(|i| (i as f32 * 0.091).cos() * 0.3).collect();
        let bias: Vec<f32> = (0..oc).map(|i| i as f32 * 0.05 - 0.1).collect();
        let mut model = TypedModel::default();
        let xv = model.add_source("x", f32::fact([n, h, w, ic])).unwrap();
        let kv =
            model.add_const("k", Tensor::from_shape(&[oc, ic, kh, kw], &kernel).unwrap()).unwrap();
        let bv = model.add_const("b", Tensor::from_shape(&[oc], &bias).unwrap()).unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NHWC,
            kernel_shape: tvec!(kh, kw),
            padding: pad.clone(),
            dilations: Some(tvec!(dilation.0, dilation.1)),
            strides: Some(tvec!(stride.0, stride.1)),
            input_channels: ic,
            output_channels: oc,
        };
        let computed = pool_spec.computed_padding(&[h, w]);
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
        let mut out = model.wire_node("conv", conv, &[xv, kv, bv]).unwrap();
        match post {
            Post::Silu => {
                out = model.wire_node("silu", crate::ops::nn::silu::silu(), &out).unwrap();
            }
            Post::Clip(lo, hi) => {
                let lo = model.add_const("lo", tensor4(&[[[[lo]]]])).unwrap();
                out = model.wire_node("max", crate::ops::math::max(), &[out[0], lo]).unwrap();
                let hi = model.add_const("hi", tensor4(&[[[[hi]]]])).unwrap();
                out = model.wire_node("min", crate::ops::math::min(), &[out[0], hi]).unwrap();
            }
            Post::None => (),
        }
        model.select_output_outlets(&out).unwrap();
        let model = model.into_decluttered().unwrap().into_optimized().unwrap();
        let direct: Vec<&super::DirectChannelLastConv> =
            model.nodes.iter().filter_map(|node| node.op_as()).collect();
        if !direct.is_empty() {
            assert_eq!(direct[0].silu, silu, "the SiLU was not fused");
            assert_eq!(direct[0].clamp.is_some(), matches!(post, Post::Clip(..)), "the clip");
            assert_eq!(model.nodes.len(), 2, "{model}");
        }
        let used = !direct.is_empty();
        let got = model
            .into_runnable()
            .unwrap()
            .run(tvec![Tensor::from_shape(&[n, h, w, ic], &x).unwrap().into_tvalue()])
            .unwrap();
        let got = got[0].to_plain_array_view::<f32>().unwrap();
        let (oh, ow) = (got.shape()[1], got.shape()[2]);
        assert_eq!(oh, computed[0].convoluted);
        assert_eq!(ow, computed[1].convoluted);
        let (ph, pw) = (computed[0].pad_before as isize, computed[1].pad_before as isize);
        let mut max_abs = 0f32;
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..oc {
                        let mut acc = bias[o];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride.0 + ky * dilation.0) as isize - ph;
                                let ix = (ox * stride.1 + kx * dilation.1) as isize - pw;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for c in 0..ic {
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * ic + c];
                                    acc += xv * kernel[((o * ic + c) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        match post {
                            Post::Silu => acc /= 1.0 + (-acc).exp(),
                            Post::Clip(lo, hi) => acc = acc.max(lo).min(hi),
                            Post::None => (),
                        }
                        max_abs = max_abs.max((got[[b, oy, ox, o]] - acc).abs());
                    }
                }
            }
        }
        assert!(
            max_abs < 1e-4,
            "{n}x{h}x{w}x{ic} -> {oc} k {kh}x{kw} stride {stride:?} dilation {dilation:?} {pad:?} {post:?}: max_abs {max_abs}"
        );
        used
    }

    #[test]
    fn direct_channel_last_matches_reference() {
        let pad1 = || PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
        let cases = [
            // YOLOX-nano's stem, a few rows of it; then MobileNetV2's (stride 2, padded).
            (1, (7, 40, 12), 16, (3, 3), (1, 1), (1, 1), pad1(), Post::Silu),
            (
                1,
                (9, 37, 3),
                32,
                (3, 3),
                (2, 2),
                (1, 1),
                PaddingSpec::SameUpper,
                Post::Clip(0.0, 0.5),
            ),
            // Narrow rows (all border), batches, dilation, uneven kernels and padding.
            (2, (5, 3, 3), 16, (3, 3), (1, 1), (1, 1), pad1(), Post::None),
            (
                2,
                (11, 29, 5),
                48,
                (3, 2),
                (1, 2),
                (2, 1),
                PaddingSpec::Explicit(tvec!(2, 1), tvec!(0, 3)),
                Post::Silu,
            ),
            (
                1,
                (6, 30, 4),
                16,
                (2, 5),
                (2, 1),
                (1, 2),
                PaddingSpec::Valid,
                Post::Clip(-0.2, f32::INFINITY),
            ),
            (1, (4, 14, 1), 64, (3, 3), (1, 3), (1, 1), PaddingSpec::SameLower, Post::None),
        ];
        for (n, hwc, oc, k, s, d, pad, post) in cases {
            let used = check(n, hwc, oc, k, s, d, pad, post);
            assert_eq!(used, super::DirectChannelLastConv::host_supported());
        }
    }

    /// Output channels off the 16-lane grid, and 1x1 kernels, stay with the matrix product.
    #[test]
    fn direct_channel_last_declines_what_it_does_not_run() {
        let pad1 = || PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
        assert!(!check(1, (6, 20, 3), 24, (3, 3), (1, 1), (1, 1), pad1(), Post::None));
        assert!(!check(1, (6, 20, 8), 16, (1, 1), (1, 1), (1, 1), PaddingSpec::Valid, Post::None));
        assert!(!check(1, (6, 20, 64), 16, (3, 3), (1, 1), (1, 1), pad1(), Post::None));
    }
}
