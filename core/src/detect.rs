//! Turning raw model outputs into predictions: softmax/top-k for classifiers, YOLOX grid
//! decoding and NMS for detectors. Shared by the runtime, the trainer's validation and
//! quantize's accuracy checks, so every stage scores a model the same way.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::metrics::boxes::iou;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in pixels (model-input pixels after decoding; source pixels once
    /// mapped back with `Geometry::to_source`).
    pub bbox: [f32; 4],
    pub class: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NmsOptions {
    /// Keep detections whose score is at least this.
    pub score_threshold: f32,
    /// Suppress a box whose IoU with a better-scored kept box is above this.
    pub iou_threshold: f32,
    /// Suppress across classes too (one box per object whatever its class).
    pub class_agnostic: bool,
    pub max_detections: usize,
}

impl NmsOptions {
    /// The COCO evaluation protocol: down to score 0.001 so the PR curve reaches
    /// low-confidence recall, at most 100 detections per image, per-class NMS at IoU 0.65
    /// (YOLOX's evaluation settings).
    pub const COCO_EVAL: NmsOptions =
        NmsOptions { score_threshold: 0.001, iou_threshold: 0.65, class_agnostic: false, max_detections: 100 };
}

impl NmsOptions {
    /// Checks the thresholds and the cap; a bad one is named as users set it.
    pub fn validate(&self) -> std::result::Result<(), BadNmsSetting> {
        for (name, v) in [("conf", self.score_threshold), ("iou", self.iou_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(BadNmsSetting { name, value: v.to_string(), rule: "must be between 0 and 1" });
            }
        }
        if self.max_detections == 0 {
            return Err(BadNmsSetting { name: "max_det", value: "0".into(), rule: "must be at least 1" });
        }
        Ok(())
    }
}

/// An [`NmsOptions`] setting out of range, named by its daemon query key (`conf`, `iou`,
/// `max_det`); [`BadNmsSetting::flag`] gives the command-line spelling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name}={value}: {rule}")]
pub struct BadNmsSetting {
    pub name: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl BadNmsSetting {
    /// `--max-det 0: must be at least 1`.
    pub fn flag(&self) -> String {
        format!("--{} {}: {}", self.name.replace('_', "-"), self.value, self.rule)
    }
}

impl Default for NmsOptions {
    /// YOLOX's evaluation defaults for deployment: score 0.3, IoU 0.45, per class.
    fn default() -> Self {
        NmsOptions { score_threshold: 0.3, iou_threshold: 0.45, class_agnostic: false, max_detections: 300 }
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Indices of the `k` largest scores, best first (ties: lower index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Number of anchor points of a YOLOX head on a `width`×`height` input.
pub fn yolox_anchor_count(width: u32, height: u32, strides: &[u32]) -> usize {
    strides.iter().map(|&s| ((width / s) * (height / s)) as usize).sum()
}

/// Decodes a YOLOX raw head `[anchors, 5 + classes]` (one image) into scored boxes in
/// model-input pixels. Anchors run over `strides` in order, each grid row-major (x fastest),
/// as YOLOX's `decode_outputs` lays them out. Each anchor yields its best class with score
/// objectness × class probability (YOLOX's `postprocess`); boxes under `score_threshold`
/// are dropped here, before NMS.
pub fn decode_yolox(
    output: &[f32],
    num_classes: usize,
    width: u32,
    height: u32,
    strides: &[u32],
    logits: bool,
    score_threshold: f32,
) -> Result<Vec<Detection>> {
    let row = 5 + num_classes;
    let anchors = yolox_anchor_count(width, height, strides);
    if output.len() != anchors * row {
        return Err(CoreError::Argument(format!(
            "YOLOX output has {} values; a {width}x{height} input with strides {strides:?} and {num_classes} classes needs {anchors}x{row} = {}",
            output.len(),
            anchors * row
        )));
    }
    let act = |v: f32| if logits { sigmoid(v) } else { v };
    let mut out = Vec::new();
    let mut a = 0;
    for &s in strides {
        let (gw, gh) = (width / s, height / s);
        for gy in 0..gh {
            for gx in 0..gw {
                let r = &output[a * row..(a + 1) * row];
                a += 1;
                let obj = act(r[4]);
                if obj < score_threshold {
                    continue; // cls <= 1, so obj*cls cannot reach the threshold
                }
                let (class, cls) = r[5..]
                    .iter()
                    .map(|&v| act(v))
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best });
                let score = obj * cls;
                if score < score_threshold {
                    continue;
                }
                let sf = s as f32;
                let cx = (r[0] + gx as f32) * sf;
                let cy = (r[1] + gy as f32) * sf;
                let w = r[2].exp() * sf;
                let h = r[3].exp() * sf;
                out.push(Detection { bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], class, score });
            }
        }
    }
    Ok(out)
}

/// Greedy NMS in descending score order (torchvision's `batched_nms` when per class);
/// ties in score keep the earlier detection. Applies the score threshold and max count.
pub fn nms(mut dets: Vec<Detection>, opts: &NmsOptions) -> Vec<Detection> {
    dets.retain(|d| d.score >= opts.score_threshold && d.score.is_finite());
    // Stable sort: equal scores keep input order, as torch's sort in practice does here.
    dets.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.len() >= opts.max_detections {
            break;
        }
        let suppressed = keep
            .iter()
            .any(|k| (opts.class_agnostic || k.class == d.class) && iou(&k.bbox, &d.bbox) > opts.iou_threshold);
        if !suppressed {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_topk() {
        let p = softmax(&[1.0, 2.0, 3.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6 && p[3] > 0.999);
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.2], 3), vec![1, 2, 3]);
    }

