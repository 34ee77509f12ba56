//! `fieldkit loadtest`: C client threads send N predict requests to a daemon and report
//! throughput, latency percentiles, status counts and the daemon's memory before and after
//! (from its /metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldkit_runtime::bench::LatencyStats;
use serde::Serialize;

use crate::error::ServeError;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub model: String,
    pub image: Vec<u8>,
    pub content_type: String,
    pub concurrency: usize,
    pub requests: usize,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub throughput_rps: f64,
    /// Latency of successful requests, ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// HTTP status → count ("transport" for connection errors).
    pub statuses: BTreeMap<String, usize>,
    /// Neither 200 nor an explicit 503 shed.
    pub errors: usize,
    pub rss_start_mb: Option<f64>,
    pub rss_end_mb: Option<f64>,
}

fn rss_mb(agent: &ureq::Agent, cfg: &LoadConfig) -> Option<f64> {
    let mut req = agent.get(&format!("{}/metrics", cfg.url));
    if let Some(t) = &cfg.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let text = req.call().ok()?.into_string().ok()?;
    let line = text.lines().find(|l| l.starts_with("fieldkit_resident_memory_bytes "))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|b| b / 1048576.0)
}

pub fn run(cfg: &LoadConfig) -> Result<LoadReport, ServeError> {
    if cfg.concurrency == 0 || cfg.requests == 0 {
        return Err(ServeError::BadRequest("--concurrency and --requests must be positive".into()));
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(cfg.concurrency)
        .build();
    let rss_start_mb = rss_mb(&agent, cfg);
    let url = format!("{}/v1/models/{}/predict", cfg.url, cfg.model);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            let (agent, url, next, cfg) = (agent.clone(), url.clone(), next.clone(), cfg.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < cfg.requests {
                    let t = Instant::now();
                    let mut req = agent.post(&url).set("Content-Type", &cfg.content_type);
                    if let Some(tok) = &cfg.token {
                        req = req.set("Authorization", &format!("Bearer {tok}"));
                    }
                    let status = match req.send_bytes(&cfg.image) {
                        Ok(r) => {
                            let _ = r.into_string();
                            "200".to_string()
                        }
                        Err(ureq::Error::Status(code, r)) => {
                            let _ = r.into_string();
                            code.to_string()
                        }
                        Err(_) => "transport".to_string(),
                    };
                    out.push((status, t.elapsed().as_secs_f64() * 1e3));
                }
                out
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    let mut ok_ms = Vec::new();
    for t in threads {
        for (status, ms) in t.join().map_err(|_| ServeError::Internal("a client thread panicked".into()))? {
            if status == "200" {
                ok_ms.push(ms);
            }
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // The same percentiles as `fieldkit bench` (numpy's interpolation).
    let lat = LatencyStats::from_samples(&ok_ms);
    let errors = statuses.iter().filter(|(s, _)| *s != "200" && *s != "503").map(|(_, n)| n).sum();
    Ok(LoadReport {
        requests: cfg.requests,
        concurrency: cfg.concurrency,
        seconds,
        throughput_rps: ok_ms.len() as f64 / seconds,
        p50_ms: lat.p50_ms,
        p90_ms: lat.p90_ms,
        p99_ms: lat.p99_ms,
        max_ms: lat.max_ms,
        statuses,
        errors,
        rss_start_mb,
        rss_end_mb: rss_mb(&agent, cfg),
    })
}
