//! The one preprocessing implementation that training, quantization calibration and the
//! runtime all call, described by a serializable [`Preprocess`] spec stored in the model card.
//!
//! Resizing is a separable convolution with a bilinear (triangle) kernel widened by the
//! scale factor when shrinking: Pillow's algorithm, which is what torchvision's `Resize`
//! runs on PIL images. Checked against Pillow in `core/tests/preprocess_parity.rs`.

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Resize {
    /// Keep the size.
    None,
    /// Shorter side to `size`, aspect kept, longer side truncated (torchvision `Resize(int)`).
    ShortSide { size: u32 },
    /// Stretch to exactly `width`×`height`.
    Exact { width: u32, height: u32 },
    /// Fit inside `width`×`height` keeping aspect and fill the rest with `pad`; the image sits
    /// top-left (YOLOX) or centred (Ultralytics).
    Letterbox { width: u32, height: u32, pad: u8, center: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: Resize,
    /// Widen the kernel when shrinking (Pillow / torchvision). `false` samples the 2×2
    /// neighbourhood only, as OpenCV's `INTER_LINEAR` does (YOLOX was trained that way).
    #[serde(default = "yes")]
    pub antialias: bool,
    /// `[width, height]` cut from the centre after resizing.
    #[serde(default)]
    pub center_crop: Option<[u32; 2]>,
    pub channels: ChannelOrder,
    /// Multiplies the 0..255 pixel values before mean/std (1/255 or 1).
    pub scale: f32,
    /// Per output channel, in the order of `channels`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn yes() -> bool {
    true
}

/// Where the model input came from in the source image, to map boxes back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub src_width: u32,
    pub src_height: u32,
    /// Model-input pixels per source pixel.
    pub scale_x: f32,
    pub scale_y: f32,
    /// Position of the source's (0, 0) in model-input pixels.
    pub offset_x: f32,
    pub offset_y: f32,
}

impl Geometry {
    /// Maps an `[x1, y1, x2, y2]` box from model-input pixels to source pixels, clamped.
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.src_width as f32, self.src_height as f32);
        [
            ((b[0] - self.offset_x) / self.scale_x).clamp(0.0, w),
            ((b[1] - self.offset_y) / self.scale_y).clamp(0.0, h),
            ((b[2] - self.offset_x) / self.scale_x).clamp(0.0, w),
            ((b[3] - self.offset_y) / self.scale_y).clamp(0.0, h),
        ]
    }
}

/// A preprocessed image: `[3, height, width]` f32, channel-major (NCHW without the N).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub data: Vec<f32>,
    pub width: u32,
    pub height: u32,
    pub geometry: Geometry,
}

