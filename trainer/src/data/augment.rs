//! Seeded training augmentation on u8 images: random resized crop (torchvision's
//! algorithm), flips, quarter turns, small rotations, colour jitter. Every random draw comes
//! from the caller's RNG, so a (seed, epoch, sample) triple always gives the same pixels.

use fieldkit_core::perturb::Perturb;
use fieldkit_core::preprocess::resize_crop_rgb;
use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::mix::MixSettings;
use super::AugmentPreset;
use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Area fraction range of the random resized crop; `[1, 1]` with ratio `[1, 1]` keeps
    /// the whole image.
    pub crop_scale: [f32; 2],
    /// Aspect-ratio range of the crop (log-uniform, as torchvision).
    pub crop_ratio: [f32; 2],
    pub hflip: bool,
    pub vflip: bool,
    /// Random quarter turns: top-down field imagery has no "up".
    pub rot90: bool,
    /// Uniform rotation in ±degrees, reflected border.
    pub rotate_deg: f32,
    /// Colour jitter strengths (factor drawn from [1 - s, 1 + s]).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Probability that a training view also gets one field corruption (`--corrupt`): sensor
    /// noise, JPEG re-encoding or blur at a random severity up to the ones `eval --perturb`
    /// scores (noise std 0.08, quality 15, blur 2 px at 224). 0: none.
    #[serde(default)]
    pub corrupt: f32,
    /// Batch mixing (`--mix`): mixup or cutmix between the views of a batch, applied after
    /// each view's own augmentation. `None`: off.
    #[serde(default)]
    pub mix: Option<MixSettings>,
}

impl Augment {
    pub fn none() -> Self {
        Augment {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            hflip: false,
            vflip: false,
            rot90: false,
            rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            corrupt: 0.0,
            mix: None,
        }
    }

