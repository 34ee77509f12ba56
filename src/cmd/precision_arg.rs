//! `--precision`, defined once for every command that loads a model to run it.

use clap::Args;
use fieldkit_runtime::cpu::cpu_report;
use fieldkit_runtime::Precision;

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct PrecisionArg {
    /// Float precision an fp32 model computes in: f32, or f16 for boards with half-precision
    /// arithmetic (FEAT_FP16: Pi 5, Jetson Orin); elsewhere f16 is emulated and slow.
    /// Quantized (INT8 / FP16) files run as written.
    #[arg(long, default_value_t = Precision::default())]
    pub precision: Precision,
}

impl PrecisionArg {
    /// The precision, after saying on stderr when this CPU only emulates it.
    pub fn checked(self) -> Precision {
        if self.precision == Precision::F16 && !cpu_report().f16_native {
            eprintln!(
                "note: this CPU has no half-precision arithmetic: --precision f16 is emulated here, far slower than \
                 f32; its accuracy is what a board with FEAT_FP16 gives"
            );
        }
        self.precision
    }
}
