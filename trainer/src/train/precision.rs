//! Mixed-precision training (`--precision f16|bf16`, issue 25), written here because burn 0.22
//! has none of its own. What PyTorch's autocast + GradScaler do, in the same order:
//!
//! - the weights the optimizer holds stay f32 (the master copy); each step computes on a
//!   half-precision copy of them ([`crate::model::precision::lowered`]), BatchNorm in f32;
//! - f16 (5 exponent bits) loses small gradients to underflow, so the loss is multiplied by a
//!   scale before backward and the f32 gradients are divided by it before the update
//!   ([`LossScale`]: starts at 2^16, halves and skips the step when a gradient overflowed,
//!   doubles after 2,000 clean steps); gradient clipping sees the unscaled gradients;
//! - bf16 has f32's exponent range: no scaling.
//!
//! Only the GPU backends compute in half precision; `--precision` on flex or ndarray, or a
//! dtype the GPU lacks (lavapipe has f16, not bf16), is refused with the reason.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

use crate::device::DeviceKind;
use crate::error::{Result, TrainerError};
use crate::model::precision::lowered;

/// The dtype a step computes in (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32 (every backend).
    #[default]
    F32,
    /// f16 compute with f32 master weights and dynamic loss scaling (GPU backends).
    F16,
    /// bf16 compute with f32 master weights (GPU backends whose driver has bf16).
    Bf16,
}

impl Precision {
    /// The flag value, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// The half dtype steps compute in; `None` for f32.
    pub fn dtype(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(FloatDType::F16),
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// Refuses a precision `device` (opened for `kind`) cannot train in, saying why.
    pub fn check(self, kind: DeviceKind, device: &Device) -> Result<()> {
        let Some(dtype) = self.dtype() else { return Ok(()) };
        if !kind.is_gpu() {
            return Err(TrainerError::Config(format!(
                "--precision {}: mixed precision runs on a GPU backend (--device wgpu, vulkan or cuda); \
                 --device {} trains in f32 (--precision f32)",
                self.name(),
                kind.name()
            )));
        }
        if !device.supports_dtype(dtype) {
            return Err(TrainerError::Config(format!(
                "--precision {}: {} cannot compute in {} (its driver lacks the shader type); use {}",
                self.name(),
                kind.describe(device),
                self.name(),
                if self == Precision::Bf16 && device.supports_dtype(FloatDType::F16) {
                    "--precision f16 or f32"
                } else {
                    "--precision f32"
                }
            )));
        }
        Ok(())
    }
}

/// Dynamic loss scaling, PyTorch's `GradScaler` defaults. Kept in checkpoints so `--resume`
/// continues with the scale the run had found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub good_steps: u32,
    /// Steps skipped because a gradient overflowed, over the run.
    pub skipped: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { scale: Self::INITIAL, good_steps: 0, skipped: 0 }
    }
}

impl LossScale {
    pub const INITIAL: f64 = 65536.0;
    /// Clean steps before the scale doubles.
    pub const GROWTH_INTERVAL: u32 = 2000;
    /// The scale never falls below this (PyTorch has no floor; a floor of 1 keeps a run that
    /// overflows at every scale failing loudly on its loss instead of training on nothing).
    pub const MIN: f64 = 1.0;

    /// Takes a step's verdict (were all gradients finite?) and returns whether to apply it:
    /// an overflow halves the scale and skips the step; 2,000 clean steps double it.
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale = (self.scale / 2.0).max(Self::MIN);
            self.good_steps = 0;
            self.skipped += 1;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }

    /// For report.md: `loss scale 32768, 3 steps skipped`.
    pub fn describe(&self) -> String {
        format!("loss scale {}, {} steps skipped (gradient overflow)", self.scale, self.skipped)
    }
}

/// One run's precision: lowers the model a step computes on, scales the loss, and unscales,
/// checks and applies the gradients.
pub struct Amp {
    precision: Precision,
    /// f16 only.
    scale: Option<LossScale>,
}

impl Amp {
    /// `resumed`: the scale a checkpoint carried (a run resumed in f16).
    pub fn new(precision: Precision, resumed: Option<LossScale>) -> Self {
        let scale = (precision == Precision::F16).then(|| resumed.unwrap_or_default());
        Amp { precision, scale }
    }

    /// Everything in f32: what the LR finder and the tests of f32 code use.
    pub fn f32() -> Self {
        Amp::new(Precision::F32, None)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The loss-scaling state, for checkpoints and the report (f16 only).
    pub fn loss_scale(&self) -> Option<LossScale> {
        self.scale
    }

    /// The copy of `model` a step computes on: itself in f32.
    pub fn lower<M: Module>(&self, model: M) -> M {
        match self.precision.dtype() {
            Some(dtype) => lowered(model, dtype),
            None => model,
        }
    }

    /// Backward from the (f32) loss, multiplied by the loss scale first under f16.
    pub fn backward(&self, loss: Tensor<1>) -> Gradients {
        match self.scale {
            Some(s) => loss.mul_scalar(s.scale).backward(),
            None => loss.backward(),
        }
    }

    /// Applies the step's gradients, each group at its learning rate, in order. Under f16 they
    /// are first divided by the loss scale and checked: if any is infinite or NaN the model
    /// is returned unchanged (the step skipped) and the scale lowered.
    pub fn apply<M: Module>(
        &mut self,
        optim: &mut ModuleOptimizer,
        mut model: M,
        mut groups: Vec<(f64, GradientsParams)>,
    ) -> M {
        if let Some(scale) = &mut self.scale {
            let mut unscale = Unscale { groups: &mut groups, factor: 1.0 / scale.scale, total: None };
            model.visit(&mut unscale);
            let finite = unscale.total.is_none_or(|t| t.into_scalar::<f64>().is_finite());
            if !scale.update(finite) {
                return model;
            }
        }
        for (lr, grads) in groups {
            if !grads.is_empty() {
                model = optim.step(lr, model, grads);
            }
        }
        model
    }
}

/// Divides every gradient of the groups by the loss scale and sums them all into one scalar
/// (infinite or NaN when any element is), read back once per step.
struct Unscale<'a> {
    groups: &'a mut [(f64, GradientsParams)],
    factor: f64,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for Unscale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        for (_, grads) in self.groups.iter_mut() {
            if let Some(g) = grads.remove::<D>(param.id) {
                let g = g.mul_scalar(self.factor);
                let sum = g.clone().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sum,
                    None => sum,
                });
                grads.register(param.id, g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LossScale, Precision};
    use crate::DeviceKind;

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = LossScale::default();
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        // An overflow part-way resets the count of clean steps.
        for _ in 0..10 {
            s.update(true);
        }
        s.update(false);
        assert_eq!((s.scale, s.good_steps, s.skipped), (32768.0, 0, 2));
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, LossScale::MIN);
    }

    #[test]
    fn half_precision_on_the_cpu_backend_is_refused_with_the_reason() {
        let flex = DeviceKind::Flex.device().unwrap();
        assert!(Precision::F32.check(DeviceKind::Flex, &flex).is_ok());
        for p in [Precision::F16, Precision::Bf16] {
            let e = p.check(DeviceKind::Flex, &flex).unwrap_err().to_string();
            assert!(e.contains(&format!("--precision {}", p.name())) && e.contains("GPU backend"), "{e}");
        }
    }
}
