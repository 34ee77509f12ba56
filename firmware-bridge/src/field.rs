//! A drive over the field you can check: a clip built from labelled photos laid end to end as a
//! strip of ground and panned under a downward camera at the robot's speed, with the true time
//! each labelled plant passes under each nozzle; and the score of what the device sprayed
//! against that truth (hit rate on targets, timing error, spray on the other classes).
//!
//! Geometry is bridge.toml's (see [`crate::planner`]): the image is `camera.ground_width_m`
//! wide and `ground_length_m` long on the ground, the robot drives towards the image top, the
//! nozzle line is `boom.offset_m` behind the image's bottom edge. A photo is scaled to the
//! frame's width, so the ground scale is `width / ground_width_m` pixels per metre.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::bridge::{ActStatus, BridgeReport};
use crate::error::BridgeError;
use crate::planner::PlanConfig;
use fieldkit_core::dataset::yolo::YoloDataset;
use fieldkit_core::video::VideoWriter;

/// What the clip is built from and how it is filmed.
#[derive(Debug, Clone)]
pub struct ClipSettings {
    /// Frame width in pixels (the height follows from the camera's footprint).
    pub width: u32,
    pub fps: f64,
    /// Photos laid end to end, in the split's sorted order (at most this many).
    pub images: usize,
}

/// A labelled plant of the strip: where it is across the boom and when it is under the
/// nozzle line (its near edge reaching the line to its far edge leaving it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthObject {
    pub name: String,
    /// The photo it was labelled in.
    pub image: PathBuf,
    /// Left and right edges, metres from the image's vertical centre line.
    pub lateral_m: [f64; 2],
    /// Clip seconds: near edge at the nozzle line, far edge past it.
    pub enter_s: f64,
    pub exit_s: f64,
    /// Nozzles whose band it overlaps.
    pub nozzles: Vec<u8>,
}

/// The clip's ground truth (`<clip>.truth.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldTruth {
    pub clip: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frames: u64,
    pub speed_mps: f64,
    pub px_per_m: f64,
    pub objects: Vec<TruthObject>,
}

impl FieldTruth {
    pub fn load(path: &Path) -> Result<Self, BridgeError> {
        let t: FieldTruth = fieldkit_core::fsio::read_json(path)?;
        if !(t.fps > 0.0 && t.speed_mps > 0.0 && t.px_per_m > 0.0) {
            return Err(BridgeError::Input(format!(
                "{}: fps, speed_mps and px_per_m must be positive",
                path.display()
            )));
        }
        Ok(t)
    }
}

/// The strip: photos scaled to `width`, stacked with the first at the bottom (the robot meets
/// it first), and the labelled boxes in strip pixels.
struct Strip {
    image: RgbImage,
    boxes: Vec<(String, PathBuf, [f64; 4])>,
}

fn build_strip(data: &Path, split: &str, width: u32, images: usize) -> Result<Strip, BridgeError> {
    let ds = YoloDataset::from_yaml(data)?;
    let samples: Vec<_> = ds.load_split(split)?.into_iter().take(images).collect();
    if samples.is_empty() {
        return Err(BridgeError::Input(format!("{}: split {split:?} has no images", data.display())));
    }
    let mut photos = Vec::new();
    for s in &samples {
        let img = fieldkit_core::image_io::read_rgb(&s.image)?;
        let h = ((img.height() as f64 * width as f64 / img.width() as f64).round() as u32).max(1);
        photos.push(fieldkit_core::preprocess::resize_rgb(&img, width, h, true)?);
    }
    let total: u32 = photos.iter().map(|p| p.height()).sum();
    let mut image = RgbImage::new(width, total);
    let mut boxes = Vec::new();
    // The first photo at the bottom: photo k starts `below` rows above the strip's end.
    let mut below = 0u32;
    for (s, p) in samples.iter().zip(&photos) {
        let top = total - below - p.height();
        image::imageops::replace(&mut image, p, 0, top as i64);
        for b in &s.boxes {
            let [x1, y1, x2, y2] = b.to_xyxy(p.width() as f32, p.height() as f32).map(|v| v as f64);
            let name = ds.names.get(b.class).cloned().unwrap_or_else(|| b.class.to_string());
            boxes.push((name, s.image.clone(), [x1, y1 + top as f64, x2, y2 + top as f64]));
        }
        below += p.height();
    }
    Ok(Strip { image, boxes })
}

