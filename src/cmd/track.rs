//! `fieldkit track`: stable ids for detections across frames (ByteTrack), with counting
//! lines and zones. Two inputs: a MOTChallenge detection file (the form in which trackers are
//! benchmarked; `fieldkit metrics mot` scores the result), or a video / stream / camera run
//! through a detector frame by frame (decoded by ffmpeg as a stream).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use fieldkit_core::detect::{Detection, NmsOptions};
use fieldkit_core::report::Outline;
use fieldkit_core::video::{CameraMode, FrameSource, ReadOptions, VideoInfo, VideoOut};
use fieldkit_core::{fsio, report};
use fieldkit_runtime::{LabeledDetection, Layout, Output, PredictOptions};
use fieldkit_track::{
    mot, ByteTrack, ByteTrackConfig, CountSettings, CountSummary, Counter, Event, Line, MotRow, Sequence, Zone,
};
use serde::Serialize;

use super::engine_args::EngineArgs;

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
    /// Largest cost (1 − IoU) of a second-round match, of a low-score box.
    #[arg(long, default_value_t = ByteTrackConfig::default().low_match_thresh)]
    pub low_match_thresh: f32,
    /// Frames (at 30 fps) a lost track waits to be found again.
    #[arg(long, default_value_t = ByteTrackConfig::default().track_buffer)]
    pub track_buffer: u32,
    /// Frame rate of the stream; scales --track-buffer (default: the video's; 30 for a
    /// detection file).
    #[arg(long)]
    pub frame_rate: Option<f32>,
    /// Match boxes only to tracks of the same class.
    #[arg(long)]
    pub class_aware: bool,
    /// Estimate the camera's motion from the detections (the shift most tracks agree on) and
    /// move every track by it before matching: for a drone or a robot that pans. `false`
    /// turns it off.
    #[arg(long, default_value_t = ByteTrackConfig::default().motion_compensation, action = clap::ArgAction::Set)]
    pub motion_compensation: bool,
}

impl TrackerArgs {
    /// NMS options for a detector feeding this tracker: boxes down to --low-thresh kept, for
    /// the tracker's second round.
    pub fn nms(&self, nms: NmsOptions) -> NmsOptions {
        NmsOptions { score_threshold: nms.score_threshold.min(self.low_thresh), ..nms }
    }

    /// The tracker's settings for a stream whose own rate is `stream_fps` (when known).
    pub fn config(&self, stream_fps: Option<f64>) -> ByteTrackConfig {
        let default = ByteTrackConfig::default().frame_rate;
        ByteTrackConfig {
            track_thresh: self.track_thresh,
            low_thresh: self.low_thresh,
            new_track_thresh: self.new_track_thresh,
            match_thresh: self.match_thresh,
            low_match_thresh: self.low_match_thresh,
            track_buffer: self.track_buffer,
            frame_rate: self.frame_rate.or(stream_fps.map(|f| f as f32)).unwrap_or(default),
            class_aware: self.class_aware,
            motion_compensation: self.motion_compensation,
            ..ByteTrackConfig::default()
        }
    }
}

#[derive(Args)]
pub struct TrackArgs {
    /// Detections, MOTChallenge det.txt (`frame,-1,x,y,w,h,score[,class]`; a class of -1 or
    /// none is class 0).
    #[arg(long, required_unless_present = "source", conflicts_with_all = ["source", "model"], requires = "out")]
    detections: Option<PathBuf>,
    /// A video file, an rtsp:// or http:// stream, or a V4L2 camera (/dev/videoN), decoded
    /// by ffmpeg frame by frame.
    #[arg(long, requires = "model")]
    source: Option<String>,
    /// Detector (ONNX with its card) run on every frame of --source; boxes scoring at least
    /// --low-thresh reach the tracker.
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --detections: the tracks, MOTChallenge result format
    /// (`frame,id,x,y,w,h,score,-1,-1,-1`). With --source: an annotated H.264 video (boxes
    /// with track ids, lines, zones).
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --source: also write the tracks in MOTChallenge result format.
    #[arg(long)]
    mot: Option<PathBuf>,
    #[command(flatten)]
    stream: StreamArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Write a summary (frames, tracks, boxes, time per frame, settings) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    counting: CountingArgs,
}

