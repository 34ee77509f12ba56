//! `fieldkit card init`: write the model card for an ONNX model fieldkit did not train
//! (a third party's YOLOX, an ImageNet classifier), so every other command can use it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use fieldkit_core::card::{card_path, Decode, InputSpec, ModelCard, Task};
use fieldkit_core::Preprocess;
use fieldkit_runtime::{model_io_names, Engine};

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// YOLOX raw head: BGR 0..255, top-left letterbox padded with 114, strides 8/16/32.
    Yolox,
    /// ImageNet classifier: resize size*256/224, centre crop, RGB, ImageNet mean/std, softmax.
    Imagenet,
    /// ImageNet normalisation, stretched to the input size (small tiles), softmax.
    ImagenetStretch,
    /// A backbone returning a feature vector, ImageNet preprocessing.
    Features,
}

#[derive(Subcommand)]
pub enum CardCommand {
    /// Write `<model>.json` for an existing ONNX file, checked by loading the model with it.
    Init {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum)]
        preset: Preset,
        /// Class names: a file with one per line, or a comma-separated list.
        #[arg(long)]
        classes: String,
        /// Square input size in pixels.
        #[arg(long)]
        size: u32,
        /// Model output the decoding reads (default: the model's first output).
        #[arg(long)]
        output: Option<String>,
        /// Where the model came from (URL, paper, checkpoint), recorded in the card.
        #[arg(long)]
        source: Option<String>,
        /// Replace an existing card.
        #[arg(long)]
        force: bool,
    },
}

fn read_classes(arg: &str) -> Result<Vec<String>> {
    let path = PathBuf::from(arg);
    let names: Vec<String> = if path.is_file() {
        std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        arg.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    if names.is_empty() {
        bail!("--classes '{arg}': no class names (a file with one per line, or a comma-separated list)");
    }
    Ok(names)
}

pub fn run(cmd: CardCommand) -> Result<i32> {
    let CardCommand::Init { model, preset, classes, size, output, source, force } = cmd;
    let path = card_path(&model);
    if path.exists() && !force {
        bail!("{} already exists (use --force to replace it)", path.display());
    }
    let classes = read_classes(&classes)?;
    let (inputs, outputs) = model_io_names(&model)?;
    let [input] = inputs.as_slice() else { bail!("{}: expected one input, the model has {inputs:?}", model.display()) };
    let output = match output {
        Some(o) if outputs.contains(&o) => o,
        Some(o) => bail!("{}: no output '{o}', the model has {outputs:?}", model.display()),
        None => outputs.first().cloned().context("the model has no outputs")?,
    };
    let (task, pre, decode) = match preset {
        Preset::Yolox => {
            (Task::Detect, Preprocess::yolox(size), Decode::Yolox { output, strides: vec![8, 16, 32], logits: false })
        }
        Preset::Imagenet => (Task::Classify, Preprocess::imagenet(size), Decode::Softmax { output }),
        Preset::ImagenetStretch => (Task::Classify, Preprocess::imagenet_stretch(size), Decode::Softmax { output }),
        Preset::Features => (Task::Classify, Preprocess::imagenet(size), Decode::Features { output }),
    };
    let batch = if matches!(preset, Preset::Yolox) { 1 } else { -1 };
    let mut card = ModelCard::new(
        task,
        classes,
        InputSpec { name: input.clone(), shape: vec![batch, 3, size as i64, size as i64] },
        pre,
        decode,
    );
    card.source = source;
    // Prove the card fits before writing it: shapes, names and class count are checked.
    Engine::with_card(&model, card.clone())?;
    let written = card.write_for(&model)?;
    println!(
        "wrote {} ({} classes, input '{}' {size}x{size}, sha256 {})",
        written.display(),
        card.classes.len(),
        input,
        &card.sha256[..12]
    );
    Ok(0)
}
