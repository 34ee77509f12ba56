//! Translate once, load fast: the decluttered tract model of an ONNX file (fixed input, the
//! card's output selected) kept as NNEF with tract's extensions (tract-OPL), so a device that
//! restarts its daemon skips ONNX parsing, type inference and decluttering. Only the
//! hardware-specific optimisation runs at each load.
//!
//! A cache entry is named by what determines its content: the model file's sha256, the input
//! size, the selected output and the tract version. A changed model, card or tract build
//! therefore never meets a stale entry; it writes a new one beside it.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use fieldkit_core::fsio;
use tract_onnx::prelude::*;

use crate::error::{Result, RuntimeError};
use crate::TRACT_VERSION;

/// How a model got into the engine, reported by `fieldkit bench` and the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "source", content = "detail")]
pub enum LoadSource {
    /// Translated from ONNX, no cache asked for.
    Onnx,
    /// Loaded from the cache entry at this path.
    Cache(PathBuf),
    /// Translated from ONNX and written to the cache entry at this path.
    Written(PathBuf),
    /// Translated from ONNX; the cache could not be used (why).
    Uncached(String),
}

/// The cache entry for `model` (its sha256 `sha`) at `width`x`height` with `output` selected.
pub fn entry_path(dir: &Path, sha: &str, width: u32, height: u32, output: &str) -> PathBuf {
    // Output names may hold any character; a short hash keeps the file name portable.
    let out = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        output.hash(&mut h);
        h.finish() as u32
    };
    let sha = &sha[..sha.len().min(16)];
    dir.join(format!("{sha}-{width}x{height}-{out:08x}-tract{TRACT_VERSION}.nnef.tar"))
}

fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx()
}

/// Reads a cache entry; the caller checks its input fact against the card.
pub fn read(entry: &Path) -> Result<TypedModel> {
    nnef().model_for_path(entry).map_err(RuntimeError::tract(entry, "reading the NNEF cache entry"))
}

/// Writes `model` to `entry` atomically (a killed writer leaves no half entry for the next
/// load to trip over). The error says why in one line: tract 0.23 has no NNEF form for some
/// ops, e.g. the QuantizeLinear of a QDQ INT8 model, which then keeps loading from ONNX.
pub fn write(entry: &Path, model: &TypedModel) -> std::result::Result<(), String> {
    let framework = nnef();
    let mut failed = None;
    fsio::write_atomic_with(entry, |f| {
        let mut w = BufWriter::new(f);
        if let Err(e) = framework.write_to_tar_with_config(model, &mut w, false, true) {
            failed = Some(format!("tract cannot write this model as NNEF: {}", e.root_cause()));
            return Err(std::io::Error::other("NNEF serialisation failed"));
        }
        std::io::Write::flush(&mut w)
    })
    .map_err(|e| failed.unwrap_or_else(|| e.to_string()))
}
