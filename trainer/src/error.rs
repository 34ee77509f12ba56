use std::path::PathBuf;

use fieldkit_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A weights file that does not fit the model: wrong file, wrong width, wrong layout.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
