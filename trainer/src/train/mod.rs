//! Classification training: configuration, schedules, the step, the loop, checkpoints,
//! the LR finder and the outputs of a run.

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod detect;
pub mod features;
pub mod looping;
pub mod lr_find;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod step;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::dataset::ImageFolder;
use fieldkit_runtime::eval::eval_classifier;
use fieldkit_runtime::Engine;

pub use checkpoint::{EpochMetrics, LoopState};
pub use config::{ClassWeights, ClassifyConfig, Monitor, Strategy};
pub use progress::Progress;
pub use schedule::ScheduleKind;
pub use settings::{LoopSettings, OptimizerKind};

use crate::error::Result;
use crate::export::{
    export_classifier,
    onnx::{INPUT, OUTPUT},
};

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
    pub train_seconds: f64,
}

/// Trains (or resumes) a classifier into `out`: checkpoints, best model, `model.onnx` +
/// card, metrics.csv, report.md with curves and confusion matrix, config.json.
pub fn train_classify(cfg: &ClassifyConfig, out: &Path, resume: bool, progress: &Progress) -> Result<TrainSummary> {
    classify::check_out_dir(out, resume)?;
    let prepared = classify::prepare(cfg, out, progress)?;
    if !resume {
        classify::write_config(out, cfg)?;
    }
    let outcome = classify::run_loop(&prepared, out, resume, progress)?;
    let state = outcome.state;
    report::write_metrics_csv(&out.join("metrics.csv"), &state.history)?;
    report::plot_curves(out, &state.history)?;

    // Export the best model and score it through the deployment path.
    let mut best = cfg.init_model(prepared.classes.len(), &prepared.device);
    checkpoint::load_module(&mut best, &outcome.best_model)?;
    let model_path = out.join("model.onnx");
    let source =
        format!("fieldkit train classify ({}), best epoch {:?}", classify::describe_strategy(cfg), state.best_epoch);
    let mut card = export_with_card(&best, cfg, &prepared.classes, &prepared.data_fingerprint, source, &model_path)?;
    let engine = Engine::load(&model_path)?;
    let valid = ImageFolder::open_with_classes(&cfg.data, &cfg.valid_split, &prepared.classes)?;
    let eval = eval_classifier(&engine, &valid, cfg.workers.max(1))?;
    card.metrics.insert("valid_top1".into(), eval.report.top1);
    card.metrics.insert("valid_macro_f1".into(), eval.report.macro_f1);
    card.write_for(&model_path)?;
    if let Some(b) = state.best_epoch.and_then(|e| state.history.iter().find(|m| m.epoch == e)) {
        if (b.top1 - eval.report.top1).abs() > 0.01 {
            progress.message(&format!(
                "warning: burn measured top1 {:.4} at the best epoch, the exported model gives {:.4} in tract",
                b.top1, eval.report.top1
            ));
        }
    }
    report::write_report(
        out,
        &report::ReportInputs {
            cfg,
            classes: &prepared.classes,
            counts: &prepared.counts,
            history: &state.history,
            best_epoch: state.best_epoch,
            final_eval: &eval.report,
            train_seconds: state.elapsed_s,
            stopped_early: state.stopped_early,
        },
    )?;
    Ok(TrainSummary {
        out: out.to_path_buf(),
        model: model_path,
        best_epoch: state.best_epoch,
        history: state.history,
        top1: eval.report.top1,
        macro_f1: eval.report.macro_f1,
        train_seconds: state.elapsed_s,
    })
}

/// Writes `model` as ONNX at `path` with its card (classes, input, preprocessing, decoding).
pub fn export_with_card(
    model: &crate::model::MobileNetV2,
    cfg: &ClassifyConfig,
    classes: &[String],
    data_fingerprint: &str,
    source: String,
    path: &Path,
) -> Result<ModelCard> {
    export_classifier(&model.valid(), cfg.size, path)?;
    let mut card = ModelCard::new(
        Task::Classify,
        classes.to_vec(),
        InputSpec { name: INPUT.into(), shape: vec![-1, 3, cfg.size as i64, cfg.size as i64] },
        cfg.preprocess(),
        Decode::Softmax { output: OUTPUT.into() },
    );
    card.source = Some(source);
    card.data_fingerprint = Some(data_fingerprint.to_string());
    card.write_for(path)?;
    Ok(card)
}

/// Which checkpoint of a run to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The best epoch by the run's monitored metric.
    Best,
    /// The latest checkpoint (possibly mid-epoch).
    Last,
}

/// `fieldkit export`: a run's checkpoint (classification or detection) -> ONNX + card,
/// without training further.
pub fn export_run(run: &Path, which: Which, path: &Path) -> Result<ModelCard> {
    let raw: serde_json::Value = fieldkit_core::fsio::read_json(&run.join("config.json"))?;
    // Only detection runs have a mosaic schedule.
    if raw.get("close_mosaic").is_some() {
        return detect::export_run(run, which, path);
    }
    let cfg: ClassifyConfig = fieldkit_core::fsio::read_json(&run.join("config.json"))?;
    let train = ImageFolder::open(&cfg.data, &cfg.train_split)?;
    let device = cfg.device.device()?;
    let mut model = cfg.init_model(train.classes.len(), &device);
    let (file, what) = checkpoint::Checkpoints::new(run).pick(which)?;
    checkpoint::load_module(&mut model, &file)?;
    let source = format!("fieldkit export of {} checkpoint {what}", run.display());
    export_with_card(&model, &cfg, &train.classes, &train.fingerprint(), source, path)
}

/// `--lr-find`: the range test only; writes lr_find.png / lr_find.json into `out`.
pub fn lr_find(cfg: &ClassifyConfig, out: &Path, progress: &Progress) -> Result<lr_find::LrFind> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| fieldkit_core::CoreError::io(out, e))?;
    let prepared = classify::prepare(cfg, out, progress)?;
    lr_find::run(&prepared, out, 100, 1e-7, 10.0, progress)
}
