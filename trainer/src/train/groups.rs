//! Discriminative learning rates for a network built on the pretrained backbone: the new
//! layers (neck, heads) at the schedule's rate, the backbone `lr_mult` times slower. Shared by
//! the detector and the segmenter; the classifier's per-layer ramp lives in `step`.

use burn::module::{ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::precision::Amp;
use crate::model::MobileNetV2;

/// One optimiser step: `backbone(model)`'s parameters at `lr / lr_mult`, the rest at `lr`;
/// one group when `lr_mult` is 1. `amp` unscales and checks the gradients first.
pub fn step_backbone_slower<M: Module>(
    optim: &mut ModuleOptimizer,
    amp: &mut Amp,
    model: M,
    mut grads: GradientsParams,
    backbone: impl Fn(&M) -> &MobileNetV2,
    lr: f64,
    lr_mult: f64,
) -> M {
    if lr_mult == 1.0 {
        return amp.apply(optim, model, vec![(lr, grads)]);
    }
    let slow = take_module(&mut grads, backbone(&model));
    amp.apply(optim, model, vec![(lr, grads), (lr / lr_mult, slow)])
}

/// Moves the gradients of `module`'s parameters out of `grads` into a group of their own
/// (burn's `GradientsParams::from_module` does this from autodiff `Gradients`; these come
/// summed over devices, see `parallel`).
pub fn take_module<M: Module>(grads: &mut GradientsParams, module: &M) -> GradientsParams {
    struct Take<'a> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(param.id) {
                self.to.register::<D>(param.id, g);
            }
        }
    }
    let mut take = Take { from: grads, to: GradientsParams::new() };
    module.visit(&mut take);
    take.to
}
