//! The head strategy's feature cache: pooled backbone features of every image, computed once
//! in eval mode and stored on disk keyed by weights, input size and data, so later epochs
//! and later runs on the same data take seconds.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use sha2::{Digest, Sha256};

use fieldkit_core::preprocess::Preprocess;
use fieldkit_core::{fsio, CoreError};

use crate::data::loader::{batch_ranges, build_batch};
use crate::data::ImageSet;
use crate::error::Result;
use crate::model::{to_host, MobileNetV2};

/// `[n, dim]` features in sample order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    pub dim: usize,
    pub values: Vec<f32>,
    pub labels: Vec<usize>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features of `indices` as one batch: ([k · dim] values, labels).
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<i64>) {
        let mut v = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            v.extend_from_slice(&self.values[i * self.dim..(i + 1) * self.dim]);
        }
        (v, indices.iter().map(|&i| self.labels[i] as i64).collect())
    }
}

/// Cache file name for one split: a hash of everything that changes the features.
pub fn cache_key(weights_sha: &str, size: u32, width: f64, data_fingerprint: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("mobilenetv2|{weights_sha}|{size}|{width}|{data_fingerprint}|v1"));
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("features-{key}.bin"))
}

fn read_cache(path: &Path, n: usize) -> Option<FeatureSet> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 16 {
        return None;
    }
    let rows = u64::from_le_bytes(bytes[0..8].try_into().ok()?) as usize;
    let dim = u64::from_le_bytes(bytes[8..16].try_into().ok()?) as usize;
    if rows != n || bytes.len() != 16 + rows * dim * 4 + rows * 4 {
        return None;
    }
    let body = &bytes[16..];
    let values = body[..rows * dim * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let labels =
        body[rows * dim * 4..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    Some(FeatureSet { dim, values, labels })
}

fn write_cache(path: &Path, f: &FeatureSet) -> Result<()> {
    let mut bytes = Vec::with_capacity(16 + f.values.len() * 4 + f.labels.len() * 4);
    bytes.extend_from_slice(&(f.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(f.dim as u64).to_le_bytes());
    for v in &f.values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    for l in &f.labels {
        bytes.extend_from_slice(&(*l as u32).to_le_bytes());
    }
    fsio::write_atomic(path, &bytes)?;
    Ok(())
}

/// Pooled features of `set` (already geometrically preprocessed to `size`) from `model` in
/// eval mode, read from or written to the cache in `dir`.
pub fn features(
    model: &MobileNetV2,
    set: &ImageSet,
    size: u32,
    preprocess: &Preprocess,
    dir: &Path,
    key: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    let path = cache_path(dir, key);
    if let Some(f) = read_cache(&path, set.len()) {
        if f.labels == set.labels {
            return Ok(f);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    let eval = model.valid();
    let device = eval.stem.conv.weight.device();
    let mut values = Vec::new();
    let mut dim = 0;
    let ranges = batch_ranges(set.len(), 32, false);
    let total = ranges.len();
    for (k, r) in ranges.into_iter().enumerate() {
        let idx: Vec<usize> = r.collect();
        let b = build_batch(set, &idx, size, None, preprocess, 0, 0)?;
        let x = Tensor::<4>::from_data(TensorData::new(b.pixels, [b.n, 3, size as usize, size as usize]), &device);
        let f = eval.forward_features(x); // [n, 1280]
        dim = f.dims()[1];
        values.extend(to_host(f));
        progress(k + 1, total);
    }
    let fs = FeatureSet { dim, values, labels: set.labels.clone() };
    write_cache(&path, &fs)?;
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_and_rejects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let f = FeatureSet { dim: 3, values: (0..6).map(|v| v as f32 * 0.5).collect(), labels: vec![1, 0] };
        let p = cache_path(dir.path(), "k");
        write_cache(&p, &f).unwrap();
        assert_eq!(read_cache(&p, 2).unwrap(), f);
        assert!(read_cache(&p, 3).is_none());
        std::fs::write(&p, b"short").unwrap();
        assert!(read_cache(&p, 2).is_none());
        assert_eq!(f.gather(&[1]), (vec![1.5, 2.0, 2.5], vec![0]));
        assert_ne!(cache_key("a", 64, 1.0, "x"), cache_key("a", 96, 1.0, "x"));
    }
}
