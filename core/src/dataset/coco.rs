//! COCO instances JSON (ground truth) and COCO results JSON (predictions): read, validate, write.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::fsio;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels, top-left origin.
    pub bbox: [f64; 4],
    /// Defaults to the box area when absent; COCO area ranges use this value.
    #[serde(default)]
    pub area: Option<f64>,
    #[serde(default, deserialize_with = "bool_or_int", serialize_with = "bool_as_int")]
    pub iscrowd: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<serde_json::Value>,
}

impl CocoAnnotation {
    pub fn area(&self) -> f64 {
        self.area.unwrap_or(self.bbox[2] * self.bbox[3])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDataset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

/// One detection in the COCO results format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoPrediction {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub score: f64,
}

impl CocoPrediction {
    /// A detection (`[x1, y1, x2, y2]` source pixels, 0-based class) as a COCO result of
    /// `image_id`, category id = class + 1 (the ids `YoloDataset::to_coco` gives).
    pub fn from_box(image_id: u64, bbox: [f32; 4], class: usize, score: f32) -> Self {
        let [x1, y1, x2, y2] = bbox;
        CocoPrediction {
            image_id,
            category_id: class as u64 + 1,
            bbox: [x1 as f64, y1 as f64, (x2 - x1) as f64, (y2 - y1) as f64],
            score: score as f64,
        }
    }
}

fn bool_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0) != 0.0),
        serde_json::Value::Null => Ok(false),
        other => Err(serde::de::Error::custom(format!("iscrowd: expected 0/1, got {other}"))),
    }
}

fn bool_as_int<S: serde::Serializer>(b: &bool, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u8(*b as u8)
}

fn check_box(path: &Path, what: &str, bbox: &[f64; 4]) -> Result<()> {
    if bbox.iter().any(|v| !v.is_finite()) || bbox[2] < 0.0 || bbox[3] < 0.0 {
        return Err(CoreError::invalid(
            path,
            format!("{what}: bbox {bbox:?} must be finite [x, y, w, h] with w, h >= 0"),
        ));
    }
    Ok(())
}

impl CocoDataset {
    pub fn read(path: &Path) -> Result<Self> {
        let ds: CocoDataset = fsio::read_json(path)?;
        ds.validate(path)?;
        Ok(ds)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate(path)?;
        fsio::write_json(path, self)
    }

    /// Referential checks a JSON schema cannot express.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let mut image_ids = HashSet::new();
        for im in &self.images {
            if !image_ids.insert(im.id) {
                return Err(CoreError::invalid(path, format!("images: duplicate id {}", im.id)));
            }
        }
        let mut cat_ids = HashSet::new();
        for c in &self.categories {
            if !cat_ids.insert(c.id) {
                return Err(CoreError::invalid(path, format!("categories: duplicate id {}", c.id)));
            }
        }
        let mut ann_ids = HashSet::new();
        for a in &self.annotations {
            let what = format!("annotation id {}", a.id);
            if !ann_ids.insert(a.id) {
                return Err(CoreError::invalid(path, format!("annotations: duplicate id {}", a.id)));
            }
            if !image_ids.contains(&a.image_id) {
                return Err(CoreError::invalid(path, format!("{what}: image_id {} is not in 'images'", a.image_id)));
            }
            if !cat_ids.contains(&a.category_id) {
                return Err(CoreError::invalid(
                    path,
                    format!("{what}: category_id {} is not in 'categories'", a.category_id),
                ));
            }
            check_box(path, &what, &a.bbox)?;
        }
        Ok(())
    }
}

/// Reads a COCO results file: a JSON list of predictions (the pycocotools `loadRes` input).
pub fn read_predictions(path: &Path) -> Result<Vec<CocoPrediction>> {
    let preds: Vec<CocoPrediction> = fsio::read_json(path)?;
    for (i, p) in preds.iter().enumerate() {
        check_box(path, &format!("prediction [{i}]"), &p.bbox)?;
        if !p.score.is_finite() {
            return Err(CoreError::invalid(path, format!("prediction [{i}]: score {} is not finite", p.score)));
        }
    }
    Ok(preds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_validation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gt.json");
        std::fs::write(
            &p,
            r#"{"images":[{"id":1,"file_name":"a.jpg","width":10,"height":10}],
                "annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4],"iscrowd":0}],
                "categories":[{"id":3,"name":"cow"}]}"#,
        )
        .unwrap();
        let ds = CocoDataset::read(&p).unwrap();
        assert_eq!(ds.annotations[0].area(), 12.0);
        let out = d.path().join("out.json");
        ds.write(&out).unwrap();
        assert_eq!(CocoDataset::read(&out).unwrap(), ds);

        let mut bad = ds.clone();
        bad.annotations[0].image_id = 9;
        let e = bad.write(&d.path().join("bad.json")).unwrap_err().to_string();
        assert!(e.contains("image_id 9"), "{e}");
        assert!(!d.path().join("bad.json").exists());

        std::fs::write(&p, r#"{"images": [}"#).unwrap();
        let e = CocoDataset::read(&p).unwrap_err().to_string();
        assert!(e.contains("gt.json") && e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn predictions_reject_bad_boxes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pred.json");
        std::fs::write(&p, r#"[{"image_id":1,"category_id":1,"bbox":[0,0,-1,2],"score":0.5}]"#).unwrap();
        let e = read_predictions(&p).unwrap_err().to_string();
        assert!(e.contains("prediction [0]"), "{e}");
    }
}
