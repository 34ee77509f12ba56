//! The flags of the commands that load a model to run it, defined once (issue 21) and
//! flattened into each command:
//! - [`EngineArgs`]: threads, NNEF cache, precision — predict, eval, label, bench and serve;
//! - [`RunArgs`]: adds the parallel workers and the layout, for the commands that run one model
//!   over many images (predict, eval, label). bench takes lists of both (one row per value) and
//!   serve overrides its serve.toml, so those two define their own;
//! - [`NmsArgs`]: a detector's suppression flags (predict, label), with the defaults of
//!   `NmsOptions::default()`, which the daemon's query uses too.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use fieldkit_core::detect::NmsOptions;
use fieldkit_runtime::cpu::cpu_report;
use fieldkit_runtime::{Engine, Layout, LoadOptions, LoadSource, Precision};

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Intra-op threads per inference: lower latency for one stream, fewer inferences in
    /// parallel (one camera on two cores: --workers 1 --threads 2).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Keep translated plans in this directory (NNEF) and load them from there next time,
    /// skipping the ONNX parse (what a device restart or the daemon's SIGHUP costs).
    #[arg(long, value_name = "DIR")]
    pub nnef_cache: Option<PathBuf>,
    /// Float precision an fp32 model computes in: f32 (default), or f16 for boards with
    /// half-precision arithmetic (FEAT_FP16: Pi 5, Jetson Orin); elsewhere f16 is emulated and
    /// slow. Quantized (INT8 / FP16) files run as written.
    #[arg(long)]
    pub precision: Option<Precision>,
}

impl EngineArgs {
    /// Sets the intra-op thread count for every plan this process runs.
    pub fn apply_threads(&self) -> Result<()> {
        fieldkit_runtime::threads::set_intra_op_threads(self.threads)?;
        Ok(())
    }

    /// The precision asked for (f32 when none).
    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or_default()
    }

    /// Says on stderr when this CPU only emulates the precision asked for; once per command.
    pub fn warn_if_emulated(&self) {
        if self.precision() == Precision::F16 && !cpu_report().f16_native {
            eprintln!(
                "note: this CPU has no half-precision arithmetic: --precision f16 is emulated here, far slower than \
                 f32; its accuracy is what a board with FEAT_FP16 gives"
            );
        }
    }

    pub fn load_options(&self, layout: Layout) -> LoadOptions {
        LoadOptions { cache: self.nnef_cache.clone(), layout, precision: self.precision() }
    }

    /// Sets the threads and loads `model` in `layout` with these flags, saying on stderr why
    /// an NNEF cache that was asked for was not used.
    pub fn load(&self, model: &Path, layout: Layout) -> Result<Engine> {
        self.apply_threads()?;
        self.warn_if_emulated();
        let engine = Engine::load_with(model, &self.load_options(layout))?;
        if let LoadSource::Uncached(why) = engine.load_source() {
            eprintln!("note: NNEF cache not used: {why}");
        }
        Ok(engine)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Images inferred in parallel, each on its own session of the one plan.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Layout the convolutions run in: nhwc (faster on the measured CPUs) or nchw.
    #[arg(long, default_value_t = Layout::default())]
    pub layout: Layout,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl RunArgs {
    /// [`EngineArgs::load`] in this `--layout`.
    pub fn load(&self, model: &Path) -> Result<Engine> {
        self.engine.load(model, self.layout)
    }
}

#[derive(Args, Debug, Clone)]
pub struct NmsArgs {
    /// Detector: minimum score for a box.
    #[arg(long, default_value_t = NmsOptions::default().score_threshold)]
    pub conf: f32,
    /// Detector: NMS IoU threshold (a box overlapping a better-scored one by more is dropped).
    #[arg(long, default_value_t = NmsOptions::default().iou_threshold)]
    pub iou: f32,
    /// Detector: NMS across classes (one box per object whatever its class).
    #[arg(long)]
    pub agnostic: bool,
    /// Detector: most boxes kept per image.
    #[arg(long, default_value_t = NmsOptions::default().max_detections)]
    pub max_det: usize,
}

impl NmsArgs {
    /// The options, checked (`--conf 1.5` is refused by name).
    pub fn options(&self) -> Result<NmsOptions> {
        let o = NmsOptions {
            score_threshold: self.conf,
            iou_threshold: self.iou,
            class_agnostic: self.agnostic,
            max_detections: self.max_det,
        };
        o.validate().map_err(|e| anyhow::anyhow!(e.flag()))?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        nms: NmsArgs,
    }

    #[test]
    fn defaults_come_from_the_libraries() {
        let c = Cli::try_parse_from(["t"]).unwrap();
        assert_eq!(c.nms.options().unwrap(), NmsOptions::default());
        assert_eq!(c.run.layout, Layout::default());
        assert_eq!(c.run.engine.precision, None);
        assert_eq!(c.run.engine.load_options(c.run.layout).precision, Precision::F32);
    }

    #[test]
    fn bad_thresholds_are_refused_by_flag() {
        let c = Cli::try_parse_from(["t", "--iou", "2", "--precision", "f16", "--layout", "nchw"]).unwrap();
        assert_eq!(c.nms.options().unwrap_err().to_string(), "--iou 2: must be between 0 and 1");
        assert_eq!(c.run.engine.precision, Some(Precision::F16));
        assert_eq!(c.run.layout, Layout::Nchw);
        assert!(Cli::try_parse_from(["t", "--precision", "f64"]).is_err());
    }
}
