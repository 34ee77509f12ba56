//! `fieldkit run`: the field loop — a camera, stream or video in, detections (and tracks) out,
//! in one process, with every stage's latency measured. Stages run on threads: a capture
//! thread decodes frames (ffmpeg, `core::video`), K inference workers each hold a session of
//! the one plan, and the main thread puts results back in capture order for the tracker and the
//! counters. From a live source (a camera, a stream, or a file with `--realtime`) the newest
//! frame wins: a frame nobody picked up before the next one arrived is dropped and counted, so
//! a slow model runs late by at most one frame instead of falling ever further behind. A file
//! read without `--realtime` is processed frame by frame, none dropped.
//!
//! A live source that fails or ends after it delivered frames is reopened (after 0.5 s, then
//! every second) until it returns: the loop goes blind, says so, and goes on. Ctrl-C
//! or SIGTERM ends the loop cleanly (the summary and events are written); a second one kills.
//!
//! With `--port` and `--config` each frame's detections, with the frame's capture time, go
//! to the spray bridge (`fieldkit_bridge::Bridge`, the planner and serial link of `fieldkit
//! bridge`) on a thread of its own; the nozzle commands' acknowledgements close the
//! glass-to-nozzle latency (`latency_ms.ack`). When frames stop (a lost camera) the bridge
//! E-stops the device after `safety.vision_timeout_ms` and starts a new session when they
//! return.
//!
//! A segmenter (card `decode: segment`) sprays by coverage: its class map is cut into cells
//! along each nozzle's lane (`plan.cell_m`), and a cell where weed covers `plan.coverage_min`
//! of the pixels goes to the bridge as a plant, boxed around its weed pixels
//! (`PlanConfig::lane_cells`); crop cells protect their lanes the same way.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use fieldkit_bridge::bridge::{
    Bridge, BridgeConfig, BridgeInput, BridgeOptions, BridgeReport, DetectionLine, Latency, Timing,
};
use fieldkit_bridge::field::{self, FieldScore, FieldTruth};
use fieldkit_bridge::link::{monotonic_us, LinkStats};
use fieldkit_bridge::planner;
use fieldkit_core::fsio;
use fieldkit_core::latency::LatencyHistogram;
use fieldkit_core::report;
use fieldkit_core::video::{is_live, FrameSource, VideoFrame, VideoInfo, VideoOut};
use fieldkit_runtime::{LabeledDetection, Output, PredictOptions, Prediction};
use fieldkit_track::{ids_by_detection, ByteTrack, CountSummary};
use image::RgbImage;
use serde::Serialize;

use super::engine_args::{NmsArgs, RunArgs};
use super::predict::boxes_to_draw;
use super::record::{RecordArgs, RecordStats};
use super::run_metrics::LoopMetrics;
use super::track::{CountingArgs, StreamArgs, TrackerArgs};

