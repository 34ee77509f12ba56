//! A YOLOX-style detector on MobileNetV2: the backbone's stride-8/16/32 maps (torchvision
//! `features.6`, `.13`, `.17`), a light PAN neck (1x1 laterals, top-down and bottom-up paths
//! with depthwise-separable convs), and YOLOX's decoupled head per level (a class branch, and
//! a regression branch with box and objectness predictions), anchor-free.
//!
//! Output `[batch, anchors, 5 + classes]` with anchors over the strides in order, each grid
//! row-major: x/y offsets in cells, log w/h in cells, objectness and class logits — YOLOX's
//! `decode_in_inference=False` layout, so core's `decode_yolox` reads it (the exported ONNX
//! sigmoids the scores as the shared YOLOX-nano does).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use super::mobilenetv2::{ConvBn, MobileNetV2, MobileNetV2Config};

/// Strides of the three detection levels.
pub const STRIDES: [u32; 3] = [8, 16, 32];

/// torchvision `features` index after which each level is tapped (exclusive end of the
/// layers run for it): stride 8 after features.6, 16 after features.13, 32 after features.17.
pub const TAPS: [usize; 3] = [7, 14, 18];

/// Objectness/class bias at start: sigmoid = 0.01 (YOLOX's prior), so the loss does not
/// open with thousands of confident background anchors.
const PRIOR_PROB: f64 = 0.01;

#[derive(Config, Debug)]
pub struct DetectorConfig {
    pub num_classes: usize,
    /// Backbone width multiplier (ImageNet weights exist for 1.0).
    #[config(default = 1.0)]
    pub width: f64,
    /// Channels of the neck and head.
    #[config(default = 64)]
    pub neck_width: usize,
    /// Depthwise-separable convs per head branch.
    #[config(default = 2)]
    pub head_depth: usize,
}

/// Depthwise 3x3 (stride 1 or 2) + pointwise 1x1, both with BatchNorm and ReLU6.
#[derive(Module, Debug)]
pub struct DwSep {
    pub dw: ConvBn,
    pub pw: ConvBn,
}

impl DwSep {
    pub fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        DwSep {
            dw: ConvBn::new(cin, cin, 3, stride, cin, true, device),
            pw: ConvBn::new(cin, cout, 1, 1, 1, true, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pw.forward(self.dw.forward(x))
    }
}

/// PAN: laterals to `neck_width`, top-down (upsample + add + DwSep), bottom-up (stride-2
/// depthwise conv + add + DwSep).
#[derive(Module, Debug)]
pub struct Neck {
    pub lateral: Vec<ConvBn>,
    /// Top-down fusions at stride 16 and 8.
    pub td: Vec<DwSep>,
    /// Downsampling convs from stride 8 and 16.
    pub down: Vec<ConvBn>,
    /// Bottom-up fusions at stride 16 and 32.
    pub bu: Vec<DwSep>,
}

/// One level's decoupled head.
#[derive(Module, Debug)]
pub struct LevelHead {
    pub cls_convs: Vec<DwSep>,
    pub reg_convs: Vec<DwSep>,
    pub cls_pred: Conv2d,
    pub reg_pred: Conv2d,
    pub obj_pred: Conv2d,
}

#[derive(Module, Debug)]
pub struct Detector {
    pub backbone: MobileNetV2,
    pub neck: Neck,
    pub heads: Vec<LevelHead>,
    #[module(skip)]
    pub num_classes: usize,
}

/// Nearest-neighbour 2x upsampling from reshapes and a broadcast (differentiable on every
/// backend; exported as ONNX Resize nearest). `x`: [b, c, h, w] -> [b, c, 2h, 2w]
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}

fn pred_conv(cin: usize, cout: usize, bias: f64, device: &Device) -> Conv2d {
    let mut c = Conv2dConfig::new([cin, cout], [1, 1]).with_bias(true).init(device);
    if bias != 0.0 {
        c.bias = Some(Param::from_tensor(Tensor::full([cout], bias, device)));
    }
    c
}

impl DetectorConfig {
    pub fn init(&self, device: &Device) -> Detector {
        let backbone = MobileNetV2Config::new(0).with_width(self.width).init(device);
        let chans = self.tap_channels();
        let w = self.neck_width;
        let neck = Neck {
            lateral: chans.iter().map(|&c| ConvBn::new(c, w, 1, 1, 1, true, device)).collect(),
            td: (0..2).map(|_| DwSep::new(w, w, 1, device)).collect(),
            down: (0..2).map(|_| ConvBn::new(w, w, 3, 2, w, true, device)).collect(),
            bu: (0..2).map(|_| DwSep::new(w, w, 1, device)).collect(),
        };
        let prior = -((1.0 - PRIOR_PROB) / PRIOR_PROB).ln();
        let heads = (0..STRIDES.len())
            .map(|_| LevelHead {
                cls_convs: (0..self.head_depth).map(|_| DwSep::new(w, w, 1, device)).collect(),
                reg_convs: (0..self.head_depth).map(|_| DwSep::new(w, w, 1, device)).collect(),
                cls_pred: pred_conv(w, self.num_classes, prior, device),
                reg_pred: pred_conv(w, 4, 0.0, device),
                obj_pred: pred_conv(w, 1, prior, device),
            })
            .collect();
        Detector { backbone, neck, heads, num_classes: self.num_classes }
    }

