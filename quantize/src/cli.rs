//! The command line shared by the standalone `quantize` binary and `fieldkit quantize`.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

use crate::{quantize, Method, Mode, Placement, QuantizeConfig, Report};

#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("mode").required(true).multiple(true).args(["int8", "fp16", "weights_only"])))]
pub struct QuantizeArgs {
    /// Float ONNX model (its card `<model>.json` beside it, when present, gives preprocessing
    /// for calibration and the task for --val).
    #[arg(long)]
    pub model: PathBuf,
    /// Output ONNX (its card and OUT.report.{md,json,png} are written beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Static INT8: int8 weights and calibrated uint8 activations (QDQ form).
    #[arg(long)]
    pub int8: bool,
    /// FP16 weights and compute.
    #[arg(long)]
    pub fp16: bool,
    /// INT8 weights only, float activations: no calibration data needed.
    #[arg(long)]
    pub weights_only: bool,
    /// Calibration images: a folder (searched recursively, e.g. a dataset's train split) or a YOLO data.yaml.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// At most this many calibration images, spread over the folder.
    #[arg(long, default_value_t = 500)]
    pub calib_limit: usize,
    /// Also calibrate on this many seeded crops of each image (40-80 % of its side): objects
    /// at other scales, for detectors calibrated on few photos.
    #[arg(long, default_value_t = 0)]
    pub calib_crops: usize,
    /// Activation range method: minmax, percentile, entropy (KL, as TensorRT), mse.
    #[arg(long, default_value = "percentile")]
    pub method: String,
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// The runtime the model is for, which picks the INT8 form: tract (default: activations
    /// quantized at layer inputs and outputs, so that tract runs each convolution as an integer
    /// one, and full-range weights) or onnxruntime (the same placement, and 7-bit weights,
    /// which its x86 kernels need on CPUs without VNNI). --placement / --reduce-range override
    /// the preset.
    #[arg(long, value_enum, default_value = "tract")]
    pub target: TargetArg,
    /// Quantize activations at layer inputs and outputs (the preset; as onnxruntime's
    /// quantize_static: both runtimes then run every layer as an integer one) or at layer
    /// inputs only (fewer quantized tensors; the layers whose output feeds a float operator,
    /// such as a residual Add, then run in float).
    #[arg(long, value_enum)]
    pub placement: Option<PlacementArg>,
    /// 7-bit weights: for onnxruntime on x86 CPUs without VNNI (AVX2), whose fused integer
    /// kernels saturate with full-range int8 weights and lose accuracy.
    #[arg(long)]
    pub reduce_range: bool,
    /// Accept fewer than 10 calibration images.
    #[arg(long)]
    pub force: bool,
    /// Validation data (ImageFolder root, data.yaml, or a segmenter's mask folder / COCO folder /
    /// YOLO-seg data.yaml): measure fp32 vs quantized accuracy (mIoU for a segmenter).
    #[arg(long)]
    pub val: Option<PathBuf>,
    #[arg(long)]
    pub split: Option<String>,
    /// Accuracy budget (percentage points): keep the most damaging layers in float until the
    /// drop on --val fits.
    #[arg(long)]
    pub max_drop: Option<f64>,
    /// Layers (node names, comma-separated) to keep in float.
    #[arg(long, value_delimiter = ',')]
    pub keep_fp32: Vec<String>,
    /// FP16: keep the model's inputs and outputs f32 (Casts inside the graph).
    #[arg(long)]
    pub keep_io_f32: bool,
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the report JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetArg {
    Tract,
    Onnxruntime,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PlacementArg {
    Inputs,
    InputsOutputs,
}

impl QuantizeArgs {
    pub fn config(&self) -> crate::Result<QuantizeConfig> {
        let mode = if self.fp16 {
            if self.int8 || self.weights_only {
                return Err(crate::QuantizeError::Config(
                    "--fp16 cannot be combined with --int8 / --weights-only".into(),
                ));
            }
            Mode::Fp16
        } else if self.weights_only {
            Mode::WeightsOnly
        } else {
            Mode::Int8
        };
        let mut c = QuantizeConfig::new(self.model.clone(), self.out.clone(), mode);
        c.calib = self.calib.clone();
        c.calib_limit = self.calib_limit;
        c.calib_crops = self.calib_crops;
        c.method = Method::parse(&self.method, self.percentile)?;
        c.per_channel = !self.per_tensor;
        let ort = self.target == TargetArg::Onnxruntime;
        c.placement = match self.placement.unwrap_or(PlacementArg::InputsOutputs) {
            PlacementArg::Inputs => Placement::Inputs,
            PlacementArg::InputsOutputs => Placement::InputsOutputs,
        };
        c.force = self.force;
        c.reduce_range = self.reduce_range || ort;
        c.val = self.val.clone();
        c.split = self.split.clone();
        c.max_drop = self.max_drop;
        c.keep_fp32 = self.keep_fp32.iter().filter(|s| !s.is_empty()).cloned().collect();
        c.keep_io_f32 = self.keep_io_f32;
        if let Some(w) = self.workers {
            c.workers = w.max(1);
        }
        Ok(c)
    }
}

pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "{} -> {}: {:.2} MB -> {:.2} MB ({:.1} %)",
        r.model,
        r.output,
        r.fp32_bytes as f64 / 1e6,
        r.quant_bytes as f64 / 1e6,
        100.0 * r.size_ratio
    );
    if let (Some(m), Some(f), Some(q), Some(d)) = (&r.metric, r.fp32_metric, r.quant_metric, r.drop) {
        s += &format!("\n{m}: fp32 {f:.4}  quantized {q:.4}  drop {d:.2} pp");
    }
    if !r.layers.is_empty() {
        let worst = r.layers.iter().filter(|l| !l.kept_fp32).min_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
        if let Some(w) = worst {
            s += &format!("\nlowest SQNR among quantized layers: {} {:.1} dB", w.name, w.sqnr_db);
        }
    }
    if !r.fp32_layers.is_empty() {
        s += &format!("\nkept in float: {}", r.fp32_layers.len());
    }
    let (md, _, _) = crate::report::paths(std::path::Path::new(&r.output));
    s += &format!("\nreport: {}", md.display());
    s
}

/// Runs the command; returns the process exit code.
pub fn run(a: &QuantizeArgs) -> anyhow::Result<i32> {
    let cfg = a.config()?;
    let report = quantize(&cfg, &|m| eprintln!("{m}"))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        q: QuantizeArgs,
    }

    fn config(extra: &[&str]) -> QuantizeConfig {
        let mut args = vec!["quantize", "--model", "m.onnx", "--out", "o.onnx", "--int8"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().q.config().unwrap()
    }

    #[test]
    fn target_presets_pick_the_int8_form_and_flags_override_them() {
        let c = config(&[]);
        assert_eq!((c.placement, c.reduce_range), (Placement::InputsOutputs, false));
        let c = config(&["--target", "onnxruntime"]);
        assert_eq!((c.placement, c.reduce_range), (Placement::InputsOutputs, true));
        let c = config(&["--target", "onnxruntime", "--placement", "inputs"]);
        assert_eq!((c.placement, c.reduce_range), (Placement::Inputs, true));
        let c = config(&["--reduce-range"]);
        assert_eq!((c.placement, c.reduce_range), (Placement::InputsOutputs, true));
        let c = config(&["--placement", "inputs"]);
        assert_eq!((c.placement, c.reduce_range), (Placement::Inputs, false));
        assert!(
            Cli::try_parse_from(["quantize", "--model", "m", "--out", "o", "--int8", "--target", "tensorrt"]).is_err()
        );
    }
}
