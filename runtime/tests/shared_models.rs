//! Golden tests of the shared third-party models against onnxruntime (ignored tier).

mod common;
use common::*;

use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::Preprocess;
use fieldkit_runtime::{Engine, Layout, Output, PredictOptions};

fn mobilenet() -> (std::path::PathBuf, ModelCard) {
    let path = shared().join("assets/models/mobilenetv2-imagenet/mobilenetv2_features_bnfolded.onnx");
    let card = ModelCard::new(
        Task::Classify,
        vec!["imagenet-features".into()],
        InputSpec { name: "input".into(), shape: vec![-1, 3, 224, 224] },
        Preprocess::imagenet(224),
        Decode::Features { output: "features".into() },
    );
    (path, card)
}

fn yolox() -> (std::path::PathBuf, ModelCard) {
    let dir = shared().join("assets/models/yolox-nano-coco");
    let classes = std::fs::read_to_string(dir.join("coco.names"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    let card = ModelCard::new(
        Task::Detect,
        classes,
        InputSpec { name: "images".into(), shape: vec![1, 3, 416, 416] },
        Preprocess::yolox(416),
        Decode::Yolox { output: "output".into(), strides: vec![8, 16, 32], logits: false },
    );
    (dir.join("yolox_nano_416x416.onnx"), card)
}

#[test]
#[ignore = "needs ../shared"]
fn mobilenetv2_features_match_onnxruntime() {
    let want = floats(&read(&golden("mobilenetv2_pattern.json"))["output"]);
    for layout in Layout::ALL {
        let (path, card) = mobilenet();
        let engine = Engine::with_card_in(&path, card, layout).unwrap();
        let out = engine.session().unwrap().run_tensor(&pattern_imagenet(224, 224)).unwrap();
        let d = max_abs_diff(&out, &want);
        eprintln!("mobilenetv2 ({layout}): max |tract - onnxruntime| = {d:e} over 1280 features");
        assert!(d <= 1e-4);
    }
}

/// Intra-op threads split tract's products by output panels: the same sums in the same order,
/// so the features match single-threaded tract (and onnxruntime) to rounding.
#[cfg(feature = "threads")]
#[test]
#[ignore = "needs ../shared"]
fn mobilenetv2_on_two_threads_matches_one() {
    let (path, card) = mobilenet();
    let engine = Engine::with_card(&path, card).unwrap();
    let x = pattern_imagenet(224, 224);
    fieldkit_runtime::threads::set_intra_op_threads(2).unwrap();
    let two = engine.session().unwrap().run_tensor(&x).unwrap();
    fieldkit_runtime::threads::set_intra_op_threads(1).unwrap();
    let one = engine.session().unwrap().run_tensor(&x).unwrap();
    let d = max_abs_diff(&one, &two);
    eprintln!("mobilenetv2: max |2 threads - 1 thread| = {d:e}");
    assert!(d <= 1e-5);
    assert!(max_abs_diff(&two, &floats(&read(&golden("mobilenetv2_pattern.json"))["output"])) <= 1e-4);
}

#[test]
#[ignore = "needs ../shared"]
fn yolox_nano_raw_output_matches_onnxruntime() {
    let g = read(&golden("yolox_nano_pattern.json"));
    for layout in Layout::ALL {
        let (path, card) = yolox();
        let engine = Engine::with_card_in(&path, card, layout).unwrap();
        assert_eq!(engine.output_shape(), &[1, 3549, 85]);
        let out = engine.session().unwrap().run_tensor(&pattern(416, 416)).unwrap();
        let mut worst = 0.0f32;
        for (r, vals) in g["rows"].as_array().unwrap().iter().zip(g["values"].as_array().unwrap()) {
            let r = r.as_u64().unwrap() as usize;
            // The golden keeps 7 significant digits: compare relative to magnitude above 1.
            for (ours, theirs) in out[r * 85..(r + 1) * 85].iter().zip(floats(vals)) {
                worst = worst.max((ours - theirs).abs() / theirs.abs().max(1.0));
            }
        }
        eprintln!("yolox-nano ({layout}): max |tract - onnxruntime| (relative above 1) = {worst:e}");
        assert!(worst <= 1e-4);
        let sum: f64 = out.iter().map(|&v| v as f64).sum();
        let want = g["sum"].as_f64().unwrap();
        assert!((sum - want).abs() / want.abs() < 1e-5, "{layout}: sum {sum} vs {want}");
    }
}

/// Same detections as YOLOX's own pipeline (cv2 decode + INTER_LINEAR letterbox, onnxruntime,
/// YOLOX postprocess): identical count and classes; boxes overlap the reference at IoU >= 0.95
/// and scores within 0.01. The resize matches cv2 within 1/255 (core's goldens) and tract
/// matches onnxruntime to 3e-5, but the JPEG decoders (image crate vs libjpeg-turbo) differ by
/// a few levels, which moves a box on a soft edge by a few pixels.
#[test]
#[ignore = "needs ../shared"]
fn yolox_nano_detections_match_reference_pipeline() {
    let (path, card) = yolox();
    let engine = Engine::with_card(&path, card).unwrap();
    let mut s = engine.session().unwrap();
    let g = read(&golden("yolox_nano_detections.json"));
    for name in ["dog", "eagle", "horses", "person"] {
        let bytes = std::fs::read(shared().join(format!("assets/images/{name}.jpg"))).unwrap();
        let p = s.predict_bytes(&bytes, &PredictOptions::default()).unwrap();
        let Output::Detections(ours) = p.output else { panic!() };
        let want = g[name].as_array().unwrap();
        let summary: Vec<String> = ours.iter().map(|d| format!("{}:{:.3}", d.name, d.score)).collect();
        eprintln!(
            "{name}: {summary:?} (pre {:.1} ms, infer {:.1} ms, post {:.2} ms)",
            p.timing.preprocess_ms, p.timing.inference_ms, p.timing.postprocess_ms
        );
        assert_eq!(ours.len(), want.len(), "{name}: {summary:?} vs {want:?}");
        for w in want {
            let class = w["class"].as_u64().unwrap() as usize;
            let wb = floats(&w["bbox"]);
            let m = ours
                .iter()
                .filter(|d| d.class == class)
                .min_by(|a, b| max_abs_diff(&a.bbox, &wb).partial_cmp(&max_abs_diff(&b.bbox, &wb)).unwrap())
                .unwrap_or_else(|| panic!("{name}: no {class} detection"));
            let overlap = fieldkit_core::metrics::iou(&m.bbox, &[wb[0], wb[1], wb[2], wb[3]]);
            let ds = (m.score - w["score"].as_f64().unwrap() as f32).abs();
            eprintln!(
                "  {}: IoU with reference {overlap:.4} (max corner diff {:.2} px), score diff {ds:.4}",
                m.name,
                max_abs_diff(&m.bbox, &wb)
            );
            assert!(overlap >= 0.95 && ds <= 0.01, "{name} {}: IoU {overlap}, score diff {ds}", m.name);
        }
    }
}

#[test]
#[ignore = "needs ../shared"]
fn tampered_shared_model_is_refused() {
    let (src, mut card) = mobilenet();
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("features.onnx");
    std::fs::copy(&src, &model).unwrap();
    card.write_for(&model).unwrap();
    assert!(Engine::load(&model).is_ok());
    let mut b = std::fs::read(&model).unwrap();
    let mid = b.len() / 2;
    b[mid] = b[mid].wrapping_add(1);
    std::fs::write(&model, b).unwrap();
    assert!(Engine::load(&model).err().unwrap().to_string().contains("does not match its card"));
}

/// The NNEF cache entry of each shared model gives the same plan: outputs bit-identical to
/// loading the ONNX file.
#[test]
#[ignore = "needs ../shared"]
fn shared_models_from_the_nnef_cache_match_onnx_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let (mobilenet, mobilenet_card) = mobilenet();
    let (yolox, yolox_card) = yolox();
    for (src, mut card, input) in
        [(mobilenet, mobilenet_card, pattern_imagenet(224, 224)), (yolox, yolox_card, pattern(416, 416))]
    {
        let model = d.path().join(src.file_name().unwrap());
        std::fs::copy(&src, &model).unwrap();
        card.write_for(&model).unwrap();
        let want = Engine::load(&model).unwrap().session().unwrap().run_tensor(&input).unwrap();
        let written = Engine::load_cached(&model, Some(&cache)).unwrap();
        assert!(
            matches!(written.load_source(), fieldkit_runtime::LoadSource::Written(_)),
            "{:?}",
            written.load_source()
        );
        let cached = Engine::load_cached(&model, Some(&cache)).unwrap();
        assert!(matches!(cached.load_source(), fieldkit_runtime::LoadSource::Cache(_)), "{:?}", cached.load_source());
        assert_eq!(cached.session().unwrap().run_tensor(&input).unwrap(), want, "{}", model.display());
    }
}
