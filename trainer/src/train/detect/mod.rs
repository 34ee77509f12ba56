//! `fieldkit train detect`: the YOLOX-style detector trained on a YOLO dataset through the
//! shared epoch loop (schedules, checkpoints, resume, early stopping), validated each epoch
//! with core's COCO mAP, exported to ONNX + card and scored once more through the runtime.

pub mod assign;
pub mod config;
pub mod loss;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use fieldkit_core::card::{Decode, ModelCard, Task as CardTask};
use fieldkit_core::dataset::coco::{CocoDataset, CocoPrediction};
use fieldkit_core::dataset::photos::split_holdout;
use fieldkit_core::dataset::{DetSample, YoloDataset};
use fieldkit_core::detect::{decode_yolox, nms, NmsOptions};
use fieldkit_core::metrics::{CocoEval, CountReport};
use fieldkit_core::preprocess::{Geometry, Preprocess};
use fieldkit_runtime::eval::{eval_detector, eval_detector_on, DetectorEval};
use fieldkit_runtime::Engine;

use self::assign::{Anchors, GtBox};
use self::loss::yolox_loss;
use super::checkpoint::Which;
use super::groups::step_backbone_slower;
use super::looping::{run_epochs, EpochTrain, Task};
use super::outputs::{
    check_out_dir, deliver, export_checkpoint, square_input, write_card, write_config, write_holdout_list, Deliver,
    Scored, Scores,
};
use super::parallel::{share, Replicas};
use super::precision::Amp;
use super::progress::Progress;
use super::settings::LoopSettings;
use crate::data::boxes::{decode_eval_boxes, BoxSet, DetAugment, EvalBoxSet};
use crate::data::loader::{batch_ranges, BuildBatch, EpochLoader};
use crate::data::{epoch_order, sample_rng};
use crate::error::{Result, TrainerError};
use crate::export::export_detector;
use crate::export::onnx::DET_OUTPUT;
use crate::model::to_host;
use crate::model::yolox::{Detector, STRIDES};
use crate::weights::load_backbone;

pub use config::DetectConfig;
pub use loss::{BoxLoss, LossParts};

/// One row of a detection run's `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetEpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub map50: f64,
    pub map50_95: f64,
    /// Per-image count error at score 0.3.
    pub count_mae: f64,
    pub mosaic: bool,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// Everything the loop needs, prepared once.
pub struct DetPrepared {
    pub cfg: DetectConfig,
    pub classes: Vec<String>,
    /// Training boxes per class.
    pub counts: Vec<usize>,
    pub data_fingerprint: String,
    pub preprocess: Preprocess,
    pub device: Device,
    /// The devices each step's batch is split over (`--devices`); the first is `device`.
    pub replicas: Replicas,
    pub model: Detector,
    pub anchors: Anchors,
    pub train: Arc<BoxSet>,
    pub valid: EvalBoxSet,
    /// Valid ground truth in source pixels (COCO), and per image in model-input pixels.
    pub valid_gt: CocoDataset,
    pub valid_boxes: Vec<Vec<GtBox>>,
    /// The train images held out by whole photos (`--holdout`), scored only at the end.
    pub holdout: Option<Vec<DetSample>>,
}

/// What `fieldkit train detect` returns.
#[derive(Debug, Clone)]
pub struct DetectSummary {
    pub out: PathBuf,
    pub model: PathBuf,
    pub best_epoch: Option<usize>,
    pub history: Vec<DetEpochMetrics>,
    /// The exported model on the valid split through the runtime (tract).
    pub map50: f64,
    pub map50_95: f64,
    pub count_mae: f64,
    /// The exported model on the train images held out by whole photos (`--holdout`), and
    /// their number.
    pub holdout: Option<(CocoEval, usize)>,
    pub train_seconds: f64,
}

/// Ground-truth boxes of `gt`'s images mapped into model-input pixels by each image's geometry.
fn boxes_in_input(gt: &CocoDataset, geometry: &[Geometry]) -> Vec<Vec<GtBox>> {
    gt.images
        .iter()
        .zip(geometry)
        .map(|(im, g)| {
            gt.annotations
                .iter()
                .filter(|a| a.image_id == im.id)
                .map(|a| {
                    let [x, y, w, h] = a.bbox.map(|v| v as f32);
                    GtBox {
                        class: (a.category_id - 1) as usize,
                        bbox: [
                            x * g.scale_x + g.offset_x,
                            y * g.scale_y + g.offset_y,
                            (x + w) * g.scale_x + g.offset_x,
                            (y + h) * g.scale_y + g.offset_y,
                        ],
                    }
                })
                .collect()
        })
        .collect()
}

