//! Per-image object counting error: how far the number of confident detections is from the
//! number of annotated objects (herd counts, weed density).

use std::collections::HashMap;

use serde::Serialize;

use crate::dataset::coco::{CocoDataset, CocoPrediction};

#[derive(Debug, Clone, Serialize)]
pub struct CountReport {
    pub score_threshold: f64,
    pub images: usize,
    /// Mean absolute error of the per-image count over all classes together.
    pub count_mae: f64,
    pub count_rmse: f64,
    /// Mean signed error (predicted - true): positive means over-counting.
    pub count_bias: f64,
    /// Per category name: (MAE, RMSE) of that category's per-image count.
    pub per_class: HashMap<String, (f64, f64)>,
}

impl CountReport {
    pub fn compute(gt: &CocoDataset, preds: &[CocoPrediction], score_threshold: f64) -> Self {
        let images: Vec<u64> = gt.images.iter().map(|i| i.id).collect();
        let mut truth: HashMap<(u64, u64), f64> = HashMap::new();
        let mut found: HashMap<(u64, u64), f64> = HashMap::new();
        for a in gt.annotations.iter().filter(|a| !a.iscrowd) {
            *truth.entry((a.image_id, a.category_id)).or_default() += 1.0;
        }
        for p in preds.iter().filter(|p| p.score >= score_threshold) {
            *found.entry((p.image_id, p.category_id)).or_default() += 1.0;
        }
        let errors = |cats: &[u64]| -> (f64, f64, f64) {
            let n = images.len().max(1) as f64;
            let (mut abs, mut sq, mut signed) = (0.0, 0.0, 0.0);
            for &im in &images {
                let t: f64 = cats.iter().map(|&c| truth.get(&(im, c)).copied().unwrap_or(0.0)).sum();
                let f: f64 = cats.iter().map(|&c| found.get(&(im, c)).copied().unwrap_or(0.0)).sum();
                abs += (f - t).abs();
                sq += (f - t) * (f - t);
                signed += f - t;
            }
            (abs / n, (sq / n).sqrt(), signed / n)
        };
        let all: Vec<u64> = gt.categories.iter().map(|c| c.id).collect();
        let (count_mae, count_rmse, count_bias) = errors(&all);
        let per_class = gt
            .categories
            .iter()
            .map(|c| {
                let (mae, rmse, _) = errors(&[c.id]);
                (c.name.clone(), (mae, rmse))
            })
            .collect();
        CountReport { score_threshold, images: images.len(), count_mae, count_rmse, count_bias, per_class }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::coco::{CocoAnnotation, CocoCategory, CocoImage};

    #[test]
    fn counts() {
        let ann = |id, image_id| CocoAnnotation {
            id,
            image_id,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            area: None,
            iscrowd: false,
            segmentation: None,
        };
        let gt = CocoDataset {
            info: None,
            images: (1..=2).map(|id| CocoImage { id, file_name: format!("{id}.jpg"), width: 10, height: 10 }).collect(),
            annotations: vec![ann(1, 1), ann(2, 1), ann(3, 2)],
            categories: vec![CocoCategory { id: 1, name: "cow".into(), supercategory: None }],
        };
        let p = |image_id, score| CocoPrediction { image_id, category_id: 1, bbox: [0.0, 0.0, 1.0, 1.0], score };
        // image 1: 2 true, 1 confident; image 2: 1 true, 3 confident.
        let preds = [p(1, 0.9), p(1, 0.1), p(2, 0.8), p(2, 0.7), p(2, 0.6)];
        let r = CountReport::compute(&gt, &preds, 0.5);
        assert_eq!(r.count_mae, 1.5);
        assert!((r.count_rmse - (2.5f64).sqrt()).abs() < 1e-12);
        assert_eq!(r.count_bias, 0.5);
    }
}
