//! Resolving `--data` for evaluation: an ImageFolder root (classifiers) or a YOLO data.yaml
//! (detectors), with the split named by `--split` or the first of the usual names present.

use std::path::Path;

use anyhow::{bail, Result};
use fieldkit_core::dataset::{ImageFolder, YoloDataset};

pub enum EvalData {
    Classes(ImageFolder),
    Boxes { data: YoloDataset, split: String },
}

pub fn open(path: &Path, split: Option<&str>, model_classes: &[String]) -> Result<EvalData> {
    let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    if is_yaml || path.join("data.yaml").is_file() {
        let data = YoloDataset::from_yaml(path)?;
        let split = match split {
            Some(s) => s.to_string(),
            None => ["val", "test", "train"].iter().find(|s| data.splits.contains_key(**s)).unwrap().to_string(),
        };
        return Ok(EvalData::Boxes { data, split });
    }
    let split = match split {
        Some(s) => s.to_string(),
        None => match ["valid", "val", "test"].iter().find(|s| path.join(s).is_dir()) {
            Some(s) => s.to_string(),
            None => bail!("{}: no valid/, val/ or test/ split folder (pass --split)", path.display()),
        },
    };
    // Evaluate in the model's class order, so a split missing a class still lines up.
    Ok(EvalData::Classes(ImageFolder::open_with_classes(path, &split, model_classes)?))
}
