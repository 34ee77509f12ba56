//! Systematic box error: how the confident detections that found an object sit against its
//! annotated box. mAP50 barely sees boxes that are all a few percent too large; mAP50-95 does,
//! and this says which way they are off (a loose-box bias from augmentation was found this way).

use std::collections::HashMap;

use serde::Serialize;

use super::coco_eval::box_iou;
use crate::dataset::coco::{CocoDataset, CocoPrediction};

/// Signed edge errors and size ratios are fractions of the true box's width (x) or height (y).
#[derive(Debug, Clone, Serialize)]
pub struct BoxFitReport {
    pub score_threshold: f64,
    /// Predictions matched to a true box of their class at IoU > 0.5.
    pub matches: usize,
    pub mean_iou: f64,
    /// Mean signed error of each edge, `[x1, y1, x2, y2]`: negative x1/y1 and positive x2/y2
    /// mean the box extends past the object.
    pub mean_edge_error: [f64; 4],
    /// Median predicted / true width and height (1 = unbiased).
    pub median_w_ratio: f64,
    pub median_h_ratio: f64,
}

impl BoxFitReport {
    /// Each prediction scoring at least `score_threshold` is matched to the true box of its class
    /// and image it overlaps most; it counts when that IoU exceeds 0.5. `None` when nothing
    /// matched (no confident detection found an object).
    pub fn compute(gt: &CocoDataset, preds: &[CocoPrediction], score_threshold: f64) -> Option<Self> {
        let mut truth: HashMap<(u64, u64), Vec<[f64; 4]>> = HashMap::new();
        for a in gt.annotations.iter().filter(|a| !a.iscrowd && a.bbox[2] > 0.0 && a.bbox[3] > 0.0) {
            truth.entry((a.image_id, a.category_id)).or_default().push(a.bbox);
        }
        let (mut ious, mut edges, mut w_ratio, mut h_ratio) = (Vec::new(), [0.0; 4], Vec::new(), Vec::new());
        for p in preds.iter().filter(|p| p.score >= score_threshold) {
            let Some(boxes) = truth.get(&(p.image_id, p.category_id)) else { continue };
            let Some((iou, g)) =
                boxes.iter().map(|g| (box_iou(&p.bbox, g, false), g)).max_by(|a, b| a.0.total_cmp(&b.0))
            else {
                continue;
            };
            if iou <= 0.5 {
                continue;
            }
            let b = &p.bbox;
            let err = [
                (b[0] - g[0]) / g[2],
                (b[1] - g[1]) / g[3],
                (b[0] + b[2] - g[0] - g[2]) / g[2],
                (b[1] + b[3] - g[1] - g[3]) / g[3],
            ];
            for (sum, e) in edges.iter_mut().zip(err) {
                *sum += e;
            }
            ious.push(iou);
            w_ratio.push(b[2] / g[2]);
            h_ratio.push(b[3] / g[3]);
        }
        if ious.is_empty() {
            return None;
        }
        let n = ious.len() as f64;
        Some(BoxFitReport {
            score_threshold,
            matches: ious.len(),
            mean_iou: ious.iter().sum::<f64>() / n,
            mean_edge_error: edges.map(|s| s / n),
            median_w_ratio: median(&mut w_ratio),
            median_h_ratio: median(&mut h_ratio),
        })
    }

    /// One line for the eval printout.
    pub fn line(&self) -> String {
        let e = self.mean_edge_error;
        format!(
            "box fit @ score {:.2}: {} matches, mean IoU {:.3}, median size ratio w {:.3} h {:.3}, mean edge error x1 {:+.3} y1 {:+.3} x2 {:+.3} y2 {:+.3}",
            self.score_threshold, self.matches, self.mean_iou, self.median_w_ratio, self.median_h_ratio, e[0], e[1], e[2], e[3]
        )
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::coco::{CocoAnnotation, CocoCategory, CocoImage};

    #[test]
    fn loose_boxes_show_as_ratios_above_one() {
        let ann = |id, category_id, bbox| CocoAnnotation {
            id,
            image_id: 1,
            category_id,
            bbox,
            area: None,
            iscrowd: false,
            segmentation: None,
        };
        let gt = CocoDataset {
            info: None,
            images: vec![CocoImage { id: 1, file_name: "1.jpg".into(), width: 200, height: 200 }],
            annotations: vec![ann(1, 1, [10.0, 10.0, 100.0, 50.0]), ann(2, 2, [120.0, 120.0, 40.0, 40.0])],
            categories: (1..=2).map(|id| CocoCategory { id, name: format!("c{id}"), supercategory: None }).collect(),
        };
        let p = |category_id, bbox, score| CocoPrediction { image_id: 1, category_id, bbox, score };
        let preds = [
            // 10 % wider and taller, centred on the object: x1 -5 %, x2 +5 % of the width.
            p(1, [5.0, 7.5, 110.0, 55.0], 0.9),
            // Exact, class 2.
            p(2, [120.0, 120.0, 40.0, 40.0], 0.8),
            // Below the score threshold, and the wrong class over an object: both ignored.
            p(1, [0.0, 0.0, 200.0, 200.0], 0.1),
            p(2, [10.0, 10.0, 100.0, 50.0], 0.9),
        ];
        let r = BoxFitReport::compute(&gt, &preds, 0.5).unwrap();
        assert_eq!(r.matches, 2);
        assert!((r.median_w_ratio - 1.05).abs() < 1e-12, "{r:?}");
        assert!((r.median_h_ratio - 1.05).abs() < 1e-12);
        assert!((r.mean_edge_error[0] + 0.025).abs() < 1e-12 && (r.mean_edge_error[3] - 0.025).abs() < 1e-12, "{r:?}");
        assert!((r.mean_iou - (1.0 + 1.0 / 1.21) / 2.0).abs() < 1e-12);
        assert!(BoxFitReport::compute(&gt, &preds, 0.95).is_none());
    }
}
