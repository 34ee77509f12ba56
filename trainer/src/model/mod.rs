//! burn models.

pub mod lraspp;
pub mod mobilenetv2;
pub mod precision;
pub mod resize;
pub mod yolox;

pub use lraspp::{Segmenter, SegmenterConfig};
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};
pub use yolox::{Detector, DetectorConfig};

use burn::prelude::Tensor;

/// A tensor's values on the host as f32 (any float dtype is converted).
pub fn to_host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("float tensor data converts to f32")
}
