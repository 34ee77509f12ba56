//! An exponential moving average of the weights (`--ema EPOCHS`), the model that YOLOX,
//! Ultralytics and timm validate, keep and export: after every optimiser step
//! `ema = d·ema + (1 − d)·model`, over every float parameter and BatchNorm running statistic
//! (YOLOX's `ModelEMA` averages the buffers too). `d` grows as `(1 + t) / (10 + t)` up to
//! `1 − 1 / (EPOCHS · steps per epoch)`, so the average follows the model closely at first and
//! spans about EPOCHS epochs of steps later.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

/// The averaged model and how many updates it has seen (kept in checkpoints for `--resume`).
#[derive(Clone)]
pub struct Ema<M> {
    pub model: M,
    pub updates: u64,
    /// The decay `d` tends to.
    decay: f64,
}

impl<M: Module + Clone> Ema<M> {
    /// An average starting at `model`, spanning about `epochs` epochs of `steps_per_epoch`.
    pub fn new(model: &M, epochs: f64, steps_per_epoch: usize) -> Self {
        let span = (epochs * steps_per_epoch as f64).max(1.0);
        Ema { model: model.clone(), updates: 0, decay: 1.0 - 1.0 / span }
    }

    /// The decay the next update uses.
    pub fn next_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves the average towards `model` (same structure: parameters are matched by id).
    pub fn update(&mut self, model: &M) {
        let d = self.next_decay();
        let mut current = Current::default();
        model.visit(&mut current);
        self.model = self.model.clone().map(&mut Blend { decay: d, current: current.0 });
        self.updates += 1;
    }
}

/// Every float tensor of a model (parameters and running statistics), flattened, by id.
#[derive(Default)]
struct Current(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Current {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(param.id, param.val().detach().flatten::<1>(0, D - 1));
    }
}

/// `ema = d·ema + (1 − d)·current`, tensor by tensor.
struct Blend {
    decay: f64,
    current: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.remove(&param.id) else {
            return param;
        };
        let d = self.decay;
        param.map(|ema| {
            let dims = ema.dims();
            ema.detach().mul_scalar(d).add(current.reshape(dims).mul_scalar(1.0 - d)).detach()
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    fn weights(m: &Linear) -> Vec<f32> {
        m.weight.val().into_data().try_to_vec::<f32>().unwrap()
    }

    /// The average equals the one computed by hand from the decays it reports.
    #[test]
    fn average_matches_a_hand_computed_one() {
        let device = Device::flex();
        let base = LinearConfig::new(3, 2).init(&device);
        let mut ema = Ema::new(&base, 1.0, 4);
        let mut hand: Vec<f64> = weights(&base).iter().map(|&v| v as f64).collect();
        let mut model = base;
        for step in 1..=6 {
            // A "training step": every weight moves.
            model.weight = model.weight.clone().map(|w| w.add_scalar(step as f32 * 0.5));
            let d = ema.next_decay();
            assert!(d <= 0.75 + 1e-12, "capped at 1 - 1/(1 epoch x 4 steps): {d}");
            ema.update(&model);
            for (h, m) in hand.iter_mut().zip(weights(&model)) {
                *h = d * *h + (1.0 - d) * m as f64;
            }
            for (e, h) in weights(&ema.model).iter().zip(&hand) {
                assert!((*e as f64 - h).abs() < 1e-5, "step {step}: {e} vs {h}");
            }
        }
        assert_eq!(ema.updates, 6);
        // The average lags the model: it is not a copy.
        assert!(weights(&ema.model).iter().zip(weights(&model)).all(|(e, m)| e < &m));
    }
}
