//! Bilinear resize as two matrix products, `A_h · x · A_wᵀ`, with fixed interpolation matrices.
//!
//! Why not burn's `interpolate`: burn 0.22.1's CubeCL backends (wgpu, vulkan, cuda) have no
//! backward for bilinear interpolation ("Bilinear interpolation backward is not supported by
//! JIT backend"), so the segmenter could not train on a GPU. Matrix products are differentiable
//! on every backend, and bilinear interpolation without antialiasing is separable and linear:
//! each output row is a weighted sum of two input rows, each output column of two input
//! columns. The result equals `interpolate`'s (PyTorch's `align_corners=False`, ONNX Resize
//! `linear` + `half_pixel`, which the export writes) up to float rounding; a test holds the
//! two together, forward and backward, on the CPU backend where both exist.

use burn::prelude::*;

use super::precision::to_dtype;

/// The `[src, dst]` matrix that resizes a length-`src` axis to `dst` samples with half-pixel
/// centres: column `j` holds the two weights of output sample `j` (PyTorch's
/// `upsample_bilinear2d` with `align_corners=False` and an output size: source coordinate
/// `(j + 0.5) · src/dst − 0.5`, clamped at 0; the upper neighbour clamped at the last sample).
/// Row-major, so `x [.., src] · m` resizes the last axis.
pub fn interpolation_matrix(src: usize, dst: usize) -> Vec<f32> {
    let mut m = vec![0f32; src * dst];
    let scale = src as f64 / dst as f64;
    for j in 0..dst {
        let s = ((j as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(src - 1);
        let i1 = (i0 + 1).min(src - 1);
        let w1 = (s - i0 as f64) as f32;
        m[i0 * dst + j] += 1.0 - w1;
        m[i1 * dst + j] += w1;
    }
    m
}

/// Bilinear resize with half-pixel centres (PyTorch's `align_corners=False`, ONNX Resize
/// `linear` + `half_pixel`), differentiable on every backend. `x`: [b, c, h, w] ->
/// [b, c, size[0], size[1]], in `x`'s dtype.
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    let dtype = x.dtype();
    // Constants (no gradient), in the dtype the model computes in: burn 0.22.1 reads the
    // second operand of a mixed-dtype product as the first's dtype.
    let matrix = |src: usize, dst: usize| {
        let m = Tensor::<2>::from_data(TensorData::new(interpolation_matrix(src, dst), [src, dst]), &device);
        to_dtype(m, dtype)
    };
    let y = x.reshape([b * c * h, w]).matmul(matrix(w, ow)); // [b·c·h, ow]
    let y = y.reshape([b * c, h, ow]).swap_dims(1, 2).reshape([b * c * ow, h]); // [b·c·ow, h]
    let y = y.matmul(matrix(h, oh)); // [b·c·ow, oh]
    y.reshape([b * c, ow, oh]).swap_dims(1, 2).reshape([b, c, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::to_host;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    fn burns(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size),
        )
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn half_pixel_weights() {
        // 2 -> 4 samples: 1, 1.25, 1.75, 2 from [1, 2] (edges clamped).
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 1, 1, 2]), &device);
        assert_eq!(to_host(resize_bilinear(x, [1, 4])), vec![1.0, 1.25, 1.75, 2.0]);
        // Every output sample's weights sum to 1.
        for (src, dst) in [(3, 7), (8, 3), (5, 5), (1, 4), (16, 128)] {
            let m = interpolation_matrix(src, dst);
            for j in 0..dst {
                let s: f32 = (0..src).map(|i| m[i * dst + j]).sum();
                assert!((s - 1.0).abs() < 1e-6, "{src}->{dst} column {j} sums to {s}");
            }
        }
    }

    /// Forward and backward equal burn's own `interpolate` on the CPU backend, for up- and
    /// down-sampling by whole and fractional factors.
    #[test]
    fn equals_burns_interpolate_forward_and_backward() {
        let device = Device::flex().autodiff();
        device.seed(7);
        for (from, to) in [([2, 3], [16, 24]), ([3, 5], [7, 11]), ([8, 8], [3, 5]), ([4, 6], [4, 12]), ([1, 1], [4, 4])]
        {
            let shape = [2, 3, from[0], from[1]];
            let x = Tensor::<4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<4>::random([2, 3, to[0], to[1]], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let ours = resize_bilinear(x.clone(), to);
            let theirs = burns(x.clone(), to);
            let d = max_diff(&to_host(ours.clone()), &to_host(theirs.clone()));
            assert!(d < 1e-5, "{from:?} -> {to:?}: forward differs by {d}");
            let g_ours = to_host(x.grad(&(ours * r.clone()).sum().backward()).unwrap());
            let g_theirs = to_host(x.grad(&(theirs * r).sum().backward()).unwrap());
            let d = max_diff(&g_ours, &g_theirs);
            assert!(d < 1e-4, "{from:?} -> {to:?}: gradient differs by {d}");
        }
    }
}
