//! `fieldkit eval`: accuracy of any classifier or detector ONNX + card on a dataset, through
//! the deployment path (tract, the card's preprocessing and decoding).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fieldkit_core::perturb;
use fieldkit_core::report;
use fieldkit_runtime::eval::{eval_classifier, eval_classifier_perturbed, eval_detector, eval_segmenter};

use super::engine_args::RunArgs;

use fieldkit_core::dataset::EvalData;

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// ImageFolder root (classifier), YOLO data.yaml (detector) or mask folder (segmenter).
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate (default: valid/val).
    #[arg(long)]
    split: Option<String>,
    /// Write the metrics as JSON (classifier: top1, macro_f1, per_class, confusion;
    /// detector: map50, map50_95, per_class, count_mae, box_fit; segmenter: miou, pixel_acc,
    /// per_class with name, iou, dice, confusion).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write plots here (confusion matrix or PR curves).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Classifier: also evaluate on corrupted copies of the images and print a robustness
    /// table; comma-separated from blur, noise, dark, bright, jpeg.
    #[arg(long)]
    perturb: Option<String>,
    /// Detector: score threshold for per-image counting and the box-fit figures.
    #[arg(long, default_value_t = 0.3)]
    count_threshold: f64,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: EvalArgs) -> Result<i32> {
    let engine = a.run.load(&a.model)?;
    let t = std::time::Instant::now();
    match EvalData::open(&a.data, a.split.as_deref(), engine.card())? {
        EvalData::Classes(ds) => {
            let ev = eval_classifier(&engine, &ds, a.run.workers)?;
            let r = &ev.report;
            println!(
                "{} on {} ({} split, {} images, {:.1} s)\n",
                a.model.display(),
                a.data.display(),
                ds.split,
                r.num_samples,
                t.elapsed().as_secs_f64()
            );
            print!("{}", r.table());
            println!("\nconfusion matrix (rows true, columns predicted):");
            for (name, row) in r.per_class.iter().zip(&r.confusion) {
                println!("  {:>16} {}", name.name, row.iter().map(|v| format!("{v:>5}")).collect::<String>());
            }
            let mut robustness = serde_json::Map::new();
            if let Some(list) = &a.perturb {
                println!("\nrobustness ({} images each):", r.num_samples);
                println!("  {:<10} {:<28} {:>7} {:>9} {:>8}", "name", "corruption", "top1", "macro_f1", "d_top1");
                println!("  {:<10} {:<28} {:>7.4} {:>9.4} {:>8}", "clean", "none", r.top1, r.macro_f1, "");
                for (name, p) in perturb::parse_list(list)? {
                    let pr = eval_classifier_perturbed(&engine, &ds, a.run.workers, Some(p))?.report;
                    println!(
                        "  {:<10} {:<28} {:>7.4} {:>9.4} {:>+8.4}",
                        name,
                        p.label(),
                        pr.top1,
                        pr.macro_f1,
                        pr.top1 - r.top1
                    );
                    robustness.insert(
                        name,
                        serde_json::json!({"corruption": p.label(), "top1": pr.top1, "macro_f1": pr.macro_f1}),
                    );
                }
            }
            if let Some(path) = &a.json {
                let per_class: serde_json::Map<String, serde_json::Value> =
                    r.per_class.iter().map(|c| (c.name.clone(), serde_json::to_value(c).unwrap())).collect();
                let mut doc = serde_json::json!({
                    "task": "classify", "model": a.model, "data": a.data, "split": ds.split,
                    "num_samples": r.num_samples, "top1": r.top1, "top5": r.top5, "macro_f1": r.macro_f1,
                    "weighted_f1": r.weighted_f1, "per_class": per_class, "confusion": r.confusion,
                });
                if !robustness.is_empty() {
                    doc["robustness"] = robustness.into();
                }
                report::write_json(path, &doc)?;
            }
            if let Some(dir) = &a.plots {
                let names: Vec<String> = r.per_class.iter().map(|c| c.name.clone()).collect();
                report::plot_confusion(
                    &dir.join("confusion.png"),
                    &r.confusion,
                    &names,
                    &format!("confusion ({})", ds.split),
                )?;
            }
        }
        EvalData::Boxes { data, split } => {
            let ev = eval_detector(&engine, &data, &split, a.run.workers, a.count_threshold)?;
            println!(
                "{} on {} ({split} split, {} images, {:.1} s)\n",
                a.model.display(),
                data.yaml.display(),
                ev.ground_truth.images.len(),
                t.elapsed().as_secs_f64()
            );
            print!("{}", ev.coco.table());
            println!(
                "\ncount error @ score {:.2}: MAE {:.3}  RMSE {:.3}  bias {:+.3}",
                ev.counts.score_threshold, ev.counts.count_mae, ev.counts.count_rmse, ev.counts.count_bias
            );
            match &ev.box_fit {
                Some(fit) => println!("{}", fit.line()),
                None => println!(
                    "box fit @ score {:.2}: no confident detection overlaps an object at IoU > 0.5",
                    a.count_threshold
                ),
            }
            if let Some(path) = &a.json {
                let mut doc = ev.coco.to_json();
                doc["task"] = "detect".into();
                doc["split"] = split.clone().into();
                doc["count_mae"] = ev.counts.count_mae.into();
                doc["count_rmse"] = ev.counts.count_rmse.into();
                doc["box_fit"] = serde_json::to_value(&ev.box_fit)?;
                report::write_json(path, &doc)?;
            }
            if let Some(dir) = &a.plots {
                let curves: Vec<(String, Vec<f64>)> =
                    ev.coco.per_class.iter().zip(&ev.coco.pr50).map(|(c, p)| (c.name.clone(), p.clone())).collect();
                report::plot_pr_curves(&dir.join("pr.png"), "precision-recall @ IoU 0.5", &curves)?;
            }
        }
        EvalData::Masks { data, split } => {
            let r = eval_segmenter(&engine, &data, &split, a.run.workers)?;
            println!(
                "{} on {} ({split} split, {} pixels, {:.1} s)\n",
                a.model.display(),
                data.root.display(),
                r.pixels,
                t.elapsed().as_secs_f64()
            );
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!("{:<16} {:>8} {:>8} {:>14} {:>14}", "class", "IoU", "Dice", "pixels", "predicted");
            for c in &r.per_class {
                println!("{:<16} {:>8} {:>8} {:>14} {:>14}", c.name, cell(c.iou), cell(c.dice), c.pixels, c.predicted);
            }
            println!("\nmIoU {:.4}  mean Dice {:.4}  pixel accuracy {:.4}", r.miou, r.mean_dice, r.pixel_acc);
            if let Some(path) = &a.json {
                let mut doc = serde_json::to_value(&r)?;
                doc["task"] = "segment".into();
                doc["split"] = split.clone().into();
                report::write_json(path, &doc)?;
            }
        }
    }
    if let Some(p) = &a.json {
        println!("metrics written to {}", p.display());
    }
    Ok(0)
}
