//! SimOTA label assignment (YOLOX, Ge et al. 2021, as in YOLOX 0.3's `get_assignments`), on
//! the host from detached predictions: each ground-truth box takes the `k` anchors with the
//! lowest cost (classification BCE + 3 · −log IoU), `k` being the sum of its 10 best IoUs;
//! only anchors whose centre lies within 1.5 strides of the box centre can take it, and an
//! anchor wanted by several boxes goes to the cheapest.

use fieldkit_core::metrics::boxes::iou;

pub use crate::data::boxes::GtBox;

/// Anchor points of a square input: grid cell and stride of each, in the head's order
/// (strides in turn, each grid row-major).
#[derive(Debug, Clone)]
pub struct Anchors {
    pub gx: Vec<f32>,
    pub gy: Vec<f32>,
    pub stride: Vec<f32>,
}

impl Anchors {
    pub fn new(size: u32, strides: &[u32]) -> Self {
        let (mut gx, mut gy, mut stride) = (Vec::new(), Vec::new(), Vec::new());
        for &s in strides {
            let n = size / s;
            for y in 0..n {
                for x in 0..n {
                    gx.push(x as f32);
                    gy.push(y as f32);
                    stride.push(s as f32);
                }
            }
        }
        Anchors { gx, gy, stride }
    }

    pub fn len(&self) -> usize {
        self.gx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gx.is_empty()
    }

