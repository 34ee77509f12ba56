//! YOLOX's loss on the head output, after SimOTA assignment: `5 · IoU loss + objectness BCE +
//! class BCE (+ L1 on the raw box in the last epochs)`, each summed and divided by the
//! number of positive anchors in the batch. The class target of a positive anchor is its
//! one-hot class scaled by the IoU its prediction reached (IoU-aware classification).

use burn::prelude::*;
use burn::tensor::Int;

use super::assign::{simota, Anchors, GtBox};
use crate::model::to_host;

/// Box regression loss on positive anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BoxLoss {
    /// YOLOX's default: 1 − IoU².
    Iou,
    /// 1 − GIoU: informative for boxes that do not overlap yet.
    Giou,
}

/// The loss terms of one batch (already divided by the positive count).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossParts {
    pub total: f64,
    pub iou: f64,
    pub obj: f64,
    pub cls: f64,
    pub l1: f64,
    pub positives: usize,
}

pub const IOU_WEIGHT: f64 = 5.0;

/// Binary cross-entropy on logits, elementwise and numerically stable:
/// max(x, 0) − x·t + ln(1 + e^−|x|).
pub fn bce_with_logits<const D: usize>(x: Tensor<D>, t: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) - x.clone() * t + (x.abs().neg().exp() + 1.0).log()
}

/// Column `i` of a `[n, k]` tensor as `[n, 1]`.
fn col(t: &Tensor<2>, i: usize) -> Tensor<2> {
    t.clone().narrow(1, i, 1)
}

fn host2(v: Vec<f32>, cols: usize, device: &Device) -> Tensor<2> {
    let n = v.len() / cols.max(1);
    Tensor::from_data(TensorData::new(v, [n, cols]), device)
}

