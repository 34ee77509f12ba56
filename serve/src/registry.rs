//! The loaded models by name. Loading a name again swaps in the new version atomically:
//! requests already holding the old `Arc<Model>` finish on its plan, new ones get the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use fieldkit_runtime::{Engine, LoadOptions};

use crate::config::check_name;
use crate::error::ServeError;

pub struct Model {
    pub name: String,
    pub path: PathBuf,
    /// Increases with every load of any model; tells workers their cached state is stale.
    pub version: u64,
    pub engine: Engine,
    pub sha256: String,
    /// Requests admitted and not finished (waiting or running).
    pub in_flight: AtomicUsize,
}

#[derive(Default)]
pub struct Registry {
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    next_version: AtomicU64,
    load: LoadOptions,
}

impl Registry {
    /// Models load with `load`: through its NNEF cache when given, in its layout.
    pub fn new(load: LoadOptions) -> Self {
        Registry { load, ..Default::default() }
    }

    pub fn get(&self, name: &str) -> Result<Arc<Model>, ServeError> {
        self.models
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
            .ok_or_else(|| ServeError::UnknownModel(name.to_string()))
    }

    pub fn list(&self) -> Vec<Arc<Model>> {
        self.models.read().expect("registry lock").values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.models.read().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads `path` (its card's sha256 checked) and makes it `name`, replacing any previous
    /// version only once the new one is ready. Blocking: call from a blocking thread.
    pub fn load(&self, name: &str, path: &Path) -> Result<Arc<Model>, ServeError> {
        check_name(name)?;
        let engine =
            Engine::load_with(path, &self.load).map_err(|e| ServeError::BadRequest(fieldkit_core::error::chain(&e)))?;
        let sha256 = engine.card().sha256.clone();
        let model = Arc::new(Model {
            name: name.to_string(),
            path: path.to_path_buf(),
            version: self.next_version.fetch_add(1, Ordering::Relaxed) + 1,
            engine,
            sha256,
            in_flight: AtomicUsize::new(0),
        });
        self.models.write().expect("registry lock").insert(name.to_string(), model.clone());
        Ok(model)
    }

    pub fn remove(&self, name: &str) -> Result<Arc<Model>, ServeError> {
        self.models
            .write()
            .expect("registry lock")
            .remove(name)
            .ok_or_else(|| ServeError::UnknownModel(name.to_string()))
    }
}

/// `path` if it lies inside `dir` once both are resolved (no `..` or symlink escapes).
pub fn allowed(dir: Option<&Path>, path: &Path) -> Result<PathBuf, ServeError> {
    let dir =
        dir.ok_or_else(|| ServeError::Forbidden("loading models over HTTP is disabled (set model_dir)".into()))?;
    let dir = dir.canonicalize().map_err(|e| ServeError::Internal(format!("model_dir {}: {e}", dir.display())))?;
    let candidate = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    let resolved =
        candidate.canonicalize().map_err(|e| ServeError::BadRequest(format!("{}: {e}", candidate.display())))?;
    if !resolved.starts_with(&dir) {
        return Err(ServeError::Forbidden(format!(
            "{}: outside the model directory {}",
            path.display(),
            dir.display()
        )));
    }
    Ok(resolved)
}
