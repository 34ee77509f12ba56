//! fieldkit-runtime: runs any fieldkit model card + ONNX file with tract — the code that
//! ships to the Jetson or Raspberry Pi. Preprocessing and decoding come from fieldkit-core,
//! so results match training and quantization exactly.

pub mod bench;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod eval;
pub mod layout;
pub mod nnef_cache;
pub mod onnx_graph;
mod pool_chain;
pub mod precision;
pub mod profile;
pub mod threads;

/// tract version this build links (pinned in the workspace manifest; a test in `bench` keeps
/// them equal). At the root: the NNEF cache names its entries with it and `bench` reports it.
pub const TRACT_VERSION: &str = "0.23.9";

pub use engine::{
    model_io_names, parallel_map, ClassCoverage, ClassMap, ClassScore, Engine, LabeledDetection, LoadOptions, Output,
    PredictOptions, Prediction, Session, Timing,
};
pub use error::{Result, RuntimeError};
pub use layout::Layout;
pub use nnef_cache::LoadSource;
pub use precision::Precision;
