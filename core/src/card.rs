//! The model card: `<model>.json` beside every model file, telling every stage how to feed
//! the model and read its output, and pinning the exact model bytes by sha256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::fsio;
use crate::preprocess::Preprocess;

pub const CARD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classify,
    Detect,
    /// A class per pixel.
    Segment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    /// NCHW; `-1` marks a dynamic dimension (usually the batch).
    pub shape: Vec<i64>,
}

/// How to turn the raw output tensor into predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decode {
    /// Output `[N, classes]` of logits; softmax gives probabilities.
    Softmax { output: String },
    /// Output `[N, classes]` already holding probabilities.
    Probabilities { output: String },
    /// YOLOX raw head `[N, anchors, 5 + classes]`: x, y offsets and log w, h per grid cell
    /// over `strides`; objectness and class scores sigmoided unless `logits` is set.
    Yolox {
        output: String,
        strides: Vec<u32>,
        #[serde(default)]
        logits: bool,
    },
    /// Output is a feature vector (a backbone with no head).
    Features { output: String },
    /// Output `[N, classes, H, W]` of per-pixel class logits at the input size: the argmax
    /// over classes is each pixel's class.
    Segment { output: String },
}

impl Decode {
    /// Name of the model output this decoding reads.
    pub fn output(&self) -> &str {
        match self {
            Decode::Softmax { output }
            | Decode::Probabilities { output }
            | Decode::Features { output }
            | Decode::Segment { output } => output,
            Decode::Yolox { output, .. } => output,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub card_version: u32,
    pub task: Task,
    pub classes: Vec<String>,
    pub input: InputSpec,
    pub preprocess: Preprocess,
    pub decode: Decode,
    /// Checkpoint or upstream model the file was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Fingerprint of the training data (see `dataset::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// sha256 of the model file this card describes, lowercase hex.
    pub sha256: String,
    /// Tool and version that wrote the card.
    pub created_by: String,
}

/// `dir/model.onnx` -> `dir/model.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

impl ModelCard {
    pub fn new(task: Task, classes: Vec<String>, input: InputSpec, preprocess: Preprocess, decode: Decode) -> Self {
        ModelCard {
            card_version: CARD_VERSION,
            task,
            classes,
            input,
            preprocess,
            decode,
            source: None,
            data_fingerprint: None,
            metrics: BTreeMap::new(),
            sha256: String::new(),
            created_by: format!("fieldkit {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Stamps the card with the model file's sha256 and writes it beside the model.
    pub fn write_for(&mut self, model: &Path) -> Result<PathBuf> {
        self.validate(&card_path(model))?;
        self.sha256 = fsio::sha256_file(model)?;
        let path = card_path(model);
        fsio::write_json(&path, self)?;
        Ok(path)
    }

    /// Reads the card of `model` without checking the model bytes.
    pub fn read_for(model: &Path) -> Result<Self> {
        let path = card_path(model);
        if !path.exists() {
            // Name the fix: a card is written by `fieldkit card init` for a model from elsewhere
            // (its presets are listed by its --help, not copied here where they would drift).
            return Err(CoreError::invalid(
                &path,
                format!(
                    "no model card for {} (expected this file beside it); write one with `fieldkit card init --model {} --preset PRESET --classes NAMES --size N` (`fieldkit card init --help` lists the presets)",
                    model.display(),
                    model.display()
                ),
            ));
        }
        let card: ModelCard = fsio::read_json(&path)?;
        if card.card_version > CARD_VERSION {
            return Err(CoreError::invalid(
                &path,
                format!("card_version {} is newer than this fieldkit understands ({CARD_VERSION})", card.card_version),
            ));
        }
        card.validate(&path)?;
        Ok(card)
    }

    /// Reads the card and refuses a model whose bytes are not the ones the card describes.
    pub fn load_verified(model: &Path) -> Result<Self> {
        let card = Self::read_for(model)?;
        let actual = fsio::sha256_file(model)?;
        if actual != card.sha256 {
            return Err(CoreError::invalid(
                model,
                format!(
                    "sha256 {actual} does not match its card {} ({}): the model was modified or the card belongs to another file",
                    card_path(model).display(),
                    card.sha256
                ),
            ));
        }
        Ok(card)
    }

    /// Checks the card is self-consistent (`path` names it in errors).
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.classes.is_empty() {
            return Err(CoreError::invalid(path, "classes: empty"));
        }
        if self.input.shape.len() != 4 || self.input.shape[1] != 3 {
            return Err(CoreError::invalid(path, format!("input.shape {:?}: expected [N, 3, H, W]", self.input.shape)));
        }
        if let Some((w, h)) = self.preprocess.output_size() {
            let (sh, sw) = (self.input.shape[2], self.input.shape[3]);
            if (sh > 0 && sh != h as i64) || (sw > 0 && sw != w as i64) {
                return Err(CoreError::invalid(
                    path,
                    format!("preprocess produces {w}x{h} but input.shape is {:?}", self.input.shape),
                ));
            }
        }
        self.preprocess.validate().map_err(|e| CoreError::invalid(path, e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard::new(
            Task::Classify,
            vec!["a".into(), "b".into()],
            InputSpec { name: "input".into(), shape: vec![-1, 3, 224, 224] },
            Preprocess::imagenet(224),
            Decode::Softmax { output: "logits".into() },
        )
    }

    #[test]
    fn write_verify_and_refuse_tampered() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("m.onnx");
        std::fs::write(&model, b"model bytes").unwrap();
        let mut c = card();
        let path = c.write_for(&model).unwrap();
        assert_eq!(path, d.path().join("m.json"));
        let loaded = ModelCard::load_verified(&model).unwrap();
        assert_eq!(loaded, c);
        std::fs::write(&model, b"model bytez").unwrap();
        let e = ModelCard::load_verified(&model).unwrap_err().to_string();
        assert!(e.contains("does not match") && e.contains("m.onnx"), "{e}");
    }

    #[test]
    fn missing_and_inconsistent_cards() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("x.onnx");
        std::fs::write(&model, b"m").unwrap();
        let err = ModelCard::load_verified(&model).unwrap_err().to_string();
        assert!(err.contains("no model card") && err.contains("fieldkit card init --model"), "{err}");
        let mut c = card();
        c.input.shape = vec![1, 3, 96, 96];
        let e = c.write_for(&model).unwrap_err().to_string();
        assert!(e.contains("224x224"), "{e}");
        assert!(!card_path(&model).exists());
    }
}
