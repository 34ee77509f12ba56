//! `fieldkit train segment`: the LR-ASPP segmenter trained on a mask-folder dataset through
//! the shared epoch loop (schedules, checkpoints, resume, EMA, early stopping), validated each
//! epoch by core's pixel metrics at the masks' own resolution, and through the shared ending:
//! the best model exported to ONNX with a `decode: segment` card and scored once more in
//! tract by the runtime's `eval_segmenter`.
//!
//! `--holdout F` keeps a share of train's photos out (never trained on, never used to pick
//! the checkpoint) and scores the exported model on them beside valid. report.md sums it up.

pub mod config;
pub mod loss;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task as CardTask};
use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::dataset::photos::split_holdout;
use fieldkit_core::metrics::{SegConfusion, SegmentationReport};
use fieldkit_core::preprocess::Preprocess;
use fieldkit_core::segment::{argmax_classes, resize_ids};
use fieldkit_runtime::eval::{eval_segmenter, eval_segmenter_on};
use fieldkit_runtime::Engine;

use super::groups::step_backbone_slower;
use super::history::EpochRow;
use super::looping::{run_epochs, EpochTrain, Task};
use super::outputs::{check_out_dir, deliver, write_card, write_config, write_holdout_list, Deliver, Scored, Scores};
use super::parallel::{share, Replicas};
use super::precision::Amp;
use super::progress::Progress;
use super::settings::LoopSettings;
use crate::data::loader::{batch_ranges, BuildBatch, EpochLoader};
use crate::data::masks::{load_seg_pairs, SegSet};
use crate::data::{class_weights, epoch_order, sample_rng, Augment};
use crate::error::{Result, TrainerError};
use crate::export::export_segmenter;
use crate::export::onnx::{INPUT, SEG_OUTPUT};
use crate::model::{to_host, Segmenter};
use crate::weights::load_backbone;

pub use config::{SegDecoder, SegmentConfig};
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
    /// The devices each step's batch is split over (`--devices`); the first is `device`.
    pub replicas: Replicas,
    pub model: Segmenter,
    pub train: Arc<SegSet>,
    pub valid: SegSet,
    /// The train images and masks the model learns from, for its card.
    pub data_fingerprint: String,
    /// Train photos held out (`--holdout`): image / mask pairs.
    pub holdout: Option<Vec<(PathBuf, PathBuf)>>,
}

/// Train's image / mask pairs, less those `--holdout` keeps out by whole photos (the same
/// seeded choice every time), and the held-out ones.
type Pairs = Vec<(PathBuf, PathBuf)>;

fn train_pairs(cfg: &SegmentConfig, data: &MaskDataset) -> Result<(Pairs, Option<Pairs>)> {
    let pairs = data.pairs(&cfg.train_split)?;
    if cfg.holdout <= 0.0 {
        return Ok((pairs, None));
    }
    let (kept, held) = split_holdout(pairs, |p| p.0.as_path(), cfg.holdout, cfg.seed, cfg.workers.max(1))?;
    Ok((kept, Some(held)))
}

