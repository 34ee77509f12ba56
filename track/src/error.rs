use std::path::PathBuf;

/// Every failure in fieldkit-track names the file and line (or the setting) it came from.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error(transparent)]
    Core(#[from] fieldkit_core::CoreError),
    /// A bad row in a MOTChallenge text file; `line` is 1-based.
    #[error("{}:{line}: {msg}", path.display())]
    Record { path: PathBuf, line: usize, msg: String },
    /// A tracker or metric setting out of range, named as the user wrote it.
    #[error("{0}")]
    Setting(String),
    /// The assignment solver refused a cost matrix (NaN costs).
    #[error("assignment of a {rows}x{cols} cost matrix failed: {source}")]
    Assignment {
        rows: usize,
        cols: usize,
        #[source]
        source: lsap::LSAPError,
    },
}

pub type Result<T, E = TrackError> = std::result::Result<T, E>;
