//! Writes the artefacts of the export parity check: the vendored ImageNet MobileNetV2 with a
//! seeded 9-class head (alone and with the 8 test-time views of a tile averaged), the
//! YOLOX-style detector on the same backbone with a seeded 2-class neck and head, and the
//! LR-ASPP segmenter (alone and with the stride-4 decoder) with a seeded 3-class head
//! (160x128), exported to ONNX, a deterministic input and burn's outputs for it.
//! `benches/reference/ort_export_parity.py DIR` then runs each ONNX in onnxruntime and
//! compares (CI); this program itself compares against tract.
//!
//!     cargo run --release -p fieldkit-trainer --example export_parity -- OUT_DIR

use std::path::PathBuf;

use burn::prelude::*;
use fieldkit_core::fsio;
use fieldkit_trainer::export::{export_classifier, export_detector, export_segmenter, Tta};
use fieldkit_trainer::model::yolox::STRIDES;
use fieldkit_trainer::model::{to_host, DetectorConfig, MobileNetV2Config, SegmenterConfig};
use fieldkit_trainer::weights::load_backbone;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: export_parity OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let device = Device::flex();
    device.seed(7);
    let mut model = MobileNetV2Config::new(9).init(&device);
    load_backbone(&mut model, &weights)?;
    let model = model.valid();
    let size = 224usize;
    let input = fieldkit_core::preprocess::reference_pattern_imagenet(size, size);
    let logits: Vec<f32> = model
        .forward(Tensor::<1>::from_floats(input.as_slice(), &device).reshape([1, 3, size, size]))
        .into_data()
        .try_to_vec()?;
    let path = out.join("model.onnx");
    export_classifier(&model, size as u32, Tta::None, &path)?;
    let classifier_card = |path: &std::path::Path| {
        fieldkit_core::ModelCard::new(
            fieldkit_core::Task::Classify,
            (0..9).map(|i| format!("c{i}")).collect(),
            fieldkit_core::InputSpec { name: "input".into(), shape: vec![-1, 3, size as i64, size as i64] },
            fieldkit_core::Preprocess::imagenet_stretch(size as u32),
            fieldkit_core::Decode::Softmax { output: "logits".into() },
        )
        .write_for(path)
    };
    classifier_card(&path)?;
    check_tract(&path, &input, &logits, "classifier")?;
    // The same with the 8 test-time views of a top-down tile averaged in the graph: burn's
    // logits of each view (flips, then H and W swapped), averaged.
    let x = || Tensor::<1>::from_floats(input.as_slice(), &device).reshape([1, 3, size, size]);
    let mut d4_logits = vec![0f32; logits.len()];
    for turn in [false, true] {
        for v in [x(), x().flip([3]), x().flip([2]), x().flip([2, 3])] {
            let v = if turn { v.swap_dims(2, 3) } else { v };
            for (a, l) in d4_logits.iter_mut().zip(to_host(model.forward(v))) {
                *a += l / 8.0;
            }
        }
    }
    let tpath = out.join("model_d4.onnx");
    export_classifier(&model, size as u32, Tta::D4, &tpath)?;
    classifier_card(&tpath)?;
    check_tract(&tpath, &input, &d4_logits, "classifier with 8 test-time views")?;

    // The detector at 320 px; the export sigmoids objectness and class scores.
    let dsize = 320usize;
    let mut det = DetectorConfig::new(2).init(&device);
    load_backbone(&mut det.backbone, &weights)?;
    let det = det.valid();
    let dinput = fieldkit_core::preprocess::reference_pattern_imagenet(dsize, dsize);
    let raw = det.forward(Tensor::<1>::from_floats(dinput.as_slice(), &device).reshape([1, 3, dsize, dsize]));
    let row = raw.dims()[2];
    let mut scores = to_host(raw);
    for (i, v) in scores.iter_mut().enumerate() {
        if i % row >= 4 {
            *v = 1.0 / (1.0 + (-*v).exp());
        }
    }
    let dpath = out.join("detector.onnx");
    export_detector(&det, dsize as u32, &dpath)?;
    let mut card = fieldkit_core::ModelCard::new(
        fieldkit_core::Task::Detect,
        vec!["crop".into(), "weed".into()],
        fieldkit_core::InputSpec { name: "input".into(), shape: vec![-1, 3, dsize as i64, dsize as i64] },
        fieldkit_core::Preprocess::imagenet_stretch(dsize as u32),
        fieldkit_core::Decode::Yolox { output: "output".into(), strides: STRIDES.to_vec(), logits: false },
    );
    card.write_for(&dpath)?;
    check_tract(&dpath, &dinput, &scores, "detector")?;

    // The segmenter on a non-square input; its logits at the input size.
    let (sh, sw) = (128usize, 160usize);
    let mut seg = SegmenterConfig::new(3).init(&device);
    load_backbone(&mut seg.backbone, &weights)?;
    let seg = seg.valid();
    let sinput = fieldkit_core::preprocess::reference_pattern_imagenet(sh, sw);
    let seg_logits = to_host(seg.forward(Tensor::<1>::from_floats(sinput.as_slice(), &device).reshape([1, 3, sh, sw])));
    let spath = out.join("segmenter.onnx");
    export_segmenter(&seg, sh as u32, sw as u32, &spath)?;
    let engine = fieldkit_runtime::Engine::load_bare(&spath, &Default::default())?;
    compare(engine.session()?.run_tensor(&sinput)?, &seg_logits, "segmenter")?;
    // The same with the stride-4 decoder (seeded head, ImageNet backbone).
    let mut fine = SegmenterConfig::new(3).with_fine(true).init(&device);
    load_backbone(&mut fine.backbone, &weights)?;
    let fine = fine.valid();
    let fine_logits =
        to_host(fine.forward(Tensor::<1>::from_floats(sinput.as_slice(), &device).reshape([1, 3, sh, sw])));
    let fpath = out.join("segmenter_s4.onnx");
    export_segmenter(&fine, sh as u32, sw as u32, &fpath)?;
    let engine = fieldkit_runtime::Engine::load_bare(&fpath, &Default::default())?;
    compare(engine.session()?.run_tensor(&sinput)?, &fine_logits, "segmenter with the stride-4 decoder")?;
    fsio::write_json(
        &out.join("parity.json"),
        &serde_json::json!({"models": [
            {"model": "model.onnx", "input_shape": [1, 3, size, size], "burn_output": logits},
            {"model": "model_d4.onnx", "input_shape": [1, 3, size, size], "burn_output": d4_logits},
            {"model": "detector.onnx", "input_shape": [1, 3, dsize, dsize], "burn_output": scores},
            {"model": "segmenter.onnx", "input_shape": [1, 3, sh, sw], "burn_output": seg_logits},
            {"model": "segmenter_s4.onnx", "input_shape": [1, 3, sh, sw], "burn_output": fine_logits},
        ]}),
    )?;
    Ok(())
}

fn check_tract(
    path: &std::path::Path,
    input: &[f32],
    burn: &[f32],
    what: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = fieldkit_runtime::Engine::load(path)?;
    compare(engine.session()?.run_tensor(input)?, burn, what)
}

fn compare(tract: Vec<f32>, burn: &[f32], what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let diff = tract.iter().zip(burn).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("{what}: burn vs tract on the exported model: max abs diff {diff:.2e} over {} outputs", burn.len());
    if diff > 1e-4 || tract.len() != burn.len() {
        return Err(format!(
            "{what} export parity failed: {diff} > 1e-4 (or {} vs {} values)",
            tract.len(),
            burn.len()
        )
        .into());
    }
    Ok(())
}
