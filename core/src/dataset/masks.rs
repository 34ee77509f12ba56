//! Segmentation data in the three layouts users bring, read into one thing: per split, each
//! image with a class map of its size.
//!
//! - **Mask folders**: `<root>/classes.csv` (`id,name,r,g,b`: the colour each class has in
//!   the masks) and per split `images/NAME.jpg` beside `masks/NAME.png`. A mask is an RGB image
//!   in the table's colours, or a single-channel image whose values are class ids.
//! - **YOLO-seg** (what Ultralytics and Roboflow export): a `data.yaml`, and per image a label
//!   file of polygons, `class x1 y1 x2 y2 ...` normalised to the image size.
//! - **COCO** instances JSON with polygons or RLE, one per split: Roboflow's
//!   `<split>/_annotations.coco.json` with the images beside it, or COCO's
//!   `annotations/instances_<split>.json` with the images in `<split>/`.
//!
//! Polygons and RLE become pixels as pycocotools makes them ([`super::rle`]). Class 0 is the
//! background (pixels no object covers); the label classes follow in their order (YOLO class
//! k is id k + 1, COCO categories by id). Where objects overlap the smaller one is on top,
//! as Ultralytics' overlapping masks have it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::coco::CocoDataset;
use super::rle::Rle;
use super::yolo::{label_path_for, parse_polygon_text, YoloDataset};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskClass {
    pub id: u8,
    pub name: String,
    pub rgb: [u8; 3],
}

#[derive(Debug, Clone)]
pub struct MaskDataset {
    /// The folder (mask folders, COCO) or the data.yaml (YOLO-seg) it was opened from.
    pub root: PathBuf,
    /// In id order; ids are 0..n.
    pub classes: Vec<MaskClass>,
    pub source: MaskSource,
}

/// Where the class maps come from.
#[derive(Debug, Clone)]
pub enum MaskSource {
    /// Mask images under `<split>/masks`, named as their photos.
    Folder,
    /// YOLO-seg polygons: a label file per image (`.../labels/NAME.txt`).
    YoloSeg(YoloDataset),
    /// COCO instances JSON per split.
    Coco(BTreeMap<String, CocoSplit>),
}

/// One split of a COCO dataset: the JSON, and each image's size and objects.
#[derive(Debug, Clone)]
pub struct CocoSplit {
    pub json: PathBuf,
    pub images_dir: PathBuf,
    images: BTreeMap<PathBuf, CocoObjects>,
}

#[derive(Debug, Clone)]
struct CocoObjects {
    width: u32,
    height: u32,
    /// (class id, annotation id, its `segmentation`).
    objects: Vec<(u8, u64, Value)>,
}

/// One split's files: each image with where its mask is (`None`: missing), and files left
/// over (a mask with no image, an image no annotation file lists) with what they are.
#[derive(Debug, Default)]
pub struct MaskSplit {
    pub pairs: Vec<(PathBuf, Option<PathBuf>)>,
    pub orphans: Vec<(PathBuf, &'static str)>,
}

/// A decoded mask: its size and one class id per pixel, row by row.
#[derive(Debug)]
pub struct ClassMap {
    pub width: u32,
    pub height: u32,
    pub ids: Vec<u8>,
}

/// The Pascal VOC colour map (class 0 black), for classes whose labels carry no colour.
pub fn voc_colour(id: u8) -> [u8; 3] {
    let (mut c, mut rgb) = (id, [0u8; 3]);
    for j in 0..8 {
        for (k, v) in rgb.iter_mut().enumerate() {
            *v |= ((c >> k) & 1) << (7 - j);
        }
        c >>= 3;
    }
    rgb
}

/// The Roboflow COCO layout's annotation file name.
const ROBOFLOW_JSON: &str = "_annotations.coco.json";

impl MaskDataset {
    /// A folder holding a mask dataset: a `classes.csv` with a split of `images/` and
    /// `masks/`, or COCO annotation files in either layout. (A data.yaml is detection data
    /// unless the command is about segmentation, so it is not recognised here.)
    pub fn is_root(dir: &Path) -> bool {
        dir.join("classes.csv").is_file() && !Self::folder_splits(dir).is_empty() || !coco_files(dir).is_empty()
    }

    fn folder_splits(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("images").is_dir() && e.path().join("masks").is_dir())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        names.sort();
        names
    }

