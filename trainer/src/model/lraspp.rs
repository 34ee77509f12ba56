//! A segmenter on MobileNetV2: torchvision's LR-ASPP head (Howard et al. 2019, "Searching for
//! MobileNetV3", section 6.1.2) on the backbone's stride-8 map (`features.6`, 32 channels) and
//! its last map (`features.18`, 1280 channels at stride 32, ImageNet's own last conv).
//!
//! high → 1x1 conv + BN + ReLU6 to `inter` channels, gated per channel by a sigmoid of its
//! global average (the squeeze-excite-like branch); upsampled bilinearly to stride 8; a 1x1
//! classifier on it plus a 1x1 classifier on the stride-8 map; the sum upsampled bilinearly to
//! the input. Logits `[batch, classes, H, W]` for any H and W divisible by 32.
//!
//! torchvision's MobileNetV3 version dilates its last stages to keep them at stride 16; the
//! MobileNetV2 here stays at stride 32, so its ImageNet weights apply unchanged.
//!
//! `fine` adds a DeepLabV3+-style stride-4 decoder (Chen et al. 2018) for thin structures such
//! as grass blades: the stride-4 map (`features.3`, 24 channels) projected to 32 channels by a
//! 1x1 conv, joined to the head's gated deep features upsampled to stride 4, a separable 3x3 to
//! 64 channels and a 1x1 classifier, added to LR-ASPP's own logits upsampled to stride 4.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::mobilenetv2::{make_divisible, ConvBn, MobileNetV2, MobileNetV2Config};
use super::precision::to_f32;
use super::resize::resize_bilinear;
use super::yolox::DwSep;

/// torchvision `features` index after which the stride-8 map is tapped (exclusive end), and
/// the end of the backbone.
pub const LOW_TAP: usize = 7;
pub const HIGH_TAP: usize = 19;
/// The end of the stride-4 part of the backbone (after `features.3`), for the fine decoder.
pub const FINE_TAP: usize = 4;
/// Channels of the fine decoder's stride-4 projection and of its separable conv.
pub const FINE_SKIP: usize = 32;
pub const FINE_MIX: usize = 64;

/// The input's height and width must divide by this (the backbone's deepest stride).
pub const STRIDE: usize = 32;

#[derive(Config, Debug)]
pub struct SegmenterConfig {
    pub num_classes: usize,
    /// Backbone width multiplier (ImageNet weights exist for 1.0).
    #[config(default = 1.0)]
    pub width: f64,
    /// Channels of the high-level branch (torchvision: 128).
    #[config(default = 128)]
    pub inter: usize,
    /// Add the stride-4 decoder.
    #[config(default = false)]
    pub fine: bool,
}

#[derive(Module, Debug)]
pub struct LrasppHead {
    /// 1x1 conv + BN + ReLU6 on the deep map.
    pub cbr: ConvBn,
    /// 1x1 conv (no bias, as torchvision) on the deep map's global average: the gate.
    pub scale: Conv2d,
    /// 1x1 classifiers on the stride-8 map and on the gated deep branch.
    pub low_classifier: Conv2d,
    pub high_classifier: Conv2d,
}

/// The stride-4 decoder (see the module notes).
#[derive(Module, Debug)]
pub struct FineDecoder {
    /// 1x1 conv + BN + ReLU6 on the stride-4 map.
    pub skip: ConvBn,
    /// Depthwise 3x3 + pointwise to [`FINE_MIX`] channels on the joined maps.
    pub mix: DwSep,
    pub classifier: Conv2d,
}

#[derive(Module, Debug)]
pub struct Segmenter {
    pub backbone: MobileNetV2,
    pub head: LrasppHead,
    pub fine: Option<FineDecoder>,
    #[module(skip)]
    pub num_classes: usize,
}

