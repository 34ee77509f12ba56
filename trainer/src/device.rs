//! Which burn backend runs training: chosen at run time (burn 0.22 has no backend generic).
//! A GPU backend is checked when it is asked for, so a machine without the driver gets a
//! sentence naming what is missing instead of a panic from deep inside the GPU stack.

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

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
    /// NVIDIA GPU through CUDA (burn's CubeCL CUDA backend); needs the `cuda` build feature and
    /// an NVIDIA driver when it runs (no CUDA toolkit to build, but network access once).
    Cuda,
}

impl DeviceKind {
    /// The flag value, for messages.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Flex => "flex",
            DeviceKind::Ndarray => "ndarray",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Vulkan => "vulkan",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Whether this backend runs on a GPU (or a software one standing in for it).
    pub fn is_gpu(self) -> bool {
        matches!(self, DeviceKind::Wgpu | DeviceKind::Vulkan | DeviceKind::Cuda)
    }

    pub fn device(self) -> Result<Device> {
        match self {
            DeviceKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)] // kept on purpose as the design's portable fallback
            DeviceKind::Ndarray => Ok(Device::ndarray()),
            DeviceKind::Wgpu | DeviceKind::Vulkan | DeviceKind::Cuda => gpu::open(self),
        }
    }

    /// What runs the training, for the log and report.md: the adapter's own name on a GPU
    /// backend (`llvmpipe (LLVM 15.0.6, 256 bits)` says it is Mesa's software Vulkan).
    pub fn describe(self, device: &Device) -> String {
        match gpu::adapter_name(device) {
            Some(name) => format!("{} ({name})", self.name()),
            None => format!("{} (CPU)", self.name()),
        }
    }
}

/// The text a panic carried (`panic!` with a literal or a formatted message), if any. burn's
/// GPU backends report a missing driver or a failed allocation by panicking.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

fn unavailable(kind: DeviceKind, msg: impl Into<String>) -> TrainerError {
    TrainerError::Device { device: kind.name(), msg: msg.into() }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use burn::prelude::Device;
    use burn::tensor::DeviceType;

    use super::{unavailable, DeviceKind};
    use crate::error::Result;

    /// The device, once a driver has been found for it. Listing the devices is what loads the
    /// driver; the CUDA loader panics where `libcuda.so` is missing, so that is caught here and
    /// said in a sentence.
    pub fn open(kind: DeviceKind) -> Result<Device> {
        let (ty, device, missing) = match kind {
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => (
                DeviceType::Wgpu,
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
                "wgpu found no adapter (no Vulkan, Metal, DX12 or GL driver)",
            ),
            #[cfg(feature = "wgpu")]
            DeviceKind::Vulkan => (
                DeviceType::Vulkan,
                Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
                "no Vulkan driver answered",
            ),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => (DeviceType::Cuda, Device::cuda(0), "no NVIDIA GPU was found"),
            _ => return Err(unavailable(kind, super::not_built(kind))),
        };
        // The panic hook is the process's: two threads swapping it at once would leave the
        // silent one installed for good (every later panic message lost), so one at a time.
        static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let found = {
            let _one = HOOK.lock().unwrap_or_else(|e| e.into_inner());
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let found = std::panic::catch_unwind(|| Device::enumerate(ty).len());
            std::panic::set_hook(hook);
            found
        };
        match found {
            Ok(0) => Err(unavailable(kind, format!("{missing}; {}", install_hint(kind)))),
            Ok(_) => Ok(device),
            Err(panic) => {
                let why =
                    super::panic_message(panic.as_ref()).unwrap_or_else(|| "the driver could not be loaded".into());
                Err(unavailable(kind, format!("{why}; {}", install_hint(kind))))
            }
        }
    }

    fn install_hint(kind: DeviceKind) -> &'static str {
        match kind {
            DeviceKind::Cuda => "install the NVIDIA driver (libcuda.so), or train with --device wgpu or flex",
            _ => {
                "install the GPU's Vulkan driver (Debian: mesa-vulkan-drivers, which also holds the \
                 software Vulkan `lavapipe`), or train with --device flex"
            }
        }
    }

    pub fn adapter_name(device: &Device) -> Option<String> {
        device.identity().map(|id| id.name)
    }
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
mod gpu {
    use burn::prelude::Device;

    use super::{unavailable, DeviceKind};
    use crate::error::Result;

    pub fn open(kind: DeviceKind) -> Result<Device> {
        Err(unavailable(kind, super::not_built(kind)))
    }

    pub fn adapter_name(_device: &Device) -> Option<String> {
        None
    }
}

/// Which build feature a GPU backend needs.
fn not_built(kind: DeviceKind) -> String {
    if kind == DeviceKind::Cuda {
        // burn's CUDA runtime fetches a prebuilt LLVM while it builds (tracel-llvm).
        return "this fieldkit was built without it: cargo build --release --features cuda (the build \
                downloads LLVM from github.com/tracel-ai/tracel-llvm once)"
            .into();
    }
    "this fieldkit was built without it: cargo build --release --features wgpu".into()
}
