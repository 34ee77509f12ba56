use std::path::PathBuf;

use fieldkit_core::CoreError;
use fieldkit_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A weights file that does not fit the model: wrong file, wrong width, wrong layout.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    /// A checkpoint that cannot be written or read back.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
    /// A backend asked for by `--device` that this build or this machine cannot run.
    #[error("--device {device}: {msg}")]
    Device { device: &'static str, msg: String },
    /// The loss became NaN or infinite.
    #[error("{0}")]
    Diverged(String),
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
