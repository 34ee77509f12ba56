//! Detection training throughput: images/s of full optimisation steps (forward, SimOTA
//! assignment, YOLOX loss, backward, AdamW) of the default detector on synthetic boxes, after
//! a warm-up, and the process's peak RSS. Prints one JSON line.
//!
//!     cargo run --release -p fieldkit-trainer --example detect_bench -- [SIZE] [UNFREEZE_FROM] [STEPS] [BATCH] [DEVICE] [PRECISION]
//!
//! Defaults: 320 px, backbone features.4.. trainable (the `fieldkit train detect` default),
//! 6 timed steps, batch 16, flex (CPU). DEVICE: a `--device` value (flex, ndarray, wgpu, vulkan; cuda with --features cuda);
//! PRECISION: a `--precision` value (f32; f16 or bf16 on a GPU backend).

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use fieldkit_trainer::model::yolox::STRIDES;
use fieldkit_trainer::train::classify::optimizer_for;
use fieldkit_trainer::train::detect::assign::{Anchors, GtBox};
use fieldkit_trainer::train::detect::loss::{yolox_loss, BoxLoss};
use fieldkit_trainer::train::detect::DetectConfig;
use fieldkit_trainer::train::precision::{Amp, Precision};
use fieldkit_trainer::train::OptimizerKind;
use fieldkit_trainer::weights::load_backbone;
use fieldkit_trainer::DeviceKind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).map(|s| s.parse::<usize>()).transpose().map(|v| v.unwrap_or(d));
    let size = arg(0, 320)?;
    let from = arg(1, 4)?;
    let steps = arg(2, 6)?;
    let batch = arg(3, 16)?;
    let device_kind = match args.get(4) {
        Some(d) => <DeviceKind as clap::ValueEnum>::from_str(d, true)?,
        None => DeviceKind::Flex,
    };
    let weights = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let precision = match args.get(5) {
        Some(p) => <Precision as clap::ValueEnum>::from_str(p, true)?,
        None => Precision::F32,
    };
    let device = device_kind.device()?;
    precision.check(device_kind, &device)?;
    let mut amp = Amp::new(precision, None);
    device.seed(0);
    let mut cfg = DetectConfig::new(".".into());
    cfg.size = size as u32;
    cfg.unfreeze_from = from;
    let mut model = cfg.init_model(2, &device);
    load_backbone(&mut model.backbone, &weights)?;
    let mut model = model.train().with_trainable_from(from);
    let mut optim = optimizer_for(OptimizerKind::AdamW, cfg.weight_decay, 0.9, cfg.clip_grad);
    let anchors = Anchors::new(size as u32, &STRIDES);
    let pixels: Vec<f32> = (0..batch * 3 * size * size).map(|i| ((i * 7919 % 256) as f32 / 128.0) - 1.0).collect();
    // Six boxes per image at assorted sizes, like a field photo of seedlings.
    let s = size as f32;
    let boxes: Vec<Vec<GtBox>> = (0..batch)
        .map(|b| {
            (0..6)
                .map(|k| {
                    let (cx, cy) = (s * (0.15 + 0.14 * k as f32), s * (0.2 + 0.1 * ((b + k) % 6) as f32));
                    let w = s * (0.05 + 0.03 * k as f32);
                    GtBox { class: k % 2, bbox: [cx - w / 2.0, cy - w / 2.0, cx + w / 2.0, cy + w / 2.0] }
                })
                .collect()
        })
        .collect();
    let frozen = amp.lower(model.valid());
    let mut timed = 0.0;
    let mut positives = 0;
    for k in 0..steps + 2 {
        let t = Instant::now();
        let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [batch, 3, size, size]), &device);
        // The trainer's split: frozen prefix without autodiff.
        let compute = amp.lower(model.clone());
        let maps = compute.backbone_maps_split(&frozen, from, x);
        let (loss, parts) = yolox_loss(compute.forward_from_maps(maps), &boxes, &anchors, BoxLoss::Iou, false);
        assert!(parts.total.is_finite());
        positives = parts.positives;
        let g = GradientsParams::from_grads(amp.backward(loss), &model);
        model = amp.apply(&mut optim, model, vec![(1e-3, g)]);
        if k >= 2 {
            timed += t.elapsed().as_secs_f64();
        }
    }
    let ips = (steps * batch) as f64 / timed;
    println!(
        "{}",
        serde_json::json!({"tool": format!("fieldkit (burn {})", device_kind.describe(&device)), "device": device_kind.name(), "precision": precision.name(), "task": "detect", "size": size,
            "unfreeze_from": from, "batch": batch, "steps": steps, "positives_per_batch": positives,
            "images_per_s": ips, "peak_rss_mb": fieldkit_runtime::bench::peak_rss_mb().unwrap_or(0.0)})
    );
    Ok(())
}
