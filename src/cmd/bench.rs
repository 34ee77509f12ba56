//! `fieldkit bench`: load time, first inference, latency percentiles, throughput with K
//! workers, peak memory and (with --val) accuracy, for several models side by side. Each
//! model runs in its own child process so its peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::{image_io, report};
use fieldkit_runtime::bench::{
    bench_model, has_card, load_timed, peak_rss_mb, synthetic_image, system_info, Accuracy, BenchConfig, BenchResult,
};
use fieldkit_runtime::eval::headline;
use fieldkit_runtime::profile::Profile;
use fieldkit_runtime::{Layout, LoadOptions, Precision};

use super::engine_args::EngineArgs;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Model(s) to measure, each with its card beside it; an ONNX file without one is timed
    /// bare (its declared input shape, raw output), as tract's and onnxruntime's perf tools do.
    #[arg(long = "model", required = true)]
    models: Vec<PathBuf>,
    /// Timed inferences per model.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Worker counts for the throughput test, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Image to feed (default: a synthetic 640x480 image).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Dataset for an accuracy column: ImageFolder root, YOLO data.yaml, or segmentation data
    /// (mask folder, COCO folder, a YOLO-seg data.yaml for a segmenter).
    #[arg(long)]
    val: Option<PathBuf>,
    #[arg(long)]
    split: Option<String>,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure in this process (peak RSS then covers everything measured so far).
    #[arg(long)]
    in_process: bool,
    /// Also time every node of each plan over this many runs and print where the time goes
    /// (per operator type and the slowest nodes).
    #[arg(long, value_name = "RUNS")]
    profile: Option<usize>,
    /// Layout(s) the convolutions run in, comma-separated: `nchw,nhwc` measures every model
    /// both ways, one row each.
    #[arg(long, value_delimiter = ',', default_value = "nhwc")]
    layout: Vec<Layout>,
    /// Threads, NNEF cache (the load time then shows what a device restart costs; the table
    /// says where each plan came from) and precision, as in predict; each of the throughput
    /// test's workers uses the threads too.
    #[command(flatten)]
    engine: EngineArgs,
    /// Internal: measure the single model and print its result as JSON.
    #[arg(long, hide = true)]
    child: bool,
}

fn measure(a: &BenchArgs, model: &Path, layout: Layout) -> Result<BenchResult> {
    a.engine.apply_threads()?;
    let image = a.image.as_ref().map(|p| image_io::read_rgb(p)).transpose()?;
    let load = a.engine.load_options(layout);
    let cfg = BenchConfig { runs: a.runs.max(1), warmup: a.warmup, workers: a.workers.clone(), image, load };
    let (mut r, engine) = bench_model(model, &cfg)?;
    if let Some(val) = &a.val {
        let workers = *a.workers.iter().max().unwrap_or(&1);
        let h = headline(&engine, val, a.split.as_deref(), workers)?;
        r.accuracy = Some(Accuracy {
            metric: h.metric.into(),
            value: h.value,
            dataset: format!("{} ({})", val.display(), h.split),
        });
    }
    r.peak_rss_mb = peak_rss_mb();
    r.threads = a.engine.threads;
    Ok(r)
}

fn measure_in_child(a: &BenchArgs, model: &PathBuf, layout: Layout) -> Result<BenchResult> {
    let exe = std::env::current_exe().context("locating the fieldkit binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg("--child").arg("--model").arg(model);
    cmd.arg("--runs").arg(a.runs.to_string()).arg("--warmup").arg(a.warmup.to_string());
    cmd.arg("--workers").arg(a.workers.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(","));
    cmd.arg("--threads").arg(a.engine.threads.to_string());
    cmd.arg("--layout").arg(layout.to_string());
    if let Some(p) = a.engine.precision {
        cmd.arg("--precision").arg(p.to_string());
    }
    if let Some(i) = &a.image {
        cmd.arg("--image").arg(i);
    }
    if let Some(v) = &a.val {
        cmd.arg("--val").arg(v);
    }
    if let Some(s) = &a.split {
        cmd.arg("--split").arg(s);
    }
    if let Some(c) = &a.engine.nnef_cache {
        cmd.arg("--nnef-cache").arg(c);
    }
    let out = cmd.output().context("running the benchmark child process")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().trim_start_matches("error: ");
        if msg.is_empty() {
            bail!("the benchmark child process failed ({}) without a message; try --in-process", out.status);
        }
        bail!("{msg}");
    }
    serde_json::from_slice(&out.stdout).context("reading the benchmark child's result")
}

