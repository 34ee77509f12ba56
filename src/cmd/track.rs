//! `fieldkit track`: stable ids for detections across frames (ByteTrack), from a
//! MOTChallenge detection file to a MOTChallenge result file — the form in which trackers are
//! benchmarked (`fieldkit metrics mot` scores it).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use fieldkit_core::detect::Detection;
use fieldkit_core::fsio;
use fieldkit_track::{
    mot, ByteTrack, ByteTrackConfig, CountSettings, CountSummary, Counter, Line, MotRow, Sequence, Zone,
};
use serde::Serialize;

/// The tracker's settings, defined once for every command that tracks.
#[derive(Args, Clone, Debug)]
pub struct TrackerArgs {
    /// Detections scoring at least this are matched first and may start tracks.
    #[arg(long, default_value_t = ByteTrackConfig::default().track_thresh)]
    pub track_thresh: f32,
    /// Detections between this and --track-thresh are matched second (occluded, blurred
    /// animals) and never start a track.
    #[arg(long, default_value_t = ByteTrackConfig::default().low_thresh)]
    pub low_thresh: f32,
    /// Score a leftover detection needs to start a track.
    #[arg(long, default_value_t = ByteTrackConfig::default().new_track_thresh)]
    pub new_track_thresh: f32,
    /// Largest cost (1 − IoU × score) of a first-round match.
    #[arg(long, default_value_t = ByteTrackConfig::default().match_thresh)]
    pub match_thresh: f32,
    /// Frames (at 30 fps) a lost track waits to be found again.
    #[arg(long, default_value_t = ByteTrackConfig::default().track_buffer)]
    pub track_buffer: u32,
    /// Frame rate of the stream; scales --track-buffer.
    #[arg(long, default_value_t = ByteTrackConfig::default().frame_rate)]
    pub frame_rate: f32,
    /// Match boxes only to tracks of the same class.
    #[arg(long)]
    pub class_aware: bool,
}

impl TrackerArgs {
    pub fn config(&self) -> ByteTrackConfig {
        ByteTrackConfig {
            track_thresh: self.track_thresh,
            low_thresh: self.low_thresh,
            new_track_thresh: self.new_track_thresh,
            match_thresh: self.match_thresh,
            track_buffer: self.track_buffer,
            frame_rate: self.frame_rate,
            class_aware: self.class_aware,
            ..ByteTrackConfig::default()
        }
    }
}

#[derive(Args)]
pub struct TrackArgs {
    /// Detections, MOTChallenge det.txt (`frame,-1,x,y,w,h,score[,class]`; a class of -1 or
    /// none is class 0).
    #[arg(long)]
    detections: PathBuf,
    /// Tracks, MOTChallenge result format (`frame,id,x,y,w,h,score,-1,-1,-1`).
    #[arg(long)]
    out: PathBuf,
    /// Write a summary (frames, tracks, boxes, time per frame, settings) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    counting: CountingArgs,
}

/// Lines and zones to count in, defined once for every command that tracks.
#[derive(Args, Clone, Debug, Default)]
pub struct CountingArgs {
    /// A counting line, NAME:x1,y1,x2,y2 in source pixels (repeatable). Crossings from its
    /// left to its right (looking from the first point to the second) count as `in`.
    #[arg(long = "line", value_name = "NAME:x1,y1,x2,y2")]
    pub lines: Vec<String>,
    /// A polygon zone, NAME:x1,y1,x2,y2,x3,y3,... (repeatable): entries, occupancy, dwell.
    #[arg(long = "zone", value_name = "NAME:x1,y1,...")]
    pub zones: Vec<String>,
    /// Write crossings and zone entries / exits as JSON lines.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Class names for events and summaries, in class-id order (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
}

impl CountingArgs {
    /// The counter for a stream at `fps`, forgetting tracks after `gone_after` frames.
    pub fn counter(&self, fps: f64, gone_after: u32) -> Result<Counter> {
        let lines = self.lines.iter().map(|l| Line::parse(l)).collect::<fieldkit_track::Result<Vec<_>>>()?;
        let zones = self.zones.iter().map(|z| Zone::parse(z)).collect::<fieldkit_track::Result<Vec<_>>>()?;
        let settings = CountSettings { fps, gone_after, ..CountSettings::default() };
        Ok(Counter::new(settings, lines, zones, self.classes.clone()))
    }
}

#[derive(Serialize)]
struct Summary {
    frames: u32,
    detections: usize,
    boxes: usize,
    tracks: u64,
    /// Mean frames per track id.
    mean_track_length: f64,
    ms_per_frame: f64,
    settings: ByteTrackConfig,
    /// Line counts, zone statistics and per-track summaries.
    counts: CountSummary,
}

pub fn run(a: TrackArgs) -> Result<i32> {
    let dets = Sequence::new(mot::read(&a.detections)?);
    let mut tracker = ByteTrack::new(a.tracker.config()).context("tracker settings")?;
    let cfg = tracker.config().clone();
    let mut counter = a.counting.counter(cfg.frame_rate as f64, cfg.max_time_lost() as u32)?;
    let mut events = Vec::new();
    let mut rows = Vec::new();
    let t0 = Instant::now();
    for f in 1..=dets.last_frame() {
        let frame: Vec<Detection> = dets
            .get(f)
            .iter()
            .map(|r| Detection {
                bbox: r.xyxy().map(|v| v as f32),
                class: r.class.max(0) as usize,
                score: r.conf as f32,
            })
            .collect();
        let tracks = tracker.update(&frame)?;
        events.extend(counter.update(f, &tracks));
        for t in tracks {
            let [x1, y1, x2, y2] = t.bbox.map(f64::from);
            rows.push(MotRow {
                frame: f,
                id: t.id as i64,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                conf: t.score as f64,
                class: t.class as i64,
                visibility: -1.0,
            });
        }
    }
    events.extend(counter.finish());
    let secs = t0.elapsed().as_secs_f64();
    mot::write(&a.out, &rows).with_context(|| format!("writing {}", a.out.display()))?;
    let tracks = rows.iter().map(|r| r.id).collect::<std::collections::HashSet<_>>().len() as u64;
    let summary = Summary {
        frames: dets.last_frame(),
        detections: dets.boxes(),
        boxes: rows.len(),
        tracks,
        mean_track_length: rows.len() as f64 / tracks.max(1) as f64,
        ms_per_frame: secs * 1e3 / dets.last_frame().max(1) as f64,
        settings: cfg,
        counts: counter.summary(),
    };
    println!(
        "{} frames, {} detections -> {} tracked boxes in {} tracks ({:.1} frames each), {:.3} ms/frame; tracks written to {}",
        summary.frames,
        summary.detections,
        summary.boxes,
        summary.tracks,
        summary.mean_track_length,
        summary.ms_per_frame,
        a.out.display()
    );
    for l in &summary.counts.lines {
        println!("line {}: {} in, {} out", l.name, l.in_, l.out);
    }
    for z in &summary.counts.zones {
        println!(
            "zone {}: {} entries, occupancy max {} mean {:.2}, mean visit {:.1} s",
            z.name, z.entries, z.occupancy_max, z.occupancy_mean, z.dwell_mean_s
        );
    }
    if let Some(path) = &a.counting.events {
        let mut text = String::new();
        for e in &events {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        fsio::write_atomic(path, text.as_bytes())?;
        println!("{} events written to {}", events.len(), path.display());
    }
    if let Some(path) = a.json {
        fsio::write_json(&path, &summary)?;
    }
    Ok(0)
}
