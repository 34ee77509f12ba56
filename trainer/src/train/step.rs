//! One optimisation step, shared by the training loop and the LR finder: forward through the
//! frozen prefix without autodiff, the trainable rest with it, weighted / smoothed
//! cross-entropy, and per-layer-group learning rates.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use std::ops::Range;

use super::config::ClassifyConfig;
use super::groups::take_module;
use super::parallel::{share, Replicas};
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
    /// The devices each step's batch is split over (one, unless `--devices`).
    pub replicas: Replicas,
    /// The loss on each device (its class weights live there).
    losses: Vec<CrossEntropyLoss>,
    /// eval-mode snapshots of the model, one per device, for the frozen layers
    /// `features[..trainable_from]`.
    frozen: Option<(usize, Vec<MobileNetV2>)>,
}

impl Stepper {
    pub fn new(device: &Device, cfg: &ClassifyConfig, weights: Option<Vec<f32>>) -> Self {
        Stepper::on(Replicas::one(device), cfg, weights)
    }

    /// Steps that split each batch over `replicas`' devices.
    pub fn on(replicas: Replicas, cfg: &ClassifyConfig, weights: Option<Vec<f32>>) -> Self {
        let smoothing = (cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing);
        let losses = replicas
            .devices()
            .iter()
            .map(|d| {
                CrossEntropyLossConfig::new()
                    .with_weights(weights.clone())
                    .with_smoothing(smoothing)
                    .init(&d.clone().autodiff())
            })
            .collect();
        Stepper { replicas, losses, frozen: None }
    }

    /// Forgets the frozen snapshots (call when the trainable boundary moves).
    pub fn reset(&mut self) {
        self.frozen = None;
    }

    /// Takes the eval-mode snapshots of the frozen prefix when the boundary moved.
    fn freeze(&mut self, model: &MobileNetV2, input: &Input, trainable_from: usize) {
        let images = matches!(input, Input::Images { .. });
        if !images || trainable_from == 0 || self.frozen.as_ref().map(|(t, _)| *t) == Some(trainable_from) {
            return;
        }
        self.frozen = Some((trainable_from, self.replicas.snapshots(model)));
    }

    /// Logits of `rows` of a batch on device `k`'s autodiff device, by `model` (on that
    /// device). images: [n, 3, s, s] -> [rows, classes]; features: [n, dim] -> [rows, classes]
    fn forward_on(
        &self,
        k: usize,
        model: &MobileNetV2,
        input: &Input,
        rows: Range<usize>,
        trainable_from: usize,
    ) -> Tensor<2> {
        let device = &self.replicas.devices()[k];
        let n = rows.len();
        match input {
            Input::Features { values, dim } => {
                let v = share(values, &rows, *dim);
                model.head(Tensor::<2>::from_data(TensorData::new(v, [n, *dim]), device).autodiff())
            }
            Input::Images { pixels, size } => {
                let v = share(pixels, &rows, 3 * size * size);
                let x = Tensor::<4>::from_data(TensorData::new(v, [n, 3, *size, *size]), device);
                if trainable_from == 0 {
                    return model.forward(x.autodiff());
                }
                let frozen = &self.frozen.as_ref().expect("freeze() ran first").1[k];
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
    /// The forward runs on `amp`'s copy of the model (itself in f32), split over the
    /// stepper's devices.
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
        self.freeze(&model, &input, trainable_from);
        let this = &*self;
        let lower = &*amp;
        let (mut grads, loss_value) = self.replicas.backward(lower, &model, n, |k, replica, rows| {
            let logits = this.forward_on(k, &lower.lower(replica), &input, rows.clone(), trainable_from);
            let ad = this.replicas.devices()[k].clone().autodiff();
            let ids = |l: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), &ad);
            let loss = &this.losses[k];
            match &mix {
                None => loss.forward(logits, ids(&labels[rows])),
                // Mixed images: λ·CE(own labels) + (1 − λ)·CE(partners' labels).
                Some(Mixed { partner, lam }) => {
                    let own = loss.forward(logits.clone(), ids(&labels[rows.clone()]));
                    own.mul_scalar(*lam) + loss.forward(logits, ids(&partner[rows])).mul_scalar(1.0 - lam)
                }
            }
        });
        if cfg.lr_mult == 1.0 || trainable_from >= FEATURE_LAYERS {
            return (amp.apply(optim, model, vec![(lr, grads)]), loss_value);
        }
        // Head at the full rate (first); each trainable layer at its own factor.
        let mut groups: Vec<(f64, GradientsParams)> = Vec::new();
        if let Some(c) = model.classifier.as_ref() {
            groups.push((lr, take_module(&mut grads, c)));
        }
        if cfg.lr_ramp {
            for l in trainable_from..FEATURE_LAYERS {
                let g = match l {
                    0 => take_module(&mut grads, &model.stem),
                    18 => take_module(&mut grads, &model.last),
                    b => take_module(&mut grads, &model.blocks[b - 1]),
                };
                groups.push((lr * cfg.layer_lr_factor(l), g));
            }
        } else {
            groups.push((lr / cfg.lr_mult, grads));
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
