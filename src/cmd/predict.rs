//! `fieldkit predict`: run a model on images, folders or video files, write annotated images
//! (and an annotated video) and one JSON line per image or frame (the input `fieldkit bridge`
//! and other tools read). Video frames are decoded by `ffmpeg` when it is on PATH: the binary
//! itself carries no video codecs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::detect::Detection;
use fieldkit_core::{dataset, fsio, image_io, report};
use fieldkit_runtime::parallel_map;
use fieldkit_runtime::{Output, PredictOptions};
use fieldkit_track::ByteTrack;

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

/// One input: an image file, or a frame extracted from a video.
struct Item {
    path: PathBuf,
    video: Option<Frame>,
}

struct Frame {
    video: PathBuf,
    /// 0-based frame index among the extracted frames.
    index: usize,
    time_s: f64,
    /// Frames per second of the extracted sequence.
    rate: f64,
}

/// The video's frame rate from ffprobe (`30000/1001` -> 29.97).
fn probe_fps(video: &Path) -> Result<f64> {
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate", "-of", "csv=p=0"])
        .arg(video)
        .output()
        .with_context(|| "running ffprobe (installed with ffmpeg)")?;
    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let fps = match text.split_once('/') {
        Some((a, b)) => a.parse::<f64>().ok().zip(b.parse::<f64>().ok()).map(|(a, b)| a / b),
        None => text.parse().ok(),
    };
    match fps {
        Some(f) if o.status.success() && f.is_finite() && f > 0.0 => Ok(f),
        _ => bail!(
            "{}: ffprobe found no video stream (it said {:?}{})",
            video.display(),
            text,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// Decodes `video` into PNG frames under `dir` with ffmpeg, at `fps` when given.
fn extract_frames(video: &Path, fps: Option<f64>, dir: &Path) -> Result<Vec<Item>> {
    let have =
        std::process::Command::new("ffmpeg").arg("-version").output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        bail!(
            "{}: video input needs ffmpeg on PATH (apt install ffmpeg), or extract the frames to a folder of images",
            video.display()
        );
    }
    let rate = match fps {
        Some(f) if f > 0.0 && f.is_finite() => f,
        Some(f) => bail!("--fps {f} must be > 0"),
        None => probe_fps(video)?,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"]).arg(video);
    if fps.is_some() {
        cmd.args(["-vf", &format!("fps={rate}")]);
    }
    let o = cmd.arg(dir.join("frame_%06d.png")).output().context("running ffmpeg")?;
    if !o.status.success() {
        bail!("{}: ffmpeg could not decode it: {}", video.display(), String::from_utf8_lossy(&o.stderr).trim());
    }
    let frames = dataset::list_images(dir)?;
    if frames.is_empty() {
        bail!("{}: ffmpeg decoded no frames", video.display());
    }
    Ok(frames
        .into_iter()
        .enumerate()
        .map(|(index, path)| Item {
            path,
            video: Some(Frame { video: video.to_path_buf(), index, time_s: index as f64 / rate, rate }),
        })
        .collect())
}

fn collect_sources(sources: &[PathBuf], fps: Option<f64>, frames_dir: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (k, s) in sources.iter().enumerate() {
        let ext = s.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        if VIDEO_EXTENSIONS.contains(&ext.as_str()) && s.is_file() {
            items.extend(extract_frames(s, fps, &frames_dir.join(format!("{k:02}")))?);
        } else if s.is_dir() {
            items.extend(dataset::list_images(s)?.into_iter().map(|path| Item { path, video: None }));
        } else if s.is_file() {
            items.push(Item { path: s.clone(), video: None });
        } else {
            bail!("{}: no such file or folder", s.display());
        }
    }
    if items.is_empty() {
        bail!("no images (.jpg, .jpeg, .png) in {sources:?}");
    }
    Ok(items)
}

/// Encodes the annotated frames of one video as `out/<stem>.annotated.mp4` (H.264).
fn encode_video(frames: &[PathBuf], rate: f64, out: &Path) -> Result<()> {
    let list = out.with_extension("frames.txt");
    // ffmpeg resolves relative names against the list's folder: give it absolute ones.
    let mut body = String::new();
    for f in frames {
        let abs = std::path::absolute(f).with_context(|| format!("resolving {}", f.display()))?;
        body.push_str(&format!("file '{}'\nduration {}\n", abs.display(), 1.0 / rate));
    }
    fsio::write_atomic(&list, body.as_bytes())?;
    let o = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "concat", "-safe", "0", "-i"])
        .arg(&list)
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
        .arg(out)
        .output()
        .context("running ffmpeg")?;
    let _ = std::fs::remove_file(&list);
    if !o.status.success() {
        bail!("ffmpeg could not encode {}: {}", out.display(), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// Output name for an annotated image; folders may hold equal stems, so the index keeps
/// names unique while staying recognisable.
fn annotated_name(i: usize, image: &Path) -> String {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{i:05}_{stem}.png")
}

pub fn run(a: PredictArgs) -> Result<i32> {
    let engine = a.run.load(&a.model)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let frames_dir = tempfile_dir(&a.out)?;
    let items = collect_sources(&a.sources, a.fps, &frames_dir)?;
    let mut opts = PredictOptions { top_k: a.top_k, nms: a.nms.options()? };
    if a.track {
        // The tracker's second round wants the low-score boxes too.
        opts.nms.score_threshold = opts.nms.score_threshold.min(a.tracker.low_thresh);
    }
    let t = std::time::Instant::now();
    let results = parallel_map(&engine, items.len(), a.run.workers, |s, i| {
        let mut img = image_io::read_rgb(&items[i].path)?;
        let p = s.predict(&img, &opts)?;
        // Tracked frames are drawn once their ids are known, below.
        let tracked_frame = a.track && items[i].video.is_some();
        if !a.no_images && !tracked_frame {
            if let Output::Detections(d) = &p.output {
                let boxes: Vec<_> = d.iter().map(|d| (d.bbox, format!("{} {:.2}", d.name, d.score), d.class)).collect();
                report::annotate(&mut img, &boxes)?;
            }
            image_io::save_png(&a.out.join(annotated_name(i, &items[i].path)), &img)?;
        }
        Ok(p)
    })?;
    let track_ids = if a.track { track_videos(&a, &items, &results)? } else { vec![None; items.len()] };
    let mut jsonl = Vec::new();
    for (i, (item, p)) in items.iter().zip(&results).enumerate() {
        let summary = match &p.output {
            Output::Detections(d) => format!("{} detections", d.len()),
            Output::Classes(c) => c.first().map(|c| format!("{} {:.3}", c.name, c.score)).unwrap_or_default(),
            Output::Features(f) => format!("{} features", f.len()),
        };
        let mut line = serde_json::json!({ "image": item.path, "index": i, "width": p.width, "height": p.height, "timing": p.timing });
        match &item.video {
            Some(f) => {
                println!(
                    "{} frame {} ({:.2} s): {summary} ({:.1} ms)",
                    f.video.display(),
                    f.index,
                    f.time_s,
                    p.timing.inference_ms
                );
                // capture_ms lets `fieldkit bridge` replay the video's own timing.
                line["video"] = serde_json::json!(f.video);
                line["frame"] = serde_json::json!(f.index);
                line["time_s"] = serde_json::json!(f.time_s);
                line["capture_ms"] = serde_json::json!((f.time_s * 1e3).round() as u64);
                line["image"] = serde_json::json!(format!("{}#frame={}", f.video.display(), f.index));
            }
            None => println!("{}: {summary} ({:.1} ms)", item.path.display(), p.timing.inference_ms),
        }
        match &p.output {
            Output::Detections(d) => {
                line["detections"] = serde_json::to_value(d)?;
                if let Some(ids) = &track_ids[i] {
                    for (k, id) in ids.iter().enumerate() {
                        if let Some(id) = id {
                            line["detections"][k]["track_id"] = serde_json::json!(id);
                        }
                    }
                }
            }
            Output::Classes(c) => line["classes"] = serde_json::to_value(c)?,
            Output::Features(f) => line["features"] = serde_json::to_value(f)?,
        }
        writeln!(jsonl, "{line}")?;
    }
    let path = a.out.join("predictions.jsonl");
    fsio::write_atomic(&path, &jsonl)?;
    // One annotated video per input video, from its annotated frames.
    if !a.no_images {
        let mut videos: Vec<(&Path, Vec<PathBuf>, f64)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(f) = &item.video {
                let png = a.out.join(annotated_name(i, &item.path));
                match videos.last_mut() {
                    Some((v, frames, _)) if *v == f.video.as_path() => frames.push(png),
                    _ => videos.push((f.video.as_path(), vec![png], f.rate)),
                }
            }
        }
        for (video, frames, rate) in videos {
            let stem = video.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "video".into());
            let mp4 = a.out.join(format!("{stem}.annotated.mp4"));
            match encode_video(&frames, rate, &mp4) {
                Ok(()) => println!("annotated video {}", mp4.display()),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&frames_dir);
    println!("{} images in {:.1} s; predictions in {}", items.len(), t.elapsed().as_secs_f64(), path.display());
    Ok(0)
}

/// `--track`: each video's frames in order through a tracker of its own, at the video's frame
/// rate. Per item, the track id of each detection (`None` for images and untracked boxes). With
/// annotated images, the frames are drawn here with their ids.
fn track_videos(
    a: &PredictArgs,
    items: &[Item],
    results: &[fieldkit_runtime::Prediction],
) -> Result<Vec<Option<Vec<Option<u64>>>>> {
    let mut out = vec![None; items.len()];
    let mut current: Option<(&Path, ByteTrack)> = None;
    for (i, (item, p)) in items.iter().zip(results).enumerate() {
        let (Some(f), Output::Detections(d)) = (&item.video, &p.output) else { continue };
        if current.as_ref().map(|(v, _)| *v) != Some(f.video.as_path()) {
            let tracker = ByteTrack::new(a.tracker.config(Some(f.rate))).context("tracker settings")?;
            current = Some((f.video.as_path(), tracker));
        }
        let tracker = &mut current.as_mut().expect("set above").1;
        let dets: Vec<Detection> =
            d.iter().map(|d| Detection { bbox: d.bbox, class: d.class, score: d.score }).collect();
        let mut ids = vec![None; d.len()];
        for t in tracker.update(&dets)? {
            ids[t.detection] = Some(t.id);
        }
        if !a.no_images {
            let mut img = image_io::read_rgb(&item.path)?;
            // Tracked boxes with their ids; untracked ones only if they pass --conf.
            let boxes: Vec<_> = d
                .iter()
                .zip(&ids)
                .filter_map(|(d, id)| match id {
                    Some(id) => Some((d.bbox, format!("#{id} {} {:.2}", d.name, d.score), *id as usize)),
                    None => (d.score >= a.nms.conf).then(|| (d.bbox, format!("{} {:.2}", d.name, d.score), d.class)),
                })
                .collect();
            report::annotate(&mut img, &boxes)?;
            image_io::save_png(&a.out.join(annotated_name(i, &item.path)), &img)?;
        }
        out[i] = Some(ids);
    }
    Ok(out)
}

/// A scratch folder for extracted video frames inside the output folder (same disk, removed
/// at the end).
fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    Ok(out.join(format!(".frames-{}", std::process::id())))
}