impl SegmenterConfig {
    pub fn init(&self, device: &Device) -> Segmenter {
        let backbone = MobileNetV2Config::new(0).with_width(self.width).init(device);
        let [low, high] = self.tap_channels();
        let conv1x1 =
            |cin: usize, cout: usize, bias: bool| Conv2dConfig::new([cin, cout], [1, 1]).with_bias(bias).init(device);
        let head = LrasppHead {
            cbr: ConvBn::new(high, self.inter, 1, 1, 1, true, device),
            scale: conv1x1(high, self.inter, false),
            low_classifier: conv1x1(low, self.num_classes, true),
            high_classifier: conv1x1(self.inter, self.num_classes, true),
        };
        let fine = self.fine.then(|| FineDecoder {
            skip: ConvBn::new(self.fine_channels(), FINE_SKIP, 1, 1, 1, true, device),
            mix: DwSep::new(self.inter + FINE_SKIP, FINE_MIX, 1, device),
            classifier: conv1x1(FINE_MIX, self.num_classes, true),
        });
        Segmenter { backbone, head, fine, num_classes: self.num_classes }
    }

    /// Backbone channels at the stride-8 tap and at the end.
    pub fn tap_channels(&self) -> [usize; 2] {
        [make_divisible(32.0 * self.width, 8), MobileNetV2Config::new(0).with_width(self.width).feature_dim()]
    }

    /// Backbone channels at the stride-4 tap.
    pub fn fine_channels(&self) -> usize {
        make_divisible(24.0 * self.width, 8)
    }
}

impl Segmenter {
    /// The stride-8 and stride-32 maps. `x`: [b, 3, H, W] -> [b, 32, H/8, W/8], [b, 1280, H/32, W/32]
    pub fn backbone_maps(&self, x: Tensor<4>) -> [Tensor<4>; 2] {
        let low = self.backbone.layers(0, LOW_TAP, x);
        let high = self.backbone.layers(LOW_TAP, HIGH_TAP, low.clone());
        [low, high]
    }

    /// The head on the two maps: its logits and its gated deep features, at stride 8.
    /// -> [b, classes, H/8, W/8], [b, inter, H/8, W/8]
    pub fn head(&self, low: Tensor<4>, high: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let h = &self.head;
        let [b, c, gh, gw] = high.dims();
        let pooled = high.clone().reshape([b, c, gh * gw]).mean_dim(2).reshape([b, c, 1, 1]); // [b, 1280, 1, 1]
        let gate = sigmoid(h.scale.forward(pooled)); // [b, inter, 1, 1]
        let y = h.cbr.forward(high) * gate; // [b, inter, H/32, W/32]
        let [_, _, lh, lw] = low.dims();
        let y = resize_bilinear(y, [lh, lw]); // [b, inter, H/8, W/8]
        (h.low_classifier.forward(low) + h.high_classifier.forward(y.clone()), y)
    }

    /// Logits. `x`: [b, 3, H, W] -> [b, classes, H, W]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, ih, iw] = x.dims();
        let Some(f) = &self.fine else {
            let [low, high] = self.backbone_maps(x);
            return to_f32(resize_bilinear(self.head(low, high).0, [ih, iw]));
        };
        let s4 = self.backbone.layers(0, FINE_TAP, x); // [b, 24, H/4, W/4]
        let low = self.backbone.layers(FINE_TAP, LOW_TAP, s4.clone());
        let high = self.backbone.layers(LOW_TAP, HIGH_TAP, low.clone());
        let (logits8, deep8) = self.head(low, high);
        let [_, _, h4, w4] = s4.dims();
        let joined = Tensor::cat(vec![resize_bilinear(deep8, [h4, w4]), f.skip.forward(s4)], 1); // [b, inter + 32, H/4, W/4]
        let logits4 = f.classifier.forward(f.mix.forward(joined)) + resize_bilinear(logits8, [h4, w4]);
        to_f32(resize_bilinear(logits4, [ih, iw]))
    }

    /// Freezes backbone layers `features[..from]` (gradients off, BatchNorm in eval
    /// behaviour); the rest of the backbone and the head train.
    pub fn with_trainable_from(mut self, from: usize) -> Self {
        self.backbone = self.backbone.with_trainable_from(from);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_at_the_input_size() {
        let device = Device::flex();
        let m = SegmenterConfig::new(3).with_inter(16).init(&device);
        let y = m.forward(Tensor::zeros([2, 3, 64, 96], &device));
        assert_eq!(y.dims(), [2, 3, 64, 96]);
        let fine = SegmenterConfig::new(3).with_inter(16).with_fine(true).init(&device);
        assert_eq!(fine.forward(Tensor::zeros([1, 3, 64, 96], &device)).dims(), [1, 3, 64, 96]);
    }
}
