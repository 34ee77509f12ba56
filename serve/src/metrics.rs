//! Prometheus metrics: requests by model, route and status; queue wait and inference time
//! histograms per model; queue depth; loaded models; worker busy ratio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use crate::pool::Pool;
use crate::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

type Hist = Family<ModelLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

pub struct Metrics {
    registry: PromRegistry,
    pub requests: Family<RequestLabels, Counter>,
    pub queue_wait: Hist,
    pub inference: Hist,
    queue_depth: Family<ModelLabel, Gauge>,
    models_loaded: Gauge,
    busy_ratio: Gauge<f64, AtomicU64>,
    rss: Gauge,
    /// (time, total busy µs) at the previous scrape.
    last: Mutex<(Instant, u64)>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("fieldkit");
        let requests = Family::<RequestLabels, Counter>::default();
        let queue_wait: Hist = Family::new_with_constructor(latency_histogram);
        let inference: Hist = Family::new_with_constructor(latency_histogram);
        let queue_depth = Family::<ModelLabel, Gauge>::default();
        let models_loaded = Gauge::default();
        let busy_ratio = Gauge::<f64, AtomicU64>::default();
        let rss = Gauge::default();
        registry.register("requests", "HTTP requests by model, route and status", requests.clone());
        registry.register(
            "queue_wait_seconds",
            "Time from admission to a worker starting the request",
            queue_wait.clone(),
        );
        registry.register(
            "inference_seconds",
            "Worker time per request (decode, preprocess, run, decode output)",
            inference.clone(),
        );
        registry.register("queue_depth", "Requests admitted and not finished, per model", queue_depth.clone());
        registry.register("models_loaded", "Models currently loaded", models_loaded.clone());
        registry.register(
            "worker_busy_ratio",
            "Share of worker time spent on requests since the previous scrape",
            busy_ratio.clone(),
        );
        registry.register("resident_memory_bytes", "Resident set size of the daemon", rss.clone());
        Metrics {
            registry,
            requests,
            queue_wait,
            inference,
            queue_depth,
            models_loaded,
            busy_ratio,
            rss,
            last: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The text exposition, with the gauges brought up to date.
    pub fn render(&self, models: &Registry, pool: &Pool) -> String {
        self.queue_depth.clear();
        for m in models.list() {
            self.queue_depth
                .get_or_create(&ModelLabel { model: m.name.clone() })
                .set(m.in_flight.load(Ordering::Relaxed) as i64);
        }
        self.models_loaded.set(models.len() as i64);
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as i64);
        }
        let busy: u64 = pool.busy_us.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        {
            let mut last = self.last.lock().expect("metrics lock");
            let wall = last.0.elapsed().as_micros() as f64 * pool.busy_us.len().max(1) as f64;
            if wall > 0.0 {
                self.busy_ratio.set(((busy - last.1) as f64 / wall).min(1.0));
            }
            *last = (Instant::now(), busy);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// From /proc/self/statm (Linux); None elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
