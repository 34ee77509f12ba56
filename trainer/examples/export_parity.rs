//! Writes the artefacts of the export parity check: the vendored ImageNet MobileNetV2 with a
//! seeded 9-class head, exported to ONNX, a deterministic input and burn's logits for it.
//! `benches/reference/ort_export_parity.py DIR` then runs the ONNX in onnxruntime and
//! compares (CI); this program itself compares against tract.
//!
//!     cargo run --release -p fieldkit-trainer --example export_parity -- OUT_DIR

use std::path::PathBuf;

use burn::prelude::*;
use fieldkit_core::fsio;
use fieldkit_trainer::export::export_classifier;
use fieldkit_trainer::model::MobileNetV2Config;
use fieldkit_trainer::weights::load_backbone;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: export_parity OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let device = Device::flex();
    device.seed(7);
    let mut model = MobileNetV2Config::new(9).init(&device);
    load_backbone(&mut model, &weights)?;
    let model = model.valid();
    let size = 224usize;
    let input = fieldkit_core::preprocess::reference_pattern_imagenet(size, size);
    let logits: Vec<f32> =
        model.forward(Tensor::<1>::from_floats(input.as_slice(), &device).reshape([1, 3, size, size])).into_data().try_to_vec()?;
    let path = out.join("model.onnx");
    export_classifier(&model, size as u32, &path)?;
    fsio::write_json(&out.join("parity.json"), &serde_json::json!({"input_shape": [1, 3, size, size], "burn_logits": logits}))?;

    let mut card = fieldkit_core::ModelCard::new(
        fieldkit_core::Task::Classify,
        (0..9).map(|i| format!("c{i}")).collect(),
        fieldkit_core::InputSpec { name: "input".into(), shape: vec![-1, 3, size as i64, size as i64] },
        fieldkit_core::Preprocess::imagenet_stretch(size as u32),
        fieldkit_core::Decode::Softmax { output: "logits".into() },
    );
    card.write_for(&path)?;
    let engine = fieldkit_runtime::Engine::load(&path)?;
    let tract = engine.session()?.run_tensor(&input)?;
    let diff = tract.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("burn vs tract on the exported model: max abs diff {diff:.2e} over {} logits", logits.len());
    if diff > 1e-4 {
        return Err(format!("export parity failed: {diff} > 1e-4").into());
    }
    Ok(())
}