/// How a video source is read, for every command that reads one frame by frame.
#[derive(Args, Clone, Debug, Default)]
pub struct StreamArgs {
    /// Resample the video to this frame rate (a folder of images plays at it; default 10).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Deliver a video file (or image folder) at its own frame rate, as a camera would.
    #[arg(long)]
    pub realtime: bool,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// A V4L2 camera's pixel format: mjpeg (compressed; full resolution at 30 fps over USB 2)
    /// or yuyv (raw 4:2:2). Default: the driver's.
    #[arg(long, value_name = "mjpeg|yuyv")]
    pub camera_format: Option<String>,
    /// A V4L2 camera's frame size, WIDTHxHEIGHT (`v4l2-ctl --list-formats-ext` lists its modes).
    #[arg(long, value_name = "WxH")]
    pub camera_size: Option<String>,
    /// The frame rate asked of a V4L2 camera (--fps resamples after it).
    #[arg(long, value_name = "FPS")]
    pub camera_fps: Option<f64>,
}

impl StreamArgs {
    /// The flags as checked reading options.
    pub fn options(&self) -> Result<ReadOptions> {
        let camera = CameraMode {
            format: self.camera_format.as_deref().map(str::parse).transpose()?,
            size: self.camera_size.as_deref().map(CameraMode::parse_size).transpose()?,
            fps: self.camera_fps,
        };
        Ok(ReadOptions { fps: self.fps, realtime: self.realtime, camera, known: None })
    }

    /// A video file, stream or camera (through ffmpeg), or a folder of images.
    pub fn open(&self, source: &str) -> Result<FrameSource> {
        Ok(FrameSource::open(source, &self.options()?)?)
    }

    /// A live source again after a loss, in the shape it had (`ReadOptions::known`).
    pub fn reopen(&self, source: &str, known: VideoInfo) -> Result<FrameSource> {
        Ok(FrameSource::open(source, &ReadOptions { known: Some(known), ..self.options()? })?)
    }

    pub fn max_frames(&self) -> u64 {
        self.max_frames.unwrap_or(u64::MAX)
    }
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
    /// The counter for a stream at `fps`, forgetting tracks after `gone_after` frames; class
    /// names from --classes, else `card_classes` (the model's).
    pub fn counter(&self, fps: f64, gone_after: u32, card_classes: &[String]) -> Result<Counter> {
        let lines = self.lines.iter().map(|l| Line::parse(l)).collect::<fieldkit_track::Result<Vec<_>>>()?;
        let zones = self.zones.iter().map(|z| Zone::parse(z)).collect::<fieldkit_track::Result<Vec<_>>>()?;
        let settings = CountSettings { fps, gone_after, ..CountSettings::default() };
        let classes = if self.classes.is_empty() { card_classes.to_vec() } else { self.classes.clone() };
        Ok(Counter::new(settings, lines, zones, classes))
    }

    /// Writes the events as JSON lines to --events, when given.
    pub fn write_events(&self, events: &[Event]) -> Result<()> {
        let Some(path) = &self.events else { return Ok(()) };
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        fsio::write_atomic(path, text.as_bytes())?;
        println!("{} events written to {}", events.len(), path.display());
        Ok(())
    }

    /// The lines and zones as paths to draw on annotated frames.
    pub fn overlay(&self) -> Result<Vec<Outline>> {
        let px = |p: [f64; 2]| (p[0].round() as i32, p[1].round() as i32);
        let mut out = Vec::new();
        for l in &self.lines {
            let l = Line::parse(l)?;
            out.push(Outline { points: vec![px(l.a), px(l.b)], closed: false, label: l.name });
        }
        for z in &self.zones {
            let z = Zone::parse(z)?;
            out.push(Outline { points: z.polygon.iter().map(|&p| px(p)).collect(), closed: true, label: z.name });
        }
        Ok(out)
    }
}

