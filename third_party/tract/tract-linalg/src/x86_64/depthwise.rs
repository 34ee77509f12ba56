/// Depthwise convolution along an axis the output is contiguous on: `len` output points, each
/// the bias plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// Same contract as the aarch64 and wasm kernels. The arithmetic is the scalar walk's, in the
/// same order: the bias, then one multiply and one add per tap. It uses no FMA, so every output
/// is bit-identical to the scalar path and a plan gives the same results with or without this
/// kernel. `in_stride == 1` is vectorised at any tap count; any other stride stays scalar.
///
/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and every `i` below
/// `len`, and `len` output points writable from `output`. The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        match in_stride {
            1 => contiguous(input, output, taps, offsets, bias, len),
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

/// The `in_stride == 1` case, with the tap count taken at runtime.
///
/// Taps are the outer loop and 32 output points the inner one: four 8-lane accumulators give
/// the adder independent chains, and each tap's broadcast is paid once per 32 points. Real 3x3,
/// 7x7 or 9x9 kernels reach here with 9, 49 or 81 taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn contiguous(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        while i + 32 <= len {
            let mut a0 = biasv;
            let mut a1 = biasv;
            let mut a2 = biasv;
            let mut a3 = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm256_set1_ps(*tap);
                let p = input.offset(*offset).add(i);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(p), k));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), k));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(p.add(16)), k));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(p.add(24)), k));
            }
            _mm256_storeu_ps(output.add(i), a0);
            _mm256_storeu_ps(output.add(i + 8), a1);
            _mm256_storeu_ps(output.add(i + 16), a2);
            _mm256_storeu_ps(output.add(i + 24), a3);
            i += 32;
        }
        while i + 8 <= len {
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = _mm256_loadu_ps(input.offset(*offset).add(i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_storeu_ps(output.add(i), acc);
            i += 8;
        }
        scalar(input, output, taps, offsets, bias, i, len, 1);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    from: usize,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        for i in from..len {
            let mut sum = bias;
            for (tap, offset) in taps.iter().zip(offsets) {
                sum += tap * *input.offset(*offset + i as isize * in_stride);
            }
            *output.add(i) = sum;
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_w_f32(
    *const f32, *mut f32, &[f32], &[isize], f32, usize, isize
));

submit_routine!(x86_64; DepthwiseWF32, DepthwiseW, "x86_64_avx_depthwise_w_f32", depthwise_w_f32,
    isa(X86_64Avx));

/// Depthwise convolution with the channel as the contiguous dim (NHWC): `len` output positions
/// of `channels` channels each. Point `i`, channel `c`, is `bias[c]` plus every
/// `kernel[tap_indices[t] * k_stride + c] * input[i * in_stride + offsets[t] + c]`, the taps
/// accumulated in order with one fused multiply-add each.
///
/// Same contract as the aarch64 kernel of that name (which also fuses). Channels are the vector
/// lanes, so the spatial stride only moves the input pointer: stride 1 and stride 2 run the
/// same code. Every channel, vector block or tail, sees the same sequence of roundings, so an
/// output does not depend on where its channel falls in a block.
///
/// # Safety
/// `input.offset(i * in_stride + offsets[t] + c)` and `kernel.add(tap_indices[t] * k_stride + c)`
/// must be readable for every tap, every `i` below `len` and every `c` below `channels`;
/// `channels` values must be readable from `bias`, and `channels` values writable from
/// `output.offset(i * out_stride)` for every `i` below `len`. The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_avx512(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    use std::arch::x86_64::*;
    unsafe {
        for i in 0..len {
            let iptr = input.offset(i as isize * in_stride);
            let optr = output.offset(i as isize * out_stride);
            let mut c = 0usize;
            // Four 16-lane accumulators: independent FMA chains to cover the latency.
            while c + 64 <= channels {
                let mut a0 = _mm512_loadu_ps(bias.add(c));
                let mut a1 = _mm512_loadu_ps(bias.add(c + 16));
                let mut a2 = _mm512_loadu_ps(bias.add(c + 32));
                let mut a3 = _mm512_loadu_ps(bias.add(c + 48));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let kt = kernel.add(kix * k_stride + c);
                    let xt = iptr.offset(off).add(c);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(xt), _mm512_loadu_ps(kt), a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(xt.add(16)), _mm512_loadu_ps(kt.add(16)), a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(xt.add(32)), _mm512_loadu_ps(kt.add(32)), a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(xt.add(48)), _mm512_loadu_ps(kt.add(48)), a3);
                }
                _mm512_storeu_ps(optr.add(c), a0);
                _mm512_storeu_ps(optr.add(c + 16), a1);
                _mm512_storeu_ps(optr.add(c + 32), a2);
                _mm512_storeu_ps(optr.add(c + 48), a3);
                c += 64;
            }
            while c < channels {
                // Full blocks of 16, then one masked block: no scalar tail.
                let mask: __mmask16 = if channels - c >= 16 { 0xffff } else { (1u16 << (channels - c)) - 1 };
                let mut acc = _mm512_maskz_loadu_ps(mask, bias.add(c));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let x = _mm512_maskz_loadu_ps(mask, iptr.offset(off).add(c));
                    let k = _mm512_maskz_loadu_ps(mask, kernel.add(kix * k_stride + c));
                    acc = _mm512_fmadd_ps(x, k, acc);
                }
                _mm512_mask_storeu_ps(optr.add(c), mask, acc);
                c += 16;
            }
        }
    }
}

