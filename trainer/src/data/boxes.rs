//! Detection training data: a YOLO split decoded once and fitted to the input size (aspect
//! kept, as the letterbox does), and YOLOX's augmentation — mosaic of four images, random
//! affine (rotation, scale, shear, translation), HSV jitter, flips — with the boxes carried
//! through every step. All draws come from the caller's seeded RNG.

use fieldkit_core::dataset::{DetSample, YoloDataset};
use fieldkit_core::preprocess::{resize_rgb, Preprocess};
use fieldkit_core::{image_io, parallel, CoreError};
use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::AugmentPreset;
use crate::error::{Result, TrainerError};

/// One ground-truth object in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox {
    pub class: usize,
    /// `[x1, y1, x2, y2]`
    pub bbox: [f32; 4],
}

/// Letterbox fill, as YOLOX and Ultralytics pad.
pub const PAD: u8 = 114;

/// A decoded detection split: each image fitted inside `size`×`size` (not padded) with its
/// boxes in that image's pixels.
#[derive(Debug, Clone)]
pub struct BoxSet {
    pub images: Vec<RgbImage>,
    pub boxes: Vec<Vec<GtBox>>,
    pub paths: Vec<std::path::PathBuf>,
    pub size: u32,
}

impl BoxSet {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Boxes per class over the split.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for b in self.boxes.iter().flatten() {
            if b.class < classes {
                c[b.class] += 1;
            }
        }
        c
    }
}

/// The fitted size of a `w`×`h` image in a `size` square: YOLOX's `int(w * r)`, the same
/// truncation the letterbox in core applies at inference.
pub fn fit_dims(w: u32, h: u32, size: u32) -> (u32, u32, f64) {
    let r = (size as f64 / h as f64).min(size as f64 / w as f64);
    (((w as f64 * r) as u32).clamp(1, size), ((h as f64 * r) as u32).clamp(1, size), r)
}

/// Decodes `samples` on `workers` threads, fitting each image inside `size`.
pub fn decode_boxes(samples: &[DetSample], size: u32, workers: usize) -> Result<BoxSet> {
    let out = parallel::map_indexed(
        samples.len(),
        workers,
        || Ok(()),
        |_, i| -> fieldkit_core::Result<(RgbImage, Vec<GtBox>)> {
            let s = &samples[i];
            let img = image_io::read_rgb(&s.image)?;
            let (w, h) = img.dimensions();
            let (nw, nh, _) = fit_dims(w, h, size);
            let fitted = resize_rgb(&img, nw, nh, true).map_err(|e| CoreError::invalid(&s.image, e.to_string()))?;
            let boxes = s
                .boxes
                .iter()
                .map(|b| {
                    let [x1, y1, x2, y2] = b.to_xyxy(nw as f32, nh as f32);
                    GtBox { class: b.class, bbox: [x1.max(0.0), y1.max(0.0), x2.min(nw as f32), y2.min(nh as f32)] }
                })
                .filter(|b| b.bbox[2] - b.bbox[0] > 1.0 && b.bbox[3] - b.bbox[1] > 1.0)
                .collect::<Vec<_>>();
            Ok((fitted, boxes))
        },
    )?;
    let (images, boxes) = out.into_iter().unzip();
    Ok(BoxSet { images, boxes, paths: samples.iter().map(|s| s.image.clone()).collect(), size })
}

