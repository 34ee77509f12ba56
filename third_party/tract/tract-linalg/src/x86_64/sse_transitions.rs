//! The x86_64 assembly kernels must not leave the CPU switching between AVX and legacy SSE
//! (fieldkit patch 4, PATCHES.md).
//!
//! A legacy-SSE (non-VEX) instruction executed while the upper halves of the vector registers
//! are dirty is a state transition: ~70 cycles on Haswell/Broadwell, a merge dependency on
//! Skylake, and ~120 ns measured on a virtualised AMD EPYC Zen 3. Two ways a kernel caused one:
//! a legacy instruction inside an AVX loop (the avx2 i8 x i8 loop read A with `movq`: 86x
//! slower per k step), and returning without `vzeroupper` to Rust compiled for baseline
//! x86-64, whose next SSE instruction then pays it once per kernel call.
//!
//! `templates_use_vex_encodings_only` reads the kernel sources (so it also guards kernels this
//! CPU cannot run); the other tests run kernels and then ask the CPU, through `XGETBV` with
//! ECX = 1 (XINUSE), whether the upper halves are still in use.

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Legacy-SSE mnemonics that have a VEX form; with an xmm operand they are the non-VEX one.
    const LEGACY: &[&str] = &[
        "movq", "movd", "movaps", "movups", "movapd", "movupd", "movss", "movsd", "movdqa",
        "movdqu", "movhps", "movlps", "movhlps", "movlhps", "pinsrb", "pinsrw", "pinsrd",
        "pinsrq", "pextrb", "pextrw", "pextrd", "pextrq", "extractps", "insertps", "pxor",
        "por", "pand", "pandn", "pshufd", "pshufb", "shufps", "unpcklps", "unpckhps",
        "punpcklbw", "punpcklwd", "punpckldq", "punpcklqdq", "punpckhqdq", "addps", "subps",
        "mulps", "divps", "maxps", "minps", "xorps", "andps", "orps", "cvtsi2ss", "cvtss2si",
        "cvttss2si", "cvtps2dq", "cvttps2dq", "cvtdq2ps", "pmovsxbw",
        "pmovsxbd", "pmovsxwd", "pmulld", "paddd",
    ];

    fn templates(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                templates(&path, out);
            } else if path.extension().is_some_and(|e| e == "j2" || e == "S") {
                out.push(path);
            }
        }
    }

    #[test]
    fn templates_use_vex_encodings_only() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("x86_64");
        let mut files = vec![];
        templates(&root, &mut files);
        assert!(files.len() > 20, "kernel templates not found under {}", root.display());
        let mut found = vec![];
        let mut returns = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            // Returns are checked in every kernel that uses ymm / zmm, but not in the `dummy*.S`
            // files: assembler probes for build.rs, never linked.
            let probe = file.file_name().is_some_and(|n| n.to_string_lossy().starts_with("dummy"));
            let checks_returns = text.contains("ymm") && !probe;
            // Instruction lines only: comments and template control lines dropped.
            let code: Vec<(usize, String)> = text
                .lines()
                .enumerate()
                .map(|(n, l)| (n + 1, l.split("//").next().unwrap().trim().to_ascii_lowercase()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with("{%") && !l.starts_with("{#"))
                .collect();
            for (i, (n, line)) in code.iter().enumerate() {
                let mnemonic = line.split_whitespace().next().unwrap();
                if LEGACY.contains(&mnemonic) && line.contains("xmm") {
                    found.push(format!("{}:{n}: {line}", file.display()));
                }
                // Every return of a kernel that used ymm / zmm clears the upper halves first: a
                // `vzeroupper` after the last ymm / zmm instruction (restoring xmm6-15 for Windows
                // and the stack does not dirty them).
                if mnemonic == "ret" && checks_returns {
                    returns += 1;
                    let tail = code[..i].iter().rev().map(|(_, l)| l.as_str());
                    let clean = tail
                        .take_while(|l| !l.contains("ymm") && !l.contains("zmm"))
                        .any(|l| l.starts_with("vzeroupper"));
                    if !clean {
                        found.push(format!("{}:{n}: ret without vzeroupper after the last ymm/zmm use", file.display()));
                    }
                }
            }
        }
        assert!(returns >= 2, "found {returns} kernel returns: the scan lost them");
        assert!(found.is_empty(), "legacy-SSE encodings in AVX kernels:\n{}", found.join("\n"));
    }

    /// Whether the AVX upper-half state is in use now (XINUSE bit 2), or None where the CPU
    /// cannot say (XGETBV with ECX = 1 needs CPUID.(EAX=0DH, ECX=1):EAX bit 2).
    #[cfg(target_arch = "x86_64")]
    fn upper_in_use() -> Option<bool> {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        unsafe {
            if __cpuid(0).eax < 0xd || !is_x86_feature_detected!("xsave") {
                return None;
            }
            if __cpuid_count(0xd, 1).eax & 0b100 == 0 {
                return None;
            }
            let (lo, _hi): (u32, u32);
            std::arch::asm!("xgetbv", in("ecx") 1u32, out("eax") lo, out("edx") _hi, options(nomem, nostack));
            Some(lo & 0b100 != 0)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_return_with_clean_upper_halves() {
        use crate::frame::mmm::{AsInputValue, FusedSpec};
        use crate::mmm::MatMatMul;
        use tract_data::internal::*;
        if !is_x86_feature_detected!("avx2") || !is_x86_feature_detected!("fma") {
            return;
        }
        // Dirty the upper halves, then check the probe sees it: otherwise it proves nothing.
        unsafe { std::arch::asm!("vpcmpeqd ymm1, ymm1, ymm1", out("ymm1") _) };
        let Some(true) = upper_in_use() else { return };
        unsafe { std::arch::asm!("vzeroupper") };
        assert_eq!(upper_in_use(), Some(false));

        let kernels: Vec<Box<dyn MatMatMul>> =
            vec![super::super::mmm::fma_mmm_f32_16x6.mmm(), super::super::mmm::avx2_mmm_i32_8x8.mmm()];
        for ker in kernels {
            let (m, k, n) = (19usize, 7usize, 9usize);
            let dt = ker.internal_type();
            let a = Tensor::zero_dt(dt, &[m, k]).unwrap();
            let b = Tensor::zero_dt(dt, &[k, n]).unwrap();
            let (pack_a, pack_b) = &ker.packings()[0];
            let pa = pack_a.prepare_one(&a, 1, 0).unwrap();
            let pb = pack_b.prepare_one(&b, 0, 1).unwrap();
            let mut c = Tensor::zero_dt(dt, &[m, n]).unwrap();
            unsafe {
                let spec = ker.c_from_data_and_strides(dt.size_of(), n as isize, 1);
                let view = c.view_mut();
                let ops: TVec<FusedSpec> = tvec!(
                    FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&*pa), b: AsInputValue::Borrowed(&*pb), packing: 0 },
                    FusedSpec::Store(spec.wrap(&view)),
                );
                ker.run(m, n, &ops).unwrap();
            }
            assert_eq!(upper_in_use(), Some(false), "{ker:?} returned with the upper halves dirty");
        }

        use crate::frame::element_wise::ElementWiseKer;
        let mut x = vec![0.5f32; 100];
        super::super::fma_sigmoid_f32::ew().run(&mut x).unwrap();
        assert_eq!(upper_in_use(), Some(false), "sigmoid_f32 returned with the upper halves dirty");
    }
}
