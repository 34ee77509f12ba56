//! From calibration statistics to a quantization range per tensor: min/max, percentile,
//! entropy (TensorRT's KL-divergence search) or the range with the least quantization MSE.

use serde::{Deserialize, Serialize};

use crate::calib::{TensorStats, BINS};
use crate::error::{QuantizeError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    MinMax,
    /// Clip at this percentile of the values (both tails for signed tensors).
    Percentile(f64),
    Entropy,
    Mse,
}

impl Method {
    pub fn parse(name: &str, percentile: f64) -> Result<Self> {
        if !(50.0..=100.0).contains(&percentile) {
            return Err(QuantizeError::Config(format!("--percentile {percentile} is not within 50..100")));
        }
        Ok(match name {
            "minmax" => Method::MinMax,
            "percentile" => Method::Percentile(percentile),
            "entropy" => Method::Entropy,
            "mse" => Method::Mse,
            other => {
                return Err(QuantizeError::Config(format!(
                    "--method '{other}' is not one of minmax, percentile, entropy, mse"
                )))
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile {p}"),
            Method::Entropy => "entropy (KL)".into(),
            Method::Mse => "mse".into(),
        }
    }
}

/// `(lo, hi)` to quantize `s` over.
pub fn range(s: &TensorStats, method: Method) -> (f32, f32) {
    let (lo, hi) = match method {
        Method::MinMax => (s.min, s.max),
        Method::Percentile(p) => percentile(s, p),
        Method::Entropy => {
            let levels = if s.min >= 0.0 { 256 } else { 128 };
            let t = entropy_threshold(&s.abs_hist, levels) * s.abs_max();
            (s.min.max(-t), s.max.min(t))
        }
        Method::Mse => mse(s),
    };
    (lo.min(0.0), hi.max(0.0))
}

fn percentile(s: &TensorStats, p: f64) -> (f32, f32) {
    let total = s.count() as f64;
    if total == 0.0 {
        return (s.min, s.max);
    }
    let width = (s.max - s.min) / BINS as f32;
    let value_at = |q: f64| -> f32 {
        let target = q / 100.0 * total;
        let mut acc = 0.0;
        for (i, &c) in s.hist.iter().enumerate() {
            acc += c as f64;
            if acc >= target {
                return s.min + (i + 1) as f32 * width;
            }
        }
        s.max
    };
    let hi = value_at(p).min(s.max);
    let lo = if s.min >= 0.0 { s.min } else { (value_at(100.0 - p) - width).max(s.min) };
    (lo, hi)
}

/// TensorRT's calibration as onnxruntime implements it: the threshold (as a fraction of the
/// histogram range) whose `levels`-level quantization loses the least information,
/// KL(P || Q) between the clipped reference (tail folded into its last bin) and its
/// quantized version (built from the unfolded bins, so clipping shows up as a loss).
pub fn entropy_threshold(hist: &[u64], levels: usize) -> f32 {
    let n = hist.len();
    if hist.iter().all(|&c| c == 0) || n <= levels {
        return 1.0;
    }
    let mut best = (f64::INFINITY, n);
    for i in (levels..=n).step_by(4) {
        let sliced: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        let mut p = sliced.clone();
        p[i - 1] += hist[i..].iter().map(|&c| c as f64).sum::<f64>();
        let merged = i / levels;
        let mut q = vec![0.0f64; i];
        for l in 0..levels {
            let start = l * merged;
            let end = if l == levels - 1 { i } else { start + merged };
            let sum: f64 = sliced[start..end].iter().sum();
            let nonzero = p[start..end].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for j in start..end {
                    if p[j] > 0.0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let kl = kl_divergence(&smooth(&p), &smooth(&q));
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 / n as f32
}

/// Normalises and moves a little mass (1e-4 per empty bin) onto empty bins, as
/// onnxruntime's `smooth_distribution`, so KL stays finite.
fn smooth(d: &[f64]) -> Vec<f64> {
    let total: f64 = d.iter().sum();
    let zeros = d.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = d.len() - zeros;
    if total == 0.0 || nonzeros == 0 {
        return vec![1.0 / d.len() as f64; d.len()];
    }
    let eps = 1e-4;
    let eps1 = eps * zeros as f64 / nonzeros as f64;
    d.iter().map(|&v| if v == 0.0 { eps } else { (v / total - eps1).max(1e-12) }).collect()
}

fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).filter(|(a, _)| **a > 0.0).map(|(a, b)| a * (a / b).ln()).sum()
}

/// The shrink of `[min, max]` with the least expected squared error: clipping error outside,
/// uniform rounding error (step²/12) inside, over the histogram's bin centres.
fn mse(s: &TensorStats) -> (f32, f32) {
    let width = (s.max - s.min) as f64 / BINS as f64;
    let centres: Vec<f64> = (0..BINS).map(|i| s.min as f64 + (i as f64 + 0.5) * width).collect();
    let mut best = (f64::INFINITY, 1.0f64);
    for k in 1..=200 {
        let f = k as f64 / 200.0;
        let lo = (s.min.min(0.0) as f64) * f;
        let hi = (s.max.max(0.0) as f64) * f;
        let step = (hi - lo) / 255.0;
        let round_err = step * step / 12.0;
        let mut err = 0.0;
        for (&c, &x) in s.hist.iter().zip(&centres) {
            if c == 0 {
                continue;
            }
            let e = if x > hi {
                (x - hi).powi(2)
            } else if x < lo {
                (lo - x).powi(2)
            } else {
                round_err
            };
            err += c as f64 * e;
        }
        if err < best.0 {
            best = (err, f);
        }
    }
    ((s.min.min(0.0) as f64 * best.1) as f32, (s.max.max(0.0) as f64 * best.1) as f32)
}

/// uint8 scale and zero point for `[lo, hi]` (0 exactly representable, as ONNX requires for
/// padding and ReLU outputs).
pub fn uint8_params(lo: f32, hi: f32) -> (f32, u8) {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{abs_histogram, histogram};

    fn stats(v: &[f32]) -> TensorStats {
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        TensorStats { min, max, hist: histogram(v, min, max), abs_hist: abs_histogram(v, min.abs().max(max.abs())) }
    }

    /// Mostly uniform on [0, 1] plus a few far outliers at 50.
    fn with_outliers() -> Vec<f32> {
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.extend([50.0; 3]);
        v
    }

    #[test]
    fn minmax_keeps_everything_and_the_others_clip_outliers() {
        let s = stats(&with_outliers());
        assert_eq!(range(&s, Method::MinMax), (0.0, 50.0));
        // Three far outliers cost MSE more clipped than kept, so only these two clip them.
        let (_, hi) = range(&s, Method::Mse);
        assert!(hi > 0.9 && hi <= 50.0);
        {
            let m = Method::Percentile(99.99);
            let (lo, hi) = range(&s, m);
            assert_eq!(lo, 0.0, "{m:?}");
            assert!(hi > 0.9 && hi < 5.0, "{m:?} clipped at {hi}");
        }
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // Exponential: most mass near 0, a long sparse tail to ~12.
        let v: Vec<f32> = (1..=100_000).map(|i| -((i as f32) / 100_001.0).ln()).collect();
        let s = stats(&v);
        let (lo, hi) = range(&s, Method::Entropy);
        assert_eq!(lo, 0.0);
        assert!(hi > 2.0 && hi < 0.9 * s.max, "entropy kept [0, {hi}] of [0, {}]", s.max);
    }

    #[test]
    fn signed_tensors_get_both_tails() {
        let v: Vec<f32> = (0..20_001).map(|i| (i as f32 - 10_000.0) / 10_000.0).collect();
        let s = stats(&v);
        let (lo, hi) = range(&s, Method::Percentile(99.0));
        assert!((lo + 0.98).abs() < 0.01 && (hi - 0.98).abs() < 0.01, "{lo} {hi}");
        let (lo, hi) = range(&s, Method::Mse);
        assert!(lo < -0.9 && hi > 0.9, "uniform data keeps (almost) its range: {lo} {hi}");
    }

    #[test]
    fn uint8_params_represent_zero_exactly() {
        let (s, z) = uint8_params(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 64);
        assert_eq!(uint8_params(0.0, 6.0).1, 0);
        // Degenerate (constant zero) tensor: a usable scale, no NaN.
        let (s, z) = uint8_params(0.0, 0.0);
        assert!(s > 0.0 && z == 0);
        assert!(Method::parse("kl", 99.99).is_err());
        assert!(Method::parse("percentile", 101.0).is_err());
    }
}