impl Preprocess {
    /// torchvision's ImageNet eval transform: `Resize(size*256/224)`, `CenterCrop(size)`,
    /// RGB, /255, ImageNet mean/std.
    pub fn imagenet(size: u32) -> Self {
        Preprocess {
            resize: Resize::ShortSide { size: (size as f32 * 256.0 / 224.0).round() as u32 },
            antialias: true,
            center_crop: Some([size, size]),
            channels: ChannelOrder::Rgb,
            scale: 1.0 / 255.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// ImageNet normalisation with a plain stretch to `size`×`size`: for small tiles (the
    /// 64 px weed crops) where a centre crop would cut away the plant.
    pub fn imagenet_stretch(size: u32) -> Self {
        Self::imagenet_stretch_to(size, size)
    }

    /// [`Preprocess::imagenet_stretch`] to `width`×`height` (a segmenter's input).
    pub fn imagenet_stretch_to(width: u32, height: u32) -> Self {
        Preprocess { resize: Resize::Exact { width, height }, center_crop: None, ..Self::imagenet(width) }
    }

    /// YOLOX's own preprocessing: BGR 0..255, top-left letterbox padded with 114.
    pub fn yolox(size: u32) -> Self {
        Preprocess {
            resize: Resize::Letterbox { width: size, height: size, pad: 114, center: false },
            antialias: false,
            center_crop: None,
            channels: ChannelOrder::Bgr,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// Output `(width, height)` when fixed by the spec, whatever the input size.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        if let Some([w, h]) = self.center_crop {
            return Some((w, h));
        }
        match self.resize {
            Resize::Exact { width, height } | Resize::Letterbox { width, height, .. } => Some((width, height)),
            Resize::None | Resize::ShortSide { .. } => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Argument(format!("preprocess spec: {m}")));
        match self.resize {
            Resize::ShortSide { size: 0 } => return bad("resize size is 0".into()),
            Resize::Exact { width, height } | Resize::Letterbox { width, height, .. } if width == 0 || height == 0 => {
                return bad(format!("resize target {width}x{height} is empty"))
            }
            _ => {}
        }
        if let Some([w, h]) = self.center_crop {
            if w == 0 || h == 0 {
                return bad(format!("center crop {w}x{h} is empty"));
            }
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) || !self.scale.is_finite() {
            return bad(format!("std {:?} / scale {} must be finite and non-zero", self.std, self.scale));
        }
        Ok(())
    }

    /// Resize, letterbox and crop in u8 (the geometric part), returning the image that
    /// [`Preprocess::normalize_into`] turns into the tensor.
    pub fn geometric(&self, img: &RgbImage) -> Result<(RgbImage, Geometry)> {
        self.validate()?;
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(CoreError::Argument(format!("image is empty ({w}x{h})")));
        }
        let mut geo =
            Geometry { src_width: w, src_height: h, scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 0.0 };
        let mut out = match self.resize {
            Resize::None => img.clone(),
            Resize::ShortSide { size } => {
                let (nw, nh) = if w <= h {
                    (size, ((size as u64 * h as u64) / w as u64).max(1) as u32)
                } else {
                    (((size as u64 * w as u64) / h as u64).max(1) as u32, size)
                };
                geo.scale_x = nw as f32 / w as f32;
                geo.scale_y = nh as f32 / h as f32;
                resize_rgb(img, nw, nh, self.antialias)?
            }
            Resize::Exact { width, height } => {
                geo.scale_x = width as f32 / w as f32;
                geo.scale_y = height as f32 / h as f32;
                resize_rgb(img, width, height, self.antialias)?
            }
            Resize::Letterbox { width, height, pad, center } => {
                // Exactly YOLOX's `int(w * r)` in float64, truncation included (773 px at
                // r = 416/773 gives 415): the model saw that geometry in training.
                let r = (height as f64 / h as f64).min(width as f64 / w as f64);
                let nw = ((w as f64 * r) as u32).clamp(1, width);
                let nh = ((h as f64 * r) as u32).clamp(1, height);
                let resized = resize_rgb(img, nw, nh, self.antialias)?;
                let (ox, oy) = if center { ((width - nw) / 2, (height - nh) / 2) } else { (0, 0) };
                let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([pad; 3]));
                image::imageops::replace(&mut canvas, &resized, ox as i64, oy as i64);
                geo.scale_x = nw as f32 / w as f32;
                geo.scale_y = nh as f32 / h as f32;
                geo.offset_x = ox as f32;
                geo.offset_y = oy as f32;
                canvas
            }
        };
        if let Some([cw, ch]) = self.center_crop {
            let (rw, rh) = out.dimensions();
            // torchvision: int(round((h - ch) / 2)) with Python's round-half-even; pads
            // with zeros when the crop is larger than the image.
            let top = round_half_even((rh as f64 - ch as f64) / 2.0);
            let left = round_half_even((rw as f64 - cw as f64) / 2.0);
            let mut crop = RgbImage::new(cw, ch);
            image::imageops::replace(&mut crop, &out, -left, -top);
            out = crop;
            geo.offset_x -= left as f32;
            geo.offset_y -= top as f32;
        }
        Ok((out, geo))
    }

