//! YOLO txt labels + Ultralytics `data.yaml`, as Roboflow and Ultralytics export them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml_ng::Value;

use crate::dataset::{fingerprint, is_image};
use crate::error::{CoreError, Result};

/// One object, normalised to the image size: centre x/y, width, height in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct YoloBox {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

impl YoloBox {
    /// Corner form in pixels of an image of `width`×`height`.
    pub fn to_xyxy(&self, width: f32, height: f32) -> [f32; 4] {
        [
            (self.cx - self.w / 2.0) * width,
            (self.cy - self.h / 2.0) * height,
            (self.cx + self.w / 2.0) * width,
            (self.cy + self.h / 2.0) * height,
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DetSample {
    pub image: PathBuf,
    pub label_path: PathBuf,
    /// True when the label file does not exist: a background image for Ultralytics,
    /// but often a forgotten export, so `data check` reports it.
    pub label_missing: bool,
    pub boxes: Vec<YoloBox>,
}

#[derive(Debug, Clone)]
pub struct YoloDataset {
    pub yaml: PathBuf,
    /// Base directory the split paths are resolved against.
    pub root: PathBuf,
    pub names: Vec<String>,
    /// Split name ("train", "val", "test") -> image directories or list files.
    pub splits: BTreeMap<String, Vec<PathBuf>>,
}

pub const SPLIT_KEYS: &[&str] = &["train", "val", "test"];

impl YoloDataset {
    /// Reads `data.yaml` (or a directory holding one).
    pub fn from_yaml(path: &Path) -> Result<Self> {
        let yaml = if path.is_dir() { path.join("data.yaml") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&yaml).map_err(|e| CoreError::io(&yaml, e))?;
        let doc: Value =
            serde_yaml_ng::from_str(&text).map_err(|e| CoreError::invalid(&yaml, format!("invalid YAML: {e}")))?;
        let map = doc.as_mapping().ok_or_else(|| CoreError::invalid(&yaml, "expected a mapping at top level"))?;
        let get = |k: &str| map.get(Value::String(k.into()));
        let yaml_dir = yaml.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let root = match get("path") {
            None | Some(Value::Null) => yaml_dir.clone(),
            Some(Value::String(p)) => {
                let p = PathBuf::from(p);
                normalize(&if p.is_absolute() { p } else { yaml_dir.join(p) })
            }
            Some(other) => {
                return Err(CoreError::invalid(&yaml, format!("key 'path': expected a string, got {other:?}")))
            }
        };
        let names = parse_names(&yaml, get("names"))?;
        if let Some(nc) = get("nc") {
            let nc = nc
                .as_u64()
                .ok_or_else(|| CoreError::invalid(&yaml, format!("key 'nc': expected an integer, got {nc:?}")))?;
            if nc as usize != names.len() {
                return Err(CoreError::invalid(
                    &yaml,
                    format!("key 'nc' is {nc} but 'names' lists {} classes", names.len()),
                ));
            }
        }
        let mut splits = BTreeMap::new();
        for key in SPLIT_KEYS {
            let entries: Vec<String> = match get(key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Sequence(seq)) => seq
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            CoreError::invalid(&yaml, format!("key '{key}': list items must be strings, got {v:?}"))
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(CoreError::invalid(
                        &yaml,
                        format!("key '{key}': expected a path or list of paths, got {other:?}"),
                    ))
                }
            };
            let mut dirs = Vec::new();
            for e in entries {
                let resolved = resolve_split_path(&root, &e);
                if !resolved.exists() {
                    return Err(CoreError::invalid(
                        &yaml,
                        format!("key '{key}': '{e}' not found (looked at {})", resolved.display()),
                    ));
                }
                dirs.push(resolved);
            }
            splits.insert(key.to_string(), dirs);
        }
        if splits.is_empty() {
            return Err(CoreError::invalid(&yaml, "none of the keys 'train', 'val', 'test' is set"));
        }
        Ok(YoloDataset { yaml, root, names, splits })
    }

    pub fn num_classes(&self) -> usize {
        self.names.len()
    }

    /// Accepts the Ultralytics key or the Roboflow folder name ("valid" -> "val").
    pub fn split_key(split: &str) -> &str {
        match split {
            "valid" | "validation" => "val",
            s => s,
        }
    }

    /// Sorted image paths of a split.
    pub fn split_images(&self, split: &str) -> Result<Vec<PathBuf>> {
        let key = Self::split_key(split);
        let sources = self
            .splits
            .get(key)
            .ok_or_else(|| CoreError::invalid(&self.yaml, format!("split '{split}' is not defined")))?;
        let mut out = Vec::new();
        for src in sources {
            if src.is_dir() {
                collect_images_recursive(src, &mut out)?;
            } else {
                out.extend(read_list_file(src)?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Loads a split, stopping at the first bad label (training wants clean data;
    /// `data check` uses [`parse_label_text`] to collect every problem instead).
    pub fn load_split(&self, split: &str) -> Result<Vec<DetSample>> {
        let nc = self.num_classes();
        self.split_images(split)?
            .into_iter()
            .map(|image| {
                let label_path = label_path_for(&image);
                match std::fs::read_to_string(&label_path) {
                    Ok(text) => {
                        let (boxes, problems) = parse_label_text(&label_path, &text, nc);
                        match problems.into_iter().next() {
                            Some(e) => Err(e),
                            None => Ok(DetSample { image, label_path, label_missing: false, boxes }),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Ok(DetSample { image, label_path, label_missing: true, boxes: vec![] })
                    }
                    Err(e) => Err(CoreError::io(&label_path, e)),
                }
            })
            .collect()
    }

    /// The split as COCO ground truth: ids from 1 in sorted image order, category ids =
    /// class index + 1, file names relative to the dataset root. Reads image headers for sizes.
    pub fn to_coco(&self, split: &str) -> Result<crate::dataset::coco::CocoDataset> {
        self.samples_to_coco(&self.load_split(split)?)
    }

    /// [`YoloDataset::to_coco`] of a chosen set of this dataset's samples (a held-out part).
    pub fn samples_to_coco(&self, samples: &[DetSample]) -> Result<crate::dataset::coco::CocoDataset> {
        use crate::dataset::coco::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage};
        let mut out = CocoDataset {
            categories: self
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| CocoCategory { id: i as u64 + 1, name: n.clone(), supercategory: None })
                .collect(),
            ..Default::default()
        };
        for (i, s) in samples.iter().enumerate() {
            let (w, h) = crate::image_io::file_dimensions(&s.image)?;
            let id = i as u64 + 1;
            let file_name = s.image.strip_prefix(&self.root).unwrap_or(&s.image).to_string_lossy().into_owned();
            out.images.push(CocoImage { id, file_name, width: w, height: h });
            for b in &s.boxes {
                let [x1, y1, x2, y2] = b.to_xyxy(w as f32, h as f32);
                let bbox = [x1 as f64, y1 as f64, (x2 - x1) as f64, (y2 - y1) as f64];
                out.annotations.push(CocoAnnotation {
                    id: out.annotations.len() as u64 + 1,
                    image_id: id,
                    category_id: b.class as u64 + 1,
                    bbox,
                    area: Some(bbox[2] * bbox[3]),
                    iscrowd: false,
                    segmentation: None,
                });
            }
        }
        Ok(out)
    }

    pub fn fingerprint(&self, samples: &[DetSample]) -> String {
        let labels: Vec<String> = samples.iter().map(|s| format!("{}", s.boxes.len())).collect();
        fingerprint(samples.iter().zip(&labels).map(|(s, l)| (s.image.as_path(), l.as_str())))
    }
}

fn parse_names(yaml: &Path, v: Option<&Value>) -> Result<Vec<String>> {
    let v = v.ok_or_else(|| CoreError::invalid(yaml, "missing key 'names'"))?;
    let names: Vec<String> = match v {
        Value::Sequence(seq) => seq
            .iter()
            .enumerate()
            .map(|(i, n)| {
                scalar_to_string(n)
                    .ok_or_else(|| CoreError::invalid(yaml, format!("names[{i}]: expected a string, got {n:?}")))
            })
            .collect::<Result<_>>()?,
        Value::Mapping(m) => {
            let mut pairs = Vec::new();
            for (k, n) in m {
                let id = k
                    .as_u64()
                    .ok_or_else(|| CoreError::invalid(yaml, format!("names: key {k:?} is not a class id")))?;
                let name = scalar_to_string(n)
                    .ok_or_else(|| CoreError::invalid(yaml, format!("names[{id}]: expected a string, got {n:?}")))?;
                pairs.push((id as usize, name));
            }
            pairs.sort();
            for (i, (id, _)) in pairs.iter().enumerate() {
                if *id != i {
                    return Err(CoreError::invalid(
                        yaml,
                        format!("names: class ids must be 0..{} without gaps, missing {i}", pairs.len()),
                    ));
                }
            }
            pairs.into_iter().map(|(_, n)| n).collect()
        }
        other => return Err(CoreError::invalid(yaml, format!("names: expected a list or a map, got {other:?}"))),
    };
    if names.is_empty() {
        return Err(CoreError::invalid(yaml, "names: no classes"));
    }
    Ok(names)
}

fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves a split entry against the dataset root; Roboflow writes `../train/images`
/// relative to a yaml that sits beside `train/`, which Ultralytics also tolerates.
fn resolve_split_path(root: &Path, entry: &str) -> PathBuf {
    let p = PathBuf::from(entry);
    if p.is_absolute() {
        return normalize(&p);
    }
    let direct = normalize(&root.join(&p));
    if !direct.exists() {
        if let Some(stripped) = entry.strip_prefix("../") {
            let alt = normalize(&root.join(stripped));
            if alt.exists() {
                return alt;
            }
        }
    }
    direct
}

/// Drops `.` components so reported paths read `data/images/x.jpg`, not `data/./images/x.jpg`.
fn normalize(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

fn collect_images_recursive(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let p = entry.map_err(|e| CoreError::io(dir, e))?.path();
        if p.is_dir() {
            collect_images_recursive(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// A `.txt` split file: one image path per line, relative paths against the file's folder.
fn read_list_file(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = PathBuf::from(l.strip_prefix("./").unwrap_or(l));
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        })
        .collect())
}

/// `.../images/x.jpg` -> `.../labels/x.txt` (the last `images` path component is replaced).
pub fn label_path_for(image: &Path) -> PathBuf {
    let comps: Vec<_> = image.components().collect();
    let idx = comps.iter().rposition(|c| c.as_os_str() == "images");
    let mut out = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        if Some(i) == idx {
            out.push("labels");
        } else {
            out.push(c.as_os_str());
        }
    }
    out.set_extension("txt");
    out
}

/// Parses a label file, collecting every bad row. Rows are `class cx cy w h`, or a polygon /
/// oriented box `class x1 y1 x2 y2 x3 y3 ...` whose bounding box is taken.
pub fn parse_label_text(path: &Path, text: &str, num_classes: usize) -> (Vec<YoloBox>, Vec<CoreError>) {
    let mut boxes = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        match parse_row(&tokens, num_classes) {
            Ok(b) => boxes.push(b),
            Err(msg) => problems.push(CoreError::record(path, line_no, msg)),
        }
    }
    (boxes, problems)
}

/// A label row's class id: a non-negative integer below `nc`.
pub(crate) fn parse_class(token: &str, nc: usize) -> std::result::Result<usize, String> {
    let class_f: f64 = token.parse().map_err(|_| format!("class id '{token}' is not a number"))?;
    if class_f < 0.0 || class_f.fract() != 0.0 {
        return Err(format!("class id '{token}' is not a non-negative integer"));
    }
    let class = class_f as usize;
    if class >= nc {
        return Err(format!("class id {class} out of range: the dataset has {nc} classes (0..{})", nc - 1));
    }
    Ok(class)
}

/// A normalised coordinate, clamped to [0, 1]: exporters round to 6 decimals, so that much
/// slack past the edges is allowed.
pub(crate) fn parse_coord(t: &str) -> std::result::Result<f64, String> {
    let v: f64 = t.parse().map_err(|_| format!("value '{t}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("value '{t}' is not finite"));
    }
    if !(-1e-6..=1.0 + 1e-6).contains(&v) {
        return Err(format!("coordinate {t} outside [0, 1] (labels must be normalised by image size)"));
    }
    Ok(v.clamp(0.0, 1.0))
}

/// A YOLO-seg label file: one object per row, `class x1 y1 x2 y2 x3 y3 ...` (at least three
/// points, normalised). Every bad row is collected, as [`parse_label_text`] does.
pub fn parse_polygon_text(path: &Path, text: &str, num_classes: usize) -> (Vec<(usize, Vec<f64>)>, Vec<CoreError>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let n = tokens.len();
        let row = if n == 5 {
            Err("a box ('class cx cy w h'): segmentation labels are polygons 'class x1 y1 x2 y2 x3 y3 ...'".to_string())
        } else if n < 7 || n.is_multiple_of(2) {
            Err(format!(
                "expected a polygon 'class x1 y1 x2 y2 x3 y3 ...' (a class and 3 or more x y pairs), got {n} values"
            ))
        } else {
            parse_class(tokens[0], num_classes).and_then(|c| {
                tokens[1..]
                    .iter()
                    .map(|t| parse_coord(t))
                    .collect::<std::result::Result<Vec<f64>, _>>()
                    .map(|xy| (c, xy))
            })
        };
        match row {
            Ok(r) => rows.push(r),
            Err(msg) => problems.push(CoreError::record(path, i + 1, msg)),
        }
    }
    (rows, problems)
}

fn parse_row(tokens: &[&str], nc: usize) -> std::result::Result<YoloBox, String> {
    let n = tokens.len();
    if n != 5 && (n < 7 || n.is_multiple_of(2)) {
        return Err(format!(
            "expected 'class cx cy w h' (5 values) or a polygon 'class x1 y1 x2 y2 x3 y3 ...', got {n} values"
        ));
    }
    let class = parse_class(tokens[0], nc)?;
    let vals =
        tokens[1..].iter().map(|t| parse_coord(t).map(|v| v as f32)).collect::<std::result::Result<Vec<_>, _>>()?;
    let b = if n == 5 {
        YoloBox { class, cx: vals[0], cy: vals[1], w: vals[2], h: vals[3] }
    } else {
        let xs = vals.iter().step_by(2);
        let ys = vals.iter().skip(1).step_by(2);
        let (x0, x1) = xs.fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let (y0, y1) = ys.fold((f32::MAX, f32::MIN), |(a, b), &y| (a.min(y), b.max(y)));
        YoloBox { class, cx: (x0 + x1) / 2.0, cy: (y0 + y1) / 2.0, w: x1 - x0, h: y1 - y0 }
    };
    if b.w <= 0.0 || b.h <= 0.0 {
        return Err(format!("box has zero or negative size (w {}, h {})", b.w, b.h));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn label_path_replaces_last_images_component() {
        assert_eq!(
            label_path_for(Path::new("/d/images/train/images/a.b.jpg")),
            PathBuf::from("/d/images/train/labels/a.b.txt")
        );
    }

    #[test]
    fn rows_boxes_polygons_and_errors() {
        let text = "0 0.5 0.5 0.2 0.4\n\n1 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n5 0.5 0.5 0.1 0.1\n0 1.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n0 0.5 0.5 -0.1 0.1\nx 0.5 0.5 0.1 0.1\n";
        let (boxes, problems) = parse_label_text(Path::new("l.txt"), text, 2);
        assert_eq!(boxes.len(), 2);
        assert_eq!(boxes[0], YoloBox { class: 0, cx: 0.5, cy: 0.5, w: 0.2, h: 0.4 });
        let p = boxes[1];
        assert_eq!(p.class, 1);
        assert!((p.cx - 0.2).abs() < 1e-6 && (p.cy - 0.3).abs() < 1e-6);
        assert!((p.w - 0.2).abs() < 1e-6 && (p.h - 0.4).abs() < 1e-6);
        let msgs: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(msgs[0].starts_with("l.txt:4:") && msgs[0].contains("class id 5 out of range"));
        assert!(msgs[1].starts_with("l.txt:5:") && msgs[1].contains("1.5"));
        assert!(msgs[2].contains("got 4 values"));
        assert!(msgs[3].contains("outside [0, 1]") || msgs[3].contains("negative"));
        assert!(msgs[4].contains("'x'"));
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    #[test]
    fn yaml_forms_and_roboflow_paths() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("train/images/a.jpg"), "x");
        write(&r.join("train/labels/a.txt"), "1 0.5 0.5 0.5 0.5\n");
        write(&r.join("valid/images/b.png"), "x");
        write(&r.join("data.yaml"), "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['crop', 'weed']\n");
        let ds = YoloDataset::from_yaml(&r.join("data.yaml")).unwrap();
        assert_eq!(ds.names, vec!["crop", "weed"]);
        let train = ds.load_split("train").unwrap();
        assert_eq!(train.len(), 1);
        assert_eq!(train[0].boxes[0].class, 1);
        let val = ds.load_split("valid").unwrap();
        assert!(val[0].label_missing);

        write(&r.join("map.yaml"), "path: .\ntrain: train/images\nnames:\n  1: weed\n  0: crop\n");
        let m = YoloDataset::from_yaml(&r.join("map.yaml")).unwrap();
        assert_eq!(m.names, vec!["crop", "weed"]);
        assert!(!m.split_images("train").unwrap()[0].to_string_lossy().contains("/./"));

        write(&r.join("bad.yaml"), "train: train/images\nnc: 3\nnames: [a, b]\n");
        let e = YoloDataset::from_yaml(&r.join("bad.yaml")).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("'nc' is 3"), "{e}");
        write(&r.join("gap.yaml"), "train: train/images\nnames: {0: a, 2: b}\n");
        assert!(YoloDataset::from_yaml(&r.join("gap.yaml")).unwrap_err().to_string().contains("missing 1"));
        write(&r.join("nosplit.yaml"), "train: nowhere/images\nnames: [a]\n");
        assert!(YoloDataset::from_yaml(&r.join("nosplit.yaml"))
            .unwrap_err()
            .to_string()
            .contains("'nowhere/images' not found"));
    }

    #[test]
    fn strict_load_reports_first_bad_label() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("images/train/a.jpg"), "x");
        write(&r.join("labels/train/a.txt"), "0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n");
        write(&r.join("data.yaml"), "path: .\ntrain: images/train\nnames: [a, b]\n");
        let e = YoloDataset::from_yaml(&r.join("data.yaml")).unwrap().load_split("train").unwrap_err().to_string();
        assert!(e.contains("a.txt:2") && e.contains("class id 3"), "{e}");
    }
}