    /// Opens a mask folder, a YOLO-seg `data.yaml` (or a folder holding one and no
    /// classes.csv), or a COCO folder.
    pub fn open(path: &Path) -> Result<MaskDataset> {
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if path.join("classes.csv").is_file() {
            Self::open_folder(path)
        } else if is_yaml && path.is_file() || path.join("data.yaml").is_file() {
            Self::open_yolo(path)
        } else if !coco_files(path).is_empty() {
            Self::open_coco(path)
        } else if !path.exists() {
            Err(CoreError::invalid(path, "does not exist"))
        } else {
            Err(CoreError::invalid(
                path,
                "not a segmentation dataset: expected a mask folder (classes.csv, <split>/images, <split>/masks), \
                 a YOLO-seg data.yaml, or COCO JSON (<split>/_annotations.coco.json or annotations/instances_<split>.json)",
            ))
        }
    }

    fn open_folder(root: &Path) -> Result<MaskDataset> {
        let csv = root.join("classes.csv");
        let text = std::fs::read_to_string(&csv).map_err(|e| CoreError::io(&csv, e))?;
        let mut classes: Vec<MaskClass> = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 5 {
                return Err(CoreError::record(&csv, n, format!("expected id,name,r,g,b, got {line:?}")));
            }
            let num = |k: usize, what: &str| {
                f[k].parse::<u8>()
                    .map_err(|_| CoreError::record(&csv, n, format!("{what} {:?} is not a number from 0 to 255", f[k])))
            };
            let class = MaskClass {
                id: num(0, "id")?,
                name: f[1].to_string(),
                rgb: [num(2, "r")?, num(3, "g")?, num(4, "b")?],
            };
            if class.name.is_empty() {
                return Err(CoreError::record(&csv, n, "empty class name"));
            }
            if let Some(o) = classes.iter().find(|o| o.rgb == class.rgb || o.name == class.name) {
                return Err(CoreError::record(&csv, n, format!("{} has the colour or name of {}", class.name, o.name)));
            }
            if usize::from(class.id) != classes.len() {
                return Err(CoreError::record(
                    &csv,
                    n,
                    format!("id {} out of order: ids count up from 0 (expected {})", class.id, classes.len()),
                ));
            }
            classes.push(class);
        }
        if classes.len() < 2 {
            return Err(CoreError::invalid(&csv, "fewer than two classes (background and one more)"));
        }
        Ok(MaskDataset { root: root.to_path_buf(), classes, source: MaskSource::Folder })
    }

    fn open_yolo(path: &Path) -> Result<MaskDataset> {
        let yolo = YoloDataset::from_yaml(path)?;
        let classes = with_background(&yolo.yaml, &yolo.names)?;
        Ok(MaskDataset { root: yolo.yaml.clone(), classes, source: MaskSource::YoloSeg(yolo) })
    }

    fn open_coco(root: &Path) -> Result<MaskDataset> {
        let mut splits = BTreeMap::new();
        let mut classes: Option<(PathBuf, Vec<(u64, String)>)> = None;
        for (split, json, images_dir) in coco_files(root) {
            let ds: CocoDataset = crate::fsio::read_json(&json)?;
            let cats = label_categories(&ds);
            if let Some((first, c)) = &classes {
                if *c != cats {
                    return Err(CoreError::invalid(
                        &json,
                        format!("categories {cats:?} differ from {}'s {c:?}", first.display()),
                    ));
                }
            }
            if classes.is_none() {
                classes = Some((json.clone(), cats.clone()));
            }
            let index: BTreeMap<u64, u8> = cats.iter().enumerate().map(|(i, (id, _))| (*id, i as u8 + 1)).collect();
            let by_id: BTreeMap<u64, PathBuf> =
                ds.images.iter().map(|im| (im.id, images_dir.join(&im.file_name))).collect();
            let mut images: BTreeMap<PathBuf, CocoObjects> = ds
                .images
                .iter()
                .map(|im| {
                    let objects = CocoObjects { width: im.width, height: im.height, objects: Vec::new() };
                    (images_dir.join(&im.file_name), objects)
                })
                .collect();
            for a in ds.annotations {
                let image = by_id.get(&a.image_id).ok_or_else(|| {
                    CoreError::invalid(
                        &json,
                        format!("annotation {}: image_id {} is not in 'images'", a.id, a.image_id),
                    )
                })?;
                let class = *index.get(&a.category_id).ok_or_else(|| {
                    CoreError::invalid(
                        &json,
                        format!("annotation {}: category_id {} is not in 'categories'", a.id, a.category_id),
                    )
                })?;
                let seg = a.segmentation.unwrap_or(Value::Null);
                images.get_mut(image).expect("every image id listed").objects.push((class, a.id, seg));
            }
            splits.insert(split, CocoSplit { json, images_dir, images });
        }
        let (json, cats) = classes.expect("coco_files found one at least");
        let names: Vec<String> = cats.into_iter().map(|(_, n)| n).collect();
        let classes = with_background(&json, &names)?;
        Ok(MaskDataset { root: root.to_path_buf(), classes, source: MaskSource::Coco(splits) })
    }

    /// The file that names the classes (for errors about them).
    pub fn classes_file(&self) -> PathBuf {
        match &self.source {
            MaskSource::Folder => self.root.join("classes.csv"),
            MaskSource::YoloSeg(y) => y.yaml.clone(),
            MaskSource::Coco(s) => s.values().next().map(|c| c.json.clone()).unwrap_or_else(|| self.root.clone()),
        }
    }

    /// What the dataset is, for reports: "masks", "yolo-seg" or "coco-seg".
    pub fn format(&self) -> &'static str {
        match &self.source {
            MaskSource::Folder => "masks",
            MaskSource::YoloSeg(_) => "yolo-seg",
            MaskSource::Coco(_) => "coco-seg",
        }
    }

    pub fn splits(&self) -> Vec<String> {
        match &self.source {
            MaskSource::Folder => Self::folder_splits(&self.root),
            MaskSource::YoloSeg(y) => y.splits.keys().cloned().collect(),
            MaskSource::Coco(s) => s.keys().cloned().collect(),
        }
    }

    /// The dataset's name for `split`: "valid" and "val" name the same split.
    pub fn resolve_split(&self, split: &str) -> Option<String> {
        let names = self.splits();
        let alias = match split {
            "valid" | "validation" => "val",
            "val" => "valid",
            s => s,
        };
        names.iter().find(|n| *n == split).or_else(|| names.iter().find(|n| *n == alias)).cloned()
    }

    fn split_or_err(&self, split: &str) -> Result<String> {
        self.resolve_split(split).ok_or_else(|| {
            CoreError::invalid(&self.root, format!("no split '{split}' (the dataset has {:?})", self.splits()))
        })
    }

    /// Images of `split` with where their masks are: for a mask folder the mask file with the
    /// image's stem, for YOLO-seg the label file (missing: background only), for COCO the JSON.
    pub fn split(&self, split: &str) -> Result<MaskSplit> {
        let mut out = MaskSplit::default();
        match &self.source {
            MaskSource::Folder => {
                let dir = self.root.join(self.split_or_err(split)?);
                let images = super::list_images(&dir.join("images"))?;
                let mut masks: BTreeMap<String, PathBuf> = super::list_images(&dir.join("masks"))?
                    .into_iter()
                    .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
                    .collect();
                for image in images {
                    let stem = image.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    out.pairs.push((image, masks.remove(&stem)));
                }
                out.orphans = masks.into_values().map(|m| (m, "mask without an image (ignored)")).collect();
            }
            MaskSource::YoloSeg(y) => {
                for image in y.split_images(&self.split_or_err(split)?)? {
                    let label = label_path_for(&image);
                    out.pairs.push((image, Some(label)));
                }
            }
            MaskSource::Coco(s) => {
                let c = &s[&self.split_or_err(split)?];
                out.pairs = c.images.keys().map(|i| (i.clone(), Some(c.json.clone()))).collect();
                let listed: BTreeSet<&PathBuf> = c.images.keys().collect();
                if c.images_dir.is_dir() {
                    for file in super::list_images(&c.images_dir)? {
                        if !listed.contains(&file) {
                            out.orphans.push((file, "image the annotation file does not list (ignored)"));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Each image of `split` with its mask; an image without one is an error naming it
    /// (`fieldkit data check` lists them all).
    pub fn pairs(&self, split: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
        let dir = self.resolve_split(split).unwrap_or_else(|| split.to_string());
        self.split(split)?
            .pairs
            .into_iter()
            .map(|(image, mask)| match mask {
                Some(m) => Ok((image, m)),
                None => Err(CoreError::invalid(&image, format!("no mask for it in {dir}/masks"))),
            })
            .collect()
    }

    /// The class id of each pixel of `image`'s mask (`mask` as [`MaskDataset::pairs`] gave
    /// it). `size`, the image's, is checked against the mask's (and needed for YOLO-seg's
    /// normalised polygons: without it only mask files and COCO can be read). Errors name the
    /// file and what is wrong: a colour outside the table (how many pixels, where the first
    /// is), a bad polygon row, an annotation that is not a mask.
    pub fn read_mask(&self, image: &Path, mask: &Path, size: Option<(u32, u32)>) -> Result<ClassMap> {
        let m = match &self.source {
            MaskSource::Folder => self.read_mask_file(mask)?,
            MaskSource::YoloSeg(y) => {
                let (width, height) =
                    size.ok_or_else(|| CoreError::invalid(image, "the image's size is needed to place its polygons"))?;
                let text = match std::fs::read_to_string(mask) {
                    Ok(t) => t,
                    // Ultralytics' reading: an image without a label file is background.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(CoreError::io(mask, e)),
                };
                let (rows, problems) = parse_polygon_text(mask, &text, y.num_classes());
                if let Some(e) = problems.into_iter().next() {
                    return Err(e);
                }
                let (wf, hf) = (f64::from(width), f64::from(height));
                let objects = rows
                    .into_iter()
                    .map(|(c, xy)| {
                        let px: Vec<f64> = xy.chunks(2).flat_map(|p| [p[0] * wf, p[1] * hf]).collect();
                        (c as u8 + 1, Rle::from_polygon(&px, height, width))
                    })
                    .collect();
                paint(objects, width, height)
            }
            MaskSource::Coco(s) => {
                let c = s
                    .values()
                    .find(|c| c.json == mask)
                    .ok_or_else(|| CoreError::invalid(mask, "not one of the dataset's annotation files"))?;
                let o = c
                    .images
                    .get(image)
                    .ok_or_else(|| CoreError::invalid(image, format!("not listed in {}", mask.display())))?;
                let mut objects = Vec::with_capacity(o.objects.len());
                for (class, id, seg) in &o.objects {
                    let rle = coco_rle(seg, o.height, o.width)
                        .map_err(|msg| CoreError::invalid(mask, format!("annotation {id}: {msg}")))?;
                    objects.push((*class, rle));
                }
                paint(objects, o.width, o.height)
            }
        };
        if let Some((width, height)) = size {
            if (m.width, m.height) != (width, height) {
                let what = match self.source {
                    MaskSource::Coco(_) => format!(
                        "{} gives it as {}x{}, the image is {width}x{height}",
                        mask.display(),
                        m.width,
                        m.height
                    ),
                    _ => format!("mask is {}x{}, its image {width}x{height}", m.width, m.height),
                };
                let at = if matches!(self.source, MaskSource::Coco(_)) { image } else { mask };
                return Err(CoreError::invalid(at, what));
            }
        }
        Ok(m)
    }

    /// A mask image: RGB in the table's colours, or one channel of class ids.
    fn read_mask_file(&self, path: &Path) -> Result<ClassMap> {
        let img = image::open(path).map_err(|e| CoreError::Image { path: path.into(), msg: e.to_string() })?;
        let (width, height) = (img.width(), img.height());
        let ids = if img.color().channel_count() == 1 {
            let luma = img.into_luma8();
            if let Some((k, v)) = luma.as_raw().iter().enumerate().find(|(_, &v)| usize::from(v) >= self.classes.len())
            {
                let n = luma.as_raw().iter().filter(|&&x| x == *v).count();
                return Err(CoreError::invalid(
                    path,
                    format!(
                        "class id {v} in {n} pixels (first at x={}, y={}), but classes.csv has ids 0..{}",
                        k as u32 % width,
                        k as u32 / width,
                        self.classes.len() - 1
                    ),
                ));
            }
            luma.into_raw()
        } else {
            let rgb = img.into_rgb8();
            let mut ids = Vec::with_capacity((width * height) as usize);
            let mut unknown: BTreeMap<[u8; 3], (usize, usize)> = BTreeMap::new();
            for (k, p) in rgb.pixels().enumerate() {
                match self.classes.iter().find(|c| c.rgb == p.0) {
                    Some(c) => ids.push(c.id),
                    None => {
                        unknown.entry(p.0).or_insert((0, k)).0 += 1;
                        ids.push(0);
                    }
                }
            }
            if let Some((c, (n, k))) = unknown.iter().max_by_key(|(_, (n, _))| *n) {
                return Err(CoreError::invalid(
                    path,
                    format!(
                        "{} pixels in {} colour{} outside classes.csv; most: rgb({},{},{}) in {n} pixels, first at x={}, y={}",
                        unknown.values().map(|v| v.0).sum::<usize>(),
                        unknown.len(),
                        if unknown.len() == 1 { "" } else { "s" },
                        c[0],
                        c[1],
                        c[2],
                        *k as u32 % width,
                        *k as u32 / width
                    ),
                ));
            }
            ids
        };
        Ok(ClassMap { width, height, ids })
    }
}

/// Background first, then the label classes; a label class named "background" would be
/// two classes under one name.
fn with_background(file: &Path, names: &[String]) -> Result<Vec<MaskClass>> {
    if names.len() > 254 {
        return Err(CoreError::invalid(
            file,
            format!("{} classes: at most 254 fit a mask (255 is 'ignore')", names.len()),
        ));
    }
    if names.iter().any(|n| n == "background") {
        return Err(CoreError::invalid(
            file,
            "a class is named 'background': class 0, the pixels no object covers, has that name; rename it",
        ));
    }
    Ok(std::iter::once("background".to_string())
        .chain(names.iter().cloned())
        .enumerate()
        .map(|(i, name)| MaskClass { id: i as u8, name, rgb: voc_colour(i as u8) })
        .collect())
}

/// The categories objects can have, by id. Roboflow adds a parent category (the project's
/// name, the other categories' `supercategory`) that no annotation uses; it is left out.
fn label_categories(ds: &CocoDataset) -> Vec<(u64, String)> {
    let used: BTreeSet<u64> = ds.annotations.iter().map(|a| a.category_id).collect();
    let parents: BTreeSet<&str> = ds.categories.iter().filter_map(|c| c.supercategory.as_deref()).collect();
    let mut cats: Vec<(u64, String)> = ds
        .categories
        .iter()
        .filter(|c| used.contains(&c.id) || !parents.contains(c.name.as_str()))
        .map(|c| (c.id, c.name.clone()))
        .collect();
    cats.sort();
    cats
}

/// COCO annotation files under `root`, as (split, JSON, images folder), by split name.
fn coco_files(root: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let dir = entry.path();
        let json = dir.join(ROBOFLOW_JSON);
        if json.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), json, dir));
            }
        }
    }
    for entry in std::fs::read_dir(root.join("annotations")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(split) = name.strip_prefix("instances_").and_then(|s| s.strip_suffix(".json")) {
            if !out.iter().any(|(s, _, _)| s == split) {
                out.push((split.to_string(), entry.path(), root.join(split)));
            }
        }
    }
    out.sort();
    out
}

