#![allow(dead_code)]
//! Helpers the trainer's end-to-end tests share.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use fieldkit_trainer::data::Augment;
use fieldkit_trainer::train::{ClassWeights, ClassifyConfig, ScheduleKind, Strategy};
use image::{Rgb, RgbImage};

/// Three classes a small net can tell apart quickly: dominant red, green or blue, with
/// per-image texture so no two samples are identical.
pub fn write_dataset(root: &Path, per_split: &[(&str, usize)]) {
    for (split, n) in per_split {
        for (c, name) in ["blue", "green", "red"].iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..*n {
                let img = RgbImage::from_fn(40, 40, |x, y| {
                    let t = ((x * 7 + y * 13 + i as u32 * 31) % 64) as u8;
                    let mut px = [t, t, t];
                    px[2 - c] = 150 + t;
                    Rgb(px)
                });
                img.save(dir.join(format!("{split}_{i:03}.png"))).unwrap();
            }
        }
    }
}

/// A deterministic input batch `[n, 3, s, s]` in [-1, 1).
pub fn input(n: usize, s: usize) -> Vec<f32> {
    (0..n * 3 * s * s).map(|i| ((i * 7919 % 256) as f32 / 128.0) - 1.0).collect()
}

pub fn vendored_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors")
}

/// The ImageNet backbone at 32 px with the last stages training: cheap, and learns the
/// colour classes reliably (from scratch, a few epochs are a coin toss).
pub fn tiny_config(data: &Path) -> ClassifyConfig {
    let mut c = ClassifyConfig::new(data.to_path_buf());
    c.weights = Some(vendored_weights());
    c.size = 32;
    c.strategy = Strategy::Partial;
    c.unfreeze_from = 14;
    c.epochs = 4;
    c.batch = 8;
    c.lr = 3e-3;
    c.schedule = ScheduleKind::Cosine;
    c.augment = Augment::light();
    c.class_weights = ClassWeights::Balanced;
    c.workers = 2;
    c
}

/// Held by every test that trains, for its whole run. burn seeds the flex backend's generator
/// globally (`Device::seed`), so two runs in parallel threads of one test binary draw their
/// head initialisation and dropout masks from one stream in an order set by the scheduler:
/// a run's result then depends on what else ran (one fell to top-1 0.83 from its usual 1.0
/// under load). One at a time, each run is what its seed says.
pub fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
