//! `fieldkit predict`: run a model on images, folders or video files, write annotated images
//! (and an annotated video) and one JSON line per image or frame (the input `fieldkit bridge`
//! and other tools read). Videos stream through `ffmpeg` (on PATH; the binary carries no video
//! codecs) a few frames at a time: no frame files on disk, memory bounded by the chunk.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::video::{ReadOptions, VideoOut, VideoReader};
use fieldkit_core::{dataset, fsio, image_io, report};
use fieldkit_runtime::parallel_map;
use fieldkit_runtime::{Engine, LabeledDetection, Output, PredictOptions, Prediction};
use fieldkit_track::{ids_by_detection, ByteTrack};

use super::engine_args::{NmsArgs, RunArgs};
use super::track::TrackerArgs;

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "avi", "mov", "mkv", "webm"];

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    /// Image files, folders of images, and/or video files (.mp4, .avi, .mov, .mkv, .webm; needs ffmpeg).
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// Video: frames per second to sample (default: every frame).
    #[arg(long)]
    fps: Option<f64>,
    #[arg(long, default_value = "runs/predict")]
    out: PathBuf,
    #[command(flatten)]
    nms: NmsArgs,
    /// Classifier: classes reported per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Write only the JSONL, no annotated images.
    #[arg(long)]
    no_images: bool,
    /// Video: follow the detections across each video's frames (ByteTrack) and give each a
    /// `track_id`; boxes down to --low-thresh reach the tracker.
    #[arg(long)]
    track: bool,
    #[command(flatten)]
    tracker: TrackerArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// The inputs in the order given: runs of images, and videos.
enum Source {
    Images(Vec<PathBuf>),
    Video(PathBuf),
}

fn collect_sources(sources: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out: Vec<Source> = Vec::new();
    let push_images = |out: &mut Vec<Source>, more: Vec<PathBuf>| match out.last_mut() {
        Some(Source::Images(v)) => v.extend(more),
        _ => out.push(Source::Images(more)),
    };
    for s in sources {
        let ext = s.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        if VIDEO_EXTENSIONS.contains(&ext.as_str()) && s.is_file() {
            out.push(Source::Video(s.clone()));
        } else if s.is_dir() {
            push_images(&mut out, dataset::list_images(s)?);
        } else if s.is_file() {
            push_images(&mut out, vec![s.clone()]);
        } else {
            bail!("{}: no such file or folder", s.display());
        }
    }
    if out.iter().all(|s| matches!(s, Source::Images(v) if v.is_empty())) {
        bail!("no images (.jpg, .jpeg, .png) in {sources:?}");
    }
    Ok(out)
}

/// Output name for an annotated image; folders may hold equal stems, so the index keeps
/// names unique while staying recognisable.
fn annotated_name(i: usize, image: &Path) -> String {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{i:05}_{stem}.png")
}

