//! Identity metrics (Ristani et al. 2016) as TrackEval's `Identity` computes them: one
//! global assignment of ground-truth ids to predicted ids that maximises the frames in which
//! they overlap (IoU ≥ 0.5), then IDF1 = IDTP / (IDTP + ½ IDFP + ½ IDFN).

use serde::Serialize;

use super::Data;
use crate::assign::solve;
use crate::error::Result;

const THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Identity {
    pub idtp: u64,
    pub idfn: u64,
    pub idfp: u64,
}

impl Identity {
    pub fn idf1(&self) -> f64 {
        self.idtp as f64 / (self.idtp as f64 + 0.5 * self.idfp as f64 + 0.5 * self.idfn as f64).max(1.0)
    }

    pub fn idr(&self) -> f64 {
        self.idtp as f64 / (self.idtp + self.idfn).max(1) as f64
    }

    pub fn idp(&self) -> f64 {
        self.idtp as f64 / (self.idtp + self.idfp).max(1) as f64
    }

    pub(crate) fn evaluate(data: &Data) -> Result<Identity> {
        if data.pred_dets == 0 {
            return Ok(Identity { idfn: data.gt_dets as u64, ..Default::default() });
        }
        if data.gt_dets == 0 {
            return Ok(Identity { idfp: data.pred_dets as u64, ..Default::default() });
        }
        let (ng, np) = (data.gt_ids, data.pred_ids);
        let mut overlap = vec![0.0f64; ng * np];
        let mut gt_count = vec![0.0f64; ng];
        let mut pred_count = vec![0.0f64; np];
        for f in &data.frames {
            for (i, &g) in f.gt.iter().enumerate() {
                for (j, &p) in f.pred.iter().enumerate() {
                    if f.sim(i, j) >= THRESHOLD {
                        overlap[g * np + p] += 1.0;
                    }
                }
            }
            f.gt.iter().for_each(|&g| gt_count[g] += 1.0);
            f.pred.iter().for_each(|&p| pred_count[p] += 1.0);
        }
        // (ng + np) square: a ground-truth id left unmatched costs its frames as false
        // negatives, a predicted id its frames as false positives; forbidden cells 1e10.
        let n = ng + np;
        let mut fn_mat = vec![0.0f64; n * n];
        let mut fp_mat = vec![0.0f64; n * n];
        for r in ng..n {
            for c in 0..np {
                fp_mat[r * n + c] = 1e10;
            }
        }
        for r in 0..ng {
            for c in np..n {
                fn_mat[r * n + c] = 1e10;
            }
        }
        for g in 0..ng {
            for c in 0..np {
                fn_mat[g * n + c] = gt_count[g];
            }
            fn_mat[g * n + np + g] = gt_count[g];
        }
        for p in 0..np {
            for r in 0..ng {
                fp_mat[r * n + p] = pred_count[p];
            }
            fp_mat[(p + ng) * n + p] = pred_count[p];
        }
        for g in 0..ng {
            for p in 0..np {
                fn_mat[g * n + p] -= overlap[g * np + p];
                fp_mat[g * n + p] -= overlap[g * np + p];
            }
        }
        let cost: Vec<f64> = fn_mat.iter().zip(&fp_mat).map(|(a, b)| a + b).collect();
        let pairs = solve(n, n, &cost, false)?;
        let idfn: f64 = pairs.iter().map(|&(r, c)| fn_mat[r * n + c]).sum();
        let idfp: f64 = pairs.iter().map(|&(r, c)| fp_mat[r * n + c]).sum();
        let gt_total: f64 = gt_count.iter().sum();
        Ok(Identity { idtp: (gt_total - idfn) as u64, idfn: idfn as u64, idfp: idfp as u64 })
    }

    pub(crate) fn combine<'a>(all: impl Iterator<Item = &'a Identity>) -> Identity {
        all.fold(Identity::default(), |a, b| Identity {
            idtp: a.idtp + b.idtp,
            idfn: a.idfn + b.idfn,
            idfp: a.idfp + b.idfp,
        })
    }
}