    #[test]
    fn yolox_decode_places_boxes_on_the_grid() {
        // 64x64 input, strides [32] -> 2x2 grid, 1 class.
        let mut out = vec![0.0f32; 4 * 6];
        // anchor 3 = (gx 1, gy 1): offsets 0.5, log size ln(2) -> 64 px box centred at (48, 48)
        out[3 * 6..4 * 6].copy_from_slice(&[0.5, 0.5, 2f32.ln(), 2f32.ln(), 0.9, 0.8]);
        let d = decode_yolox(&out, 1, 64, 64, &[32], false, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        let b = d[0].bbox;
        assert!((b[0] - 16.0).abs() < 1e-4 && (b[2] - 80.0).abs() < 1e-4, "{b:?}");
        assert!((d[0].score - 0.72).abs() < 1e-6);
        assert!(decode_yolox(&out[1..], 1, 64, 64, &[32], false, 0.5).is_err());
        // Logit outputs are sigmoided.
        let mut lo = out.clone();
        lo[3 * 6 + 4] = 10.0;
        lo[3 * 6 + 5] = 10.0;
        assert!(decode_yolox(&lo, 1, 64, 64, &[32], true, 0.5).unwrap()[0].score > 0.99);
    }

    #[test]
    fn nms_options_are_checked_by_the_names_users_type() {
        assert!(NmsOptions::default().validate().is_ok());
        let bad = |o: NmsOptions| o.validate().unwrap_err();
        assert_eq!(
            bad(NmsOptions { score_threshold: 1.5, ..Default::default() }).to_string(),
            "conf=1.5: must be between 0 and 1"
        );
        assert_eq!(
            bad(NmsOptions { iou_threshold: f32::NAN, ..Default::default() }).flag(),
            "--iou NaN: must be between 0 and 1"
        );
        assert_eq!(
            bad(NmsOptions { max_detections: 0, ..Default::default() }).flag(),
            "--max-det 0: must be at least 1"
        );
    }

    #[test]
    fn nms_per_class_and_agnostic() {
        let d = |x: f32, class, score| Detection { bbox: [x, 0.0, x + 10.0, 10.0], class, score };
        let dets = vec![d(0.0, 0, 0.9), d(1.0, 0, 0.8), d(1.0, 1, 0.7), d(50.0, 0, 0.6), d(60.0, 0, 0.1)];
        let kept = nms(dets.clone(), &NmsOptions { score_threshold: 0.3, iou_threshold: 0.5, ..Default::default() });
        assert_eq!(kept.iter().map(|k| k.score).collect::<Vec<_>>(), vec![0.9, 0.7, 0.6]);
        let kept = nms(
            dets,
            &NmsOptions { score_threshold: 0.3, iou_threshold: 0.5, class_agnostic: true, max_detections: 300 },
        );
        assert_eq!(kept.iter().map(|k| k.score).collect::<Vec<_>>(), vec![0.9, 0.6]);
    }
}
