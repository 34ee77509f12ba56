//! `fieldkit card init`: write the model card for an ONNX model fieldkit did not train
//! (a third party's YOLOX, an ImageNet classifier, a torchvision segmenter), so every other
//! command can use it.

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
    /// A segmenter returning per-pixel logits [N, classes, H, W] (torchvision's LR-ASPP or
    /// DeepLabV3, a U-Net): ImageNet normalisation, stretched to the input size; class 0 is
    /// the background.
    Segment,
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
        /// Input size: N pixels square, or WIDTHxHEIGHT (a segmenter's or a stretched
        /// classifier's input need not be square).
        #[arg(long, value_parser = parse_size)]
        size: (u32, u32),
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

/// `N` (square) or `WIDTHxHEIGHT`.
fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    match s.parse::<u32>() {
        Ok(0) => Err("the size must be at least 1".into()),
        Ok(n) => Ok((n, n)),
        Err(_) => fieldkit_core::wxh::parse_wxh(s).map_err(|e| format!("{e}, or one number for a square")),
    }
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
    let (width, height) = size;
    let square = || {
        if width == height {
            Ok(width)
        } else {
            Err(anyhow::anyhow!(
                "--size {width}x{height}: this preset's input is square (give one number); only segment and imagenet-stretch take WIDTHxHEIGHT"
            ))
        }
    };
    let (task, pre, decode) = match preset {
        Preset::Yolox => (
            Task::Detect,
            Preprocess::yolox(square()?),
            Decode::Yolox { output, strides: vec![8, 16, 32], logits: false },
        ),
        Preset::Imagenet => (Task::Classify, Preprocess::imagenet(square()?), Decode::Softmax { output }),
        Preset::ImagenetStretch => {
            (Task::Classify, Preprocess::imagenet_stretch_to(width, height), Decode::Softmax { output })
        }
        Preset::Features => (Task::Classify, Preprocess::imagenet(square()?), Decode::Features { output }),
        Preset::Segment => (Task::Segment, Preprocess::imagenet_stretch_to(width, height), Decode::Segment { output }),
    };
    let batch = if matches!(preset, Preset::Yolox) { 1 } else { -1 };
    let mut card = ModelCard::new(
        task,
        classes,
        InputSpec { name: input.clone(), shape: vec![batch, 3, height as i64, width as i64] },
        pre,
        decode,
    );
    card.source = source;
    // Prove the card fits before writing it: shapes, names and class count are checked.
    Engine::with_card(&model, card.clone())?;
    let written = card.write_for(&model)?;
    println!(
        "wrote {} ({} classes, input '{}' {width}x{height}, sha256 {})",
        written.display(),
        card.classes.len(),
        input,
        &card.sha256[..12]
    );
    Ok(0)
}
