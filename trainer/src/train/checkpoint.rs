//! Crash-safe checkpoints. Each checkpoint is a directory (model + optimizer in burn's
//! burnpack format, which keeps parameter ids so the optimizer state re-attaches, plus the
//! loop state as JSON) written under a temporary name, synced and renamed into place; only
//! then does `last.json` (itself replaced atomically) point at it, and older directories are
//! removed. Killing the process at any instant leaves `last.json` naming a complete checkpoint.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use fieldkit_core::{fsio, CoreError};

use super::precision::LossScale;
use super::schedule::PlateauState;
use crate::error::{Result, TrainerError};

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub top1: f64,
    pub macro_f1: f64,
    pub trainable_from: usize,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// Where the loop stands: enough to continue exactly where it stopped. `M` is the task's
/// per-epoch row (classification: [`EpochMetrics`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState<M = EpochMetrics> {
    /// Epoch being run (0-based); `batch` batches of it are done.
    pub epoch: usize,
    pub batch: usize,
    /// Optimiser steps taken in total.
    pub step: usize,
    /// Running sum and count of the training loss in the current epoch.
    pub loss_sum: f64,
    pub loss_count: usize,
    pub history: Vec<M>,
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub plateau: PlateauState,
    /// Training seconds spent before this checkpoint (across resumes).
    pub elapsed_s: f64,
    pub stopped_early: bool,
    /// Updates the weight average has seen (`--ema`; 0 without one).
    #[serde(default)]
    pub ema_updates: u64,
    /// Where f16 loss scaling stands (`--precision f16`; none otherwise).
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

impl<M> Default for LoopState<M> {
    fn default() -> Self {
        LoopState {
            epoch: 0,
            batch: 0,
            step: 0,
            loss_sum: 0.0,
            loss_count: 0,
            history: Vec::new(),
            best: None,
            best_epoch: None,
            bad_epochs: 0,
            plateau: PlateauState::default(),
            elapsed_s: 0.0,
            stopped_early: false,
            ema_updates: 0,
            loss_scale: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    dir: String,
}

/// Which checkpoint of a run to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The best epoch by the run's monitored metric.
    Best,
    /// The latest checkpoint (possibly mid-epoch).
    Last,
}

pub struct Checkpoints {
    root: PathBuf,
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() }
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| CoreError::io(path, e).into())
}

/// Saves a module as burnpack atomically (temp file, sync, rename).
pub fn save_module<M: Module + ModuleSnapshot>(model: &M, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    }
    let tmp = path.with_extension("bpk.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut store = BurnpackStore::from_file(&tmp).auto_extension(false).overwrite(true);
    model.save_into(&mut store).map_err(|e| store_err(path, e))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))?;
    Ok(())
}

/// Loads burnpack weights into `model` (same architecture), refusing partial matches.
pub fn load_module<M: Module + ModuleSnapshot>(model: &mut M, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(store_err(path, "checkpoint file not found"));
    }
    let mut store = BurnpackStore::from_file(path).auto_extension(false);
    let r = model.load_from(&mut store).map_err(|e| store_err(path, e))?;
    if !r.errors.is_empty() || !r.missing.is_empty() || !r.unused.is_empty() {
        return Err(store_err(
            path,
            format!(
                "does not fit the model: {} errors, {} missing, {} unused tensors (another width or class count?)",
                r.errors.len(),
                r.missing.len(),
                r.unused.len()
            ),
        ));
    }
    Ok(())
}

impl Checkpoints {
    pub fn new(out: &Path) -> Self {
        Checkpoints { root: out.join("checkpoints") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn best_model(&self) -> PathBuf {
        self.root.join("best.bpk")
    }

    /// Whether a previous run left a checkpoint here.
    pub fn exists(&self) -> bool {
        self.root.join("last.json").is_file()
    }

    /// Writes a checkpoint: the model, the optimiser, the loop state and, with `--ema`, the
    /// weight average (`ema.bpk`), all in one directory made visible by a rename.
    pub fn save<M: Module + ModuleSnapshot, R: Serialize>(
        &self,
        model: &M,
        ema: Option<&M>,
        optim: &ModuleOptimizer,
        state: &LoopState<R>,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| CoreError::io(&self.root, e))?;
        let name = format!("ckpt-e{:04}-b{:06}-s{:08}", state.epoch, state.batch, state.step);
        let tmp = self.root.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        save_module(model, &tmp.join("model.bpk"))?;
        if let Some(ema) = ema {
            save_module(ema, &tmp.join("ema.bpk"))?;
        }
        let optim_path = tmp.join("optim.bpk");
        optim.to_record().save(&optim_path).map_err(|e| store_err(&optim_path, format!("{e:?}")))?;
        sync_file(&optim_path)?;
        fsio::write_json(&tmp.join("state.json"), state)?;
        let dir = self.root.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| CoreError::io(&dir, e))?;
        fsio::write_json(&self.root.join("last.json"), &Pointer { dir: name.clone() })?;
        // Only now is the previous checkpoint redundant.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with("ckpt-") && n != name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// The model file of the best or the last checkpoint, and words for it.
    pub fn pick(&self, which: Which) -> Result<(PathBuf, String)> {
        Ok(match which {
            Which::Best => (self.best_model(), "best".to_string()),
            Which::Last => {
                let dir = self.last_dir()?;
                let what = format!("last ({})", dir.file_name().unwrap_or_default().to_string_lossy());
                (dir.join("model.bpk"), what)
            }
        })
    }

    /// Directory of the last complete checkpoint.
    pub fn last_dir(&self) -> Result<PathBuf> {
        let pointer: Pointer = fsio::read_json(&self.root.join("last.json"))?;
        Ok(self.root.join(pointer.dir))
    }

    /// Loads the last checkpoint's weight average into `ema`; false when it holds none (a run
    /// started without `--ema`).
    pub fn load_ema<M: Module + ModuleSnapshot>(&self, ema: &mut M) -> Result<bool> {
        let path = self.last_dir()?.join("ema.bpk");
        if !path.is_file() {
            return Ok(false);
        }
        load_module(ema, &path)?;
        Ok(true)
    }

    /// Loads the last checkpoint into `model` and `optim`, returning the loop state.
    pub fn load<M: Module + ModuleSnapshot, R: serde::de::DeserializeOwned>(
        &self,
        model: &mut M,
        optim: ModuleOptimizer,
    ) -> Result<(LoopState<R>, ModuleOptimizer)> {
        let dir = self.last_dir()?;
        load_module(model, &dir.join("model.bpk"))?;
        let optim_path = dir.join("optim.bpk");
        let record = OptimizerRecord::load(&optim_path).map_err(|e| store_err(&optim_path, format!("{e:?}")))?;
        let state: LoopState<R> = fsio::read_json(&dir.join("state.json"))?;
        Ok((state, optim.load_record(record)))
    }
}
