//! `fieldkit bridge`: drive the robot's microcontroller from detection JSONL, and
//! `fieldkit bridge simulate-mcu`: a simulated microcontroller on a pseudo-terminal.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fieldkit_bridge::bridge::{ActStatus, Bridge, BridgeConfig, BridgeOptions, BridgeReport, Timing};
use fieldkit_bridge::device::DeviceConfig;
use fieldkit_bridge::field::{self, ClipSettings, FieldTruth};
use fieldkit_bridge::sim::{self, FaultConfig, SimOptions};
use fieldkit_core::fsio;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BridgeArgs {
    #[command(subcommand)]
    command: Option<BridgeCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// A simulated microcontroller (the firmware's logic) on a pseudo-terminal at --port,
    /// logging every nozzle opening and closing as JSON lines.
    SimulateMcu(SimArgs),
    /// A drive over the field: a YOLO dataset's photos laid end to end as a strip of ground,
    /// panned under the camera of bridge.toml at its speed, into an H.264 clip, with the true
    /// time each labelled plant passes under each nozzle (--truth, for `fieldkit run --truth`).
    FieldClip(FieldClipArgs),
}

#[derive(Args)]
struct FieldClipArgs {
    /// Ultralytics data.yaml.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "val")]
    split: String,
    /// bridge.toml: camera footprint, boom, speed.
    #[arg(long)]
    config: PathBuf,
    /// The clip (.mp4).
    #[arg(long)]
    out: PathBuf,
    /// The truth JSON (default: the clip's name + .truth.json).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write each frame's labelled boxes as detection JSONL (score 1, cut to the frame),
    /// for `fieldkit bridge --detections L --truth T`: the planner and timing on their own.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Frame width in pixels; the height follows from the camera's footprint.
    #[arg(long, default_value_t = 320)]
    width: u32,
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// Photos laid end to end, in the split's sorted order.
    #[arg(long, default_value_t = 20)]
    images: usize,
}

#[derive(Args)]
struct RunArgs {
    /// Serial device of the microcontroller (e.g. /dev/ttyACM0, or a simulate-mcu --port).
    #[arg(long, required = true)]
    port: Option<PathBuf>,
    /// Geometry, targets, link and safety settings (see firmware-bridge/bridge.toml).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Detection JSONL (`fieldkit predict`'s predictions.jsonl), or - for standard input.
    #[arg(long, required = true)]
    detections: Option<String>,
    /// Lines are frames at this rate (predict output over a folder); without it each line
    /// needs `capture_ms`, unless --live.
    #[arg(long, conflicts_with = "live")]
    fps: Option<f64>,
    /// A live stream: capture time = arrival − motion.latency_ms; E-stop when it stalls.
    #[arg(long)]
    live: bool,
    /// Serial baud rate (overrides link.baud).
    #[arg(long)]
    baud: Option<u32>,
    /// Write the run's report (every actuation with its outcome, link statistics) as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Score the sprays against a clip's truth (`bridge field-clip`): with recorded capture
    /// times (--detections from `field-clip --labels`, or predict's JSONL of the clip).
    #[arg(long, conflicts_with = "live")]
    truth: Option<PathBuf>,
    /// Write the operator status screen at the end as a PNG.
    #[arg(long)]
    status_png: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SimArgs {
    /// Path where the simulated device appears (a symlink to its pseudo-terminal).
    #[arg(long)]
    port: PathBuf,
    /// JSONL of nozzle openings/closings and state changes, times in the host's clock (µs).
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    nozzles: u8,
    /// Probability that a byte is corrupted, each way.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Probability that a byte is lost, each way.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Probability that a frame is delivered twice, each way.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Unplug the device AT_MS after start for FOR_MS (repeatable), e.g. 2000:500.
    #[arg(long, value_parser = parse_unplug)]
    unplug: Vec<(u64, u64)>,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    run_for_s: Option<f64>,
}

fn parse_unplug(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("--unplug {s:?}: expected AT_MS:FOR_MS"))?;
    let num = |v: &str| v.trim().parse::<u64>().map_err(|_| format!("--unplug {s:?}: {v:?} is not a number of ms"));
    Ok((num(a)?, num(b)?))
}

fn probability(name: &str, p: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&p) {
        bail!("--{name} {p}: a probability is between 0 and 1");
    }
    Ok(p)
}

pub fn run(args: BridgeArgs) -> Result<i32> {
    match args.command {
        Some(BridgeCommand::SimulateMcu(s)) => simulate(s),
        Some(BridgeCommand::FieldClip(c)) => field_clip(c),
        None => drive(args.run),
    }
}

