//! Every setting of a detection run, serialised to `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::loss::BoxLoss;
use crate::data::boxes::DetAugment;
use crate::error::{Result, TrainerError};
use crate::model::mobilenetv2::FEATURE_LAYERS;
use crate::model::yolox::TAPS;
use crate::train::settings::LoopSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectConfig {
    /// Ultralytics `data.yaml`.
    pub data: PathBuf,
    pub train_split: String,
    pub valid_split: String,
    /// ImageNet backbone weights (torchvision-named safetensors); none trains from scratch.
    pub weights: Option<PathBuf>,
    pub width: f64,
    pub neck_width: usize,
    pub head_depth: usize,
    /// Square input (multiple of 32).
    pub size: u32,
    /// Backbone layers `features[..unfreeze_from]` stay frozen (0 = everything trains).
    pub unfreeze_from: usize,
    /// The last epochs run without mosaic and with the L1 box loss (YOLOX `no_aug_epochs`).
    pub close_mosaic: usize,
    pub box_loss: BoxLoss,
    pub augment: DetAugment,
    /// The loop settings every task shares, flattened: config.json keeps flat keys.
    #[serde(flatten)]
    pub train: LoopSettings,
}

impl DetectConfig {
    /// The defaults `fieldkit train detect` uses without flags: the recipe measured on
    /// sesame-weed-det on a 2-core CPU. 14 epochs with the weights' moving average (EMA over
    /// about an epoch, validated and exported): valid mAP50 0.813, mAP50-95 0.462, and on 242
    /// train photos held out (`--holdout 0.15`) 0.782 / 0.426, where 10 epochs gave 0.742 /
    /// 0.368 with EMA and 0.723 / 0.363 without; 70 min on a shared CPU. Training the backbone
    /// from features.4 (`--unfreeze-from 4 --epochs 30 --close-mosaic 3`) costs about 5x the
    /// time and belongs on a GPU.
    pub fn new(data: PathBuf) -> Self {
        DetectConfig {
            data,
            train_split: "train".into(),
            valid_split: "val".into(),
            weights: None,
            width: 1.0,
            neck_width: 64,
            head_depth: 2,
            size: 320,
            unfreeze_from: 14,
            close_mosaic: 2,
            box_loss: BoxLoss::Iou,
            augment: DetAugment::standard(),
            train: LoopSettings {
                epochs: 14,
                lr: 2e-3,
                lr_mult: 5.0,
                weight_decay: 5e-4,
                clip_grad: Some(10.0),
                warmup_epochs: 1.0,
                ema: 1.0,
                ..LoopSettings::common()
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Config(m));
        if self.size < 64 || !self.size.is_multiple_of(32) {
            return bad(format!(
                "--size {} must be a multiple of 32 (>= 64): the head's coarsest stride is 32",
                self.size
            ));
        }
        if ![0.35, 0.5, 0.75, 1.0].contains(&self.width) {
            return bad(format!("--width {} is not one of 0.35, 0.5, 0.75, 1.0", self.width));
        }
        if self.neck_width < 8 || self.head_depth > 4 {
            return bad(format!(
                "--neck-width {} must be >= 8 and --head-depth {} <= 4",
                self.neck_width, self.head_depth
            ));
        }
        self.train.validate()?;
        if self.unfreeze_from > TAPS[2] {
            return bad(format!(
                "--unfreeze-from {} is past the detector's last backbone layer (0..={}; features.18 is not used)",
                self.unfreeze_from, TAPS[2]
            ));
        }
        if self.weights.is_some() && self.width != 1.0 {
            return bad(format!(
                "pretrained weights are width 1.0; --width {} trains from scratch (drop --weights)",
                self.width
            ));
        }
        if self.weights.is_none() && self.unfreeze_from > 0 {
            return bad(format!(
                "--unfreeze-from {} freezes random layers without --weights: give --weights or --unfreeze-from 0",
                self.unfreeze_from
            ));
        }
        self.augment.validate()
    }

    /// The untrained detector: MobileNetV2 at `width` with the PAN neck and YOLOX heads.
    pub fn init_model(&self, classes: usize, device: &burn::prelude::Device) -> crate::model::Detector {
        crate::model::DetectorConfig::new(classes)
            .with_width(self.width)
            .with_neck_width(self.neck_width)
            .with_head_depth(self.head_depth)
            .init(device)
    }

    /// The card's preprocessing, used for validation too: a top-left letterbox (YOLOX's) padded
    /// with 114, RGB, ImageNet normalisation (the backbone's pretraining).
    pub fn preprocess(&self) -> fieldkit_core::Preprocess {
        use fieldkit_core::preprocess::{Preprocess, Resize};
        Preprocess {
            resize: Resize::Letterbox {
                width: self.size,
                height: self.size,
                pad: crate::data::boxes::PAD,
                center: false,
            },
            ..Preprocess::imagenet_stretch(self.size)
        }
    }

    /// Whether `epoch` (0-based) is one of the last, mosaic-free, L1 epochs.
    pub fn closing(&self, epoch: usize) -> bool {
        epoch + self.close_mosaic >= self.epochs
    }

    /// First trainable backbone layer (FEATURE_LAYERS never: the neck and head always train).
    pub fn trainable_from(&self) -> usize {
        self.unfreeze_from.min(FEATURE_LAYERS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ScheduleKind;

    #[test]
    fn defaults_are_the_measured_cpu_recipe() {
        // README quotes sesame-weed-det figures for exactly this recipe: change them together.
        let c = DetectConfig::new("d.yaml".into());
        assert_eq!((c.size, c.unfreeze_from, c.epochs, c.close_mosaic, c.batch), (320, 14, 14, 2, 16));
        assert_eq!(c.ema, 1.0);
        assert_eq!((c.lr, c.lr_mult, c.schedule, c.box_loss), (2e-3, 5.0, ScheduleKind::Cosine, BoxLoss::Iou));
        assert_eq!(c.augment, DetAugment::standard());
    }

    #[test]
    fn validation_names_the_flag_and_closing_counts_from_the_end() {
        let mut c = DetectConfig::new("d.yaml".into());
        c.weights = Some("w".into());
        assert!(c.validate().is_ok());
        c.size = 300;
        assert!(c.validate().unwrap_err().to_string().contains("--size 300"));
        let mut c = DetectConfig::new("d.yaml".into());
        assert!(c.validate().unwrap_err().to_string().contains("--unfreeze-from"));
        c.unfreeze_from = 0;
        assert!(c.validate().is_ok());
        c.epochs = 10;
        c.close_mosaic = 3;
        assert_eq!((0..10).filter(|&e| c.closing(e)).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(c.preprocess().output_size(), Some((320, 320)));
    }
}

crate::loop_settings_fields!(DetectConfig);
