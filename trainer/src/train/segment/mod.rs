//! `fieldkit train segment`: the LR-ASPP segmenter trained on a mask-folder dataset through
//! the shared epoch loop (schedules, checkpoints, resume, EMA, early stopping), validated each
//! epoch by core's pixel metrics at the masks' own resolution, the best model exported to
//! ONNX and scored once more in tract.
//!
//! Not yet: a model card and the runtime's segmentation decoding (the exported file runs in
//! tract as a bare model), `--holdout`, a report with curves.

pub mod config;
pub mod loss;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::metrics::{SegConfusion, SegmentationReport};
use fieldkit_core::preprocess::Preprocess;
use fieldkit_runtime::{Engine, LoadOptions};

use super::checkpoint::load_module;
use super::history::EpochRow;
use super::looping::{run_epochs, EpochTrain, Task};
use super::outputs::{check_out_dir, write_config};
use super::progress::Progress;
use super::settings::LoopSettings;
use crate::data::loader::{batch_ranges, BuildBatch, EpochLoader};
use crate::data::masks::{load_seg_split, resize_ids, SegSet};
use crate::data::{class_weights, epoch_order, sample_rng, Augment};
use crate::error::{Result, TrainerError};
use crate::export::export_segmenter;
use crate::model::{to_host, Segmenter};
use crate::weights::load_backbone;

pub use config::SegmentConfig;
pub use loss::{seg_loss, SegLoss, SegTarget};

/// One row of a segmentation run's `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegEpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub miou: f64,
    pub pixel_acc: f64,
    /// IoU of each class, in class order (NaN where a class is in neither map).
    pub iou: Vec<f64>,
    pub seconds: f64,
    pub images_per_s: f64,
}

impl EpochRow for SegEpochMetrics {
    const HEADER: &'static [&'static str] =
        &["epoch", "lr", "train_loss", "valid_loss", "miou", "pixel_acc", "iou_per_class", "seconds", "images_per_s"];

    fn epoch(&self) -> usize {
        self.epoch
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.epoch.to_string(),
            format!("{:.6e}", self.lr),
            format!("{:.6}", self.train_loss),
            format!("{:.6}", self.valid_loss),
            format!("{:.6}", self.miou),
            format!("{:.6}", self.pixel_acc),
            self.iou.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(" "),
            format!("{:.2}", self.seconds),
            format!("{:.2}", self.images_per_s),
        ]
    }

    fn train_loss(&self) -> f64 {
        self.train_loss
    }

    fn valid_loss(&self) -> f64 {
        self.valid_loss
    }
}

/// Everything a run needs, loaded once.
pub struct SegPrepared {
    pub cfg: SegmentConfig,
    pub classes: Vec<String>,
    /// Train pixels per class, and the cross-entropy weights from them.
    pub counts: Vec<usize>,
    pub weights: Option<Vec<f32>>,
    pub preprocess: Preprocess,
    pub device: Device,
    pub model: Segmenter,
    pub train: Arc<SegSet>,
    pub valid: SegSet,
}

pub fn prepare(cfg: &SegmentConfig, progress: &Progress) -> Result<SegPrepared> {
    cfg.validate()?;
    let data = MaskDataset::open(&cfg.data)?;
    let classes: Vec<String> = data.classes.iter().map(|c| c.name.clone()).collect();
    let device = cfg.device.device()?;
    device.seed(cfg.seed);
    let mut model = cfg.init_model(classes.len(), &device);
    if let Some(w) = &cfg.weights {
        load_backbone(&mut model.backbone, w)?;
    }
    let t0 = Instant::now();
    let workers = cfg.workers.max(1);
    let train = load_seg_split(&data, &cfg.train_split, workers)?;
    let valid = load_seg_split(&data, &cfg.valid_split, workers)?;
    for (set, split) in [(&train, &cfg.train_split), (&valid, &cfg.valid_split)] {
        if set.is_empty() {
            return Err(TrainerError::Config(format!("{}: split '{split}' holds no images", cfg.data.display())));
        }
    }
    let counts = train.pixel_counts(classes.len());
    let total = counts.iter().sum::<usize>().max(1) as f64;
    progress.message(&format!(
        "data: {} train / {} valid images; train pixels {}; decoded in {:.1} s",
        train.len(),
        valid.len(),
        classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {:.1} %", 100.0 * *n as f64 / total))
            .collect::<Vec<_>>()
            .join(", "),
        t0.elapsed().as_secs_f64()
    ));
    Ok(SegPrepared {
        weights: class_weights(&counts, cfg.class_weights),
        preprocess: cfg.preprocess(),
        cfg: cfg.clone(),
        classes,
        counts,
        device,
        model,
        train: Arc::new(train),
        valid,
    })
}

/// `[n, 3, H, W]` normalised pixels and each view's class ids at the input size.
pub struct SegBatch {
    pub pixels: Vec<f32>,
    pub masks: Vec<Vec<u8>>,
}