/// Where `fieldkit bridge field-clip` writes the truth of `clip` by default.
pub fn truth_path(clip: &Path) -> PathBuf {
    clip.with_extension("truth.json")
}

fn field_clip(a: FieldClipArgs) -> Result<i32> {
    let config = BridgeConfig::load(&a.config)?;
    let settings = ClipSettings { width: a.width, fps: a.fps, images: a.images };
    let truth = field::build_clip(&a.data, &a.split, &config.plan, &settings, &a.out, a.labels.as_deref())?;
    let path = a.truth.unwrap_or_else(|| truth_path(&a.out));
    fsio::write_json(&path, &truth)?;
    let targets = truth.objects.iter().filter(|o| config.plan.is_target(&o.name) && !o.nozzles.is_empty()).count();
    println!(
        "{}: {} frames of {}x{} at {} fps ({:.1} s at {} m/s), {} labelled plants, {} targets under the boom; truth: {}",
        a.out.display(),
        truth.frames,
        truth.width,
        truth.height,
        truth.fps,
        truth.frames as f64 / truth.fps,
        truth.speed_mps,
        truth.objects.len(),
        targets,
        path.display()
    );
    Ok(0)
}

fn simulate(a: SimArgs) -> Result<i32> {
    let opts = SimOptions {
        port: a.port.clone(),
        log: a.log,
        device: DeviceConfig { nozzles: a.nozzles, ..Default::default() },
        faults: FaultConfig {
            corrupt: probability("corrupt", a.corrupt)?,
            drop: probability("drop", a.drop)?,
            duplicate: probability("duplicate", a.duplicate)?,
            seed: a.seed,
        },
        unplug: a.unplug,
        run_for: a.run_for_s.map(Duration::from_secs_f64),
    };
    eprintln!("simulated MCU ({} nozzles) on {}", a.nozzles, a.port.display());
    let summary = sim::run(&opts, Arc::new(AtomicBool::new(false)))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(0)
}

fn drive(a: RunArgs) -> Result<i32> {
    let (port, config, detections) = (a.port.unwrap(), a.config.unwrap(), a.detections.unwrap());
    let mut config = BridgeConfig::load(&config)?;
    if let Some(b) = a.baud {
        config.link.baud = b;
    }
    let timing = match (a.fps, a.live) {
        (Some(f), _) if !(f.is_finite() && f > 0.0) => bail!("--fps {f}: must be a positive rate"),
        (Some(f), _) => Timing::Fps(f),
        (None, true) => Timing::Live,
        (None, false) => Timing::Recorded,
    };
    let input: Box<dyn BufRead + Send> = if detections == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&detections).with_context(|| format!("opening {detections}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let source = if detections == "-" { "stdin".to_string() } else { detections.clone() };
    let plan = config.plan.clone();
    let mut bridge = Bridge::new(BridgeOptions { port, config, timing, quiet: a.quiet });
    let report = bridge.run(input, &source)?;
    if let Some(p) = &a.status_png {
        bridge.save_status_png(p)?;
    }
    if let Some(p) = &a.report {
        fsio::write_json(p, &report)?;
    }
    print_report(&report, a.report.as_deref(), a.status_png.as_deref());
    if let Some(t) = &a.truth {
        let truth = FieldTruth::load(t)?;
        // Recorded and fps timing put capture time 0 at the report's stream start.
        let score = field::score_report(&truth, &plan, &report, report.stream_start_us as f64);
        println!("field: {score}");
    }
    Ok(0)
}

pub fn print_report(r: &BridgeReport, report: Option<&Path>, png: Option<&Path>) {
    println!(
        "{} lines ({} skipped), {} detections, {} triggers -> {} sprays: {} done, {} failed, {} withdrawn",
        r.lines,
        r.bad_lines,
        r.detections,
        r.triggers,
        r.actuations.len(),
        r.done,
        r.failed,
        r.withdrawn
    );
    for a in &r.actuations {
        if let ActStatus::Failed { reason } = &a.status {
            println!("  spray {} (nozzle {}, {}) failed: {reason}", a.id, a.nozzle, a.class);
        }
    }
    let l = &r.link;
    println!(
        "link: {} frames sent ({} resent), {} received, {} corrupt dropped, {} connects; ack round trip p50 {:.2} ms, p99 {:.2} ms (n={})",
        l.frames_sent, l.retransmits, l.frames_received, l.corrupt_dropped, l.connects, r.ack_rtt.p50_ms, r.ack_rtt.p99_ms, r.ack_rtt.samples
    );
    if let Some(p) = report {
        println!("report: {}", p.display());
    }
    if let Some(p) = png {
        println!("status screen: {}", p.display());
    }
}
