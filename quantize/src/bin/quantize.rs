//! `quantize`: the standalone post-training quantizer (same command as `fieldkit quantize`).

use clap::Parser;
use fieldkit_quantize::cli::{run, QuantizeArgs};

#[derive(Parser)]
#[command(name = "quantize", version, about = "INT8 / FP16 post-training quantization of ONNX models, accuracy-aware")]
struct Cli {
    #[command(flatten)]
    args: QuantizeArgs,
}

fn main() {
    let cli = Cli::parse();
    match run(&cli.args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