    /// Backbone channels at the three taps.
    pub fn tap_channels(&self) -> [usize; 3] {
        use super::mobilenetv2::make_divisible;
        [32, 96, 320].map(|c| make_divisible(c as f64 * self.width, 8))
    }
}

/// Anchor points of a square `size` input over [`STRIDES`].
pub fn anchor_count(size: u32) -> usize {
    fieldkit_core::detect::yolox_anchor_count(size, size, &STRIDES)
}

impl Detector {
    /// The three backbone maps. `x`: [b, 3, s, s] -> [b, C3, s/8, s/8], [b, C4, s/16, ..], [b, C5, s/32, ..]
    pub fn backbone_maps(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        let c3 = self.backbone.layers(0, TAPS[0], x);
        let c4 = self.backbone.layers(TAPS[0], TAPS[1], c3.clone());
        let c5 = self.backbone.layers(TAPS[1], TAPS[2], c4.clone());
        [c3, c4, c5]
    }

    /// [`Detector::backbone_maps`] for training with a frozen prefix: layers before `from` run
    /// on `frozen` (an eval-mode snapshot, no autodiff graph, no stored activations), the rest
    /// on `self` with autodiff. Every map comes back on the autodiff device.
    pub fn backbone_maps_split(&self, frozen: &Detector, from: usize, x: Tensor<4>) -> [Tensor<4>; 3] {
        if from == 0 {
            return self.backbone_maps(x.autodiff());
        }
        let mut y = x;
        let mut maps = Vec::with_capacity(3);
        for l in 0..TAPS[2] {
            if l == from {
                y = y.autodiff();
            }
            y = if l < from { frozen.backbone.layer(l, y) } else { self.backbone.layer(l, y) };
            if TAPS.contains(&(l + 1)) {
                maps.push(y.clone().autodiff());
            }
        }
        maps.try_into().unwrap_or_else(|_| unreachable!("three taps"))
    }

    /// PAN over the backbone maps -> three `[b, neck_width, s/stride, s/stride]` maps.
    pub fn neck(&self, maps: [Tensor<4>; 3]) -> [Tensor<4>; 3] {
        let n = &self.neck;
        let [c3, c4, c5] = maps;
        let l5 = n.lateral[2].forward(c5);
        let l4 = n.lateral[1].forward(c4);
        let l3 = n.lateral[0].forward(c3);
        let p4 = n.td[0].forward(l4 + upsample2(l5.clone()));
        let p3 = n.td[1].forward(l3 + upsample2(p4.clone()));
        let o4 = n.bu[0].forward(p4 + n.down[0].forward(p3.clone()));
        let o5 = n.bu[1].forward(l5 + n.down[1].forward(o4.clone()));
        [p3, o4, o5]
    }

    /// One level's raw predictions. `x`: [b, w, h', w'] -> [b, 5 + classes, h'·w']
    /// (box 4, objectness 1, classes; logits).
    pub fn level(&self, i: usize, x: Tensor<4>) -> Tensor<3> {
        let h = &self.heads[i];
        let mut c = x.clone();
        for m in &h.cls_convs {
            c = m.forward(c);
        }
        let mut r = x;
        for m in &h.reg_convs {
            r = m.forward(r);
        }
        let y = Tensor::cat(vec![h.reg_pred.forward(r.clone()), h.obj_pred.forward(r), h.cls_pred.forward(c)], 1);
        let [b, ch, gh, gw] = y.dims();
        y.reshape([b, ch, gh * gw])
    }

    /// Raw head output. `x`: [b, 3, s, s] -> [b, anchors, 5 + classes] (logits)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        self.forward_from_maps(self.backbone_maps(x))
    }

    /// The neck and head on given backbone maps (a frozen backbone runs without autodiff).
    pub fn forward_from_maps(&self, maps: [Tensor<4>; 3]) -> Tensor<3> {
        let feats = self.neck(maps);
        let levels: Vec<Tensor<3>> = feats.into_iter().enumerate().map(|(i, f)| self.level(i, f)).collect();
        // f32 whatever the compute dtype (`model::precision`).
        super::precision::to_f32(Tensor::cat(levels, 2).swap_dims(1, 2))
    }

    /// Freezes backbone layers `features[..from]` (gradients off, BatchNorm in eval
    /// behaviour); everything after them, the neck and the heads train.
    pub fn with_trainable_from(mut self, from: usize) -> Self {
        self.backbone = self.backbone.with_trainable_from(from);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_layout_and_upsampling() {
        let device = Device::flex();
        let m = DetectorConfig::new(2).with_neck_width(16).with_head_depth(1).init(&device);
        let y = m.forward(Tensor::zeros([2, 3, 64, 64], &device));
        assert_eq!(y.dims(), [2, anchor_count(64), 7]);
        assert_eq!(anchor_count(64), 64 + 16 + 4);
        // Objectness starts at the prior.
        let obj = crate::model::to_host(burn::tensor::activation::sigmoid(y.narrow(2, 4, 1)));
        assert!(obj.iter().all(|p| p.is_finite()));
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]), &device);
        let u = crate::model::to_host(upsample2(x));
        assert_eq!(&u[..8], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&u[8..], &[3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]);
    }
}
