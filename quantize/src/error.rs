use std::path::PathBuf;

use fieldkit_core::CoreError;
use fieldkit_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model cannot be quantized as asked (an op, an opset, a missing input).
    #[error("{}: {msg}", path.display())]
    Model { path: PathBuf, msg: String },
    /// Calibration data is missing or too small.
    #[error("{0}")]
    Calibration(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = QuantizeError> = std::result::Result<T, E>;

/// A tract error at `step` of running the calibration probe, kept as the source.
pub(crate) fn tract_err(step: &'static str) -> impl FnOnce(tract_onnx::prelude::TractError) -> QuantizeError {
    move |e| QuantizeError::Runtime(RuntimeError::inference(step)(e))
}
