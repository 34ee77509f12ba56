//! Training. Shared by every task: the loop settings (`settings`), the epoch loop
//! (`looping`), checkpoints, schedules, progress, and a run's folder from config.json to the
//! exported, tract-scored model (`outputs`). Each task adds what is its own: `classify`
//! (with `config`, `step`, `features`, `lr_find`, `report`) and `detect`.

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod detect;
pub mod ema;
pub mod features;
pub mod groups;
pub mod history;
pub mod looping;
pub mod lr_find;
pub mod outputs;
pub mod parallel;
pub mod precision;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod segment;
pub mod settings;
pub mod step;

use std::path::{Path, PathBuf};

use fieldkit_core::card::ModelCard;

pub use checkpoint::{EpochMetrics, LoopState, Which};
pub use classify::export_with_card;
pub use config::{ClassWeights, ClassifyConfig, Monitor, Strategy, Tta};
pub use precision::Precision;
pub use progress::Progress;
pub use schedule::ScheduleKind;
pub use settings::{LoopSettings, OptimizerKind};

use crate::error::{Result, TrainerError};

/// What `fieldkit train classify` returns.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub model: PathBuf,
    pub best_epoch: Option<usize>,
    pub history: Vec<EpochMetrics>,
    /// The exported model's valid metrics through the runtime (tract).
    pub top1: f64,
    pub macro_f1: f64,
    /// The exported model on the train images held out by whole photos (`--holdout`).
    pub holdout: Option<fieldkit_core::metrics::ClassificationReport>,
    /// With test-time views: the network alone on one view, on valid.
    pub one_view: Option<fieldkit_core::metrics::ClassificationReport>,
    pub train_seconds: f64,
}

/// Trains (or resumes) a classifier into `out`: checkpoints, best model, `model.onnx` +
/// card, metrics.csv, report.md with curves and confusion matrix, config.json.
pub fn train_classify(cfg: &ClassifyConfig, out: &Path, resume: bool, progress: &Progress) -> Result<TrainSummary> {
    outputs::check_out_dir(out, resume)?;
    let prepared = classify::prepare(cfg, out, progress)?;
    if !resume {
        outputs::write_config(out, cfg)?;
    }
    if let Some(h) = &prepared.holdout {
        outputs::write_holdout_list(out, h.samples.iter().map(|s| s.path.as_path()))?;
    }
    let outcome = classify::run_loop(&prepared, out, resume, progress)?;
    let done = outputs::deliver(&prepared, &outcome, out, progress)?;
    let state = outcome.state;
    let eval = done.eval.scores.valid.report;
    let holdout = done.eval.scores.holdout.map(|h| h.report);
    report::write_report(
        out,
        &report::ReportInputs {
            cfg,
            classes: &prepared.classes,
            counts: &prepared.counts,
            history: &state.history,
            best_epoch: state.best_epoch,
            final_eval: &eval,
            holdout: holdout.as_ref(),
            one_view: done.eval.one_view.as_ref(),
            train_seconds: state.elapsed_s,
            stopped_early: state.stopped_early,
            loss_scale: state.loss_scale,
        },
    )?;
    Ok(TrainSummary {
        out: out.to_path_buf(),
        model: done.model,
        best_epoch: state.best_epoch,
        history: state.history,
        top1: eval.top1,
        macro_f1: eval.macro_f1,
        holdout,
        one_view: done.eval.one_view,
        train_seconds: state.elapsed_s,
    })
}

/// `fieldkit export`: a run's checkpoint (classification, detection or segmentation) -> ONNX + card,
/// without training further.
pub fn export_run(run: &Path, which: Which, tta: Option<Tta>, path: &Path) -> Result<ModelCard> {
    let raw: serde_json::Value = fieldkit_core::fsio::read_json(&run.join("config.json"))?;
    // Only detection runs have a mosaic schedule; only segmentation runs a Dice loss choice.
    let detection = raw.get("close_mosaic").is_some();
    let segmentation = raw.get("loss").is_some() && raw.get("inter").is_some();
    if !detection && !segmentation {
        return classify::export_run(run, which, tta, path);
    }
    if let Some(t) = tta {
        return Err(TrainerError::Config(format!(
            "--tta {}: {} is a {} run; test-time views are built into classifiers only",
            t.name(),
            run.display(),
            if detection { "detection" } else { "segmentation" }
        )));
    }
    if detection {
        detect::export_run(run, which, path)
    } else {
        segment::export_run(run, which, path)
    }
}

/// `--lr-find`: the range test only; writes lr_find.png / lr_find.json into `out`.
pub fn lr_find(cfg: &ClassifyConfig, out: &Path, progress: &Progress) -> Result<lr_find::LrFind> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| fieldkit_core::CoreError::io(out, e))?;
    let prepared = classify::prepare(cfg, out, progress)?;
    lr_find::run(&prepared, out, 100, 1e-7, 10.0, progress)
}
