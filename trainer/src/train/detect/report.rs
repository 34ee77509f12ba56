//! What a detection run leaves in `--out` besides the model: metrics.csv, loss and mAP
//! curves, report.md with the exported model's COCO table.

use std::fmt::Write as _;
use std::path::Path;

use super::{DetEpochMetrics, DetectConfig};
use crate::error::Result;
use crate::train::history::{plot_history, EpochRow};
use fieldkit_core::fsio;
use fieldkit_core::metrics::{CocoEval, CountReport};

impl EpochRow for DetEpochMetrics {
    const HEADER: &'static [&'static str] = &[
        "epoch",
        "lr",
        "train_loss",
        "valid_loss",
        "map50",
        "map50_95",
        "count_mae",
        "mosaic",
        "seconds",
        "images_per_s",
    ];

    fn epoch(&self) -> usize {
        self.epoch
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.epoch.to_string(),
            format!("{:.6e}", self.lr),
            format!("{:.6}", self.train_loss),
            format!("{:.6}", self.valid_loss),
            format!("{:.6}", self.map50),
            format!("{:.6}", self.map50_95),
            format!("{:.4}", self.count_mae),
            self.mosaic.to_string(),
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

pub fn plot_curves(out: &Path, history: &[DetEpochMetrics]) -> Result<()> {
    plot_history(
        out,
        history,
        "YOLOX loss",
        "map.png",
        "valid mAP",
        &[("mAP50", |m| m.map50), ("mAP50-95", |m| m.map50_95)],
    )
}

pub struct DetReportInputs<'a> {
    pub cfg: &'a DetectConfig,
    pub classes: &'a [String],
    pub counts: &'a [usize],
    pub train_images: usize,
    pub history: &'a [DetEpochMetrics],
    pub best_epoch: Option<usize>,
    pub final_eval: &'a CocoEval,
    pub final_counts: &'a CountReport,
    /// The exported model on the held-out part of train (`--holdout`).
    pub holdout: Option<(&'a CocoEval, usize)>,
    pub train_seconds: f64,
    pub stopped_early: bool,
    /// Where `--precision f16`'s loss scaling ended.
    pub loss_scale: Option<crate::train::precision::LossScale>,
}

pub fn write_report(out: &Path, r: &DetReportInputs) -> Result<()> {
    let c = r.cfg;
    let mut s = String::new();
    let _ = writeln!(s, "# Detection training report\n");
    let _ = writeln!(s, "- data: `{}` ({} / {})", c.data.display(), c.train_split, c.valid_split);
    let _ = writeln!(
        s,
        "- model: YOLOX-style decoupled head (neck width {}, head depth {}) on MobileNetV2 width {} at {}x{} px; backbone features.{}.. train; weights {}",
        c.neck_width,
        c.head_depth,
        c.width,
        c.size,
        c.size,
        c.trainable_from(),
        c.weights.as_ref().map(|p| format!("`{}`", p.display())).unwrap_or_else(|| "none (from scratch)".into())
    );
    let _ = writeln!(s, "- optimiser: {}", c.describe_optimiser(r.stopped_early, r.loss_scale.as_ref()));
    let _ = writeln!(
        s,
        "- loss: SimOTA assignment, {:?} box loss ×5 + objectness BCE + class BCE; L1 and no mosaic in the last {} epochs",
        c.box_loss, c.close_mosaic
    );
    let _ = writeln!(s, "- augmentation: {:?}", c.augment);
    let _ = writeln!(s, "- training time: {:.1} min on {:?}", r.train_seconds / 60.0, c.device);
    let _ = writeln!(
        s,
        "- training data: {} images; boxes per class: {}",
        r.train_images,
        r.classes.iter().zip(r.counts).map(|(n, k)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "\n## Epochs\n\n| epoch | lr | train loss | valid loss | mAP50 | mAP50-95 | count MAE | mosaic | img/s |\n|---|---|---|---|---|---|---|---|---|");
    for m in r.history {
        let star = if Some(m.epoch) == r.best_epoch { " **best**" } else { "" };
        let _ = writeln!(
            s,
            "| {}{star} | {:.2e} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {} | {:.1} |",
            m.epoch, m.lr, m.train_loss, m.valid_loss, m.map50, m.map50_95, m.count_mae, m.mosaic, m.images_per_s
        );
    }
    let e = r.final_eval;
    let _ = writeln!(s, "\n## Exported model on the valid split (tract, deployment preprocessing)\n");
    let _ = writeln!(
        s,
        "mAP50 **{:.4}**, mAP50-95 **{:.4}**, per-image count MAE {:.3} / RMSE {:.3} at score {}\n",
        e.map50, e.map50_95, r.final_counts.count_mae, r.final_counts.count_rmse, r.final_counts.score_threshold
    );
    let _ = writeln!(s, "```\n{}```\n", e.table());
    if let Some((h, images)) = r.holdout {
        let _ = writeln!(
            s,
            "## Exported model on the held-out part of train (--holdout {}, whole photos, never trained on or \
             selected by)\n\nmAP50 **{:.4}**, mAP50-95 **{:.4}**, {} images (valid − held out: {:+.4} mAP50-95)\n\n```\n{}```\n",
            c.holdout,
            h.map50,
            h.map50_95,
            images,
            e.map50_95 - h.map50_95,
            h.table()
        );
    }
    let _ = writeln!(s, "![loss](loss.png) ![mAP](map.png)");
    fsio::write_atomic(&out.join("report.md"), s.as_bytes())?;
    Ok(())
}
