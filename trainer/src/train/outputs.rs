//! A run's folder, from its first file to its last, the same for every task (issue 21):
//! refusing to overwrite a run, `config.json`, and what every run ends with — metrics.csv and
//! curves, the best checkpoint exported as ONNX + card, that file scored through tract (the
//! deployment path) with its figures written into the card, and a warning when they drift
//! from what burn measured. A task says only what is its own, through [`Deliver`]; `fieldkit
//! export` takes the same export through [`export_checkpoint`].

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::Device;
use burn::store::ModuleSnapshot;
use fieldkit_core::card::{InputSpec, ModelCard};
use fieldkit_core::{fsio, CoreError};
use fieldkit_runtime::Engine;

use super::checkpoint::{self, Checkpoints};
use super::history::{write_metrics_csv, EpochRow};
use super::looping::LoopOutcome;
use super::progress::Progress;
use super::Which;
use crate::error::{Result, TrainerError};
use crate::export::onnx::INPUT;

/// Refuses to overwrite a previous run unless resuming. A directory holding only the
/// config.json of a run that failed before its first checkpoint is reused.
pub fn check_out_dir(out: &Path, resume: bool) -> Result<()> {
    let ckpts = Checkpoints::new(out);
    if resume {
        if !ckpts.exists() {
            return Err(TrainerError::Config(format!(
                "--resume: {} holds no checkpoint (checkpoints/last.json)",
                out.display()
            )));
        }
        return Ok(());
    }
    if ckpts.exists() || out.join("model.onnx").exists() {
        return Err(TrainerError::Config(format!(
            "{} already holds a training run: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Writes the run's settings once its data has been opened successfully.
pub fn write_config<C: serde::Serialize>(out: &Path, cfg: &C) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| CoreError::io(out, e))?;
    fsio::write_json(&out.join("config.json"), cfg)?;
    Ok(())
}

/// Lists the files held out of train (`--holdout`) in `out/holdout.txt`, one per line, so
/// the split can be inspected and scored again.
pub fn write_holdout_list<'a>(out: &Path, files: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    let mut text = String::new();
    for f in files {
        text.push_str(&f.to_string_lossy());
        text.push('\n');
    }
    fsio::write_atomic(&out.join("holdout.txt"), text.as_bytes())?;
    Ok(())
}

/// The input every exported network takes: `[N, 3, size, size]` under the exporter's name.
pub fn square_input(size: u32) -> InputSpec {
    InputSpec { name: INPUT.into(), shape: vec![-1, 3, size as i64, size as i64] }
}

/// Stamps `card` with where the model came from and what data it saw, and writes it beside
/// the exported `path`.
pub fn write_card(mut card: ModelCard, source: String, data_fingerprint: &str, path: &Path) -> Result<ModelCard> {
    card.source = Some(source);
    card.data_fingerprint = Some(data_fingerprint.to_string());
    card.write_for(path)?;
    Ok(card)
}

/// `fieldkit export`: loads the `which` checkpoint of `run` into `blank(device)` (a network of
/// the run's shape) and exports it with `export` (the task's ONNX + card writer, given the
/// card's source line). The device is the CPU whatever trained the run: export only reads the
/// weights, and a run trained on a GPU exports on a machine without one.
pub fn export_checkpoint<M: Module + ModuleSnapshot>(
    run: &Path,
    which: Which,
    blank: impl FnOnce(&Device) -> M,
    export: impl FnOnce(&M, String) -> Result<ModelCard>,
) -> Result<ModelCard> {
    let (file, what) = Checkpoints::new(run).pick(which)?;
    let mut model = blank(&Device::flex());
    checkpoint::load_module(&mut model, &file)?;
    export(&model, format!("fieldkit export of {} checkpoint {what}", run.display()))
}

/// What a task's prepared run adds to the shared ending: its network, export, tract score and
/// curves.
pub trait Deliver {
    type Model: Module + ModuleSnapshot;
    /// One row of the run's history.
    type Metrics: EpochRow;
    /// What the tract evaluation returns (the report's final figures).
    type Eval;

    /// A fresh network of the run's shape, to load the best checkpoint into.
    fn blank_model(&self) -> Self::Model;
    /// The card's source line, before ", best epoch N".
    fn source(&self) -> String;
    /// Writes `model` as ONNX + card at `path`.
    fn export(&self, model: &Self::Model, source: String, path: &Path) -> Result<ModelCard>;
    /// Scores the exported model (`engine`, exported from `model`) through tract on the
    /// valid split.
    fn score(&self, model: &Self::Model, engine: &Engine) -> Result<Scored<Self::Eval>>;
    /// The figure both burn's validation and [`Deliver::score`] measure, from an epoch's row:
    /// its name and value.
    fn headline(&self, row: &Self::Metrics) -> (&'static str, f64);
    fn plot_curves(&self, out: &Path, history: &[Self::Metrics]) -> Result<()>;
}

/// The tract score of an exported model.
pub struct Scored<E> {
    pub eval: E,
    /// Written into the card (`valid_top1`, `valid_map50`, ...).
    pub card_metrics: Vec<(&'static str, f64)>,
    /// The tract value of [`Deliver::headline`]'s figure.
    pub headline: f64,
}

/// A task's tract evaluation of the exported model: on valid, and on the held-out part of
/// train (`--holdout`) if any.
pub struct Scores<E> {
    pub valid: E,
    pub holdout: Option<E>,
}

/// What a run hands over.
pub struct Delivered<E> {
    pub model: PathBuf,
    pub card: ModelCard,
    pub eval: E,
}

/// The end of every run: metrics.csv and curves, the best model exported to
/// `out/model.onnx` with its card, scored in tract, the score in the card; a warning through
/// `progress` when tract's figure differs from burn's at the best epoch by more than 0.01.
pub fn deliver<D: Deliver>(
    task: &D,
    outcome: &LoopOutcome<D::Metrics>,
    out: &Path,
    progress: &Progress,
) -> Result<Delivered<D::Eval>> {
    let state = &outcome.state;
    write_metrics_csv(&out.join("metrics.csv"), &state.history)?;
    task.plot_curves(out, &state.history)?;
    let mut best = task.blank_model();
    checkpoint::load_module(&mut best, &outcome.best_model)?;
    let path = out.join("model.onnx");
    let source = format!("{}, best epoch {:?}", task.source(), state.best_epoch);
    let mut card = task.export(&best, source, &path)?;
    let scored = task.score(&best, &Engine::load(&path)?)?;
    card.metrics.extend(scored.card_metrics.iter().map(|&(k, v)| (k.to_string(), v)));
    card.write_for(&path)?;
    if let Some(row) = state.best_epoch.and_then(|e| state.history.iter().find(|m| m.epoch() == e)) {
        let (name, burn) = task.headline(row);
        if (burn - scored.headline).abs() > 0.01 {
            progress.message(&format!(
                "warning: burn measured {name} {burn:.4} at the best epoch, the exported model gives {:.4} in tract",
                scored.headline
            ));
        }
    }
    Ok(Delivered { model: path, card, eval: scored.eval })
}