/// Loads and decodes split `split` of a YOLO dataset.
pub fn load_box_split(data: &YoloDataset, split: &str, size: u32, workers: usize) -> Result<BoxSet> {
    let samples = data.load_split(split)?;
    if samples.is_empty() {
        return Err(TrainerError::Config(format!("{}: split '{split}' holds no images", data.yaml.display())));
    }
    decode_boxes(&samples, size, workers)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetAugment {
    /// Probability that a sample is a mosaic of four images.
    pub mosaic: f32,
    /// Random affine: scale range, rotation ±degrees, shear ±degrees, translation ± fraction.
    pub scale: [f32; 2],
    pub degrees: f32,
    pub shear: f32,
    pub translate: f32,
    pub hflip: bool,
    pub vflip: bool,
    /// HSV jitter: hue ± degrees, saturation and value ± levels (of 255), as YOLOX's gains.
    pub hsv: [f32; 3],
}

impl DetAugment {
    pub fn none() -> Self {
        DetAugment {
            mosaic: 0.0,
            scale: [1.0, 1.0],
            degrees: 0.0,
            shear: 0.0,
            translate: 0.0,
            hflip: false,
            vflip: false,
            hsv: [0.0; 3],
        }
    }

    /// YOLOX-nano's recipe: mosaic half the time, scale 0.5–1.5, ±10° rotation, ±2° shear,
    /// ±10 % translation, horizontal flips, HSV gains (hue 10°, 30, 30).
    pub fn standard() -> Self {
        DetAugment {
            mosaic: 0.5,
            scale: [0.5, 1.5],
            degrees: 10.0,
            shear: 2.0,
            translate: 0.1,
            hflip: true,
            vflip: false,
            hsv: [10.0, 30.0, 30.0],
        }
    }

    /// Top-down field imagery: vertical flips too.
    pub fn topdown() -> Self {
        DetAugment { vflip: true, ..Self::standard() }
    }

    pub fn light() -> Self {
        DetAugment { mosaic: 0.0, scale: [0.8, 1.2], translate: 0.05, hflip: true, ..Self::none() }
    }

    pub fn preset(preset: AugmentPreset) -> Self {
        preset.pick(Self::none, Self::light, Self::standard, Self::topdown)
    }

    pub fn validate(&self) -> Result<()> {
        let [a, b] = self.scale;
        let ok = (0.0..=1.0).contains(&self.mosaic)
            && 0.0 < a
            && a <= b
            && (0.0..=45.0).contains(&self.degrees)
            && (0.0..=45.0).contains(&self.shear)
            && (0.0..0.5).contains(&self.translate)
            && self.hsv.iter().all(|g| (0.0..=180.0).contains(g));
        if !ok {
            return Err(TrainerError::Config(format!("detection augmentation settings out of range: {self:?}")));
        }
        Ok(())
    }

    /// One augmented `size`×`size` training view of sample `i` and its boxes. `mosaic`
    /// false switches mosaic off (`--close-mosaic`, the last epochs).
    ///
    /// As in YOLOX, the random affine belongs to the mosaic branch: a sample drawn without
    /// mosaic, and every sample once `mosaic` is false (the closing epochs), keeps its
    /// letterboxed geometry with flips and HSV only. A rotated or sheared box becomes the
    /// bounding box of its corners, larger than the object, and a model that only ever saw
    /// those targets learns loose boxes (measured on sesame-weed-det valid: boxes 7.6 % too
    /// tall at the median). A preset without mosaic (`light`) keeps its jitter outside the
    /// closing epochs.
    pub fn sample(&self, set: &BoxSet, i: usize, mosaic: bool, rng: &mut impl Rng) -> (RgbImage, Vec<GtBox>) {
        let s = set.size;
        let (canvas, boxes, centre, warp) =
            if mosaic && self.mosaic > 0.0 && set.len() > 1 && rng.random_bool(self.mosaic as f64) {
                let others: [usize; 3] = std::array::from_fn(|_| rng.random_range(0..set.len()));
                let (c, b) = mosaic4(set, [i, others[0], others[1], others[2]], rng);
                (c, b, s as f32, true)
            } else {
                let mut c = RgbImage::from_pixel(s, s, Rgb([PAD; 3]));
                image::imageops::replace(&mut c, &set.images[i], 0, 0);
                (c, set.boxes[i].clone(), s as f32 / 2.0, mosaic && self.mosaic == 0.0)
            };
        let (mut out, mut boxes) = if warp {
            let m = self.random_affine(centre, s as f32, rng);
            (warp_affine(&canvas, &m, s, s), transform_boxes(&boxes, &m, s as f32, self.scale_of(&m)))
        } else {
            (canvas, boxes)
        };
        if self.hflip && rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut out);
            for b in &mut boxes {
                b.bbox = [s as f32 - b.bbox[2], b.bbox[1], s as f32 - b.bbox[0], b.bbox[3]];
            }
        }
        if self.vflip && rng.random_bool(0.5) {
            image::imageops::flip_vertical_in_place(&mut out);
            for b in &mut boxes {
                b.bbox = [b.bbox[0], s as f32 - b.bbox[3], b.bbox[2], s as f32 - b.bbox[1]];
            }
        }
        hsv_jitter(&mut out, self.hsv, rng);
        (out, boxes)
    }

    fn scale_of(&self, m: &Affine) -> f32 {
        (m[0] * m[4] - m[1] * m[3]).abs().sqrt()
    }

    /// YOLOX `random_affine`: about `centre` of the source, rotation + scale, shear, then a
    /// translation placing the centre at the output's middle ± `translate`.
    fn random_affine(&self, centre: f32, out: f32, rng: &mut impl Rng) -> Affine {
        let draw = |r: f32, rng: &mut dyn rand::RngCore| if r > 0.0 { rng.random_range(-r..=r) } else { 0.0 };
        let angle = draw(self.degrees, rng).to_radians();
        let [a, b] = self.scale;
        let scale = if a < b { rng.random_range(a..=b) } else { a };
        let shx = draw(self.shear, rng).to_radians().tan();
        let shy = draw(self.shear, rng).to_radians().tan();
        let tx = out / 2.0 + draw(self.translate, rng) * out;
        let ty = out / 2.0 + draw(self.translate, rng) * out;
        let (sin, cos) = angle.sin_cos();
        let rs = [scale * cos, -scale * sin, 0.0, scale * sin, scale * cos, 0.0];
        let sh = [1.0, shx, 0.0, shy, 1.0, 0.0];
        let c = [1.0, 0.0, -centre, 0.0, 1.0, -centre];
        let t = [1.0, 0.0, tx, 0.0, 1.0, ty];
        compose(&t, &compose(&sh, &compose(&rs, &c)))
    }
}