/// A COCO `segmentation` as one mask: polygons (their union), uncompressed or compressed RLE.
fn coco_rle(seg: &Value, height: u32, width: u32) -> std::result::Result<Rle, String> {
    match seg {
        Value::Array(polys) if !polys.is_empty() => {
            let mut parts = Vec::with_capacity(polys.len());
            for (i, p) in polys.iter().enumerate() {
                let xy: Vec<f64> = p
                    .as_array()
                    .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .ok_or_else(|| format!("segmentation polygon {i} is not a list of numbers"))?;
                if xy.len() < 6 || xy.len() % 2 == 1 {
                    return Err(format!(
                        "segmentation polygon {i} has {} numbers: a polygon is x y pairs, 3 or more",
                        xy.len()
                    ));
                }
                parts.push(Rle::from_polygon(&xy, height, width));
            }
            Ok(Rle::union(&parts).expect("one polygon at least"))
        }
        Value::Object(o) => {
            let size: Vec<u64> = o
                .get("size")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_u64).collect())
                .ok_or("RLE without a 'size' [height, width]")?;
            if size != [u64::from(height), u64::from(width)] {
                return Err(format!("RLE size {size:?}, the image is [{height}, {width}] (height, width)"));
            }
            match o.get("counts") {
                Some(Value::String(s)) => Rle::from_compressed(s, height, width),
                Some(Value::Array(a)) => {
                    let counts: Vec<u32> = a
                        .iter()
                        .map(|v| v.as_u64().and_then(|c| u32::try_from(c).ok()))
                        .collect::<Option<_>>()
                        .ok_or("RLE counts are not all whole numbers")?;
                    Rle::from_counts(counts, height, width)
                }
                _ => Err("RLE without 'counts'".into()),
            }
        }
        _ => Err("no segmentation (polygons or RLE): a box alone is not a mask".into()),
    }
}

