//! `fieldkit data check`: counts, size histogram and every problem in a dataset, without
//! stopping at the first one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::dataset::coco::CocoDataset;
use crate::dataset::imagefolder::ImageFolder;
use crate::dataset::is_image;
use crate::dataset::masks::{MaskDataset, MaskSource};
use crate::dataset::photos::{look_hash, same_look, source_photo};
use crate::dataset::yolo::{label_path_for, parse_label_text, YoloDataset};
use crate::error::{CoreError, Result};
use crate::image_io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(l) => write!(f, "{sev}: {}:{l}: {}", self.path.display(), self.message),
            None => write!(f, "{sev}: {}: {}", self.path.display(), self.message),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitSummary {
    pub name: String,
    pub images: usize,
    /// Images per class (classification), boxes per class (detection) or pixels per class
    /// (segmentation masks).
    pub class_counts: BTreeMap<String, usize>,
    /// Detection only: images with no objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background_images: Option<usize>,
    /// "WIDTHxHEIGHT" -> number of images.
    pub image_sizes: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    pub format: &'static str,
    pub source: PathBuf,
    pub classes: Vec<String>,
    pub splits: Vec<SplitSummary>,
    pub errors: usize,
    pub warnings: usize,
    pub problems: Vec<Problem>,
}

impl DataReport {
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }
}

/// Checks a dataset, detecting its format: a `data.yaml` (or folder holding one) is YOLO,
/// a `.json` file is COCO (images beside it), a folder with a `classes.csv` and
/// `<split>/images` + `<split>/masks` is segmentation masks, any other folder is ImageFolder.
pub fn check(path: &Path) -> Result<DataReport> {
    let is_yaml = |p: &Path| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    if path.is_file() && is_yaml(path) || path.is_dir() && path.join("data.yaml").is_file() {
        check_yolo(path)
    } else if path.is_file() && path.extension().and_then(|e| e.to_str()) == Some("json") {
        check_coco(path, path.parent().unwrap_or(Path::new(".")))
    } else if path.is_dir() && MaskDataset::is_root(path) {
        check_masks(path)
    } else if path.is_dir() {
        check_imagefolder(path)
    } else if !path.exists() {
        Err(CoreError::invalid(path, "does not exist"))
    } else {
        Err(CoreError::invalid(path, "not a dataset: expected a data.yaml, a COCO .json or an ImageFolder directory"))
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn error(&mut self, path: &Path, line: Option<usize>, message: impl Into<String>) {
        self.0.push(Problem { severity: Severity::Error, path: path.to_path_buf(), line, message: message.into() });
    }
    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push(Problem {
            severity: Severity::Warning,
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        });
    }
    fn record_core(&mut self, e: CoreError) {
        match e {
            CoreError::Record { path, line, msg } => self.error(&path, Some(line), msg),
            CoreError::Invalid { path, msg } | CoreError::Image { path, msg } => self.error(&path, None, msg),
            CoreError::Io { path, source } => self.error(&path, None, source.to_string()),
            CoreError::Argument(m) => self.error(Path::new("-"), None, m),
        }
    }
    fn finish(
        mut self,
        format: &'static str,
        source: &Path,
        classes: Vec<String>,
        splits: Vec<SplitSummary>,
    ) -> DataReport {
        self.0.sort_by(|a, b| (a.severity, &a.path, a.line).cmp(&(b.severity, &b.path, b.line)));
        let errors = self.0.iter().filter(|p| p.severity == Severity::Error).count();
        DataReport {
            format,
            source: source.to_path_buf(),
            classes,
            splits,
            errors,
            warnings: self.0.len() - errors,
            problems: self.0,
        }
    }
}

/// Decodes every image (two threads), returning per-image size or error message and a
/// content hash for duplicate detection.
struct ScannedImage {
    size: std::result::Result<(u32, u32), String>,
    hash: [u8; 32],
    /// What the picture looks like, mirror-blind ([`look_hash`]); `None` when undecodable.
    look: Option<u64>,
}

fn scan_images(paths: &[PathBuf]) -> Vec<ScannedImage> {
    use sha2::{Digest, Sha256};
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<ScannedImage>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= paths.len() {
                    break;
                }
                let scanned = match std::fs::read(&paths[i]) {
                    Ok(bytes) => {
                        let decoded = image_io::decode_rgb(&bytes);
                        ScannedImage {
                            look: decoded.as_ref().ok().and_then(look_hash),
                            size: decoded.map(|im| im.dimensions()),
                            hash: Sha256::digest(&bytes).into(),
                        }
                    }
                    Err(e) => ScannedImage { size: Err(format!("cannot read: {e}")), hash: [0; 32], look: None },
                };
                out.lock().unwrap()[i] = Some(scanned);
            });
        }
    });
    out.into_inner().unwrap().into_iter().map(|s| s.expect("every index scanned")).collect()
}

