//! MobileNetV2 (Sandler et al. 2018) in torchvision's layout: a stem conv, 17 inverted
//! residual blocks, a 1x1 conv to 1280 channels, global average pooling, and a replaceable
//! classifier head (dropout + linear). ReLU6 everywhere, depthwise convs through `groups`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use super::precision::{to_dtype, to_f32};

/// torchvision's inverted residual settings: expansion t, output channels c, repeats n, stride s.
const SETTINGS: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// Rounds channels to a multiple of 8 without dropping below 90 % (torchvision `_make_divisible`).
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new = ((v + d / 2.0) / d).floor().max(1.0) * d;
    if new < 0.9 * v {
        new += d;
    }
    new as usize
}

#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Classes of the head; 0 builds the backbone alone (features out).
    pub num_classes: usize,
    /// Width multiplier: 1.0, 0.75, 0.5 or 0.35 for smaller targets.
    #[config(default = 1.0)]
    pub width: f64,
    #[config(default = 0.2)]
    pub dropout: f64,
}

/// Conv + BatchNorm (+ ReLU6): torchvision's `Conv2dNormActivation`.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    #[module(skip)]
    pub relu6: bool,
}

impl ConvBn {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
        device: &Device,
    ) -> Self {
        let pad = (kernel - 1) / 2;
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_stride([stride, stride])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(device);
        ConvBn { conv, bn: BatchNormConfig::new(cout).init(device), relu6 }
    }

    /// Computes in the convolution weight's dtype; BatchNorm in its own (f32 under mixed
    /// precision, see `model::precision`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let dtype = self.conv.weight.dtype();
        let y = self.conv.forward(to_dtype(x, dtype));
        let y = self.bn.forward(to_dtype(y, self.bn.gamma.dtype()));
        let y = if self.relu6 { y.clamp(0.0, 6.0) } else { y };
        to_dtype(y, dtype)
    }
}

/// Expand (1x1, skipped when t = 1) -> depthwise 3x3 -> project (1x1, linear), with a
/// residual connection when stride is 1 and channels match.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    #[module(skip)]
    pub residual: bool,
}

impl InvertedResidual {
    fn new(cin: usize, cout: usize, stride: usize, t: usize, device: &Device) -> Self {
        let hidden = cin * t;
        InvertedResidual {
            expand: (t != 1).then(|| ConvBn::new(cin, hidden, 1, 1, 1, true, device)),
            depthwise: ConvBn::new(hidden, hidden, 3, stride, hidden, true, device),
            project: ConvBn::new(hidden, cout, 1, 1, 1, false, device),
            residual: stride == 1 && cin == cout,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(y));
        if self.residual {
            x + y
        } else {
            y
        }
    }
}

#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// torchvision `features.0`.
    pub stem: ConvBn,
    /// torchvision `features.1` .. `features.17`.
    pub blocks: Vec<InvertedResidual>,
    /// torchvision `features.18`: 1x1 conv to the feature width (1280 at width 1.0).
    pub last: ConvBn,
    pub dropout: Dropout,
    pub classifier: Option<Linear>,
}

impl MobileNetV2Config {
    pub fn init(&self, device: &Device) -> MobileNetV2 {
        let mut cin = make_divisible(32.0 * self.width, 8);
        let stem = ConvBn::new(3, cin, 3, 2, 1, true, device);
        let mut blocks = Vec::new();
        for (t, c, n, s) in SETTINGS {
            let cout = make_divisible(c as f64 * self.width, 8);
            for i in 0..n {
                blocks.push(InvertedResidual::new(cin, cout, if i == 0 { s } else { 1 }, t, device));
                cin = cout;
            }
        }
        let features = self.feature_dim();
        let last = ConvBn::new(cin, features, 1, 1, 1, true, device);
        let classifier = (self.num_classes > 0).then(|| LinearConfig::new(features, self.num_classes).init(device));
        MobileNetV2 { stem, blocks, last, dropout: DropoutConfig::new(self.dropout).init(), classifier }
    }

    /// Width of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        make_divisible(1280.0 * self.width.max(1.0), 8)
    }
}

