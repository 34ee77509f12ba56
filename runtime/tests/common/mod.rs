#![allow(dead_code)]
use std::path::{Path, PathBuf};

use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::preprocess::{ChannelOrder, Preprocess, Resize};
use serde_json::Value;

pub fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(rel)
}

pub fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub use fieldkit_core::preprocess::{reference_pattern as pattern, reference_pattern_imagenet as pattern_imagenet};

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn tiny_classifier_card() -> ModelCard {
    ModelCard::new(
        Task::Classify,
        vec!["crop".into(), "weed".into(), "soil".into()],
        InputSpec { name: "input".into(), shape: vec![-1, 3, 32, 32] },
        Preprocess::imagenet_stretch(32),
        Decode::Softmax { output: "logits".into() },
    )
}

/// The depthwise-separable block: 16 features.
pub fn tiny_dwsep_card() -> ModelCard {
    ModelCard::new(
        Task::Classify,
        vec!["features".into()],
        InputSpec { name: "input".into(), shape: vec![1, 3, 32, 32] },
        Preprocess::imagenet_stretch(32),
        Decode::Features { output: "features".into() },
    )
}

pub fn tiny_detector_card() -> ModelCard {
    ModelCard::new(
        Task::Detect,
        vec!["crop".into(), "weed".into()],
        InputSpec { name: "images".into(), shape: vec![1, 3, 64, 64] },
        Preprocess {
            resize: Resize::Letterbox { width: 64, height: 64, pad: 114, center: false },
            antialias: false,
            center_crop: None,
            channels: ChannelOrder::Rgb,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        Decode::Yolox { output: "output".into(), strides: vec![32], logits: true },
    )
}

/// `../shared`, or `$FIELDKIT_SHARED`.
pub fn shared() -> PathBuf {
    let p = std::env::var_os("FIELDKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(p.join("assets").is_dir(), "shared assets not found at {} (set FIELDKIT_SHARED)", p.display());
    p
}
