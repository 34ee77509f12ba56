//! The epoch loop every training task shares: schedule per step, checkpoints mid-epoch and
//! at each epoch end (crash-safe, resumable at the exact batch), validation, best-model
//! keeping by the monitored metric, plateau and early stopping. A task (classification,
//! detection) supplies its batches, its optimisation step and its validation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleSnapshot;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::checkpoint::{save_module, Checkpoints, LoopState};
use super::ema::Ema;
use super::precision::{Amp, Precision};
use super::progress::Progress;
use super::settings::LoopSettings;
use crate::error::{Result, TrainerError};

/// What one training task supplies to [`run_epochs`]. `'a` is the lifetime of the prepared
/// data the batches are drawn from (so batches can be drawn while the task steps).
pub trait Task<'a> {
    type Model: Module + ModuleSnapshot;
    type Batch;
    /// One row of the run's history (`metrics.csv`).
    type Metrics: Clone + Serialize + DeserializeOwned + super::history::EpochRow;

    /// The run's loop settings (epochs, lr and schedule, patience, checkpoint interval).
    fn settings(&self) -> &LoopSettings;
    fn steps_per_epoch(&self) -> usize;
    /// The fraction of the peak lr the schedule decays to: a head trained from scratch keeps
    /// a higher floor than a fine-tune.
    fn final_lr_fraction(&self) -> f64;
    fn monitor_name(&self) -> &'static str;
    fn higher_is_better(&self) -> bool;

    /// The model as it trains in `epoch` (which layers are trainable), called before each
    /// epoch; may announce a change.
    fn begin_epoch(&mut self, model: Self::Model, epoch: usize, progress: &Progress) -> Self::Model;
    /// The epoch's batches from batch `skip` on, each with its index.
    fn batches(&self, epoch: usize, skip: usize) -> Box<dyn Iterator<Item = (usize, Result<Self::Batch>)> + 'a>;
    /// Forward, loss, backward, update: the new model, the batch loss and its image count.
    /// The forward runs on `amp.lower(model)`, the loss backward through `amp.backward`, the
    /// update through `amp.apply` (all plain f32 unless `--precision` asks otherwise).
    fn step(
        &mut self,
        model: Self::Model,
        optim: &mut ModuleOptimizer,
        amp: &mut Amp,
        batch: Self::Batch,
        lr: f64,
        epoch: usize,
    ) -> Result<(Self::Model, f64, usize)>;
    /// Validates after an epoch; `train` holds what the loop measured. `model` computes in
    /// the run's precision (an eval-mode half copy under `--precision f16|bf16`).
    fn validate(&mut self, model: &Self::Model, train: &EpochTrain) -> Result<Self::Metrics>;
    fn monitor(&self, m: &Self::Metrics) -> f64;
    /// The epoch's line for the log.
    fn describe(&self, m: &Self::Metrics) -> String;
}

