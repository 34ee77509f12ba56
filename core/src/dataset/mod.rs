//! Dataset readers. Each returns typed samples and fails with the file, line and value
//! of the first bad record; `check` collects every problem instead of stopping at one.

pub mod check;
pub mod coco;
pub mod eval_data;
pub mod imagefolder;
pub mod masks;
pub mod photos;
pub mod rle;
pub mod yolo;

use std::path::{Path, PathBuf};

pub use coco::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage, CocoPrediction};
pub use eval_data::EvalData;
pub use imagefolder::{ClassSample, ImageFolder};
pub use yolo::{DetSample, YoloBox, YoloDataset};

/// File extensions the image decoder handles (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Sorted list of the image files directly inside `dir`.
pub fn list_images(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| crate::CoreError::io(dir, e))? {
        let entry = entry.map_err(|e| crate::CoreError::io(dir, e))?;
        let p = entry.path();
        if p.is_file() && is_image(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Sorted list of the image files anywhere under `dir` (sub-folders included).
pub fn list_images_recursive(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> crate::Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| crate::CoreError::io(dir, e))? {
            let p = entry.map_err(|e| crate::CoreError::io(dir, e))?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_image(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Stable content fingerprint of a list of files: sha256 over (name, size) pairs in order,
/// cheap enough to compute on every training run and recorded in the model card.
pub fn fingerprint<'a>(items: impl IntoIterator<Item = (&'a Path, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (path, label) in items {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(label.as_bytes());
        h.update([0]);
        h.update(size.to_le_bytes());
    }
    crate::fsio::hex(&h.finalize())
}
