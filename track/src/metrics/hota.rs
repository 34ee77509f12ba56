//! HOTA (Luiten et al., IJCV 2021) as TrackEval's `HOTA` computes it: per frame an optimal
//! matching scored by IoU times the pair's global alignment (how much of their lives the two
//! ids overlap), then at each of 19 IoU thresholds α = 0.05 … 0.95 detection accuracy
//! DetA = TP / (TP + FN + FP), association accuracy AssA (per matched pair, the share of the
//! two tracks' frames they are matched in) and HOTA = √(DetA · AssA); headline figures are
//! the means over α.

use serde::Serialize;

use super::Data;
use crate::assign::solve;
use crate::error::Result;

/// The 19 thresholds, computed as numpy's `arange(0.05, 0.99, 0.05)` does.
pub const ALPHAS: [f64; 19] = {
    let mut a = [0.0; 19];
    let mut i = 0;
    while i < 19 {
        a[i] = 0.05 + i as f64 * 0.05;
        i += 1;
    }
    a
};

/// Per-threshold counts and averages; the figures are their means over [`ALPHAS`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hota {
    pub tp: Vec<f64>,
    #[serde(rename = "fn")]
    pub fn_: Vec<f64>,
    pub fp: Vec<f64>,
    pub assa_per_alpha: Vec<f64>,
    pub assre_per_alpha: Vec<f64>,
    pub asspr_per_alpha: Vec<f64>,
    pub loca_per_alpha: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

impl Hota {
    fn zeros() -> Self {
        let z = vec![0.0; ALPHAS.len()];
        Hota {
            tp: z.clone(),
            fn_: z.clone(),
            fp: z.clone(),
            assa_per_alpha: z.clone(),
            assre_per_alpha: z.clone(),
            asspr_per_alpha: z.clone(),
            loca_per_alpha: z,
        }
    }

    pub fn deta_per_alpha(&self) -> Vec<f64> {
        (0..ALPHAS.len()).map(|a| self.tp[a] / (self.tp[a] + self.fn_[a] + self.fp[a]).max(1.0)).collect()
    }

    pub fn detre_per_alpha(&self) -> Vec<f64> {
        (0..ALPHAS.len()).map(|a| self.tp[a] / (self.tp[a] + self.fn_[a]).max(1.0)).collect()
    }

    pub fn detpr_per_alpha(&self) -> Vec<f64> {
        (0..ALPHAS.len()).map(|a| self.tp[a] / (self.tp[a] + self.fp[a]).max(1.0)).collect()
    }

    pub fn hota_per_alpha(&self) -> Vec<f64> {
        self.deta_per_alpha().iter().zip(&self.assa_per_alpha).map(|(d, a)| (d * a).sqrt()).collect()
    }

    pub fn hota(&self) -> f64 {
        mean(&self.hota_per_alpha())
    }
    pub fn deta(&self) -> f64 {
        mean(&self.deta_per_alpha())
    }
    pub fn assa(&self) -> f64 {
        mean(&self.assa_per_alpha)
    }
    pub fn loca(&self) -> f64 {
        mean(&self.loca_per_alpha)
    }
    pub fn detre(&self) -> f64 {
        mean(&self.detre_per_alpha())
    }
    pub fn detpr(&self) -> f64 {
        mean(&self.detpr_per_alpha())
    }
    pub fn assre(&self) -> f64 {
        mean(&self.assre_per_alpha)
    }
    pub fn asspr(&self) -> f64 {
        mean(&self.asspr_per_alpha)
    }

