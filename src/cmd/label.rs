//! `fieldkit label`: auto-labelling with a teacher detector. A user with only photos (say,
//! cattle pictures) runs a detector that knows the animals (the shared COCO YOLOX-nano) and
//! gets a YOLO dataset — images, txt labels, data.yaml, COCO JSON — to train a student on,
//! plus contact sheets to review the teacher's boxes before trusting them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fieldkit_core::card::Task;
use fieldkit_core::dataset::{self, YoloDataset};
use fieldkit_core::detect::{nms, Detection, NmsOptions};
use fieldkit_core::{fsio, image_io, report};
use fieldkit_runtime::parallel_map;
use fieldkit_runtime::{LabeledDetection, Output, PredictOptions};
use image::RgbImage;
use serde::Serialize;

use super::engine_args::{NmsArgs, RunArgs};

#[derive(Args)]
// The shared NMS flags, with what they mean when the boxes become a dataset's labels.
#[command(mut_arg("conf", |a| a.default_value("0.4").help("Minimum teacher score for a box to become a label")))]
#[command(mut_arg("agnostic", |a| a.help(
    "One box per object across the kept classes (a cow that the teacher also calls a horse). Classes are kept (and \
     merged) before NMS, so a dropped class never suppresses a kept one"
)))]
pub struct LabelArgs {
    /// Teacher detector (ONNX + card), e.g. the shared YOLOX-nano COCO model.
    #[arg(long)]
    teacher: PathBuf,
    /// Folder of images to label (searched recursively).
    #[arg(long)]
    images: PathBuf,
    /// Teacher classes to keep, in the order of the new dataset's ids (default: all of them).
    /// `TEACHER=NEW` renames or merges: `cow,horse=cow` labels the teacher's horses as cows
    /// too (a photo set of cattle only, where the teacher sometimes says horse).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Output dataset folder (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    nms: NmsArgs,
    /// Boxes under this score (but above --conf) are marked for review on the sheets.
    #[arg(long, default_value_t = 0.6)]
    review_below: f32,
    /// Fraction of the labelled images put in the val split (by a hash of the file name) when
    /// the images folder has no split folders of its own (`train/`, `val/` or `valid/`,
    /// `test/` at its top level are kept as they are: a val split stays a val split).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Keep images where the teacher found nothing as background images (empty label files);
    /// by default they are left out and listed in skipped.txt (often a miss, not a background).
    #[arg(long)]
    keep_empty: bool,
    /// Thumbnails per contact sheet.
    #[arg(long, default_value_t = 48)]
    sheet_size: usize,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Serialize)]
struct Summary {
    teacher: PathBuf,
    images: usize,
    labelled: usize,
    background: usize,
    skipped: usize,
    boxes: BTreeMap<String, usize>,
    /// Boxes under --review-below.
    uncertain_boxes: usize,
    splits: BTreeMap<String, usize>,
    conf: f32,
    sheets: Vec<PathBuf>,
    data_yaml: PathBuf,
}

/// Stable split choice from the file name (FNV-1a), so re-running puts images in the same split.
fn is_val(name: &str, fraction: f64) -> bool {
    (dataset::photos::name_hash(name, 0) % 10_000) as f64 / 10_000.0 < fraction
}

/// The new dataset's class names and, per teacher class, its new id: `--classes` items are
/// `teacher` or `teacher=new`; new ids follow the first appearance of each new name.
fn class_map(items: &[String], teacher: &[String]) -> Result<(Vec<String>, Vec<Option<usize>>)> {
    let mut names: Vec<String> = Vec::new();
    let mut map = vec![None; teacher.len()];
    for item in items {
        let (from, to) = match item.split_once('=') {
            Some((f, t)) => (f.trim(), t.trim()),
            None => (item.trim(), item.trim()),
        };
        if from.is_empty() || to.is_empty() {
            bail!("--classes: '{item}' must be a class name or TEACHER=NEW");
        }
        let t = teacher.iter().position(|c| c == from).ok_or_else(|| {
            anyhow::anyhow!(
                "--classes: '{from}' is not a class of the teacher (it knows {} classes, e.g. {:?})",
                teacher.len(),
                &teacher[..teacher.len().min(10)]
            )
        })?;
        if map[t].is_some() {
            bail!("--classes: '{from}' is listed twice");
        }
        let new = match names.iter().position(|n| n == to) {
            Some(i) => i,
            None => {
                names.push(to.to_string());
                names.len() - 1
            }
        };
        map[t] = Some(new);
    }
    Ok((names, map))
}

