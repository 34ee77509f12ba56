//! `fieldkit export`: a training run's checkpoint -> ONNX + model card.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fieldkit_trainer::train::{export_run, Tta, Which};

#[derive(Args)]
pub struct ExportArgs {
    /// The run directory (`fieldkit train classify|detect|segment --out`).
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_enum, default_value = "best")]
    checkpoint: Which,
    /// Output model path (its card is written beside it as .json).
    #[arg(long)]
    out: PathBuf,
    /// Classifiers: the test-time views the model averages, over the run's own (`none` for
    /// one view and the least compute).
    #[arg(long, value_enum)]
    tta: Option<Tta>,
}

pub fn run(a: ExportArgs) -> Result<i32> {
    let card = export_run(&a.run, a.checkpoint, a.tta, &a.out)?;
    println!(
        "{} ({} classes, input {:?}, opset {}, sha256 {})",
        a.out.display(),
        card.classes.len(),
        card.input.shape,
        fieldkit_trainer::export::OPSET,
        &card.sha256[..12]
    );
    Ok(0)
}
