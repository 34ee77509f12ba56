//! `fieldkit serve`: the inference daemon; `fieldkit loadtest`: load against one.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::fsio;
use fieldkit_runtime::Layout;
use fieldkit_serve::loadtest::{self, LoadConfig};
use fieldkit_serve::ServeConfig;

use super::engine_args::EngineArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// NAME=PATH.onnx (repeatable); each model needs its card beside it.
    #[arg(long = "model", value_parser = parse_model)]
    models: Vec<(String, PathBuf)>,
    /// serve.toml (see serve/serve.toml); command-line flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080; beyond loopback needs a token).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Inference worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Bearer token for every route but health (at least 16 characters).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File whose first line is the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Directory `POST /v1/models` may load from (unset: loading over HTTP is off).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Requests admitted per model before 503 + Retry-After.
    #[arg(long)]
    queue: Option<usize>,
    #[arg(long)]
    max_body_mb: Option<f64>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Layout the convolutions run in: nhwc (default, faster on the measured CPUs) or nchw.
    #[arg(long)]
    layout: Option<Layout>,
    /// Threads, NNEF cache and precision, as in predict; the cache and precision override
    /// serve.toml's.
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_model(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("--model {s:?}: expected NAME=PATH.onnx"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

pub fn config(a: ServeArgs) -> Result<ServeConfig> {
    let mut cfg = match &a.config {
        Some(p) => ServeConfig::load(p)?,
        None => ServeConfig::default(),
    };
    for (name, path) in a.models {
        cfg.models.insert(name, path);
    }
    if let Some(v) = a.bind {
        cfg.bind = v;
    }
    if let Some(v) = a.workers {
        cfg.workers = v;
    }
    if a.token.is_some() {
        cfg.token = a.token;
        cfg.token_file = None;
    }
    if a.token_file.is_some() {
        cfg.token_file = a.token_file;
    }
    if a.model_dir.is_some() {
        cfg.model_dir = a.model_dir;
    }
    if let Some(v) = a.queue {
        cfg.queue = v;
    }
    if let Some(v) = a.max_body_mb {
        cfg.max_body_mb = v;
    }
    if let Some(v) = a.timeout_ms {
        cfg.timeout_ms = v;
    }
    if a.engine.nnef_cache.is_some() {
        cfg.nnef_cache = a.engine.nnef_cache;
    }
    if let Some(v) = a.layout {
        cfg.layout = v;
    }
    if let Some(v) = a.engine.precision {
        cfg.precision = v;
    }
    cfg.resolve_token()?;
    if cfg.models.is_empty() && cfg.model_dir.is_none() {
        bail!(
            "nothing to serve: give --model NAME=PATH.onnx (or models in --config), or --model-dir to load over HTTP"
        );
    }
    Ok(cfg)
}

pub fn run(a: ServeArgs) -> Result<i32> {
    a.engine.apply_threads()?;
    let cfg = config(a)?;
    cfg.validate()?;
    fieldkit_serve::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(fieldkit_serve::serve(cfg, fieldkit_serve::shutdown_signal(), None))?;
    Ok(0)
}

#[derive(Args)]
pub struct LoadtestArgs {
    /// The daemon, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    #[arg(long)]
    model: String,
    /// JPEG or PNG sent with every request.
    #[arg(long)]
    image: PathBuf,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn loadtest(a: LoadtestArgs) -> Result<i32> {
    let image = std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;
    let content_type = if image.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    let cfg = LoadConfig {
        url: a.url.trim_end_matches('/').to_string(),
        model: a.model,
        image,
        content_type: content_type.into(),
        concurrency: a.concurrency,
        requests: a.requests,
        token: a.token,
    };
    let r = loadtest::run(&cfg)?;
    let mb = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{} requests, concurrency {}: {:.1} s, {:.1} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.requests, r.concurrency, r.seconds, r.throughput_rps, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
    );
    println!(
        "statuses {:?}; errors (neither 200 nor 503) {}; daemon RSS {} -> {} MB",
        r.statuses,
        r.errors,
        mb(r.rss_start_mb),
        mb(r.rss_end_mb)
    );
    if let Some(p) = &a.json {
        fsio::write_json(p, &r)?;
    }
    Ok(if r.errors > 0 { 1 } else { 0 })
}