/// Opens the data, builds the model, loads the backbone and decodes both splits.
pub fn prepare(cfg: &DetectConfig, progress: &Progress) -> Result<DetPrepared> {
    cfg.validate()?;
    let data = YoloDataset::from_yaml(&cfg.data)?;
    let classes = data.names.clone();
    if classes.is_empty() {
        return Err(TrainerError::Config(format!("{}: names is empty", data.yaml.display())));
    }
    let replicas = cfg.open_devices(progress)?;
    let device = replicas.main().clone();
    let mut model = cfg.init_model(classes.len(), &device);
    if let Some(w) = &cfg.weights {
        load_backbone(&mut model.backbone, w)?;
    }
    let workers = cfg.workers.max(1);
    let t0 = Instant::now();
    let mut samples = data.load_split(&cfg.train_split)?;
    let holdout = if cfg.holdout > 0.0 {
        let (kept, held) = split_holdout(samples, |s| s.image.as_path(), cfg.holdout, cfg.seed, workers)?;
        samples = kept;
        progress.message(&format!("{} train images held out (--holdout {}, whole photos)", held.len(), cfg.holdout));
        Some(held)
    } else {
        None
    };
    let data_fingerprint = data.fingerprint(&samples);
    if samples.is_empty() {
        return Err(TrainerError::Config(format!(
            "{}: split '{}' holds no images",
            data.yaml.display(),
            cfg.train_split
        )));
    }
    let train = crate::data::boxes::decode_boxes(&samples, cfg.size, workers)?;
    let counts = train.class_counts(classes.len());
    if counts.iter().sum::<usize>() == 0 {
        return Err(TrainerError::Config(format!(
            "{}: split '{}' has no boxes to learn from",
            data.yaml.display(),
            cfg.train_split
        )));
    }
    let valid_gt = data.to_coco(&cfg.valid_split)?;
    if valid_gt.images.is_empty() {
        return Err(TrainerError::Config(format!(
            "{}: split '{}' holds no images",
            data.yaml.display(),
            cfg.valid_split
        )));
    }
    let preprocess = cfg.preprocess();
    let paths: Vec<PathBuf> = valid_gt.images.iter().map(|im| data.root.join(&im.file_name)).collect();
    let valid = decode_eval_boxes(&paths, &preprocess, workers)?;
    let valid_boxes = boxes_in_input(&valid_gt, &valid.geometry);
    progress.message(&format!(
        "data: {} train images ({} boxes: {}) / {} valid images; decoded in {:.1} s",
        train.len(),
        counts.iter().sum::<usize>(),
        classes.iter().zip(&counts).map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", "),
        valid.images.len(),
        t0.elapsed().as_secs_f64()
    ));
    Ok(DetPrepared {
        anchors: Anchors::new(cfg.size, &STRIDES),
        cfg: cfg.clone(),
        classes,
        counts,
        data_fingerprint,
        preprocess,
        device,
        replicas,
        model,
        train: Arc::new(train),
        valid,
        valid_gt,
        valid_boxes,
        holdout,
    })
}

/// `[n, 3, s, s]` normalised pixels and each image's boxes in input pixels.
pub struct DetBatch {
    pub pixels: Vec<f32>,
    pub boxes: Vec<Vec<GtBox>>,
}

/// Batch `b` of an epoch: augmented views (mosaic unless `closing`) of `order[range]`.
fn build_det_batch(
    set: &BoxSet,
    idx: &[usize],
    aug: &DetAugment,
    pre: &Preprocess,
    seed: u64,
    epoch: usize,
    mosaic: bool,
) -> Result<DetBatch> {
    let s = set.size;
    let plane = 3 * (s * s) as usize;
    let mut pixels = vec![0f32; idx.len() * plane];
    let mut boxes = Vec::with_capacity(idx.len());
    for (k, &i) in idx.iter().enumerate() {
        let (img, b) = aug.sample(set, i, mosaic, &mut sample_rng(seed, epoch, i));
        pre.normalize_into(&img, &mut pixels[k * plane..(k + 1) * plane])?;
        boxes.push(b);
    }
    Ok(DetBatch { pixels, boxes })
}

