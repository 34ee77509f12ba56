//! fieldkit-trainer: burn models and fine-tuning for fieldkit. The backbone is MobileNetV2
//! in torchvision's layout, loadable from torchvision-named safetensors; training writes an
//! ONNX model + card that the runtime and the quantizer consume.
//!
//! Layout (burn style): `data` (decoding, augmentation, loader), `model` (architecture),
//! `weights` (pretrained loading), `train` (config, loop, checkpoints, reports), `export`
//! (ONNX writer), `device` (backend choice).

pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod model;
pub mod train;
pub mod weights;

pub use device::{DeviceKind, DeviceSpec};
pub use error::{Result, TrainerError};
pub use train::{train_classify, ClassifyConfig, Progress, TrainSummary};
