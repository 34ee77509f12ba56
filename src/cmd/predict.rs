//! `fieldkit predict`: run a model on images or folders, write annotated images and one JSON
//! line per image (the input `fieldkit bridge` and other tools read).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::detect::NmsOptions;
use fieldkit_core::{dataset, fsio, image_io, report};
use fieldkit_runtime::eval::parallel_map;
use fieldkit_runtime::{Engine, Output, PredictOptions};

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "avi", "mov", "mkv", "webm"];

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    /// Image files and/or folders of images.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    #[arg(long, default_value = "runs/predict")]
    out: PathBuf,
    /// Detector: minimum score.
    #[arg(long, default_value_t = 0.3)]
    conf: f32,
    /// Detector: NMS IoU threshold.
    #[arg(long, default_value_t = 0.45)]
    iou: f32,
    /// Detector: NMS across classes (one box per object whatever its class).
    #[arg(long)]
    agnostic: bool,
    #[arg(long, default_value_t = 300)]
    max_det: usize,
    /// Classifier: classes reported per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Write only the JSONL, no annotated images.
    #[arg(long)]
    no_images: bool,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn collect_sources(sources: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for s in sources {
        let ext = s.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            bail!("{}: video input is not supported yet; extract frames to a folder of images", s.display());
        }
        if s.is_dir() {
            images.extend(dataset::list_images(s)?);
        } else if s.is_file() {
            images.push(s.clone());
        } else {
            bail!("{}: no such file or folder", s.display());
        }
    }
    if images.is_empty() {
        bail!("no images (.jpg, .jpeg, .png) in {sources:?}");
    }
    Ok(images)
}

/// Output name for an annotated image; folders may hold equal stems, so the index keeps
/// names unique while staying recognisable.
fn annotated_name(i: usize, image: &Path) -> String {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{i:05}_{stem}.png")
}

pub fn run(a: PredictArgs) -> Result<i32> {
    let engine = Engine::load(&a.model)?;
    let images = collect_sources(&a.sources)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let opts = PredictOptions {
        top_k: a.top_k,
        nms: NmsOptions { score_threshold: a.conf, iou_threshold: a.iou, class_agnostic: a.agnostic, max_detections: a.max_det },
    };
    let t = std::time::Instant::now();
    let results = parallel_map(&engine, images.len(), a.workers, |s, i| {
        let mut img = image_io::read_rgb(&images[i])?;
        let p = s.predict(&img, &opts)?;
        if !a.no_images {
            if let Output::Detections(d) = &p.output {
                let boxes: Vec<_> = d.iter().map(|d| (d.bbox, format!("{} {:.2}", d.name, d.score), d.class)).collect();
                report::annotate(&mut img, &boxes)?;
            }
            image_io::save_png(&a.out.join(annotated_name(i, &images[i])), &img)?;
        }
        Ok(p)
    })?;
    let mut jsonl = Vec::new();
    for (i, (image, p)) in images.iter().zip(&results).enumerate() {
        let summary = match &p.output {
            Output::Detections(d) => format!("{} detections", d.len()),
            Output::Classes(c) => c.first().map(|c| format!("{} {:.3}", c.name, c.score)).unwrap_or_default(),
            Output::Features(f) => format!("{} features", f.len()),
        };
        println!("{}: {summary} ({:.1} ms)", image.display(), p.timing.inference_ms);
        let mut line = serde_json::json!({ "image": image, "index": i, "width": p.width, "height": p.height, "timing": p.timing });
        match &p.output {
            Output::Detections(d) => line["detections"] = serde_json::to_value(d)?,
            Output::Classes(c) => line["classes"] = serde_json::to_value(c)?,
            Output::Features(f) => line["features"] = serde_json::to_value(f)?,
        }
        writeln!(jsonl, "{line}")?;
    }
    let path = a.out.join("predictions.jsonl");
    fsio::write_atomic(&path, &jsonl)?;
    println!("{} images in {:.1} s; predictions in {}", images.len(), t.elapsed().as_secs_f64(), path.display());
    Ok(0)
}
