use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Config(String),
    #[error("serial port: {0}")]
    Serial(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Core(#[from] fieldkit_core::error::CoreError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BridgeError + '_ {
    move |source| BridgeError::Io { path: path.to_path_buf(), source }
}
