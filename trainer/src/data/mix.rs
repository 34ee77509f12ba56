//! Batch mixing for classification (`--mix mixup|cutmix`): each image of a batch is blended
//! with (mixup) or has a rectangle pasted from (cutmix) its partner in the batch, and the loss
//! is `λ·CE(y) + (1 − λ)·CE(y_partner)` — timm's `Mixup` with its `flip` pairing, and
//! fastai's `MixUp` / `CutMix` loss. It regularises a fine-tune on few photos, where a model
//! otherwise learns each photo's background.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MixKind {
    /// Pixel blend of two images, λ ~ Beta(α, α) (Zhang et al. 2018).
    Mixup,
    /// A rectangle of 1 − λ of the area cut from the partner (Yun et al. 2019).
    Cutmix,
}

impl MixKind {
    /// α when none is given: fastai's MixUp 0.4 (ImageNet recipes use 0.2–0.8), and
    /// CutMix's paper and timm 1.0.
    pub fn default_alpha(self) -> f32 {
        match self {
            MixKind::Mixup => 0.4,
            MixKind::Cutmix => 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixSettings {
    pub kind: MixKind,
    /// Beta(α, α) concentration of λ.
    pub alpha: f32,
    /// Probability that a batch is mixed at all.
    pub prob: f32,
}

/// How a mixed batch is scored: against its own labels with weight `lam`, against
/// `partner` (the partners' labels) with `1 − lam`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixed {
    pub partner: Vec<i64>,
    pub lam: f32,
}

impl MixSettings {
    pub fn new(kind: MixKind, alpha: Option<f32>, prob: Option<f32>) -> Self {
        MixSettings { kind, alpha: alpha.unwrap_or(kind.default_alpha()), prob: prob.unwrap_or(1.0) }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(TrainerError::Config(format!("--mix-alpha {} must be > 0", self.alpha)));
        }
        if !(0.0..=1.0).contains(&self.prob) {
            return Err(TrainerError::Config(format!("--mix-prob {} must be between 0 and 1", self.prob)));
        }
        Ok(())
    }

    /// Mixes a normalised batch `[n, 3, size, size]` in place; `None` when this batch is left
    /// alone (drawn against `prob`, or a batch of one).
    pub fn apply(&self, pixels: &mut [f32], labels: &[i64], size: usize, rng: &mut impl Rng) -> Option<Mixed> {
        let n = labels.len();
        let plane = 3 * size * size;
        debug_assert_eq!(pixels.len(), n * plane);
        if n < 2 || rng.random::<f32>() >= self.prob {
            return None;
        }
        let beta = Beta::new(self.alpha, self.alpha).expect("alpha checked by validate");
        let mut lam: f32 = beta.sample(rng);
        let partner_of = |k: usize| n - 1 - k;
        let original = pixels.to_vec();
        match self.kind {
            MixKind::Mixup => {
                for k in 0..n {
                    let (dst, src) = (k * plane, partner_of(k) * plane);
                    for i in 0..plane {
                        pixels[dst + i] = lam * original[dst + i] + (1.0 - lam) * original[src + i];
                    }
                }
            }
            MixKind::Cutmix => {
                let [x0, y0, x1, y1] = cut_box(size, lam, rng);
                for k in 0..n {
                    let (dst, src) = (k * plane, partner_of(k) * plane);
                    for c in 0..3 {
                        for y in y0..y1 {
                            let row = c * size * size + y * size;
                            pixels[dst + row + x0..dst + row + x1]
                                .copy_from_slice(&original[src + row + x0..src + row + x1]);
                        }
                    }
                }
                // The box was clipped at the border: λ is the area actually kept.
                lam = 1.0 - ((x1 - x0) * (y1 - y0)) as f32 / (size * size) as f32;
            }
        }
        Some(Mixed { partner: (0..n).map(|k| labels[partner_of(k)]).collect(), lam })
    }
}

/// CutMix's box (timm `rand_bbox`): sides `size·√(1 − λ)`, centre uniform over the image,
/// clipped to it. Returns `[x0, y0, x1, y1)`.
fn cut_box(size: usize, lam: f32, rng: &mut impl Rng) -> [usize; 4] {
    let side = (size as f32 * (1.0 - lam).max(0.0).sqrt()).round() as i64;
    let (cx, cy) = (rng.random_range(0..size as i64), rng.random_range(0..size as i64));
    let clip = |v: i64| v.clamp(0, size as i64) as usize;
    [clip(cx - side / 2), clip(cy - side / 2), clip(cx + side / 2), clip(cy + side / 2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample_rng;

    /// Sample k's pixels all equal k (per channel offset c/10).
    fn batch(n: usize, size: usize) -> Vec<f32> {
        let plane = 3 * size * size;
        (0..n * plane).map(|i| (i / plane) as f32 + ((i % plane) / (size * size)) as f32 / 10.0).collect()
    }

    #[test]
    fn mixup_blends_each_image_with_its_partner_by_lambda() {
        let (n, size) = (4, 8);
        let mut px = batch(n, size);
        let labels = [0, 1, 2, 3];
        let m = MixSettings::new(MixKind::Mixup, None, None);
        let mixed = m.apply(&mut px, &labels, size, &mut sample_rng(1, 0, 0)).unwrap();
        assert_eq!(mixed.partner, vec![3, 2, 1, 0]);
        assert!((0.0..=1.0).contains(&mixed.lam));
        let plane = 3 * size * size;
        for k in 0..n {
            let want = mixed.lam * k as f32 + (1.0 - mixed.lam) * (n - 1 - k) as f32;
            // First pixel of channel 0 of image k.
            assert!((px[k * plane] - want).abs() < 1e-5, "{k}: {} vs {want}", px[k * plane]);
        }
    }

    #[test]
    fn cutmix_lambda_is_the_area_kept() {
        let (n, size) = (3, 16);
        let plane = 3 * size * size;
        let labels = [5, 6, 7];
        let m = MixSettings::new(MixKind::Cutmix, None, None);
        let mut seen_cut = false;
        for s in 0..20 {
            let mut px = batch(n, size);
            let mixed = m.apply(&mut px, &labels, size, &mut sample_rng(s, 0, 0)).unwrap();
            assert_eq!(mixed.partner, vec![7, 6, 5]);
            // Image 0: pixels not its own came from image 2; their share is 1 − λ.
            let own = px[..plane].iter().filter(|&&v| v.floor() == 0.0).count();
            let pasted = px[..plane].iter().filter(|&&v| v.floor() == 2.0).count();
            assert_eq!(own + pasted, plane);
            assert!((own as f32 / plane as f32 - mixed.lam).abs() < 1e-6, "seed {s}");
            seen_cut |= pasted > 0;
        }
        assert!(seen_cut, "no seed cut anything");
    }

    #[test]
    fn probability_zero_and_single_images_leave_the_batch_alone() {
        let size = 4;
        let mut px = batch(2, size);
        let before = px.clone();
        let never = MixSettings::new(MixKind::Mixup, None, Some(0.0));
        assert!(never.apply(&mut px, &[0, 1], size, &mut sample_rng(0, 0, 0)).is_none());
        let mut one = batch(1, size);
        assert!(MixSettings::new(MixKind::Cutmix, None, None)
            .apply(&mut one, &[0], size, &mut sample_rng(0, 0, 0))
            .is_none());
        assert_eq!(px, before);
        assert!(MixSettings::new(MixKind::Mixup, Some(0.0), None).validate().is_err());
        assert!(MixSettings::new(MixKind::Mixup, None, Some(1.5)).validate().is_err());
    }
}