    /// torchvision's ImageNet recipe with a milder crop: 0.08–1 loses the plant in 64 px
    /// tiles that are mostly soil; 0.6–1 beat 0.35–1 on weed-cls9 (12 epochs, 96 px:
    /// 0.783 / 0.642 vs 0.759 / 0.555 in 6 epochs, and a lower train loss).
    pub fn standard() -> Self {
        Augment {
            crop_scale: [0.6, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            hflip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            ..Self::none()
        }
    }

    /// Top-down field imagery (weed tiles, drone crops): orientation carries no meaning, so
    /// all eight flips/turns are free data.
    pub fn topdown() -> Self {
        Augment { vflip: true, rot90: true, rotate_deg: 10.0, ..Self::standard() }
    }

    pub fn light() -> Self {
        Augment { crop_scale: [0.6, 1.0], hflip: true, ..Self::none() }
    }

    pub fn preset(preset: AugmentPreset) -> Self {
        preset.pick(Self::none, Self::light, Self::standard, Self::topdown)
    }

    pub fn validate(&self) -> Result<()> {
        let [a, b] = self.crop_scale;
        let [r0, r1] = self.crop_ratio;
        let ok = 0.0 < a
            && a <= b
            && b <= 1.0
            && 0.0 < r0
            && r0 <= r1
            && self.rotate_deg.is_finite()
            && (0.0..=1.0).contains(&self.corrupt);
        let jitter_ok = [self.brightness, self.contrast, self.saturation].iter().all(|s| (0.0..1.0).contains(s));
        if !ok || !jitter_ok {
            return Err(TrainerError::Config(format!("augmentation settings out of range: {self:?}")));
        }
        self.mix.as_ref().map_or(Ok(()), MixSettings::validate)
    }

    /// One augmented `size`×`size` view of `img`.
    pub fn apply(&self, img: &RgbImage, size: u32, rng: &mut impl Rng) -> Result<RgbImage> {
        let corrupted = self.corrupt_source(img, rng)?;
        let img = corrupted.as_ref().unwrap_or(img);
        let region = self.crop_region(img.width(), img.height(), rng);
        let mut out = resize_crop_rgb(img, region, size, size, true)?;
        if self.hflip && rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        if self.vflip && rng.random_bool(0.5) {
            image::imageops::flip_vertical_in_place(&mut out);
        }
        if self.rot90 {
            out = match rng.random_range(0..4) {
                1 => image::imageops::rotate90(&out),
                2 => image::imageops::rotate180(&out),
                3 => image::imageops::rotate270(&out),
                _ => out,
            };
        }
        if self.rotate_deg > 0.0 {
            let deg = rng.random_range(-self.rotate_deg..=self.rotate_deg);
            out = rotate_reflect(&out, deg.to_radians());
        }
        self.jitter(&mut out, rng);
        Ok(out)
    }

    /// `--corrupt`: with its probability, one field corruption of the photo as it was stored,
    /// before cropping and resizing, where a camera adds sensor noise and JPEG blocks and
    /// where `eval --perturb` adds them too. (Applied to the resized view instead, as first
    /// written, a weed-cls9 tile saw JPEG's 8-px blocks at 96 px where its 64-px photos have
    /// them at 64, and noise without the upscale's smoothing.) `None`: left alone.
    fn corrupt_source(&self, img: &RgbImage, rng: &mut impl Rng) -> Result<Option<RgbImage>> {
        if self.corrupt > 0.0 && rng.random::<f32>() < self.corrupt {
            return Ok(Some(corruption(rng).apply(img, rng.random())?));
        }
        Ok(None)
    }

    /// One augmented `width`×`height` view of an image and its class map (`ids`, row-major, the
    /// image's size), transformed together: the same crop (its aspect range taken relative to
    /// the output's), flips, quarter turns (a half turn when the output is not square) and
    /// rotation for both, pixels bilinear and ids nearest; colour jitter and corruption (of
    /// the stored photo, before the crop) on the image only. The rotation fills its corners by reflection in both.
    pub fn apply_pair(
        &self,
        img: &RgbImage,
        ids: &[u8],
        width: u32,
        height: u32,
        rng: &mut impl Rng,
    ) -> Result<(RgbImage, Vec<u8>)> {
        let (w, h) = img.dimensions();
        if ids.len() != (w * h) as usize {
            return Err(TrainerError::Config(format!("a {w}x{h} image with a mask of {} pixels", ids.len())));
        }
        let corrupted = self.corrupt_source(img, rng)?;
        let img = corrupted.as_ref().unwrap_or(img);
        let aspect = width as f32 / height as f32;
        let rel = Augment { crop_ratio: self.crop_ratio.map(|r| r * aspect), ..self.clone() };
        let region = rel.crop_region(w, h, rng);
        let mut out = resize_crop_rgb(img, region, width, height, true)?;
        let ids = fieldkit_core::segment::crop_resize_ids(ids, w, h, region, width, height);
        let mut mask = image::GrayImage::from_raw(width, height, ids).expect("width x height ids");
        if self.hflip && rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut out);
            image::imageops::flip_horizontal_in_place(&mut mask);
        }
        if self.vflip && rng.random_bool(0.5) {
            image::imageops::flip_vertical_in_place(&mut out);
            image::imageops::flip_vertical_in_place(&mut mask);
        }
        if self.rot90 {
            let turn = if width == height { rng.random_range(0..4) } else { 2 * rng.random_range(0..2) };
            (out, mask) = match turn {
                1 => (image::imageops::rotate90(&out), image::imageops::rotate90(&mask)),
                2 => (image::imageops::rotate180(&out), image::imageops::rotate180(&mask)),
                3 => (image::imageops::rotate270(&out), image::imageops::rotate270(&mask)),
                _ => (out, mask),
            };
        }
        if self.rotate_deg > 0.0 {
            let theta = rng.random_range(-self.rotate_deg..=self.rotate_deg).to_radians();
            out = rotate_reflect(&out, theta);
            let src = rotation_source(width, height, theta);
            let m = mask.clone();
            mask = image::GrayImage::from_fn(width, height, |x, y| {
                let (sx, sy) = src(x, y);
                *m.get_pixel(sx.round().min(width as f32 - 1.0) as u32, sy.round().min(height as f32 - 1.0) as u32)
            });
        }
        self.jitter(&mut out, rng);
        Ok((out, mask.into_raw()))
    }

    /// torchvision `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform
    /// aspect ratio, then the whole image clamped to the ratio range, centred.
    fn crop_region(&self, w: u32, h: u32, rng: &mut impl Rng) -> [f64; 4] {
        let (wf, hf) = (w as f64, h as f64);
        let area = wf * hf;
        let [s0, s1] = self.crop_scale.map(f64::from);
        let [r0, r1] = self.crop_ratio.map(f64::from);
        if s0 < 1.0 || r0 < r1 {
            for _ in 0..10 {
                let target = area * rng.random_range(s0..=s1);
                let ratio = if r0 < r1 { rng.random_range(r0.ln()..=r1.ln()).exp() } else { r0 };
                let cw = (target * ratio).sqrt().round();
                let ch = (target / ratio).sqrt().round();
                if cw > 0.0 && ch > 0.0 && cw <= wf && ch <= hf {
                    let left = rng.random_range(0..=(wf - cw) as u32) as f64;
                    let top = rng.random_range(0..=(hf - ch) as u32) as f64;
                    return [left, top, cw, ch];
                }
            }
        }
        let in_ratio = wf / hf;
        let (cw, ch) = if in_ratio < r0 {
            (wf, (wf / r0).round())
        } else if in_ratio > r1 {
            ((hf * r1).round(), hf)
        } else {
            (wf, hf)
        };
        [((wf - cw) / 2.0).floor(), ((hf - ch) / 2.0).floor(), cw, ch]
    }

    fn jitter(&self, img: &mut RgbImage, rng: &mut impl Rng) {
        let draw =
            |s: f32, rng: &mut dyn rand::RngCore| if s > 0.0 { rng.random_range(1.0 - s..=1.0 + s) } else { 1.0 };
        let (b, c, s) = (draw(self.brightness, rng), draw(self.contrast, rng), draw(self.saturation, rng));
        if (b, c, s) == (1.0, 1.0, 1.0) {
            return;
        }
        let gray = |p: &Rgb<u8>| 0.299 * p.0[0] as f32 + 0.587 * p.0[1] as f32 + 0.114 * p.0[2] as f32;
        // Contrast blends towards the mean grey of the brightness-adjusted image (torchvision).
        let mean = img.pixels().map(gray).sum::<f32>() / (img.width() * img.height()).max(1) as f32 * b;
        for p in img.pixels_mut() {
            let mut v = p.0.map(|x| x as f32 * b);
            let g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
            for x in v.iter_mut() {
                *x = (*x - g) * s + g;
                *x = (*x - mean) * c + mean;
            }
            p.0 = v.map(|x| x.round().clamp(0.0, 255.0) as u8);
        }
    }
}

