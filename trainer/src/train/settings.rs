//! The optimisation-loop settings every task shares (issue 21): one struct, one `validate`,
//! flattened into each task's config so `config.json` keeps its flat keys and the runs written
//! before the fold still `--resume`.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

use super::parallel::{split, Replicas};
use super::precision::{LossScale, Precision};
use super::progress::Progress;
use super::schedule::{Schedule, ScheduleKind, ScheduleSettings};
use crate::device::{DeviceKind, DeviceSpec};
use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[value(name = "adamw")]
    AdamW,
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSettings {
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the head (and of the neck for a detector).
    pub lr: f64,
    /// Backbone lr = lr / lr_mult.
    pub lr_mult: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Per-tensor gradient norm clip (burn's `GradientClipping::Norm`); none, or 0 or below
    /// (as a config.json may carry), clips nothing.
    pub clip_grad: Option<f32>,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f64,
    pub step_epochs: usize,
    pub gamma: f64,
    pub plateau_patience: usize,
    /// Early stop after this many epochs without improvement of the task's monitored metric.
    pub patience: Option<usize>,
    pub seed: u64,
    /// Data-loading threads.
    pub workers: usize,
    pub device: DeviceKind,
    /// Mid-epoch checkpoint interval (an epoch-end checkpoint is always written).
    pub checkpoint_minutes: f64,
    /// Fraction of the train split held out by whole photos (`--holdout`; copies of one photo
    /// stay together, see `fieldkit_core::dataset::photos`): never trained on and never used
    /// to pick a checkpoint, it scores the exported model beside valid — an estimate valid
    /// cannot give when its photos were tuned on or copied into train. 0: none.
    #[serde(default)]
    pub holdout: f64,
    /// Validate, keep and export an exponential moving average of the weights spanning about
    /// this many epochs (`--ema`; what YOLOX, Ultralytics and timm do). 0: the raw weights.
    #[serde(default)]
    pub ema: f64,
    /// The dtype steps compute in (`--precision`; half precision on GPU backends only).
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel devices (`--devices`): each batch of `batch` is split over them; the first
    /// holds the model. Empty: `device` alone.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
}

/// The gradient-norm limit a `clip_grad` setting asks for: none, or 0 or below (`--clip-grad 0`,
/// or a config.json carrying 0), clips nothing. The one place this rule lives: the CLI records
/// it in config.json and the optimizer applies it (burn's `Norm(0.0)` would zero every gradient).
pub fn clip_limit(clip_grad: Option<f32>) -> Option<f32> {
    clip_grad.filter(|v| *v > 0.0)
}

impl LoopSettings {
    /// The optimisation in one line for a run's report.md (every task writes the same).
    /// `loss_scale`: where the f16 run's loss scaling ended.
    pub fn describe_optimiser(&self, stopped_early: bool, loss_scale: Option<&LossScale>) -> String {
        let precision = match (self.precision, loss_scale) {
            (Precision::F32, _) => String::new(),
            (p, None) => format!(" in {} (f32 master weights)", p.name()),
            (p, Some(s)) => format!(" in {} (f32 master weights, {})", p.name(), s.describe()),
        };
        format!(
            "{:?} lr {} (backbone / {}), {:?} schedule, weight decay {}, batch {}, {} epochs, EMA {}, on {}{precision}{}",
            self.optimizer,
            self.lr,
            self.lr_mult,
            self.schedule,
            self.weight_decay,
            self.batch,
            self.epochs,
            self.ema,
            self.describe_devices(),
            if stopped_early { " (stopped early)" } else { "" }
        )
    }

    /// What every task's defaults share: AdamW, no early stop, seed 0, all cores loading,
    /// burn's CPU backend, a checkpoint every 10 min, nothing held out. A task's config sets
    /// its own schedule over these (`LoopSettings { epochs: 14, ..LoopSettings::common() }`).
    pub fn common() -> Self {
        LoopSettings {
            epochs: 10,
            batch: 16,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            lr_mult: 1.0,
            momentum: 0.9,
            weight_decay: 0.0,
            clip_grad: None,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
            step_epochs: 10,
            gamma: 0.1,
            plateau_patience: 2,
            patience: None,
            seed: 0,
            workers: fieldkit_core::parallel::default_workers(),
            device: DeviceKind::Flex,
            checkpoint_minutes: 10.0,
            holdout: 0.0,
            ema: 0.0,
            precision: Precision::F32,
            devices: Vec::new(),
        }
    }

    /// The checks every task's `validate` starts with; messages name the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Config(m));
        if self.epochs == 0 || self.batch < 2 {
            return bad(format!("--epochs {} must be >= 1 and --batch {} >= 2", self.epochs, self.batch));
        }
        if self.ema.is_nan() || self.ema < 0.0 || self.ema.is_infinite() {
            return bad(format!("--ema {} must be 0 (off) or a number of epochs", self.ema));
        }
        if !(0.0..0.5).contains(&self.holdout) {
            return bad(format!("--holdout {} must be in [0, 0.5)", self.holdout));
        }
        if !self.devices.is_empty() {
            let list = self.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
            if self.devices.len() < 2 {
                return bad(format!("--devices {list}: name two or more devices (one device is --device)"));
            }
            if let Some(d) = self.devices.iter().find(|d| d.kind != self.devices[0].kind) {
                return bad(format!(
                    "--devices {list}: {d} is another backend than {}; data-parallel steps run on devices of one backend",
                    self.devices[0]
                ));
            }
            if self.devices[0].kind != self.device {
                return bad(format!("--devices {list} with --device {}: give one of them", self.device.name()));
            }
            if self.batch < 2 * self.devices.len() {
                return bad(format!(
                    "--batch {} over --devices {list}: each device needs at least 2 images of the batch (BatchNorm \
                     normalises each device's share); raise --batch to {} or more",
                    self.batch,
                    2 * self.devices.len()
                ));
            }
        }
        // Written so that a NaN fails both tests.
        if self.lr <= 0.0 || !self.lr.is_finite() || self.lr_mult.is_nan() || self.lr_mult < 1.0 {
            return bad(format!("--lr {} must be > 0 and --lr-mult {} >= 1", self.lr, self.lr_mult));
        }
        Ok(())
    }

    /// The training device, seeded (head initialisation and dropout masks come from its
    /// generator) and named in the log: a GPU backend names its adapter, so a run on Mesa's
    /// software Vulkan says so.
    pub fn open_device(&self, progress: &Progress) -> Result<burn::prelude::Device> {
        let device = self.device.device()?;
        self.precision.check(self.device, &device)?;
        device.seed(self.seed);
        progress.message(&format!("device: {}{}", self.device.describe(&device), self.computing()));
        Ok(device)
    }

    /// The log's note of a half precision: `, computing in f16 (f32 master weights)`.
    fn computing(&self) -> String {
        match self.precision {
            Precision::F32 => String::new(),
            p => format!(", computing in {} (f32 master weights)", p.name()),
        }
    }

    /// The devices a run steps on, opened and seeded, the main one first: `devices`, or
    /// `device` alone. Two entries that are one device are refused; two devices on one
    /// adapter (a GPU's default device and its enumerated entry) run, with a note.
    pub fn open_devices(&self, progress: &Progress) -> Result<Replicas> {
        if self.devices.is_empty() {
            return Ok(Replicas::one(&self.open_device(progress)?));
        }
        let mut opened: Vec<burn::prelude::Device> = Vec::new();
        let mut adapters: Vec<Option<String>> = Vec::new();
        for spec in &self.devices {
            let device = spec.open()?;
            if let Some(i) = opened.iter().position(|d| *d == device) {
                return Err(TrainerError::Config(format!(
                    "--devices: {} and {spec} are the same device; name each device once",
                    self.devices[i]
                )));
            }
            self.precision.check(spec.kind, &device)?;
            device.seed(self.seed);
            adapters.push(crate::device::adapter_name(&device));
            opened.push(device);
        }
        let names: Vec<String> = self.devices.iter().zip(&opened).map(|(spec, d)| spec.describe(d)).collect();
        progress.message(&format!(
            "devices: {}; each batch of {} split {} (gradients summed on {}){}",
            names.join(", "),
            self.batch,
            self.shares(),
            self.devices[0],
            self.computing()
        ));
        let gpus: Vec<&String> = adapters.iter().flatten().collect();
        if let Some(a) = gpus.iter().enumerate().find_map(|(i, a)| gpus[..i].contains(a).then_some(a)) {
            progress.message(&format!(
                "note: --devices names one adapter more than once ({a}): its devices share that GPU's compute; \
                 that tests data parallelism, it does not speed it up"
            ));
        }
        Ok(Replicas::new(opened))
    }

    /// Where the steps ran, for report.md: `wgpu`, or `2 devices (wgpu, wgpu:0; batch split 8 + 8)`.
    pub fn describe_devices(&self) -> String {
        if self.devices.is_empty() {
            return self.device.name().to_string();
        }
        let list: Vec<String> = self.devices.iter().map(|d| d.to_string()).collect();
        format!(
            "{} devices ({}; batch split {}, gradients summed on {})",
            list.len(),
            list.join(", "),
            self.shares(),
            list[0]
        )
    }

    /// Each device's share of a batch: `8 + 8`.
    fn shares(&self) -> String {
        let shares: Vec<String> = split(self.batch, self.devices.len()).iter().map(|r| r.len().to_string()).collect();
        shares.join(" + ")
    }

    /// The optimizer these settings ask for.
    pub fn optimizer(&self) -> ModuleOptimizer {
        optimizer_for(self.optimizer, self.weight_decay, self.momentum, self.clip_grad)
    }

    /// The learning-rate schedule over `steps_per_epoch` batches an epoch, decaying to
    /// `final_frac` of the peak (a task's choice: a head trained from scratch keeps a floor).
    pub fn schedule(&self, steps_per_epoch: usize, final_frac: f64) -> Schedule {
        let settings = ScheduleSettings {
            kind: self.schedule,
            lr: self.lr,
            epochs: self.epochs,
            warmup_epochs: self.warmup_epochs,
            step_epochs: self.step_epochs,
            gamma: self.gamma,
            plateau_patience: self.plateau_patience,
            final_frac,
        };
        Schedule::new(settings, steps_per_epoch)
    }
}

