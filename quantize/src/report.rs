//! `OUT.report.md`, `OUT.report.json` and `OUT.report.png` (per-layer SQNR) beside the model.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use fieldkit_core::{fsio, report};

use crate::error::Result;
use crate::{Mode, Report};

pub fn paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (out.with_extension("report.md"), out.with_extension("report.json"), out.with_extension("report.png"))
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

pub fn markdown(r: &Report, png: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Quantization report\n");
    let _ = writeln!(s, "- model: `{}` -> `{}`", r.model, r.output);
    let mode = match r.mode {
        Mode::Int8 => format!(
            "static INT8 (int8 weights {}, uint8 activations, {}; Q/DQ on {})",
            if r.per_channel { "per channel" } else { "per tensor" },
            r.method.as_deref().unwrap_or("-"),
            match r.placement {
                Some(crate::Placement::InputsOutputs) => "layer inputs and outputs",
                _ => "layer inputs",
            }
        ),
        Mode::WeightsOnly => format!(
            "INT8 weights only ({}), float activations",
            if r.per_channel { "per channel" } else { "per tensor" }
        ),
        Mode::Fp16 => "FP16 weights and compute".into(),
    };
    let range = if r.reduce_range { ", 7-bit weights (reduce range)" } else { "" };
    let _ = writeln!(s, "- mode: {mode}{range}");
    if r.calibration_images > 0 {
        let _ =
            writeln!(s, "- calibration: {} images, {} inputs with crops", r.calibration_images, r.calibration_views);
    }
    let _ = writeln!(
        s,
        "- size: {:.2} MB -> {:.2} MB ({:.1} % of fp32)",
        mb(r.fp32_bytes),
        mb(r.quant_bytes),
        100.0 * r.size_ratio
    );
    let _ = writeln!(s, "- time: {:.1} s", r.seconds);
    if let (Some(m), Some(f), Some(q), Some(d)) = (&r.metric, r.fp32_metric, r.quant_metric, r.drop) {
        let _ = writeln!(
            s,
            "- {m}: fp32 **{f:.4}**, quantized **{q:.4}**, drop **{d:.2} pp**{}",
            r.max_drop.map(|b| format!(" (budget {b} pp)")).unwrap_or_default()
        );
    } else {
        let _ = writeln!(s, "- accuracy: not measured (pass --val DIR)");
    }
    let _ = writeln!(
        s,
        "- layers quantized: {}; kept in float: {}; int8 weights with float input: {}",
        r.quantized_layers,
        r.fp32_layers.len(),
        r.float_inputs.len()
    );
    for w in &r.warnings {
        let _ = writeln!(s, "- **warning**: {w}");
    }
    if !r.per_class.is_empty() {
        let what = if r.metric.as_deref() == Some("top1") { "recall" } else { "AP50-95" };
        let _ = writeln!(s, "\n## Per class ({what})\n\n| class | fp32 | quantized | change |\n|---|---|---|---|");
        for c in &r.per_class {
            let _ = writeln!(s, "| {} | {:.4} | {:.4} | {:+.4} |", c.name, c.fp32, c.quant, c.quant - c.fp32);
        }
    }
    if !r.fallback.is_empty() {
        let _ = writeln!(
            s,
            "\n## Accuracy fallback\n\nSteps most harmful layer first; the search evaluates only the points below (doubling, then bisection).\n\n| steps | last step | layers in float | float inputs | metric | drop (pp) |\n|---|---|---|---|---|---|"
        );
        for f in &r.fallback {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.4} | {:.2} |",
                f.steps, f.added, f.fp32_layers, f.float_inputs, f.quant_metric, f.drop
            );
        }
    }
    if !r.layers.is_empty() {
        let _ = writeln!(
            s,
            "\n## Per-layer error (worst first)\n\nSQNR and cosine of each layer's output against the float model on calibration images; \
             *added noise* is the noise power (relative to the signal) the layer adds on top of what its input already carries, \
             *from weights* the part int8 weights alone add.\n"
        );
        let _ = writeln!(s, "| layer | op | SQNR dB | cosine | added noise | from weights | kept in float |\n|---|---|---|---|---|---|---|");
        let mut v: Vec<_> = r.layers.iter().collect();
        v.sort_by(|a, b| b.added_noise.total_cmp(&a.added_noise));
        for l in v {
            let op = if l.depthwise { format!("{} (depthwise)", l.op) } else { l.op.clone() };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.5} | {:.2e} | {:.2e} | {} |",
                l.name,
                op,
                l.sqnr_db,
                l.cosine,
                l.added_noise,
                l.weight_noise,
                if l.kept_fp32 {
                    "layer"
                } else if l.float_input {
                    "input"
                } else {
                    ""
                }
            );
        }
        if let Some(png) = png {
            let _ = writeln!(s, "\n![per-layer SQNR]({png})");
        }
    } else if r.mode == Mode::Fp16 && !r.fp32_layers.is_empty() {
        let _ = writeln!(s, "\n## Kept in f32\n\n{}", r.fp32_layers.join(", "));
    }
    s
}

pub fn write(out: &Path, r: &Report) -> Result<()> {
    let (md, json, png) = paths(out);
    let mut png_name = None;
    if !r.layers.is_empty() {
        let bars: Vec<(String, f64, bool)> =
            r.layers.iter().map(|l| (l.name.clone(), l.sqnr_db, l.kept_fp32 || l.float_input)).collect();
        report::plot_bars(&png, "per-layer SQNR vs fp32 (dB; kept in float in the second colour)", "SQNR dB", &bars)?;
        png_name = png.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    fsio::write_json(&json, r)?;
    fsio::write_atomic(&md, markdown(r, png_name.as_deref()).as_bytes())?;
    Ok(())
}
