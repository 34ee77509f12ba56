//! Training throughput of one strategy at one input size: images/s over timed steps after a
//! warm-up, and the process's peak RSS. `benches/train_vs_torch.sh` runs it once per
//! configuration (so each peak RSS is its own) beside the PyTorch reference.
//!
//!     cargo run --release -p fieldkit-trainer --example train_bench -- STRATEGY SIZE [STEPS] [BATCH] [DEVICE] [PRECISION]
//!
//! DEVICE: a `--device` value (flex, the default; ndarray; wgpu; vulkan; cuda with
//! `--features cuda`); PRECISION: a `--precision` value (f32, the default; f16 and bf16 on a
//! GPU backend). `benches/train_gpu.sh` runs it per backend and precision.
//!
//! STRATEGY: head (features of a frozen backbone in eval mode, the cost of building the head
//! strategy's cache; training on the cache is free by comparison), partial (features.11..
//! train), full. Prints one JSON line.

use std::time::Instant;

use burn::prelude::*;
use fieldkit_trainer::model::MobileNetV2Config;
use fieldkit_trainer::train::classify::optimizer;
use fieldkit_trainer::train::precision::{Amp, Precision};
use fieldkit_trainer::train::step::{Input, Stepper};
use fieldkit_trainer::train::{ClassifyConfig, Strategy};
use fieldkit_trainer::weights::load_backbone;
use fieldkit_trainer::DeviceKind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strategy = args.first().map(String::as_str).unwrap_or("partial").to_string();
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let weights = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let kind = match args.get(4) {
        Some(d) => <DeviceKind as clap::ValueEnum>::from_str(d, true)?,
        None => DeviceKind::Flex,
    };
    let precision = match args.get(5) {
        Some(p) => <Precision as clap::ValueEnum>::from_str(p, true)?,
        None => Precision::F32,
    };
    let device = kind.device()?;
    precision.check(kind, &device)?;
    device.seed(0);
    let mut cfg = ClassifyConfig::new(".".into());
    cfg.size = size as u32;
    cfg.strategy = match strategy.as_str() {
        "head" => Strategy::Head,
        "partial" => Strategy::Partial,
        "full" => Strategy::Full,
        s => return Err(format!("unknown strategy {s}").into()),
    };
    let mut model = MobileNetV2Config::new(9).init(&device);
    load_backbone(&mut model, &weights)?;
    let pixels: Vec<f32> = (0..batch * 3 * size * size).map(|i| ((i * 7919 % 256) as f32 / 128.0) - 1.0).collect();
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 9).collect();
    let mut timed = 0.0;
    if cfg.strategy == Strategy::Head {
        let eval = model.valid();
        for k in 0..steps + 2 {
            let t = Instant::now();
            let x = Tensor::<1>::from_floats(pixels.as_slice(), &device).reshape([batch, 3, size, size]);
            let f: Vec<f32> = eval.forward_features(x).into_data().try_to_vec()?;
            assert_eq!(f.len(), batch * 1280);
            if k >= 2 {
                timed += t.elapsed().as_secs_f64();
            }
        }
    } else {
        let from = cfg.trainable_from(0);
        let mut m = model.with_trainable_from(from).train();
        let mut optim = optimizer(&cfg);
        let mut stepper = Stepper::new(&device, &cfg, None);
        let mut amp = Amp::new(precision, None);
        for k in 0..steps + 2 {
            let t = Instant::now();
            let (next, loss) = stepper.step(
                m,
                &mut optim,
                &mut amp,
                &cfg,
                Input::Images { pixels: pixels.clone(), size },
                labels.clone(),
                1e-4,
                from,
            );
            m = next;
            assert!(loss.is_finite());
            if k >= 2 {
                timed += t.elapsed().as_secs_f64();
            }
        }
    }
    let ips = (steps * batch) as f64 / timed;
    println!(
        "{}",
        serde_json::json!({"tool": format!("fieldkit (burn {})", kind.describe(&device)), "device": kind.name(), "precision": precision.name(), "strategy": strategy, "size": size, "batch": batch, "steps": steps,
            "images_per_s": ips, "peak_rss_mb": fieldkit_runtime::bench::peak_rss_mb().unwrap_or(0.0)})
    );
    Ok(())
}