pub fn steps_per_epoch(p: &DetPrepared) -> usize {
    batch_ranges(p.train.len(), p.cfg.batch, true).len()
}

/// The head trains from scratch: a floor of 5 % of the peak lr keeps the last epochs learning.
const FINAL_LR_FRACTION: f64 = 0.05;

/// Raw head outputs of the validation images (eval mode), one `[anchors·(5+classes)]`
/// vector per image, in batches of 16.
pub fn valid_outputs(p: &DetPrepared, model: &Detector) -> Result<Vec<Vec<f32>>> {
    let eval = model.valid();
    let s = p.cfg.size as usize;
    let plane = 3 * s * s;
    let mut out = Vec::with_capacity(p.valid.images.len());
    for r in batch_ranges(p.valid.images.len(), 16, false) {
        let mut pixels = vec![0f32; r.len() * plane];
        for (k, i) in r.clone().enumerate() {
            p.preprocess.normalize_into(&p.valid.images[i], &mut pixels[k * plane..(k + 1) * plane])?;
        }
        let y = to_host(eval.forward(Tensor::<4>::from_data(TensorData::new(pixels, [r.len(), 3, s, s]), &p.device)));
        let per = y.len() / r.len();
        out.extend(y.chunks_exact(per).map(|c| c.to_vec()));
    }
    Ok(out)
}

/// Validation: the plain loss, COCO mAP and count errors of `model` on the valid split,
/// decoded and suppressed exactly as the runtime does (COCO protocol), boxes in source pixels.
pub fn validate(p: &DetPrepared, model: &Detector) -> Result<(f64, CocoEval, CountReport)> {
    let outputs = valid_outputs(p, model)?;
    let nc = p.classes.len();
    let (s, row) = (p.cfg.size, 5 + nc);
    let mut preds = Vec::new();
    let mut loss = 0.0;
    for (i, y) in outputs.iter().enumerate() {
        let dets = decode_yolox(y, nc, s, s, &STRIDES, true, NmsOptions::COCO_EVAL.score_threshold)?;
        let geo = &p.valid.geometry[i];
        let image_id = p.valid_gt.images[i].id;
        for mut d in nms(dets, &NmsOptions::COCO_EVAL) {
            d.bbox = geo.to_source(d.bbox);
            preds.push(CocoPrediction::from_box(image_id, d.bbox, d.class, d.score));
        }
        let t = Tensor::<3>::from_data(TensorData::new(y.clone(), [1, y.len() / row, row]), &p.device);
        loss += yolox_loss(t, std::slice::from_ref(&p.valid_boxes[i]), &p.anchors, p.cfg.box_loss, false).1.total;
    }
    let coco = CocoEval::evaluate(&p.valid_gt, &preds)?;
    let counts = CountReport::compute(&p.valid_gt, &preds, 0.3);
    Ok((loss / outputs.len().max(1) as f64, coco, counts))
}

/// Detection as a [`Task`] of the shared loop.
struct DetectTask<'a> {
    p: &'a DetPrepared,
    /// eval-mode snapshots for the frozen backbone prefix, one per device.
    frozen: Vec<Detector>,
}

