//! Every setting of a classification run, serialised to `config.json` so a run can be
//! reproduced or resumed exactly.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::schedule::ScheduleKind;
pub use super::settings::{LoopSettings, OptimizerKind};
use crate::data::Augment;
pub use crate::data::ClassWeights;
use crate::error::{Result, TrainerError};
pub use crate::export::Tta;
use crate::model::mobilenetv2::FEATURE_LAYERS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Linear probe: backbone features computed once and cached; only the head trains.
    Head,
    /// Layers `features[unfreeze_from..]` and the head train; earlier layers stay frozen.
    Partial,
    /// Everything trains.
    Full,
    /// fastai `freeze_to`: head first, then one torchvision stage more every
    /// `gradual_epochs`, down to `unfreeze_from`.
    Gradual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    Top1,
    #[value(name = "macro_f1", alias = "macro-f1")]
    MacroF1,
    #[value(name = "valid_loss", alias = "valid-loss")]
    ValidLoss,
}

impl Monitor {
    pub fn higher_is_better(self) -> bool {
        self != Monitor::ValidLoss
    }

    pub fn name(self) -> &'static str {
        match self {
            Monitor::Top1 => "top1",
            Monitor::MacroF1 => "macro_f1",
            Monitor::ValidLoss => "valid_loss",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyConfig {
    /// ImageFolder root holding `train_split/` and `valid_split/`.
    pub data: PathBuf,
    pub train_split: String,
    pub valid_split: String,
    /// ImageNet backbone weights (torchvision-named safetensors); none trains from scratch.
    pub weights: Option<PathBuf>,
    pub width: f64,
    pub dropout: f64,
    /// Square model input in pixels (images are stretched to it).
    pub size: u32,
    pub strategy: Strategy,
    /// First trainable layer (torchvision `features.N`, 0..=19) for partial; the floor for gradual.
    pub unfreeze_from: usize,
    pub gradual_epochs: usize,
    pub lr_ramp: bool,
    pub monitor: Monitor,
    pub class_weights: ClassWeights,
    pub label_smoothing: f32,
    pub augment: Augment,
    /// Test-time views the exported model averages (`--tta`). Runs written before it
    /// existed exported one view.
    #[serde(default)]
    pub tta: Tta,
    /// The loop settings every task shares, flattened: config.json keeps flat keys.
    #[serde(flatten)]
    pub train: LoopSettings,
}

impl ClassifyConfig {
    /// The defaults `fieldkit train classify` uses without flags.
    pub fn new(data: PathBuf) -> Self {
        ClassifyConfig {
            data,
            train_split: "train".into(),
            valid_split: "valid".into(),
            weights: None,
            width: 1.0,
            dropout: 0.2,
            size: 128,
            strategy: Strategy::Partial,
            unfreeze_from: 11,
            gradual_epochs: 1,
            lr_ramp: false,
            monitor: Monitor::MacroF1,
            class_weights: ClassWeights::Sqrt,
            label_smoothing: 0.1,
            augment: Augment::standard(),
            // One view unless asked: `fieldkit train classify` matches the augmentation.
            tta: Tta::None,
            train: LoopSettings {
                epochs: 12,
                batch: 32,
                lr_mult: 10.0,
                weight_decay: 1e-2,
                schedule: ScheduleKind::OneCycle,
                warmup_epochs: 0.5,
                step_epochs: 3,
                plateau_patience: 1,
                ..LoopSettings::common()
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Config(m));
        if self.size < 32 || !self.size.is_multiple_of(32) {
            return bad(format!(
                "--size {} must be a multiple of 32 (>= 32): MobileNetV2 downsamples by 32",
                self.size
            ));
        }
        if ![0.35, 0.5, 0.75, 1.0].contains(&self.width) {
            return bad(format!("--width {} is not one of 0.35, 0.5, 0.75, 1.0", self.width));
        }
        self.train.validate()?;
        if self.unfreeze_from > FEATURE_LAYERS {
            return bad(format!(
                "--unfreeze-from {} is past the last layer (0..={FEATURE_LAYERS})",
                self.unfreeze_from
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) || !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "--label-smoothing {} and --dropout {} must be in [0, 1)",
                self.label_smoothing, self.dropout
            ));
        }
        if self.weights.is_some() && self.width != 1.0 {
            return bad(format!(
                "pretrained weights are width 1.0; --width {} trains from scratch (drop --weights)",
                self.width
            ));
        }
        if self.strategy == Strategy::Head && (self.augment.mix.is_some() || self.augment.corrupt > 0.0) {
            return bad("--strategy head trains on features computed once from unaugmented images: \
                        --mix and --corrupt would do nothing there (pick partial, full or gradual)"
                .into());
        }
        self.augment.validate()
    }

    /// The untrained model this run trains: MobileNetV2 at `width` with a `classes`-way head.
    pub fn init_model(&self, classes: usize, device: &burn::prelude::Device) -> crate::model::MobileNetV2 {
        crate::model::MobileNetV2Config::new(classes).with_width(self.width).with_dropout(self.dropout).init(device)
    }

    /// The input preprocessing of training, validation and the exported card: a stretch to
    /// `size` (no centre crop: small tiles would lose the plant) and ImageNet normalisation.
    pub fn preprocess(&self) -> fieldkit_core::Preprocess {
        fieldkit_core::Preprocess::imagenet_stretch(self.size)
    }

    /// First trainable layer at `epoch` (0-based); FEATURE_LAYERS means the head alone.
    pub fn trainable_from(&self, epoch: usize) -> usize {
        use crate::model::mobilenetv2::STAGE_STARTS;
        match self.strategy {
            Strategy::Head => FEATURE_LAYERS,
            Strategy::Full => 0,
            Strategy::Partial => self.unfreeze_from,
            Strategy::Gradual => {
                let thawed = epoch / self.gradual_epochs.max(1);
                if thawed == 0 {
                    FEATURE_LAYERS
                } else {
                    STAGE_STARTS.get(thawed - 1).copied().unwrap_or(0).max(self.unfreeze_from)
                }
            }
        }
    }

    /// Learning rate multiplier of `features.layer` (the head is layer FEATURE_LAYERS, 1.0).
    pub fn layer_lr_factor(&self, layer: usize) -> f64 {
        if layer >= FEATURE_LAYERS || self.lr_mult == 1.0 {
            return 1.0;
        }
        if self.lr_ramp {
            // Geometric from 1/mult at the stem to ~1 at the last layer (fastai `slice`).
            let t = layer as f64 / (FEATURE_LAYERS - 1) as f64;
            self.lr_mult.powf(-(1.0 - t))
        } else {
            1.0 / self.lr_mult
        }
    }
}

/// One line saying which layers train and at what rates, for the report and the card.
pub fn describe_strategy(cfg: &ClassifyConfig) -> String {
    match cfg.strategy {
        Strategy::Head => "head (linear probe on cached features)".into(),
        Strategy::Full => "full fine-tune".into(),
        Strategy::Partial => format!("partial: features.{}.. and head train", cfg.unfreeze_from),
        Strategy::Gradual => format!(
            "gradual: head, then one stage more every {} epoch(s) down to features.{}",
            cfg.gradual_epochs, cfg.unfreeze_from
        ),
    }
    .replace("features.19..", "head only")
        + if cfg.lr_mult > 1.0 && cfg.strategy != Strategy::Head {
            if cfg.lr_ramp {
                ", backbone lr ramped geometrically"
            } else {
                ", backbone lr / lr_mult"
            }
        } else {
            ""
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradual_thaws_one_stage_per_period() {
        let mut c = ClassifyConfig::new("d".into());
        c.strategy = Strategy::Gradual;
        c.unfreeze_from = 4;
        c.gradual_epochs = 2;
        let seq: Vec<usize> = (0..12).map(|e| c.trainable_from(e)).collect();
        assert_eq!(seq, vec![19, 19, 17, 17, 14, 14, 11, 11, 7, 7, 4, 4]);
    }

    #[test]
    fn lr_factors() {
        let mut c = ClassifyConfig::new("d".into());
        c.lr_mult = 100.0;
        assert_eq!(c.layer_lr_factor(19), 1.0);
        assert_eq!(c.layer_lr_factor(3), 0.01);
        c.lr_ramp = true;
        assert!((c.layer_lr_factor(0) - 0.01).abs() < 1e-12);
        assert!((c.layer_lr_factor(18) - 1.0).abs() < 1e-12);
        assert!(c.layer_lr_factor(9) > 0.01 && c.layer_lr_factor(9) < 1.0);
    }

    #[test]
    fn validation_names_the_flag() {
        let mut c = ClassifyConfig::new("d".into());
        c.size = 100;
        assert!(c.validate().unwrap_err().to_string().contains("--size 100"));
        let mut c = ClassifyConfig::new("d".into());
        c.width = 0.6;
        assert!(c.validate().unwrap_err().to_string().contains("--width"));
    }
}

crate::loop_settings_fields!(ClassifyConfig);