    // Per-threshold arrays indexed side by side, as in TrackEval.
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn evaluate(data: &Data) -> Result<Hota> {
        let mut res = Hota::zeros();
        let k = ALPHAS.len();
        if data.pred_dets == 0 || data.gt_dets == 0 {
            res.fn_ = vec![data.gt_dets as f64; k];
            res.fp = vec![data.pred_dets as f64; k];
            res.loca_per_alpha = vec![1.0; k];
            return Ok(res);
        }
        let (ng, np) = (data.gt_ids, data.pred_ids);
        // Global alignment: how much each pair of ids overlaps over their lives, each frame's
        // IoU shared out as in a soft matching.
        let mut potential = vec![0.0f64; ng * np];
        let mut gt_count = vec![0.0f64; ng];
        let mut pred_count = vec![0.0f64; np];
        for f in &data.frames {
            let (fg, fp) = (f.gt.len(), f.pred.len());
            let col: Vec<f64> = (0..fp).map(|j| (0..fg).map(|i| f.sim(i, j)).sum()).collect();
            let row: Vec<f64> = (0..fg).map(|i| (0..fp).map(|j| f.sim(i, j)).sum()).collect();
            for (i, &g) in f.gt.iter().enumerate() {
                for (j, &p) in f.pred.iter().enumerate() {
                    let s = f.sim(i, j);
                    let denom = col[j] + row[i] - s;
                    if denom > f64::EPSILON {
                        potential[g * np + p] += s / denom;
                    }
                }
            }
            f.gt.iter().for_each(|&g| gt_count[g] += 1.0);
            f.pred.iter().for_each(|&p| pred_count[p] += 1.0);
        }
        let align: Vec<f64> =
            (0..ng * np).map(|c| potential[c] / (gt_count[c / np] + pred_count[c % np] - potential[c])).collect();
        let mut matches = vec![vec![0.0f64; ng * np]; k];
        for f in &data.frames {
            let (fg, fp) = (f.gt.len(), f.pred.len());
            if fg == 0 || fp == 0 {
                for a in 0..k {
                    res.fp[a] += fp as f64;
                    res.fn_[a] += fg as f64;
                }
                continue;
            }
            let mut neg = vec![0.0; fg * fp];
            for (i, &g) in f.gt.iter().enumerate() {
                for (j, &p) in f.pred.iter().enumerate() {
                    neg[i * fp + j] = -(align[g * np + p] * f.sim(i, j));
                }
            }
            let pairs = solve(fg, fp, &neg, false)?;
            for (a, alpha) in ALPHAS.iter().enumerate() {
                let mut m = 0usize;
                for &(i, j) in &pairs {
                    let s = f.sim(i, j);
                    if s >= alpha - f64::EPSILON {
                        m += 1;
                        res.loca_per_alpha[a] += s;
                        matches[a][f.gt[i] * np + f.pred[j]] += 1.0;
                    }
                }
                res.tp[a] += m as f64;
                res.fn_[a] += (fg - m) as f64;
                res.fp[a] += (fp - m) as f64;
            }
        }
        for a in 0..k {
            let (mut assa, mut assre, mut asspr) = (0.0, 0.0, 0.0);
            for g in 0..ng {
                for p in 0..np {
                    let m = matches[a][g * np + p];
                    if m == 0.0 {
                        continue;
                    }
                    assa += m * m / (gt_count[g] + pred_count[p] - m).max(1.0);
                    assre += m * m / gt_count[g].max(1.0);
                    asspr += m * m / pred_count[p].max(1.0);
                }
            }
            let tp = res.tp[a].max(1.0);
            res.assa_per_alpha[a] = assa / tp;
            res.assre_per_alpha[a] = assre / tp;
            res.asspr_per_alpha[a] = asspr / tp;
            res.loca_per_alpha[a] = res.loca_per_alpha[a].max(1e-10) / res.tp[a].max(1e-10);
        }
        Ok(res)
    }

    /// TrackEval's combination over sequences: counts summed; AssA, AssRe, AssPr and LocA
    /// averaged weighted by each sequence's true positives.
    pub(crate) fn combine<'a>(all: impl Iterator<Item = &'a Hota>) -> Hota {
        let all: Vec<&Hota> = all.collect();
        let mut res = Hota::zeros();
        for a in 0..ALPHAS.len() {
            let tp: f64 = all.iter().map(|h| h.tp[a]).sum();
            res.tp[a] = tp;
            res.fn_[a] = all.iter().map(|h| h.fn_[a]).sum();
            res.fp[a] = all.iter().map(|h| h.fp[a]).sum();
            let weighted =
                |f: fn(&Hota) -> &Vec<f64>| all.iter().map(|h| f(h)[a] * h.tp[a]).sum::<f64>() / tp.max(1e-10);
            res.assa_per_alpha[a] = weighted(|h| &h.assa_per_alpha);
            res.assre_per_alpha[a] = weighted(|h| &h.assre_per_alpha);
            res.asspr_per_alpha[a] = weighted(|h| &h.asspr_per_alpha);
            res.loca_per_alpha[a] = weighted(|h| &h.loca_per_alpha);
        }
        res
    }
}
