//! `fieldkit train classify`: the fine-tuning loop around [`Stepper`], with validation,
//! schedules, early stopping, crash-safe checkpoints and resume, then export and report.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use fieldkit_core::dataset::ImageFolder;
use fieldkit_core::metrics::ClassificationReport;
use fieldkit_core::preprocess::Preprocess;
use fieldkit_core::{fsio, CoreError};

use fieldkit_core::card::{Decode, ModelCard, Task as CardTask};
use fieldkit_runtime::eval::{eval_classifier, ClassifierEval};
use fieldkit_runtime::Engine;

use super::checkpoint::{EpochMetrics, Which};
use super::config::{ClassifyConfig, Strategy, Tta};
use super::features::{cache_key, features, FeatureSet};
use super::looping::{run_epochs, EpochTrain, LoopOutcome, Task};
use super::outputs::{export_checkpoint, square_input, write_card, Deliver, Scored, Scores};
use super::parallel::Replicas;
use super::precision::Amp;
use super::progress::Progress;
use super::settings::LoopSettings;
use super::step::{plain_cross_entropy, Input, Stepper, Targets};
use crate::data::loader::{batch_ranges, build_batch};
use crate::data::{
    class_weights, decode_eval_split, decode_split, epoch_order, shrink_to, split_holdout, EpochLoader, ImageSet,
};
use crate::error::{Result, TrainerError};
use crate::export::export_classifier;
use crate::export::onnx::OUTPUT;
use crate::model::mobilenetv2::MobileNetV2;
use crate::model::to_host;
use crate::weights::load_backbone;

/// Everything the loop needs, prepared once.
pub struct Prepared {
    pub cfg: ClassifyConfig,
    pub classes: Vec<String>,
    pub counts: Vec<usize>,
    pub data_fingerprint: String,
    /// The train images held out by whole photos (`--holdout`), scored only at the end.
    pub holdout: Option<ImageFolder>,
    pub preprocess: Preprocess,
    pub device: Device,
    /// The devices each step's batch is split over (`--devices`); the first is `device`.
    pub replicas: Replicas,
    pub model: MobileNetV2,
    pub train: TrainInputs,
    /// Validation images (geometric preprocessing done) or their cached features.
    pub valid: TrainInputs,
}

pub enum TrainInputs {
    Images(Arc<ImageSet>),
    Features(FeatureSet),
}

impl TrainInputs {
    fn len(&self) -> usize {
        match self {
            TrainInputs::Images(s) => s.len(),
            TrainInputs::Features(f) => f.len(),
        }
    }

    fn labels(&self) -> &[usize] {
        match self {
            TrainInputs::Images(s) => &s.labels,
            TrainInputs::Features(f) => &f.labels,
        }
    }
}

/// Opens the data, builds the model, loads the backbone, decodes images (or loads cached
/// features for the head strategy).
pub fn prepare(cfg: &ClassifyConfig, out: &Path, progress: &Progress) -> Result<Prepared> {
    cfg.validate()?;
    let workers = cfg.workers.max(1);
    let (train_folder, holdout) =
        split_holdout(ImageFolder::open(&cfg.data, &cfg.train_split)?, cfg.holdout, cfg.seed, workers)?;
    let classes = train_folder.classes.clone();
    if classes.len() < 2 {
        return Err(TrainerError::Config(format!(
            "{}: a classifier needs at least 2 class directories, found {classes:?}",
            cfg.data.join(&cfg.train_split).display()
        )));
    }
    let valid_folder = ImageFolder::open_with_classes(&cfg.data, &cfg.valid_split, &classes)?;
    let counts = train_folder.class_counts();
    let preprocess = cfg.preprocess();
    let replicas = cfg.open_devices(progress)?;
    let device = replicas.main().clone();
    let mut model = cfg.init_model(classes.len(), &device);
    let weights_sha = match &cfg.weights {
        Some(w) => {
            load_backbone(&mut model, w)?;
            fsio::sha256_file(w)?
        }
        None => "scratch".into(),
    };
    let held = holdout.as_ref().map_or(String::new(), |h| format!(" ({} more held out)", h.samples.len()));
    progress.message(&format!(
        "data: {} train{held} / {} valid images, {} classes; decoding on {workers} threads",
        train_folder.samples.len(),
        valid_folder.samples.len(),
        classes.len()
    ));
    let t0 = Instant::now();
    let valid_set = decode_eval_split(&valid_folder, &preprocess, workers)?;
    let (train, valid) = if cfg.strategy == Strategy::Head {
        if cfg.weights.is_none() {
            return Err(TrainerError::Config(
                "--strategy head trains a linear probe on pretrained features: give --weights".into(),
            ));
        }
        let train_set = decode_eval_split(&train_folder, &preprocess, workers)?;
        let dir = out.join("cache");
        let key = |f: &ImageFolder| cache_key(&weights_sha, cfg.size, cfg.width, &f.fingerprint());
        let bar = progress.bar("features (train)", 0);
        let tf =
            features(&model, &train_set, cfg.size, &preprocess, &dir, &key(&train_folder), |k, n| bar.update(k, n))?;
        bar.finish();
        let bar = progress.bar("features (valid)", 0);
        let vf =
            features(&model, &valid_set, cfg.size, &preprocess, &dir, &key(&valid_folder), |k, n| bar.update(k, n))?;
        bar.finish();
        (TrainInputs::Features(tf), TrainInputs::Features(vf))
    } else {
        // Keep enough resolution for crops of a quarter of the area to still cover the input.
        let keep = cfg.size * 2;
        let train_set = decode_split(&train_folder, workers, |img| shrink_to(img, keep))?;
        (TrainInputs::Images(Arc::new(train_set)), TrainInputs::Images(Arc::new(valid_set)))
    };
    progress.message(&format!("data ready in {:.1} s", t0.elapsed().as_secs_f64()));
    Ok(Prepared {
        cfg: cfg.clone(),
        classes,
        counts,
        data_fingerprint: train_folder.fingerprint(),
        holdout,
        preprocess,
        device,
        replicas,
        model,
        train,
        valid,
    })
}

