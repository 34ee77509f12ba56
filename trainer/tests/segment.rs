//! The segmenter (LR-ASPP on MobileNetV2): its ONNX export matches burn in tract.

use burn::prelude::*;
use fieldkit_runtime::{Engine, LoadOptions};
use fieldkit_trainer::export::export_segmenter;
use fieldkit_trainer::model::{to_host, SegmenterConfig};

/// A non-square input (64x96), BatchNorm statistics moved off their defaults by a few
/// training-mode forwards: burn's logits and tract's on the exported file agree to 1e-4.
#[test]
fn export_matches_burn_in_tract() {
    let device = Device::flex();
    device.seed(3);
    let m = SegmenterConfig::new(3).with_inter(16).init(&device).train();
    for k in 0..2 {
        let x = Tensor::<4>::random(
            [2, 3, 64, 96],
            burn::tensor::Distribution::Normal(k as f64 * 0.2, 1.0),
            &device.clone().autodiff(),
        );
        let _ = m.forward(x);
    }
    let m = m.valid();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.onnx");
    export_segmenter(&m, 64, 96, &path).unwrap();
    let engine = Engine::load_bare(&path, &LoadOptions::default()).unwrap();
    let n = 3 * 64 * 96;
    for k in 0..2 {
        let input: Vec<f32> = (0..n).map(|i| (((i + k * 31) * 7919 % 256) as f32 / 128.0) - 1.0).collect();
        let want = to_host(m.forward(Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, 64, 96]), &device)));
        let got = engine.session().unwrap().run_tensor(&input).unwrap();
        assert_eq!(got.len(), want.len(), "[1, 3, 64, 96] logits");
        let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "burn vs tract max abs diff {diff}");
    }
    assert!(export_segmenter(&m, 64, 90, &path).unwrap_err().to_string().contains("does not divide by 32"));
}