fn build_seg_batch(
    set: &SegSet,
    idx: &[usize],
    aug: &Augment,
    pre: &Preprocess,
    [w, h]: [u32; 2],
    seed: u64,
    epoch: usize,
) -> Result<SegBatch> {
    let plane = 3 * (w * h) as usize;
    let mut pixels = vec![0f32; idx.len() * plane];
    let mut masks = Vec::with_capacity(idx.len());
    for (k, &i) in idx.iter().enumerate() {
        let (img, ids) = aug.apply_pair(&set.images[i], &set.masks[i], w, h, &mut sample_rng(seed, epoch, i))?;
        pre.normalize_into(&img, &mut pixels[k * plane..(k + 1) * plane])?;
        masks.push(ids);
    }
    Ok(SegBatch { pixels, masks })
}

/// The valid split through `predict` (normalised `[n, 3, H, W]` pixels of up to 8 images ->
/// their `[n, classes, H, W]` logits): the loss against the masks at the input size, and the
/// pixel metrics with each prediction brought back to its image's own size (nearest).
fn score_valid(
    p: &SegPrepared,
    mut predict: impl FnMut(Vec<f32>, usize) -> Result<Vec<f32>>,
) -> Result<(f64, SegmentationReport)> {
    let [w, h] = p.cfg.size;
    let (plane, px) = (3 * (w * h) as usize, (w * h) as usize);
    let nc = p.classes.len();
    let mut cm = SegConfusion::new(nc, Some(255));
    let mut loss = 0.0;
    for r in batch_ranges(p.valid.len(), 8, false) {
        let mut pixels = vec![0f32; r.len() * plane];
        let mut masks = Vec::with_capacity(r.len());
        for (k, i) in r.clone().enumerate() {
            let img = &p.valid.images[i];
            pixels[k * plane..(k + 1) * plane].copy_from_slice(&p.preprocess.run(img)?.data);
            masks.push(resize_ids(&p.valid.masks[i], img.width(), img.height(), w, h));
        }
        let logits = predict(pixels, r.len())?;
        let t =
            Tensor::<4>::from_data(TensorData::new(logits.clone(), [r.len(), nc, h as usize, w as usize]), &p.device);
        let target = SegTarget::new(&masks, nc, h as usize, w as usize, &p.device);
        loss += seg_loss(t, &target, p.weights.as_deref(), p.cfg.loss).into_scalar::<f64>() * r.len() as f64;
        for (k, i) in r.enumerate() {
            let l = &logits[k * nc * px..(k + 1) * nc * px];
            let pred: Vec<u8> = (0..px)
                .map(|j| (0..nc).max_by(|&a, &b| l[a * px + j].total_cmp(&l[b * px + j])).unwrap_or(0) as u8)
                .collect();
            let img = &p.valid.images[i];
            cm.add(&p.valid.masks[i], &resize_ids(&pred, w, h, img.width(), img.height()))?;
        }
    }
    Ok((loss / p.valid.len() as f64, cm.report(&p.classes)?))
}

/// Validation in burn (eval mode).
pub fn validate(p: &SegPrepared, model: &Segmenter) -> Result<(f64, SegmentationReport)> {
    let eval = model.valid();
    let [w, h] = p.cfg.size.map(|v| v as usize);
    score_valid(p, |pixels, n| {
        Ok(to_host(eval.forward(Tensor::<4>::from_data(TensorData::new(pixels, [n, 3, h, w]), &p.device))))
    })
}

/// Segmentation as a [`Task`] of the shared loop.
struct SegmentTask<'a> {
    p: &'a SegPrepared,
}

