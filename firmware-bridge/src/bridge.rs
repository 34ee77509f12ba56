//! The host program: detection lines in, nozzle actuations out, every actuation accounted
//! for (done, or failed with a reason), and a report at the end.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldkit_core::latency::LatencyHistogram;
use serde::{Deserialize, Serialize};

use crate::display::{LinkState, Status};
use crate::error::{io_err, BridgeError};
use crate::link::{monotonic_us, Link, LinkConfig, LinkEvent, LinkStats};
use crate::planner::{Detection, Merge, Merger, PlanConfig};
use crate::protocol::{
    Actuate, CompactDetection, DetectionBatch, DeviceState, EstopReason, FailReason, Message, Outcome, Telemetry,
    MAX_DETECTIONS,
};

/// `bridge.toml`: the planner's geometry and targets, the link's timing, the safety limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    #[serde(flatten)]
    pub plan: PlanConfig,
    #[serde(default)]
    pub link: LinkConfig,
    #[serde(default)]
    pub safety: Safety,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// Live input only: E-stop when no detection line arrives for this long (camera or model
    /// died); the next line starts a new session.
    pub vision_timeout_ms: u64,
    /// Wait this long for the device at start.
    pub connect_timeout_ms: u64,
    /// After its close time, wait this long for an actuation's report before counting it failed.
    pub report_timeout_ms: u64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety { vision_timeout_ms: 1000, connect_timeout_ms: 5000, report_timeout_ms: 1500 }
    }
}

impl BridgeConfig {
    pub fn load(path: &Path) -> Result<Self, BridgeError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let cfg: BridgeConfig =
            toml::from_str(&text).map_err(|e| BridgeError::Config(format!("{}: {e}", path.display())))?;
        cfg.plan
            .validate()
            .and_then(|_| cfg.link.validate())
            .map_err(|e| BridgeError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }
}

/// How capture times are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// Each line's `capture_ms` (from the stream start); lines are replayed at that pace.
    Recorded,
    /// Lines are frames at this rate (e.g. `fieldkit predict` over a folder); replayed at pace.
    Fps(f64),
    /// A live stream: capture time = arrival − the configured pipeline latency.
    Live,
}

/// One line of detection JSONL (`fieldkit predict`'s format; extra fields ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct DetectionLine {
    pub width: f64,
    pub height: f64,
    #[serde(default)]
    pub detections: Vec<Detection>,
    #[serde(default)]
    pub capture_ms: Option<f64>,
    /// A segmenter's line: its class map as a grey PNG of class ids (`fieldkit predict`'s
    /// `.mask.png`), planned as lane cells ([`crate::planner::PlanConfig::lane_cells`]), with
    /// `coverage` naming the classes by index.
    #[serde(default)]
    pub mask: Option<std::path::PathBuf>,
    #[serde(default)]
    pub coverage: Vec<CoverageEntry>,
}

/// A class of a segmenter's line: its index in the class map and its name.
#[derive(Debug, Clone, Deserialize)]
pub struct CoverageEntry {
    pub index: usize,
    pub name: String,
}

/// A segmenter line's class map as the planner's plants. A relative mask path is taken from
/// the working folder, else beside the JSONL (`dir`).
fn mask_plants(
    line: &DetectionLine,
    mask: &Path,
    dir: Option<&Path>,
    plan: &PlanConfig,
) -> Result<Vec<Detection>, String> {
    let path = match dir {
        Some(d) if mask.is_relative() && !mask.exists() => d.join(mask),
        _ => mask.to_path_buf(),
    };
    let img = image::open(&path).map_err(|e| format!("mask {}: {e}", path.display()))?.into_luma8();
    let (w, h) = img.dimensions();
    if (f64::from(w), f64::from(h)) != (line.width, line.height) {
        return Err(format!("mask {} is {w}x{h}, the line says {}x{}", path.display(), line.width, line.height));
    }
    if line.coverage.is_empty() {
        return Err("a mask line needs its 'coverage' (the class names by index)".into());
    }
    let n = line.coverage.iter().map(|c| c.index + 1).max().unwrap_or(0);
    let mut names = vec![String::new(); n];
    for c in &line.coverage {
        names[c.index] = c.name.clone();
    }
    Ok(plan.lane_cells(img.as_raw(), w, h, &names))
}

/// What drives the bridge, line by line: a frame's detections with its capture time (host
/// CLOCK_MONOTONIC µs, [`monotonic_us`]), a line that could not be read, or the end.
pub enum BridgeInput {
    Line { line: DetectionLine, capture_us: u64 },
    Bad(String),
    End,
}