/// The camera's path over a strip `len` rows long: the window's top row at clip time t is
/// `top0 − v_px t`; it starts over the strip's near end and drives until the far end has
/// passed the nozzle line.
struct Geometry {
    width: u32,
    height: u32,
    ppm: f64,
    offset_px: f64,
    v_px: f64,
    top0: f64,
    frames: u64,
}

impl Geometry {
    fn new(plan: &PlanConfig, s: &ClipSettings, len: f64) -> Self {
        let ppm = s.width as f64 / plan.camera.ground_width_m;
        // Even, for H.264's 4:2:0.
        let height = (((plan.camera.ground_length_m * ppm) / 2.0).round() as u32 * 2).max(2);
        let offset_px = plan.boom.offset_m * ppm;
        let v_px = plan.motion.speed_mps * ppm;
        let top0 = len - height as f64;
        let frames = ((top0 + height as f64 + offset_px) / v_px * s.fps).ceil() as u64 + 1;
        Geometry { width: s.width, height, ppm, offset_px, v_px, top0, frames }
    }

    fn top(&self, t: f64) -> f64 {
        self.top0 - self.v_px * t
    }

    /// Clip time at which strip row `row` reaches the nozzle line (the window's top is then
    /// `row − height − offset`).
    fn at_line(&self, row: f64) -> f64 {
        (self.top0 - (row - self.height as f64 - self.offset_px)) / self.v_px
    }

    fn object(&self, plan: &PlanConfig, name: String, image: PathBuf, [x1, y1, x2, y2]: [f64; 4]) -> TruthObject {
        let lateral = |x: f64| (x / self.width as f64 - 0.5) * plan.camera.ground_width_m;
        let (l, r) = (lateral(x1), lateral(x2));
        let b = &plan.boom;
        let nozzles = (0..b.nozzles_m.len())
            .filter(|&i| l < b.nozzles_m[i] + b.spray_width_m / 2.0 && r > b.nozzles_m[i] - b.spray_width_m / 2.0)
            .map(|i| i as u8)
            .collect();
        TruthObject { name, image, lateral_m: [l, r], enter_s: self.at_line(y2), exit_s: self.at_line(y1), nozzles }
    }
}

/// Builds the clip at `out` (H.264 through ffmpeg) and returns its truth. Ground beyond the
/// strip is grey.
pub fn build_clip(
    data: &Path,
    split: &str,
    plan: &PlanConfig,
    s: &ClipSettings,
    out: &Path,
    labels: Option<&Path>,
) -> Result<FieldTruth, BridgeError> {
    if s.width < 32 || !(s.fps > 0.0 && s.fps.is_finite()) || s.images == 0 {
        return Err(BridgeError::Config(format!(
            "field clip: width {} (>= 32), fps {} (> 0) and images {} (> 0)",
            s.width, s.fps, s.images
        )));
    }
    let strip = build_strip(data, split, s.width, s.images)?;
    let g = Geometry::new(plan, s, strip.image.height() as f64);
    let mut video = VideoWriter::create(out, s.width, g.height, s.fps)?;
    let mut frame = RgbImage::new(s.width, g.height);
    let mut lines = String::new();
    for k in 0..g.frames {
        let top = g.top(k as f64 / s.fps).round() as i64;
        if labels.is_some() {
            lines += &label_line(&strip.boxes, top as f64, s.width, g.height, k as f64 / s.fps);
        }
        for p in frame.pixels_mut() {
            *p = image::Rgb([96, 96, 96]);
        }
        // The strip's rows under the window land at y − top.
        image::imageops::replace(&mut frame, &strip.image, 0, -top);
        video.write(&frame)?;
    }
    video.finish()?;
    if let Some(path) = labels {
        fieldkit_core::fsio::write_atomic(path, lines.as_bytes())?;
    }
    let objects = strip.boxes.into_iter().map(|(name, image, b)| g.object(plan, name, image, b)).collect();
    Ok(FieldTruth {
        clip: out.to_path_buf(),
        width: s.width,
        height: g.height,
        fps: s.fps,
        frames: g.frames,
        speed_mps: plan.motion.speed_mps,
        px_per_m: g.ppm,
        objects,
    })
}