#[derive(Serialize)]
struct Summary {
    source: String,
    frames: u32,
    fps: f64,
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

/// One frame's input to the tracker.
struct FrameIn {
    dets: Vec<Detection>,
    /// The decoded frame, for the annotated video.
    image: Option<image::RgbImage>,
}

/// Yields the next frame's detections (and picture), `None` at the end.
type NextFrame<'a> = Box<dyn FnMut() -> Result<Option<FrameIn>> + 'a>;

pub fn run(a: TrackArgs) -> Result<i32> {
    // Frames come from a detection file or a detector on a video; everything after is shared.
    let (label, fps, names, mut next_frame): (String, Option<f64>, Vec<String>, NextFrame<'_>) =
        match (&a.detections, &a.source, &a.model) {
            (Some(path), _, _) => {
                let dets = Sequence::new(mot::read(path)?);
                let last = dets.last_frame();
                let mut f = 0u32;
                let next = move || -> Result<Option<FrameIn>> {
                    f += 1;
                    if f > last {
                        return Ok(None);
                    }
                    let dets = dets
                        .get(f)
                        .iter()
                        .map(|r| Detection {
                            bbox: r.xyxy().map(|v| v as f32),
                            class: r.class.max(0) as usize,
                            score: r.conf as f32,
                        })
                        .collect();
                    Ok(Some(FrameIn { dets, image: None }))
                };
                (path.display().to_string(), None, Vec::new(), Box::new(next))
            }
            (None, Some(source), Some(model)) => {
                let engine = a.engine.load(model, Layout::default())?;
                let names = engine.card().classes.clone();
                let mut session = engine.session()?;
                let opts = PredictOptions {
                    top_k: 1,
                    nms: NmsOptions { score_threshold: a.tracker.low_thresh, ..NmsOptions::default() },
                };
                let mut reader = a.stream.open(source)?;
                let fps = reader.info().fps;
                let (max, keep) = (a.stream.max_frames(), a.out.is_some());
                let next = move || -> Result<Option<FrameIn>> {
                    let Some(frame) = reader.next_frame()? else { return Ok(None) };
                    if frame.index >= max {
                        return Ok(None);
                    }
                    let p = session.predict(&frame.image, &opts)?;
                    let Output::Detections(d) = p.output else {
                        anyhow::bail!("{}: not a detector (its card's decode gives no boxes)", model.display())
                    };
                    let dets = d.iter().map(LabeledDetection::detection).collect();
                    Ok(Some(FrameIn { dets, image: keep.then_some(frame.image) }))
                };
                (source.clone(), Some(fps), names, Box::new(next))
            }
            _ => anyhow::bail!("give --detections FILE, or --source SRC with --model M.onnx"),
        };
    let cfg = a.tracker.config(fps);
    let mut tracker = ByteTrack::new(cfg.clone()).context("tracker settings")?;
    let mut counter = a.counting.counter(cfg.frame_rate as f64, cfg.max_time_lost() as u32, &names)?;
    let overlay = a.counting.overlay()?;
    let mut video_out =
        if a.source.is_some() { a.out.as_deref().map(|p| VideoOut::new(p, cfg.frame_rate as f64)) } else { None };
    let mut events = Vec::new();
    let mut rows = Vec::new();
    let mut detections = 0;
    let t0 = Instant::now();
    let mut f = 0u32;
    while let Some(input) = next_frame()? {
        f += 1;
        detections += input.dets.len();
        let tracks = tracker.update(&input.dets)?;
        events.extend(counter.update(f, &tracks));
        if let (Some(out), Some(mut img)) = (&mut video_out, input.image) {
            let boxes: Vec<_> = tracks
                .iter()
                .map(|t| (t.bbox, format!("#{} {}", t.id, counter.class_name(t.class)), t.id as usize))
                .collect();
            report::draw_paths(&mut img, &overlay)?;
            report::annotate(&mut img, &boxes)?;
            out.write(&img)?;
        }
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
    let mot_out = if a.source.is_some() { a.mot.clone() } else { a.out.clone() };
    if let Some(path) = &mot_out {
        mot::write(path, &rows).with_context(|| format!("writing {}", path.display()))?;
    }
    let video_written = match video_out {
        Some(out) => out.finish()?,
        None => None,
    };
    let tracks = rows.iter().map(|r| r.id).collect::<std::collections::HashSet<_>>().len() as u64;
    let summary = Summary {
        source: label,
        frames: f,
        fps: cfg.frame_rate as f64,
        detections,
        boxes: rows.len(),
        tracks,
        mean_track_length: rows.len() as f64 / tracks.max(1) as f64,
        ms_per_frame: secs * 1e3 / f.max(1) as f64,
        settings: cfg,
        counts: counter.summary(),
    };
    println!(
        "{} frames, {} detections -> {} tracked boxes in {} tracks ({:.1} frames each), {:.3} ms/frame",
        summary.frames,
        summary.detections,
        summary.boxes,
        summary.tracks,
        summary.mean_track_length,
        summary.ms_per_frame,
    );
    for (what, path) in [("tracks", &mot_out), ("annotated video", &video_written)] {
        if let Some(p) = path {
            println!("{what} written to {}", p.display());
        }
    }
    for l in &summary.counts.lines {
        println!("line {}: {} in, {} out", l.name, l.in_, l.out);
    }
    for z in &summary.counts.zones {
        println!(
            "zone {}: {} entries, occupancy max {} mean {:.2}, mean visit {:.1} s",
            z.name, z.entries, z.occupancy_max, z.occupancy_mean, z.dwell_mean_s
        );
    }
    a.counting.write_events(&events)?;
    if let Some(path) = a.json {
        fsio::write_json(&path, &summary)?;
    }
    Ok(0)
}