/// What the loop measured during one epoch's training.
#[derive(Debug, Clone, Copy)]
pub struct EpochTrain {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// Result of the loop.
pub struct LoopOutcome<M> {
    pub state: LoopState<M>,
    pub best_model: PathBuf,
}

/// Runs (or, with `resume`, continues from the last checkpoint) the epochs of `task`. The
/// best model by the task's monitor is kept in `checkpoints/best.bpk`.
pub fn run_epochs<'a, T: Task<'a>>(
    task: &mut T,
    model: T::Model,
    mut optim: ModuleOptimizer,
    out: &Path,
    resume: bool,
    progress: &Progress,
) -> Result<LoopOutcome<T::Metrics>> {
    let ckpts = Checkpoints::new(out);
    let mut model = model;
    let mut state = LoopState::<T::Metrics>::default();
    let spe = task.steps_per_epoch();
    let ema_epochs = task.settings().ema;
    let mut ema = (ema_epochs > 0.0).then(|| Ema::new(&model, ema_epochs, spe));
    if resume {
        let (s, o) = ckpts.load(&mut model, optim)?;
        state = s;
        optim = o;
        if let Some(e) = &mut ema {
            // A run started without --ema begins its average at the resumed weights.
            e.model = model.clone();
            if ckpts.load_ema(&mut e.model)? {
                e.updates = state.ema_updates;
            }
        }
        progress.message(&format!("resumed at epoch {} batch {} (step {})", state.epoch + 1, state.batch, state.step));
    }
    let mut amp = Amp::new(task.settings().precision, state.loss_scale);
    let mut model = model.train();
    let epochs = task.settings().epochs;
    let sched = task.settings().schedule(task.steps_per_epoch(), task.final_lr_fraction());
    let mut last_save = Instant::now();
    let run_start = Instant::now();
    let elapsed_before = state.elapsed_s;

    while state.epoch < epochs && !state.stopped_early {
        let epoch = state.epoch;
        model = task.begin_epoch(model, epoch, progress);
        let epoch_start = Instant::now();
        let bar = progress.bar(&format!("epoch {}/{epochs}", epoch + 1), spe);
        let mut images = 0usize;
        for (b, item) in task.batches(epoch, state.batch) {
            let batch = item?;
            let lr = sched.lr(state.step, &state.plateau);
            let (m, loss, n) = task.step(model, &mut optim, &mut amp, batch, lr, epoch)?;
            model = m;
            state.loss_scale = amp.loss_scale();
            if let Some(e) = &mut ema {
                e.update(&model);
                state.ema_updates = e.updates;
            }
            images += n;
            if !loss.is_finite() {
                let precision = match amp.precision() {
                    Precision::F32 => "",
                    _ => ", or train with --precision f32",
                };
                return Err(TrainerError::Diverged(format!(
                    "training loss became {loss} at epoch {} batch {b} (lr {lr:.2e}); lower --lr or enable --clip-grad{precision}",
                    epoch + 1
                )));
            }
            state.loss_sum += loss;
            state.loss_count += 1;
            state.step += 1;
            state.batch = b + 1;
            bar.set(b + 1, &format!("loss {:.4} lr {lr:.2e}", state.loss_sum / state.loss_count as f64));
            if last_save.elapsed().as_secs_f64() > task.settings().checkpoint_minutes * 60.0 && state.batch < spe {
                state.elapsed_s = elapsed_before + run_start.elapsed().as_secs_f64();
                ckpts.save(&model, ema.as_ref().map(|e| &e.model), &optim, &state)?;
                last_save = Instant::now();
            }
        }
        bar.finish();
        let train_secs = epoch_start.elapsed().as_secs_f64();
        let train = EpochTrain {
            epoch: epoch + 1,
            lr: sched.lr(state.step.saturating_sub(1), &state.plateau),
            train_loss: state.loss_sum / state.loss_count.max(1) as f64,
            seconds: train_secs,
            images_per_s: images as f64 / train_secs.max(1e-9),
        };
        // With --ema the average is what is validated, kept as best and exported.
        let kept = ema.as_ref().map_or(&model, |e| &e.model);
        let m = match amp.precision() {
            Precision::F32 => task.validate(kept, &train)?,
            _ => task.validate(&amp.lower(kept.valid()), &train)?,
        };
        let value = task.monitor(&m);
        let improved = match state.best {
            None => true,
            Some(b) => {
                if task.higher_is_better() {
                    value > b
                } else {
                    value < b
                }
            }
        };
        progress.message(&format!("{}{}", task.describe(&m), if improved { "  *best" } else { "" }));
        if improved {
            state.best = Some(value);
            state.best_epoch = Some(epoch + 1);
            state.bad_epochs = 0;
            save_module(&kept.valid(), &ckpts.best_model())?;
        } else {
            state.bad_epochs += 1;
        }
        sched.observe(&mut state.plateau, value, task.higher_is_better());
        state.history.push(m);
        if let Some(pat) = task.settings().patience {
            if state.bad_epochs >= pat {
                state.stopped_early = true;
                progress.message(&format!("early stop: {} did not improve for {pat} epochs", task.monitor_name()));
            }
        }
        state.epoch += 1;
        state.batch = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        state.elapsed_s = elapsed_before + run_start.elapsed().as_secs_f64();
        ckpts.save(&model, ema.as_ref().map(|e| &e.model), &optim, &state)?;
        // Rewritten every epoch so a long or quiet run can be followed (and plotted) as it goes.
        super::history::write_metrics_csv(&out.join("metrics.csv"), &state.history)?;
        last_save = Instant::now();
    }
    Ok(LoopOutcome { state, best_model: ckpts.best_model() })
}
