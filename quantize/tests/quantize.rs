//! End-to-end quantization of a small MobileNet-like classifier built here (conv, depthwise,
//! pointwise, residual add, pooling, Gemm) on the vendored weed subset: INT8 static, weights
//! only and FP16 outputs load and run in tract close to the float model; bad inputs fail
//! clearly and leave no output behind.

use std::path::{Path, PathBuf};

use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::preprocess::{reference_pattern_imagenet, Preprocess};
use fieldkit_quantize::graph::Model;
use fieldkit_quantize::{quantize, Method, Mode, Placement, QuantizeConfig, QuantizeError};
use fieldkit_runtime::onnx_graph::{attr_int, save, tensor_f32, Dim, GraphBuilder};
use fieldkit_runtime::Engine;

const SIZE: u32 = 32;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weed_mini() -> PathBuf {
    repo().join("assets/data/weed-mini")
}

fn classes() -> Vec<String> {
    let mut c: Vec<String> = std::fs::read_dir(weed_mini().join("train"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    c.sort();
    c
}

/// Deterministic weights in [-a, a].
fn weights(n: usize, seed: usize, a: f32) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0) * a).collect()
}

/// input [N,3,32,32] -> conv3x3(8)+relu6 -> depthwise3x3+relu6 -> conv1x1(8) + residual
/// -> GAP -> Gemm(9) "logits".
fn write_model(dir: &Path) -> PathBuf {
    let mut g = GraphBuilder::new("tiny-mobilenet");
    let n = || Dim::Param("N".into());
    g.input_f32("input", &[n(), Dim::Fixed(3), Dim::Fixed(SIZE as i64), Dim::Fixed(SIZE as i64)]);
    g.initializer(tensor_f32("w0", &[8, 3, 3, 3], &weights(8 * 27, 1, 0.4)));
    g.initializer(tensor_f32("b0", &[8], &weights(8, 2, 0.1)));
    g.initializer(tensor_f32("w1", &[8, 1, 3, 3], &weights(72, 3, 0.5)));
    g.initializer(tensor_f32("b1", &[8], &weights(8, 4, 0.1)));
    g.initializer(tensor_f32("w2", &[8, 8, 1, 1], &weights(64, 5, 0.4)));
    g.initializer(tensor_f32("b2", &[8], &weights(8, 6, 0.1)));
    g.initializer(tensor_f32("wg", &[9, 8], &weights(72, 7, 0.8)));
    g.initializer(tensor_f32("bg", &[9], &weights(9, 8, 0.1)));
    g.initializer(tensor_f32("lo", &[], &[0.0]));
    g.initializer(tensor_f32("hi", &[], &[6.0]));
    let pads = || attr_ints("pads", &[1, 1, 1, 1]);
    g.node("Conv", &["input", "w0", "b0"], &["c0"], vec![pads(), attr_ints("strides", &[2, 2])]);
    g.node("Clip", &["c0", "lo", "hi"], &["r0"], vec![]);
    g.node("Conv", &["r0", "w1", "b1"], &["c1"], vec![pads(), attr_int("group", 8)]);
    g.node("Clip", &["c1", "lo", "hi"], &["r1"], vec![]);
    g.node("Conv", &["r1", "w2", "b2"], &["c2"], vec![]);
    g.node("Add", &["c2", "r0"], &["s"], vec![]);
    g.node("GlobalAveragePool", &["s"], &["p"], vec![]);
    g.node("Flatten", &["p"], &["f"], vec![attr_int("axis", 1)]);
    g.node("Gemm", &["f", "wg", "bg"], &["logits"], vec![attr_int("transB", 1)]);
    g.output_f32("logits", &[n(), Dim::Fixed(9)]);
    let path = dir.join("tiny.onnx");
    save(&g.into_model(13, "test"), &path).unwrap();
    let mut card = ModelCard::new(
        Task::Classify,
        classes(),
        InputSpec { name: "input".into(), shape: vec![-1, 3, SIZE as i64, SIZE as i64] },
        Preprocess::imagenet_stretch(SIZE),
        Decode::Softmax { output: "logits".into() },
    );
    card.write_for(&path).unwrap();
    path
}

fn attr_ints(name: &str, v: &[i64]) -> fieldkit_runtime::onnx_graph::pb::AttributeProto {
    fieldkit_runtime::onnx_graph::attr_ints(name, v)
}

