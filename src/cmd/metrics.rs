use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use fieldkit_core::dataset::coco::{read_predictions, CocoDataset};
use fieldkit_core::metrics::{CocoEval, CountReport};
use fieldkit_core::report;

#[derive(Subcommand)]
pub enum MetricsCommand {
    /// COCO box mAP (pycocotools-exact) plus per-image count error.
    Coco {
        /// Ground truth, COCO instances JSON.
        #[arg(long)]
        gt: PathBuf,
        /// Predictions, COCO results JSON (a list of {image_id, category_id, bbox, score}).
        #[arg(long)]
        pred: PathBuf,
        /// Write map50, map50_95, per_class, stats and count errors as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write per-class PR curves at IoU 0.5 as a PNG.
        #[arg(long)]
        pr_plot: Option<PathBuf>,
        /// Score threshold for counting detections.
        #[arg(long, default_value_t = 0.3)]
        count_threshold: f64,
    },
    #[cfg(feature = "mot-metrics")]
    /// Multi-object tracking scores of one sequence (TrackEval's HOTA, CLEAR MOT and
    /// Identity; equal to TrackEval and py-motmetrics on the golden cases): HOTA, DetA, AssA,
    /// MOTA, MOTP, IDF1, ID switches, fragmentations.
    Mot {
        /// Ground truth, MOTChallenge gt.txt (`frame,id,x,y,w,h,conf,class,visibility`; rows
        /// with conf 0 are ignored).
        #[arg(long)]
        gt: PathBuf,
        /// Tracker output, MOTChallenge result format (`frame,id,x,y,w,h,conf,-1,-1,-1`).
        #[arg(long)]
        pred: PathBuf,
        /// Write every figure as JSON (keys `mota`, `motp`, `idf1`, `hota`, `deta`, `assa`,
        /// `id_switches`, `fragmentations`, and the per-metric counts).
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

pub fn run(cmd: MetricsCommand) -> Result<i32> {
    match cmd {
        MetricsCommand::Coco { gt, pred, json, pr_plot, count_threshold } => {
            let gt_set = CocoDataset::read(&gt)?;
            let preds = read_predictions(&pred)?;
            let ev = CocoEval::evaluate(&gt_set, &preds).with_context(|| format!("evaluating {}", pred.display()))?;
            let counts = CountReport::compute(&gt_set, &preds, count_threshold);
            print!("{}", ev.table());
            println!(
                "\ncount error @ score {:.2}: MAE {:.3}  RMSE {:.3}  bias {:+.3} ({} images)",
                counts.score_threshold, counts.count_mae, counts.count_rmse, counts.count_bias, counts.images
            );
            if let Some(path) = json {
                let mut doc = ev.to_json();
                doc["count_mae"] = counts.count_mae.into();
                doc["count_rmse"] = counts.count_rmse.into();
                doc["count"] = serde_json::to_value(&counts)?;
                report::write_json(&path, &doc)?;
                println!("metrics written to {}", path.display());
            }
            if let Some(path) = pr_plot {
                let curves: Vec<(String, Vec<f64>)> =
                    ev.per_class.iter().zip(&ev.pr50).map(|(c, p)| (c.name.clone(), p.clone())).collect();
                report::plot_pr_curves(&path, "precision-recall @ IoU 0.5", &curves)?;
                println!("PR curves written to {}", path.display());
            }
            Ok(0)
        }
        #[cfg(feature = "mot-metrics")]
        MetricsCommand::Mot { gt, pred, json } => {
            use fieldkit_track::{metrics, mot, Sequence};
            let gt_seq = Sequence::ground_truth(mot::read(&gt)?);
            let pred_seq = Sequence::new(mot::read(&pred)?);
            let scores = metrics::evaluate(&gt_seq, &pred_seq)?;
            print!("{}", scores.table());
            if let Some(path) = json {
                report::write_json(&path, &scores)?;
                println!("metrics written to {}", path.display());
            }
            Ok(0)
        }
    }
}
