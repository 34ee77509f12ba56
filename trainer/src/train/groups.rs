//! Discriminative learning rates for a network built on the pretrained backbone: the new
//! layers (neck, heads) at the schedule's rate, the backbone `lr_mult` times slower. Shared by
//! the detector and the segmenter; the classifier's per-layer ramp lives in `step`.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Gradients;

use super::precision::Amp;
use crate::model::MobileNetV2;

/// One optimiser step: `backbone(model)`'s parameters at `lr / lr_mult`, the rest at `lr`;
/// one group when `lr_mult` is 1. `amp` unscales and checks the gradients first.
pub fn step_backbone_slower<M: Module>(
    optim: &mut ModuleOptimizer,
    amp: &mut Amp,
    model: M,
    mut grads: Gradients,
    backbone: impl Fn(&M) -> &MobileNetV2,
    lr: f64,
    lr_mult: f64,
) -> M {
    if lr_mult == 1.0 {
        let g = GradientsParams::from_grads(grads, &model);
        return amp.apply(optim, model, vec![(lr, g)]);
    }
    let slow = GradientsParams::from_module(&mut grads, backbone(&model));
    let rest = GradientsParams::from_grads(grads, &model);
    amp.apply(optim, model, vec![(lr, rest), (lr / lr_mult, slow)])
}
