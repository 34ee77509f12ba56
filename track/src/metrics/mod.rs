//! MOT metrics as TrackEval computes them (CLEAR MOT, Identity, HOTA), checked against
//! TrackEval and py-motmetrics on the golden cases in `tests/data/mot`.
//!
//! A sequence is scored frame by frame on IoU between ground-truth and predicted boxes. Ids
//! are mapped to contiguous indices first, as TrackEval's datasets do, so any integers work.
//! Frames with no boxes on either side count only through their boxes.

mod clear;
mod hota;
mod identity;

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

pub use clear::Clear;
pub use hota::{Hota, ALPHAS};
pub use identity::Identity;

use crate::error::Result;
use crate::mot::{MotRow, Sequence};

/// One frame, ids as contiguous indices: `sim[g * pred.len() + p]` is the IoU of ground-truth
/// box `g` and predicted box `p`.
pub(crate) struct Frame {
    pub gt: Vec<usize>,
    pub pred: Vec<usize>,
    pub sim: Vec<f64>,
}

impl Frame {
    pub fn sim(&self, g: usize, p: usize) -> f64 {
        self.sim[g * self.pred.len() + p]
    }
}

/// A sequence prepared for scoring.
pub(crate) struct Data {
    pub frames: Vec<Frame>,
    pub gt_ids: usize,
    pub pred_ids: usize,
    pub gt_dets: usize,
    pub pred_dets: usize,
}

impl Data {
    pub fn new(gt: &Sequence, pred: &Sequence) -> Self {
        // Ids in sorted order, as TrackEval renumbers them: the solver breaks ties by index.
        let index = |seq: &Sequence| -> HashMap<i64, usize> {
            let ids: BTreeSet<i64> = seq.frames.values().flatten().map(|r| r.id).collect();
            ids.into_iter().enumerate().map(|(k, id)| (id, k)).collect()
        };
        let (gt_map, pred_map) = (index(gt), index(pred));
        let last = gt.last_frame().max(pred.last_frame());
        let mut frames = Vec::with_capacity(last as usize);
        for f in 1..=last {
            let (g, p) = (gt.get(f), pred.get(f));
            let ids = |map: &HashMap<i64, usize>, rows: &[MotRow]| rows.iter().map(|r| map[&r.id]).collect();
            let mut sim = Vec::with_capacity(g.len() * p.len());
            for a in g {
                for b in p {
                    sim.push(box_iou(a.bbox, b.bbox));
                }
            }
            frames.push(Frame { gt: ids(&gt_map, g), pred: ids(&pred_map, p), sim });
        }
        Data { frames, gt_ids: gt_map.len(), pred_ids: pred_map.len(), gt_dets: gt.boxes(), pred_dets: pred.boxes() }
    }
}

/// IoU of two `[x, y, w, h]` boxes exactly as TrackEval's `_calculate_box_ious` computes it.
pub fn box_iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let (a1, b1) = ([a[0], a[1], a[0] + a[2], a[1] + a[3]], [b[0], b[1], b[0] + b[2], b[1] + b[3]]);
    let iw = (a1[2].min(b1[2]) - a1[0].max(b1[0])).max(0.0);
    let ih = (a1[3].min(b1[3]) - a1[1].max(b1[1])).max(0.0);
    let inter = iw * ih;
    let union = (a1[2] - a1[0]) * (a1[3] - a1[1]) + (b1[2] - b1[0]) * (b1[3] - b1[1]) - inter;
    if union <= f64::EPSILON {
        0.0
    } else {
        inter / union
    }
}

/// Every figure for one sequence (or several, combined).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MotScores {
    pub mota: f64,
    /// Mean IoU of the matched boxes (TrackEval's MOTP; py-motmetrics reports 1 − this).
    pub motp: f64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub hota: f64,
    pub deta: f64,
    pub assa: f64,
    pub loca: f64,
    pub id_switches: u64,
    pub fragmentations: u64,
    pub clear: Clear,
    pub identity: Identity,
    #[serde(rename = "hota_detail")]
    pub hota_detail: Hota,
    pub gt_boxes: usize,
    pub pred_boxes: usize,
    pub gt_ids: usize,
    pub pred_ids: usize,
}

impl MotScores {
    fn from_parts(clear: Clear, identity: Identity, hota: Hota, counts: [usize; 4]) -> Self {
        MotScores {
            mota: clear.mota(),
            motp: clear.motp(),
            idf1: identity.idf1(),
            idp: identity.idp(),
            idr: identity.idr(),
            hota: hota.hota(),
            deta: hota.deta(),
            assa: hota.assa(),
            loca: hota.loca(),
            id_switches: clear.idsw,
            fragmentations: clear.frag,
            clear,
            identity,
            hota_detail: hota,
            gt_boxes: counts[0],
            pred_boxes: counts[1],
            gt_ids: counts[2],
            pred_ids: counts[3],
        }
    }

    /// Several sequences as one benchmark, as TrackEval combines them: counts summed, HOTA's
    /// association and localisation averaged weighted by true positives.
    pub fn combine(all: &[MotScores]) -> MotScores {
        let clear = Clear::combine(all.iter().map(|s| &s.clear));
        let identity = Identity::combine(all.iter().map(|s| &s.identity));
        let hota = Hota::combine(all.iter().map(|s| &s.hota_detail));
        let sum = |f: fn(&MotScores) -> usize| all.iter().map(f).sum();
        let counts = [sum(|s| s.gt_boxes), sum(|s| s.pred_boxes), sum(|s| s.gt_ids), sum(|s| s.pred_ids)];
        Self::from_parts(clear, identity, hota, counts)
    }

    /// A text table of the headline figures.
    pub fn table(&self) -> String {
        format!(
            "HOTA {:.4}  DetA {:.4}  AssA {:.4}  LocA {:.4}\nMOTA {:.4}  MOTP {:.4}  IDF1 {:.4}  IDP {:.4}  IDR {:.4}\n\
             ID switches {}  fragmentations {}  TP {}  FN {}  FP {}  MT {}  PT {}  ML {}\n\
             ground truth: {} boxes, {} ids; predictions: {} boxes, {} ids\n",
            self.hota,
            self.deta,
            self.assa,
            self.loca,
            self.mota,
            self.motp,
            self.idf1,
            self.idp,
            self.idr,
            self.id_switches,
            self.fragmentations,
            self.clear.tp,
            self.clear.fn_,
            self.clear.fp,
            self.clear.mt,
            self.clear.pt,
            self.clear.ml,
            self.gt_boxes,
            self.gt_ids,
            self.pred_boxes,
            self.pred_ids
        )
    }
}

/// Scores predicted tracks against ground truth (IoU ≥ 0.5 for CLEAR and Identity, HOTA over
/// its 19 thresholds).
pub fn evaluate(gt: &Sequence, pred: &Sequence) -> Result<MotScores> {
    let data = Data::new(gt, pred);
    let clear = Clear::evaluate(&data)?;
    let identity = Identity::evaluate(&data)?;
    let hota = Hota::evaluate(&data)?;
    Ok(MotScores::from_parts(clear, identity, hota, [data.gt_dets, data.pred_dets, data.gt_ids, data.pred_ids]))
}