/// Where a prediction came from, for its JSON line.
enum Origin<'a> {
    Image(&'a Path),
    Frame { video: &'a Path, index: u64, time_s: f64 },
}

/// Appends one prediction's JSON line (and prints its summary); `ids` are the track ids of
/// its detections under `--track`, `mask` a segmenter's class-map PNG.
fn emit(
    jsonl: &mut Vec<u8>,
    index: usize,
    origin: Origin,
    p: &Prediction,
    ids: Option<&[Option<u64>]>,
    mask: Option<&Path>,
) -> Result<()> {
    let summary = match &p.output {
        Output::Detections(d) => format!("{} detections", d.len()),
        Output::Classes(c) => c.first().map(|c| format!("{} {:.3}", c.name, c.score)).unwrap_or_default(),
        Output::Features(f) => format!("{} features", f.len()),
        Output::Segmentation(m) => m
            .coverage
            .iter()
            .skip(1)
            .map(|c| format!("{} {:.1} %", c.name, 100.0 * c.fraction))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut line = serde_json::json!({ "index": index, "width": p.width, "height": p.height, "timing": p.timing });
    match origin {
        Origin::Frame { video, index: frame, time_s } => {
            println!("{} frame {frame} ({time_s:.2} s): {summary} ({:.1} ms)", video.display(), p.timing.inference_ms);
            // capture_ms lets `fieldkit bridge` replay the video's own timing.
            line["image"] = serde_json::json!(format!("{}#frame={frame}", video.display()));
            line["video"] = serde_json::json!(video);
            line["frame"] = serde_json::json!(frame);
            line["time_s"] = serde_json::json!(time_s);
            line["capture_ms"] = serde_json::json!((time_s * 1e3).round() as u64);
        }
        Origin::Image(path) => {
            println!("{}: {summary} ({:.1} ms)", path.display(), p.timing.inference_ms);
            line["image"] = serde_json::json!(path);
        }
    }
    match &p.output {
        Output::Detections(d) => {
            line["detections"] = serde_json::to_value(d)?;
            for (k, id) in ids.unwrap_or(&[]).iter().enumerate() {
                if let Some(id) = id {
                    line["detections"][k]["track_id"] = serde_json::json!(id);
                }
            }
        }
        Output::Classes(c) => line["classes"] = serde_json::to_value(c)?,
        Output::Features(f) => line["features"] = serde_json::to_value(f)?,
        Output::Segmentation(m) => {
            line["coverage"] = serde_json::to_value(&m.coverage)?;
            if let Some(mask) = mask {
                line["mask"] = serde_json::json!(mask);
            }
        }
    }
    writeln!(jsonl, "{line}")?;
    Ok(())
}

/// Boxes to draw: detections with their class and score, `#id` first when tracked; untracked
/// boxes under --conf (kept only for the tracker) are not drawn.
pub(crate) fn boxes_to_draw(p: &Prediction, ids: Option<&[Option<u64>]>, conf: f32) -> Vec<([f32; 4], String, usize)> {
    let Output::Detections(d) = &p.output else { return Vec::new() };
    d.iter()
        .enumerate()
        .filter_map(|(k, d)| match ids.and_then(|ids| ids[k]) {
            Some(id) => Some((d.bbox, format!("#{id} {} {:.2}", d.name, d.score), id as usize)),
            None => (d.score >= conf).then(|| (d.bbox, format!("{} {:.2}", d.name, d.score), d.class)),
        })
        .collect()
}

pub fn run(a: PredictArgs) -> Result<i32> {
    let engine = a.run.load(&a.model)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let sources = collect_sources(&a.sources)?;
    let nms = a.nms.options()?;
    let opts = PredictOptions { top_k: a.top_k, nms: if a.track { a.tracker.nms(nms) } else { nms } };
    let t = std::time::Instant::now();
    let mut jsonl = Vec::new();
    let mut index = 0;
    for source in &sources {
        match source {
            Source::Images(paths) => {
                let results = parallel_map(&engine, paths.len(), a.run.workers, |s, i| {
                    let mut img = image_io::read_rgb(&paths[i])?;
                    let p = s.predict(&img, &opts)?;
                    if let (Output::Segmentation(m), false) = (&p.output, a.no_images) {
                        report::overlay_classes(&mut img, &m.ids)?;
                    }
                    if !a.no_images {
                        report::annotate(&mut img, &boxes_to_draw(&p, None, a.nms.conf))?;
                        image_io::save_png(&a.out.join(annotated_name(index + i, &paths[i])), &img)?;
                    }
                    Ok(p)
                })?;
                for (path, p) in paths.iter().zip(&results) {
                    // A segmenter's class map is the prediction: its ids as a grey PNG (0, 1,
                    // 2 ...), written with or without images.
                    let mask = match &p.output {
                        Output::Segmentation(m) => {
                            let mask = a.out.join(annotated_name(index, path).replace(".png", ".mask.png"));
                            let grey = image::GrayImage::from_raw(m.width, m.height, m.ids.clone())
                                .context("a class map of the wrong size")?;
                            image_io::save_png(&mask, &grey)?;
                            Some(mask)
                        }
                        _ => None,
                    };
                    emit(&mut jsonl, index, Origin::Image(path), p, None, mask.as_deref())?;
                    index += 1;
                }
            }
            Source::Video(video) => index += predict_video(&a, &engine, &opts, video, index, &mut jsonl)?,
        }
    }
    let path = a.out.join("predictions.jsonl");
    fsio::write_atomic(&path, &jsonl)?;
    println!("{index} images in {:.1} s; predictions in {}", t.elapsed().as_secs_f64(), path.display());
    Ok(0)
}

/// One video, streamed: chunks of frames predicted in parallel, then, in frame order, tracked
/// (`--track`), drawn into `<stem>.annotated.mp4` and written as JSON lines. Returns the
/// frame count.
fn predict_video(
    a: &PredictArgs,
    engine: &Engine,
    opts: &PredictOptions,
    video: &Path,
    first_index: usize,
    jsonl: &mut Vec<u8>,
) -> Result<usize> {
    let mut reader = VideoReader::open(&video.to_string_lossy(), &ReadOptions { fps: a.fps, ..Default::default() })?;
    let rate = reader.info().fps;
    let mut tracker =
        if a.track { Some(ByteTrack::new(a.tracker.config(Some(rate))).context("tracker settings")?) } else { None };
    let stem = video.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "video".into());
    let mp4 = a.out.join(format!("{stem}.annotated.mp4"));
    let mut writer = Some(VideoOut::new(&mp4, rate));
    // An encoding failure costs the annotated video (the writer is dropped), not the
    // predictions.
    let chunk = (4 * a.run.workers).max(4);
    let mut n = 0;
    loop {
        let mut frames = Vec::with_capacity(chunk);
        while frames.len() < chunk {
            match reader.next_frame()? {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        if frames.is_empty() {
            break;
        }
        let preds = parallel_map(engine, frames.len(), a.run.workers, |s, i| s.predict(&frames[i].image, opts))?;
        for (frame, p) in frames.into_iter().zip(preds) {
            let ids: Option<Vec<Option<u64>>> = match (&mut tracker, &p.output) {
                (Some(t), Output::Detections(d)) => {
                    let dets: Vec<_> = d.iter().map(LabeledDetection::detection).collect();
                    Some(ids_by_detection(&t.update(&dets)?, d.len()))
                }
                _ => None,
            };
            if let (false, Some(w)) = (a.no_images, &mut writer) {
                let mut img = frame.image;
                report::annotate(&mut img, &boxes_to_draw(&p, ids.as_deref(), a.nms.conf))?;
                if let Err(e) = w.write(&img) {
                    eprintln!("warning: {e}");
                    writer = None;
                }
            }
            let origin = Origin::Frame { video, index: frame.index, time_s: frame.time_s };
            emit(jsonl, first_index + n, origin, &p, ids.as_deref(), None)?;
            n += 1;
        }
    }
    if n == 0 {
        bail!("{}: ffmpeg decoded no frames", video.display());
    }
    match writer.map(VideoOut::finish) {
        Some(Ok(Some(path))) => println!("annotated video {}", path.display()),
        Some(Err(e)) => eprintln!("warning: {e}"),
        _ => {}
    }
    Ok(n)
}