fn logits(model: &Path) -> Vec<f32> {
    let engine = Engine::load(model).unwrap();
    engine.session().unwrap().run_tensor(&reference_pattern_imagenet(SIZE as usize, SIZE as usize)).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn op_types(path: &Path) -> Vec<(String, String)> {
    let m = Model::load(path).unwrap();
    m.graph().node.iter().map(|n| (n.domain.clone(), n.op_type.clone())).collect()
}

fn int8_config(dir: &Path, model: &Path, name: &str) -> QuantizeConfig {
    let mut c = QuantizeConfig::new(model.to_path_buf(), dir.join(name), Mode::Int8);
    c.calib = Some(weed_mini().join("train"));
    c.workers = 2;
    c.error_images = 8;
    c
}

#[test]
fn int8_static_runs_in_tract_close_to_float_with_a_full_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let reference = logits(&model);
    for (method, placement) in [
        (Method::Percentile(99.99), Placement::Inputs),
        (Method::MinMax, Placement::InputsOutputs),
        (Method::Entropy, Placement::Inputs),
        (Method::Mse, Placement::Inputs),
    ] {
        let mut cfg = int8_config(dir.path(), &model, "tiny.int8.onnx");
        cfg.method = method;
        cfg.placement = placement;
        cfg.val = Some(weed_mini());
        let r = quantize(&cfg, &|_| {}).unwrap();
        let q = logits(&cfg.out);
        let cos = cosine(&reference, &q);
        // Entropy clips hardest; on random weights that costs a little more.
        let floor = if method == Method::Entropy { 0.97 } else { 0.98 };
        assert!(cos > floor, "{method:?} {placement:?}: cosine {cos}");
        assert_eq!(r.calibration_images, 144);
        assert_eq!(r.quantized_layers, 4);
        assert!(r.fp32_metric.is_some() && r.quant_metric.is_some() && r.drop.is_some());
        assert_eq!(r.layers.len(), 4);
        assert!(r.layers.iter().all(|l| l.sqnr_db.is_finite() && l.sqnr_db > 5.0), "{:?}", r.layers);
        // Standard ONNX only: QDQ around the original ops.
        let ops = op_types(&cfg.out);
        assert!(ops.iter().all(|(d, _)| d.is_empty()));
        assert!(ops.iter().any(|(_, o)| o == "QuantizeLinear") && ops.iter().any(|(_, o)| o == "DequantizeLinear"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("tiny.int8.report.json")).unwrap()).unwrap();
        for key in ["fp32_metric", "quant_metric", "drop", "size_ratio", "fp32_layers"] {
            assert!(json.get(key).is_some(), "report JSON lacks {key}");
        }
        assert!(dir.path().join("tiny.int8.report.md").is_file() && dir.path().join("tiny.int8.report.png").is_file());
        // The card beside the output matches its bytes and keeps the float model's spec.
        let card = ModelCard::load_verified(&cfg.out).unwrap();
        assert_eq!(card.classes, classes());
        assert!(card.metrics.contains_key("valid_top1"));
    }
}

#[test]
fn keep_fp32_and_the_accuracy_fallback_hold_layers_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let m = Model::load(&model).unwrap();
    let names: Vec<String> = m.targets().iter().map(|t| t.name.clone()).collect();
    let mut cfg = int8_config(dir.path(), &model, "kept.onnx");
    cfg.keep_fp32 = vec![names[0].clone()];
    let r = quantize(&cfg, &|_| {}).unwrap();
    assert_eq!(r.fp32_layers, vec![names[0].clone()]);
    assert_eq!(r.quantized_layers, 3);
    // The kept layer reads the float weight, not a DequantizeLinear.
    let out = Model::load(&cfg.out).unwrap();
    let conv = out.graph().node.iter().find(|n| n.output[0] == "c0").unwrap();
    assert_eq!(conv.input[1], "w0");
    // A budget of -1 pp cannot be met: every step is taken and the report says so.
    let mut cfg = int8_config(dir.path(), &model, "fallback.onnx");
    cfg.val = Some(weed_mini());
    cfg.max_drop = Some(-1.0);
    let r = quantize(&cfg, &|_| {}).unwrap();
    assert!(!r.fallback.is_empty());
    assert_eq!(r.fp32_layers.len(), 4, "{:?}", r.fallback);
    assert!(r.warnings.iter().any(|w| w.contains("budget")));
    let bad = QuantizeConfig { keep_fp32: vec!["nope".into()], ..int8_config(dir.path(), &model, "x.onnx") };
    let e = quantize(&bad, &|_| {}).unwrap_err().to_string();
    assert!(e.contains("'nope'") && e.contains(&names[0]), "{e}");
}

/// Weights-only with a budget: the fallback measures each layer's weights on the validation
/// images (no calibration data) and takes steps until the drop fits; an impossible budget
/// puts every layer back and warns; a met budget takes none.
#[test]
fn weights_only_fallback_needs_no_calibration_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let mut cfg = QuantizeConfig::new(model.clone(), dir.path().join("w.onnx"), Mode::WeightsOnly);
    cfg.val = Some(weed_mini());
    cfg.max_drop = Some(-1.0);
    cfg.workers = 2;
    cfg.error_images = 8;
    let r = quantize(&cfg, &|_| {}).unwrap();
    assert_eq!(r.fp32_layers.len(), 4, "{:?}", r.fallback);
    assert!(!r.fallback.is_empty() && r.fallback.iter().all(|f| f.float_inputs == 0), "{:?}", r.fallback);
    assert!(r.fallback.windows(2).all(|w| w[0].steps < w[1].steps), "{:?}", r.fallback);
    assert!(r.warnings.iter().any(|w| w.contains("budget")), "{:?}", r.warnings);
    assert_eq!(r.drop, Some(0.0), "all float is the float model");
    cfg.max_drop = Some(100.0);
    cfg.out = dir.path().join("w2.onnx");
    let r = quantize(&cfg, &|_| {}).unwrap();
    assert!(r.fallback.is_empty() && r.fp32_layers.is_empty(), "{:?}", r.fallback);
    // FP16 has no layer fallback.
    let mut cfg = QuantizeConfig::new(model, dir.path().join("h.onnx"), Mode::Fp16);
    cfg.val = Some(weed_mini());
    cfg.max_drop = Some(0.5);
    expect_err(&cfg, "--max-drop applies to INT8");
}