impl<'a> Task<'a> for DetectTask<'a> {
    type Model = Detector;
    type Batch = DetBatch;
    type Metrics = DetEpochMetrics;

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
        "map50_95"
    }

    fn higher_is_better(&self) -> bool {
        true
    }

    fn begin_epoch(&mut self, model: Detector, epoch: usize, progress: &Progress) -> Detector {
        let c = &self.p.cfg;
        if c.close_mosaic > 0 && c.closing(epoch) && (epoch == 0 || !c.closing(epoch - 1)) {
            progress.message(&format!(
                "epoch {}: mosaic off, L1 box loss on for the last {} epochs",
                epoch + 1,
                c.close_mosaic.min(c.epochs)
            ));
        }
        model
    }

    fn batches(&self, epoch: usize, skip: usize) -> Box<dyn Iterator<Item = (usize, Result<DetBatch>)> + 'a> {
        let p = self.p;
        let c = &p.cfg;
        let order = epoch_order(p.train.len(), c.seed, epoch);
        let ranges = batch_ranges(order.len(), c.batch, true);
        let n = ranges.len();
        let (set, aug, pre, seed, mosaic) =
            (p.train.clone(), c.augment.clone(), p.preprocess.clone(), c.seed, !c.closing(epoch));
        let build: BuildBatch<DetBatch> =
            Arc::new(move |b| build_det_batch(&set, &order[ranges[b].clone()], &aug, &pre, seed, epoch, mosaic));
        Box::new(EpochLoader::spawn(n, c.workers, skip, build))
    }

    fn step(
        &mut self,
        model: Detector,
        optim: &mut ModuleOptimizer,
        amp: &mut Amp,
        batch: DetBatch,
        lr: f64,
        epoch: usize,
    ) -> Result<(Detector, f64, usize)> {
        let p = self.p;
        let c = &p.cfg;
        let n = batch.boxes.len();
        let s = c.size as usize;
        let (from, closing) = (c.trainable_from(), c.closing(epoch));
        if self.frozen.is_empty() {
            self.frozen = p.replicas.snapshots(&model);
        }
        let frozen = &self.frozen;
        let lower = &*amp;
        let (grads, value) = p.replicas.backward(lower, &model, n, |k, replica, rows| {
            let pixels = share(&batch.pixels, &rows, 3 * s * s);
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [rows.len(), 3, s, s]), &p.replicas.devices()[k]);
            let compute = lower.lower(replica);
            // The frozen prefix without autodiff, the rest with it.
            let maps = compute.backbone_maps_split(&frozen[k], from, x);
            yolox_loss(compute.forward_from_maps(maps), &batch.boxes[rows], &p.anchors, c.box_loss, closing).0
        });
        let model = step_backbone_slower(optim, amp, model, grads, |m| &m.backbone, lr, c.lr_mult);
        Ok((model, value, n))
    }

    fn validate(&mut self, model: &Detector, t: &EpochTrain) -> Result<DetEpochMetrics> {
        let (valid_loss, coco, counts) = validate(self.p, model)?;
        Ok(DetEpochMetrics {
            epoch: t.epoch,
            lr: t.lr,
            train_loss: t.train_loss,
            valid_loss,
            map50: coco.map50,
            map50_95: coco.map50_95,
            count_mae: counts.count_mae,
            mosaic: !self.p.cfg.closing(t.epoch - 1) && self.p.cfg.augment.mosaic > 0.0,
            seconds: t.seconds,
            images_per_s: t.images_per_s,
        })
    }

    fn monitor(&self, m: &DetEpochMetrics) -> f64 {
        m.map50_95
    }

    fn describe(&self, m: &DetEpochMetrics) -> String {
        format!(
            "epoch {:>3}/{}  train_loss {:.4}  valid_loss {:.4}  mAP50 {:.4}  mAP50-95 {:.4}  count MAE {:.2}  {:.1} img/s  {:.0} s",
            m.epoch, self.p.cfg.epochs, m.train_loss, m.valid_loss, m.map50, m.map50_95, m.count_mae, m.images_per_s, m.seconds
        )
    }
}

/// Trains (or resumes) a detector into `out`: checkpoints, best model, `model.onnx` + card,
/// metrics.csv, report.md with curves and per-class AP, config.json.
pub fn train_detect(cfg: &DetectConfig, out: &Path, resume: bool, progress: &Progress) -> Result<DetectSummary> {
    check_out_dir(out, resume)?;
    let p = prepare(cfg, progress)?;
    if !resume {
        write_config(out, cfg)?;
    }
    if let Some(h) = &p.holdout {
        write_holdout_list(out, h.iter().map(|s| s.image.as_path()))?;
    }
    let mut task = DetectTask { p: &p, frozen: Vec::new() };
    // The frozen boundary never moves: set it once (freezing survives `train()` and loading).
    let model = p.model.clone().with_trainable_from(cfg.trainable_from());
    let outcome = run_epochs(&mut task, model, cfg.train.optimizer(), out, resume, progress)?;
    let done = deliver(&p, &outcome, out, progress)?;
    let state = outcome.state;
    let Scores { valid: eval, holdout } = done.eval;
    report::write_report(
        out,
        &report::DetReportInputs {
            cfg,
            classes: &p.classes,
            counts: &p.counts,
            train_images: p.train.len(),
            history: &state.history,
            best_epoch: state.best_epoch,
            final_eval: &eval.coco,
            final_counts: &eval.counts,
            holdout: holdout.as_ref().map(|h| (&h.coco, h.ground_truth.images.len())),
            train_seconds: state.elapsed_s,
            stopped_early: state.stopped_early,
            loss_scale: state.loss_scale,
        },
    )?;
    Ok(DetectSummary {
        out: out.to_path_buf(),
        model: done.model,
        best_epoch: state.best_epoch,
        history: state.history,
        map50: eval.coco.map50,
        map50_95: eval.coco.map50_95,
        count_mae: eval.counts.count_mae,
        holdout: holdout.map(|h| {
            let n = h.ground_truth.images.len();
            (h.coco, n)
        }),
        train_seconds: state.elapsed_s,
    })
}