/// [`depthwise_c_f32_avx512`] for AVX2 + FMA machines: 8-lane blocks, then a scalar tail that
/// fuses the same way (`mul_add` is one `vfmadd` here), so the results match the AVX-512
/// kernel bit for bit.
///
/// # Safety
/// As [`depthwise_c_f32_avx512`]; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_fma(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    use std::arch::x86_64::*;
    unsafe {
        for i in 0..len {
            let iptr = input.offset(i as isize * in_stride);
            let optr = output.offset(i as isize * out_stride);
            let mut c = 0usize;
            while c + 32 <= channels {
                let mut a0 = _mm256_loadu_ps(bias.add(c));
                let mut a1 = _mm256_loadu_ps(bias.add(c + 8));
                let mut a2 = _mm256_loadu_ps(bias.add(c + 16));
                let mut a3 = _mm256_loadu_ps(bias.add(c + 24));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let kt = kernel.add(kix * k_stride + c);
                    let xt = iptr.offset(off).add(c);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xt), _mm256_loadu_ps(kt), a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(8)), _mm256_loadu_ps(kt.add(8)), a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(16)), _mm256_loadu_ps(kt.add(16)), a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(24)), _mm256_loadu_ps(kt.add(24)), a3);
                }
                _mm256_storeu_ps(optr.add(c), a0);
                _mm256_storeu_ps(optr.add(c + 8), a1);
                _mm256_storeu_ps(optr.add(c + 16), a2);
                _mm256_storeu_ps(optr.add(c + 24), a3);
                c += 32;
            }
            while c + 8 <= channels {
                let mut acc = _mm256_loadu_ps(bias.add(c));
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    let x = _mm256_loadu_ps(iptr.offset(off).add(c));
                    acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(kernel.add(kix * k_stride + c)), acc);
                }
                _mm256_storeu_ps(optr.add(c), acc);
                c += 8;
            }
            while c < channels {
                let mut sum = *bias.add(c);
                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                    sum = (*iptr.offset(off).add(c)).mul_add(*kernel.add(kix * k_stride + c), sum);
                }
                *optr.add(c) = sum;
                c += 1;
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32_avx512(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));
bail_stub!(x86_64; pub unsafe fn depthwise_c_f32_fma(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));

submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_avx512_depthwise_c_f32",
    depthwise_c_f32_avx512, isa(X86_64Avx512f));
submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_fma_depthwise_c_f32",
    depthwise_c_f32_fma, isa(X86_64Avx2, X86_64Fma));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn reference(
        input: &[f32],
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
        in_stride: isize,
        center: usize,
    ) -> Vec<f32> {
        (0..len)
            .map(|i| {
                taps.iter().zip(offsets).fold(bias, |sum, (tap, offset)| {
                    sum + tap * input[(center as isize + offset + i as isize * in_stride) as usize]
                })
            })
            .collect()
    }

    fn compare(taps: usize, len: usize, in_stride: isize) {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.7).sin()).collect();
        let offsets: Vec<isize> = (0..taps as isize).map(|t| t - taps as isize / 2).collect();
        let center = taps;
        let input: Vec<f32> = (0..center * 2 + len * in_stride as usize + 1)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let expected = reference(&input, &k, &offsets, 0.25, len, in_stride, center);
        let mut output = vec![0f32; len];
        unsafe {
            depthwise_w_f32(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        // Same operations in the same order: the results must match bit for bit.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&output), bits(&expected), "taps {taps} len {len} stride {in_stride}");
    }

    #[test]
    fn matches_scalar_bit_for_bit() {
        for taps in [1, 2, 3, 4, 5, 9, 25, 49, 81] {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 224] {
                compare(taps, len, 1);
                compare(taps, len, 2);
            }
        }
    }

    /// The channel-last kernels against a plain fused walk, at stride 1 and 2, with channel
    /// counts that hit the 64 / 32 / 16 / 8 blocks, the AVX-512 mask and the scalar tail.
    #[test]
    fn channel_last_kernels_match_a_fused_walk() {
        let have_fma = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let have_512 = std::is_x86_feature_detected!("avx512f");
        if !have_fma {
            return;
        }
        let taps = 9usize;
        for channels in [1usize, 3, 7, 8, 15, 16, 17, 24, 32, 33, 63, 64, 65, 96, 144, 150] {
            for in_stride_px in [1isize, 2] {
                let len = 11usize;
                let k_stride = channels + 5; // a block of a wider kernel
                let kernel: Vec<f32> = (0..taps * k_stride).map(|i| (i as f32 * 0.31).sin()).collect();
                let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.01 - 0.2).collect();
                let tap_indices: Vec<usize> = (0..taps).collect();
                let row = (len as isize * in_stride_px + 2) * channels as isize;
                let offsets: Vec<isize> = (0..taps as isize).map(|t| (t / 3) * row + (t % 3) * channels as isize).collect();
                let input: Vec<f32> = (0..(3 * row) as usize + channels).map(|i| (i as f32 * 0.173).cos()).collect();
                let (in_stride, out_stride) = (in_stride_px * channels as isize, channels as isize + 3);
                let mut want = vec![0f32; len * out_stride as usize];
                for i in 0..len {
                    for c in 0..channels {
                        let mut sum = bias[c];
                        for t in 0..taps {
                            let x = input[(i as isize * in_stride + offsets[t]) as usize + c];
                            sum = x.mul_add(kernel[tap_indices[t] * k_stride + c], sum);
                        }
                        want[i * out_stride as usize + c] = sum;
                    }
                }
                let run = |f: unsafe fn(*const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize, isize)| {
                    let mut out = want.iter().map(|_| f32::NAN).collect::<Vec<_>>();
                    unsafe {
                        f(input.as_ptr(), out.as_mut_ptr(), kernel.as_ptr(), &tap_indices, &offsets, bias.as_ptr(), channels, k_stride, len, in_stride, out_stride)
                    };
                    out
                };
                let bits = |v: &[f32]| -> Vec<u32> {
                    (0..len).flat_map(|i| (0..channels).map(move |c| i * out_stride as usize + c)).map(|j| v[j].to_bits()).collect()
                };
                assert_eq!(bits(&run(depthwise_c_f32_fma)), bits(&want), "fma channels {channels} stride {in_stride_px}");
                if have_512 {
                    let got = run(depthwise_c_f32_avx512);
                    assert_eq!(bits(&got), bits(&want), "avx512 channels {channels} stride {in_stride_px}");
                    // Nothing written between positions (the gap of out_stride beyond channels).
                    for i in 0..len {
                        for g in channels..out_stride as usize {
                            if i * out_stride as usize + g < got.len() {
                                assert!(got[i * out_stride as usize + g].is_nan());
                            }
                        }
                    }
                }
            }
        }
    }
}
