//! CLEAR MOT (Bernardin & Stiefelhagen 2008) as TrackEval's `CLEAR` computes it: per frame an
//! optimal IoU ≥ 0.5 matching that prefers continuing last frame's pairs; an ID switch when a
//! ground-truth object is matched to another track than the one it last had; a
//! fragmentation each time a tracked object is picked up again after a gap.

use serde::Serialize;

use super::Data;
use crate::assign::solve;
use crate::error::Result;

const THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Clear {
    pub tp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub fp: u64,
    pub idsw: u64,
    pub frag: u64,
    /// Mostly tracked (> 80 % of its frames matched), partly (≥ 20 %), mostly lost.
    pub mt: u64,
    pub pt: u64,
    pub ml: u64,
    /// Sum of the matched pairs' IoU.
    pub motp_sum: f64,
}

impl Clear {
    pub fn mota(&self) -> f64 {
        (self.tp as f64 - self.fp as f64 - self.idsw as f64) / (self.tp + self.fn_).max(1) as f64
    }

    pub fn motp(&self) -> f64 {
        self.motp_sum / self.tp.max(1) as f64
    }

    pub(crate) fn evaluate(data: &Data) -> Result<Clear> {
        let mut res = Clear::default();
        if data.pred_dets == 0 {
            return Ok(Clear { fn_: data.gt_dets as u64, ml: data.gt_ids as u64, ..res });
        }
        if data.gt_dets == 0 {
            return Ok(Clear { fp: data.pred_dets as u64, ..res });
        }
        let n = data.gt_ids;
        let mut gt_count = vec![0u64; n];
        let mut matched_count = vec![0u64; n];
        let mut frag_count = vec![0u64; n];
        // Track each object last had, ever and in the last frame scored (both sides present).
        let mut last_ever: Vec<Option<usize>> = vec![None; n];
        let mut last_step: Vec<Option<usize>> = vec![None; n];
        for f in &data.frames {
            if f.gt.is_empty() {
                res.fp += f.pred.len() as u64;
                continue;
            }
            if f.pred.is_empty() {
                res.fn_ += f.gt.len() as u64;
                for &g in &f.gt {
                    gt_count[g] += 1;
                }
                continue;
            }
            let (ng, np) = (f.gt.len(), f.pred.len());
            // Score: 1000 for continuing last frame's pair, plus IoU; 0 under the threshold.
            let mut score = vec![0.0; ng * np];
            for (i, &g) in f.gt.iter().enumerate() {
                for (j, &p) in f.pred.iter().enumerate() {
                    let s = f.sim(i, j);
                    let cont = if last_step[g] == Some(p) { 1000.0 } else { 0.0 };
                    score[i * np + j] = if s < THRESHOLD - f64::EPSILON { 0.0 } else { cont + s };
                }
            }
            let neg: Vec<f64> = score.iter().map(|s| -s).collect();
            let matches: Vec<(usize, usize)> =
                solve(ng, np, &neg, false)?.into_iter().filter(|&(i, j)| score[i * np + j] > f64::EPSILON).collect();
            for &(i, j) in &matches {
                let (g, p) = (f.gt[i], f.pred[j]);
                if last_ever[g].is_some_and(|q| q != p) {
                    res.idsw += 1;
                }
                matched_count[g] += 1;
                res.motp_sum += f.sim(i, j);
            }
            for &g in &f.gt {
                gt_count[g] += 1;
            }
            let was_tracked: Vec<bool> = last_step.iter().map(Option::is_some).collect();
            last_step.iter_mut().for_each(|s| *s = None);
            for &(i, j) in &matches {
                let (g, p) = (f.gt[i], f.pred[j]);
                last_ever[g] = Some(p);
                last_step[g] = Some(p);
                if !was_tracked[g] {
                    frag_count[g] += 1;
                }
            }
            let m = matches.len() as u64;
            res.tp += m;
            res.fn_ += ng as u64 - m;
            res.fp += np as u64 - m;
        }
        for g in 0..n {
            if gt_count[g] == 0 {
                continue;
            }
            let ratio = matched_count[g] as f64 / gt_count[g] as f64;
            if ratio > 0.8 {
                res.mt += 1;
            } else if ratio >= 0.2 {
                res.pt += 1;
            }
        }
        res.ml = n as u64 - res.mt - res.pt;
        res.frag = frag_count.iter().filter(|&&c| c > 0).map(|c| c - 1).sum();
        Ok(res)
    }

    pub(crate) fn combine<'a>(all: impl Iterator<Item = &'a Clear>) -> Clear {
        all.fold(Clear::default(), |a, b| Clear {
            tp: a.tp + b.tp,
            fn_: a.fn_ + b.fn_,
            fp: a.fp + b.fp,
            idsw: a.idsw + b.idsw,
            frag: a.frag + b.frag,
            mt: a.mt + b.mt,
            pt: a.pt + b.pt,
            ml: a.ml + b.ml,
            motp_sum: a.motp_sum + b.motp_sum,
        })
    }
}