/// The run's optimizer (kept here for the benches and tests that build one).
pub fn optimizer(cfg: &ClassifyConfig) -> ModuleOptimizer {
    cfg.train.optimizer()
}

pub use super::config::describe_strategy;
pub use super::settings::{clipping, optimizer_for};

/// Batches per epoch.
pub fn steps_per_epoch(p: &Prepared) -> usize {
    batch_ranges(p.train.len(), p.cfg.batch, true).len()
}

/// The schedule decays to 1 % of the peak lr.
const FINAL_LR_FRACTION: f64 = 0.01;

/// (batch index, the batch's inputs and labels), one epoch's worth.
pub type EpochBatches<'a> = Box<dyn Iterator<Item = (usize, Result<(Input, Targets)>)> + 'a>;

/// Batch iterator over one epoch of training inputs, starting at batch `skip`.
pub fn epoch_batches<'a>(p: &'a Prepared, epoch: usize, skip: usize) -> EpochBatches<'a> {
    let cfg = &p.cfg;
    let order = epoch_order(p.train.len(), cfg.seed, epoch);
    match &p.train {
        TrainInputs::Images(set) => {
            let loader = EpochLoader::start(
                set.clone(),
                order,
                cfg.batch,
                cfg.size,
                cfg.augment.clone(),
                p.preprocess.clone(),
                cfg.seed,
                epoch,
                cfg.workers,
                skip,
            );
            let size = cfg.size as usize;
            Box::new(loader.map(move |(b, r)| {
                (
                    b,
                    r.map(|batch| {
                        let targets = Targets { labels: batch.labels, mix: batch.mix };
                        (Input::Images { pixels: batch.pixels, size }, targets)
                    }),
                )
            }))
        }
        TrainInputs::Features(f) => {
            let ranges = batch_ranges(order.len(), cfg.batch, true);
            Box::new(ranges.into_iter().enumerate().skip(skip).map(move |(b, r)| {
                let (values, labels) = f.gather(&order[r]);
                (b, Ok((Input::Features { values, dim: f.dim }, labels.into())))
            }))
        }
    }
}

/// Validation pass in eval mode: (plain valid loss, report, per-sample scores).
pub fn validate(p: &Prepared, model: &MobileNetV2) -> Result<(f64, ClassificationReport, Vec<Vec<f32>>)> {
    let eval = model.valid();
    let k = p.classes.len();
    let mut logits = Vec::with_capacity(p.valid.len() * k);
    match &p.valid {
        TrainInputs::Features(f) => {
            for r in batch_ranges(f.len(), 256, false) {
                let idx: Vec<usize> = r.collect();
                let (values, _) = f.gather(&idx);
                let x = Tensor::<2>::from_data(TensorData::new(values, [idx.len(), f.dim]), &p.device);
                logits.extend(to_host(eval.head(x)));
            }
        }
        TrainInputs::Images(set) => {
            let s = p.cfg.size as usize;
            for r in batch_ranges(set.len(), 32, false) {
                let idx: Vec<usize> = r.collect();
                let b = build_batch(set, &idx, p.cfg.size, None, &p.preprocess, 0, 0)?;
                let x = Tensor::<4>::from_data(TensorData::new(b.pixels, [b.n, 3, s, s]), &p.device);
                logits.extend(to_host(eval.forward(x)));
            }
        }
    }
    let labels = p.valid.labels();
    let loss = plain_cross_entropy(&logits, k, labels);
    let scores: Vec<Vec<f32>> = logits.chunks_exact(k).map(fieldkit_core::detect::softmax).collect();
    let preds: Vec<usize> = scores.iter().map(|s| argmax(s)).collect();
    let report = ClassificationReport::compute(labels, &preds, Some(&scores), &p.classes)?;
    Ok((loss, report, scores))
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, x)| if *x > bv { (i, *x) } else { (bi, bv) }).0
}

