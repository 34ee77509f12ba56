//! LR range test (Smith 2015, fastai `lr_find`): the learning rate grows exponentially each
//! step on a throw-away copy of the model; the smoothed loss curve suggests the rate.

use std::path::Path;

use burn::module::Module;
use serde::Serialize;

use fieldkit_core::fsio;
use fieldkit_core::report::plot_lines;

use super::classify::{epoch_batches, optimizer, Prepared};
use super::precision::Amp;
use super::progress::Progress;
use super::step::Stepper;
use crate::data::class_weights;
use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Serialize)]
pub struct LrFind {
    pub lrs: Vec<f64>,
    /// Exponentially smoothed, bias-corrected loss (fastai's β = 0.98).
    pub losses: Vec<f64>,
    /// fastai's `valley` suggestion.
    pub suggestion: f64,
    /// Steepest descent of the smoothed loss.
    pub steepest: f64,
    /// Lowest smoothed loss / 10.
    pub min_div10: f64,
}

/// fastai `valley`: the longest decreasing stretch of the loss curve; the suggestion lies
/// about two thirds of the way down it.
pub fn valley(lrs: &[f64], losses: &[f64]) -> f64 {
    let n = losses.len();
    if n < 2 {
        return lrs.first().copied().unwrap_or(1e-3);
    }
    let mut lds = vec![1usize; n];
    let (mut max_start, mut max_end) = (0usize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                max_start = max_end + 1 - lds[max_end];
            }
        }
    }
    let sections = (max_end - max_start) as f64 / 3.0;
    let idx = max_start + sections as usize + (sections / 2.0) as usize;
    lrs[idx.min(n - 1)]
}

pub fn run(p: &Prepared, out: &Path, steps: usize, start_lr: f64, end_lr: f64, progress: &Progress) -> Result<LrFind> {
    let cfg = &p.cfg;
    // Probe the deepest configuration the run will reach (gradual ends with the most layers
    // thawed), since that is where a too-high rate does harm.
    let from = cfg.trainable_from(usize::MAX / 2).min(cfg.trainable_from(0));
    let mut model = p.model.clone().with_trainable_from(from).train();
    let mut optim = optimizer(cfg);
    let mut stepper = Stepper::new(&p.device, cfg, class_weights(&p.counts, cfg.class_weights));
    // The run's precision (its loss scale starts afresh: the probe is not part of the run).
    let mut amp = Amp::new(cfg.precision, None);
    let mult = (end_lr / start_lr).powf(1.0 / (steps.max(2) - 1) as f64);
    let (mut lrs, mut losses) = (Vec::new(), Vec::new());
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    let bar = progress.bar("lr-find", steps);
    let mut epoch = 0;
    'outer: loop {
        for (_, item) in epoch_batches(p, epoch, 0) {
            let (input, labels) = item?;
            let i = lrs.len();
            let lr = start_lr * mult.powi(i as i32);
            let (m, loss) = stepper.step(model, &mut optim, &mut amp, cfg, input, labels, lr, from);
            model = m;
            avg = 0.98 * avg + 0.02 * loss;
            let smoothed = avg / (1.0 - 0.98f64.powi(i as i32 + 1));
            if !smoothed.is_finite() || (i > 10 && smoothed > 4.0 * best) {
                break 'outer;
            }
            best = best.min(smoothed);
            lrs.push(lr);
            losses.push(smoothed);
            bar.set(i + 1, &format!("lr {lr:.2e} loss {smoothed:.4}"));
            if lrs.len() >= steps {
                break 'outer;
            }
        }
        epoch += 1;
    }
    bar.finish();
    if lrs.len() < 5 {
        return Err(TrainerError::Config(format!(
            "lr-find: the loss diverged after {} steps; lower the start rate",
            lrs.len()
        )));
    }
    let suggestion = valley(&lrs, &losses);
    let steepest = {
        let mut best_i = 1;
        let mut best_g = f64::INFINITY;
        for i in 1..losses.len() {
            let g = (losses[i] - losses[i - 1]) / (lrs[i].ln() - lrs[i - 1].ln());
            if g < best_g {
                best_g = g;
                best_i = i;
            }
        }
        lrs[best_i]
    };
    let min_i = losses.iter().enumerate().fold(0, |b, (i, v)| if *v < losses[b] { i } else { b });
    let r = LrFind { min_div10: lrs[min_i] / 10.0, lrs, losses, suggestion, steepest };
    let pts: Vec<(f64, f64)> = r.lrs.iter().zip(&r.losses).map(|(l, v)| (l.log10(), *v)).collect();
    plot_lines(
        &out.join("lr_find.png"),
        &format!("LR range test (suggestion {:.1e})", r.suggestion),
        "log10(lr)",
        "smoothed loss",
        &[("loss".into(), pts)],
    )?;
    fsio::write_json(&out.join("lr_find.json"), &r)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valley_sits_in_the_longest_descent() {
        let lrs: Vec<f64> = (0..20).map(|i| 1e-6 * 2f64.powi(i)).collect();
        // flat, then a long descent over indices 5..=14, then a blow-up.
        let mut losses = vec![2.0; 5];
        losses.extend((0..10).map(|i| 2.0 - 0.15 * i as f64));
        losses.extend((0..5).map(|i| 1.0 + i as f64));
        let s = valley(&lrs, &losses);
        let idx = lrs.iter().position(|l| *l == s).unwrap();
        assert!((6..=13).contains(&idx), "{idx}");
    }
}
