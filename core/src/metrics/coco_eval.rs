//! COCO bounding-box evaluation, following pycocotools' `COCOeval` (evaluate, accumulate,
//! summarize) step for step so the numbers agree to 1e-4: IoU thresholds .50:.05:.95,
//! 101-point interpolated precision, area ranges all/small/medium/large, maxDets 1/10/100,
//! crowd boxes ignored, greedy matching in score order.
//!
//! One deliberate difference: pycocotools treats a match to a ground-truth annotation with
//! id 0 as no match (it stores ids and tests them for truth); we record matches explicitly.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dataset::coco::{CocoDataset, CocoPrediction};
use crate::error::{CoreError, Result};

const AREA_RANGES: [(f64, f64); 4] = [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];
pub const AREA_NAMES: [&str; 4] = ["all", "small", "medium", "large"];
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// `np.linspace(start, stop, num)` as numpy computes it, so threshold ties break the same.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassAp {
    pub category_id: u64,
    pub name: String,
    /// AP over IoU .50:.95 (area all, 100 detections); -1 when the class has no ground truth.
    pub ap50_95: f64,
    pub ap50: f64,
    pub num_gt: usize,
    pub num_pred: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CocoEval {
    pub map50_95: f64,
    pub map50: f64,
    pub map75: f64,
    /// pycocotools' 12 summary numbers in its order (AP, AP50, AP75, APs, APm, APl,
    /// AR1, AR10, AR100, ARs, ARm, ARl); -1 where undefined.
    pub stats: [f64; 12],
    pub per_class: Vec<ClassAp>,
    /// Interpolated precision at the 101 recall points, IoU 0.5, area all, 100 detections,
    /// per class (`-1` entries when the class has no ground truth). For PR plots.
    #[serde(skip)]
    pub pr50: Vec<Vec<f64>>,
}

struct Gt {
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

struct Dt {
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// Result of matching one image/category/area range at maxDet 100.
struct ImageEval {
    dt_scores: Vec<f64>,
    /// `[iou_thr][det]`
    dt_matched: Vec<Vec<bool>>,
    dt_ignore: Vec<Vec<bool>>,
    gt_ignore: Vec<bool>,
}

/// pycocotools' `maskUtils.iou` for boxes: union uses the boxes' own w*h, and against a
/// crowd box the union is the detection's area alone.
pub(crate) fn box_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let da = d[2] * d[3];
    let union = if crowd { da } else { da + g[2] * g[3] - inter };
    inter / union
}

fn evaluate_image(gts: &[&Gt], dts: &[&Dt], area: (f64, f64), iou_thrs: &[f64]) -> Option<ImageEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    // Ground truth: non-ignored first (stable), as pycocotools sorts by its _ignore flag.
    let ignore_of = |g: &Gt| g.crowd || g.area < area.0 || g.area > area.1;
    let mut gorder: Vec<usize> = (0..gts.len()).collect();
    gorder.sort_by_key(|&i| ignore_of(gts[i]));
    let gt_ignore: Vec<bool> = gorder.iter().map(|&i| ignore_of(gts[i])).collect();
    // dts arrive sorted by descending score and cut to 100.
    let ious: Vec<Vec<f64>> =
        dts.iter().map(|d| gorder.iter().map(|&gi| box_iou(&d.bbox, &gts[gi].bbox, gts[gi].crowd)).collect()).collect();
    let t_n = iou_thrs.len();
    let mut dt_matched = vec![vec![false; dts.len()]; t_n];
    let mut dt_ignore = vec![vec![false; dts.len()]; t_n];
    for (ti, &t) in iou_thrs.iter().enumerate() {
        let mut gt_taken = vec![false; gts.len()];
        for (di, _) in dts.iter().enumerate() {
            let mut best = t.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (gi, gcrowd) in gorder.iter().map(|&i| gts[i].crowd).enumerate() {
                if gt_taken[gi] && !gcrowd {
                    continue;
                }
                if let Some(mi) = m {
                    if !gt_ignore[mi] && gt_ignore[gi] {
                        break;
                    }
                }
                if ious[di][gi] < best {
                    continue;
                }
                best = ious[di][gi];
                m = Some(gi);
            }
            if let Some(gi) = m {
                dt_ignore[ti][di] = gt_ignore[gi];
                dt_matched[ti][di] = true;
                gt_taken[gi] = true;
            }
        }
    }
    // Unmatched detections outside the area range are ignored, not counted as false positives.
    for (di, d) in dts.iter().enumerate() {
        let outside = d.area < area.0 || d.area > area.1;
        for ti in 0..t_n {
            if !dt_matched[ti][di] && outside {
                dt_ignore[ti][di] = true;
            }
        }
    }
    Some(ImageEval { dt_scores: dts.iter().map(|d| d.score).collect(), dt_matched, dt_ignore, gt_ignore })
}

