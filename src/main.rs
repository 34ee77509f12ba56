//! `fieldkit`: one binary for every stage, from dataset checks to the robot's nozzles.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fieldkit", version, about = "Train, quantize, benchmark, serve and deploy farm-robot vision models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect datasets (ImageFolder, YOLO data.yaml, COCO JSON).
    Data {
        #[command(subcommand)]
        command: cmd::data::DataCommand,
    },
    /// Score predictions against ground truth.
    Metrics {
        #[command(subcommand)]
        command: cmd::metrics::MetricsCommand,
    },
    /// Run a model on images or folders: annotated images + predictions.jsonl.
    Predict(cmd::predict::PredictArgs),
    /// Auto-label photos with a teacher detector: a YOLO dataset (+ COCO JSON) and review sheets.
    Label(cmd::label::LabelArgs),
    /// Accuracy of a classifier or detector (ONNX + card) on a dataset.
    Eval(cmd::eval::EvalArgs),
    /// Latency percentiles, throughput, memory (and accuracy) of models side by side.
    Bench(cmd::bench::BenchArgs),
    /// INT8 / FP16 post-training quantization of an ONNX model, accuracy-aware (same as the
    /// standalone `quantize` binary).
    Quantize(fieldkit_quantize::cli::QuantizeArgs),
    /// Model cards: the JSON beside every model that says how to feed and read it.
    Card {
        #[command(subcommand)]
        command: cmd::card::CardCommand,
    },
    /// Fine-tune models (needs the default `train` feature).
    #[cfg(feature = "train")]
    Train {
        #[command(subcommand)]
        command: cmd::train::TrainCommand,
    },
    /// Export a training run's checkpoint to ONNX + model card.
    #[cfg(feature = "train")]
    Export(cmd::export::ExportArgs),
    /// The inference daemon: HTTP JSON + KServe v2, Prometheus metrics, hot swap.
    Serve(cmd::serve::ServeArgs),
    /// Load against a running daemon: throughput, latency percentiles, errors.
    Loadtest(cmd::serve::LoadtestArgs),
    /// Drive the robot's microcontroller (spray nozzles) from detections; `simulate-mcu` runs
    /// a simulated one.
    Bridge(cmd::bridge::BridgeArgs),
    /// Follow objects across frames (ByteTrack): MOTChallenge detections in, tracks out.
    Track(cmd::track::TrackArgs),
    /// The field loop: a camera, stream or video through a detector (and tracker) on threads,
    /// newest frame first, every stage's latency measured.
    Run(cmd::run::RunLoopArgs),
    /// Run every stage built so far on the vendored sample data.
    Demo(cmd::demo::DemoArgs),
}

fn main() {
    // burn's default device is where `ModuleOptimizer::load_record` puts a resumed run's
    // optimizer state until the first step moves it to the parameters' device. With the GPU
    // backend compiled in, that default would be the GPU: opened on every CPU resume, and a
    // panic where no GPU driver exists. The CPU backend is the default here (`--device` names
    // the training device explicitly); a `BURN_DEVICE` the user set wins. Set before any
    // thread starts.
    #[cfg(feature = "train")]
    if std::env::var_os("BURN_DEVICE").is_none() {
        std::env::set_var("BURN_DEVICE", "flex");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { command } => cmd::data::run(command),
        Command::Metrics { command } => cmd::metrics::run(command),
        Command::Card { command } => cmd::card::run(command),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Label(args) => cmd::label::run(args),
        Command::Bridge(args) => cmd::bridge::run(args),
        Command::Track(args) => cmd::track::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Loadtest(args) => cmd::serve::loadtest(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Quantize(args) => fieldkit_quantize::cli::run(&args),
        #[cfg(feature = "train")]
        Command::Train { command } => cmd::train::run(command),
        #[cfg(feature = "train")]
        Command::Export(args) => cmd::export::run(args),
        Command::Demo(args) => cmd::demo::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::exit(2);
        }
    }
}

/// The error and its causes, each said once (`fieldkit_core::error::chain`).
fn error_chain(e: &anyhow::Error) -> String {
    fieldkit_core::error::chain(e.as_ref())
}

#[cfg(test)]
mod error_tests {
    use super::error_chain;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(fieldkit_core::CoreError::io("/nope.yaml", io)).context("loading the dataset");
        assert_eq!(error_chain(&e), "loading the dataset: /nope.yaml: No such file or directory");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