/// What earlier splits held, for the checks across splits: file bytes, pictures (mirror-blind)
/// and Roboflow source photos, each with the split and file that had it first.
#[derive(Default)]
struct Seen {
    bytes: HashMap<[u8; 32], (String, PathBuf)>,
    /// Every picture hash so far, with its split and file (compared by Hamming distance).
    looks: Vec<(u64, String, PathBuf)>,
    sources: HashMap<String, (String, PathBuf)>,
}

impl Seen {
    /// Remembers `key` for `split`; the file of another split that had it first, if any.
    fn cross<K: std::hash::Hash + Eq>(
        map: &mut HashMap<K, (String, PathBuf)>,
        key: K,
        split: &str,
        path: &Path,
    ) -> Option<(String, PathBuf)> {
        match map.get(&key) {
            Some((other_split, other)) if other_split != split => Some((other_split.clone(), other.clone())),
            Some(_) => None,
            None => {
                map.insert(key, (split.to_string(), path.to_path_buf()));
                None
            }
        }
    }
}

/// Records sizes and unreadable images of one split, and warns (once per image, the strongest
/// evidence first) when an image is in another split too: the same bytes, the same picture
/// (a re-encoded, resized or mirrored copy), or a copy of the same source photo by its
/// Roboflow name. Any of them makes the later split's figures over-state what unseen
/// photos will give.
fn record_images(
    split: &str,
    paths: &[PathBuf],
    summary: &mut SplitSummary,
    problems: &mut Problems,
    seen: &mut Seen,
) -> Vec<Option<(u32, u32)>> {
    let scanned = scan_images(paths);
    let mut sizes = Vec::with_capacity(paths.len());
    for (path, s) in paths.iter().zip(scanned) {
        match s.size {
            Ok((w, h)) => {
                *summary.image_sizes.entry(format!("{w}x{h}")).or_default() += 1;
                sizes.push(Some((w, h)));
            }
            Err(msg) => {
                problems.error(path, None, format!("unreadable image: {msg}"));
                sizes.push(None);
            }
        }
        let bytes = (s.hash != [0; 32]).then(|| Seen::cross(&mut seen.bytes, s.hash, split, path)).flatten();
        let look = s.look.and_then(|h| {
            let hit = seen
                .looks
                .iter()
                .find(|(o, other_split, _)| other_split != split && same_look(*o, h))
                .map(|(_, other_split, other)| (other_split.clone(), other.clone()));
            seen.looks.push((h, split.to_string(), path.clone()));
            hit
        });
        let source = source_photo(path).and_then(|p| Seen::cross(&mut seen.sources, p.to_string(), split, path));
        let leak = if let Some((other_split, other)) = bytes {
            Some(format!("same bytes as {} in split '{other_split}'", other.display()))
        } else if let Some((other_split, other)) = look {
            Some(format!(
                "same picture as {} in split '{other_split}' (a re-encoded or mirrored copy)",
                other.display()
            ))
        } else {
            source.map(|(other_split, other)| {
                format!(
                    "a copy of the same source photo as {} in split '{other_split}' (Roboflow name)",
                    other.display()
                )
            })
        };
        if let Some(what) = leak {
            problems.warn(path, format!("{what}: leaks between splits"));
        }
    }
    sizes
}

pub fn check_imagefolder(root: &Path) -> Result<DataReport> {
    let splits = ImageFolder::splits(root)?;
    if splits.is_empty() {
        return Err(CoreError::invalid(
            root,
            "no splits found: expected <root>/<split>/<class>/*.jpg (e.g. train/ and valid/)",
        ));
    }
    let mut problems = Problems::default();
    let mut classes: Vec<String> = Vec::new();
    for split in &splits {
        for c in ImageFolder::open(root, split).map(|d| d.classes).unwrap_or_default() {
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
    }
    classes.sort();
    let mut seen = Seen::default();
    let mut summaries = Vec::new();
    for split in &splits {
        let dir = root.join(split);
        let mut summary = SplitSummary { name: split.clone(), ..Default::default() };
        for entry in std::fs::read_dir(&dir).map_err(|e| CoreError::io(&dir, e))?.flatten() {
            if entry.path().is_file() {
                problems.warn(&entry.path(), "file directly in the split folder is not in any class (ignored)");
            }
        }
        let ds = match ImageFolder::open_with_classes(root, split, &classes) {
            Ok(ds) => ds,
            Err(e) => {
                problems.record_core(e);
                summaries.push(summary);
                continue;
            }
        };
        for (class, n) in classes.iter().zip(ds.class_counts()) {
            summary.class_counts.insert(class.clone(), n);
            if n == 0 {
                problems.warn(&dir.join(class), format!("class '{class}' has no images in split '{split}'"));
            }
        }
        for class in &classes {
            let cdir = dir.join(class);
            if let Ok(rd) = std::fs::read_dir(&cdir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_file() && !is_image(&p) {
                        problems.warn(&p, "not an image file (.jpg, .jpeg, .png): ignored");
                    }
                }
            }
        }
        let paths: Vec<PathBuf> = ds.samples.iter().map(|s| s.path.clone()).collect();
        summary.images = paths.len();
        record_images(split, &paths, &mut summary, &mut problems, &mut seen);
        summaries.push(summary);
    }
    Ok(problems.finish("imagefolder", root, classes, summaries))
}