/// The split an image keeps from its folder: the first component of its path under `root`
/// when that names a split (`valid` is written `val`).
fn folder_split(root: &Path, image: &Path) -> Option<&'static str> {
    let first = image.strip_prefix(root).ok()?.components().next()?;
    match first.as_os_str().to_str()?.to_ascii_lowercase().as_str() {
        "train" => Some("train"),
        "val" | "valid" | "validation" => Some("val"),
        "test" => Some("test"),
        _ => None,
    }
}

/// YOLO label rows (`class cx cy w h`, normalised) for boxes in a `w`×`h` image.
fn yolo_rows(dets: &[(usize, LabeledDetection)], w: u32, h: u32) -> String {
    let (wf, hf) = (w as f32, h as f32);
    dets.iter()
        .map(|(c, d)| {
            let [x1, y1, x2, y2] = d.bbox;
            format!(
                "{c} {:.6} {:.6} {:.6} {:.6}\n",
                (x1 + x2) / 2.0 / wf,
                (y1 + y2) / 2.0 / hf,
                (x2 - x1) / wf,
                (y2 - y1) / hf
            )
        })
        .collect()
}

/// Contact sheets: thumbnails with their boxes (uncertain ones marked "?"), most doubtful
/// images first, `per_sheet` per PNG.
fn write_sheets(
    out: &Path,
    items: &[(PathBuf, Vec<(usize, LabeledDetection)>)],
    names: &[String],
    review_below: f32,
    per_sheet: usize,
) -> Result<Vec<PathBuf>> {
    const THUMB: u32 = 192;
    let cols = 8usize;
    let mut order: Vec<usize> = (0..items.len()).collect();
    let min_score = |i: usize| items[i].1.iter().map(|(_, d)| d.score).fold(f32::INFINITY, f32::min);
    order
        .sort_by(|&a, &b| min_score(a).partial_cmp(&min_score(b)).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    let mut sheets = Vec::new();
    for (k, chunk) in order.chunks(per_sheet.max(1)).enumerate() {
        let rows = chunk.len().div_ceil(cols) as u32;
        let mut sheet = RgbImage::from_pixel(cols as u32 * THUMB, rows * THUMB, image::Rgb([32, 32, 32]));
        for (j, &i) in chunk.iter().enumerate() {
            let (path, dets) = &items[i];
            let img = image_io::read_rgb(path)?;
            let s = THUMB as f32 / img.width().max(img.height()) as f32;
            let (tw, th) = (((img.width() as f32 * s) as u32).max(1), ((img.height() as f32 * s) as u32).max(1));
            let mut t = fieldkit_core::preprocess::resize_rgb(&img, tw, th, true)?;
            let boxes: Vec<_> = dets
                .iter()
                .map(|(c, d)| {
                    let mark = if d.score < review_below { "?" } else { "" };
                    (d.bbox.map(|v| v * s), format!("{}{mark} {:.2}", names[*c], d.score), *c)
                })
                .collect();
            report::annotate(&mut t, &boxes)?;
            let (x, y) = ((j % cols) as i64 * THUMB as i64, (j / cols) as i64 * THUMB as i64);
            image::imageops::replace(&mut sheet, &t, x, y);
        }
        let p = out.join(format!("review/sheet_{k:03}.png"));
        image_io::save_png(&p, &sheet)?;
        sheets.push(p);
    }
    Ok(sheets)
}

pub fn run(a: LabelArgs) -> Result<i32> {
    let nms_opts = a.nms.options()?;
    let engine = a.run.load(&a.teacher)?;
    let card = engine.card().clone();
    if card.task != Task::Detect {
        bail!("{}: the teacher must be a detector (its card says {:?})", a.teacher.display(), card.task);
    }
    let (keep, map) = class_map(a.classes.as_ref().unwrap_or(&card.classes), &card.classes)
        .with_context(|| format!("teacher {}", a.teacher.display()))?;
    if !(0.0..1.0).contains(&a.val_fraction) {
        bail!("--val-fraction {} must be in [0, 1)", a.val_fraction);
    }
    if a.out.exists() && std::fs::read_dir(&a.out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: exists and is not empty; labelling never overwrites a dataset", a.out.display());
    }
    let images = dataset::list_images_recursive(&a.images)?;
    if images.is_empty() {
        bail!("{}: no images (.jpg, .jpeg, .png)", a.images.display());
    }
    // The engine decodes without suppression (IoU threshold 1); classes are kept and merged
    // first, then NMS runs on the new classes.
    let opts = PredictOptions {
        top_k: 1,
        nms: NmsOptions {
            score_threshold: nms_opts.score_threshold,
            iou_threshold: 1.0,
            class_agnostic: false,
            max_detections: usize::MAX,
        },
    };
    // Split folders are honoured only when every image sits in one, so that a stray file at
    // the top cannot silently land in train.
    let keep_splits = images.iter().all(|p| folder_split(&a.images, p).is_some());
    let t0 = std::time::Instant::now();
    let results = parallel_map(&engine, images.len(), a.run.workers, |s, i| {
        let img = image_io::read_rgb(&images[i])?;
        let p = s.predict(&img, &opts)?;
        let dets = match p.output {
            Output::Detections(d) => d,
            _ => Vec::new(),
        };
        let mapped: Vec<Detection> = dets
            .iter()
            .filter_map(|d| map[d.class].map(|c| Detection { bbox: d.bbox, class: c, score: d.score }))
            .collect();
        let kept = nms(mapped, &nms_opts)
            .into_iter()
            .map(|d| {
                (
                    d.class,
                    LabeledDetection { bbox: d.bbox, class: d.class, name: keep[d.class].clone(), score: d.score },
                )
            })
            .collect::<Vec<_>>();
        Ok((p.width, p.height, kept))
    })?;
    // Distinct output names even when sub-folders repeat a file name.
    let mut used = std::collections::HashSet::new();
    let mut summary = Summary {
        teacher: a.teacher.clone(),
        images: images.len(),
        labelled: 0,
        background: 0,
        skipped: 0,
        boxes: keep.iter().map(|k| (k.clone(), 0)).collect(),
        uncertain_boxes: 0,
        splits: BTreeMap::new(),
        conf: a.nms.conf,
        sheets: Vec::new(),
        data_yaml: a.out.join("data.yaml"),
    };
    let mut skipped = String::new();
    let mut reviewed = Vec::new();
    for (src, (w, h, dets)) in images.iter().zip(results) {
        if dets.is_empty() && !a.keep_empty {
            summary.skipped += 1;
            skipped += &format!("{}\n", src.display());
            continue;
        }
        let stem = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let ext = src.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_else(|| "jpg".into());
        let mut name = stem.clone();
        let mut k = 1;
        while !used.insert(name.clone()) {
            name = format!("{stem}_{k}");
            k += 1;
        }
        let split = match folder_split(&a.images, src) {
            Some(s) if keep_splits => s,
            _ if is_val(&name, a.val_fraction) => "val",
            _ => "train",
        };
        *summary.splits.entry(split.to_string()).or_default() += 1;
        let img_dst = a.out.join(format!("images/{split}/{name}.{ext}"));
        std::fs::create_dir_all(img_dst.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", img_dst.display()))?;
        std::fs::copy(src, &img_dst).with_context(|| format!("copying {} to {}", src.display(), img_dst.display()))?;
        fsio::write_atomic(&a.out.join(format!("labels/{split}/{name}.txt")), yolo_rows(&dets, w, h).as_bytes())?;
        if dets.is_empty() {
            summary.background += 1;
        } else {
            summary.labelled += 1;
        }
        for (c, d) in &dets {
            *summary.boxes.get_mut(&keep[*c]).expect("kept class") += 1;
            if d.score < a.review_below {
                summary.uncertain_boxes += 1;
            }
        }
        reviewed.push((src.clone(), dets));
    }
    if summary.labelled == 0 {
        bail!(
            "the teacher found no {:?} at --conf {} in {} images; nothing to label (try a lower --conf)",
            keep,
            a.nms.conf,
            images.len()
        );
    }
    let names_yaml: String =
        keep.iter().map(|n| format!("  - {}\n", serde_json::to_string(n).unwrap_or_default())).collect();
    let mut yaml = format!("# written by fieldkit label from {}\npath: .\ntrain: images/train\n", a.teacher.display());
    yaml += if summary.splits.contains_key("val") { "val: images/val\n" } else { "val: images/train\n" };
    if summary.splits.contains_key("test") {
        yaml += "test: images/test\n";
    }
    yaml += &format!("nc: {}\nnames:\n{names_yaml}", keep.len());
    fsio::write_atomic(&summary.data_yaml, yaml.as_bytes())?;
    // COCO ground truth of each split, through the same reader training uses.
    let ds = YoloDataset::from_yaml(&summary.data_yaml)?;
    for split in summary.splits.keys() {
        ds.to_coco(split)?.write(&a.out.join(format!("annotations/{split}.json")))?;
    }
    if !skipped.is_empty() {
        fsio::write_atomic(&a.out.join("skipped.txt"), skipped.as_bytes())?;
    }
    summary.sheets = write_sheets(&a.out, &reviewed, &keep, a.review_below, a.sheet_size)?;
    fsio::write_json(&a.out.join("label.json"), &summary)?;
    println!(
        "{} images: {} labelled, {} background, {} skipped (nothing found; skipped.txt); boxes {:?} ({} under {} marked '?' for review)",
        summary.images, summary.labelled, summary.background, summary.skipped, summary.boxes, summary.uncertain_boxes, a.review_below
    );
    println!(
        "dataset {} (splits {:?}{}); review sheets {}; {:.1} s",
        summary.data_yaml.display(),
        summary.splits,
        if keep_splits { ", kept from the image folders" } else { "" },
        a.out.join("review").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_near_the_fraction() {
        let n = (0..2000).filter(|i| is_val(&format!("img_{i}"), 0.2)).count();
        assert!((300..500).contains(&n), "{n}");
        assert_eq!(is_val("a", 0.2), is_val("a", 0.2));
        assert!(!is_val("a", 0.0));
    }

    #[test]
    fn classes_keep_rename_and_merge() {
        let teacher: Vec<String> = ["person", "horse", "sheep", "cow"].iter().map(|s| s.to_string()).collect();
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (names, map) = class_map(&items(&["cow", "horse=cow", "sheep"]), &teacher).unwrap();
        assert_eq!(names, vec!["cow", "sheep"]);
        assert_eq!(map, vec![None, Some(0), Some(1), Some(0)]);
        let (names, map) = class_map(&items(&["person=farmer"]), &teacher).unwrap();
        assert_eq!((names, map), (vec!["farmer".to_string()], vec![Some(0), None, None, None]));
        for (bad, needle) in
            [(&["goat"][..], "'goat' is not a class"), (&["cow", "cow"], "listed twice"), (&["=cow"], "TEACHER=NEW")]
        {
            let e = class_map(&items(bad), &teacher).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn split_folders_are_recognised() {
        let root = Path::new("/data/cattle");
        assert_eq!(folder_split(root, Path::new("/data/cattle/train/Jersey/a.jpg")), Some("train"));
        assert_eq!(folder_split(root, Path::new("/data/cattle/Valid/b.jpg")), Some("val"));
        assert_eq!(folder_split(root, Path::new("/data/cattle/test/c.png")), Some("test"));
        assert_eq!(folder_split(root, Path::new("/data/cattle/Jersey/a.jpg")), None);
        assert_eq!(folder_split(root, Path::new("/elsewhere/train/a.jpg")), None);
    }

    #[test]
    fn rows_are_normalised_centres() {
        let d = LabeledDetection { bbox: [10.0, 20.0, 30.0, 60.0], class: 19, name: "cow".into(), score: 0.9 };
        assert_eq!(yolo_rows(&[(0, d)], 100, 200), "0 0.200000 0.200000 0.200000 0.200000\n");
    }
}