/// Layers in torchvision's `features` numbering: 0 = stem, 1..=17 = inverted residual
/// blocks, 18 = the last 1x1 conv. `--unfreeze-from N` counts in these units; N = 19 means
/// the head alone trains.
pub const FEATURE_LAYERS: usize = 19;

/// torchvision stage boundaries (where the resolution or width changes), from the top:
/// the block groups that gradual unfreezing thaws one at a time.
pub const STAGE_STARTS: [usize; 7] = [17, 14, 11, 7, 4, 2, 0];

impl MobileNetV2 {
    /// Applies `features.layer`. `x`: [batch, C_in, H, W] -> [batch, C_out, H', W']
    pub fn layer(&self, layer: usize, x: Tensor<4>) -> Tensor<4> {
        match layer {
            0 => self.stem.forward(x),
            18 => self.last.forward(x),
            n => self.blocks[n - 1].forward(x),
        }
    }

    /// Applies `features[from..to]`.
    pub fn layers(&self, from: usize, to: usize, mut x: Tensor<4>) -> Tensor<4> {
        for l in from..to.min(FEATURE_LAYERS) {
            x = self.layer(l, x);
        }
        x
    }

    /// Global average pooling. `x`: [batch, 1280, h, w] -> [batch, 1280]
    pub fn pool(x: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
    }

    /// Dropout + classifier on pooled features (identity without a head).
    /// `f`: [batch, 1280] -> [batch, classes]
    /// Returns f32 whatever the compute dtype (`model::precision`).
    pub fn head(&self, f: Tensor<2>) -> Tensor<2> {
        match &self.classifier {
            Some(head) => to_f32(head.forward(self.dropout.forward(to_dtype(f, head.weight.dtype())))),
            None => to_f32(f),
        }
    }

    /// Pooled features. `x`: [batch, 3, H, W] -> [batch, 1280]
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        Self::pool(self.layers(0, FEATURE_LAYERS, x))
    }

    /// `x`: [batch, 3, H, W] -> [batch, classes] (or [batch, 1280] without a head)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head(self.forward_features(x))
    }

    /// Freezes `features[..from]` (gradients off, BatchNorm in eval behaviour) and makes
    /// `features[from..]` and the head trainable.
    pub fn with_trainable_from(mut self, from: usize) -> Self {
        let set = |frozen: bool, m: ConvBn| if frozen { m.freeze() } else { m.unfreeze() };
        self.stem = set(from > 0, self.stem);
        self.blocks = self
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i + 1 < from { b.freeze() } else { b.unfreeze() })
            .collect();
        self.last = set(from > 18, self.last);
        self.classifier = self.classifier.map(|c| c.unfreeze());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(make_divisible(320.0 * 0.5, 8), 160);
        assert_eq!(make_divisible(1280.0, 8), 1280);
    }

    #[test]
    fn shapes_and_parameter_count() {
        let device = Device::flex();
        let m = MobileNetV2Config::new(9).init(&device);
        assert_eq!(m.blocks.len(), 17);
        // torchvision mobilenet_v2 features: 2,223,872 learnable parameters. burn's
        // num_params also counts BatchNorm running mean and variance (2 per channel).
        let bn = |c: &ConvBn| c.bn.gamma.dims()[0];
        let bn_channels: usize = bn(&m.stem)
            + bn(&m.last)
            + m.blocks
                .iter()
                .map(|b| b.expand.as_ref().map(bn).unwrap_or(0) + bn(&b.depthwise) + bn(&b.project))
                .sum::<usize>();
        assert_eq!(bn_channels, 17_056);
        let head = 1280 * 9 + 9;
        assert_eq!(m.num_params() - 2 * bn_channels, 2_223_872 + head);
        let y = m.forward(Tensor::zeros([2, 3, 64, 64], &device));
        assert_eq!(y.dims(), [2, 9]);
        let small = MobileNetV2Config::new(0).with_width(0.35).init(&device);
        assert_eq!(small.forward(Tensor::zeros([1, 3, 32, 32], &device)).dims(), [1, 1280]);
    }
}