pub fn prepare(cfg: &SegmentConfig, progress: &Progress) -> Result<SegPrepared> {
    cfg.validate()?;
    let data = MaskDataset::open(&cfg.data)?;
    let classes: Vec<String> = data.classes.iter().map(|c| c.name.clone()).collect();
    let replicas = cfg.open_devices(progress)?;
    let device = replicas.main().clone();
    let mut model = cfg.init_model(classes.len(), &device);
    if let Some(w) = &cfg.weights {
        load_backbone(&mut model.backbone, w)?;
    }
    let t0 = Instant::now();
    let workers = cfg.workers.max(1);
    let (kept, holdout) = train_pairs(cfg, &data)?;
    if let Some(h) = &holdout {
        progress.message(&format!("{} train photos held out (--holdout {}, whole photos)", h.len(), cfg.holdout));
    }
    let train = load_seg_pairs(&data, &kept, workers)?;
    let valid = load_seg_pairs(&data, &data.pairs(&cfg.valid_split)?, workers)?;
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
        holdout,
        data_fingerprint: train.fingerprint(),
        weights: class_weights(&counts, cfg.class_weights),
        preprocess: cfg.preprocess(),
        cfg: cfg.clone(),
        classes,
        counts,
        device,
        replicas,
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

/// Validation in burn (eval mode), in batches of 8: the loss against the masks at the input
/// size, and the pixel metrics with each prediction brought back to its photo's own size
/// (nearest), as the runtime scores the exported model.
pub fn validate(p: &SegPrepared, model: &Segmenter) -> Result<(f64, SegmentationReport)> {
    let eval = model.valid();
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
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [r.len(), 3, h as usize, w as usize]), &p.device);
        let logits = eval.forward(x); // [n, classes, H, W]
        let target = SegTarget::new(&masks, nc, h as usize, w as usize, &p.device);
        loss +=
            seg_loss(logits.clone(), &target, p.weights.as_deref(), p.cfg.loss).into_scalar::<f64>() * r.len() as f64;
        let logits = to_host(logits);
        for (k, i) in r.enumerate() {
            let pred = argmax_classes(&logits[k * nc * px..(k + 1) * nc * px], nc, px);
            let img = &p.valid.images[i];
            cm.add(&p.valid.masks[i], &resize_ids(&pred, w, h, img.width(), img.height()))?;
        }
    }
    Ok((loss / p.valid.len() as f64, cm.report(&p.classes)?))
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
        amp: &mut Amp,
        batch: SegBatch,
        lr: f64,
        _epoch: usize,
    ) -> Result<(Segmenter, f64, usize)> {
        let p = self.p;
        let c = &p.cfg;
        let n = batch.masks.len();
        let [w, h] = c.size.map(|v| v as usize);
        let lower = &*amp;
        let (grads, value) = p.replicas.backward(lower, &model, n, |k, replica, rows| {
            let ad = p.replicas.devices()[k].clone().autodiff();
            let pixels = share(&batch.pixels, &rows, 3 * h * w);
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [rows.len(), 3, h, w]), &ad); // [rows, 3, H, W]
            let target = SegTarget::new(&batch.masks[rows], p.classes.len(), h, w, &ad);
            seg_loss(lower.lower(replica).forward(x), &target, p.weights.as_deref(), c.loss)
        });
        // The pretrained backbone moves lr_mult times slower than the new head.
        let model = step_backbone_slower(optim, amp, model, grads, |m| &m.backbone, lr, c.lr_mult);
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
    /// The exported model's valid metrics in tract, and on the held-out train photos.
    pub valid: SegmentationReport,
    pub holdout: Option<SegmentationReport>,
    pub train_seconds: f64,
}

/// Trains (or resumes) a segmenter into `out`: config.json, checkpoints, metrics.csv with
/// loss.png and miou.png, the best model as `model.onnx` + card, its valid metrics in tract as
/// `valid_metrics.json` (and `holdout_metrics.json` with `holdout.txt` under `--holdout`),
/// report.md with confusion.png.
pub fn train_segment(cfg: &SegmentConfig, out: &Path, resume: bool, progress: &Progress) -> Result<SegmentSummary> {
    check_out_dir(out, resume)?;
    let p = prepare(cfg, progress)?;
    if !resume {
        write_config(out, cfg)?;
    }
    if let Some(h) = &p.holdout {
        write_holdout_list(out, h.iter().map(|(image, _)| image.as_path()))?;
    }
    let mut task = SegmentTask { p: &p };
    let model = p.model.clone().with_trainable_from(cfg.unfreeze_from);
    let outcome = run_epochs(&mut task, model, cfg.train.optimizer(), out, resume, progress)?;
    let done = deliver(&p, &outcome, out, progress)?;
    let Scores { valid, holdout } = done.eval;
    fieldkit_core::fsio::write_json(&out.join("valid_metrics.json"), &valid)?;
    if let Some(h) = &holdout {
        fieldkit_core::fsio::write_json(&out.join("holdout_metrics.json"), h)?;
    }
    let state = outcome.state;
    report::write_report(
        out,
        &report::SegReportInputs {
            cfg,
            classes: &p.classes,
            counts: &p.counts,
            train_images: p.train.len(),
            history: &state.history,
            best_epoch: state.best_epoch,
            valid: &valid,
            holdout: holdout.as_ref().map(|h| (h, p.holdout.as_ref().map_or(0, Vec::len))),
            train_seconds: state.elapsed_s,
            stopped_early: state.stopped_early,
            loss_scale: state.loss_scale,
        },
    )?;
    Ok(SegmentSummary {
        out: out.to_path_buf(),
        model: done.model,
        best_epoch: state.best_epoch,
        history: state.history,
        valid,
        holdout,
        train_seconds: state.elapsed_s,
    })
}