/// Objects painted over background, largest first so a smaller one stays visible on top.
fn paint(mut objects: Vec<(u8, Rle)>, width: u32, height: u32) -> ClassMap {
    objects.sort_by_key(|(_, r)| std::cmp::Reverse(r.area()));
    let mut ids = vec![0u8; width as usize * height as usize];
    for (class, rle) in &objects {
        rle.paint(&mut ids, *class);
    }
    ClassMap { width, height, ids }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage};

    fn dataset(dir: &Path) {
        std::fs::write(dir.join("classes.csv"), "id,name,r,g,b\n0,background,0,0,0\n1,crop,0,255,0\n2,weed,255,0,0\n")
            .unwrap();
        for split in ["train", "valid"] {
            std::fs::create_dir_all(dir.join(split).join("images")).unwrap();
            std::fs::create_dir_all(dir.join(split).join("masks")).unwrap();
        }
        let photo = |name: &str, w, h, shade: u8| {
            RgbImage::from_fn(w, h, |x, y| Rgb([shade, (x * 7) as u8, (y * 5) as u8])).save(dir.join(name)).unwrap()
        };
        // a: good (a crop square on background); b: mask of another size; c: no mask;
        // d: a mask with no image; e: two colours outside the table; f: an id mask (0..2).
        for (name, shade) in [("a", 10), ("b", 60), ("c", 110), ("e", 160), ("f", 210)] {
            photo(&format!("train/images/{name}.png"), 40, 30, shade);
        }
        let mut good = RgbImage::new(40, 30);
        for y in 0..10 {
            for x in 0..10 {
                good.put_pixel(x, y, Rgb([0, 255, 0]));
            }
        }
        good.save(dir.join("train/masks/a.png")).unwrap();
        RgbImage::new(20, 30).save(dir.join("train/masks/b.png")).unwrap();
        RgbImage::new(40, 30).save(dir.join("train/masks/d.png")).unwrap();
        let mut odd = RgbImage::new(40, 30);
        odd.put_pixel(3, 2, Rgb([0, 0, 255]));
        odd.put_pixel(5, 2, Rgb([0, 0, 255]));
        odd.put_pixel(7, 7, Rgb([9, 9, 9]));
        odd.save(dir.join("train/masks/e.png")).unwrap();
        GrayImage::from_fn(40, 30, |x, _| image::Luma([(x % 3) as u8])).save(dir.join("train/masks/f.png")).unwrap();
        // Unlike the train photos (their gradients would look alike to the copy check).
        RgbImage::from_fn(40, 30, |x, y| Rgb([if (x / 5 + y / 5) % 2 == 0 { 250 } else { 5 }, 30, 200]))
            .save(dir.join("valid/images/g.png"))
            .unwrap();
        GrayImage::from_pixel(40, 30, image::Luma([2])).save(dir.join("valid/masks/g.png")).unwrap();
    }

    /// `data check` on a mask folder: each problem named with its file (a mask of another size,
    /// an image without a mask, a mask without an image, colours outside the table), and the
    /// pixels of the good masks counted per class, RGB and id masks alike.
    #[test]
    fn mask_folders_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        assert!(MaskDataset::is_root(dir.path()));
        let r = crate::dataset::check::check(dir.path()).unwrap();
        assert_eq!(r.format, "masks");
        assert_eq!(r.classes, ["background", "crop", "weed"]);
        let said: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |file: &str, what: &str| {
            assert!(said.iter().any(|p| p.contains(file) && p.contains(what)), "{file}: {what} not in {said:#?}")
        };
        has("masks/b.png", "mask is 20x30, its image 40x30");
        has("images/c.png", "no mask (expected train/masks/c.png)");
        has("masks/d.png", "warning");
        has("masks/d.png", "mask without an image");
        has(
            "masks/e.png",
            "3 pixels in 2 colours outside classes.csv; most: rgb(0,0,255) in 2 pixels, first at x=3, y=2",
        );
        assert_eq!((r.errors, r.warnings), (3, 1), "{said:#?}");
        let train = &r.splits.iter().find(|s| s.name == "train").unwrap().class_counts;
        // a: 100 crop + 1100 background; f: columns cycling 0, 1, 2 over 40 columns × 30 rows.
        assert_eq!(train["crop"], 100 + 13 * 30);
        assert_eq!(train["weed"], 13 * 30);
        assert_eq!(train["background"], 1100 + 14 * 30);
        assert_eq!(r.splits.iter().find(|s| s.name == "valid").unwrap().class_counts["weed"], 1200);
    }

    /// classes.csv errors name the file and line.
    #[test]
    fn a_bad_class_table_is_named() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let csv = dir.path().join("classes.csv");
        for (text, want) in [
            ("id,name,r,g,b\n0,background,0,0,0\n1,crop,0,300,0\n", "classes.csv:3: g \"300\" is not a number"),
            ("id,name,r,g,b\n0,background,0,0,0\n2,crop,0,255,0\n", "classes.csv:3: id 2 out of order"),
            (
                "id,name,r,g,b\n0,background,0,0,0\n1,crop,0,0,0\n",
                "classes.csv:3: crop has the colour or name of background",
            ),
            ("id,name,r,g,b\n0,background,0,0,0\n", "fewer than two classes"),
            ("id,name,r,g,b\n0,background,0,0\n", "classes.csv:2: expected id,name,r,g,b"),
        ] {
            std::fs::write(&csv, text).unwrap();
            let e = MaskDataset::open(dir.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    fn photo(path: &Path, w: u32, h: u32, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_fn(w, h, |x, y| Rgb([shade, (x * 3 + y) as u8, (y * 11) as u8])).save(path).unwrap();
    }

    /// The same two objects per image as YOLO-seg rows (normalised to 40x30) and as COCO
    /// polygons in pixels: a weed triangle lying over a crop square, so the smaller weed stays on top.
    const SQUARE: [f64; 8] = [4.0, 3.0, 24.0, 3.0, 24.0, 21.0, 4.0, 21.0];
    const TRIANGLE: [f64; 6] = [10.0, 6.0, 30.0, 12.0, 12.0, 27.0];

    fn yolo_row(class: usize, xy: &[f64]) -> String {
        let coords: Vec<String> = xy.chunks(2).map(|p| format!("{:.6} {:.6}", p[0] / 40.0, p[1] / 30.0)).collect();
        format!("{class} {}", coords.join(" "))
    }

    /// YOLO-seg: class k is id k + 1 over background; polygons rasterize as pycocotools does,
    /// the smaller object on top; a box row, a short polygon and a class out of range are
    /// named with file and line; an image without a label is background (a warning in check).
    #[test]
    fn yolo_seg_polygons_become_class_maps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("data.yaml"),
            "path: .\ntrain: train/images\nval: valid/images\nnames: [crop, weed]\n",
        )
        .unwrap();
        for (split, names) in [("train", ["a", "b", "c"]), ("valid", ["d", "e", "f"])] {
            for (k, n) in names.iter().enumerate() {
                photo(
                    &root.join(format!("{split}/images/{n}.png")),
                    40,
                    30,
                    40 * k as u8 + if split == "train" { 0 } else { 20 },
                );
            }
            std::fs::create_dir_all(root.join(split).join("labels")).unwrap();
        }
        let good = format!("{}\n{}\n", yolo_row(0, &SQUARE), yolo_row(1, &TRIANGLE));
        std::fs::write(root.join("train/labels/a.txt"), &good).unwrap();
        std::fs::write(
            root.join("train/labels/b.txt"),
            "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.2 0.3\n3 0.1 0.1 0.5 0.1 0.3 0.6\n",
        )
        .unwrap();
        // c has no label file; valid d is good, e and f empty files.
        std::fs::write(root.join("valid/labels/d.txt"), &good).unwrap();
        std::fs::write(root.join("valid/labels/e.txt"), "").unwrap();
        std::fs::write(root.join("valid/labels/f.txt"), "").unwrap();

        let ds = MaskDataset::open(&root.join("data.yaml")).unwrap();
        assert_eq!(ds.format(), "yolo-seg");
        let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["background", "crop", "weed"]);
        assert_eq!(ds.resolve_split("valid").as_deref(), Some("val"));
        let pairs = ds.pairs("valid").unwrap();
        assert_eq!(pairs.len(), 3);
        let m = ds.read_mask(&pairs[0].0, &pairs[0].1, Some((40, 30))).unwrap();
        let square = Rle::from_polygon(&SQUARE, 30, 40).decode();
        let tri = Rle::from_polygon(&TRIANGLE, 30, 40).decode();
        for k in 0..1200 {
            let want = if tri[k] == 1 {
                2
            } else if square[k] == 1 {
                1
            } else {
                0
            };
            assert_eq!(m.ids[k], want, "pixel {k}");
        }
        // Without the image's size the polygons cannot be placed.
        assert!(ds.read_mask(&pairs[0].0, &pairs[0].1, None).unwrap_err().to_string().contains("size"));

        let r = crate::dataset::check::check_masks(&root.join("data.yaml")).unwrap();
        assert_eq!(r.format, "yolo-seg");
        let said: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |what: &str| assert!(said.iter().any(|p| p.contains(what)), "{what} not in {said:#?}");
        has("b.txt:1: a box ('class cx cy w h')");
        has("c.txt");
        has("no label file: the image is all background");
        // Only the first bad row of a file stops its reading; data check reports it.
        assert_eq!((r.errors, r.warnings), (1, 1), "{said:#?}");
        let (rows, problems) = parse_polygon_text(
            Path::new("b.txt"),
            "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.2 0.3\n3 0.1 0.1 0.5 0.1 0.3 0.6\n",
            2,
        );
        assert!(rows.is_empty());
        let problems: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
        assert!(problems[1].contains("b.txt:2: expected a polygon"), "{problems:?}");
        assert!(problems[2].contains("b.txt:3: class id 3 out of range"), "{problems:?}");
        let valid = &r.splits.iter().find(|s| s.name == "val").unwrap().class_counts;
        let weed = tri.iter().filter(|&&v| v == 1).count();
        assert_eq!(valid["weed"], weed);
        assert_eq!(valid["crop"], square.iter().zip(&tri).filter(|(s, t)| **s == 1 && **t == 0).count());
        assert_eq!(valid["background"], 3 * 1200 - valid["weed"] - valid["crop"]);
    }

    /// COCO in Roboflow's layout: polygons, uncompressed and compressed RLE give the masks
    /// pycocotools would; Roboflow's unused parent category is not a class; an annotation with
    /// no mask, an RLE of the wrong size and an image the JSON does not list are named.
    #[test]
    fn coco_polygons_and_rle_become_class_maps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let blob = Rle::from_polygon(&[2.0, 20.0, 9.0, 20.0, 9.0, 29.0, 2.0, 29.0], 30, 40);
        let compressed = blob.to_compressed();
        let cats = serde_json::json!([
            {"id": 0, "name": "peanut-field", "supercategory": "none"},
            {"id": 1, "name": "crop", "supercategory": "peanut-field"},
            {"id": 2, "name": "weed", "supercategory": "peanut-field"}
        ]);
        for (split, good) in [("train", true), ("valid", false)] {
            let d = root.join(split);
            photo(&d.join("a.jpg"), 40, 30, if good { 10 } else { 200 });
            photo(&d.join("b.jpg"), 40, 30, if good { 90 } else { 150 });
            let mut anns = vec![
                serde_json::json!({"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 3, 20, 18], "segmentation": [SQUARE.to_vec()]}),
                serde_json::json!({"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 6, 20, 21], "segmentation": [TRIANGLE.to_vec()]}),
                serde_json::json!({"id": 3, "image_id": 2, "category_id": 2, "bbox": [2, 20, 7, 9], "segmentation": {"counts": blob.counts, "size": [30, 40]}}),
                serde_json::json!({"id": 4, "image_id": 2, "category_id": 1, "bbox": [2, 20, 7, 9], "iscrowd": 1, "segmentation": {"counts": compressed, "size": [30, 40]}}),
            ];
            if !good {
                anns.push(serde_json::json!({"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "segmentation": []}));
                anns[2]["segmentation"]["size"] = serde_json::json!([40, 30]);
                photo(&d.join("unlisted.jpg"), 40, 30, 250);
            }
            let json = serde_json::json!({
                "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}],
                "annotations": anns,
                "categories": cats,
            });
            std::fs::write(d.join(ROBOFLOW_JSON), json.to_string()).unwrap();
        }
        assert!(MaskDataset::is_root(root));
        let ds = MaskDataset::open(root).unwrap();
        assert_eq!(ds.format(), "coco-seg");
        let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["background", "crop", "weed"]);
        let pairs = ds.pairs("train").unwrap();
        let a = ds.read_mask(&pairs[0].0, &pairs[0].1, Some((40, 30))).unwrap();
        let square = Rle::from_polygon(&SQUARE, 30, 40).decode();
        let tri = Rle::from_polygon(&TRIANGLE, 30, 40).decode();
        for k in 0..1200 {
            assert_eq!(
                a.ids[k],
                if tri[k] == 1 {
                    2
                } else if square[k] == 1 {
                    1
                } else {
                    0
                },
                "pixel {k}"
            );
        }
        // b: the same blob as weed (counts) and crop (string): equal areas keep the file's order.
        let b = ds.read_mask(&pairs[1].0, &pairs[1].1, None).unwrap();
        assert_eq!(b.ids.iter().filter(|&&v| v == 1).count() as u64, blob.area());
        assert!(b.ids.iter().all(|&v| v != 2));
        // A photo of another size than the JSON says.
        let e = ds.read_mask(&pairs[1].0, &pairs[1].1, Some((41, 30))).unwrap_err().to_string();
        assert!(e.contains("b.jpg") && e.contains("40x30, the image is 41x30"), "{e}");

        let r = crate::dataset::check::check(root).unwrap();
        assert_eq!(r.format, "coco-seg");
        let said: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |what: &str| assert!(said.iter().any(|p| p.contains(what)), "{what} not in {said:#?}");
        has("annotation 5: no segmentation");
        has("annotation 3: RLE size [40, 30], the image is [30, 40]");
        has("unlisted.jpg");
        assert_eq!((r.errors, r.warnings), (2, 1), "{said:#?}");
    }
}
