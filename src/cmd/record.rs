//! `fieldkit run --record DIR`: the field feeds the next fine-tune. Frames where the detector
//! was unsure (a box scored under `--record-below`) are kept as JPEG files, at most one per
//! `--record-every-s`, within a disk budget for the whole folder (earlier runs' files count),
//! with one line per frame in `record.jsonl` (source, frame, time, the boxes and scores).
//! `fieldkit label --images DIR` labels them with a teacher and draws the review sheets.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use fieldkit_core::fsio;
use fieldkit_runtime::LabeledDetection;
use image::RgbImage;
use serde::Serialize;

#[derive(Args, Clone, Debug)]
pub struct RecordArgs {
    /// Keep frames whose detections are uncertain as JPEG files in DIR, with record.jsonl:
    /// what `fieldkit label --images DIR` and its review sheets read.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// A frame is uncertain when one of its boxes scores under this.
    #[arg(long, default_value_t = 0.5, requires = "record")]
    record_below: f32,
    /// Disk budget of the --record folder, MB (files from earlier runs count); recording stops
    /// when it is spent.
    #[arg(long, default_value_t = 500, requires = "record")]
    record_budget_mb: u64,
    /// At most one recorded frame per this many seconds of stream (neighbours are near copies).
    #[arg(long, default_value_t = 1.0, requires = "record")]
    record_every_s: f64,
}

impl RecordArgs {
    pub fn wanted(&self) -> bool {
        self.record.is_some()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.record.as_deref()
    }

    /// The recorder, with the folder created and its present size counted.
    pub fn recorder(&self, source: &str) -> Result<Option<Recorder>> {
        let Some(dir) = &self.record else { return Ok(None) };
        if !(self.record_below > 0.0 && self.record_below <= 1.0) {
            anyhow::bail!("--record-below {}: a score between 0 and 1", self.record_below);
        }
        if !(self.record_every_s >= 0.0 && self.record_every_s.is_finite()) {
            anyhow::bail!("--record-every-s {}: seconds, 0 or more", self.record_every_s);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("--record {}", dir.display()))?;
        let used = folder_bytes(dir).with_context(|| format!("--record {}", dir.display()))?;
        // Runs never overwrite each other's frames: names start with the run's start time.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Some(Recorder {
            dir: dir.clone(),
            source: source.to_string(),
            run,
            below: self.record_below,
            budget: self.record_budget_mb * 1_000_000,
            every_s: self.record_every_s,
            used,
            last_s: None,
            stats: RecordStats::default(),
        }))
    }
}

fn folder_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let m = e?.metadata()?;
        if m.is_file() {
            n += m.len();
        }
    }
    Ok(n)
}

#[derive(Serialize, Default, Debug, Clone)]
pub struct RecordStats {
    /// Uncertain frames seen, kept, and left out (spacing or budget).
    pub uncertain: u64,
    pub kept: u64,
    pub over_budget: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    source: &'a str,
    frame: u64,
    time_s: f64,
    width: u32,
    height: u32,
    min_score: f32,
    detections: Vec<RecordedBox<'a>>,
}

#[derive(Serialize)]
struct RecordedBox<'a> {
    bbox: [f32; 4],
    name: &'a str,
    score: f32,
}

pub struct Recorder {
    dir: PathBuf,
    source: String,
    run: u64,
    below: f32,
    budget: u64,
    every_s: f64,
    used: u64,
    last_s: Option<f64>,
    pub stats: RecordStats,
}

impl Recorder {
    /// Keeps `image` when it is uncertain, spaced and within budget.
    pub fn offer(&mut self, frame: u64, time_s: f64, image: &RgbImage, dets: &[LabeledDetection]) -> Result<()> {
        let Some(min_score) = dets.iter().map(|d| d.score).reduce(f32::min).filter(|&s| s < self.below) else {
            return Ok(());
        };
        self.stats.uncertain += 1;
        if self.last_s.is_some_and(|t| time_s - t < self.every_s) {
            return Ok(());
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92)
            .encode_image(image)
            .with_context(|| format!("--record: encoding frame {frame}"))?;
        if self.used + jpeg.len() as u64 > self.budget {
            if self.stats.over_budget == 0 {
                eprintln!(
                    "--record {}: the {} MB budget is spent; no more frames are kept",
                    self.dir.display(),
                    self.budget / 1_000_000
                );
            }
            self.stats.over_budget += 1;
            return Ok(());
        }
        let file = format!("{}_{frame:07}.jpg", self.run);
        fsio::write_atomic(&self.dir.join(&file), &jpeg)?;
        let line = Line {
            file: &file,
            source: &self.source,
            frame,
            time_s,
            width: image.width(),
            height: image.height(),
            min_score,
            detections: dets.iter().map(|d| RecordedBox { bbox: d.bbox, name: &d.name, score: d.score }).collect(),
        };
        let mut text = serde_json::to_string(&line)?;
        text.push('\n');
        let index = self.dir.join("record.jsonl");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("appending to {}", index.display()))?;
        self.used += jpeg.len() as u64 + text.len() as u64;
        self.stats.kept += 1;
        self.stats.bytes += jpeg.len() as u64;
        self.last_s = Some(time_s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32) -> LabeledDetection {
        LabeledDetection { bbox: [1.0, 1.0, 5.0, 5.0], class: 0, name: "weed".into(), score }
    }

    #[test]
    fn keeps_uncertain_frames_spaced_and_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let args = RecordArgs {
            record: Some(dir.path().join("rec")),
            record_below: 0.5,
            record_budget_mb: 1,
            record_every_s: 1.0,
        };
        let mut r = args.recorder("cam").unwrap().unwrap();
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 7]));
        r.offer(0, 0.0, &img, &[det(0.9)]).unwrap(); // sure: not kept
        r.offer(1, 0.1, &img, &[det(0.9), det(0.3)]).unwrap(); // kept
        r.offer(2, 0.5, &img, &[det(0.2)]).unwrap(); // too soon
        r.offer(3, 1.2, &img, &[det(0.4)]).unwrap(); // kept
        r.offer(4, 2.5, &img, &[]).unwrap(); // nothing seen: not uncertain
        assert_eq!((r.stats.uncertain, r.stats.kept, r.stats.over_budget), (3, 2, 0));
        let index = std::fs::read_to_string(dir.path().join("rec/record.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = index.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["frame"], 1);
        assert!((lines[0]["min_score"].as_f64().unwrap() - 0.3).abs() < 1e-6, "{}", lines[0]);
        let first = image::open(dir.path().join("rec").join(lines[0]["file"].as_str().unwrap())).unwrap();
        assert_eq!((first.width(), first.height()), (64, 48));
        // A budget already spent by earlier files keeps nothing more.
        std::fs::write(dir.path().join("rec/old.bin"), vec![0u8; 1_000_000]).unwrap();
        let mut r = args.recorder("cam").unwrap().unwrap();
        r.offer(9, 9.0, &img, &[det(0.1)]).unwrap();
        assert_eq!((r.stats.kept, r.stats.over_budget), (0, 1));
        let bad = RecordArgs { record_below: 1.5, ..args };
        assert!(bad.recorder("cam").err().unwrap().to_string().contains("--record-below 1.5"));
    }
}