fn monitor_value(cfg: &ClassifyConfig, m: &EpochMetrics) -> f64 {
    match cfg.monitor {
        super::config::Monitor::Top1 => m.top1,
        super::config::Monitor::MacroF1 => m.macro_f1,
        super::config::Monitor::ValidLoss => m.valid_loss,
    }
}

/// Classification as a [`Task`] of the shared loop: layers thaw per the strategy, one
/// [`Stepper`] step per batch, validation by top-1 / macro-F1 / valid loss.
struct ClassifyTask<'a> {
    p: &'a Prepared,
    stepper: Stepper,
    /// First trainable layer the model is set to (None before the first epoch).
    current_from: Option<usize>,
}

impl<'a> Task<'a> for ClassifyTask<'a> {
    type Model = MobileNetV2;
    type Batch = (Input, Targets);
    type Metrics = EpochMetrics;

    fn settings(&self) -> &LoopSettings {
        &self.p.cfg.train
    }

    fn steps_per_epoch(&self) -> usize {
        steps_per_epoch(self.p)
    }

    fn final_lr_fraction(&self) -> f64 {
        FINAL_LR_FRACTION
    }

    fn monitor_name(&self) -> &'static str {
        self.p.cfg.monitor.name()
    }

    fn higher_is_better(&self) -> bool {
        self.p.cfg.monitor.higher_is_better()
    }

    fn begin_epoch(&mut self, model: MobileNetV2, epoch: usize, progress: &Progress) -> MobileNetV2 {
        let from = self.p.cfg.trainable_from(epoch);
        if self.current_from == Some(from) {
            return model;
        }
        if self.current_from.is_some() {
            progress.message(&format!("epoch {}: layers features.{from}.. now train", epoch + 1));
        }
        self.current_from = Some(from);
        self.stepper.reset();
        model.with_trainable_from(from)
    }

    fn batches(&self, epoch: usize, skip: usize) -> Box<dyn Iterator<Item = (usize, Result<Self::Batch>)> + 'a> {
        epoch_batches(self.p, epoch, skip)
    }

    fn step(
        &mut self,
        model: MobileNetV2,
        optim: &mut ModuleOptimizer,
        amp: &mut Amp,
        batch: Self::Batch,
        lr: f64,
        epoch: usize,
    ) -> Result<(MobileNetV2, f64, usize)> {
        let (input, targets) = batch;
        let n = targets.len();
        let from = self.p.cfg.trainable_from(epoch);
        let (m, loss) = self.stepper.step(model, optim, amp, &self.p.cfg, input, targets, lr, from);
        Ok((m, loss, n))
    }

    fn validate(&mut self, model: &MobileNetV2, t: &EpochTrain) -> Result<EpochMetrics> {
        let (valid_loss, report, _) = validate(self.p, model)?;
        Ok(EpochMetrics {
            epoch: t.epoch,
            lr: t.lr,
            train_loss: t.train_loss,
            valid_loss,
            top1: report.top1,
            macro_f1: report.macro_f1,
            trainable_from: self.current_from.unwrap_or(0),
            seconds: t.seconds,
            images_per_s: t.images_per_s,
        })
    }

    fn monitor(&self, m: &EpochMetrics) -> f64 {
        monitor_value(&self.p.cfg, m)
    }

    fn describe(&self, m: &EpochMetrics) -> String {
        format!(
            "epoch {:>3}/{}  train_loss {:.4}  valid_loss {:.4}  top1 {:.4}  macro_f1 {:.4}  {:.0} img/s  {:.0} s",
            m.epoch, self.p.cfg.epochs, m.train_loss, m.valid_loss, m.top1, m.macro_f1, m.images_per_s, m.seconds
        )
    }
}

/// Runs (or continues) the epochs. The best model by `monitor` is kept in
/// `checkpoints/best.bpk`.
pub fn run_loop(p: &Prepared, out: &Path, resume: bool, progress: &Progress) -> Result<LoopOutcome<EpochMetrics>> {
    let weights = class_weights(&p.counts, p.cfg.class_weights);
    let mut task = ClassifyTask { p, stepper: Stepper::on(p.replicas.clone(), &p.cfg, weights), current_from: None };
    run_epochs(&mut task, p.model.clone(), optimizer(&p.cfg), out, resume, progress)
}