/// Writes `model` as ONNX at `path` with its card (classes, input, letterbox, YOLOX decoding).
pub fn export_with_card(
    model: &Detector,
    cfg: &DetectConfig,
    classes: &[String],
    data_fingerprint: &str,
    source: String,
    path: &Path,
) -> Result<ModelCard> {
    export_detector(&model.valid(), cfg.size, path)?;
    let card = ModelCard::new(
        CardTask::Detect,
        classes.to_vec(),
        square_input(cfg.size),
        cfg.preprocess(),
        Decode::Yolox { output: DET_OUTPUT.into(), strides: STRIDES.to_vec(), logits: false },
    );
    write_card(card, source, data_fingerprint, path)
}

/// `fieldkit export` of a detection run's checkpoint.
pub fn export_run(run: &Path, which: Which, path: &Path) -> Result<ModelCard> {
    let cfg: DetectConfig = fieldkit_core::fsio::read_json(&run.join("config.json"))?;
    let data = YoloDataset::from_yaml(&cfg.data)?;
    // The same split as training (the held-out part taken out), so the card's fingerprint
    // names the images the model learnt from.
    let (samples, _) = split_holdout(
        data.load_split(&cfg.train_split)?,
        |s| s.image.as_path(),
        cfg.holdout,
        cfg.seed,
        cfg.workers.max(1),
    )?;
    export_checkpoint(
        run,
        which,
        |d| cfg.init_model(data.names.len(), d),
        |m, source| export_with_card(m, &cfg, &data.names, &data.fingerprint(&samples), source, path),
    )
}

/// A detection run's ending: the YOLOX-style detector + letterbox card, scored by mAP50-95
/// in tract (counts and mAP50 into the card too).
impl Deliver for DetPrepared {
    type Model = Detector;
    type Metrics = DetEpochMetrics;
    type Eval = Scores<DetectorEval>;

    fn blank_model(&self) -> Detector {
        self.cfg.init_model(self.classes.len(), &self.device)
    }

    fn source(&self) -> String {
        "fieldkit train detect (YOLOX-style head on MobileNetV2)".into()
    }

    fn export(&self, model: &Detector, source: String, path: &Path) -> Result<ModelCard> {
        export_with_card(model, &self.cfg, &self.classes, &self.data_fingerprint, source, path)
    }

    fn score(&self, _model: &Detector, engine: &Engine) -> Result<Scored<Scores<DetectorEval>>> {
        let data = YoloDataset::from_yaml(&self.cfg.data)?;
        let workers = self.cfg.workers.max(1);
        let eval = eval_detector(engine, &data, &self.cfg.valid_split, workers, 0.3)?;
        let holdout = self.holdout.as_ref().map(|h| eval_detector_on(engine, &data, h, workers, 0.3)).transpose()?;
        let mut card_metrics = vec![
            ("valid_map50", eval.coco.map50),
            ("valid_map50_95", eval.coco.map50_95),
            ("valid_count_mae", eval.counts.count_mae),
        ];
        if let Some(h) = &holdout {
            card_metrics.extend([("holdout_map50", h.coco.map50), ("holdout_map50_95", h.coco.map50_95)]);
        }
        Ok(Scored { headline: eval.coco.map50_95, card_metrics, eval: Scores { valid: eval, holdout } })
    }

    fn headline(&self, row: &DetEpochMetrics) -> (&'static str, f64) {
        ("mAP50-95", row.map50_95)
    }

    fn plot_curves(&self, out: &Path, history: &[DetEpochMetrics]) -> Result<()> {
        report::plot_curves(out, history)
    }
}