impl<'a> Task<'a> for SegmentTask<'a> {
    type Model = Segmenter;
    type Batch = SegBatch;
    type Metrics = SegEpochMetrics;

    fn settings(&self) -> &LoopSettings {
        &self.p.cfg.train
    }

    fn steps_per_epoch(&self) -> usize {
        batch_ranges(self.p.train.len(), self.p.cfg.batch, true).len()
    }

    /// The head starts from scratch (as the detector's): a floor of 5 % of the peak lr.
    fn final_lr_fraction(&self) -> f64 {
        0.05
    }

    fn monitor_name(&self) -> &'static str {
        "miou"
    }

    fn higher_is_better(&self) -> bool {
        true
    }

    fn begin_epoch(&mut self, model: Segmenter, _epoch: usize, _progress: &Progress) -> Segmenter {
        model
    }

    fn batches(&self, epoch: usize, skip: usize) -> Box<dyn Iterator<Item = (usize, Result<SegBatch>)> + 'a> {
        let p = self.p;
        let c = &p.cfg;
        let order = epoch_order(p.train.len(), c.seed, epoch);
        let ranges = batch_ranges(order.len(), c.batch, true);
        let n = ranges.len();
        let (set, aug, pre, size, seed) = (p.train.clone(), c.augment.clone(), p.preprocess.clone(), c.size, c.seed);
        let build: BuildBatch<SegBatch> =
            Arc::new(move |b| build_seg_batch(&set, &order[ranges[b].clone()], &aug, &pre, size, seed, epoch));
        Box::new(EpochLoader::spawn(n, c.workers, skip, build))
    }

    fn step(
        &mut self,
        model: Segmenter,
        optim: &mut ModuleOptimizer,
        batch: SegBatch,
        lr: f64,
        _epoch: usize,
    ) -> Result<(Segmenter, f64, usize)> {
        let p = self.p;
        let c = &p.cfg;
        let n = batch.masks.len();
        let [w, h] = c.size.map(|v| v as usize);
        let ad = p.device.clone().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(batch.pixels, [n, 3, h, w]), &ad); // [n, 3, H, W]
        let target = SegTarget::new(&batch.masks, p.classes.len(), h, w, &ad);
        let loss = seg_loss(model.forward(x), &target, p.weights.as_deref(), c.loss);
        let value = loss.clone().into_scalar::<f64>();
        let mut grads = loss.backward();
        let mut model = model;
        if c.lr_mult == 1.0 {
            let g = GradientsParams::from_grads(grads, &model);
            model = optim.step(lr, model, g);
        } else {
            // The pretrained backbone moves lr_mult times slower than the new head.
            let backbone = GradientsParams::from_module(&mut grads, &model.backbone);
            let rest = GradientsParams::from_grads(grads, &model);
            model = optim.step(lr, model, rest);
            if !backbone.is_empty() {
                model = optim.step(lr / c.lr_mult, model, backbone);
            }
        }
        Ok((model, value, n))
    }

    fn validate(&mut self, model: &Segmenter, t: &EpochTrain) -> Result<SegEpochMetrics> {
        let (valid_loss, r) = validate(self.p, model)?;
        Ok(SegEpochMetrics {
            epoch: t.epoch,
            lr: t.lr,
            train_loss: t.train_loss,
            valid_loss,
            miou: r.miou,
            pixel_acc: r.pixel_acc,
            iou: r.per_class.iter().map(|c| c.iou.unwrap_or(f64::NAN)).collect(),
            seconds: t.seconds,
            images_per_s: t.images_per_s,
        })
    }

    fn monitor(&self, m: &SegEpochMetrics) -> f64 {
        m.miou
    }

    fn describe(&self, m: &SegEpochMetrics) -> String {
        let per: Vec<String> = self.p.classes.iter().zip(&m.iou).map(|(c, v)| format!("{c} {v:.3}")).collect();
        format!(
            "epoch {:>3}/{}  train_loss {:.4}  valid_loss {:.4}  mIoU {:.4} ({})  pixel acc {:.4}  {:.1} img/s  {:.0} s",
            m.epoch,
            self.p.cfg.epochs,
            m.train_loss,
            m.valid_loss,
            m.miou,
            per.join(", "),
            m.pixel_acc,
            m.images_per_s,
            m.seconds
        )
    }
}

/// What `fieldkit train segment` returns.
#[derive(Debug, Clone)]
pub struct SegmentSummary {
    pub out: PathBuf,
    pub model: PathBuf,
    pub best_epoch: Option<usize>,
    pub history: Vec<SegEpochMetrics>,
    /// The exported model's valid metrics in tract.
    pub valid: SegmentationReport,
    pub train_seconds: f64,
}

/// Trains (or resumes) a segmenter into `out`: config.json, checkpoints, metrics.csv, the
/// best model as `model.onnx`, and its valid metrics in tract as `valid_metrics.json`.
pub fn train_segment(cfg: &SegmentConfig, out: &Path, resume: bool, progress: &Progress) -> Result<SegmentSummary> {
    check_out_dir(out, resume)?;
    let p = prepare(cfg, progress)?;
    if !resume {
        write_config(out, cfg)?;
    }
    let mut task = SegmentTask { p: &p };
    let model = p.model.clone().with_trainable_from(cfg.unfreeze_from);
    let outcome = run_epochs(&mut task, model, cfg.train.optimizer(), out, resume, progress)?;
    let state = outcome.state;
    super::history::write_metrics_csv(&out.join("metrics.csv"), &state.history)?;
    let mut best = cfg.init_model(p.classes.len(), &p.device);
    load_module(&mut best, &outcome.best_model)?;
    let path = out.join("model.onnx");
    let [w, h] = cfg.size;
    export_segmenter(&best.valid(), h, w, &path)?;
    let engine = Engine::load_bare(&path, &LoadOptions::default())?;
    let (_, valid) = score_valid(&p, |pixels, n| {
        let plane = pixels.len() / n;
        let mut out = Vec::new();
        for x in pixels.chunks_exact(plane) {
            out.extend(engine.session()?.run_tensor(x)?);
        }
        Ok(out)
    })?;
    fieldkit_core::fsio::write_json(&out.join("valid_metrics.json"), &valid)?;
    if let Some(row) = state.best_epoch.and_then(|e| state.history.iter().find(|m| m.epoch == e)) {
        if (row.miou - valid.miou).abs() > 0.01 {
            progress.message(&format!(
                "warning: burn measured mIoU {:.4} at the best epoch, the exported model gives {:.4} in tract",
                row.miou, valid.miou
            ));
        }
    }
    Ok(SegmentSummary {
        out: out.to_path_buf(),
        model: path,
        best_epoch: state.best_epoch,
        history: state.history,
        valid,
        train_seconds: state.elapsed_s,
    })
}