/// Reads lines on a thread, pacing them by their capture times when those are known (so a
/// recorded run replays as it happened).
fn spawn_reader(
    reader: Box<dyn BufRead + Send>,
    timing: Timing,
    latency_us: u64,
    start_us: u64,
    source: String,
    plan: PlanConfig,
) -> Receiver<BridgeInput> {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(BridgeInput::Bad(format!("{source}:{n}: {e}")));
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut parsed: DetectionLine = match serde_json::from_str(&line) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(BridgeInput::Bad(format!("{source}:{n}: not a detection line ({e})")));
                    continue;
                }
            };
            if !(parsed.width > 0.0 && parsed.height > 0.0) {
                let _ = tx.send(BridgeInput::Bad(format!(
                    "{source}:{n}: width/height must be positive, got {}x{}",
                    parsed.width, parsed.height
                )));
                continue;
            }
            if let Some(mask) = parsed.mask.clone() {
                let dir = Path::new(&source).parent();
                match mask_plants(&parsed, &mask, dir, &plan) {
                    Ok(plants) => parsed.detections.extend(plants),
                    Err(e) => {
                        let _ = tx.send(BridgeInput::Bad(format!("{source}:{n}: {e}")));
                        continue;
                    }
                }
            }
            let offset_us = match (timing, parsed.capture_ms) {
                (_, Some(ms)) if ms.is_finite() && ms >= 0.0 => Some((ms * 1e3) as u64),
                (Timing::Recorded, _) => {
                    let _ = tx.send(BridgeInput::Bad(format!("{source}:{n}: no capture_ms (needed without --fps)")));
                    continue;
                }
                (Timing::Fps(fps), _) => Some((i as f64 / fps * 1e6) as u64),
                (Timing::Live, _) => None,
            };
            let capture_us = match offset_us {
                Some(off) => {
                    let capture = start_us + off;
                    // The detection becomes available one pipeline latency after capture.
                    let ready = capture + latency_us;
                    let now = monotonic_us();
                    if ready > now {
                        std::thread::sleep(Duration::from_micros(ready - now));
                    }
                    capture
                }
                None => monotonic_us().saturating_sub(latency_us),
            };
            if tx.send(BridgeInput::Line { line: parsed, capture_us }).is_err() {
                return;
            }
        }
        let _ = tx.send(BridgeInput::End);
    });
    rx
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ActStatus {
    /// Planned or changed, not yet sent.
    Pending,
    Sent,
    Acked,
    Done {
        opened_us: u64,
        closed_us: u64,
    },
    Failed {
        reason: String,
    },
    /// Taken back before it opened: a protected plant (the crop) turned out to be under it.
    Withdrawn,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actuation {
    pub id: u32,
    pub nozzle: u8,
    pub open_us: u64,
    pub close_us: u64,
    pub class: String,
    /// Capture time of the frame that planned it (host µs).
    pub capture_us: u64,
    #[serde(flatten)]
    pub status: ActStatus,
    /// The device has acknowledged some version of it (so it may already be spraying).
    #[serde(skip)]
    acked_once: bool,
    /// Some version of it went to the device (which may hold it, acknowledged or not).
    #[serde(skip)]
    sent_once: bool,
    /// The planner took it back: it goes (again) as a spray of no length, which the device
    /// drops; the device's word on it decides between withdrawn and done.
    #[serde(skip)]
    withdrawn: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What `fieldkit bridge` writes with `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeReport {
    /// Host clock (CLOCK_MONOTONIC µs) of capture time 0 for recorded / fps input.
    pub stream_start_us: u64,
    pub lines: u64,
    pub bad_lines: u64,
    pub detections: u64,
    pub triggers: u64,
    /// Every spray, unless the bridge was told to keep counts only (`keep_actuations`).
    pub actuations: Vec<Actuation>,
    pub planned: usize,
    pub done: usize,
    pub failed: usize,
    /// Taken back before opening, a protected plant under them (`[protect]`).
    pub withdrawn: usize,
    pub estops: u64,
    pub link: LinkStats,
    /// Host → device → host acknowledgement time of first sends; one way ≈ half.
    pub ack_rtt: Latency,
    /// Glass to nozzle command: from the capture of the frame that planned a spray to the
    /// device's acknowledgement of its first command.
    pub capture_to_ack: Latency,
    /// After each E-stop for lost vision: ms from the first detections again (the camera back)
    /// to the device acknowledging the first nozzle command of the new session.
    pub resume_ms: Vec<f64>,
    pub device: Option<Telemetry>,
}

/// Running totals another thread reads while the bridge runs (`fieldkit run
/// --metrics-bind`): sprays planned, done, failed and withdrawn so far, E-stops, whether the link is up,
/// and, once a reader asked for them (`watch_acks`), the glass-to-nozzle samples not yet taken
/// (`take_acks`).
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub planned: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub withdrawn: AtomicU64,
    pub estops: AtomicU64,
    pub link_up: AtomicBool,
    /// Nobody takes the samples unless asked: without a reader they would pile up all day.
    watch_acks: AtomicBool,
    acks_us: Mutex<Vec<u64>>,
}

impl LiveCounts {
    /// From now on keep each capture-to-acknowledgement time for `take_acks`.
    pub fn watch_acks(&self) {
        self.watch_acks.store(true, Ordering::Relaxed);
    }

    /// Capture-to-acknowledgement times (µs) recorded since the last call.
    pub fn take_acks(&self) -> Vec<u64> {
        std::mem::take(&mut *self.acks_us.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn ack(&self, us: u64) {
        if self.watch_acks.load(Ordering::Relaxed) {
            self.acks_us.lock().unwrap_or_else(|p| p.into_inner()).push(us);
        }
    }
}

/// Sets an actuation's status, keeping the live done / failed totals right when a final
/// status is taken back (a failed spray re-planned after a reconnect).
fn set_status(live: &LiveCounts, a: &mut Actuation, new: ActStatus) {
    let counter = |s: &ActStatus| match s {
        ActStatus::Done { .. } => Some(&live.done),
        ActStatus::Failed { .. } => Some(&live.failed),
        ActStatus::Withdrawn => Some(&live.withdrawn),
        _ => None,
    };
    if let Some(c) = counter(&a.status) {
        c.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(c) = counter(&new) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    a.status = new;
}

pub struct BridgeOptions {
    pub port: PathBuf,
    pub config: BridgeConfig,
    pub timing: Timing,
    pub quiet: bool,
}

impl Latency {
    /// 0 ms where there are no samples.
    fn of(h: &LatencyHistogram) -> Self {
        let ms = |v: f64| if v.is_nan() { 0.0 } else { v };
        Latency {
            samples: h.count() as usize,
            p50_ms: ms(h.quantile_ms(0.5)),
            p99_ms: ms(h.quantile_ms(0.99)),
            max_ms: ms(h.max_ms()),
        }
    }
}

pub struct Bridge {
    opts: BridgeOptions,
    link: Link,
    merger: Merger,
    /// Sprays that may still change: planned, in flight, or final within the report timeout
    /// (a late report or a reconnect may still move them). Settled ones leave it, so the work
    /// per loop turn does not grow over a day.
    acts: BTreeMap<u32, Actuation>,
    /// Settled sprays, for the report's list; none kept with `keep_actuations(false)`.
    settled: Vec<Actuation>,
    keep_settled: bool,
    last_settle_us: u64,
    frame: u32,
    lines: u64,
    bad_lines: u64,
    detections: u64,
    triggers: u64,
    estopped: bool,
    last_input_us: u64,
    telemetry: Option<Telemetry>,
    class_counts: Vec<(String, u32)>,
    class_ids: BTreeMap<String, u8>,
    first_line_us: Option<u64>,
    last_line_us: u64,
    capture_to_ack: LatencyHistogram,
    live: Arc<LiveCounts>,
    /// When vision came back after an E-stop, until the new session's first acknowledged spray.
    resumed_at: Option<u64>,
    resume_ms: Vec<f64>,
}

impl Bridge {
    pub fn new(opts: BridgeOptions) -> Self {
        Bridge {
            link: Link::new(&opts.port, opts.config.link.clone()),
            merger: Merger::new(&opts.config.plan.plan),
            opts,
            acts: BTreeMap::new(),
            settled: Vec::new(),
            keep_settled: true,
            last_settle_us: 0,
            frame: 0,
            lines: 0,
            bad_lines: 0,
            detections: 0,
            triggers: 0,
            estopped: false,
            last_input_us: 0,
            telemetry: None,
            class_counts: Vec::new(),
            class_ids: BTreeMap::new(),
            first_line_us: None,
            last_line_us: 0,
            capture_to_ack: LatencyHistogram::new(),
            live: Arc::new(LiveCounts::default()),
            resumed_at: None,
            resume_ms: Vec::new(),
        }
    }

    /// Whether the report lists every spray (the default; about 100 bytes each, kept for the
    /// whole run) or only counts them (a day-long run that writes no spray report).
    pub fn keep_actuations(mut self, keep: bool) -> Self {
        self.keep_settled = keep;
        self
    }

    /// The running totals, for a reader on another thread.
    pub fn live(&self) -> Arc<LiveCounts> {
        self.live.clone()
    }

    /// The settings it runs with (bridge.toml, with any flag overrides).
    pub fn config(&self) -> &BridgeConfig {
        &self.opts.config
    }

    fn say(&self, msg: impl AsRef<str>) {
        if !self.opts.quiet {
            eprintln!("bridge: {}", msg.as_ref());
        }
    }

    /// Runs until the input ends and every actuation is accounted for.
    pub fn run(&mut self, input: Box<dyn BufRead + Send>, source: &str) -> Result<BridgeReport, BridgeError> {
        self.connect()?;
        let start_us = monotonic_us() + 20_000;
        let latency_us = (self.opts.config.plan.motion.latency_ms * 1e3) as u64;
        let plan = self.opts.config.plan.clone();
        let rx = spawn_reader(input, self.opts.timing, latency_us, start_us, source.to_string(), plan);
        self.drive(rx, start_us)
    }

    /// Runs on lines that carry their own capture times (`fieldkit run`: the frames' own),
    /// until `End` or the sender is dropped and every actuation is accounted for. With
    /// [`Timing::Live`] a pause in the lines E-stops the device (`safety.vision_timeout_ms`).
    pub fn run_from(&mut self, rx: Receiver<BridgeInput>) -> Result<BridgeReport, BridgeError> {
        self.connect()?;
        self.drive(rx, monotonic_us())
    }

    /// Waits for the device (`safety.connect_timeout_ms`); at once when it is up.
    pub fn connect(&mut self) -> Result<(), BridgeError> {
        let deadline = monotonic_us() + self.opts.config.safety.connect_timeout_ms * 1000;
        while !self.link.is_up() {
            let now = monotonic_us();
            if now > deadline {
                let why = self.link.open_error().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(BridgeError::Serial(format!(
                    "no answer from a device on {} within {} ms{why}",
                    self.opts.port.display(),
                    self.opts.config.safety.connect_timeout_ms
                )));
            }
            for e in self.link.poll(now) {
                self.on_link(e, now);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn drive(&mut self, rx: Receiver<BridgeInput>, start_us: u64) -> Result<BridgeReport, BridgeError> {
        let mut ended = false;
        let mut end_deadline = u64::MAX;
        self.last_input_us = monotonic_us();
        loop {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(BridgeInput::Line { line, capture_us }) => self.on_line(line, capture_us),
                Ok(BridgeInput::Bad(msg)) => {
                    self.bad_lines += 1;
                    self.say(format!("skipped {msg}"));
                }
                Ok(BridgeInput::End) | Err(RecvTimeoutError::Disconnected) if !ended => {
                    ended = true;
                    let last_close = self.acts.values().map(|a| a.close_us).max().unwrap_or(0);
                    end_deadline = last_close.max(monotonic_us()) + self.opts.config.safety.report_timeout_ms * 1000;
                }
                _ => {}
            }
            let now = monotonic_us();
            for e in self.link.poll(now) {
                self.on_link(e, now);
            }
            self.send_pending(now);
            self.settle(now);
            if !ended && self.opts.timing == Timing::Live {
                self.vision_watchdog(now);
            }
            if ended && (self.acts.values().all(|a| a.is_final()) || now > end_deadline) {
                break;
            }
        }
        let now = monotonic_us();
        for a in self.acts.values_mut() {
            if !a.is_final() {
                set_status(&self.live, a, ActStatus::Failed { reason: "no report from the device".into() });
            }
        }
        // Leave the device safe: closed and refusing until a new session.
        for e in self.link.send_and_wait(Message::Estop { reason: EstopReason::Shutdown }, Duration::from_millis(300)) {
            self.on_link(e, now);
        }
        Ok(self.report(start_us))
    }

    /// Moves sprays out of the working set once nothing can change them: final, and closed
    /// longer ago than the device's report may take. Ten times a second is plenty.
    fn settle(&mut self, now: u64) {
        if now < self.last_settle_us + 100_000 {
            return;
        }
        self.last_settle_us = now;
        let slack = self.opts.config.safety.report_timeout_ms * 1000;
        let ids: Vec<u32> =
            self.acts.values().filter(|a| a.is_final() && a.close_us + slack < now).map(|a| a.id).collect();
        for id in ids {
            if let Some(a) = self.acts.remove(&id) {
                if self.keep_settled {
                    self.settled.push(a);
                }
            }
        }
    }

    fn vision_watchdog(&mut self, now: u64) {
        let limit = self.opts.config.safety.vision_timeout_ms * 1000;
        // Armed by the first detections: a camera still starting is not a lost one.
        let armed = self.first_line_us.is_some();
        if armed && !self.estopped && self.link.is_up() && now.saturating_sub(self.last_input_us) > limit {
            self.say(format!("no detections for {} ms: E-stop", limit / 1000));
            self.estopped = true;
            self.live.estops.fetch_add(1, Ordering::Relaxed);
            self.link.send(Message::Estop { reason: EstopReason::Vision }, now);
        }
    }

    fn on_line(&mut self, line: DetectionLine, capture_us: u64) {
        let now = monotonic_us();
        self.last_input_us = now;
        if self.estopped {
            self.say("detections again: new session");
            self.estopped = false;
            self.resumed_at = Some(now);
            self.link.restart(now);
        }
        self.lines += 1;
        self.first_line_us.get_or_insert(now);
        self.last_line_us = now;
        self.frame = self.frame.wrapping_add(1);
        self.detections += line.detections.len() as u64;
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for d in &line.detections {
            *counts.entry(d.name.clone()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        self.class_counts = counts;

        let mut best: Vec<&Detection> = line.detections.iter().collect();
        best.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut batch = DetectionBatch { frame: self.frame, time_us: capture_us, detections: heapless::Vec::new() };
        for d in best.into_iter().take(MAX_DETECTIONS) {
            let next = self.class_ids.len() as u8;
            let class = *self.class_ids.entry(d.name.clone()).or_insert(next);
            let _ = batch.detections.push(CompactDetection::new(
                class,
                d.score,
                d.bbox,
                line.width as f32,
                line.height as f32,
            ));
        }
        self.link.send(Message::Detections(batch), now);

        // Protected plants first: a weed beside a crop in this frame is planned clear of it.
        let plan = &self.opts.config.plan;
        let plants: Vec<&Detection> = plan.plants(&line.detections).collect();
        let mut merges = Vec::new();
        for d in &plants {
            for g in plan.guards(d, line.width, line.height, capture_us) {
                merges.extend(self.merger.protect(&g, now).into_iter().map(|m| (m, g.class.clone())));
            }
        }
        for d in &plants {
            for t in plan.triggers(d, line.width, line.height, capture_us) {
                self.triggers += 1;
                merges.extend(self.merger.add(&t, now).into_iter().map(|m| (m, t.class.clone())));
            }
        }
        for (m, class) in merges {
            self.apply(m, class, capture_us);
        }
    }

    /// Brings the sprays in line with what the planner decided.
    fn apply(&mut self, m: Merge, class: String, capture_us: u64) {
        match m {
            Merge::New { id, nozzle, open_us, close_us } => {
                self.live.planned.fetch_add(1, Ordering::Relaxed);
                self.acts.insert(id, Actuation::planned(id, nozzle, open_us, close_us, class, capture_us));
            }
            Merge::Update { id, open_us, close_us, .. } => {
                if let Some(a) = self.acts.get_mut(&id) {
                    a.open_us = open_us;
                    a.close_us = close_us;
                    if !matches!(a.status, ActStatus::Done { .. }) {
                        set_status(&self.live, a, ActStatus::Pending);
                    }
                }
            }
            Merge::Withdraw { id } => {
                if let Some(a) = self.acts.get_mut(&id) {
                    a.withdrawn = true;
                    a.close_us = a.open_us;
                    let next = if a.sent_once { ActStatus::Pending } else { ActStatus::Withdrawn };
                    if !matches!(a.status, ActStatus::Done { .. }) {
                        set_status(&self.live, a, next);
                    }
                }
            }
            Merge::Covered { .. } => {}
        }
    }

    fn send_pending(&mut self, now: u64) {
        let lead = (self.opts.config.plan.plan.min_lead_ms * 1e3) as u64;
        let up = self.link.is_up() && !self.estopped;
        for a in self.acts.values_mut() {
            if a.status != ActStatus::Pending {
                continue;
            }
            // Never open late: a spray that cannot reach the device in time is dropped. An
            // extension of one already running may still go while it can land before closing.
            // A withdrawal goes whenever it can: the device may hold the spray.
            let in_time = a.withdrawn || if a.acked_once { a.close_us > now + lead } else { a.open_us >= now + lead };
            if !in_time {
                let why = if self.link.is_up() { "planned too late to deliver" } else { "link down at its open time" };
                let settled = if a.acked_once { ActStatus::Acked } else { ActStatus::Failed { reason: why.into() } };
                set_status(&self.live, a, settled);
                continue;
            }
            if !up {
                continue;
            }
            let msg = Message::Actuate(Actuate {
                id: a.id,
                nozzle: a.nozzle,
                open_at_us: a.open_us,
                duration_us: (a.close_us - a.open_us).min(u32::MAX as u64) as u32,
            });
            if self.link.send(msg, now) {
                a.sent_once = true;
                set_status(&self.live, a, ActStatus::Sent);
            }
        }
    }

    fn on_link(&mut self, e: LinkEvent, now: u64) {
        match e {
            LinkEvent::Up { nozzles } => {
                self.live.link_up.store(true, Ordering::Relaxed);
                self.say(format!("device up on {} ({nozzles} nozzles)", self.opts.port.display()));
                let n = self.opts.config.plan.boom.nozzles_m.len();
                if (nozzles as usize) < n {
                    self.say(format!("warning: the device drives {nozzles} nozzles, bridge.toml lists {n}"));
                }
                // What the device may have lost with the old session goes again if still in time.
                let lead = (self.opts.config.plan.plan.min_lead_ms * 1e3) as u64;
                for a in self.acts.values_mut() {
                    if !matches!(a.status, ActStatus::Done { .. } | ActStatus::Withdrawn) && a.open_us >= now + lead {
                        set_status(&self.live, a, ActStatus::Pending);
                        a.acked_once = false;
                    }
                }
            }
            LinkEvent::Down { reason } => {
                self.live.link_up.store(false, Ordering::Relaxed);
                self.say(format!("link down: {reason}"))
            }
            LinkEvent::Telemetry(t) => self.telemetry = Some(t),
            LinkEvent::Acked { msg: Message::Actuate(m), .. } => {
                if let Some(a) = self.acts.get_mut(&m.id) {
                    if let Some(t) = self.resumed_at.take() {
                        self.resume_ms.push(now.saturating_sub(t) as f64 / 1e3);
                    }
                    if !a.acked_once {
                        let us = now.saturating_sub(a.capture_us);
                        self.capture_to_ack.record_us(us);
                        self.live.ack(us);
                    }
                    a.acked_once = true;
                    let current = m.open_at_us == a.open_us && m.open_at_us + m.duration_us as u64 == a.close_us;
                    if a.status == ActStatus::Sent && current {
                        set_status(&self.live, a, ActStatus::Acked);
                    }
                }
            }
            LinkEvent::Nacked { msg: Message::Actuate(m), reason } => {
                if let Some(a) = self.acts.get_mut(&m.id) {
                    // A withdrawal refused (too late to hold as new) leaves nothing on the device.
                    if a.withdrawn && !matches!(a.status, ActStatus::Done { .. }) {
                        set_status(&self.live, a, ActStatus::Withdrawn);
                    } else if !matches!(a.status, ActStatus::Done { .. } | ActStatus::Withdrawn) {
                        set_status(&self.live, a, ActStatus::Failed { reason: format!("device refused: {reason:?}") });
                    }
                }
            }
            LinkEvent::Lost { msg: Message::Actuate(m) } => {
                // Resent after a reconnect if still in time (send_pending decides).
                if let Some(a) = self.acts.get_mut(&m.id) {
                    if a.status == ActStatus::Sent {
                        set_status(&self.live, a, ActStatus::Pending);
                    }
                }
            }
            LinkEvent::Report { id, outcome } => {
                if let Some(a) = self.acts.get_mut(&id) {
                    match outcome {
                        // A withdrawn spray the device dropped in time never opened.
                        Outcome::Done { opened_us, closed_us } if a.withdrawn && opened_us == closed_us => {
                            set_status(&self.live, a, ActStatus::Withdrawn)
                        }
                        Outcome::Done { opened_us, closed_us } => {
                            set_status(&self.live, a, ActStatus::Done { opened_us, closed_us })
                        }
                        // A newer send of the same id (after a reconnect) may still run.
                        Outcome::Failed(r)
                            if !matches!(
                                a.status,
                                ActStatus::Done { .. } | ActStatus::Pending | ActStatus::Withdrawn
                            ) =>
                        {
                            set_status(&self.live, a, ActStatus::Failed { reason: fail_text(r).into() });
                        }
                        Outcome::Failed(_) => {}
                    }
                }
            }
            LinkEvent::Acked { .. } | LinkEvent::Nacked { .. } | LinkEvent::Lost { .. } => {}
        }
    }

    /// Writes the operator screen as it stands to a PNG.
    pub fn save_status_png(&self, path: &Path) -> Result<(), BridgeError> {
        let classes: Vec<(&str, u32)> = self.class_counts.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        crate::render::save_png(&self.status_screen(&classes), path, 4)
    }

    /// The operator screen as it stands.
    pub fn status_screen<'a>(&'a self, classes: &'a [(&'a str, u32)]) -> Status<'a> {
        let t = self.telemetry.as_ref();
        let secs = (self.last_line_us.saturating_sub(self.first_line_us.unwrap_or(0))) as f32 / 1e6;
        Status {
            link: if self.link.is_up() { LinkState::Up } else { LinkState::Down },
            fps: if secs > 0.0 && self.lines > 1 { (self.lines - 1) as f32 / secs } else { 0.0 },
            classes,
            nozzles: self.opts.config.plan.boom.nozzles_m.len() as u8,
            nozzles_open: t.map_or(0, |t| t.nozzles_open),
            state: t.map_or(DeviceState::Idle, |t| t.state),
            faults: t.map_or(0, |t| t.faults),
            sprayed: self.live.done.load(Ordering::Relaxed) as u32,
            failed: self.live.failed.load(Ordering::Relaxed) as u32,
        }
    }

    fn report(&self, start_us: u64) -> BridgeReport {
        let mut acts: Vec<Actuation> = self.settled.clone();
        if self.keep_settled {
            acts.extend(self.acts.values().cloned());
            acts.sort_by_key(|a| a.id);
        }
        BridgeReport {
            stream_start_us: start_us,
            lines: self.lines,
            bad_lines: self.bad_lines,
            detections: self.detections,
            triggers: self.triggers,
            // Every spray ends done, failed or withdrawn before the report (drive's end).
            planned: self.live.planned.load(Ordering::Relaxed) as usize,
            done: self.live.done.load(Ordering::Relaxed) as usize,
            failed: self.live.failed.load(Ordering::Relaxed) as usize,
            withdrawn: self.live.withdrawn.load(Ordering::Relaxed) as usize,
            actuations: acts,
            estops: self.live.estops.load(Ordering::Relaxed),
            link: self.link.stats.clone(),
            ack_rtt: Latency::of(&self.link.stats.rtt),
            capture_to_ack: Latency::of(&self.capture_to_ack),
            resume_ms: self.resume_ms.clone(),
            device: self.telemetry,
        }
    }
}

impl BridgeReport {
    /// Openings in a device log that lie outside the planned sprays on their nozzle (by more
    /// than `tol_us`): wrong actuations. Should be empty. Sprays that overlap on a nozzle keep
    /// it open throughout, so a log opening is checked against their union.
    pub fn unplanned(&self, spans: &[crate::sim::Span], tol_us: u64) -> Vec<crate::sim::Span> {
        let mut planned: Vec<(u8, u64, u64)> =
            self.actuations.iter().map(|a| (a.nozzle, a.open_us, a.close_us)).collect();
        planned.sort_unstable();
        let mut union: Vec<(u8, u64, u64)> = Vec::new();
        for (n, o, c) in planned {
            match union.last_mut() {
                Some(u) if u.0 == n && o <= u.2 + tol_us => u.2 = u.2.max(c),
                _ => union.push((n, o, c)),
            }
        }
        spans
            .iter()
            .filter(|s| {
                !union.iter().any(|&(n, o, c)| n == s.nozzle && s.open_us + tol_us >= o && s.close_us <= c + tol_us)
            })
            .copied()
            .collect()
    }
}

impl Actuation {
    /// A spray as the planner creates it: pending, not yet sent.
    fn planned(id: u32, nozzle: u8, open_us: u64, close_us: u64, class: String, capture_us: u64) -> Self {
        let status = ActStatus::Pending;
        let (acked_once, sent_once, withdrawn) = (false, false, false);
        Actuation { id, nozzle, open_us, close_us, class, capture_us, status, acked_once, sent_once, withdrawn }
    }

    fn is_final(&self) -> bool {
        matches!(self.status, ActStatus::Done { .. } | ActStatus::Failed { .. } | ActStatus::Withdrawn)
    }
}

fn fail_text(r: FailReason) -> &'static str {
    match r {
        FailReason::Estop => "cut by E-stop",
        FailReason::Watchdog => "cut by the device watchdog (host silent)",
        FailReason::Reset => "cancelled by a new session",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segmenter's predictions line (`fieldkit predict`: a grey class-map PNG beside the
    /// JSONL, class names in `coverage`) becomes the lane cells of its map; a mask of another
    /// size than the line and a mask line without names are refused.
    #[test]
    fn mask_lines_become_lane_cells() {
        let plan: PlanConfig = toml::from_str(include_str!("../tests/rig4.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let map = image::GrayImage::from_fn(400, 300, |x, y| {
            image::Luma([if x < 40 && (200..230).contains(&y) { 2 } else { 0 }])
        });
        map.save(dir.path().join("a.mask.png")).unwrap();
        let text = r#"{"width": 400, "height": 300, "mask": "a.mask.png", "coverage": [{"index": 0, "name": "background", "fraction": 0.9}, {"index": 1, "name": "crop", "fraction": 0.0}, {"index": 2, "name": "weed", "fraction": 0.1}]}"#;
        let line: DetectionLine = serde_json::from_str(text).unwrap();
        let mask = line.mask.clone().unwrap();
        let plants = mask_plants(&line, &mask, Some(dir.path()), &plan).unwrap();
        let names: Vec<String> = ["background", "crop", "weed"].map(String::from).to_vec();
        let want = plan.lane_cells(map.as_raw(), 400, 300, &names);
        assert_eq!(plants.len(), 2);
        assert_eq!(plants.iter().map(|d| d.bbox).collect::<Vec<_>>(), want.iter().map(|d| d.bbox).collect::<Vec<_>>());
        assert!(plants.iter().all(|d| d.name == "weed"));
        let small = DetectionLine { width: 200.0, ..line.clone() };
        assert!(mask_plants(&small, &mask, Some(dir.path()), &plan)
            .unwrap_err()
            .contains("is 400x300, the line says 200x300"));
        let unnamed = DetectionLine { coverage: Vec::new(), ..line };
        assert!(mask_plants(&unnamed, &mask, Some(dir.path()), &plan).unwrap_err().contains("coverage"));
    }

    #[test]
    fn live_totals_follow_a_spray_failed_then_replanned_and_done() {
        let live = LiveCounts::default();
        let mut a = Actuation::planned(1, 0, 0, 1, "weed".into(), 0);
        set_status(&live, &mut a, ActStatus::Failed { reason: "link down".into() });
        assert_eq!((live.done.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed)), (0, 1));
        set_status(&live, &mut a, ActStatus::Pending);
        set_status(&live, &mut a, ActStatus::Done { opened_us: 0, closed_us: 1 });
        assert_eq!((live.done.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed)), (1, 0));
    }

    fn actuation(id: u32, close_us: u64, status: ActStatus) -> Actuation {
        Actuation { status, ..Actuation::planned(id, 0, close_us.saturating_sub(100_000), close_us, "weed".into(), 0) }
    }

    /// Sprays leave the working set once nothing can change them (final, closed longer ago
    /// than a report may take), so the work per loop turn does not grow over a day; the report
    /// still lists them all, or none with `keep_actuations(false)`.
    #[test]
    fn settled_sprays_leave_the_working_set() {
        let config = BridgeConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.toml")).unwrap();
        let slack = config.safety.report_timeout_ms * 1000;
        for keep in [true, false] {
            let opts = BridgeOptions {
                port: "/nonexistent".into(),
                config: config.clone(),
                timing: Timing::Live,
                quiet: true,
            };
            let mut b = Bridge::new(opts).keep_actuations(keep);
            let now = 100_000_000;
            let done = |a, b| ActStatus::Done { opened_us: a, closed_us: b };
            for a in [
                actuation(1, now - slack - 1, done(0, 1)),
                actuation(2, now - slack - 1, ActStatus::Failed { reason: "link down".into() }),
                // Closed within the report timeout: a late report may still come.
                actuation(3, now - slack + 1, done(0, 1)),
                // Not final: stays however old.
                actuation(4, now - 10 * slack, ActStatus::Sent),
                actuation(5, now + 1_000_000, ActStatus::Pending),
            ] {
                b.acts.insert(a.id, a);
            }
            b.settle(now);
            assert_eq!(b.acts.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
            assert_eq!(b.settled.len(), if keep { 2 } else { 0 });
            // Not again within 100 ms, whatever changed.
            b.acts.get_mut(&4).unwrap().status = done(0, 1);
            b.settle(now + 50_000);
            assert_eq!(b.acts.len(), 3);
            // 3's report window has passed too now.
            b.settle(now + 200_000);
            assert_eq!(b.acts.keys().copied().collect::<Vec<_>>(), vec![5]);
            let listed: Vec<u32> = b.report(0).actuations.iter().map(|a| a.id).collect();
            assert_eq!(listed, if keep { vec![1, 2, 3, 4, 5] } else { vec![] });
        }
    }

    #[test]
    fn the_sample_config_loads() {
        let cfg = BridgeConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.toml")).unwrap();
        assert_eq!(cfg.plan.boom.nozzles_m.len(), 8);
        assert_eq!(cfg.link.watchdog_ms, 300);
    }

    #[test]
    fn a_bad_config_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.toml");
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.toml")).unwrap();
        std::fs::write(&p, text.replace("speed_mps = 0.5", "speed_mps = -1")).unwrap();
        let e = BridgeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("b.toml") && e.contains("motion.speed_mps"), "{e}");
        std::fs::write(&p, text.replace("parity = \"none\"", "parity = \"mark\"")).unwrap();
        let e = BridgeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("link.parity \"mark\""), "{e}");
        std::fs::write(&p, text.replace("[motion]", "[motion]\nsped = 1")).unwrap();
        let e = BridgeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("sped"), "{e}");
    }
}
