//! burn models.

pub mod mobilenetv2;

pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};