/// One frame's labelled boxes as a detection line (score 1, cut to the frame) for `fieldkit
/// bridge --detections`: the labels as a perfect detector would report them.
fn label_line(boxes: &[(String, PathBuf, [f64; 4])], top: f64, width: u32, height: u32, t: f64) -> String {
    let h = height as f64;
    let dets: Vec<serde_json::Value> = boxes
        .iter()
        .filter(|(_, _, b)| b[3] - top > 0.0 && b[1] - top < h)
        .map(|(name, _, b)| {
            let bbox = [b[0], (b[1] - top).max(0.0), b[2], (b[3] - top).min(h)];
            serde_json::json!({"bbox": bbox, "name": name, "score": 1.0})
        })
        .collect();
    let line = serde_json::json!({"width": width, "height": height, "capture_ms": t * 1e3, "detections": dets});
    format!("{line}\n")
}

/// What was sprayed against the truth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldScore {
    /// Target plants (classes bridge.toml sprays) under at least one nozzle, and how many
    /// had every pass under a nozzle sprayed.
    pub targets: usize,
    pub targets_hit: usize,
    /// Target × nozzle passes, and those sprayed over at least [`HIT_COVERAGE`] of their
    /// time under the nozzle line.
    pub passes: usize,
    pub passes_hit: usize,
    pub hit_rate: f64,
    /// Mean share of each target pass's time that was sprayed.
    pub coverage_mean: f64,
    /// Spray opening minus the near edge's arrival, and closing minus the far edge's
    /// departure, over the target passes sprayed (ms; the margin makes them −/+ margin/speed
    /// when exact): p50 and p90 of the signed error.
    pub open_error_ms: [f64; 2],
    pub close_error_ms: [f64; 2],
    /// Passes of the other classes (crop), those that got any spray, and the share of their
    /// time under the nozzle that was sprayed.
    pub other_passes: usize,
    pub other_sprayed: usize,
    pub other_coverage_mean: f64,
    /// Nozzle-seconds of spray in all, and of those the share while a target was under the
    /// nozzle: the rest (margins, false detections, crop) is liquid on nothing to kill.
    pub spray_s: f64,
    pub on_target: f64,
    /// The device's openings, and those that overlap a pass of another class (crop) on their
    /// nozzle, however briefly: sprays on crop.
    pub sprays: usize,
    pub sprays_on_other: usize,
}

/// A pass counts as hit when this share of its time under the nozzle line was sprayed.
pub const HIT_COVERAGE: f64 = 0.9;

/// One nozzle opening, in clip seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spray {
    pub nozzle: u8,
    pub open_s: f64,
    pub close_s: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Scores the sprays the device reported done in `report` against `truth`, the clip's time 0
/// being host µs `origin_us`.
pub fn score_report(truth: &FieldTruth, plan: &PlanConfig, report: &BridgeReport, origin_us: f64) -> FieldScore {
    let sprays: Vec<Spray> = report
        .actuations
        .iter()
        .filter_map(|x| match x.status {
            ActStatus::Done { opened_us, closed_us } => Some(Spray {
                nozzle: x.nozzle,
                open_s: (opened_us as f64 - origin_us) / 1e6,
                close_s: (closed_us as f64 - origin_us) / 1e6,
            }),
            _ => None,
        })
        .collect();
    score(truth, plan, &sprays)
}

impl std::fmt::Display for FieldScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} target passes under a nozzle sprayed (hit rate {:.3}, {}/{} targets fully), coverage {:.3}; \
             opening {:+.0} ms (p50, p90 {:+.0}), closing {:+.0} ms (p50, p90 {:+.0}) against the plant's edges; \
             other classes: {} of {} passes sprayed, coverage {:.3}, {} of {} sprays on them; \
             {:.1} nozzle-s sprayed, {:.0} % of it on targets",
            self.passes_hit,
            self.passes,
            self.hit_rate,
            self.targets_hit,
            self.targets,
            self.coverage_mean,
            self.open_error_ms[0],
            self.open_error_ms[1],
            self.close_error_ms[0],
            self.close_error_ms[1],
            self.other_sprayed,
            self.other_passes,
            self.other_coverage_mean,
            self.sprays_on_other,
            self.sprays,
            self.spray_s,
            self.on_target * 100.0
        )
    }
}

