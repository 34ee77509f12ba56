//! Resolving a `--data`/`--val` argument for evaluation: an ImageFolder root (classifiers), a
//! YOLO data.yaml (detectors) or segmentation data (segmenters: a mask folder, COCO, or a
//! data.yaml read as YOLO-seg), with the split named by the
//! caller or the first of the usual names present. Shared by `fieldkit eval`, `bench --val`
//! and `quantize --val`.

use std::path::Path;

use super::masks::MaskDataset;
use super::{ImageFolder, YoloDataset};
use crate::{CoreError, ModelCard, Result, Task};

pub enum EvalData {
    Classes(ImageFolder),
    Boxes { data: YoloDataset, split: String },
    Masks { data: MaskDataset, split: String },
}

impl EvalData {
    /// Opens `path` for the model `card` describes, in its class order (so a split missing a
    /// class still lines up). Data of the other task's kind is refused by name: a detector
    /// given an ImageFolder used to fail on its first class folder, naming the model's classes.
    pub fn open(path: &Path, split: Option<&str>, card: &ModelCard) -> Result<Self> {
        let model_classes = &card.classes;
        let masks = MaskDataset::is_root(path);
        match (card.task, masks) {
            (task, true) if task != Task::Segment => {
                return Err(CoreError::invalid(
                    path,
                    format!("a segmentation dataset scores a segmenter; the model's task is {task:?}"),
                ))
            }
            _ => {}
        }
        if card.task == Task::Segment {
            // A mask folder, a COCO folder, or a data.yaml read as YOLO-seg polygons.
            let data = MaskDataset::open(path)?;
            let split = match split {
                Some(s) => s.to_string(),
                None => ["valid", "test"].iter().find_map(|s| data.resolve_split(s)).ok_or_else(|| {
                    CoreError::invalid(
                        path,
                        format!("no valid/val or test split (pass --split; it has {:?})", data.splits()),
                    )
                })?,
            };
            return Ok(EvalData::Masks { data, split });
        }
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let boxes = is_yaml || path.join("data.yaml").is_file();
        match (card.task, boxes) {
            (Task::Detect, false) => {
                return Err(CoreError::invalid(
                    path,
                    "the model is a detector, which is scored on a YOLO data.yaml (its val split); this is not one",
                ))
            }
            (Task::Classify, true) => {
                return Err(CoreError::invalid(
                    path,
                    "the model is a classifier, which is scored on an ImageFolder root (valid/<class>/ folders); this is a YOLO dataset",
                ))
            }
            _ => {}
        }
        if boxes {
            let data = YoloDataset::from_yaml(path)?;
            let split = match split {
                Some(s) => s.to_string(),
                None => ["val", "test", "train"]
                    .iter()
                    .find(|s| data.splits.contains_key(**s))
                    .ok_or_else(|| CoreError::invalid(&data.yaml, "no val, test or train split to evaluate on"))?
                    .to_string(),
            };
            return Ok(EvalData::Boxes { data, split });
        }
        let split = match split {
            Some(s) => s.to_string(),
            None => match ["valid", "val", "test"].iter().find(|s| path.join(s).is_dir()) {
                Some(s) => s.to_string(),
                None => {
                    return Err(CoreError::invalid(path, "no valid/, val/ or test/ split folder (pass --split)"));
                }
            },
        };
        Ok(EvalData::Classes(ImageFolder::open_with_classes(path, &split, model_classes)?))
    }
}