#[test]
fn weights_only_and_fp16_need_no_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let reference = logits(&model);
    let cfg = QuantizeConfig::new(model.clone(), dir.path().join("w.onnx"), Mode::WeightsOnly);
    quantize(&cfg, &|_| {}).unwrap();
    assert!(cosine(&reference, &logits(&cfg.out)) > 0.995);
    let ops = op_types(&cfg.out);
    assert!(!ops.iter().any(|(_, o)| o == "QuantizeLinear"), "weights only: no activation quantization");

    for keep_io in [true, false] {
        let mut cfg = QuantizeConfig::new(model.clone(), dir.path().join(format!("h{keep_io}.onnx")), Mode::Fp16);
        cfg.keep_io_f32 = keep_io;
        let r = quantize(&cfg, &|_| {}).unwrap();
        let q = logits(&cfg.out);
        let max = reference.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 2e-2, "fp16 keep_io={keep_io}: max abs diff {max}");
        // Conv weights halve; the Gemm head stays f32 and names dominate a model this small.
        assert!(r.size_ratio < 0.9, "fp16 size ratio {}", r.size_ratio);
        let m = Model::load(&cfg.out).unwrap();
        let convs: Vec<_> = m.graph().initializer.iter().filter(|t| t.dims.len() == 4).collect();
        assert!(convs.len() == 3 && convs.iter().all(|t| t.data_type == fieldkit_quantize::graph::FLOAT16));
    }
}

fn expect_err(cfg: &QuantizeConfig, needle: &str) {
    let e = quantize(cfg, &|_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
    assert!(!cfg.out.exists(), "a failed run left {}", cfg.out.display());
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    // Not an ONNX file.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xffnot protobuf at all").unwrap();
    expect_err(&QuantizeConfig::new(junk.clone(), dir.path().join("o1.onnx"), Mode::WeightsOnly), "not an ONNX model");
    // Empty calibration folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut cfg = int8_config(dir.path(), &model, "o2.onnx");
    cfg.calib = Some(empty.clone());
    expect_err(&cfg, "no calibration images");
    // Too few images: refused unless forced.
    let few = dir.path().join("few");
    std::fs::create_dir(&few).unwrap();
    for (i, p) in std::fs::read_dir(weed_mini().join("train/purslane")).unwrap().take(3).enumerate() {
        std::fs::copy(p.unwrap().path(), few.join(format!("{i}.jpg"))).unwrap();
    }
    cfg.calib = Some(few.clone());
    expect_err(&cfg, "only 3 calibration images");
    cfg.force = true;
    let r = quantize(&cfg, &|_| {}).unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("only 3")));
    // Static INT8 without calibration data, or without a card.
    let mut cfg = int8_config(dir.path(), &model, "o3.onnx");
    cfg.calib = None;
    expect_err(&cfg, "--calib");
    let bare = dir.path().join("bare.onnx");
    std::fs::copy(&model, &bare).unwrap();
    expect_err(&int8_config(dir.path(), &bare, "o4.onnx"), "no card");
    // A budget without data to measure it.
    let mut cfg = int8_config(dir.path(), &model, "o5.onnx");
    cfg.max_drop = Some(0.5);
    expect_err(&cfg, "--max-drop needs --val");
    // A model the card does not describe (input renamed).
    let mut m = Model::load(&model).unwrap();
    m.graph_mut().input[0].name = "pixels".into();
    for n in m.graph_mut().node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| *i == "input") {
            *i = "pixels".into();
        }
    }
    let renamed = dir.path().join("renamed.onnx");
    m.save(&renamed).unwrap();
    let mut card = ModelCard::read_for(&model).unwrap();
    card.write_for(&renamed).unwrap();
    expect_err(&int8_config(dir.path(), &renamed, "o6.onnx"), "input");
    // An op no runtime here knows.
    let mut m = Model::load(&model).unwrap();
    let gap = m.graph_mut().node.iter_mut().find(|n| n.op_type == "GlobalAveragePool").unwrap();
    gap.op_type = "FancyPool".into();
    gap.domain = "com.example".into();
    let odd = dir.path().join("odd.onnx");
    m.save(&odd).unwrap();
    card.write_for(&odd).unwrap();
    let e = quantize(&int8_config(dir.path(), &odd, "o7.onnx"), &|_| {}).unwrap_err();
    assert!(matches!(e, QuantizeError::Runtime(_)) && e.to_string().contains("FancyPool"), "{e}");
    assert!(!dir.path().join("o7.onnx").exists());
}