/// Segmentation data (a mask folder, or COCO folder; [`MaskDataset`]): every image has a
/// mask of its size in the table's colours (or ids), every polygon row and annotation is a
/// mask; class counts are pixels. Leftover files are warned about, and so is a YOLO-seg image
/// without a label file (background only, as Ultralytics reads it).
pub fn check_masks(root: &Path) -> Result<DataReport> {
    let ds = MaskDataset::open(root)?;
    let names: Vec<String> = ds.classes.iter().map(|c| c.name.clone()).collect();
    let mut problems = Problems::default();
    let mut seen = Seen::default();
    let mut summaries = Vec::new();
    for split in ds.splits() {
        let mut summary = SplitSummary { name: split.clone(), ..Default::default() };
        for n in &names {
            summary.class_counts.insert(n.clone(), 0);
        }
        let files = match ds.split(&split) {
            Ok(f) => f,
            Err(e) => {
                problems.record_core(e);
                summaries.push(summary);
                continue;
            }
        };
        let images: Vec<PathBuf> = files.pairs.iter().map(|(i, _)| i.clone()).collect();
        summary.images = images.len();
        if images.is_empty() {
            problems.error(&root.join(&split), None, "no images");
        }
        let sizes = record_images(&split, &images, &mut summary, &mut problems, &mut seen);
        for ((image, mask), size) in files.pairs.iter().zip(sizes) {
            let Some(mask) = mask else {
                let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                problems.error(image, None, format!("no mask (expected {split}/masks/{stem}.png)"));
                continue;
            };
            if matches!(ds.source, MaskSource::YoloSeg(_)) {
                if !mask.exists() {
                    problems.warn(mask, "no label file: the image is all background");
                }
                if size.is_none() {
                    continue; // its polygons have no size to be placed in
                }
            }
            // An image that did not decode has no size to hold its mask to.
            match ds.read_mask(image, mask, size) {
                Ok(m) => {
                    for (n, c) in names.iter().zip(crate::segment::class_counts(&m.ids, names.len())) {
                        *summary.class_counts.get_mut(n).expect("every class listed") += c;
                    }
                }
                Err(e) => problems.record_core(e),
            }
        }
        for (orphan, what) in &files.orphans {
            problems.warn(orphan, *what);
        }
        summaries.push(summary);
    }
    Ok(problems.finish(ds.format(), root, names, summaries))
}

pub fn check_yolo(path: &Path) -> Result<DataReport> {
    let ds = YoloDataset::from_yaml(path)?;
    let mut problems = Problems::default();
    let mut seen = Seen::default();
    let mut summaries = Vec::new();
    for split in ds.splits.keys() {
        let mut summary = SplitSummary { name: split.clone(), background_images: Some(0), ..Default::default() };
        for n in &ds.names {
            summary.class_counts.insert(n.clone(), 0);
        }
        let images = match ds.split_images(split) {
            Ok(i) => i,
            Err(e) => {
                problems.record_core(e);
                summaries.push(summary);
                continue;
            }
        };
        summary.images = images.len();
        if images.is_empty() {
            problems.error(&ds.yaml, None, format!("split '{split}' has no images"));
        }
        let mut label_files = std::collections::HashSet::new();
        for image in &images {
            let label = label_path_for(image);
            let boxes = match std::fs::read_to_string(&label) {
                Ok(text) => {
                    label_files.insert(label.clone());
                    let (boxes, errs) = parse_label_text(&label, &text, ds.num_classes());
                    errs.into_iter().for_each(|e| problems.record_core(e));
                    boxes
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    problems.warn(image, format!("missing label file {} (treated as background)", label.display()));
                    vec![]
                }
                Err(e) => {
                    problems.error(&label, None, format!("cannot read label: {e}"));
                    vec![]
                }
            };
            if boxes.is_empty() {
                *summary.background_images.as_mut().unwrap() += 1;
            }
            for b in &boxes {
                *summary.class_counts.get_mut(&ds.names[b.class]).unwrap() += 1;
            }
        }
        // Orphan labels: a label whose image is gone usually means a broken export.
        let label_dirs: std::collections::BTreeSet<PathBuf> =
            label_files.iter().filter_map(|l| l.parent().map(Path::to_path_buf)).collect();
        for dir in label_dirs {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) == Some("txt") && !label_files.contains(&p) {
                    problems.warn(&p, "label file has no matching image");
                }
            }
        }
        record_images(split, &images, &mut summary, &mut problems, &mut seen);
        summaries.push(summary);
    }
    Ok(problems.finish("yolo", &ds.yaml, ds.names.clone(), summaries))
}