/// Writes `model` as ONNX at `path` with its card (classes, input size, stretch + ImageNet
/// normalisation, per-pixel logits).
pub fn export_with_card(
    model: &Segmenter,
    cfg: &SegmentConfig,
    classes: &[String],
    data_fingerprint: &str,
    source: String,
    path: &Path,
) -> Result<ModelCard> {
    let [w, h] = cfg.size;
    export_segmenter(&model.valid(), h, w, path)?;
    let card = ModelCard::new(
        CardTask::Segment,
        classes.to_vec(),
        InputSpec { name: INPUT.into(), shape: vec![-1, 3, h as i64, w as i64] },
        cfg.preprocess(),
        Decode::Segment { output: SEG_OUTPUT.into() },
    );
    write_card(card, source, data_fingerprint, path)
}

/// `fieldkit export` of a segmentation run's checkpoint.
pub fn export_run(run: &Path, which: super::checkpoint::Which, path: &Path) -> Result<ModelCard> {
    let cfg: SegmentConfig = fieldkit_core::fsio::read_json(&run.join("config.json"))?;
    let data = MaskDataset::open(&cfg.data)?;
    let classes: Vec<String> = data.classes.iter().map(|c| c.name.clone()).collect();
    // The pairs trained on (held-out ones taken out), by names and sizes, without decoding.
    let (images, masks): (Vec<PathBuf>, Vec<PathBuf>) = train_pairs(&cfg, &data)?.0.into_iter().unzip();
    let fingerprint = crate::data::masks::pairs_fingerprint(&images, &masks);
    super::outputs::export_checkpoint(
        run,
        which,
        |d| cfg.init_model(classes.len(), d),
        |m, source| export_with_card(m, &cfg, &classes, &fingerprint, source, path),
    )
}

/// The card's figures of one split, under `keys` (mIoU, weed IoU, crop IoU): the weed and
/// crop IoU a sprayer reads, where the classes have those names.
fn card_figures(r: &SegmentationReport, [miou, weed, crop]: [&'static str; 3]) -> Vec<(&'static str, f64)> {
    let iou = |name: &str| r.per_class.iter().find(|c| c.name == name).and_then(|c| c.iou);
    [(miou, Some(r.miou)), (weed, iou("weed")), (crop, iou("crop"))]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// A segmentation run's ending: the LR-ASPP segmenter + stretch card, scored by mIoU in tract.
impl Deliver for SegPrepared {
    type Model = Segmenter;
    type Metrics = SegEpochMetrics;
    type Eval = Scores<SegmentationReport>;

    fn blank_model(&self) -> Segmenter {
        self.cfg.init_model(self.classes.len(), &self.device)
    }

    fn source(&self) -> String {
        let decoder = match self.cfg.decoder {
            SegDecoder::Lraspp => "LR-ASPP head",
            SegDecoder::LrasppS4 => "LR-ASPP head with a stride-4 decoder",
        };
        format!("fieldkit train segment ({decoder} on MobileNetV2)")
    }

    fn export(&self, model: &Segmenter, source: String, path: &Path) -> Result<ModelCard> {
        export_with_card(model, &self.cfg, &self.classes, &self.data_fingerprint, source, path)
    }

    fn score(&self, _model: &Segmenter, engine: &Engine) -> Result<Scored<Scores<SegmentationReport>>> {
        let data = MaskDataset::open(&self.cfg.data)?;
        let workers = self.cfg.workers.max(1);
        let valid = eval_segmenter(engine, &data, &self.cfg.valid_split, workers)?;
        let holdout = self.holdout.as_ref().map(|h| eval_segmenter_on(engine, &data, h, workers)).transpose()?;
        let mut card_metrics = card_figures(&valid, ["valid_miou", "valid_weed_iou", "valid_crop_iou"]);
        if let Some(h) = &holdout {
            card_metrics.extend(card_figures(h, ["holdout_miou", "holdout_weed_iou", "holdout_crop_iou"]));
        }
        card_metrics.push(("valid_pixel_acc", valid.pixel_acc));
        Ok(Scored { headline: valid.miou, card_metrics, eval: Scores { valid, holdout } })
    }

    fn headline(&self, row: &SegEpochMetrics) -> (&'static str, f64) {
        ("mIoU", row.miou)
    }

    fn plot_curves(&self, out: &Path, history: &[SegEpochMetrics]) -> Result<()> {
        super::history::plot_history(
            out,
            history,
            "segmentation loss",
            "miou.png",
            "valid mIoU and pixel accuracy",
            &[("mIoU", |m| m.miou), ("pixel accuracy", |m| m.pixel_acc)],
        )
    }
}
