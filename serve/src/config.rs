//! `serve.toml` and the command line, merged and checked before anything binds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ServeError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    /// Inference threads, each with its own tract state per model.
    pub workers: usize,
    /// Name → model path, loaded at start and again on SIGHUP.
    pub models: BTreeMap<String, PathBuf>,
    /// `POST /v1/models` loads only models inside this directory; unset = disabled.
    pub model_dir: Option<PathBuf>,
    /// Bearer token required on every route but health; required to bind beyond loopback.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Requests admitted per model (waiting or running) before 503 + Retry-After.
    pub queue: usize,
    pub max_body_mb: f64,
    /// A request not answered by then gets 504.
    pub timeout_ms: u64,
    /// Keep translated plans here (NNEF) so a restart loads them without the ONNX parse.
    pub nnef_cache: Option<PathBuf>,
    /// Where the channel axis sits while the convolutions run (`nhwc` unless set).
    pub layout: fieldkit_runtime::Layout,
    /// Float precision fp32 models compute in (`f32` unless set; `f16` on FEAT_FP16 boards).
    pub precision: fieldkit_runtime::Precision,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 2,
            models: BTreeMap::new(),
            model_dir: None,
            token: None,
            token_file: None,
            queue: 64,
            max_body_mb: 16.0,
            timeout_ms: 10_000,
            nnef_cache: None,
            layout: fieldkit_runtime::Layout::default(),
            precision: fieldkit_runtime::Precision::default(),
        }
    }
}

/// Names usable in URLs and metric labels.
pub fn check_name(name: &str) -> Result<(), ServeError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServeError::BadRequest(format!("model name {name:?}: use 1-64 letters, digits, '-', '_' or '.'")))
    }
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))
    }

    /// The token, from `token` or the first line of `token_file`.
    pub fn resolve_token(&mut self) -> Result<(), ServeError> {
        if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| ServeError::Config(format!("token file {}: {e}", f.display())))?;
            self.token = text.lines().next().map(|l| l.trim().to_string());
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ServeError> {
        if self.workers == 0 {
            return Err(ServeError::Config("workers must be at least 1".into()));
        }
        if self.queue == 0 {
            return Err(ServeError::Config("queue must be at least 1".into()));
        }
        if !(self.max_body_mb.is_finite() && self.max_body_mb > 0.0) {
            return Err(ServeError::Config(format!("max_body_mb {}: must be positive", self.max_body_mb)));
        }
        if self.timeout_ms == 0 {
            return Err(ServeError::Config("timeout_ms must be positive".into()));
        }
        match &self.token {
            Some(t) if t.len() < 16 => return Err(ServeError::Config("the token must be at least 16 characters".into())),
            None if !self.bind.ip().is_loopback() => {
                return Err(ServeError::Config(format!(
                    "binding {} (beyond loopback) requires --token or --token-file: every route but health then needs `Authorization: Bearer`",
                    self.bind
                )))
            }
            _ => {}
        }
        for name in self.models.keys() {
            check_name(name).map_err(|e| ServeError::Config(e.to_string()))?;
        }
        if let Some(d) = &self.model_dir {
            if !d.is_dir() {
                return Err(ServeError::Config(format!("model_dir {}: not a directory", d.display())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_parses_and_checks() {
        let cfg = ServeConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("serve.toml")).unwrap();
        assert_eq!(cfg.workers, 2);
        assert!(cfg.models.contains_key("weeds"));
        cfg.validate().unwrap();
    }

    #[test]
    fn refusals_name_the_setting() {
        let bad = |f: &dyn Fn(&mut ServeConfig)| {
            let mut c = ServeConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.workers = 0).contains("workers"));
        assert!(bad(&|c| c.token = Some("short".into())).contains("16 characters"));
        assert!(bad(&|c| c.bind = "0.0.0.0:80".parse().unwrap()).contains("--token"));
        assert!(bad(&|c| {
            c.models.insert("a b".into(), "x.onnx".into());
        })
        .contains("model name"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "workers = 2\nworkerz = 3\n").unwrap();
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("s.toml") && e.contains("workerz"), "{e}");
        std::fs::write(&p, "layout = \"nchw\"\n").unwrap();
        assert_eq!(ServeConfig::load(&p).unwrap().layout, fieldkit_runtime::Layout::Nchw);
        assert_eq!(ServeConfig::default().layout, fieldkit_runtime::Layout::Nhwc);
        std::fs::write(&p, "layout = \"hwc\"\n").unwrap();
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("s.toml") && e.contains("layout") && e.contains("hwc"), "{e}");
        std::fs::write(&p, "precision = \"f16\"\n").unwrap();
        assert_eq!(ServeConfig::load(&p).unwrap().precision, fieldkit_runtime::Precision::F16);
        assert_eq!(ServeConfig::default().precision, fieldkit_runtime::Precision::F32);
        std::fs::write(&p, "precision = \"bf16\"\n").unwrap();
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("s.toml") && e.contains("bf16"), "{e}");
    }
}