/// The loss of `out` (`[batch, anchors, 5 + classes]` logits) against each image's boxes.
pub fn yolox_loss(
    out: Tensor<3>,
    gts: &[Vec<GtBox>],
    anchors: &Anchors,
    box_loss: BoxLoss,
    use_l1: bool,
) -> (Tensor<1>, LossParts) {
    let device = out.device();
    let [b, a, row] = out.dims();
    let nc = row - 5;
    assert_eq!(a, anchors.len(), "head anchors vs the input size");
    let host = to_host(out.clone().inner());
    let mut fg: Vec<i64> = Vec::new();
    let mut obj_t = vec![0f32; b * a];
    let (mut cls_t, mut box_t, mut l1_t, mut grid) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, g) in gts.iter().enumerate().take(b) {
        for p in simota(&host[i * a * row..(i + 1) * a * row], nc, anchors, g) {
            let idx = i * a + p.anchor;
            fg.push(idx as i64);
            obj_t[idx] = 1.0;
            let mut onehot = vec![0f32; nc];
            onehot[g[p.gt].class.min(nc - 1)] = p.iou.max(0.0);
            cls_t.extend(onehot);
            let [x1, y1, x2, y2] = g[p.gt].bbox;
            box_t.extend([x1, y1, x2, y2]);
            let s = anchors.stride[p.anchor];
            let (gx, gy) = (anchors.gx[p.anchor], anchors.gy[p.anchor]);
            l1_t.extend([
                (x1 + x2) / 2.0 / s - gx,
                (y1 + y2) / 2.0 / s - gy,
                ((x2 - x1) / s + 1e-8).ln(),
                ((y2 - y1) / s + 1e-8).ln(),
            ]);
            grid.extend([gx, gy, s]);
        }
    }
    let positives = fg.len();
    let norm = positives.max(1) as f64;
    let flat = out.reshape([b * a, row]);
    let obj = bce_with_logits(flat.clone().narrow(1, 4, 1), host2(obj_t, 1, &device)).sum() / norm;
    let mut parts = LossParts { positives, ..Default::default() };
    parts.obj = obj.clone().into_scalar::<f64>();
    if positives == 0 {
        parts.total = parts.obj;
        return (obj, parts);
    }
    let sel = flat.select(0, Tensor::<1, Int>::from_data(TensorData::new(fg, [positives]), &device)); // [F, row]
    let cls = bce_with_logits(sel.clone().narrow(1, 5, nc), host2(cls_t, nc, &device)).sum() / norm;

    let reg = sel.narrow(1, 0, 4); // [F, 4] raw
    let grid = host2(grid, 3, &device);
    let (gx, gy, s) = (col(&grid, 0), col(&grid, 1), col(&grid, 2));
    let cx = (col(&reg, 0) + gx) * s.clone();
    let cy = (col(&reg, 1) + gy) * s.clone();
    let w = col(&reg, 2).clamp(-20.0, 20.0).exp() * s.clone();
    let h = col(&reg, 3).clamp(-20.0, 20.0).exp() * s;
    let (px1, py1) = (cx.clone() - w.clone() / 2.0, cy.clone() - h.clone() / 2.0);
    let (px2, py2) = (cx + w.clone() / 2.0, cy + h.clone() / 2.0);
    let tb = host2(box_t, 4, &device);
    let (tx1, ty1, tx2, ty2) = (col(&tb, 0), col(&tb, 1), col(&tb, 2), col(&tb, 3));
    let iw = (px2.clone().min_pair(tx2.clone()) - px1.clone().max_pair(tx1.clone())).clamp_min(0.0);
    let ih = (py2.clone().min_pair(ty2.clone()) - py1.clone().max_pair(ty1.clone())).clamp_min(0.0);
    let inter = iw * ih;
    let area_t = (tx2.clone() - tx1.clone()) * (ty2.clone() - ty1.clone());
    let union = w * h + area_t - inter.clone();
    let iou = inter / (union.clone() + 1e-16);
    let box_terms = match box_loss {
        BoxLoss::Iou => iou.clone().powi_scalar(2).neg() + 1.0,
        BoxLoss::Giou => {
            let ew = px2.max_pair(tx2) - px1.min_pair(tx1);
            let eh = py2.max_pair(ty2) - py1.min_pair(ty1);
            let enclose = ew * eh + 1e-16;
            let giou = iou - (enclose.clone() - union) / enclose;
            giou.neg() + 1.0
        }
    };
    let iou_loss = box_terms.sum() / norm;
    let mut total = iou_loss.clone() * IOU_WEIGHT + obj + cls.clone();
    parts.iou = iou_loss.into_scalar::<f64>();
    parts.cls = cls.into_scalar::<f64>();
    if use_l1 {
        let l1 = (reg - host2(l1_t, 4, &device)).abs().sum() / norm;
        parts.l1 = l1.clone().into_scalar::<f64>();
        total = total + l1;
    }
    parts.total = total.clone().into_scalar::<f64>();
    (total, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bce_matches_the_formula() {
        let d = Device::flex();
        let x = Tensor::<1>::from_floats([-30.0, -1.0, 0.0, 2.0, 30.0], &d);
        let t = Tensor::<1>::from_floats([0.0, 1.0, 0.5, 0.0, 1.0], &d);
        let got = to_host(bce_with_logits(x, t));
        let want = |x: f64, t: f64| {
            let p = 1.0 / (1.0 + (-x).exp());
            -(t * p.max(1e-300).ln() + (1.0 - t) * (1.0 - p).max(1e-300).ln())
        };
        for (g, (x, t)) in got.iter().zip([(-30.0, 0.0), (-1.0, 1.0), (0.0, 0.5), (2.0, 0.0), (30.0, 1.0)]) {
            assert!((*g as f64 - want(x, t)).abs() < 1e-5, "{g} vs {}", want(x, t));
        }
    }

    #[test]
    fn a_perfect_box_has_no_box_loss_and_a_wrong_one_does() {
        let d = Device::flex();
        let anchors = Anchors::new(32, &[8, 16, 32]);
        let a = anchors.len();
        let gts = vec![vec![GtBox { class: 0, bbox: [8.0, 8.0, 24.0, 24.0] }]];
        let mut pred = vec![0f32; a * 6];
        for i in 0..a {
            // Every anchor predicts the box exactly, confidently.
            let s = anchors.stride[i];
            pred[i * 6..i * 6 + 6].copy_from_slice(&[
                16.0 / s - anchors.gx[i],
                16.0 / s - anchors.gy[i],
                (16.0 / s).ln(),
                (16.0 / s).ln(),
                8.0,
                8.0,
            ]);
        }
        let out = Tensor::<3>::from_data(TensorData::new(pred.clone(), [1, a, 6]), &d);
        let (_, p) = yolox_loss(out, &gts, &anchors, BoxLoss::Iou, true);
        assert!(p.positives > 0);
        assert!(p.iou < 1e-5 && p.l1 < 1e-4, "{p:?}");
        for i in 0..a {
            pred[i * 6 + 2] += 1.0; // every box e times too wide
        }
        let out = Tensor::<3>::from_data(TensorData::new(pred, [1, a, 6]), &d);
        let (_, q) = yolox_loss(out.clone(), &gts, &anchors, BoxLoss::Iou, true);
        assert!(q.iou > 0.3 && q.l1 > 0.9, "{q:?}");
        let (_, g) = yolox_loss(out, &gts, &anchors, BoxLoss::Giou, false);
        assert!(g.iou > 0.3 && g.l1 == 0.0, "{g:?}");
        // An image without boxes only teaches background.
        let out = Tensor::<3>::zeros([1, a, 6], &d);
        let (_, e) = yolox_loss(out, &[vec![]], &anchors, BoxLoss::Iou, false);
        assert_eq!(e.positives, 0);
        assert!((e.total - a as f64 * std::f64::consts::LN_2).abs() < 1e-3, "{e:?}");
    }

    #[test]
    fn gradients_reach_the_predictions() {
        let d = Device::flex().autodiff();
        let anchors = Anchors::new(32, &[8, 16, 32]);
        let a = anchors.len();
        let x = Tensor::<3>::zeros([2, a, 7], &d).require_grad();
        let gts = vec![vec![GtBox { class: 1, bbox: [2.0, 2.0, 14.0, 20.0] }], vec![]];
        let (loss, p) = yolox_loss(x.clone(), &gts, &anchors, BoxLoss::Giou, true);
        assert!(p.positives > 0 && p.total.is_finite());
        let grads = loss.backward();
        let g = to_host(x.grad(&grads).expect("gradient"));
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|v| *v != 0.0));
    }
}
