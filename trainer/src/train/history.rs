//! A run's per-epoch history, whatever the task: the row trait behind `metrics.csv` and the
//! loss and metric curves. Shared by the loop, a run's ending and each task's report, so it
//! imports nothing task-specific.

use std::path::Path;

use fieldkit_core::report::{plot_lines, write_csv};

use crate::error::Result;

/// A per-epoch history row: the columns of `metrics.csv` and the values the curves plot.
pub trait EpochRow {
    const HEADER: &'static [&'static str];
    fn epoch(&self) -> usize;
    fn cells(&self) -> Vec<String>;
    fn train_loss(&self) -> f64;
    fn valid_loss(&self) -> f64;
}

pub fn write_metrics_csv<M: EpochRow>(path: &Path, history: &[M]) -> Result<()> {
    let rows: Vec<Vec<String>> = history.iter().map(|m| m.cells()).collect();
    write_csv(path, M::HEADER, &rows)?;
    Ok(())
}

/// A named validation series of a history: its label and how to read it from an epoch's row.
pub type Series<'a, M> = (&'a str, fn(&M) -> f64);

/// `loss.png` (train and valid loss per epoch, `loss_desc` on the y axis) and `metric_png`
/// with the given validation series.
pub fn plot_history<M: EpochRow>(
    out: &Path,
    history: &[M],
    loss_desc: &str,
    metric_png: &str,
    metric_title: &str,
    series: &[Series<M>],
) -> Result<()> {
    let pts = |f: &dyn Fn(&M) -> f64| history.iter().map(|m| (m.epoch() as f64, f(m))).collect::<Vec<_>>();
    plot_lines(
        &out.join("loss.png"),
        "loss",
        "epoch",
        loss_desc,
        &[("train".into(), pts(&|m| m.train_loss())), ("valid".into(), pts(&|m| m.valid_loss()))],
    )?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = series.iter().map(|(name, f)| (name.to_string(), pts(f))).collect();
    plot_lines(&out.join(metric_png), metric_title, "epoch", "score", &lines)?;
    Ok(())
}
