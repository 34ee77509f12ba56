use std::path::{Path, PathBuf};

use fieldkit_core::CoreError;
use tract_onnx::prelude::TractError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The model cannot be used for a reason of ours (no fixed output shape, a file that
    /// cannot be read).
    #[error("{}: cannot load model: {msg}", path.display())]
    Load { path: PathBuf, msg: String },
    /// tract could not read, type, translate or optimise the model: `step` says where, the
    /// source (tract's own error chain, kept for callers that walk it) says why. The message
    /// carries the chain too, so `to_string()` alone names the cause (an op tract lacks).
    #[error("{}: cannot load model ({step}): {source:#}", path.display())]
    Tract {
        path: PathBuf,
        step: String,
        #[source]
        source: TractError,
    },
    /// The model and its card disagree (input name, output name, shapes, class count).
    #[error("{}: {msg}", path.display())]
    Mismatch { path: PathBuf, msg: String },
    /// tract failed while running or profiling a plan; the source says why (and the message).
    #[error("inference failed ({step}): {source:#}")]
    Inference {
        step: &'static str,
        #[source]
        source: TractError,
    },
    /// An inference request we refuse before tract sees it (input length, decoding, threads).
    #[error("inference failed: {0}")]
    Run(String),
}

impl RuntimeError {
    /// A tract error at `step` of loading `path`.
    pub fn tract(path: &Path, step: impl Into<String>) -> impl FnOnce(TractError) -> RuntimeError {
        let (path, step) = (path.to_path_buf(), step.into());
        move |source| RuntimeError::Tract { path, step, source }
    }

    /// A tract error at `step` of running a plan.
    pub fn inference(step: &'static str) -> impl FnOnce(TractError) -> RuntimeError {
        move |source| RuntimeError::Inference { step, source }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's chain is kept as the source, and the printed chain says each cause once.
    #[test]
    fn tract_errors_keep_their_chain() {
        let tract = TractError::msg("no such op: Foo").context("translating node 3");
        let e = RuntimeError::tract(Path::new("m.onnx"), "translating it")(tract);
        assert_eq!(e.to_string(), "m.onnx: cannot load model (translating it): translating node 3: no such op: Foo");
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "translating node 3");
        assert_eq!(
            fieldkit_core::error::chain(&e),
            "m.onnx: cannot load model (translating it): translating node 3: no such op: Foo"
        );
    }
}