/// Per-tensor norm clipping for `--clip-grad`: a limit of 0 (or below) means none. burn's
/// `Norm(0.0)` would scale every gradient to zero, a run that trains nothing and says nothing
/// (what `train classify --clip-grad 0` did while `train detect` read 0 as "off").
pub fn clipping(clip_grad: Option<f32>) -> Option<GradientClippingConfig> {
    clip_limit(clip_grad).map(GradientClippingConfig::Norm)
}

/// AdamW (decoupled weight decay) or SGD with momentum, with optional per-tensor clipping.
pub fn optimizer_for(kind: OptimizerKind, weight_decay: f64, momentum: f64, clip_grad: Option<f32>) -> ModuleOptimizer {
    let clip = clipping(clip_grad);
    match kind {
        OptimizerKind::AdamW => {
            AdamWConfig::new().with_weight_decay(weight_decay as f32).with_grad_clipping(clip).init()
        }
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(momentum).with_dampening(0.0)))
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
            .with_gradient_clipping(clip)
            .init(),
    }
}

/// Lets a task config read its loop settings as its own fields (`cfg.lr`, as before the
/// fold): `Deref` / `DerefMut` to its `train: LoopSettings`.
#[macro_export]
macro_rules! loop_settings_fields {
    ($config:ty) => {
        impl std::ops::Deref for $config {
            type Target = $crate::train::settings::LoopSettings;
            fn deref(&self) -> &Self::Target {
                &self.train
            }
        }

        impl std::ops::DerefMut for $config {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.train
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use burn::grad_clipping::GradientClippingConfig;

    use super::super::detect::DetectConfig;
    use super::super::ClassifyConfig;
    use super::clipping;

    #[test]
    fn clip_grad_zero_turns_clipping_off() {
        assert!(clipping(Some(0.0)).is_none());
        assert!(clipping(Some(-1.0)).is_none());
        assert!(clipping(None).is_none());
        assert!(matches!(clipping(Some(10.0)), Some(GradientClippingConfig::Norm(v)) if v == 10.0));
    }

    /// The fold must not change config.json: the loop keys stay at the top level (no "train"
    /// object) and a file written before the fold still loads.
    #[test]
    fn config_json_keeps_flat_keys_and_old_files_load() {
        let c = ClassifyConfig::new("data".into());
        let v = serde_json::to_value(&c).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for k in ["epochs", "lr", "clip_grad", "patience", "checkpoint_minutes", "monitor", "augment"] {
            assert!(v.get(k).is_some(), "{k} missing from {keys:?}");
        }
        assert!(v.get("train").is_none(), "{keys:?}");
        let back: ClassifyConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let mut old = serde_json::to_value(DetectConfig::new("d.yaml".into())).unwrap();
        old["epochs"] = serde_json::json!(3);
        old["clip_grad"] = serde_json::Value::Null;
        let d: DetectConfig = serde_json::from_value(old).unwrap();
        assert_eq!((d.epochs, d.clip_grad), (3, None));
    }
}
