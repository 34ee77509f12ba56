//! Every setting of a segmentation run, serialised to `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::loss::SegLoss;
use crate::data::{Augment, ClassWeights};
use crate::error::{Result, TrainerError};
use crate::model::lraspp::{HIGH_TAP, STRIDE};
use crate::train::settings::LoopSettings;

/// `--decoder`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SegDecoder {
    /// torchvision's LR-ASPP: stride-8 and stride-32 maps, logits at stride 8. (serde's
    /// default: what configs written before the choice existed trained.)
    #[default]
    Lraspp,
    /// LR-ASPP plus a DeepLabV3+-style stride-4 decoder (thin structures: grass blades).
    LrasppS4,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentConfig {
    /// Segmentation data ([`fieldkit_core::dataset::masks::MaskDataset`]): a mask folder, a
    /// YOLO-seg data.yaml or a COCO folder.
    pub data: PathBuf,
    pub train_split: String,
    pub valid_split: String,
    /// ImageNet backbone weights (torchvision-named safetensors); none trains from scratch.
    pub weights: Option<PathBuf>,
    /// Network input `[width, height]`, both multiples of 32; images are stretched to it.
    pub size: [u32; 2],
    /// Channels of LR-ASPP's deep branch.
    pub inter: usize,
    /// LR-ASPP alone, or with the stride-4 decoder (the default: +1.7 pp valid mIoU and +2.4 pp
    /// weed IoU on peanut-seg, for ~15 % more time an epoch and 1.7x tract's latency). Configs
    /// written before the choice: LR-ASPP.
    #[serde(default)]
    pub decoder: SegDecoder,
    /// Backbone layers `features[..unfreeze_from]` stay frozen (0 = everything trains).
    pub unfreeze_from: usize,
    pub loss: SegLoss,
    /// Cross-entropy class weights from the train split's pixel counts.
    pub class_weights: ClassWeights,
    pub augment: Augment,
    #[serde(flatten)]
    pub train: LoopSettings,
}

impl SegmentConfig {
    /// The defaults `fieldkit train segment` uses without flags: 384x288 keeps peanut-seg's
    /// 4:3, CE + Dice against its 4 % weed pixels, top-down augmentation with half turns, the
    /// stride-4 decoder (valid mIoU 0.794, weed IoU 0.551 in 20 epochs; README "Segmentation").
    pub fn new(data: PathBuf) -> Self {
        SegmentConfig {
            data,
            train_split: "train".into(),
            valid_split: "valid".into(),
            weights: None,
            size: [384, 288],
            inter: 128,
            decoder: SegDecoder::LrasppS4,
            unfreeze_from: 0,
            loss: SegLoss::CeDice,
            class_weights: ClassWeights::Sqrt,
            augment: Augment { crop_scale: [0.35, 1.0], ..Augment::topdown() },
            train: LoopSettings {
                epochs: 20,
                batch: 8,
                lr_mult: 5.0,
                weight_decay: 1e-4,
                clip_grad: Some(10.0),
                warmup_epochs: 1.0,
                ema: 1.0,
                ..LoopSettings::common()
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Config(m));
        let s = STRIDE as u32;
        let [w, h] = self.size;
        if w < 64 || h < 64 || !w.is_multiple_of(s) || !h.is_multiple_of(s) {
            return bad(format!(
                "--size {w}x{h}: both sides must be multiples of {s} (>= 64), the backbone's deepest stride"
            ));
        }
        if self.inter < 8 {
            return bad(format!("--inter {} must be >= 8", self.inter));
        }
        if self.unfreeze_from >= HIGH_TAP {
            return bad(format!("--unfreeze-from {} is past the backbone (0..{})", self.unfreeze_from, HIGH_TAP - 1));
        }
        if self.weights.is_none() && self.unfreeze_from > 0 {
            return bad(format!(
                "--unfreeze-from {} freezes random layers without --weights: give --weights or --unfreeze-from 0",
                self.unfreeze_from
            ));
        }
        self.train.validate()?;
        self.augment.validate()
    }

    /// The untrained segmenter.
    pub fn init_model(&self, classes: usize, device: &burn::prelude::Device) -> crate::model::Segmenter {
        crate::model::SegmenterConfig::new(classes)
            .with_inter(self.inter)
            .with_fine(self.decoder == SegDecoder::LrasppS4)
            .init(device)
    }

    /// Validation's (and the exported model's) preprocessing: stretched to the input size,
    /// RGB, ImageNet normalisation.
    pub fn preprocess(&self) -> fieldkit_core::Preprocess {
        let [width, height] = self.size;
        fieldkit_core::Preprocess::imagenet_stretch_to(width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_flags_are_checked() {
        let mut c = SegmentConfig::new("d".into());
        c.validate().unwrap();
        assert_eq!(c.preprocess().output_size(), Some((384, 288)));
        c.size = [384, 300];
        assert!(c.validate().unwrap_err().to_string().contains("--size 384x300"));
        let mut c = SegmentConfig::new("d".into());
        c.unfreeze_from = 4;
        assert!(c.validate().unwrap_err().to_string().contains("--unfreeze-from 4"));
    }
}

crate::loop_settings_fields!(SegmentConfig);
