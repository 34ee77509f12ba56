use std::path::PathBuf;

use fieldkit_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{}: cannot load model: {msg}", path.display())]
    Load { path: PathBuf, msg: String },
    /// The model and its card disagree (input name, output name, shapes, class count).
    #[error("{}: {msg}", path.display())]
    Mismatch { path: PathBuf, msg: String },
    #[error("inference failed: {0}")]
    Run(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