/// Row-major 2x3 affine map (source -> destination pixels).
pub type Affine = [f32; 6];

/// `a ∘ b` (apply b, then a).
fn compose(a: &Affine, b: &Affine) -> Affine {
    [
        a[0] * b[0] + a[1] * b[3],
        a[0] * b[1] + a[1] * b[4],
        a[0] * b[2] + a[1] * b[5] + a[2],
        a[3] * b[0] + a[4] * b[3],
        a[3] * b[1] + a[4] * b[4],
        a[3] * b[2] + a[4] * b[5] + a[5],
    ]
}

fn apply(m: &Affine, x: f32, y: f32) -> (f32, f32) {
    (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
}

fn invert(m: &Affine) -> Affine {
    let det = m[0] * m[4] - m[1] * m[3];
    let (a, b, d, e) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
    [a, b, -(a * m[2] + b * m[5]), d, e, -(d * m[2] + e * m[5])]
}

/// Warps `src` by `m` into a `w`×`h` image, bilinear, [`PAD`] outside the source.
pub fn warp_affine(src: &RgbImage, m: &Affine, w: u32, h: u32) -> RgbImage {
    let inv = invert(m);
    let (sw, sh) = (src.width() as i64, src.height() as i64);
    let raw = src.as_raw();
    let px = |x: i64, y: i64, k: usize| -> f32 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            PAD as f32
        } else {
            raw[((y * sw + x) * 3) as usize + k] as f32
        }
    };
    RgbImage::from_fn(w, h, |x, y| {
        // Pixel centres map to pixel centres.
        let (sx, sy) = apply(&inv, x as f32 + 0.5, y as f32 + 0.5);
        let (sx, sy) = (sx - 0.5, sy - 0.5);
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let mut out = [0u8; 3];
        for (k, o) in out.iter_mut().enumerate() {
            let top = px(x0, y0, k) * (1.0 - fx) + px(x0 + 1, y0, k) * fx;
            let bot = px(x0, y0 + 1, k) * (1.0 - fx) + px(x0 + 1, y0 + 1, k) * fx;
            *o = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

/// Boxes through `m`: the corners' bounding box, clipped to the `size` square; boxes left
/// under 2 px, under 10 % of their scaled area, or thinner than 1:20 are dropped (YOLOX's
/// `box_candidates`).
pub fn transform_boxes(boxes: &[GtBox], m: &Affine, size: f32, scale: f32) -> Vec<GtBox> {
    boxes
        .iter()
        .filter_map(|b| {
            let [x1, y1, x2, y2] = b.bbox;
            let pts = [apply(m, x1, y1), apply(m, x2, y1), apply(m, x1, y2), apply(m, x2, y2)];
            let nx1 = pts.iter().map(|p| p.0).fold(f32::INFINITY, f32::min).clamp(0.0, size);
            let ny1 = pts.iter().map(|p| p.1).fold(f32::INFINITY, f32::min).clamp(0.0, size);
            let nx2 = pts.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max).clamp(0.0, size);
            let ny2 = pts.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max).clamp(0.0, size);
            let (w, h) = (nx2 - nx1, ny2 - ny1);
            let before = (x2 - x1) * (y2 - y1) * scale * scale;
            let keep = w > 2.0 && h > 2.0 && w * h > 0.1 * before && (w / h).max(h / w) < 20.0;
            keep.then_some(GtBox { class: b.class, bbox: [nx1, ny1, nx2, ny2] })
        })
        .collect()
}

/// YOLOX's `MosaicDetection`: four fitted images around a random centre of a 2s×2s canvas
/// (first top-left of it, then top-right, bottom-left, bottom-right), boxes shifted along.
pub fn mosaic4(set: &BoxSet, idx: [usize; 4], rng: &mut impl Rng) -> (RgbImage, Vec<GtBox>) {
    let s = set.size as i64;
    let xc = rng.random_range(s / 2..=3 * s / 2);
    let yc = rng.random_range(s / 2..=3 * s / 2);
    let mut canvas = RgbImage::from_pixel(2 * s as u32, 2 * s as u32, Rgb([PAD; 3]));
    let mut boxes = Vec::new();
    for (k, &i) in idx.iter().enumerate() {
        let img = &set.images[i];
        let (w, h) = (img.width() as i64, img.height() as i64);
        // Top-left corner of the image on the canvas.
        let (x0, y0) = match k {
            0 => (xc - w, yc - h),
            1 => (xc, yc - h),
            2 => (xc - w, yc),
            _ => (xc, yc),
        };
        image::imageops::replace(&mut canvas, img, x0, y0);
        let lim = 2.0 * s as f32;
        for b in &set.boxes[i] {
            let [x1, y1, x2, y2] = b.bbox;
            // Only the part of the image that landed on the canvas counts.
            let nb = [
                (x1 + x0 as f32).clamp(0.0, lim),
                (y1 + y0 as f32).clamp(0.0, lim),
                (x2 + x0 as f32).clamp(0.0, lim),
                (y2 + y0 as f32).clamp(0.0, lim),
            ];
            if nb[2] - nb[0] > 1.0 && nb[3] - nb[1] > 1.0 {
                boxes.push(GtBox { class: b.class, bbox: nb });
            }
        }
    }
    (canvas, boxes)
}

/// HSV jitter with YOLOX's gains: hue shifted by up to ±`gains[0]` degrees, saturation and
/// value by up to ±`gains[1]`, ±`gains[2]` levels.
pub fn hsv_jitter(img: &mut RgbImage, gains: [f32; 3], rng: &mut impl Rng) {
    if gains.iter().all(|g| *g == 0.0) {
        return;
    }
    let d: [f32; 3] =
        std::array::from_fn(|k| if gains[k] > 0.0 { rng.random_range(-gains[k]..=gains[k]) } else { 0.0 });
    for p in img.pixels_mut() {
        let [r, g, b] = p.0.map(|v| v as f32 / 255.0);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let mut hue = if delta == 0.0 {
            0.0
        } else if max == r {
            60.0 * ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            60.0 * ((b - r) / delta + 2.0)
        } else {
            60.0 * ((r - g) / delta + 4.0)
        };
        let sat = if max == 0.0 { 0.0 } else { delta / max };
        hue = (hue + d[0]).rem_euclid(360.0);
        let sat = (sat + d[1] / 255.0).clamp(0.0, 1.0);
        let val = (max + d[2] / 255.0).clamp(0.0, 1.0);
        let c = val * sat;
        let x = c * (1.0 - ((hue / 60.0).rem_euclid(2.0) - 1.0).abs());
        let (r1, g1, b1) = match (hue / 60.0) as u32 {
            0 => (c, x, 0.0),
            1 => (x, c, 0.0),
            2 => (0.0, c, x),
            3 => (0.0, x, c),
            4 => (x, 0.0, c),
            _ => (c, 0.0, x),
        };
        let m = val - c;
        p.0 = [r1, g1, b1].map(|v| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8);
    }
}

/// A validation split prepared exactly as the runtime will feed it (the card's letterbox),
/// with each image's geometry to map boxes back to source pixels.
#[derive(Debug, Clone)]
pub struct EvalBoxSet {
    pub images: Vec<RgbImage>,
    pub geometry: Vec<fieldkit_core::preprocess::Geometry>,
}

pub fn decode_eval_boxes(images: &[std::path::PathBuf], preprocess: &Preprocess, workers: usize) -> Result<EvalBoxSet> {
    let out = parallel::map_indexed(
        images.len(),
        workers,
        || Ok(()),
        |_, i| -> fieldkit_core::Result<(RgbImage, fieldkit_core::preprocess::Geometry)> {
            let img = image_io::read_rgb(&images[i])?;
            preprocess.geometric(&img).map_err(|e| CoreError::invalid(&images[i], e.to_string()))
        },
    )?;
    let (images, geometry) = out.into_iter().unzip();
    Ok(EvalBoxSet { images, geometry })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample_rng;

    fn set() -> BoxSet {
        // Two 32x24 images, each with a white square on grey and its box.
        let mk = |x: u32| {
            let mut img = RgbImage::from_pixel(32, 24, Rgb([60, 60, 60]));
            for yy in 6..14 {
                for xx in x..x + 8 {
                    img.put_pixel(xx, yy, Rgb([250, 250, 250]));
                }
            }
            img
        };
        BoxSet {
            images: vec![mk(4), mk(20)],
            boxes: vec![
                vec![GtBox { class: 0, bbox: [4.0, 6.0, 12.0, 14.0] }],
                vec![GtBox { class: 1, bbox: [20.0, 6.0, 28.0, 14.0] }],
            ],
            paths: vec!["a.png".into(), "b.png".into()],
            size: 32,
        }
    }

    /// Mean brightness inside a box of an augmented image: the object must still be there.
    fn mean_in(img: &RgbImage, b: [f32; 4]) -> f32 {
        let (mut s, mut n) = (0.0f32, 0.0f32);
        for y in b[1].ceil() as u32..b[3].floor() as u32 {
            for x in b[0].ceil() as u32..b[2].floor() as u32 {
                s += img.get_pixel(x, y).0[0] as f32;
                n += 1.0;
            }
        }
        s / n.max(1.0)
    }

    #[test]
    fn identity_affine_is_the_letterbox() {
        let set = set();
        let (img, boxes) = DetAugment::none().sample(&set, 0, true, &mut sample_rng(0, 0, 0));
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(boxes, set.boxes[0]);
        assert_eq!(img.get_pixel(0, 30).0, [PAD; 3]);
        assert_eq!(img.get_pixel(5, 7).0, [250; 3]);
    }

    #[test]
    fn boxes_follow_the_pixels_through_every_augmentation() {
        let set = set();
        let aug = DetAugment { mosaic: 1.0, hsv: [0.0; 3], vflip: true, ..DetAugment::standard() };
        let mut seen = 0;
        for k in 0..40 {
            let (img, boxes) = aug.sample(&set, k % 2, true, &mut sample_rng(3, 0, k));
            for b in &boxes {
                assert!(b.bbox[0] >= 0.0 && b.bbox[2] <= 32.0 && b.bbox[0] < b.bbox[2], "{b:?}");
                // Rotation inflates the box around the square; its middle stays bright.
                let (cx, cy) = ((b.bbox[0] + b.bbox[2]) / 2.0, (b.bbox[1] + b.bbox[3]) / 2.0);
                let core = [cx - 1.0, cy - 1.0, cx + 1.0, cy + 1.0];
                if b.bbox[2] - b.bbox[0] > 6.0 && b.bbox[3] - b.bbox[1] > 6.0 {
                    assert!(mean_in(&img, core) > 150.0, "box {b:?} is not on the object (sample {k})");
                    seen += 1;
                }
            }
        }
        assert!(seen > 10, "{seen}");
        // Seeded.
        let a = aug.sample(&set, 0, true, &mut sample_rng(1, 2, 3));
        let b = aug.sample(&set, 0, true, &mut sample_rng(1, 2, 3));
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
    }

    #[test]
    fn samples_without_mosaic_keep_tight_boxes() {
        let set = set();
        let flipped = |b: &[f32; 4]| [32.0 - b[2], b[1], 32.0 - b[0], b[3]];
        // Closing epochs (mosaic off) and the non-mosaic draws of the standard preset: the
        // letterboxed boxes, at most mirrored; never the inflated box of a rotation.
        for (aug, mosaic) in
            [(DetAugment::standard(), false), (DetAugment { mosaic: 1e-9, ..DetAugment::standard() }, true)]
        {
            for k in 0..20 {
                let (_, boxes) = aug.sample(&set, 0, mosaic, &mut sample_rng(5, 0, k));
                assert_eq!(boxes.len(), set.boxes[0].len());
                for (b, g) in boxes.iter().zip(&set.boxes[0]) {
                    assert!(b.bbox == g.bbox || b.bbox == flipped(&g.bbox), "{b:?} vs {g:?} (sample {k})");
                }
            }
        }
        // With mosaic the affine applies: some boxes change size.
        let aug = DetAugment { mosaic: 1.0, ..DetAugment::standard() };
        let changed = (0..20).any(|k| {
            let (_, boxes) = aug.sample(&set, 0, true, &mut sample_rng(5, 0, k));
            boxes.iter().any(|b| {
                set.boxes.iter().flatten().all(|g| (b.bbox[2] - b.bbox[0] - (g.bbox[2] - g.bbox[0])).abs() > 1e-3)
            })
        });
        assert!(changed);
        // The light preset (no mosaic) keeps its scale/translate jitter outside the closing epochs.
        let moved =
            (0..20).any(|k| DetAugment::light().sample(&set, 0, true, &mut sample_rng(5, 0, k)).1 != set.boxes[0]);
        assert!(moved);
    }

    #[test]
    fn affine_helpers() {
        let m = [2.0, 0.0, 1.0, 0.0, 3.0, -2.0];
        let i = invert(&m);
        let (x, y) = apply(&i, apply(&m, 5.0, 7.0).0, apply(&m, 5.0, 7.0).1);
        assert!((x - 5.0).abs() < 1e-5 && (y - 7.0).abs() < 1e-5);
        assert_eq!(fit_dims(512, 256, 320), (320, 160, 0.625));
        let b = transform_boxes(
            &[GtBox { class: 0, bbox: [0.0, 0.0, 10.0, 10.0] }],
            &[1.0, 0.0, -9.0, 0.0, 1.0, 0.0],
            32.0,
            1.0,
        );
        assert!(b.is_empty(), "a box pushed 90 % off the image is dropped");
    }

    #[test]
    fn hsv_keeps_grey_grey_and_zero_gain_is_identity() {
        let mut img = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
        hsv_jitter(&mut img, [0.0; 3], &mut sample_rng(0, 0, 0));
        assert_eq!(img.get_pixel(0, 0).0, [100; 3]);
        let mut c = RgbImage::from_pixel(2, 2, Rgb([200, 50, 50]));
        hsv_jitter(&mut c, [30.0, 0.0, 0.0], &mut sample_rng(0, 0, 1));
        let p = c.get_pixel(0, 0).0;
        assert_eq!(p.iter().map(|v| *v as u32).max(), Some(200));
    }
}
