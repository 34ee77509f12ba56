//! ONNX export of trained models, written directly from the burn weights with the ONNX
//! protobuf (BatchNorm folded into the convolutions, opset 13, dynamic batch).

pub mod onnx;
pub mod tta;

pub use onnx::{export_classifier, export_detector, export_segmenter, OPSET};
pub use tta::Tta;