/// Sorted, overlapping intervals merged.
fn union(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (a, b) in v.into_iter().filter(|x| x.1 > x.0) {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Total length of the intersection of two merged interval lists.
fn overlap(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        sum += (a[i].1.min(b[j].1) - a[i].0.max(b[j].0)).max(0.0);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    sum
}

/// Scores `sprays` (the device's openings, in clip time) against `truth`; targets are the
/// classes `plan` sprays.
pub fn score(truth: &FieldTruth, plan: &PlanConfig, sprays: &[Spray]) -> FieldScore {
    // Per nozzle, the time it was open (the device's union of its sprays) and the time a
    // target was under it.
    let nozzles: std::collections::BTreeSet<u8> = sprays.iter().map(|x| x.nozzle).collect();
    let (mut open_s, mut on_target_s) = (0.0, 0.0);
    for &n in &nozzles {
        let open = union(sprays.iter().filter(|x| x.nozzle == n).map(|x| (x.open_s, x.close_s)).collect());
        let under = union(
            truth
                .objects
                .iter()
                .filter(|o| plan.is_target(&o.name) && o.nozzles.contains(&n))
                .map(|o| (o.enter_s, o.exit_s))
                .collect(),
        );
        open_s += open.iter().map(|x| x.1 - x.0).sum::<f64>();
        on_target_s += overlap(&open, &under);
    }
    let others: Vec<&TruthObject> = truth.objects.iter().filter(|o| !plan.is_target(&o.name)).collect();
    let mut s = FieldScore {
        spray_s: open_s,
        on_target: if open_s > 0.0 { on_target_s / open_s } else { f64::NAN },
        sprays: sprays.len(),
        sprays_on_other: sprays
            .iter()
            .filter(|x| {
                others.iter().any(|o| o.nozzles.contains(&x.nozzle) && x.open_s < o.exit_s && x.close_s > o.enter_s)
            })
            .count(),
        ..Default::default()
    };
    let (mut cover, mut other_cover) = (0.0, 0.0);
    let (mut open_err, mut close_err) = (Vec::new(), Vec::new());
    for o in truth.objects.iter().filter(|o| !o.nozzles.is_empty() && o.exit_s > o.enter_s) {
        let target = plan.is_target(&o.name);
        let mut all_hit = true;
        for &n in &o.nozzles {
            // The openings on this nozzle that overlap the pass; the device's union of them
            // covers it.
            let on: Vec<(f64, f64)> = sprays
                .iter()
                .filter(|x| x.nozzle == n && x.close_s > o.enter_s && x.open_s < o.exit_s)
                .map(|x| (x.open_s, x.close_s))
                .collect();
            let span = (on.iter().map(|x| x.0).reduce(f64::min), on.iter().map(|x| x.1).reduce(f64::max));
            let covered = overlap(&union(on), &[(o.enter_s, o.exit_s)]);
            let share = covered / (o.exit_s - o.enter_s);
            if target {
                s.passes += 1;
                cover += share;
                if share >= HIT_COVERAGE {
                    s.passes_hit += 1;
                } else {
                    all_hit = false;
                }
                if let (Some(first), Some(last)) = span {
                    open_err.push((first - o.enter_s) * 1e3);
                    close_err.push((last - o.exit_s) * 1e3);
                }
            } else {
                s.other_passes += 1;
                other_cover += share;
                if share > 0.0 {
                    s.other_sprayed += 1;
                }
            }
        }
        if target {
            s.targets += 1;
            s.targets_hit += usize::from(all_hit);
        }
    }
    s.hit_rate = if s.passes > 0 { s.passes_hit as f64 / s.passes as f64 } else { f64::NAN };
    s.coverage_mean = if s.passes > 0 { cover / s.passes as f64 } else { f64::NAN };
    s.other_coverage_mean = if s.other_passes > 0 { other_cover / s.other_passes as f64 } else { f64::NAN };
    s.open_error_ms = [percentile(&mut open_err, 0.5), percentile(&mut open_err, 0.9)];
    s.close_error_ms = [percentile(&mut close_err, 0.5), percentile(&mut close_err, 0.9)];
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PlanConfig {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.toml")).unwrap();
        toml::from_str::<crate::bridge::BridgeConfig>(&text).unwrap().plan
    }

    fn object(name: &str, nozzles: Vec<u8>, enter_s: f64, exit_s: f64) -> TruthObject {
        TruthObject { name: name.into(), image: "p.jpg".into(), lateral_m: [0.0, 0.1], enter_s, exit_s, nozzles }
    }

    fn truth(objects: Vec<TruthObject>) -> FieldTruth {
        FieldTruth {
            clip: "c.mp4".into(),
            width: 320,
            height: 240,
            fps: 10.0,
            frames: 100,
            speed_mps: 0.5,
            px_per_m: 320.0,
            objects,
        }
    }

    /// The truth and the planner derive the same times from two directions: a box drawn where
    /// the camera sees it at frame k, planned from that frame's capture time, opens exactly
    /// margin/speed before the truth's arrival and closes margin/speed after its departure.
    #[test]
    fn the_truth_agrees_with_the_planner() {
        let plan = plan();
        let s = ClipSettings { width: 320, fps: 10.0, images: 1 };
        let g = Geometry::new(&plan, &s, 2000.0);
        assert_eq!((g.height, g.ppm), (240, 320.0));
        let strip_box = [40.0, 900.0, 100.0, 960.0];
        let o = g.object(&plan, "weed".into(), "p.jpg".into(), strip_box);
        // −0.375 .. −0.1875 m: the bands of nozzles 1 and 2 (nozzle 0's ends at −0.375).
        assert_eq!(o.nozzles, vec![1, 2]);
        let slack = plan.plan.margin_m / plan.motion.speed_mps;
        let mut seen = 0;
        for k in 0..g.frames {
            let t = k as f64 / s.fps;
            let top = g.top(t);
            let b = [strip_box[0], strip_box[1] - top, strip_box[2], strip_box[3] - top];
            if b[1] < 0.0 || b[3] > g.height as f64 {
                continue;
            }
            seen += 1;
            let det =
                crate::planner::Detection { bbox: b.map(|v| v as f32), class: 1, name: "weed".into(), score: 0.9 };
            let trig = plan.triggers(&det, 320.0, g.height as f64, (t * 1e6) as u64);
            // The planner widens by the margin: nozzle 0 too.
            assert_eq!(trig.iter().map(|x| x.nozzle).collect::<Vec<_>>(), vec![0, 1, 2]);
            let (open, close) = (trig[0].open_us as f64 / 1e6, trig[0].close_us as f64 / 1e6);
            assert!((open - (o.enter_s - slack)).abs() < 1e-3, "frame {k}: {open} vs {}", o.enter_s);
            assert!((close - (o.exit_s + slack)).abs() < 1e-3, "frame {k}: {close} vs {}", o.exit_s);
        }
        assert!(seen >= 10, "{seen}");
    }

    #[test]
    fn hits_timing_and_crop_are_scored() {
        let t = truth(vec![
            object("weed", vec![0, 1], 1.0, 1.2),
            object("weed", vec![3], 2.0, 2.4),
            object("crop", vec![5], 3.0, 3.5),
            object("weed", vec![], 4.0, 4.1),
        ]);
        let sprays = [
            // weed 1: nozzle 0 covered with margins, nozzle 1 only the first half.
            Spray { nozzle: 0, open_s: 0.96, close_s: 1.24 },
            Spray { nozzle: 1, open_s: 0.96, close_s: 1.1 },
            // weed 2: two overlapping openings covering it.
            Spray { nozzle: 3, open_s: 1.95, close_s: 2.2 },
            Spray { nozzle: 3, open_s: 2.1, close_s: 2.45 },
            // on the crop for 0.1 of its 0.5 s
            Spray { nozzle: 5, open_s: 3.4, close_s: 3.6 },
        ];
        let s = score(&t, &plan(), &sprays);
        assert_eq!((s.targets, s.targets_hit, s.passes, s.passes_hit), (2, 1, 3, 2));
        assert!((s.hit_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.coverage_mean - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-9, "{s:?}");
        // open errors −40, −40, −50 ms; close +40, −100, +50 ms.
        assert!((s.open_error_ms[0] + 40.0).abs() < 1e-6, "{s:?}");
        assert!((s.close_error_ms[0] - 40.0).abs() < 1e-6, "{s:?}");
        assert_eq!((s.other_passes, s.other_sprayed), (1, 1));
        assert!((s.other_coverage_mean - 0.2).abs() < 1e-9);
        // Open: 0.28 + 0.14 + 0.5 (nozzle 3's two sprays as one, 1.95..2.45) + 0.2 = 1.12 s;
        // over a weed: 0.2 + 0.1 + 0.4 = 0.7 s.
        assert!((s.spray_s - 1.12).abs() < 1e-9, "{s:?}");
        assert!((s.on_target - 0.7 / 1.12).abs() < 1e-9, "{s:?}");
        assert_eq!((s.sprays, s.sprays_on_other), (5, 1));
        let none = score(&t, &plan(), &[]);
        assert_eq!((none.passes_hit, none.other_sprayed), (0, 0));
        assert!(none.open_error_ms[0].is_nan());
    }
}