    /// Channel order, scale, mean/std: u8 HWC -> f32 CHW into `out` (length 3·w·h).
    pub fn normalize_into(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        let (w, h) = img.dimensions();
        let plane = (w * h) as usize;
        if out.len() != 3 * plane {
            return Err(CoreError::Argument(format!("output buffer holds {} values, need {}", out.len(), 3 * plane)));
        }
        let src_channel = |c: usize| match self.channels {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        for c in 0..3 {
            let sc = src_channel(c);
            let mul = self.scale / self.std[c];
            let add = -self.mean[c] / self.std[c];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (d, px) in dst.iter_mut().zip(img.pixels()) {
                *d = px.0[sc] as f32 * mul + add;
            }
        }
        Ok(())
    }

    /// The whole pipeline on a decoded image.
    pub fn run(&self, img: &RgbImage) -> Result<Prepared> {
        let (g, geometry) = self.geometric(img)?;
        let (width, height) = g.dimensions();
        let mut data = vec![0.0; 3 * (width * height) as usize];
        self.normalize_into(&g, &mut data)?;
        Ok(Prepared { data, width, height, geometry })
    }
}

/// The deterministic input every parity check shares with the Python reference scripts:
/// `v[i] = (i * 7919) % 256` over a flattened `[3, h, w]` tensor (values 0..255 as f32).
pub fn reference_pattern(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w).map(|i| ((i as u64 * 7919) % 256) as f32).collect()
}

/// [`reference_pattern`] with /255 and ImageNet mean/std applied in f32, as numpy does it.
pub fn reference_pattern_imagenet(h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    reference_pattern(h, w)
        .iter()
        .enumerate()
        .map(|(i, v)| (v / 255.0 - IMAGENET_MEAN[i / plane]) / IMAGENET_STD[i / plane])
        .collect()
}

/// Bilinear resize of an RGB8 image; `antialias` widens the kernel when shrinking.
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, antialias: bool) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    if (w, h) == (width, height) {
        return Ok(img.clone());
    }
    resize_crop_rgb(img, [0.0, 0.0, w as f64, h as f64], width, height, antialias)
}

/// Resizes the region `[left, top, width, height]` (source pixels, fractional allowed) of
/// `img` to `width`×`height`: the crop-and-resize of augmentation, with the same kernels as
/// [`resize_rgb`] so training and inference pixels come from one resampler.
pub fn resize_crop_rgb(img: &RgbImage, region: [f64; 4], width: u32, height: u32, antialias: bool) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let fir_err =
        |e: &dyn std::fmt::Display| CoreError::Argument(format!("resize {w}x{h} {region:?} -> {width}x{height}: {e}"));
    if width == 0 || height == 0 || w == 0 || h == 0 {
        return Err(fir_err(&"empty image"));
    }
    // The typed API: the untyped one dispatches over every pixel type at run time, which links
    // all thirteen pixel types' SIMD kernels into the binary (~3 MB of the edge build).
    let src = TypedImageRef::<U8x3>::from_buffer(w, h, img.as_raw()).map_err(|e| fir_err(&e))?;
    let mut out = vec![0u8; width as usize * height as usize * 3];
    let mut dst = TypedImage::<U8x3>::from_buffer(width, height, &mut out).map_err(|e| fir_err(&e))?;
    let alg = if antialias {
        ResizeAlg::Convolution(FilterType::Bilinear)
    } else {
        ResizeAlg::Interpolation(FilterType::Bilinear)
    };
    let [l, t, cw, ch] = region;
    let mut opts = ResizeOptions::new().resize_alg(alg);
    if (l, t, cw, ch) != (0.0, 0.0, w as f64, h as f64) {
        opts = opts.crop(l, t, cw, ch);
    }
    Resizer::new().resize_typed(&src, &mut dst, &opts).map_err(|e| fir_err(&e))?;
    RgbImage::from_raw(width, height, out).ok_or_else(|| fir_err(&"buffer size mismatch"))
}

fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        (2.0 * (x / 2.0).round()) as i64
    } else {
        r as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn round_half_even_matches_python() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(-0.5), 0);
        assert_eq!(round_half_even(16.0), 16);
        assert_eq!(round_half_even(2.4), 2);
    }

    #[test]
    fn imagenet_shapes_and_values() {
        let p = Preprocess::imagenet(224).run(&gradient(300, 200)).unwrap();
        assert_eq!((p.width, p.height), (224, 224));
        assert_eq!(p.data.len(), 3 * 224 * 224);
        // short side 200 -> 256; long 300*256/200 = 384; crop left = 80, top = 16.
        assert_eq!(p.geometry.scale_y, 256.0 / 200.0);
        assert_eq!(p.geometry.offset_x, -80.0);
        assert_eq!(p.geometry.offset_y, -16.0);
        let max = p.data.iter().cloned().fold(f32::MIN, f32::max);
        let min = p.data.iter().cloned().fold(f32::MAX, f32::min);
        assert!(min >= (0.0 - 0.485) / 0.229 - 1e-4 && max <= (1.0 - 0.406) / 0.225 + 1e-4);
    }

    #[test]
    fn letterbox_topleft_bgr_and_geometry_roundtrip() {
        let img = RgbImage::from_pixel(640, 320, image::Rgb([10, 20, 30]));
        let pre = Preprocess::yolox(416);
        let p = pre.run(&img).unwrap();
        assert_eq!((p.width, p.height), (416, 416));
        let plane = 416 * 416;
        // BGR: channel 0 is blue.
        assert_eq!(p.data[0], 30.0);
        assert_eq!(p.data[plane], 20.0);
        // Below the 416x208 image: padding.
        assert_eq!(p.data[300 * 416 + 5], 114.0);
        let b = p.geometry.to_source([0.0, 0.0, 416.0, 208.0]);
        assert!((b[2] - 640.0).abs() < 1e-3 && (b[3] - 320.0).abs() < 1e-3, "{b:?}");
    }

    #[test]
    fn letterbox_truncates_like_yolox() {
        // 416/773*773 = 415.99999999999994 in float64: YOLOX resizes to 415 px.
        let (g, geo) = Preprocess::yolox(416).geometric(&gradient(773, 512)).unwrap();
        assert_eq!(g.dimensions(), (416, 416));
        assert_eq!(geo.scale_x, 415.0 / 773.0);
        assert_eq!(g.get_pixel(415, 100).0, [114; 3]);
    }

    #[test]
    fn centered_letterbox_offsets() {
        let img = gradient(100, 50);
        let pre = Preprocess {
            resize: Resize::Letterbox { width: 64, height: 64, pad: 0, center: true },
            ..Preprocess::yolox(64)
        };
        let (_, g) = pre.geometric(&img).unwrap();
        assert_eq!((g.offset_x, g.offset_y), (0.0, 16.0));
    }

    #[test]
    fn crop_larger_than_image_pads_with_zero() {
        let img = RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255]));
        let pre = Preprocess { resize: Resize::None, center_crop: Some([20, 20]), ..Preprocess::imagenet(20) };
        let (g, _) = pre.geometric(&img).unwrap();
        assert_eq!(g.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(10, 10).0, [255, 255, 255]);
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        let mut pre = Preprocess::imagenet(224);
        pre.std = [0.0, 1.0, 1.0];
        assert!(pre.run(&gradient(8, 8)).unwrap_err().to_string().contains("std"));
        let pre = Preprocess { resize: Resize::Exact { width: 0, height: 4 }, ..Preprocess::imagenet(4) };
        assert!(pre.run(&gradient(8, 8)).is_err());
        assert!(Preprocess::imagenet(4).run(&RgbImage::new(0, 0)).is_err());
    }

    #[test]
    fn spec_json_roundtrip() {
        let pre = Preprocess::yolox(416);
        let s = serde_json::to_string(&pre).unwrap();
        assert!(s.contains("\"mode\":\"letterbox\""), "{s}");
        assert_eq!(serde_json::from_str::<Preprocess>(&s).unwrap(), pre);
    }
}