pub fn check_coco(json: &Path, image_dir: &Path) -> Result<DataReport> {
    let ds = CocoDataset::read(json)?;
    let mut problems = Problems::default();
    let mut cats: Vec<_> = ds.categories.clone();
    cats.sort_by_key(|c| c.id);
    let classes: Vec<String> = cats.iter().map(|c| c.name.clone()).collect();
    let name_of: HashMap<u64, &str> = cats.iter().map(|c| (c.id, c.name.as_str())).collect();
    let mut summary =
        SplitSummary { name: "all".into(), images: ds.images.len(), background_images: Some(0), ..Default::default() };
    for c in &classes {
        summary.class_counts.insert(c.clone(), 0);
    }
    let mut per_image: HashMap<u64, usize> = HashMap::new();
    let dims: HashMap<u64, (u32, u32)> = ds.images.iter().map(|i| (i.id, (i.width, i.height))).collect();
    for a in &ds.annotations {
        *summary.class_counts.get_mut(name_of[&a.category_id]).unwrap() += 1;
        *per_image.entry(a.image_id).or_default() += 1;
        let (w, h) = dims[&a.image_id];
        let [x, y, bw, bh] = a.bbox;
        if x < -0.5 || y < -0.5 || x + bw > w as f64 + 0.5 || y + bh > h as f64 + 0.5 {
            problems.warn(json, format!("annotation id {}: bbox {:?} extends outside its {w}x{h} image", a.id, a.bbox));
        }
    }
    summary.background_images = Some(ds.images.iter().filter(|i| !per_image.contains_key(&i.id)).count());
    let paths: Vec<PathBuf> = ds.images.iter().map(|i| image_dir.join(&i.file_name)).collect();
    let mut seen = Seen::default();
    let sizes = record_images("all", &paths, &mut summary, &mut problems, &mut seen);
    for ((im, path), size) in ds.images.iter().zip(&paths).zip(sizes) {
        if let Some((w, h)) = size {
            if (w, h) != (im.width, im.height) {
                problems.error(
                    path,
                    None,
                    format!("image is {w}x{h} but the JSON says {}x{} (image id {})", im.width, im.height, im.id),
                );
            }
        }
    }
    Ok(problems.finish("coco", json, classes, vec![summary]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::photos::tests::photo;

    fn leaks(report: &DataReport) -> Vec<String> {
        let mut v: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.message.contains("leaks between splits"))
            .map(|p| format!("{} {}", p.path.file_name().unwrap().to_string_lossy(), &p.message[..14]))
            .collect();
        v.sort();
        v
    }

    /// A mirrored, re-encoded copy and a copy of one Roboflow source photo are found across
    /// splits; another photo and a copy within one split are not reported.
    #[test]
    fn copies_of_one_photo_in_two_splits_are_warned() {
        let d = tempfile::tempdir().unwrap();
        let dir = |split: &str| {
            let p = d.path().join(split).join("cow");
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (train, valid) = (dir("train"), dir("valid"));
        photo(1).save(train.join("a.png")).unwrap();
        photo(1).save(train.join("a_again.png")).unwrap();
        image::imageops::flip_horizontal(&photo(1)).save(valid.join("a_mirrored.jpg")).unwrap();
        photo(2).save(train.join("field7_jpg.rf.0123.jpg")).unwrap();
        photo(3).save(valid.join("field7_jpg.rf.4567.jpg")).unwrap();
        photo(4).save(valid.join("other.png")).unwrap();
        let r = check_imagefolder(d.path()).unwrap();
        assert_eq!(leaks(&r), ["a_mirrored.jpg same picture a", "field7_jpg.rf.4567.jpg a copy of the "], "{r:#?}");
        assert_eq!(r.warnings, 2, "{:#?}", r.problems);
    }
}