/// Writes `model` as ONNX at `path` with its card (classes, input, preprocessing, decoding),
/// averaging the test-time views `tta`.
pub fn export_with_card(
    model: &MobileNetV2,
    cfg: &ClassifyConfig,
    tta: Tta,
    classes: &[String],
    data_fingerprint: &str,
    source: String,
    path: &Path,
) -> Result<ModelCard> {
    export_classifier(&model.valid(), cfg.size, tta, path)?;
    let card = ModelCard::new(
        CardTask::Classify,
        classes.to_vec(),
        square_input(cfg.size),
        cfg.preprocess(),
        Decode::Softmax { output: OUTPUT.into() },
    );
    let source = match tta {
        Tta::None => source,
        t => format!("{source}; test-time views {}", t.describe()),
    };
    write_card(card, source, data_fingerprint, path)
}

/// `fieldkit export` of a classification run's checkpoint, with the run's test-time views
/// unless `tta` names others.
pub fn export_run(run: &Path, which: Which, tta: Option<Tta>, path: &Path) -> Result<ModelCard> {
    let cfg: ClassifyConfig = fsio::read_json(&run.join("config.json"))?;
    // The same split as training (the held-out part taken out), so the card's fingerprint
    // names the images the model learnt from.
    let (train, _) =
        split_holdout(ImageFolder::open(&cfg.data, &cfg.train_split)?, cfg.holdout, cfg.seed, cfg.workers.max(1))?;
    let tta = tta.unwrap_or(cfg.tta);
    export_checkpoint(
        run,
        which,
        |d| cfg.init_model(train.classes.len(), d),
        |m, source| export_with_card(m, &cfg, tta, &train.classes, &train.fingerprint(), source, path),
    )
}

/// The tract scores of a classification run's exported model, and with test-time views the
/// network alone on one view (what burn validated each epoch; what the views add).
pub struct ClassifyScores {
    pub scores: Scores<ClassifierEval>,
    pub one_view: Option<ClassificationReport>,
}

/// A classification run's ending: MobileNetV2 + softmax card, scored by top-1 in tract.
impl Deliver for Prepared {
    type Model = MobileNetV2;
    type Metrics = EpochMetrics;
    type Eval = ClassifyScores;

    fn blank_model(&self) -> MobileNetV2 {
        self.cfg.init_model(self.classes.len(), &self.device)
    }

    fn source(&self) -> String {
        format!("fieldkit train classify ({})", describe_strategy(&self.cfg))
    }

    fn export(&self, model: &MobileNetV2, source: String, path: &Path) -> Result<ModelCard> {
        export_with_card(model, &self.cfg, self.cfg.tta, &self.classes, &self.data_fingerprint, source, path)
    }

    fn score(&self, model: &MobileNetV2, engine: &Engine) -> Result<Scored<ClassifyScores>> {
        let workers = self.cfg.workers.max(1);
        let valid = ImageFolder::open_with_classes(&self.cfg.data, &self.cfg.valid_split, &self.classes)?;
        let one_view = if self.cfg.tta == Tta::None {
            None
        } else {
            let dir = tempfile::tempdir().map_err(|e| CoreError::io(std::env::temp_dir(), e))?;
            let path = dir.path().join("one_view.onnx");
            export_with_card(model, &self.cfg, Tta::None, &self.classes, &self.data_fingerprint, String::new(), &path)?;
            Some(eval_classifier(&Engine::load(&path)?, &valid, workers)?.report)
        };
        let valid = eval_classifier(engine, &valid, workers)?;
        let holdout = self.holdout.as_ref().map(|h| eval_classifier(engine, h, workers)).transpose()?;
        let r = &valid.report;
        let mut card_metrics = vec![("valid_top1", r.top1), ("valid_macro_f1", r.macro_f1)];
        if let Some(h) = &holdout {
            card_metrics.extend([("holdout_top1", h.report.top1), ("holdout_macro_f1", h.report.macro_f1)]);
        }
        if let Some(o) = &one_view {
            card_metrics.extend([("valid_top1_one_view", o.top1), ("valid_macro_f1_one_view", o.macro_f1)]);
        }
        // burn validated one view each epoch: compare like with like.
        let headline = one_view.as_ref().map_or(r.top1, |o| o.top1);
        Ok(Scored { headline, card_metrics, eval: ClassifyScores { scores: Scores { valid, holdout }, one_view } })
    }

    fn headline(&self, row: &EpochMetrics) -> (&'static str, f64) {
        ("top1", row.top1)
    }

    fn plot_curves(&self, out: &Path, history: &[EpochMetrics]) -> Result<()> {
        super::report::plot_curves(out, history)
    }
}
