//! fieldkit-trainer: burn models and fine-tuning for fieldkit. The backbone is MobileNetV2
//! in torchvision's layout, loadable from torchvision-named safetensors.

pub mod error;
pub mod model;
pub mod weights;

pub use error::{Result, TrainerError};