/// One field corruption at a random severity, up to `eval --perturb`'s: noise std up to 0.08,
/// JPEG quality down to 15, blur up to 2 px at 224.
fn corruption(rng: &mut impl Rng) -> Perturb {
    match rng.random_range(0..3) {
        0 => Perturb::Noise(rng.random_range(0.01..=0.08)),
        1 => Perturb::Jpeg(rng.random_range(15..=75)),
        _ => Perturb::Blur(rng.random_range(0.5..=2.0)),
    }
}

/// Where output pixel (x, y) of a `w`×`h` image rotated about its centre by `theta` radians
/// reads from, reflected at the border so no black corners teach the model a fake feature.
fn rotation_source(w: u32, h: u32, theta: f32) -> impl Fn(u32, u32) -> (f32, f32) {
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (sin, cos) = theta.sin_cos();
    let reflect = |v: f32, n: u32| {
        let m = (n as f32 - 1.0).max(0.0);
        if m == 0.0 {
            return 0.0;
        }
        let period = 2.0 * m;
        let r = v.rem_euclid(period);
        if r > m {
            period - r
        } else {
            r
        }
    };
    move |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        (reflect(cos * dx + sin * dy + cx, w), reflect(-sin * dx + cos * dy + cy, h))
    }
}

/// Rotates about the centre by `theta` radians, bilinear, reflecting at the border.
pub fn rotate_reflect(img: &RgbImage, theta: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let src = rotation_source(w, h, theta);
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = src(x, y);
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let px = |x, y| img.get_pixel(x, y).0.map(|v| v as f32);
        let (a, b, c, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
        let mut out = [0u8; 3];
        for k in 0..3 {
            let top = a[k] + (b[k] - a[k]) * fx;
            let bot = c[k] + (d[k] - c[k]) * fx;
            out[k] = (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample_rng;

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn seeded_and_sized() {
        let img = pattern(64, 48);
        let aug = Augment::topdown();
        let a = aug.apply(&img, 32, &mut sample_rng(7, 1, 3)).unwrap();
        let b = aug.apply(&img, 32, &mut sample_rng(7, 1, 3)).unwrap();
        let c = aug.apply(&img, 32, &mut sample_rng(7, 1, 4)).unwrap();
        assert_eq!(a.dimensions(), (32, 32));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn none_is_a_plain_resize() {
        let img = pattern(40, 40);
        let out = Augment::none().apply(&img, 40, &mut sample_rng(0, 0, 0)).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn crop_stays_inside_and_follows_torchvision_fallback() {
        let aug = Augment::standard();
        let mut rng = sample_rng(1, 0, 0);
        for _ in 0..200 {
            let [l, t, w, h] = aug.crop_region(64, 30, &mut rng);
            assert!(l >= 0.0 && t >= 0.0 && l + w <= 64.0 && t + h <= 30.0 && w > 0.0 && h > 0.0);
        }
        // An impossible aspect ratio falls back to the centred, ratio-clamped whole image.
        let tall = Augment { crop_scale: [1.0, 1.0], crop_ratio: [2.0, 3.0], ..Augment::none() };
        assert_eq!(tall.crop_region(40, 40, &mut rng), [0.0, 10.0, 40.0, 20.0]);
    }

    #[test]
    fn rotation_by_zero_and_full_turn_is_identity() {
        let img = pattern(17, 11);
        assert_eq!(rotate_reflect(&img, 0.0), img);
        let back = rotate_reflect(&img, std::f32::consts::TAU);
        let diff = img.pixels().zip(back.pixels()).map(|(a, b)| (a.0[0] as i32 - b.0[0] as i32).abs()).max().unwrap();
        assert!(diff <= 1, "{diff}");
    }

    /// `--corrupt 1` corrupts every view, reproducibly per seed; 0 leaves the view alone.
    #[test]
    fn corruption_is_seeded_and_applied_at_its_rate() {
        // 224 px: the blur's sigma is given at 224 px, so it moves pixels at its mildest.
        let img = pattern(224, 224);
        let plain = Augment::none();
        let always = Augment { corrupt: 1.0, ..Augment::none() };
        let base = plain.apply(&img, 224, &mut sample_rng(3, 0, 0)).unwrap();
        let mut changed = 0;
        for i in 0..12 {
            let a = always.apply(&img, 224, &mut sample_rng(3, 0, i)).unwrap();
            assert_eq!(a, always.apply(&img, 224, &mut sample_rng(3, 0, i)).unwrap());
            changed += usize::from(a != base);
        }
        assert_eq!(changed, 12, "views corrupted at --corrupt 1");
        assert!(Augment { corrupt: 1.5, ..Augment::none() }.validate().is_err());
    }

    /// The corruption hits the stored photo, before it is resized, as a camera's noise and
    /// `eval --perturb`'s do: a flat 16-px photo upscaled to 64 px carries noise that is smooth
    /// at the 4-px scale (neighbouring pixels differ by well under the pixels' spread), where
    /// noise added to the 64-px view would differ from pixel to pixel by about its spread.
    #[test]
    fn corruption_hits_the_photo_before_it_is_resized() {
        let img = RgbImage::from_pixel(16, 16, image::Rgb([120, 120, 120]));
        let always = Augment { corrupt: 1.0, ..Augment::none() };
        let mut noisy = 0;
        for i in 0..24 {
            let v = always.apply(&img, 64, &mut sample_rng(5, 0, i)).unwrap();
            let g: Vec<f64> = v.pixels().map(|p| p.0[1] as f64).collect();
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            let std = (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
            if std < 1.0 {
                continue; // JPEG and blur leave a flat photo flat
            }
            noisy += 1;
            let steps: Vec<f64> = g.chunks(64).flat_map(|row| row.windows(2).map(|w| (w[1] - w[0]).abs())).collect();
            let step = steps.iter().sum::<f64>() / steps.len() as f64;
            assert!(step < 0.8 * std, "view {i}: neighbours differ by {step:.2} against a spread of {std:.2}");
        }
        assert!(noisy >= 3, "only {noisy} of 24 views drew noise");
    }

    /// Image and mask move together: a mask that is the image's own red channel (as ids)
    /// stays equal to it, pixel for pixel, through crops, flips, turns and rotation, except
    /// where bilinear blends neighbours; jitter touches the image only.
    #[test]
    fn image_and_mask_are_transformed_together() {
        // Blocks of 8 px in two shades: bilinear and nearest agree inside each block.
        let img = RgbImage::from_fn(96, 64, |x, y| {
            let v = if (x / 8 + y / 8) % 2 == 0 { 40 } else { 200 };
            Rgb([v, v, v])
        });
        let ids: Vec<u8> = img.pixels().map(|p| u8::from(p.0[0] == 200)).collect();
        let aug = Augment { brightness: 0.0, contrast: 0.0, saturation: 0.0, ..Augment::topdown() };
        for i in 0..8 {
            let (out, mask) = aug.apply_pair(&img, &ids, 48, 32, &mut sample_rng(2, 0, i)).unwrap();
            assert_eq!((out.dimensions(), mask.len()), ((48, 32), 48 * 32));
            let agree = out.pixels().zip(&mask).filter(|(p, &m)| (p.0[0] > 120) == (m == 1)).count();
            assert!(agree as f64 > 0.9 * mask.len() as f64, "view {i}: {agree} of {} agree", mask.len());
        }
        let (a, ma) = aug.apply_pair(&img, &ids, 48, 32, &mut sample_rng(2, 0, 3)).unwrap();
        let (b, mb) = aug.apply_pair(&img, &ids, 48, 32, &mut sample_rng(2, 0, 3)).unwrap();
        assert_eq!((a, ma), (b, mb), "seeded");
        assert!(aug.apply_pair(&img, &ids[1..], 48, 32, &mut sample_rng(2, 0, 3)).is_err());
    }

    #[test]
    fn presets_and_validation() {
        assert_eq!(Augment::preset(AugmentPreset::Topdown), Augment::topdown());
        assert_eq!(Augment::preset(AugmentPreset::None), Augment::none());
        let bad = Augment { crop_scale: [0.9, 0.1], ..Augment::none() };
        assert!(bad.validate().is_err());
    }
}