#[derive(Args)]
pub struct RunLoopArgs {
    /// A V4L2 camera (/dev/videoN or /dev/v4l/by-id/..., its mode set by --camera-format,
    /// --camera-size and --camera-fps), an rtsp:// or http:// stream, a video file, or a folder
    /// of images (name order, at --fps, default 10).
    #[arg(long)]
    source: String,
    /// Detector (ONNX with its card).
    #[arg(long)]
    model: PathBuf,
    // With --realtime, frames drop when inference is slower.
    #[command(flatten)]
    stream: StreamArgs,
    /// Write the run's summary as JSON: `frames`, `dropped`, `fps`, `latency_ms` (`p50` /
    /// `p99` per stage and `total`, capture to result), `sprays`, `link`, and with --track the
    /// tracks and counts.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Serial device of the spray microcontroller (e.g. /dev/ttyACM0, or `fieldkit bridge
    /// simulate-mcu --port`): the detections (a segmenter's lane cells) drive its nozzles.
    /// Needs --config.
    #[arg(long, requires = "config")]
    port: Option<PathBuf>,
    /// bridge.toml: camera footprint, boom, speed, what to spray, link and safety settings.
    #[arg(long, requires = "port")]
    config: Option<PathBuf>,
    /// Serial baud rate (overrides link.baud).
    #[arg(long, requires = "port")]
    baud: Option<u32>,
    /// Write the spray bridge's report (every spray with its outcome, link statistics) as JSON.
    #[arg(long, requires = "port")]
    spray_report: Option<PathBuf>,
    /// Score the sprays against a clip's truth (`fieldkit bridge field-clip`): hit rate on
    /// targets, timing error, spray on the other classes. Needs a file played with --realtime.
    #[arg(long, requires = "port")]
    truth: Option<PathBuf>,
    /// Write the annotated video (boxes with their scores, track ids with --track, lines and
    /// zones) as H.264.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    record: RecordArgs,
    /// Follow the detections across frames (ByteTrack) and count in --line / --zone.
    #[arg(long)]
    track: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the loop runs (frames, drops,
    /// per-stage latency, detections per class, tracks, line crossings, zone entries, exits
    /// and occupancy, source up / reconnects). No token: read-only, like node_exporter.
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
    #[command(flatten)]
    nms: NmsArgs,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    counting: CountingArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// A one-frame mailbox between capture and inference: `put` replaces a frame nobody took (and
/// counts it dropped) or, in blocking mode, waits until it was taken.
pub struct LatestSlot<T> {
    state: Mutex<SlotState<T>>,
    changed: Condvar,
    blocking: bool,
}

struct SlotState<T> {
    item: Option<(u64, T)>,
    /// Sequence numbers in the order workers took them.
    taken: VecDeque<u64>,
    dropped: u64,
    closed: bool,
}

impl<T> LatestSlot<T> {
    pub fn new(blocking: bool) -> Self {
        LatestSlot {
            state: Mutex::new(SlotState { item: None, taken: VecDeque::new(), dropped: 0, closed: false }),
            changed: Condvar::new(),
            blocking,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers an item; `false` once the slot was closed (the consumers stopped).
    pub fn put(&self, seq: u64, item: T) -> bool {
        let mut s = self.lock();
        while self.blocking && s.item.is_some() && !s.closed {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.closed {
            return false;
        }
        if s.item.replace((seq, item)).is_some() {
            s.dropped += 1;
        }
        self.changed.notify_all();
        true
    }

    /// The next item, or `None` once the slot is closed and empty.
    pub fn take(&self) -> Option<(u64, T)> {
        let mut s = self.lock();
        loop {
            if let Some((seq, item)) = s.item.take() {
                s.taken.push_back(seq);
                self.changed.notify_all();
                return Some((seq, item));
            }
            if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The oldest taken sequence number not yet handed back by `pop_taken`.
    fn front_taken(&self) -> Option<u64> {
        self.lock().taken.front().copied()
    }

    fn pop_taken(&self) {
        self.lock().taken.pop_front();
    }
}

/// One frame's result from a worker.
struct Done {
    seq: u64,
    /// The frame's time in its stream (s).
    time_s: f64,
    width: u32,
    height: u32,
    /// Kept for --out and --record.
    image: Option<RgbImage>,
    captured: Instant,
    picked: Instant,
    result: fieldkit_runtime::Result<Prediction>,
}

#[derive(Serialize, Default)]
struct StageLatency {
    p50: f64,
    p99: f64,
}

impl StageLatency {
    fn of(h: &LatencyHistogram) -> Self {
        if h.count() == 0 {
            return StageLatency::default();
        }
        StageLatency { p50: h.quantile_ms(0.5), p99: h.quantile_ms(0.99) }
    }
}

#[derive(Serialize)]
struct RunSummary {
    source: String,
    /// Frames processed (captured and not dropped).
    frames: u64,
    dropped: u64,
    /// Frames processed per second of wall time.
    fps: f64,
    /// Per stage: `queue` (waiting for a worker), `preprocess`, `inference`, `postprocess`,
    /// `track` (tracker and counters), `total` (capture to result).
    latency_ms: BTreeMap<&'static str, StageLatency>,
    /// Boxes found (a segmenter: lane cells of target or protected classes).
    detections: u64,
    /// Times a lost live source was reopened, and the seconds it delivered nothing.
    reconnects: u64,
    blind_s: f64,
    /// Each loss of the source: reason, lost and back again (Unix seconds).
    outages: Vec<Outage>,
    /// Sprays planned, done, failed and withdrawn, and link statistics: `null` without --port.
    sprays: Option<Sprays>,
    link: Option<LinkSummary>,
    /// With --truth: the sprays scored against the clip's truth.
    field: Option<FieldScore>,
    /// With --record: uncertain frames seen, kept, over the budget, bytes written.
    record: Option<RecordStats>,
    tracks: Option<u64>,
    counts: Option<CountSummary>,
}

#[derive(Serialize)]
struct Sprays {
    planned: usize,
    done: usize,
    failed: usize,
    /// Taken back before opening: a protected plant (`[protect]`) under them.
    withdrawn: usize,
    /// Box-to-nozzle triggers before merging into sprays.
    triggers: u64,
    estops: u64,
    /// After each E-stop for lost vision: ms from frames again to the first acknowledged spray.
    resume_ms: Vec<f64>,
}

#[derive(Serialize)]
struct LinkSummary {
    #[serde(flatten)]
    stats: LinkStats,
    ack_rtt: Latency,
}

/// The spray link: the bridge connected to its device, before the camera starts.
fn connect_bridge(a: &RunLoopArgs) -> Result<Option<Bridge>> {
    let (Some(port), Some(config)) = (&a.port, &a.config) else { return Ok(None) };
    let mut config = BridgeConfig::load(config)?;
    if let Some(b) = a.baud {
        config.link.baud = b;
    }
    // A day-long run without a spray report keeps counts, not a list of every spray.
    let keep = a.spray_report.is_some() || a.truth.is_some();
    let mut bridge = Bridge::new(BridgeOptions { port: port.clone(), config, timing: Timing::Live, quiet: false })
        .keep_actuations(keep);
    bridge.connect()?;
    Ok(Some(bridge))
}

/// One frame's plants for the bridge (a detector's boxes, or a segmenter's lane cells),
/// captured at `capture_us` on the bridge's clock.
fn bridge_line(width: u32, height: u32, detections: Vec<planner::Detection>, capture_us: u64) -> BridgeInput {
    let line = DetectionLine {
        width: width as f64,
        height: height as f64,
        detections,
        capture_ms: None,
        mask: None,
        coverage: Vec::new(),
    };
    BridgeInput::Line { line, capture_us }
}

/// A detector's boxes as the planner's plants.
fn plants_of(dets: &[LabeledDetection]) -> Vec<planner::Detection> {
    dets.iter()
        .map(|d| planner::Detection { bbox: d.bbox, class: d.class, name: d.name.clone(), score: d.score })
        .collect()
}

/// Reopens a lost live source: waits 0.5 s, then 1 s between tries. A try is cheap (a refused
/// connection or a missing device fails at once), and a wait longer than a second would keep
/// the robot blind after its camera is back.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

/// What the capture thread did: frames handed over, reopenings, seconds without frames.
struct Captured {
    frames: u64,
    reconnects: u64,
    blind_s: f64,
    outages: Vec<Outage>,
}

/// One loss of a live source: why, when (Unix seconds, to line up with the camera's or a
/// benchmark's own clock), when the try that brought it back began and when that try's first
/// frame arrived (`null` if it never came back).
#[derive(Serialize, Clone, Debug)]
struct Outage {
    reason: String,
    lost_unix_s: f64,
    back_unix_s: Option<f64>,
    first_frame_unix_s: Option<f64>,
}

fn unix_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Sets `stop` on Ctrl-C / SIGTERM; a second signal ends the process (exit status 1).
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).context("signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("signal handler")?;
    }
    Ok(stop)
}

/// The capture thread: frames from `reader` into `slot` until the source ends (a file), `stop`
/// is set, the consumers closed the slot or `max_frames` were taken; a live source that fails
/// or ends is reopened with backoff, the failure reported (log, metrics) and timed. A source
/// counts as back when a frame arrives again, not when ffmpeg starts.
fn capture(
    reader: FrameSource,
    reopen: impl Fn(VideoInfo) -> Result<FrameSource>,
    retry: bool,
    slot: &LatestSlot<VideoFrame>,
    stop: &AtomicBool,
    max_frames: u64,
    metrics: Option<&LoopMetrics>,
) -> Result<Captured> {
    let mut c = Captured { frames: 0, reconnects: 0, blind_s: 0.0, outages: Vec::new() };
    let shape = reader.info();
    let mut reader = Some(reader);
    // The first frame of a reopened source, read to know it is back.
    let mut first: Option<VideoFrame> = None;
    let stopping = || stop.load(Ordering::Relaxed) || slot.is_closed();
    while c.frames < max_frames && !stopping() {
        let next = match first.take() {
            Some(frame) => Some(Ok(Some(frame))),
            None => reader.as_mut().map(FrameSource::next_frame),
        };
        let lost = match next {
            Some(Ok(Some(frame))) => {
                if !slot.put(c.frames, frame) {
                    break;
                }
                c.frames += 1;
                continue;
            }
            Some(Ok(None)) if !retry => break,
            Some(Err(e)) if !retry => return Err(e.into()),
            Some(Ok(None)) => "the stream ended".to_string(),
            Some(Err(e)) => e.to_string(),
            None => unreachable!("a reader is open between losses"),
        };
        if stopping() {
            break;
        }
        reader = None;
        let since = Instant::now();
        if let Some(m) = metrics {
            m.source(false);
        }
        let mut backoff = Backoff::new();
        eprintln!("source lost ({lost}) after {} frames; reopening", c.frames);
        c.outages.push(Outage { reason: lost, lost_unix_s: unix_s(), back_unix_s: None, first_frame_unix_s: None });
        while reader.is_none() && !stopping() {
            let wait = backoff.wait();
            let until = Instant::now() + wait;
            while Instant::now() < until && !stopping() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if stopping() {
                break;
            }
            let opened = unix_s();
            let tried = reopen(shape).and_then(|mut r| match r.next_frame() {
                Ok(Some(frame)) => Ok((r, frame)),
                Ok(None) => anyhow::bail!("it ended before its first frame"),
                Err(e) => Err(e.into()),
            });
            match tried {
                Ok((r, frame)) => {
                    if let Some(o) = c.outages.last_mut() {
                        o.back_unix_s = Some(opened);
                        o.first_frame_unix_s = Some(unix_s());
                    }
                    reader = Some(r);
                    first = Some(frame);
                }
                Err(e) => eprintln!(
                    "reopening failed ({e:#}); blind {:.1} s, next try in {:.1} s",
                    since.elapsed().as_secs_f64(),
                    backoff.next.as_secs_f64()
                ),
            }
        }
        if reader.is_some() {
            c.reconnects += 1;
            c.blind_s += since.elapsed().as_secs_f64();
            eprintln!(
                "source back after {:.1} s ({}x{} at {} fps)",
                since.elapsed().as_secs_f64(),
                shape.width,
                shape.height,
                shape.fps
            );
            if let Some(m) = metrics {
                m.reconnected();
                m.source(true);
            }
        }
    }
    Ok(c)
}

pub fn run(a: RunLoopArgs) -> Result<i32> {
    let engine = a.run.load(&a.model)?;
    // A segmenter sprays by weed coverage per nozzle lane (the plan's lane cells); what
    // follows objects over frames needs a detector's boxes.
    let segmenter = engine.card().task == fieldkit_core::Task::Segment;
    if segmenter && (a.track || a.record.wanted()) {
        anyhow::bail!(
            "{}: a segmenter gives class maps, not boxes: --track and --record need a detector (spraying by coverage needs neither)",
            a.model.display()
        );
    }
    let classes = engine.card().classes.clone();
    let nms = a.nms.options()?;
    let opts = PredictOptions { top_k: 1, nms: if a.track { a.tracker.nms(nms) } else { nms } };
    let reader = a.stream.open(&a.source)?;
    let fps = reader.info().fps;
    let live = is_live(&a.source) || a.stream.realtime;
    let slot: Arc<LatestSlot<VideoFrame>> = Arc::new(LatestSlot::new(!live));
    let cfg = a.tracker.config(Some(fps));
    let mut tracker = if a.track { Some(ByteTrack::new(cfg.clone()).context("tracker settings")?) } else { None };
    let mut counter = a.counting.counter(fps, cfg.max_time_lost() as u32, &engine.card().classes)?;
    let mut events = Vec::new();
    let max_frames = a.stream.max_frames();
    let truth = match &a.truth {
        Some(p) if is_live(&a.source) || !a.stream.realtime => {
            anyhow::bail!("--truth {}: the clip must be a file played at its own pace (--realtime)", p.display())
        }
        Some(p) => Some(FieldTruth::load(p)?),
        None => None,
    };
    let mut recorder = a.record.recorder(&a.source)?;
    let overlay = a.counting.overlay()?;
    let mut video_out = a.out.as_deref().map(|p| VideoOut::new(p, fps));
    let keep_images = a.out.is_some() || a.record.wanted();
    let bridge = connect_bridge(&a)?;
    // What --truth scores against: the plan the bridge runs.
    let plan = bridge.as_ref().map(|b| b.config().plan.clone());
    let stop = stop_on_signals()?;
    let metrics = a.metrics_bind.map(|_| Arc::new(LoopMetrics::new()));
    let _endpoint = match (a.metrics_bind, &metrics) {
        (Some(bind), Some(m)) => {
            let m = m.clone();
            let ep = fieldkit_serve::Running::metrics_endpoint(bind, Arc::new(move || m.render()))?;
            println!("metrics on http://{}/metrics", ep.addr);
            Some(ep)
        }
        _ => None,
    };
    let t0 = Instant::now();

    let (tx, rx) = mpsc::channel::<Done>();
    let (capture_result, worker_results, spray) = std::thread::scope(|scope| -> Result<_> {
        let (spray_tx, spray_rx) = mpsc::channel::<BridgeInput>();
        if let (Some(b), Some(m)) = (&bridge, &metrics) {
            m.attach_bridge(b.live());
        }
        let spray = bridge.map(|mut b| scope.spawn(move || b.run_from(spray_rx)));
        let spray_tx = spray.is_some().then_some(spray_tx);
        let (capture_slot, stop, metrics) = (slot.clone(), &stop, metrics.as_deref());
        let (source, stream) = (&a.source, &a.stream);
        let capture = scope.spawn(move || {
            let reopen = |shape| stream.reopen(source, shape);
            let result = capture(reader, reopen, is_live(source), &capture_slot, stop, max_frames, metrics);
            capture_slot.close();
            result
        });
        let mut workers = Vec::new();
        for _ in 0..a.run.workers.max(1) {
            let (slot, tx, engine, opts) = (slot.clone(), tx.clone(), &engine, &opts);
            workers.push(scope.spawn(move || -> fieldkit_runtime::Result<()> {
                let mut session = engine.session()?;
                while let Some((seq, frame)) = slot.take() {
                    let picked = Instant::now();
                    let result = session.predict(&frame.image, opts);
                    let (width, height) = frame.image.dimensions();
                    let image = keep_images.then_some(frame.image);
                    let done = Done {
                        seq,
                        time_s: frame.time_s,
                        width,
                        height,
                        image,
                        captured: frame.captured,
                        picked,
                        result,
                    };
                    if tx.send(done).is_err() {
                        break;
                    }
                }
                Ok(())
            }));
        }
        drop(tx);

        // Results back in capture order: the tracker needs frames in sequence.
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        // Histograms, not lists: constant memory however long the run.
        let mut stages: BTreeMap<&'static str, LatencyHistogram> = BTreeMap::new();
        // Per frame of a clip scored by --truth: host µs of stream time 0 (capture minus the
        // frame's time); the median puts the clip's truth on the device's clock.
        let mut clip_origin: Vec<f64> = Vec::new();
        let (mut frames, mut detections) = (0u64, 0u64);
        let mut handle = |d: Done| -> Result<()> {
            let p = d.result.with_context(|| format!("{}: frame {}", a.source, d.seq))?;
            let t = Instant::now();
            // The plants: a detector's boxes, or a segmenter's lane cells (with a plan).
            let (dets, plants): (&[LabeledDetection], Vec<planner::Detection>) = match &p.output {
                Output::Detections(dets) => (dets.as_slice(), plants_of(dets)),
                Output::Segmentation(m) => {
                    let cells = plan.as_ref().map(|pl| pl.lane_cells(&m.ids, m.width, m.height, &classes));
                    (&[][..], cells.unwrap_or_default())
                }
                _ => anyhow::bail!(
                    "{}: neither a detector nor a segmenter (its card's decode gives no boxes or class map)",
                    a.model.display()
                ),
            };
            // One plant per box for a detector, so this counts boxes or lane cells.
            detections += plants.len() as u64;
            // The class names per frame only feed Prometheus: not built without a reader.
            let names: Vec<String> = match metrics {
                Some(_) => plants.iter().map(|d| d.name.clone()).collect(),
                None => Vec::new(),
            };
            if let Some(tx) = &spray_tx {
                // The capture instant on the bridge's clock (CLOCK_MONOTONIC µs).
                let capture_us = monotonic_us().saturating_sub(d.captured.elapsed().as_micros() as u64);
                if truth.is_some() {
                    clip_origin.push(capture_us as f64 - d.time_s * 1e6);
                }
                // A closed channel: the bridge stopped on an error, which its join reports.
                let _ = tx.send(bridge_line(d.width, d.height, plants, capture_us));
            }
            let mut frame_events = Vec::new();
            let mut tracked = None;
            let mut ids = None;
            if let Some(tr) = &mut tracker {
                let boxes: Vec<_> = dets.iter().map(LabeledDetection::detection).collect();
                let tracks = tr.update(&boxes)?;
                // Source frame numbers: event times stay right when frames were dropped.
                frame_events = counter.update(d.seq as u32 + 1, &tracks);
                tracked = Some((tracks.len(), counter.tracks_seen()));
                ids = Some(ids_by_detection(&tracks, dets.len()));
            }
            let done = Instant::now();
            // Outputs for people (video, recorded frames) after everything the robot acts on.
            if let Some(mut img) = d.image {
                if let Some(r) = &mut recorder {
                    r.offer(d.seq, d.time_s, &img, dets)?;
                }
                if let Some(out) = &mut video_out {
                    if let Output::Segmentation(m) = &p.output {
                        report::overlay_classes(&mut img, &m.ids)?;
                    }
                    report::draw_paths(&mut img, &overlay)?;
                    report::annotate(&mut img, &boxes_to_draw(&p, ids.as_deref(), a.nms.conf))?;
                    // At its source frame number: a frame dropped for a slow model shows
                    // the last result for its time, so the video plays at the real pace.
                    out.write_at(img, d.seq)?;
                }
            }
            let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1e3;
            let frame_stages = [
                ("queue", ms(d.captured, d.picked)),
                ("preprocess", p.timing.preprocess_ms),
                ("inference", p.timing.inference_ms),
                ("postprocess", p.timing.postprocess_ms),
                ("track", ms(t, done)),
                ("total", ms(d.captured, done)),
            ];
            for (k, v) in frame_stages {
                stages.entry(k).or_default().record_ms(v);
            }
            frames += 1;
            if let Some(m) = metrics {
                m.frame(&frame_stages, names.iter().map(String::as_str), tracked, &frame_events);
                m.dropped(slot.dropped());
                m.fps(frames as f64 / t0.elapsed().as_secs_f64().max(1e-9));
            }
            events.extend(frame_events);
            Ok(())
        };
        let consumed = (|| -> Result<()> {
            for d in &rx {
                pending.insert(d.seq, d);
                while let Some(front) = slot.front_taken() {
                    let Some(d) = pending.remove(&front) else { break };
                    slot.pop_taken();
                    handle(d)?;
                }
            }
            Ok(())
        })();
        // Frames per second of the loop, not of the bridge finishing its last sprays.
        let secs = t0.elapsed().as_secs_f64();
        // On an error the workers and the capture must stop too: closing the slot frees a
        // capture waiting to hand over a frame and ends the workers' loop.
        slot.close();
        drop(rx);
        drop(spray_tx);
        let captured = capture.join().map_err(|_| anyhow::anyhow!("the capture thread panicked"))?;
        let workers: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        // The bridge sees the end, finishes the sprays in flight and leaves the device safe.
        let spray = spray.map(|s| s.join().map_err(|_| anyhow::anyhow!("the spray bridge panicked"))).transpose()?;
        consumed?;
        Ok((captured.map(|c| (c, frames, detections, stages, secs, clip_origin)), workers, spray))
    })?;
    for w in worker_results {
        w.map_err(|_| anyhow::anyhow!("an inference worker panicked"))??;
    }
    let (captured, frames, detections, stages, secs, mut clip_origin) = capture_result?;
    let spray: Option<BridgeReport> = spray.transpose().context("the spray link")?;
    if stop.load(Ordering::Relaxed) {
        println!("stopped by a signal after {frames} frames; writing the outputs");
    }
    if a.track {
        let last = counter.finish();
        if let Some(m) = &metrics {
            m.events(&last);
        }
        events.extend(last);
    }
    a.counting.write_events(&events)?;
    if let Some(path) = video_out.map(VideoOut::finish).transpose()?.flatten() {
        println!("annotated video {}", path.display());
    }
    if let Some(r) = &recorder {
        let dir = a.record.dir().expect("a recorder has its folder");
        println!(
            "recorded {} of {} uncertain frames ({:.1} MB) in {}{}",
            r.stats.kept,
            r.stats.uncertain,
            r.stats.bytes as f64 / 1e6,
            dir.display(),
            if r.stats.over_budget > 0 {
                format!("; {} left out over the budget", r.stats.over_budget)
            } else {
                String::new()
            }
        );
    }
    let counts = a.track.then(|| counter.summary());
    let mut latency_ms: BTreeMap<&'static str, StageLatency> =
        stages.iter().map(|(k, v)| (*k, StageLatency::of(v))).collect();
    if let Some(r) = &spray {
        latency_ms.insert("ack", StageLatency { p50: r.capture_to_ack.p50_ms, p99: r.capture_to_ack.p99_ms });
    }
    let field = match (&truth, &spray, &plan) {
        (Some(t), Some(r), Some(plan)) if !clip_origin.is_empty() => {
            clip_origin.sort_by(f64::total_cmp);
            let origin = clip_origin[clip_origin.len() / 2];
            Some(field::score_report(t, plan, r, origin))
        }
        _ => None,
    };
    let summary = RunSummary {
        source: a.source.clone(),
        frames,
        dropped: slot.dropped(),
        fps: frames as f64 / secs.max(1e-9),
        latency_ms,
        detections,
        reconnects: captured.reconnects,
        blind_s: captured.blind_s,
        outages: captured.outages.clone(),
        sprays: spray.as_ref().map(|r| Sprays {
            planned: r.planned,
            done: r.done,
            failed: r.failed,
            withdrawn: r.withdrawn,
            triggers: r.triggers,
            estops: r.estops,
            resume_ms: r.resume_ms.clone(),
        }),
        link: spray.as_ref().map(|r| LinkSummary { stats: r.link.clone(), ack_rtt: r.ack_rtt.clone() }),
        field,
        record: recorder.map(|r| r.stats),
        tracks: counts.as_ref().map(|c| c.tracks.len() as u64),
        counts,
    };
    let total = summary.latency_ms.get("total").map_or((f64::NAN, f64::NAN), |l| (l.p50, l.p99));
    println!(
        "{}: {} frames ({} dropped) at {:.1} fps, {} detections; capture to result p50 {:.1} ms, p99 {:.1} ms{}",
        summary.source,
        summary.frames,
        summary.dropped,
        summary.fps,
        summary.detections,
        total.0,
        total.1,
        if captured.reconnects > 0 {
            let n = captured.reconnects;
            format!(
                "; source lost and reopened {n} time{}, blind {:.1} s",
                if n == 1 { "" } else { "s" },
                captured.blind_s
            )
        } else {
            String::new()
        }
    );
    if let Some(r) = &spray {
        super::bridge::print_report(r, a.spray_report.as_deref(), None);
        println!(
            "capture to nozzle command acknowledged: p50 {:.1} ms, p99 {:.1} ms (n={})",
            r.capture_to_ack.p50_ms, r.capture_to_ack.p99_ms, r.capture_to_ack.samples
        );
        if let Some(p) = &a.spray_report {
            fsio::write_json(p, r)?;
        }
    }
    if let Some(f) = &summary.field {
        println!("field: {f}");
    }
    if let Some(path) = &a.json {
        fsio::write_json(path, &summary)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_frame_wins_and_drops_are_counted() {
        let slot = LatestSlot::new(false);
        slot.put(0, "a");
        slot.put(1, "b");
        assert_eq!(slot.take(), Some((1, "b")));
        assert_eq!(slot.dropped(), 1);
        slot.close();
        assert_eq!(slot.take(), None);
        assert_eq!(slot.front_taken(), Some(1));
        // A closed slot refuses frames: the capture stops when the consumers have.
        assert!(!slot.put(2, "c"));
        let blocking = LatestSlot::new(true);
        assert!(blocking.put(0, "a"));
        blocking.close();
        assert!(!blocking.put(1, "b"), "a full blocking slot, once closed, does not wait");
    }

    #[test]
    fn a_blocking_slot_waits_for_its_reader() {
        let slot = Arc::new(LatestSlot::new(true));
        let writer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                for k in 0..50u64 {
                    slot.put(k, k);
                }
                slot.close();
            })
        };
        let got: Vec<u64> = std::iter::from_fn(|| slot.take().map(|(_, v)| v)).collect();
        writer.join().unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(slot.dropped(), 0);
    }
}
