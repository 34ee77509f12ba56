//! Pretrained weights: torchvision-named MobileNetV2 safetensors into our burn module,
//! through burn-store's PyTorch adapter and key remapping, refusing partial loads.

use std::path::Path;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use crate::error::{Result, TrainerError};
use crate::model::MobileNetV2;

/// torchvision `features.N...` names -> our module paths. Block N (1..=17) is `blocks.N-1`;
/// the t = 1 block has no expansion conv, so its sub-indices shift by one.
fn remap(store: SafetensorsStore, blocks: usize) -> SafetensorsStore {
    let mut s = store
        .with_key_remapping(r"^features\.0\.0\.", "stem.conv.")
        .with_key_remapping(r"^features\.0\.1\.", "stem.bn.")
        .with_key_remapping(r"^features\.1\.conv\.0\.0\.", "blocks.0.depthwise.conv.")
        .with_key_remapping(r"^features\.1\.conv\.0\.1\.", "blocks.0.depthwise.bn.")
        .with_key_remapping(r"^features\.1\.conv\.1\.", "blocks.0.project.conv.")
        .with_key_remapping(r"^features\.1\.conv\.2\.", "blocks.0.project.bn.");
    for n in 2..=blocks {
        let b = n - 1;
        s = s
            .with_key_remapping(format!(r"^features\.{n}\.conv\.0\.0\."), format!("blocks.{b}.expand.conv."))
            .with_key_remapping(format!(r"^features\.{n}\.conv\.0\.1\."), format!("blocks.{b}.expand.bn."))
            .with_key_remapping(format!(r"^features\.{n}\.conv\.1\.0\."), format!("blocks.{b}.depthwise.conv."))
            .with_key_remapping(format!(r"^features\.{n}\.conv\.1\.1\."), format!("blocks.{b}.depthwise.bn."))
            .with_key_remapping(format!(r"^features\.{n}\.conv\.2\."), format!("blocks.{b}.project.conv."))
            .with_key_remapping(format!(r"^features\.{n}\.conv\.3\."), format!("blocks.{b}.project.bn."));
    }
    let last = blocks + 1;
    s.with_key_remapping(format!(r"^features\.{last}\.0\."), "last.conv.")
        .with_key_remapping(format!(r"^features\.{last}\.1\."), "last.bn.")
}

/// burn-store reports every mismatching tensor in one string; users need the count and an example.
fn summarize_store_error(msg: &str) -> String {
    let mismatches = msg.matches("ShapeMismatch").count();
    if mismatches > 0 {
        let first = msg.find("ShapeMismatch").map(|i| &msg[i..]).unwrap_or(msg);
        let first = first.split(" }, ShapeMismatch").next().unwrap_or(first);
        return format!(
            "{mismatches} tensors did not fit the model (another width or architecture?), first: {first} }}"
        );
    }
    let short: String = msg.chars().take(300).collect();
    format!("cannot read as safetensors: {short}")
}

/// What a load applied, for the user and the tests.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub applied: usize,
    /// Model tensors the file did not provide (the new head is expected here).
    pub missing: Vec<String>,
}

/// Loads ImageNet backbone weights. Every backbone tensor must come from the file and every
/// file tensor must land somewhere; only the classifier head may stay freshly initialised.
pub fn load_backbone(model: &mut MobileNetV2, path: &Path) -> Result<LoadReport> {
    let werr = |msg: String| TrainerError::Weights { path: path.to_path_buf(), msg };
    if !path.is_file() {
        return Err(werr("weights file not found".into()));
    }
    let store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true);
    let mut store = remap(store, model.blocks.len());
    let result = model.load_from(&mut store).map_err(|e| werr(summarize_store_error(&e.to_string())))?;
    if !result.errors.is_empty() {
        let errs: Vec<String> = result.errors.iter().take(5).map(|e| format!("{e:?}")).collect();
        return Err(werr(format!(
            "{} tensors did not fit the model (wrong width?): {}",
            result.errors.len(),
            errs.join("; ")
        )));
    }
    if !result.unused.is_empty() {
        let mut u = result.unused.clone();
        u.sort();
        return Err(werr(format!(
            "{} tensors in the file match no model tensor, e.g. {:?}",
            u.len(),
            &u[..u.len().min(5)]
        )));
    }
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    let backbone_missing: Vec<&String> = missing.iter().filter(|p| !p.starts_with("classifier.")).collect();
    if !backbone_missing.is_empty() {
        return Err(werr(format!(
            "{} backbone tensors are missing from the file, e.g. {:?}",
            backbone_missing.len(),
            &backbone_missing[..backbone_missing.len().min(5)]
        )));
    }
    Ok(LoadReport { applied: result.applied.len(), missing })
}