    /// Decodes anchor `a`'s raw box `[dx, dy, log w, log h]` to `[x1, y1, x2, y2]` pixels.
    pub fn decode(&self, a: usize, r: &[f32]) -> [f32; 4] {
        let s = self.stride[a];
        let cx = (r[0] + self.gx[a]) * s;
        let cy = (r[1] + self.gy[a]) * s;
        // exp of an untrained logit can overflow; boxes this size are meaningless anyway.
        let w = r[2].clamp(-20.0, 20.0).exp() * s;
        let h = r[3].clamp(-20.0, 20.0).exp() * s;
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

/// A positive anchor: which ground truth it learns and the IoU its prediction had with it
/// (the soft class target).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive {
    pub anchor: usize,
    pub gt: usize,
    pub iou: f32,
}

/// Radius, in strides, around a box centre inside which anchors may take the box.
pub const CENTER_RADIUS: f32 = 1.5;
const CANDIDATE_K: usize = 10;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Assigns anchors to `gts` for one image. `pred`: `[anchors, 5 + classes]` raw logits as
/// the head gives them.
pub fn simota(pred: &[f32], num_classes: usize, anchors: &Anchors, gts: &[GtBox]) -> Vec<Positive> {
    let row = 5 + num_classes;
    debug_assert_eq!(pred.len(), anchors.len() * row);
    if gts.is_empty() {
        return Vec::new();
    }
    // Candidate anchors: centre within CENTER_RADIUS strides of some box centre.
    let near = |a: usize, g: &GtBox| {
        let s = anchors.stride[a];
        let (ax, ay) = ((anchors.gx[a] + 0.5) * s, (anchors.gy[a] + 0.5) * s);
        let (cx, cy) = ((g.bbox[0] + g.bbox[2]) / 2.0, (g.bbox[1] + g.bbox[3]) / 2.0);
        let r = CENTER_RADIUS * s;
        (ax - cx).abs() < r && (ay - cy).abs() < r
    };
    let cand: Vec<usize> = (0..anchors.len()).filter(|&a| gts.iter().any(|g| near(a, g))).collect();
    if cand.is_empty() {
        return Vec::new();
    }
    let boxes: Vec<[f32; 4]> = cand.iter().map(|&a| anchors.decode(a, &pred[a * row..a * row + 4])).collect();
    let (g_n, c_n) = (gts.len(), cand.len());
    let mut ious = vec![0f32; g_n * c_n];
    let mut cost = vec![0f32; g_n * c_n];
    for (j, &a) in cand.iter().enumerate() {
        let r = &pred[a * row..(a + 1) * row];
        let obj = sigmoid(r[4]);
        // BCE of sqrt(cls · obj) against the one-hot class, summed over classes.
        let p: Vec<f32> = r[5..].iter().map(|&c| (sigmoid(c) * obj).sqrt().clamp(1e-7, 1.0 - 1e-7)).collect();
        let neg_sum: f32 = p.iter().map(|q| -(1.0 - q).ln()).sum();
        for (i, g) in gts.iter().enumerate() {
            let v = iou(&g.bbox, &boxes[j]);
            ious[i * c_n + j] = v;
            let q = p[g.class.min(num_classes - 1)];
            let cls_cost = neg_sum + (1.0 - q).ln() - q.ln();
            let penalty = if near(a, g) { 0.0 } else { 1e6 };
            cost[i * c_n + j] = cls_cost + 3.0 * -(v + 1e-8).ln() + penalty;
        }
    }
    // Dynamic k per box, then its k cheapest candidates.
    let mut matched: Vec<Option<(usize, f32)>> = vec![None; c_n];
    for i in 0..g_n {
        let row_iou = &ious[i * c_n..(i + 1) * c_n];
        let mut top = row_iou.to_vec();
        top.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
        let k = (top.iter().take(CANDIDATE_K.min(c_n)).sum::<f32>() as usize).max(1).min(c_n);
        let row_cost = &cost[i * c_n..(i + 1) * c_n];
        let mut order: Vec<usize> = (0..c_n).collect();
        order.sort_by(|&a, &b| {
            row_cost[a].partial_cmp(&row_cost[b]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        for &j in order.iter().take(k) {
            // An anchor wanted by several boxes goes to the one it costs least.
            match matched[j] {
                Some((_, c)) if c <= row_cost[j] => {}
                _ => matched[j] = Some((i, row_cost[j])),
            }
        }
    }
    matched
        .iter()
        .enumerate()
        .filter_map(|(j, m)| m.map(|(g, _)| Positive { anchor: cand[j], gt: g, iou: ious[g * c_n + j] }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prediction that puts a `w`×`h` box centred on the anchor's cell centre.
    fn set_box(pred: &mut [f32], row: usize, anchors: &Anchors, a: usize, w: f32, h: f32) {
        let s = anchors.stride[a];
        pred[a * row..a * row + 4].copy_from_slice(&[0.5, 0.5, (w / s).ln(), (h / s).ln()]);
    }

    #[test]
    fn anchors_follow_the_head_layout() {
        let a = Anchors::new(64, &[8, 16, 32]);
        assert_eq!(a.len(), 64 + 16 + 4);
        assert_eq!((a.gx[9], a.gy[9], a.stride[9]), (1.0, 1.0, 8.0));
        assert_eq!((a.gx[64], a.stride[64]), (0.0, 16.0));
        let b = a.decode(9, &[0.5, 0.5, 0.0, 0.0]);
        assert_eq!(b, [8.0, 8.0, 16.0, 16.0]);
    }

    #[test]
    fn each_box_gets_nearby_anchors_and_good_predictions_win() {
        let anchors = Anchors::new(64, &[8, 16, 32]);
        let nc = 2;
        let row = 5 + nc;
        let mut pred = vec![0f32; anchors.len() * row];
        for a in 0..anchors.len() {
            pred[a * row + 2] = -3.0; // tiny boxes everywhere
            pred[a * row + 3] = -3.0;
        }
        let gts =
            [GtBox { class: 1, bbox: [4.0, 4.0, 20.0, 20.0] }, GtBox { class: 0, bbox: [36.0, 36.0, 60.0, 60.0] }];
        // Anchor (1, 1) at stride 8 predicts the first box exactly.
        set_box(&mut pred, row, &anchors, 9, 16.0, 16.0);
        let pos = simota(&pred, nc, &anchors, &gts);
        assert!(pos.iter().any(|p| p.anchor == 9 && p.gt == 0 && p.iou > 0.99), "{pos:?}");
        for p in &pos {
            let s = anchors.stride[p.anchor];
            let g = gts[p.gt].bbox;
            let (ax, ay) = ((anchors.gx[p.anchor] + 0.5) * s, (anchors.gy[p.anchor] + 0.5) * s);
            assert!((ax - (g[0] + g[2]) / 2.0).abs() < 1.5 * s && (ay - (g[1] + g[3]) / 2.0).abs() < 1.5 * s);
        }
        assert!(pos.iter().any(|p| p.gt == 1), "the second box got no anchor: {pos:?}");
        // No anchor is assigned twice.
        let mut a: Vec<usize> = pos.iter().map(|p| p.anchor).collect();
        a.sort();
        a.dedup();
        assert_eq!(a.len(), pos.len());
        assert!(simota(&pred, nc, &anchors, &[]).is_empty());
    }

    #[test]
    fn dynamic_k_grows_with_prediction_quality() {
        let anchors = Anchors::new(64, &[8]);
        let row = 6;
        let g = [GtBox { class: 0, bbox: [16.0, 16.0, 48.0, 48.0] }];
        let mut bad = vec![0f32; anchors.len() * row];
        for a in 0..anchors.len() {
            bad[a * row + 2] = -2.0;
            bad[a * row + 3] = -2.0;
        }
        let mut good = bad.clone();
        for a in 0..anchors.len() {
            // Every anchor predicts the box itself.
            let s = anchors.stride[a];
            good[a * row..a * row + 4].copy_from_slice(&[
                32.0 / s - anchors.gx[a],
                32.0 / s - anchors.gy[a],
                4f32.ln(),
                4f32.ln(),
            ]);
        }
        let (nb, ng) = (simota(&bad, 1, &anchors, &g).len(), simota(&good, 1, &anchors, &g).len());
        // 2x2 anchor centres lie within 1.5 strides of the box centre; all of them fit it.
        assert_eq!(nb, 1);
        assert_eq!(ng, 4);
    }
}
