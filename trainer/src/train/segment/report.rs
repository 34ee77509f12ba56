//! report.md of a segmentation run: the settings, each epoch's losses and per-class IoU, and
//! the exported model's per-class table and pixel confusion on valid (and held-out train
//! photos), beside the loss, mIoU and confusion pictures.

use std::fmt::Write as _;
use std::path::Path;

use fieldkit_core::fsio;
use fieldkit_core::metrics::SegmentationReport;
use fieldkit_core::report::plot_confusion;

use super::{SegEpochMetrics, SegmentConfig};
use crate::error::Result;

pub struct SegReportInputs<'a> {
    pub cfg: &'a SegmentConfig,
    pub classes: &'a [String],
    /// Train pixels per class.
    pub counts: &'a [usize],
    pub train_images: usize,
    pub history: &'a [SegEpochMetrics],
    pub best_epoch: Option<usize>,
    /// The exported model in tract, on valid and on the held-out train photos.
    pub valid: &'a SegmentationReport,
    pub holdout: Option<(&'a SegmentationReport, usize)>,
    pub train_seconds: f64,
    pub stopped_early: bool,
    /// Where `--precision f16`'s loss scaling ended.
    pub loss_scale: Option<crate::train::precision::LossScale>,
}

/// Per-class IoU, Dice, truth and predicted pixels, as a markdown table.
fn class_table(r: &SegmentationReport) -> String {
    let f = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let mut s = String::from("| class | IoU | Dice | truth pixels | predicted pixels |\n|---|---|---|---|---|\n");
    for c in &r.per_class {
        let _ = writeln!(s, "| {} | {} | {} | {} | {} |", c.name, f(c.iou), f(c.dice), c.pixels, c.predicted);
    }
    let _ = writeln!(
        s,
        "\nmIoU **{:.4}**, mean Dice {:.4}, pixel accuracy {:.4} over {} pixels",
        r.miou, r.mean_dice, r.pixel_acc, r.pixels
    );
    s
}

pub fn write_report(out: &Path, r: &SegReportInputs) -> Result<()> {
    plot_confusion(&out.join("confusion.png"), &r.valid.confusion, r.classes, "valid pixels (model.onnx, tract)")?;
    let c = r.cfg;
    let mut s = String::new();
    let _ = writeln!(s, "# Segmentation training report\n");
    let _ = writeln!(s, "- data: `{}` ({} / {})", c.data.display(), c.train_split, c.valid_split);
    let _ = writeln!(
        s,
        "- model: {} decoder ({} inner channels) on MobileNetV2 at {}x{} px; backbone features.{}.. train; weights {}",
        clap::ValueEnum::to_possible_value(&c.decoder)
            .map_or_else(|| format!("{:?}", c.decoder), |v| v.get_name().into()),
        c.inter,
        c.size[0],
        c.size[1],
        c.unfreeze_from,
        c.weights.as_ref().map(|p| format!("`{}`", p.display())).unwrap_or_else(|| "none (from scratch)".into())
    );
    let _ = writeln!(s, "- optimiser: {}", c.describe_optimiser(r.stopped_early, r.loss_scale.as_ref()));
    let _ = writeln!(s, "- loss: {:?}, class weights {:?}", c.loss, c.class_weights);
    let _ = writeln!(s, "- augmentation: {:?}", c.augment);
    let _ = writeln!(s, "- training time: {:.1} min on {:?}", r.train_seconds / 60.0, c.device);
    let total: usize = r.counts.iter().sum::<usize>().max(1);
    let _ = writeln!(
        s,
        "- training data: {} images; pixels per class: {}",
        r.train_images,
        r.classes
            .iter()
            .zip(r.counts)
            .map(|(n, k)| format!("{n} {k} ({:.1} %)", 100.0 * *k as f64 / total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "\n## Epochs\n\n| epoch | lr | train loss | valid loss | mIoU | {} | pixel acc | img/s |\n|---|---|---|---|---|{}---|---|",
        r.classes.iter().map(|n| format!("IoU {n}")).collect::<Vec<_>>().join(" | "),
        "---|".repeat(r.classes.len())
    );
    for m in r.history {
        let star = if Some(m.epoch) == r.best_epoch { " **best**" } else { "" };
        let _ = writeln!(
            s,
            "| {}{star} | {:.2e} | {:.4} | {:.4} | {:.4} | {} | {:.4} | {:.1} |",
            m.epoch,
            m.lr,
            m.train_loss,
            m.valid_loss,
            m.miou,
            m.iou.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(" | "),
            m.pixel_acc,
            m.images_per_s
        );
    }
    let _ = writeln!(s, "\n## Exported model on the valid split (tract, deployment preprocessing)\n");
    let _ = writeln!(s, "{}", class_table(r.valid));
    if let Some((h, images)) = r.holdout {
        let _ = writeln!(
            s,
            "## Exported model on the held-out part of train (--holdout {}, whole photos, never trained on or \
             selected by)\n\n{images} photos (valid − held out: {:+.4} mIoU)\n\n{}",
            c.holdout,
            r.valid.miou - h.miou,
            class_table(h)
        );
    }
    let _ = writeln!(s, "![loss](loss.png) ![mIoU](miou.png)\n\n![confusion](confusion.png)");
    fsio::write_atomic(&out.join("report.md"), s.as_bytes())?;
    Ok(())
}
