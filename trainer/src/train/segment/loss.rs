//! Segmentation losses on per-pixel logits: cross-entropy with class weights (PyTorch's
//! `CrossEntropyLoss(weight=w, ignore_index=255)`: the weighted mean over pixels), soft Dice
//! (segmentation_models_pytorch's multiclass `DiceLoss`: 1 − mean Dice over the classes
//! present in the batch's truth), or their sum. Ignored pixels count in neither.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use serde::{Deserialize, Serialize};

/// `--loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SegLoss {
    /// Cross-entropy, class-weighted.
    Ce,
    /// Soft Dice over the classes present.
    Dice,
    /// Their sum: CE's steady gradients, Dice's indifference to how rare a class is.
    CeDice,
}

/// A batch's truth as the loss reads it: one-hot class maps, all zero at ignored pixels,
/// and which classes occur.
pub struct SegTarget {
    /// [batch, classes, H, W]
    pub one_hot: Tensor<4>,
    /// Per class: whether any pixel of the batch has it.
    pub present: Vec<bool>,
}

impl SegTarget {
    /// From class-id maps (`masks[i]` row-major `height × width`); ids at or past `classes`
    /// (255 = ignore) are ignored.
    pub fn new(masks: &[Vec<u8>], classes: usize, height: usize, width: usize, device: &Device) -> Self {
        let plane = height * width;
        let mut one_hot = vec![0f32; masks.len() * classes * plane];
        let mut present = vec![false; classes];
        for (b, m) in masks.iter().enumerate() {
            for (i, &c) in m.iter().enumerate().take(plane) {
                let c = c as usize;
                if c < classes {
                    one_hot[(b * classes + c) * plane + i] = 1.0;
                    present[c] = true;
                }
            }
        }
        let one_hot = Tensor::from_data(TensorData::new(one_hot, [masks.len(), classes, height, width]), device);
        SegTarget { one_hot, present }
    }
}

/// The loss on `logits` [batch, classes, H, W]; `weights` (one per class) weigh the
/// cross-entropy. Returns the scalar loss.
pub fn seg_loss(logits: Tensor<4>, target: &SegTarget, weights: Option<&[f32]>, kind: SegLoss) -> Tensor<1> {
    let device = logits.device();
    let classes = logits.dims()[1];
    let one_hot = target.one_hot.clone();
    let ce = || {
        let nll = -(log_softmax(logits.clone(), 1) * one_hot.clone()).sum_dim(1); // [b, 1, H, W]
                                                                                  // Each pixel's weight is its class's; an ignored pixel's row is all zero.
        let w = match weights {
            Some(w) => {
                let w = Tensor::<1>::from_floats(w, &device).reshape([1, classes, 1, 1]);
                (one_hot.clone() * w).sum_dim(1)
            }
            None => one_hot.clone().sum_dim(1),
        };
        (nll * w.clone()).sum() / w.sum().clamp_min(1e-12)
    };
    let dice = || {
        let valid = one_hot.clone().sum_dim(1); // [b, 1, H, W]: 0 at ignored pixels
        let p = softmax(logits.clone(), 1) * valid;
        let sum_bhw = |t: Tensor<4>| t.swap_dims(0, 1).reshape([classes as i32, -1]).sum_dim(1).reshape([classes]);
        let inter = sum_bhw(p.clone() * one_hot.clone());
        let card = sum_bhw(p + one_hot.clone());
        let score = inter * 2.0 / card.clamp_min(1e-7); // [classes]
        let present: Vec<f32> = target.present.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
        let n = present.iter().sum::<f32>().max(1.0);
        let mask = Tensor::<1>::from_floats(present.as_slice(), &device);
        (score * mask).sum().neg().add_scalar(n) / n
    };
    match kind {
        SegLoss::Ce => ce(),
        SegLoss::Dice => dice(),
        SegLoss::CeDice => ce() + dice(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: two pixels, two classes, one ignored pixel. Logits (0, ln 3) give p = (1/4, 3/4).
    #[test]
    fn values_by_hand() {
        let device = Device::flex();
        let l3 = 3f32.ln();
        // [1, 2, 1, 3]: pixel 0 truth 1, pixel 1 truth 0, pixel 2 ignored (255).
        let logits = Tensor::<4>::from_data(TensorData::new(vec![0.0, 0.0, 0.0, l3, l3, l3], [1, 2, 1, 3]), &device);
        let t = SegTarget::new(&[vec![1, 0, 255]], 2, 1, 3, &device);
        assert_eq!(t.present, vec![true, true]);
        let v = |k, w: Option<&[f32]>| seg_loss(logits.clone(), &t, w, k).into_scalar::<f32>();
        // CE: (−ln 3/4 − ln 1/4) / 2.
        let ce = (-(0.75f32).ln() - (0.25f32).ln()) / 2.0;
        assert!((v(SegLoss::Ce, None) - ce).abs() < 1e-6);
        // Weights 1 and 3: (1·(−ln 1/4) + 3·(−ln 3/4)) / 4.
        let wce = (-(0.25f32).ln() + 3.0 * -(0.75f32).ln()) / 4.0;
        assert!((v(SegLoss::Ce, Some(&[1.0, 3.0])) - wce).abs() < 1e-6);
        // Dice: class 0: p = (1/4, 1/4), truth (0, 1): 2·(1/4) / (1/2 + 1) = 1/3; class 1:
        // p = (3/4, 3/4), truth (1, 0): 2·(3/4) / (3/2 + 1) = 3/5. Loss 1 − (1/3 + 3/5)/2.
        let dice = 1.0 - (1.0 / 3.0 + 0.6) / 2.0;
        assert!((v(SegLoss::Dice, None) - dice).abs() < 1e-6);
        assert!((v(SegLoss::CeDice, None) - ce - dice).abs() < 1e-5);
        // A class absent from the truth stays out of Dice's mean.
        let t = SegTarget::new(&[vec![1, 1, 255]], 2, 1, 3, &device);
        assert_eq!(t.present, vec![false, true]);
        let d1 = 1.0 - 2.0 * 1.5 / (1.5 + 2.0); // class 1: p = (3/4, 3/4) on truth (1, 1)
        assert!((seg_loss(logits, &t, None, SegLoss::Dice).into_scalar::<f32>() - d1).abs() < 1e-6);
    }
}
