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
    /// Run every stage built so far on the vendored sample data.
    Demo(cmd::demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { command } => cmd::data::run(command),
        Command::Metrics { command } => cmd::metrics::run(command),
        Command::Demo(args) => cmd::demo::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
