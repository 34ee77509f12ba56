//! Segmentation masks as folders: `<root>/classes.csv` (`id,name,r,g,b`: the colour each class
//! has in the masks) and per split `images/NAME.jpg` beside `masks/NAME.png`. A mask is an RGB
//! image in the table's colours, or a single-channel image whose values are class ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskClass {
    pub id: u8,
    pub name: String,
    pub rgb: [u8; 3],
}

#[derive(Debug, Clone)]
pub struct MaskDataset {
    pub root: PathBuf,
    /// In id order; ids are 0..n.
    pub classes: Vec<MaskClass>,
}

/// One split's files: each image with its mask (`None`: missing), and masks with no image.
#[derive(Debug, Default)]
pub struct MaskSplit {
    pub pairs: Vec<(PathBuf, Option<PathBuf>)>,
    pub orphans: Vec<PathBuf>,
}

/// A decoded mask: its size and one class id per pixel, row by row.
#[derive(Debug)]
pub struct ClassMap {
    pub width: u32,
    pub height: u32,
    pub ids: Vec<u8>,
}

impl MaskDataset {
    /// A folder laid out this way: a `classes.csv` and a split holding `images/` and `masks/`.
    pub fn is_root(dir: &Path) -> bool {
        dir.join("classes.csv").is_file() && !Self::split_names(dir).is_empty()
    }

    fn split_names(root: &Path) -> Vec<String> {
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

    pub fn open(root: &Path) -> Result<MaskDataset> {
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
        Ok(MaskDataset { root: root.to_path_buf(), classes })
    }

    pub fn splits(&self) -> Vec<String> {
        Self::split_names(&self.root)
    }

    /// Images and masks of `split`, paired by file stem.
    pub fn split(&self, split: &str) -> Result<MaskSplit> {
        let dir = self.root.join(split);
        let images = super::list_images(&dir.join("images"))?;
        let mut masks: BTreeMap<String, PathBuf> = super::list_images(&dir.join("masks"))?
            .into_iter()
            .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
            .collect();
        let mut out = MaskSplit::default();
        for image in images {
            let stem = image.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            out.pairs.push((image, masks.remove(&stem)));
        }
        out.orphans = masks.into_values().collect();
        Ok(out)
    }

    /// Each image of `split` with its mask; an image without one is an error naming it
    /// (`fieldkit data check` lists them all).
    pub fn pairs(&self, split: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
        self.split(split)?
            .pairs
            .into_iter()
            .map(|(image, mask)| match mask {
                Some(m) => Ok((image, m)),
                None => Err(CoreError::invalid(&image, format!("no mask for it in {split}/masks"))),
            })
            .collect()
    }

    /// [`MaskDataset::read_mask`] for an image of `width` x `height`: a mask of another size
    /// is an error naming both sizes.
    pub fn read_mask_for(&self, path: &Path, (width, height): (u32, u32)) -> Result<ClassMap> {
        let m = self.read_mask(path)?;
        if (m.width, m.height) != (width, height) {
            return Err(CoreError::invalid(
                path,
                format!("mask is {}x{}, its image {width}x{height}", m.width, m.height),
            ));
        }
        Ok(m)
    }

    /// The class id of each pixel of the mask at `path`. A colour outside the table is an
    /// error naming the colour, how many pixels have it and where the first one is.
    pub fn read_mask(&self, path: &Path) -> Result<ClassMap> {
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
}
