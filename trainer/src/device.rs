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
        self.open(None)
    }

    /// The backend's default device (`index` None, what `--device` opens), or the `index`-th
    /// device burn enumerates for it (`--devices wgpu:1`; `fieldkit train devices` lists them).
    pub fn open(self, index: Option<usize>) -> Result<Device> {
        match self {
            DeviceKind::Flex | DeviceKind::Ndarray => match index {
                None | Some(0) => Ok(self.cpu_device()),
                Some(i) => {
                    Err(unavailable(self, format!("{}:{i}: the CPU backend has one device ({0}:0)", self.name())))
                }
            },
            DeviceKind::Wgpu | DeviceKind::Vulkan | DeviceKind::Cuda => gpu::open(self, index),
        }
    }

    /// Every device burn finds for this backend here, in `--devices` index order.
    pub fn enumerate(self) -> Result<Vec<Device>> {
        match self {
            DeviceKind::Flex | DeviceKind::Ndarray => Ok(vec![self.cpu_device()]),
            DeviceKind::Wgpu | DeviceKind::Vulkan | DeviceKind::Cuda => gpu::enumerate(self),
        }
    }

    fn cpu_device(self) -> Device {
        match self {
            #[allow(deprecated)] // kept on purpose as the design's portable fallback
            DeviceKind::Ndarray => Device::ndarray(),
            _ => Device::flex(),
        }
    }

    /// What runs the training, for the log and report.md: the adapter's own name on a GPU
    /// backend (`llvmpipe (LLVM 15.0.6, 256 bits)` says it is Mesa's software Vulkan).
    pub fn describe(self, device: &Device) -> String {
        DeviceSpec { kind: self, index: None }.describe(device)
    }
}

/// One entry of `--devices`: a backend and which of its devices (`wgpu`, `wgpu:1`, `cuda:0`).
/// Without an index it is the backend's default device, the one `--device` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub index: Option<usize>,
}

impl DeviceSpec {
    pub fn open(self) -> Result<Device> {
        self.kind.open(self.index)
    }

    /// The entry and what runs it (`wgpu:0 (llvmpipe (LLVM 15.0.6, 256 bits))`, `flex (CPU)`).
    pub fn describe(self, device: &Device) -> String {
        format!("{self} ({})", adapter_name(device).as_deref().unwrap_or("CPU"))
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.kind.name()),
            None => f.write_str(self.kind.name()),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use clap::ValueEnum;
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => {
                let i = i.parse::<usize>().map_err(|_| format!("{s}: the device index after ':' must be a number"))?;
                (n, Some(i))
            }
            None => (s, None),
        };
        let kind = DeviceKind::from_str(name, true).map_err(|_| {
            let names: Vec<&str> = DeviceKind::value_variants().iter().map(|k| k.name()).collect();
            format!("{s}: unknown backend {name:?} (one of {})", names.join(", "))
        })?;
        Ok(DeviceSpec { kind, index })
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The adapter a GPU device runs on (`llvmpipe (LLVM 15.0.6, 256 bits)`), `None` on a CPU
/// backend.
pub fn adapter_name(device: &Device) -> Option<String> {
    gpu::adapter_name(device)
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

    /// The device, once a driver has been found for it: the backend's default (`index` None)
    /// or the `index`-th one enumerated. Listing the devices is what loads the driver; the
    /// CUDA loader panics where `libcuda.so` is missing, so that is caught here and said in a
    /// sentence.
    pub fn open(kind: DeviceKind, index: Option<usize>) -> Result<Device> {
        let found = enumerate(kind)?;
        let Some(i) = index else {
            return Ok(default_device(kind));
        };
        found.get(i).cloned().ok_or_else(|| {
            let listed: Vec<String> = (0..found.len()).map(|k| format!("{}:{k}", kind.name())).collect();
            unavailable(
                kind,
                format!(
                    "{}:{i}: burn finds {} {} device(s) here ({}); `fieldkit train devices` lists them",
                    kind.name(),
                    found.len(),
                    kind.name(),
                    listed.join(", ")
                ),
            )
        })
    }

    fn default_device(kind: DeviceKind) -> Device {
        match kind {
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "wgpu")]
            DeviceKind::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => Device::cuda(0),
            _ => unreachable!("enumerate refused {kind:?} first"),
        }
    }

    /// Every device of the backend, or why there is none.
    pub fn enumerate(kind: DeviceKind) -> Result<Vec<Device>> {
        let (ty, missing) = match kind {
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => (DeviceType::Wgpu, "wgpu found no adapter (no Vulkan, Metal, DX12 or GL driver)"),
            #[cfg(feature = "wgpu")]
            DeviceKind::Vulkan => (DeviceType::Vulkan, "no Vulkan driver answered"),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => (DeviceType::Cuda, "no NVIDIA GPU was found"),
            _ => return Err(unavailable(kind, super::not_built(kind))),
        };
        // The panic hook is the process's: two threads swapping it at once would leave the
        // silent one installed for good (every later panic message lost), so one at a time.
        static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let found = {
            let _one = HOOK.lock().unwrap_or_else(|e| e.into_inner());
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let found = std::panic::catch_unwind(|| Device::enumerate(ty).iter().cloned().collect::<Vec<_>>());
            std::panic::set_hook(hook);
            found
        };
        match found {
            Ok(list) if list.is_empty() => Err(unavailable(kind, format!("{missing}; {}", install_hint(kind)))),
            Ok(list) => Ok(list),
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

    pub fn open(kind: DeviceKind, _index: Option<usize>) -> Result<Device> {
        Err(unavailable(kind, super::not_built(kind)))
    }

    pub fn enumerate(kind: DeviceKind) -> Result<Vec<Device>> {
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

#[cfg(test)]
mod tests {
    use super::{DeviceKind, DeviceSpec};

    #[test]
    fn device_specs_parse_print_and_round_trip_through_json() {
        let spec: DeviceSpec = "cuda:1".parse().unwrap();
        assert_eq!(spec, DeviceSpec { kind: DeviceKind::Cuda, index: Some(1) });
        assert_eq!(spec.to_string(), "cuda:1");
        let plain: DeviceSpec = "WGPU".parse().unwrap();
        assert_eq!((plain.kind, plain.index, plain.to_string()), (DeviceKind::Wgpu, None, "wgpu".to_string()));
        let json = serde_json::to_string(&vec![spec, plain]).unwrap();
        assert_eq!(json, r#"["cuda:1","wgpu"]"#);
        assert_eq!(serde_json::from_str::<Vec<DeviceSpec>>(&json).unwrap(), vec![spec, plain]);
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().contains("must be a number"));
        assert!("tpu".parse::<DeviceSpec>().unwrap_err().contains("unknown backend \"tpu\" (one of flex, ndarray"));
        // The CPU backends have one device.
        assert!(DeviceKind::Flex.open(Some(0)).is_ok());
        assert!(DeviceKind::Flex
            .open(Some(1))
            .unwrap_err()
            .to_string()
            .contains("flex:1: the CPU backend has one device"));
    }
}
