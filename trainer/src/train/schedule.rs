//! Learning-rate schedules, evaluated per optimiser step from the step index alone (plus the
//! plateau state), so a resumed run lands on exactly the same rate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear warmup, then cosine decay to `lr · final_frac`.
    Cosine,
    /// Linear warmup, then `lr · gamma^(epoch / step_epochs)`.
    Step,
    /// torch `OneCycleLR`: cosine up from lr/25 over the first 25 %, cosine down to lr/25e4.
    #[value(name = "onecycle")]
    OneCycle,
    /// Linear warmup, then `lr · factor` whenever the monitored metric stalls `patience` epochs.
    Plateau,
    /// Linear warmup, then flat.
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub total_steps: usize,
    pub steps_per_epoch: usize,
    pub warmup_steps: usize,
    /// Cosine floor as a fraction of `base_lr`.
    pub final_frac: f64,
    pub step_epochs: usize,
    pub gamma: f64,
    pub plateau_patience: usize,
    pub plateau_factor: f64,
}

/// The schedule settings a run's config carries, in epochs.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleSettings {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub epochs: usize,
    pub warmup_epochs: f64,
    pub step_epochs: usize,
    pub gamma: f64,
    pub plateau_patience: usize,
    /// Cosine floor as a fraction of `lr`.
    pub final_frac: f64,
}

impl Schedule {
    /// The per-step schedule of a run with `steps_per_epoch` batches per epoch.
    pub fn new(s: ScheduleSettings, steps_per_epoch: usize) -> Self {
        Schedule {
            kind: s.kind,
            base_lr: s.lr,
            total_steps: steps_per_epoch * s.epochs,
            steps_per_epoch,
            warmup_steps: (s.warmup_epochs * steps_per_epoch as f64).round() as usize,
            final_frac: s.final_frac,
            step_epochs: s.step_epochs,
            gamma: s.gamma,
            plateau_patience: s.plateau_patience,
            plateau_factor: 0.1,
        }
    }
}

/// What the plateau schedule remembers between epochs (checkpointed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    pub best: Option<f64>,
    pub bad_epochs: usize,
    pub reductions: u32,
}

fn cos_interp(from: f64, to: f64, t: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
}

impl Schedule {
    pub fn lr(&self, step: usize, plateau: &PlateauState) -> f64 {
        let lr = self.base_lr;
        if self.kind == ScheduleKind::OneCycle {
            // torch defaults: pct_start 0.25... (fastai: 0.25), div_factor 25, final_div 1e4.
            let up = ((self.total_steps as f64 * 0.25) as usize).max(1);
            let start = lr / 25.0;
            return if step < up {
                cos_interp(start, lr, step as f64 / up as f64)
            } else {
                let down = (self.total_steps - up).max(1);
                cos_interp(lr, start / 1e4, (step - up) as f64 / down as f64)
            };
        }
        if step < self.warmup_steps {
            // Warm up from 1 % so the very first step already moves.
            return lr * (0.01 + 0.99 * step as f64 / self.warmup_steps as f64);
        }
        match self.kind {
            ScheduleKind::Cosine => {
                let span = (self.total_steps - self.warmup_steps.min(self.total_steps)).max(1);
                cos_interp(lr, lr * self.final_frac, (step - self.warmup_steps) as f64 / span as f64)
            }
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch.max(1);
                lr * self.gamma.powi((epoch / self.step_epochs.max(1)) as i32)
            }
            ScheduleKind::Plateau => lr * self.plateau_factor.powi(plateau.reductions as i32),
            ScheduleKind::Constant | ScheduleKind::OneCycle => lr,
        }
    }

    /// End-of-epoch update for the plateau schedule; `higher_is_better` for accuracies.
    pub fn observe(&self, plateau: &mut PlateauState, value: f64, higher_is_better: bool) {
        if self.kind != ScheduleKind::Plateau {
            return;
        }
        let improved = match plateau.best {
            None => true,
            Some(b) => {
                if higher_is_better {
                    value > b + 1e-4
                } else {
                    value < b - 1e-4
                }
            }
        };
        if improved {
            plateau.best = Some(value);
            plateau.bad_epochs = 0;
        } else {
            plateau.bad_epochs += 1;
            if plateau.bad_epochs > self.plateau_patience {
                plateau.reductions += 1;
                plateau.bad_epochs = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            base_lr: 1e-3,
            total_steps: 100,
            steps_per_epoch: 10,
            warmup_steps: 10,
            final_frac: 0.01,
            step_epochs: 3,
            gamma: 0.1,
            plateau_patience: 1,
            plateau_factor: 0.5,
        }
    }

    #[test]
    fn warmup_then_cosine() {
        let s = sched(ScheduleKind::Cosine);
        let p = PlateauState::default();
        assert!((s.lr(0, &p) - 1e-5).abs() < 1e-12);
        assert!((s.lr(10, &p) - 1e-3).abs() < 1e-12);
        assert!((s.lr(55, &p) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-9);
        assert!((s.lr(100, &p) - 1e-5).abs() < 1e-12);
        let lrs: Vec<f64> = (10..=100).map(|i| s.lr(i, &p)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn onecycle_matches_torch_shape() {
        let s = sched(ScheduleKind::OneCycle);
        let p = PlateauState::default();
        assert!((s.lr(0, &p) - 4e-5).abs() < 1e-12);
        assert!((s.lr(25, &p) - 1e-3).abs() < 1e-12);
        assert!((s.lr(100, &p) - 4e-9).abs() < 1e-12);
    }

    #[test]
    fn step_and_plateau() {
        let s = sched(ScheduleKind::Step);
        let p = PlateauState::default();
        assert!((s.lr(29, &p) - 1e-3).abs() < 1e-12);
        assert!((s.lr(30, &p) - 1e-4).abs() < 1e-12);
        let s = sched(ScheduleKind::Plateau);
        let mut p = PlateauState::default();
        for v in [0.5, 0.6, 0.6, 0.6] {
            s.observe(&mut p, v, true);
        }
        assert_eq!(p.reductions, 1);
        assert!((s.lr(50, &p) - 5e-4).abs() < 1e-12);
    }
}
