//! Which burn backend runs training: chosen at run time (burn 0.22 has no backend generic).

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::error::Result;
#[cfg(not(feature = "wgpu"))]
use crate::error::TrainerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// burn's pure-Rust CPU backend (default; ~9× ndarray on MobileNetV2 here).
    Flex,
    /// burn-ndarray: the portable fallback (deprecated upstream, slow).
    Ndarray,
    /// GPU through wgpu (Vulkan/Metal/DX12); needs the `wgpu` build feature.
    Wgpu,
    /// GPU through wgpu's Vulkan path; needs the `wgpu` build feature.
    Vulkan,
}

impl DeviceKind {
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)] // kept on purpose as the design's portable fallback
            DeviceKind::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "wgpu")]
            DeviceKind::Vulkan => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "wgpu"))]
            DeviceKind::Wgpu | DeviceKind::Vulkan => Err(TrainerError::Config(
                "--device wgpu/vulkan needs a GPU build: cargo build --release --features wgpu".into(),
            )),
        }
    }
}