impl CocoEval {
    /// Evaluates predictions against a ground-truth set. Every prediction must refer to an
    /// image of the ground truth (as pycocotools' `loadRes` asserts); predictions of
    /// categories absent from the ground truth's category list are not scored.
    pub fn evaluate(gt: &CocoDataset, preds: &[CocoPrediction]) -> Result<Self> {
        let mut img_ids: Vec<u64> = gt.images.iter().map(|i| i.id).collect();
        img_ids.sort_unstable();
        let img_pos: HashMap<u64, usize> = img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut cats = gt.categories.clone();
        cats.sort_by_key(|c| c.id);
        let cat_pos: HashMap<u64, usize> = cats.iter().enumerate().map(|(i, c)| (c.id, i)).collect();

        let (ni, nk) = (img_ids.len(), cats.len());
        let mut gts: Vec<Vec<Gt>> = (0..ni * nk).map(|_| Vec::new()).collect();
        let mut dts: Vec<Vec<Dt>> = (0..ni * nk).map(|_| Vec::new()).collect();
        let mut num_gt = vec![0usize; nk];
        let mut num_pred = vec![0usize; nk];
        for a in &gt.annotations {
            let (Some(&i), Some(&k)) = (img_pos.get(&a.image_id), cat_pos.get(&a.category_id)) else {
                return Err(CoreError::Argument(format!("annotation {} refers to an unknown image or category", a.id)));
            };
            gts[k * ni + i].push(Gt { bbox: a.bbox, area: a.area(), crowd: a.iscrowd });
            if !a.iscrowd {
                num_gt[k] += 1;
            }
        }
        for (n, p) in preds.iter().enumerate() {
            let Some(&i) = img_pos.get(&p.image_id) else {
                return Err(CoreError::Argument(format!(
                    "prediction [{n}]: image_id {} is not in the ground truth",
                    p.image_id
                )));
            };
            if let Some(&k) = cat_pos.get(&p.category_id) {
                dts[k * ni + i].push(Dt { bbox: p.bbox, area: p.bbox[2] * p.bbox[3], score: p.score });
                num_pred[k] += 1;
            }
        }
        for cell in &mut dts {
            // Stable descending sort by score, then keep the best 100 (computeIoU / evaluateImg).
            cell.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
            cell.truncate(MAX_DETS[2]);
        }

        let iou_thrs = linspace(0.5, 0.95, 10);
        let rec_thrs = linspace(0.0, 1.0, 101);
        let (t_n, r_n, a_n, m_n) = (iou_thrs.len(), rec_thrs.len(), AREA_RANGES.len(), MAX_DETS.len());
        // precision[t][r][k][a][m], recall[t][k][a][m], -1 = undefined.
        let pidx = |t: usize, r: usize, k: usize, a: usize, m: usize| (((t * r_n + r) * nk + k) * a_n + a) * m_n + m;
        let ridx = |t: usize, k: usize, a: usize, m: usize| ((t * nk + k) * a_n + a) * m_n + m;
        let mut precision = vec![-1.0f64; t_n * r_n * nk * a_n * m_n];
        let mut recall = vec![-1.0f64; t_n * nk * a_n * m_n];

        for k in 0..nk {
            for (a, &rng) in AREA_RANGES.iter().enumerate() {
                let evals: Vec<ImageEval> = (0..ni)
                    .filter_map(|i| {
                        let g: Vec<&Gt> = gts[k * ni + i].iter().collect();
                        let d: Vec<&Dt> = dts[k * ni + i].iter().collect();
                        evaluate_image(&g, &d, rng, &iou_thrs)
                    })
                    .collect();
                let npig = evals.iter().flat_map(|e| &e.gt_ignore).filter(|&&ig| !ig).count();
                if npig == 0 {
                    continue;
                }
                for (m, &max_det) in MAX_DETS.iter().enumerate() {
                    // Concatenate each image's first max_det detections, then a stable sort
                    // by descending score across images (np.argsort(-s, kind='mergesort')).
                    let mut entries: Vec<(f64, usize, usize)> = Vec::new();
                    for (ei, e) in evals.iter().enumerate() {
                        for di in 0..e.dt_scores.len().min(max_det) {
                            entries.push((e.dt_scores[di], ei, di));
                        }
                    }
                    entries.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
                    for t in 0..t_n {
                        let (mut tp, mut fp) = (0.0f64, 0.0f64);
                        let mut rc = Vec::with_capacity(entries.len());
                        let mut pr = Vec::with_capacity(entries.len());
                        for &(_, ei, di) in &entries {
                            let e = &evals[ei];
                            if e.dt_ignore[t][di] {
                                // Ignored detections add neither TP nor FP but still occupy a slot.
                            } else if e.dt_matched[t][di] {
                                tp += 1.0;
                            } else {
                                fp += 1.0;
                            }
                            rc.push(tp / npig as f64);
                            pr.push(tp / (fp + tp + f64::EPSILON));
                        }
                        recall[ridx(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                        for i in (1..pr.len()).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        for (ri, &thr) in rec_thrs.iter().enumerate() {
                            let pos = rc.partition_point(|&r| r < thr);
                            precision[pidx(t, ri, k, a, m)] = if pos < pr.len() { pr[pos] } else { 0.0 };
                        }
                    }
                }
            }
        }

        let mean_defined = |vals: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = vals.filter(|&x| x > -1.0).collect();
            if v.is_empty() {
                -1.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let ap = |t: Option<usize>, a: usize, m: usize| {
            let ts: Vec<usize> = t.map(|t| vec![t]).unwrap_or_else(|| (0..t_n).collect());
            mean_defined(
                &mut ts
                    .iter()
                    .flat_map(|&t| (0..r_n).flat_map(move |r| (0..nk).map(move |k| (t, r, k))))
                    .map(|(t, r, k)| precision[pidx(t, r, k, a, m)]),
            )
        };
        let ar = |a: usize, m: usize| {
            mean_defined(
                &mut (0..t_n).flat_map(|t| (0..nk).map(move |k| (t, k))).map(|(t, k)| recall[ridx(t, k, a, m)]),
            )
        };
        let t75 = iou_thrs.iter().position(|&t| (t - 0.75).abs() < 1e-9).unwrap();
        let stats = [
            ap(None, 0, 2),
            ap(Some(0), 0, 2),
            ap(Some(t75), 0, 2),
            ap(None, 1, 2),
            ap(None, 2, 2),
            ap(None, 3, 2),
            ar(0, 0),
            ar(0, 1),
            ar(0, 2),
            ar(1, 2),
            ar(2, 2),
            ar(3, 2),
        ];
        let per_class = cats
            .iter()
            .enumerate()
            .map(|(k, c)| ClassAp {
                category_id: c.id,
                name: c.name.clone(),
                ap50_95: mean_defined(
                    &mut (0..t_n)
                        .flat_map(|t| (0..r_n).map(move |r| (t, r)))
                        .map(|(t, r)| precision[pidx(t, r, k, 0, 2)]),
                ),
                ap50: mean_defined(&mut (0..r_n).map(|r| precision[pidx(0, r, k, 0, 2)])),
                num_gt: num_gt[k],
                num_pred: num_pred[k],
            })
            .collect();
        let pr50 = (0..nk).map(|k| (0..r_n).map(|r| precision[pidx(0, r, k, 0, 2)]).collect()).collect();
        Ok(CocoEval { map50_95: stats[0], map50: stats[1], map75: stats[2], stats, per_class, pr50 })
    }

    /// pycocotools-style summary lines plus a per-class table.
    pub fn table(&self) -> String {
        let labels = [
            ("Average Precision", "0.50:0.95", "all", 100),
            ("Average Precision", "0.50", "all", 100),
            ("Average Precision", "0.75", "all", 100),
            ("Average Precision", "0.50:0.95", "small", 100),
            ("Average Precision", "0.50:0.95", "medium", 100),
            ("Average Precision", "0.50:0.95", "large", 100),
            ("Average Recall", "0.50:0.95", "all", 1),
            ("Average Recall", "0.50:0.95", "all", 10),
            ("Average Recall", "0.50:0.95", "all", 100),
            ("Average Recall", "0.50:0.95", "small", 100),
            ("Average Recall", "0.50:0.95", "medium", 100),
            ("Average Recall", "0.50:0.95", "large", 100),
        ];
        let mut s = String::new();
        for ((name, iou, area, md), v) in labels.iter().zip(self.stats) {
            s += &format!(" {name:<18} @[ IoU={iou:<9} | area={area:>6} | maxDets={md:>3} ] = {v:.3}\n");
        }
        let w = self.per_class.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        s += &format!("\n{:w$}  {:>6}  {:>8}  {:>6}  {:>6}\n", "class", "AP50", "AP50-95", "gt", "pred");
        for c in &self.per_class {
            let f = |v: f64| if v < 0.0 { "   n/a".to_string() } else { format!("{v:>6.4}") };
            s += &format!("{:w$}  {}  {:>8}  {:>6}  {:>6}\n", c.name, f(c.ap50), f(c.ap50_95), c.num_gt, c.num_pred);
        }
        s
    }

    /// The JSON document `fieldkit metrics coco --json` writes.
    pub fn to_json(&self) -> serde_json::Value {
        let per_class: BTreeMap<&str, serde_json::Value> = self
            .per_class
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    serde_json::json!({
                    "category_id": c.category_id, "ap50": c.ap50, "ap50_95": c.ap50_95,
                    "num_gt": c.num_gt, "num_pred": c.num_pred }),
                )
            })
            .collect();
        serde_json::json!({
            "map50": self.map50,
            "map50_95": self.map50_95,
            "map75": self.map75,
            "stats": self.stats,
            "per_class": per_class,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::coco::{CocoAnnotation, CocoCategory, CocoImage};

    fn gt_one() -> CocoDataset {
        CocoDataset {
            info: None,
            images: vec![CocoImage { id: 1, file_name: "a.jpg".into(), width: 100, height: 100 }],
            annotations: vec![CocoAnnotation {
                id: 1,
                image_id: 1,
                category_id: 1,
                bbox: [10.0, 10.0, 40.0, 40.0],
                area: None,
                iscrowd: false,
                segmentation: None,
            }],
            categories: vec![CocoCategory { id: 1, name: "cow".into(), supercategory: None }],
        }
    }

    #[test]
    fn perfect_and_empty_predictions() {
        let gt = gt_one();
        let perfect = [CocoPrediction { image_id: 1, category_id: 1, bbox: [10.0, 10.0, 40.0, 40.0], score: 0.9 }];
        let e = CocoEval::evaluate(&gt, &perfect).unwrap();
        assert!((e.map50_95 - 1.0).abs() < 1e-12 && (e.map50 - 1.0).abs() < 1e-12);
        let e = CocoEval::evaluate(&gt, &[]).unwrap();
        assert_eq!(e.map50, 0.0);
        // A box shifted to IoU 0.54 (no threshold tie) counts at 0.5 only.
        let shifted = [CocoPrediction { image_id: 1, category_id: 1, bbox: [22.0, 10.0, 40.0, 40.0], score: 0.9 }];
        let e = CocoEval::evaluate(&gt, &shifted).unwrap();
        assert!((e.map50 - 1.0).abs() < 1e-12);
        assert!((e.map50_95 - 0.1).abs() < 1e-12, "{}", e.map50_95);
    }

    #[test]
    fn prediction_on_unknown_image_is_an_error() {
        let p = [CocoPrediction { image_id: 7, category_id: 1, bbox: [0.0; 4], score: 0.1 }];
        assert!(CocoEval::evaluate(&gt_one(), &p).unwrap_err().to_string().contains("image_id 7"));
    }
}
