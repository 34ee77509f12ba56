use std::path::PathBuf;

/// Every failure in fieldkit-core names the file (and line or field) it came from,
/// so a user can fix their data without reading our source.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad record in a text file; `line` is 1-based.
    #[error("{}:{line}: {msg}", path.display())]
    Record { path: PathBuf, line: usize, msg: String },
    /// A file that is wrong as a whole (bad JSON/YAML, a missing key, an inconsistent field).
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("{}: cannot decode image: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    /// Inputs that did not come from a file (in-memory arguments).
    #[error("{0}")]
    Argument(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

impl CoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io { path: path.into(), source }
    }
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        CoreError::Invalid { path: path.into(), msg: msg.into() }
    }
    pub fn record(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        CoreError::Record { path: path.into(), line, msg: msg.into() }
    }
}

/// `e` and its causes in one line, each said once (what the CLI prints and the daemon
/// answers). An error that names a file and its OS error (`Io`) already holds its cause's
/// text, which would otherwise come twice ("/nope.yaml: No such file or directory (os error
/// 2): No such file or directory (os error 2)").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        // An error that prints its source in its own message (tract's chain in a runtime
        // error) is followed by causes already said.
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
