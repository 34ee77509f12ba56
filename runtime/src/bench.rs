//! Latency, throughput and memory of one model, measured the way users deploy it.
//! Percentiles, not means alone: a robot misses its spray window on the p99, not the mean.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, LoadOptions, PredictOptions};
use crate::error::{Result, RuntimeError};
use crate::layout::Layout;
use crate::nnef_cache::LoadSource;
use crate::precision::Precision;
use crate::TRACT_VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyStats {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub std_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl LatencyStats {
    /// Percentiles by linear interpolation between order statistics (numpy's default).
    pub fn from_samples(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        // total_cmp: a NaN sorts last instead of panicking.
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let pct = |p: f64| {
            if n == 0 {
                return f64::NAN;
            }
            let x = p / 100.0 * (n - 1) as f64;
            let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
        };
        let mean = s.iter().sum::<f64>() / n.max(1) as f64;
        let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        LatencyStats {
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            mean_ms: mean,
            std_ms: var.sqrt(),
            min_ms: s.first().copied().unwrap_or(f64::NAN),
            max_ms: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub workers: usize,
    pub images_per_s: f64,
    /// Relative to one worker, when one worker was measured.
    pub scaling: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub model: String,
    pub size_mb: f64,
    /// Card check (sha256) + parse + optimize + plan.
    pub load_ms: f64,
    /// Where the plan came from: `onnx`, `nnef_cache` (read), `nnef_written` (translated and
    /// cached), or `onnx (cache unusable: why)`.
    #[serde(default)]
    pub loaded_from: String,
    /// First inference after load (allocations, caches).
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub std_ms: f64,
    /// Inference latency distribution (tensor in, tensor out).
    pub latency: LatencyStats,
    /// Decode-free preprocessing and postprocessing medians, and their share of a request.
    pub preprocess_p50_ms: f64,
    pub postprocess_p50_ms: f64,
    pub pre_post_share: f64,
    /// Images/s with the largest worker count measured.
    pub throughput_ips: f64,
    pub throughput: Vec<Throughput>,
    /// Peak resident memory of the process (VmHWM), when measured in its own process.
    pub peak_rss_mb: Option<f64>,
    pub runs: usize,
    /// Intra-op threads per inference (1: tract's single-threaded default).
    #[serde(default = "one")]
    pub threads: usize,
    /// Layout the convolutions ran in (`nchw` or `nhwc`).
    #[serde(default)]
    pub layout: Layout,
    /// Float precision the plan computed in (`f32`, or `f16` with `--precision f16`).
    #[serde(default)]
    pub precision: Precision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accuracy {
    pub metric: String,
    pub value: f64,
    pub dataset: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemInfo {
    pub cpu: String,
    pub cores: usize,
    pub governor: String,
    pub arch: String,
    pub cpu_features: Vec<String>,
    /// tract's instruction-set probe and what it means (see `cpu`).
    #[serde(default)]
    pub tract_cpu: crate::cpu::CpuReport,
    pub tract_version: String,
    pub fieldkit_version: String,
}

pub fn system_info() -> SystemInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        cpuinfo.lines().find(|l| l.starts_with(k)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
    };
    let cpu = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("CPU part"))
        .unwrap_or_else(|| "unknown".into());
    let flags = field("flags").or_else(|| field("Features")).unwrap_or_default();
    let interesting = [
        "avx2",
        "fma",
        "avx512f",
        "avx512vnni",
        "avx512_vnni",
        "f16c",
        "neon",
        "asimd",
        "asimdhp",
        "fphp",
        "asimddp",
        "sve",
    ];
    let cpu_features = flags.split_whitespace().filter(|f| interesting.contains(f)).map(str::to_string).collect();
    SystemInfo {
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        governor: std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        arch: std::env::consts::ARCH.into(),
        cpu_features,
        tract_cpu: crate::cpu::cpu_report(),
        tract_version: TRACT_VERSION.into(),
        fieldkit_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Peak resident set size of this process in MB (Linux), from /proc/self/status VmHWM.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub runs: usize,
    pub warmup: usize,
    /// Worker counts to measure throughput with (e.g. [1, 2]).
    pub workers: Vec<usize>,
    /// Image to feed; a synthetic 640x480 photo-like gradient when absent.
    pub image: Option<RgbImage>,
    /// NNEF cache directory and layout the plan is built with.
    pub load: LoadOptions,
}

/// A deterministic image with edges and texture, so NMS and decoding do real work.
pub fn synthetic_image() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        let v = ((x as f32 / 23.0).sin() * (y as f32 / 17.0).cos() * 100.0 + 128.0) as u8;
        image::Rgb([v, ((x * 3 + y) % 256) as u8, ((x ^ y) % 256) as u8])
    })
}

/// Whether `model` has its card beside it (without one, `bench` times the bare graph).
pub fn has_card(model: &Path) -> bool {
    fieldkit_core::card::card_path(model).is_file()
}

/// The engine `bench` times: `model` through its card, or with none the bare graph
/// ([`Engine::load_bare`]: its declared input shape, raw output), as tract's and onnxruntime's
/// perf tools time any ONNX file.
pub fn load_timed(model: &Path, load: &LoadOptions) -> Result<Engine> {
    if has_card(model) {
        Engine::load_with(model, load)
    } else {
        Engine::load_bare(model, load)
    }
}

/// Measures `model`; returns the loaded engine too, so callers that go on (accuracy with
/// `--val`) reuse it instead of loading a second copy that would inflate peak RSS.
pub fn bench_model(model: &Path, cfg: &BenchConfig) -> Result<(BenchResult, Engine)> {
    let size_mb = std::fs::metadata(model)
        .map_err(|e| RuntimeError::Load { path: model.to_path_buf(), msg: e.to_string() })?
        .len() as f64
        / 1e6;
    let t = Instant::now();
    let engine = load_timed(model, &cfg.load)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let loaded_from = match engine.load_source() {
        LoadSource::Onnx if !has_card(model) => "onnx (no card: raw input and output)".to_string(),
        LoadSource::Onnx => "onnx".to_string(),
        LoadSource::Cache(_) => "nnef_cache".to_string(),
        LoadSource::Written(_) => "nnef_written".to_string(),
        LoadSource::Uncached(why) => format!("onnx (cache unusable: {why})"),
    };
    let img = cfg.image.clone().unwrap_or_else(synthetic_image);
    let input = engine.preprocess().run(&img)?.data;

    let t = Instant::now();
    let mut session = engine.session()?;
    session.run_tensor(&input)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..cfg.warmup {
        session.run_tensor(&input)?;
    }
    let mut samples = Vec::with_capacity(cfg.runs);
    for _ in 0..cfg.runs {
        let t = Instant::now();
        session.run_tensor(&input)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let latency = LatencyStats::from_samples(&samples);

    // Full requests (preprocess + inference + decode/NMS) on the same image.
    let opts = PredictOptions::default();
    let (mut pre_ms, mut post_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cfg.runs.clamp(1, 20) {
        let p = session.predict(&img, &opts)?;
        pre_ms.push(p.timing.preprocess_ms);
        post_ms.push(p.timing.postprocess_ms);
        total_ms.push(p.timing.preprocess_ms + p.timing.inference_ms + p.timing.postprocess_ms);
    }
    let med = |v: &[f64]| LatencyStats::from_samples(v).p50_ms;
    let (preprocess_p50_ms, postprocess_p50_ms) = (med(&pre_ms), med(&post_ms));
    let pre_post_share = (preprocess_p50_ms + postprocess_p50_ms) / med(&total_ms);
    drop(session);

    let mut throughput: Vec<Throughput> = Vec::new();
    for &k in &cfg.workers {
        let per_worker = cfg.runs.max(k);
        let t = Instant::now();
        crate::engine::parallel_map(&engine, k * per_worker, k, |s, _| s.run_tensor(&input).map(|_| ()))?;
        let ips = (k * per_worker) as f64 / t.elapsed().as_secs_f64();
        let one = throughput.iter().find(|t| t.workers == 1).map(|t| t.images_per_s).or((k == 1).then_some(ips));
        throughput.push(Throughput { workers: k, images_per_s: ips, scaling: one.map(|b| ips / b) });
    }
    let throughput_ips = throughput.last().map(|t| t.images_per_s).unwrap_or(1e3 / latency.p50_ms);
    let result = BenchResult {
        model: model.display().to_string(),
        size_mb,
        load_ms,
        loaded_from,
        first_ms,
        p50_ms: latency.p50_ms,
        p90_ms: latency.p90_ms,
        p99_ms: latency.p99_ms,
        mean_ms: latency.mean_ms,
        std_ms: latency.std_ms,
        latency,
        preprocess_p50_ms,
        postprocess_p50_ms,
        pre_post_share,
        throughput_ips,
        throughput,
        peak_rss_mb: None,
        runs: cfg.runs,
        threads: 1,
        layout: engine.layout(),
        precision: engine.precision(),
        accuracy: None,
    };
    Ok((result, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_like_numpy() {
        let s: Vec<f64> = (1..=10).map(|v| v as f64).collect();
        let l = LatencyStats::from_samples(&s);
        assert_eq!(l.p50_ms, 5.5);
        assert!((l.p90_ms - 9.1).abs() < 1e-12);
        assert!((l.p99_ms - 9.91).abs() < 1e-12);
        assert!((l.std_ms - 3.0276503540974917).abs() < 1e-12);
    }

    #[test]
    fn tract_version_matches_the_manifest_pin() {
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("tract-onnx = {{ version = \"={TRACT_VERSION}\"")), "update TRACT_VERSION");
    }
}
