//! What this CPU offers inference, as tract sees it. tract-linalg probes the instruction set once
//! and picks its matrix kernels from what it finds: on aarch64 NEON always, native f16 kernels
//! with FEAT_FP16 (Cortex-A55/A76/A78, Jetson Orin's A78AE, Carmel), SDOT int8 kernels with
//! FEAT_DotProd; on x86_64 AVX2+FMA or AVX-512. We report its choice rather than second-guess it
//! (`TRACT_CPU_ISA=...` overrides the probe, e.g. to A/B a kernel family), and say what it means
//! for the model variants `fieldkit quantize` makes.

use serde::{Deserialize, Serialize};
use tract_linalg::isa::{self, Isa};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// tract's instruction-set probe, e.g. `aarch64,fp16,dotprod` or `x86_64,avx,avx2,fma,f16c`.
    pub isa: String,
    /// f16 arithmetic in hardware: FP16 models run tract's f16 kernels (else emulated, slow).
    pub f16_native: bool,
    /// A dot-product int8 instruction (aarch64 SDOT/UDOT, x86 VNNI).
    pub int8_dot: bool,
    /// An aarch64/arm binary running on an x86 host (qemu-user): timings are not performance numbers.
    pub emulated: bool,
}

pub fn cpu_report() -> CpuReport {
    let set = isa::native();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    CpuReport {
        isa: format!("{set:?}"),
        f16_native: set.fp16_arithmetic(),
        int8_dot: [Isa::Aarch64DotProd, Isa::X86_64Avx512Vnni, Isa::X86_64AvxVnni].iter().any(|&i| set.has(i)),
        emulated: is_emulated(std::env::consts::ARCH, &cpuinfo),
    }
}

/// qemu-user passes the host's /proc/cpuinfo through: an ARM build reading an x86 vendor string
/// is running under emulation.
fn is_emulated(arch: &str, cpuinfo: &str) -> bool {
    let x86_host = cpuinfo
        .lines()
        .any(|l| l.starts_with("vendor_id") && (l.contains("GenuineIntel") || l.contains("AuthenticAMD")));
    matches!(arch, "aarch64" | "arm") && x86_host
}

impl CpuReport {
    /// One line per consequence for choosing a model variant on this machine.
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.emulated {
            out.push(
                "running under emulation (qemu-user on an x86 host): timings here are not performance numbers".into(),
            );
        }
        out.push(if self.f16_native {
            "f16 arithmetic in hardware: FP16 models (quantize --fp16) run tract's native f16 kernels".into()
        } else {
            "no f16 arithmetic: FP16 models are emulated and run far slower than fp32 here; ship fp32 or INT8".into()
        });
        if self.int8_dot {
            out.push("int8 dot-product instructions present (tract uses them for integer matrix products)".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_this_architecture() {
        let r = cpu_report();
        let arch = if cfg!(target_arch = "aarch64") {
            "aarch64"
        } else if cfg!(target_arch = "x86_64") {
            "x86_64"
        } else {
            ""
        };
        assert!(r.isa.starts_with(arch), "{r:?}");
        assert!(!r.advice().is_empty());
    }

    #[test]
    fn an_arm_build_on_an_x86_host_is_emulated() {
        let amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n";
        let pi = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid asimdhp asimddp\nCPU part\t: 0xd0b\n";
        assert!(is_emulated("aarch64", amd));
        assert!(!is_emulated("aarch64", pi));
        assert!(!is_emulated("x86_64", amd));
    }
}
