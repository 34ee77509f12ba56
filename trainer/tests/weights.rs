//! Pretrained-weight loading: parity with the BN-folded ONNX in tract and onnxruntime
//! (shared tier), and clear errors for wrong files (default tier).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use fieldkit_trainer::model::MobileNetV2Config;
use fieldkit_trainer::weights::load_backbone;

fn shared() -> PathBuf {
    let p = std::env::var_os("FIELDKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(p.join("assets").is_dir(), "shared assets not found at {} (set FIELDKIT_SHARED)", p.display());
    p
}

use fieldkit_core::preprocess::reference_pattern_imagenet as pattern_imagenet;

#[test]
#[ignore = "needs ../shared"]
fn pretrained_backbone_matches_bn_folded_onnx_in_tract_and_onnxruntime() {
    let device = Device::flex();
    let mut model = MobileNetV2Config::new(0).init(&device);
    let report = load_backbone(
        &mut model,
        &shared().join("assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors"),
    )
    .unwrap();
    assert_eq!(report.applied, 260);
    let input = pattern_imagenet(224, 224);
    let x = Tensor::<1>::from_floats(input.as_slice(), &device).reshape([1, 3, 224, 224]);
    let ours: Vec<f32> = model.forward_features(x).into_data().try_to_vec::<f32>().unwrap();

    let onnx = shared().join("assets/models/mobilenetv2-imagenet/mobilenetv2_features_bnfolded.onnx");
    let card = fieldkit_core::ModelCard::new(
        fieldkit_core::Task::Classify,
        vec!["features".into()],
        fieldkit_core::InputSpec { name: "input".into(), shape: vec![-1, 3, 224, 224] },
        fieldkit_core::Preprocess::imagenet(224),
        fieldkit_core::Decode::Features { output: "features".into() },
    );
    let tract: Vec<f32> =
        fieldkit_runtime::Engine::with_card(&onnx, card).unwrap().session().unwrap().run_tensor(&input).unwrap();
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/golden/mobilenetv2_pattern.json"))
            .unwrap(),
    )
    .unwrap();
    let ort: Vec<f32> = golden["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (dt, dor) = (diff(&ours, &tract), diff(&ours, &ort));
    eprintln!("burn (flex) vs tract: max |diff| {dt:e}; vs onnxruntime: {dor:e}");
    assert!(dt <= 1e-4 && dor <= 1e-4);
}

fn save(model: &impl ModuleSnapshot, path: &Path) {
    let mut store = SafetensorsStore::from_file(path);
    model.save_into(&mut store).unwrap();
}

#[test]
fn round_trip_and_wrong_files_are_named() {
    let device = Device::flex();
    let d = tempfile::tempdir().unwrap();
    let small = MobileNetV2Config::new(0).with_width(0.35).init(&device);
    let path = d.path().join("small.safetensors");
    save(&small, &path);

    // Same width: every backbone tensor applied, the new head reported missing.
    let mut same = MobileNetV2Config::new(4).with_width(0.35).init(&device);
    let r = load_backbone(&mut same, &path).unwrap();
    assert!(r.applied > 200);
    assert!(r.missing.iter().all(|m| m.starts_with("classifier.")) && !r.missing.is_empty());
    let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
    let a: Vec<f32> = small.forward_features(x.clone()).into_data().try_to_vec::<f32>().unwrap();
    let b: Vec<f32> = same.forward_features(x).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(a, b);

    // Another width: shapes do not fit.
    let mut wide = MobileNetV2Config::new(0).with_width(0.5).init(&device);
    let e = load_backbone(&mut wide, &path).unwrap_err().to_string();
    assert!(e.contains("small.safetensors") && e.contains("did not fit"), "{e}");

    // Not a safetensors file, and no file at all.
    let junk = d.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let e = load_backbone(&mut wide, &junk).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = load_backbone(&mut wide, &d.path().join("none.safetensors")).unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
}