pub fn run(a: BenchArgs) -> Result<i32> {
    if a.child {
        let r = measure(&a, &a.models[0], a.layout[0])?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(0);
    }
    // A report written over a model's card would replace the card (it is `<model>.json`).
    if let Some(path) = &a.json {
        if let Some(m) = a.models.iter().find(|m| fieldkit_core::card::card_path(m) == *path) {
            bail!("--json {} is the model card of {}; write the report elsewhere", path.display(), m.display());
        }
    }
    let sys = system_info();
    println!(
        "system: {} | {} cores | governor {} | {} [{}] | tract {}",
        sys.cpu,
        sys.cores,
        sys.governor,
        sys.arch,
        sys.cpu_features.join(" "),
        sys.tract_version
    );
    println!("tract kernels for: {}", sys.tract_cpu.isa);
    for line in sys.tract_cpu.advice() {
        println!("  {line}");
    }
    // Under qemu-user the child would be exec'd natively (binfmt, without qemu's sysroot).
    let in_process = a.in_process || sys.tract_cpu.emulated;
    if in_process && !a.in_process {
        println!("  emulated: models measured in this process, one after another");
    }
    // Refuse before measuring anything when this build cannot thread, or when --val asks to
    // score a model that has no card.
    if let Some(val) = &a.val {
        if let Some(m) = a.models.iter().find(|m| !has_card(m)) {
            bail!(
                "--val {}: {} has no model card, so its outputs cannot be scored (no classes, no decoding); write \
                 one with `fieldkit card init`",
                val.display(),
                m.display()
            );
        }
    }
    a.engine.apply_threads()?;
    if a.engine.threads > 1 {
        println!("  {} intra-op threads per inference", a.engine.threads);
    }
    a.engine.warn_if_emulated();
    if a.engine.precision() == Precision::F16 {
        println!("  fp32 models run their float operators in f16 (--precision f16)");
    }
    // Each layout once, in the order given (clap refuses an empty or unknown one).
    let mut layouts: Vec<Layout> = Vec::new();
    for &l in &a.layout {
        if !layouts.contains(&l) {
            layouts.push(l);
        }
    }
    let mut results = Vec::new();
    for m in &a.models {
        for &layout in &layouts {
            eprintln!("measuring {} ({layout}) ...", m.display());
            let r = if in_process { measure(&a, m, layout)? } else { measure_in_child(&a, m, layout)? };
            results.push(r);
        }
    }
    print!("{}", table(&results));
    let mut profiles = Vec::new();
    if let Some(runs) = a.profile {
        for m in &a.models {
            for &layout in &layouts {
                let p = profile(a.image.as_ref(), m, &a.engine.load_options(layout), runs)?;
                print!("{}", profile_table(m, layout, &p));
                profiles.push(serde_json::json!({ "model": m, "layout": layout, "profile": p }));
            }
        }
    }
    if let Some(path) = &a.json {
        let mut doc = serde_json::json!({ "system": sys, "models": results });
        if a.profile.is_some() {
            doc["profiles"] = serde_json::Value::Array(profiles);
        }
        report::write_json(path, &doc)?;
        println!("written to {}", path.display());
    }
    Ok(0)
}

fn profile(image: Option<&PathBuf>, model: &Path, load: &LoadOptions, runs: usize) -> Result<Profile> {
    let engine = load_timed(model, load)?;
    let img = match image {
        Some(p) => image_io::read_rgb(p)?,
        None => synthetic_image(),
    };
    let prepared = engine.preprocess().run(&img)?;
    Ok(engine.session()?.profile(&prepared.data, runs)?)
}

fn profile_table(model: &Path, layout: Layout, p: &Profile) -> String {
    let mut s = format!("\nprofile of {} ({layout}, {} runs, {:.2} ms per run)\n", model.display(), p.runs, p.total_ms);
    let rate =
        |n: &fieldkit_runtime::profile::NodeTime| n.gflops().map(|g| format!("{g:.1}")).unwrap_or_else(|| "-".into());
    s += &format!("{:<28} {:>6} {:>9} {:>6} {:>8}\n", "operator", "nodes", "ms", "share", "GFLOP/s");
    for o in &p.ops {
        s += &format!("{:<28} {:>6} {:>9.3} {:>5.1}% {:>8}\n", o.op, o.count, o.ms, 100.0 * o.ms / p.total_ms, rate(o));
    }
    // The kernel and shape of a slow matrix product are what a tract issue needs.
    s += "slowest nodes (GFLOP/s by tract's cost model):\n";
    for n in p.nodes.iter().take(8) {
        let mult = n.detail.split("; ").find(|d| d.starts_with("Mult:")).unwrap_or("");
        s += &format!("  {:>8.3} ms  {:<24} {:<34} {:>7}  {}\n", n.ms, n.op, n.name, rate(n), mult);
    }
    s
}

pub fn table(rs: &[BenchResult]) -> String {
    // The layout joins the name only when rows differ in it.
    let mixed = rs.iter().any(|r| r.layout != rs[0].layout);
    let name = |r: &BenchResult| {
        let file = PathBuf::from(&r.model).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = if r.precision == Precision::F16 { format!("{file} (f16)") } else { file };
        if mixed {
            format!("{file} [{}]", r.layout)
        } else {
            file
        }
    };
    let w = rs.iter().map(|r| name(r).len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "\n{:w$} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>13} {:>10} {:>7} {:>7} {:>9}",
        "model",
        "MB",
        "load ms",
        "first ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean±std ms",
        "img/s",
        "scale",
        "RSS MB",
        "pre+post"
    );
    let acc = rs.iter().any(|r| r.accuracy.is_some());
    if acc {
        s += "  accuracy";
    }
    s += "\n";
    for r in rs {
        let best = r.throughput.last();
        s += &format!(
            "{:w$} {:>7.2} {:>8.0} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>13} {:>10} {:>7} {:>7} {:>8.1}%",
            name(r),
            r.size_mb,
            r.load_ms,
            r.first_ms,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            format!("{:.2}±{:.2}", r.mean_ms, r.std_ms),
            best.map(|b| format!("{:.1} ({}w)", b.images_per_s, b.workers)).unwrap_or_default(),
            best.and_then(|b| b.scaling).map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()),
            r.peak_rss_mb.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
            r.pre_post_share * 100.0
        );
        if let Some(a) = &r.accuracy {
            s += &format!("  {} {:.4}", a.metric, a.value);
        }
        s += "\n";
    }
    for r in rs.iter().filter(|r| !r.loaded_from.is_empty() && r.loaded_from != "onnx") {
        s += &format!("{}: plan loaded from {}\n", name(r), r.loaded_from);
    }
    s
}
