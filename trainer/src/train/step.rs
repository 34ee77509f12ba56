//! One optimisation step, shared by the training loop and the LR finder: forward through the
//! frozen prefix without autodiff, the trainable rest with it, weighted / smoothed
//! cross-entropy, and per-layer-group learning rates.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::config::ClassifyConfig;
use super::precision::Amp;
use crate::data::Mixed;
use crate::model::mobilenetv2::{MobileNetV2, FEATURE_LAYERS};

/// What a batch is scored against: its labels, and when `--mix` mixed it, the partners'
/// labels with the mixing weight.
pub struct Targets {
    pub labels: Vec<i64>,
    pub mix: Option<Mixed>,
}

impl From<Vec<i64>> for Targets {
    fn from(labels: Vec<i64>) -> Self {
        Targets { labels, mix: None }
    }
}

impl Targets {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What a batch holds: images `[n, 3, s, s]`, or cached pooled features `[n, dim]`.
pub enum Input {
    Images { pixels: Vec<f32>, size: usize },
    Features { values: Vec<f32>, dim: usize },
}

pub struct Stepper {
    pub device: Device,
    pub ad: Device,
    pub loss: CrossEntropyLoss,
    /// eval-mode snapshot of the model for the frozen layers `features[..trainable_from]`.
    frozen: Option<(usize, MobileNetV2)>,
}

impl Stepper {
    pub fn new(device: &Device, cfg: &ClassifyConfig, weights: Option<Vec<f32>>) -> Self {
        let ad = device.clone().autodiff();
        let smoothing = (cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing);
        let loss = CrossEntropyLossConfig::new().with_weights(weights).with_smoothing(smoothing).init(&ad);
        Stepper { device: device.clone(), ad, loss, frozen: None }
    }

    /// Forgets the frozen snapshot (call when the trainable boundary moves).
    pub fn reset(&mut self) {
        self.frozen = None;
    }

    /// Logits for a batch on the autodiff device.
    /// images: [n, 3, s, s] -> [n, classes]; features: [n, dim] -> [n, classes]
    pub fn forward(&mut self, model: &MobileNetV2, input: Input, n: usize, trainable_from: usize) -> Tensor<2> {
        match input {
            Input::Features { values, dim } => {
                let f = Tensor::<2>::from_data(TensorData::new(values, [n, dim]), &self.device).autodiff();
                model.head(f)
            }
            Input::Images { pixels, size } => {
                let x = Tensor::<4>::from_data(TensorData::new(pixels, [n, 3, size, size]), &self.device);
                if trainable_from == 0 {
                    return model.forward(x.autodiff());
                }
                if self.frozen.as_ref().map(|(t, _)| *t) != Some(trainable_from) {
                    self.frozen = Some((trainable_from, model.valid()));
                }
                let frozen = &self.frozen.as_ref().expect("set above").1;
                // The frozen prefix runs without autodiff: no graph, no stored activations.
                let y = frozen.layers(0, trainable_from, x);
                if trainable_from >= FEATURE_LAYERS {
                    model.head(MobileNetV2::pool(y).autodiff())
                } else {
                    model.head(MobileNetV2::pool(model.layers(trainable_from, FEATURE_LAYERS, y.autodiff())))
                }
            }
        }
    }

    /// Forward, backward and optimiser update; returns the updated model and the batch loss.
    /// The forward runs on `amp`'s copy of the model (itself in f32).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        model: MobileNetV2,
        optim: &mut ModuleOptimizer,
        amp: &mut Amp,
        cfg: &ClassifyConfig,
        input: Input,
        targets: impl Into<Targets>,
        lr: f64,
        trainable_from: usize,
    ) -> (MobileNetV2, f64) {
        let Targets { labels, mix } = targets.into();
        let n = labels.len();
        let logits = self.forward(&amp.lower(model.clone()), input, n, trainable_from);
        let ids = |l: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(l, [n]), &self.ad);
        let loss = match mix {
            None => self.loss.forward(logits, ids(labels)),
            // Mixed images: λ·CE(own labels) + (1 − λ)·CE(partners' labels).
            Some(Mixed { partner, lam }) => {
                let own = self.loss.forward(logits.clone(), ids(labels));
                own.mul_scalar(lam) + self.loss.forward(logits, ids(partner)).mul_scalar(1.0 - lam)
            }
        };
        let loss_value = loss.clone().into_scalar::<f64>();
        let mut grads = amp.backward(loss);
        if cfg.lr_mult == 1.0 || trainable_from >= FEATURE_LAYERS {
            let g = GradientsParams::from_grads(grads, &model);
            return (amp.apply(optim, model, vec![(lr, g)]), loss_value);
        }
        // Head at the full rate (first); each trainable layer at its own factor.
        let mut groups: Vec<(f64, GradientsParams)> = Vec::new();
        if let Some(c) = model.classifier.as_ref() {
            groups.push((lr, GradientsParams::from_module(&mut grads, c)));
        }
        if cfg.lr_ramp {
            for l in trainable_from..FEATURE_LAYERS {
                let g = match l {
                    0 => GradientsParams::from_module(&mut grads, &model.stem),
                    18 => GradientsParams::from_module(&mut grads, &model.last),
                    b => GradientsParams::from_module(&mut grads, &model.blocks[b - 1]),
                };
                groups.push((lr * cfg.layer_lr_factor(l), g));
            }
        } else {
            groups.push((lr / cfg.lr_mult, GradientsParams::from_grads(grads, &model)));
        }
        (amp.apply(optim, model, groups), loss_value)
    }
}

/// Mean cross-entropy of logits against labels (plain: no weights, no smoothing), computed
/// on the host so the valid loss is comparable across runs with different loss settings.
pub fn plain_cross_entropy(logits: &[f32], classes: usize, labels: &[usize]) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.chunks_exact(classes).zip(labels) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
        total += lse - row[y] as f64;
    }
    total / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ce_matches_hand_computation() {
        // logits [0, ln 3] -> p = [0.25, 0.75]
        let l = [0.0f32, 3f32.ln()];
        assert!((plain_cross_entropy(&l, 2, &[1]) - (-(0.75f64).ln())).abs() < 1e-6);
        assert!((plain_cross_entropy(&l, 2, &[0]) - (-(0.25f64).ln())).abs() < 1e-6);
    }
}
