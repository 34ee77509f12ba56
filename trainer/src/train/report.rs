//! What a run leaves in `--out`: metrics.csv, curve and confusion PNGs, report.md, and the
//! exported model with its card.

use std::fmt::Write as _;
use std::path::Path;

use fieldkit_core::fsio;
use fieldkit_core::metrics::ClassificationReport;
use fieldkit_core::report::plot_confusion;

use super::checkpoint::EpochMetrics;
use super::config::{describe_strategy, ClassifyConfig};
pub use super::history::{plot_history, write_metrics_csv, EpochRow, Series};
use crate::error::Result;

impl EpochRow for EpochMetrics {
    const HEADER: &'static [&'static str] =
        &["epoch", "lr", "train_loss", "valid_loss", "top1", "macro_f1", "trainable_from", "seconds", "images_per_s"];

    fn epoch(&self) -> usize {
        self.epoch
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.epoch.to_string(),
            format!("{:.6e}", self.lr),
            format!("{:.6}", self.train_loss),
            format!("{:.6}", self.valid_loss),
            format!("{:.6}", self.top1),
            format!("{:.6}", self.macro_f1),
            self.trainable_from.to_string(),
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

pub fn plot_curves(out: &Path, history: &[EpochMetrics]) -> Result<()> {
    plot_history(
        out,
        history,
        "cross-entropy",
        "accuracy.png",
        "valid accuracy",
        &[("top1", |m| m.top1), ("macro_f1", |m| m.macro_f1)],
    )
}

pub struct ReportInputs<'a> {
    pub cfg: &'a ClassifyConfig,
    pub classes: &'a [String],
    pub counts: &'a [usize],
    pub history: &'a [EpochMetrics],
    pub best_epoch: Option<usize>,
    pub final_eval: &'a ClassificationReport,
    /// The exported model on the held-out part of train (`--holdout`).
    pub holdout: Option<&'a ClassificationReport>,
    /// With test-time views: the network alone on one view, on valid.
    pub one_view: Option<&'a ClassificationReport>,
    pub train_seconds: f64,
    pub stopped_early: bool,
    /// Where `--precision f16`'s loss scaling ended.
    pub loss_scale: Option<crate::train::precision::LossScale>,
}

/// report.md: settings, per-epoch table, the deployed model's valid metrics, pictures.
pub fn write_report(out: &Path, r: &ReportInputs) -> Result<()> {
    plot_confusion(
        &out.join("confusion.png"),
        &r.final_eval.confusion,
        r.classes,
        "valid confusion (model.onnx, tract)",
    )?;
    let mut s = String::new();
    let c = r.cfg;
    let _ = writeln!(s, "# Training report\n");
    let _ = writeln!(s, "- data: `{}` ({} / {})", c.data.display(), c.train_split, c.valid_split);
    let _ = writeln!(s, "- strategy: {}", describe_strategy(c));
    let _ = writeln!(
        s,
        "- model: MobileNetV2 width {} at {}x{} px, weights {}",
        c.width,
        c.size,
        c.size,
        c.weights.as_ref().map(|p| format!("`{}`", p.display())).unwrap_or_else(|| "none (from scratch)".into())
    );
    let _ = writeln!(s, "- optimiser: {}", c.describe_optimiser(r.stopped_early, r.loss_scale.as_ref()));
    let _ = writeln!(s, "- loss: class weights {:?}, label smoothing {}", c.class_weights, c.label_smoothing);
    let _ = writeln!(s, "- test-time views in the exported model: {}", c.tta.describe());
    let _ = writeln!(s, "- training time: {:.1} min on {:?}", r.train_seconds / 60.0, c.device);
    let _ = writeln!(
        s,
        "- training images per class: {}",
        r.classes.iter().zip(r.counts).map(|(n, k)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "\n## Epochs\n\n| epoch | lr | train loss | valid loss | top-1 | macro-F1 | trainable from | img/s |\n|---|---|---|---|---|---|---|---|");
    for m in r.history {
        let star = if Some(m.epoch) == r.best_epoch { " **best**" } else { "" };
        let _ = writeln!(
            s,
            "| {}{star} | {:.2e} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.1} |",
            m.epoch, m.lr, m.train_loss, m.valid_loss, m.top1, m.macro_f1, m.trainable_from, m.images_per_s
        );
    }
    let e = r.final_eval;
    let _ = writeln!(s, "\n## Exported model on the valid split (tract, deployment preprocessing)\n");
    let _ = writeln!(
        s,
        "top-1 **{:.4}**, macro-F1 **{:.4}**, weighted-F1 {:.4}, {} images\n",
        e.top1, e.macro_f1, e.weighted_f1, e.num_samples
    );
    if let Some(o) = r.one_view {
        let _ = writeln!(
            s,
            "The same network on one view (no test-time views; what the epochs above measured): top-1 {:.4}, \
             macro-F1 {:.4}. The {} views add {:+.4} top-1 and {:+.4} macro-F1 for {}x the compute.\n",
            o.top1,
            o.macro_f1,
            c.tta.views().len(),
            e.top1 - o.top1,
            e.macro_f1 - o.macro_f1,
            c.tta.views().len()
        );
    }
    let _ = writeln!(s, "```\n{}```\n", e.table());
    if let Some(h) = r.holdout {
        let _ = writeln!(
            s,
            "## Exported model on the held-out part of train (--holdout {}, whole photos, never trained on or \
             selected by)\n\ntop-1 **{:.4}**, macro-F1 **{:.4}**, {} images (valid − held out: {:+.4} top-1)\n\n```\n{}```\n",
            r.cfg.holdout,
            h.top1,
            h.macro_f1,
            h.num_samples,
            e.top1 - h.top1,
            h.table()
        );
    }
    let _ = writeln!(s, "![loss](loss.png) ![accuracy](accuracy.png)\n\n![confusion](confusion.png)");
    fsio::write_atomic(&out.join("report.md"), s.as_bytes())?;
    Ok(())
}
