//! `root/<split>/<class>/*.jpg|png`, the torchvision ImageFolder layout.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::{fingerprint, is_image, list_images};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub split: String,
    /// Class names sorted byte-wise (as torchvision does), so indices are stable.
    pub classes: Vec<String>,
    pub samples: Vec<ClassSample>,
}

impl ImageFolder {
    /// Opens `root/split`, taking the class list from its sub-directories.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        let dir = root.join(split);
        let classes = class_dirs(&dir)?;
        Self::open_with_classes(root, split, &classes)
    }

    /// Opens `root/split` with a class list fixed elsewhere (e.g. by the train split or a
    /// model card). A class directory not in the list is an error: its images would be
    /// silently dropped otherwise. A listed class may be absent (no samples of it).
    pub fn open_with_classes(root: &Path, split: &str, classes: &[String]) -> Result<Self> {
        let dir = root.join(split);
        let present = class_dirs(&dir)?;
        if let Some(extra) = present.iter().find(|c| !classes.contains(c)) {
            return Err(CoreError::invalid(
                dir.join(extra),
                format!("class directory '{extra}' is not one of the known classes {classes:?}"),
            ));
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let cdir = dir.join(class);
            if !cdir.is_dir() {
                continue;
            }
            for path in list_images(&cdir)? {
                samples.push(ClassSample { path, label });
            }
        }
        if samples.is_empty() {
            return Err(CoreError::invalid(&dir, "no images (.jpg, .jpeg, .png) found in any class directory"));
        }
        Ok(ImageFolder { root: root.to_path_buf(), split: split.to_string(), classes: classes.to_vec(), samples })
    }

    /// Number of samples per class, indexed like `classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label] += 1;
        }
        counts
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.samples.iter().map(|s| (s.path.as_path(), self.classes[s.label].as_str())))
    }

    /// The splits present under `root`: sub-directories that themselves hold class
    /// directories with images, sorted.
    pub fn splits(root: &Path) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| CoreError::io(root, e))? {
            let p = entry.map_err(|e| CoreError::io(root, e))?.path();
            if p.is_dir() && class_dirs(&p).map(|c| !c.is_empty()).unwrap_or(false) {
                let has_images = class_dirs(&p)?.iter().any(|c| {
                    std::fs::read_dir(p.join(c))
                        .map(|mut it| it.any(|e| e.map(|e| is_image(&e.path())).unwrap_or(false)))
                        .unwrap_or(false)
                });
                if has_images {
                    out.push(p.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Sorted names of the sub-directories of `dir`.
fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(CoreError::invalid(dir, "split directory does not exist"));
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        if entry.path().is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(name);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(CoreError::invalid(dir, "no class directories found (expected <split>/<class>/*.jpg)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn classes_sorted_and_labels_follow() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("train/zebra/1.jpg"));
        touch(&d.path().join("train/Apple/2.PNG"));
        touch(&d.path().join("train/apple/3.jpeg"));
        touch(&d.path().join("train/apple/notes.txt"));
        let ds = ImageFolder::open(d.path(), "train").unwrap();
        assert_eq!(ds.classes, vec!["Apple", "apple", "zebra"]);
        assert_eq!(ds.class_counts(), vec![1, 1, 1]);
        assert_eq!(ds.samples[2].label, 2);
        assert_eq!(ImageFolder::splits(d.path()).unwrap(), vec!["train"]);
    }

    #[test]
    fn unknown_class_in_valid_is_named() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("valid/a/1.jpg"));
        touch(&d.path().join("valid/weird/1.jpg"));
        let err = ImageFolder::open_with_classes(d.path(), "valid", &["a".into()]).unwrap_err().to_string();
        assert!(err.contains("weird"), "{err}");
    }

    #[test]
    fn missing_split_and_empty_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = ImageFolder::open(d.path(), "train").unwrap_err().to_string();
        assert!(err.contains("train") && err.contains("does not exist"), "{err}");
        fs::create_dir_all(d.path().join("train/a")).unwrap();
        let err = ImageFolder::open(d.path(), "train").unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
    }
}
