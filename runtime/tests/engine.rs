//! Engine tests on the vendored tiny models (built by benches/reference/ort_goldens.py,
//! outputs from onnxruntime 1.32).

mod common;
use common::*;

use fieldkit_core::detect::{decode_yolox, nms, NmsOptions};
use fieldkit_runtime::{Engine, Layout, Output, PredictOptions, RuntimeError};

#[test]
fn classifier_matches_onnxruntime() {
    let g = read(&golden("tiny_models.json"));
    let engine = Engine::with_card(&golden("tiny_classifier.onnx"), tiny_classifier_card()).unwrap();
    assert_eq!(engine.input_size(), (32, 32));
    let out = engine.session().unwrap().run_tensor(&pattern_imagenet(32, 32)).unwrap();
    let d = max_abs_diff(&out, &floats(&g["classifier_logits"]));
    assert!(d <= 1e-4, "max |tract - onnxruntime| = {d}");
}

#[test]
fn detector_output_and_decoding_match_the_reference() {
    let g = read(&golden("tiny_models.json"));
    let engine = Engine::with_card(&golden("tiny_detector.onnx"), tiny_detector_card()).unwrap();
    let input: Vec<f32> = pattern(64, 64).iter().map(|v| v / 255.0).collect();
    let raw = engine.session().unwrap().run_tensor(&input).unwrap();
    let expected: Vec<f32> = g["detector_output"].as_array().unwrap().iter().flat_map(floats).collect();
    let d = max_abs_diff(&raw, &expected);
    assert!(d <= 1e-4, "max |tract - onnxruntime| = {d}");
    let opts = NmsOptions { score_threshold: 0.05, ..Default::default() };
    let dets = nms(decode_yolox(&raw, 2, 64, 64, &[32], true, opts.score_threshold).unwrap(), &opts);
    let want = g["detections"].as_array().unwrap();
    assert_eq!(dets.len(), want.len(), "{dets:?}");
    for (ours, theirs) in dets.iter().zip(want) {
        assert_eq!(ours.class as u64, theirs["class"].as_u64().unwrap());
        assert!((ours.score - theirs["score"].as_f64().unwrap() as f32).abs() < 1e-5);
        assert!(max_abs_diff(&ours.bbox, &floats(&theirs["bbox"])) < 1e-3);
    }
}

/// The channel-last plan is another plan (other nodes) doing the same arithmetic: both layouts match onnxruntime.
#[test]
fn both_layouts_match_onnxruntime() {
    let g = read(&golden("tiny_models.json"));
    let det_input: Vec<f32> = pattern(64, 64).iter().map(|v| v / 255.0).collect();
    let det_want: Vec<f32> = g["detector_output"].as_array().unwrap().iter().flat_map(floats).collect();
    let mut plans = Vec::new();
    for layout in Layout::ALL {
        let cls = Engine::with_card_in(&golden("tiny_classifier.onnx"), tiny_classifier_card(), layout).unwrap();
        assert_eq!(cls.layout(), layout);
        let out = cls.session().unwrap().run_tensor(&pattern_imagenet(32, 32)).unwrap();
        let d = max_abs_diff(&out, &floats(&g["classifier_logits"]));
        assert!(d <= 1e-4, "{layout}: classifier max |tract - onnxruntime| = {d}");
        let det = Engine::with_card_in(&golden("tiny_detector.onnx"), tiny_detector_card(), layout).unwrap();
        let mut s = det.session().unwrap();
        let d = max_abs_diff(&s.run_tensor(&det_input).unwrap(), &det_want);
        assert!(d <= 1e-4, "{layout}: detector max |tract - onnxruntime| = {d}");
        let dws = Engine::with_card_in(&golden("tiny_dwsep.onnx"), tiny_dwsep_card(), layout).unwrap();
        let mut s = dws.session().unwrap();
        let x = pattern_imagenet(32, 32);
        let d = max_abs_diff(&s.run_tensor(&x).unwrap(), &floats(&g["dwsep_features"]));
        assert!(d <= 1e-4, "{layout}: depthwise block max |tract - onnxruntime| = {d}");
        let mut nodes: Vec<String> =
            s.profile(&x, 1).unwrap().nodes.into_iter().map(|n| format!("{} {}", n.op, n.name)).collect();
        nodes.sort();
        plans.push(nodes);
    }
    assert_ne!(plans[0], plans[1], "the layouts built the same plan: {plans:?}");
    assert_eq!(
        Engine::with_card(&golden("tiny_classifier.onnx"), tiny_classifier_card()).unwrap().layout(),
        Layout::Nhwc
    );
}

#[test]
fn predict_handles_any_image_size_and_bad_bytes() {
    let engine = Engine::with_card(&golden("tiny_detector.onnx"), tiny_detector_card()).unwrap();
    let mut s = engine.session().unwrap();
    let opts = PredictOptions { nms: NmsOptions { score_threshold: 0.05, ..Default::default() }, ..Default::default() };
    for (w, h) in [(1, 1), (5000, 3), (3, 900), (64, 64)] {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 9]));
        let p = s.predict(&img, &opts).unwrap();
        let Output::Detections(d) = p.output else { panic!("detections expected") };
        for det in d {
            assert!(
                det.bbox[0] >= 0.0 && det.bbox[2] <= w as f32 && det.bbox[3] <= h as f32,
                "{det:?} outside {w}x{h}"
            );
        }
    }
    let mut png = Vec::new();
    image::GrayImage::from_pixel(40, 20, image::Luma([200]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(s.predict_bytes(&png, &opts).is_ok());
    let e = s.predict_bytes(b"\xFF\xD8\xFF garbage", &opts).unwrap_err().to_string();
    assert!(e.contains("cannot decode image"), "{e}");
    assert!(s.run_tensor(&[0.0; 10]).unwrap_err().to_string().contains("[1, 3, 64, 64]"));
}

#[test]
fn classifier_predict_reports_sorted_probabilities() {
    let engine = Engine::with_card(&golden("tiny_classifier.onnx"), tiny_classifier_card()).unwrap();
    let img = image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 100]));
    let p = engine.session().unwrap().predict(&img, &PredictOptions { top_k: 2, ..Default::default() }).unwrap();
    let Output::Classes(c) = p.output else { panic!("classes expected") };
    assert_eq!(c.len(), 2);
    assert!(c[0].score >= c[1].score && c[0].score <= 1.0);
    assert!(p.timing.inference_ms > 0.0);
}

#[test]
fn tampered_model_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("m.onnx");
    std::fs::copy(golden("tiny_classifier.onnx"), &model).unwrap();
    tiny_classifier_card().write_for(&model).unwrap();
    Engine::load(&model).unwrap();
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    std::fs::write(&model, bytes).unwrap();
    let e = Engine::load(&model).err().unwrap().to_string();
    assert!(e.contains("m.onnx") && e.contains("does not match its card"), "{e}");
}

#[test]
fn card_and_model_disagreements_are_named() {
    let model = golden("tiny_classifier.onnx");
    let mut card = tiny_classifier_card();
    card.input.name = "data".into();
    let e = Engine::with_card(&model, card).err().unwrap();
    assert!(matches!(e, RuntimeError::Mismatch { .. }));
    assert!(e.to_string().contains("'data'") && e.to_string().contains("[\"input\"]"), "{e}");
    let mut card = tiny_classifier_card();
    card.classes.push("extra".into());
    let e = Engine::with_card(&model, card).err().unwrap().to_string();
    assert!(e.contains("4 class scores"), "{e}");
    let mut card = tiny_classifier_card();
    card.decode = fieldkit_core::Decode::Softmax { output: "probs".into() };
    assert!(Engine::with_card(&model, card).err().unwrap().to_string().contains("'probs'"));
    let mut card = tiny_classifier_card();
    card.input.shape = vec![1, 3];
    let e = Engine::with_card(&model, card).err().unwrap().to_string();
    assert!(e.contains("expected [N, 3, H, W]"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"not a protobuf at all").unwrap();
    let e = Engine::with_card(&junk, tiny_classifier_card()).err().unwrap().to_string();
    assert!(e.contains("junk.onnx: cannot load model"), "{e}");
}

#[test]
fn sessions_on_threads_agree() {
    let engine = Engine::with_card(&golden("tiny_classifier.onnx"), tiny_classifier_card()).unwrap();
    let input = pattern_imagenet(32, 32);
    let outs: Vec<Vec<f32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(|| engine.session().unwrap().run_tensor(&input).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn nnef_cache_is_written_once_then_read_with_identical_outputs() {
    use fieldkit_runtime::LoadSource;
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    for (name, mut card, input) in [
        ("tiny_classifier.onnx", tiny_classifier_card(), pattern_imagenet(32, 32)),
        ("tiny_detector.onnx", tiny_detector_card(), pattern(64, 64).iter().map(|v| v / 255.0).collect()),
    ] {
        let model = d.path().join(name);
        std::fs::copy(golden(name), &model).unwrap();
        card.write_for(&model).unwrap();
        let plain = Engine::load(&model).unwrap();
        assert_eq!(plain.load_source(), &LoadSource::Onnx);
        let want = plain.session().unwrap().run_tensor(&input).unwrap();

        let first = Engine::load_cached(&model, Some(&cache)).unwrap();
        let LoadSource::Written(entry) = first.load_source().clone() else { panic!("{:?}", first.load_source()) };
        assert!(entry.starts_with(&cache) && entry.is_file());
        let second = Engine::load_cached(&model, Some(&cache)).unwrap();
        assert_eq!(second.load_source(), &LoadSource::Cache(entry.clone()));
        assert_eq!(second.output_shape(), plain.output_shape());
        assert_eq!(second.session().unwrap().run_tensor(&input).unwrap(), want, "{name}");

        // A damaged entry is translated again and replaced, not trusted and not fatal.
        std::fs::write(&entry, b"not a tar").unwrap();
        let again = Engine::load_cached(&model, Some(&cache)).unwrap();
        assert_eq!(again.load_source(), &LoadSource::Written(entry.clone()));
        assert_eq!(again.session().unwrap().run_tensor(&input).unwrap(), want);
    }
    // Two models, two entries; no temp files left behind.
    let names: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".nnef.tar") && !n.starts_with('.')), "{names:?}");
}

#[test]
fn nnef_cache_follows_the_model_bytes_and_input_size() {
    use fieldkit_runtime::LoadSource;
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let model = d.path().join("m.onnx");
    std::fs::copy(golden("tiny_classifier.onnx"), &model).unwrap();
    let mut card = tiny_classifier_card();
    card.write_for(&model).unwrap();
    assert!(matches!(Engine::load_cached(&model, Some(&cache)).unwrap().load_source(), LoadSource::Written(_)));
    // Another input size is another plan: it must not reuse the 32x32 entry.
    card.input.shape = vec![1, 3, 48, 48];
    card.preprocess = fieldkit_core::preprocess::Preprocess::imagenet_stretch(48);
    card.write_for(&model).unwrap();
    let e = Engine::load_cached(&model, Some(&cache)).unwrap();
    assert!(matches!(e.load_source(), LoadSource::Written(_)), "{:?}", e.load_source());
    assert_eq!(e.input_size(), (48, 48));
    // A cache directory that cannot be created still loads the model, saying why.
    let blocker = d.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let e = Engine::load_cached(&model, Some(&blocker.join("cache"))).unwrap();
    let LoadSource::Uncached(why) = e.load_source() else { panic!("{:?}", e.load_source()) };
    assert!(why.contains("file"), "{why}");
}

/// `--precision f16`: the float operators compute in half precision (the logits differ from
/// the f32 plan's), the input and output stay f32, and the logits stay within half-precision
/// rounding of onnxruntime's fp32 ones (a quantized file is refused: `precision`'s unit test).
#[test]
fn f16_precision_runs_the_float_operators_in_half() {
    use fieldkit_runtime::{LoadOptions, Precision};
    let g = read(&golden("tiny_models.json"));
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.onnx");
    std::fs::copy(golden("tiny_classifier.onnx"), &model).unwrap();
    std::fs::copy(golden("../fixtures/tiny_classifier.card.json"), d.path().join("tiny.json")).unwrap();
    let want = floats(&g["classifier_logits"]);
    for layout in Layout::ALL {
        let opts = LoadOptions { layout, precision: Precision::F16, ..LoadOptions::default() };
        let engine = Engine::load_with(&model, &opts).unwrap();
        assert_eq!(engine.precision(), Precision::F16);
        let mut s = engine.session().unwrap();
        let x = pattern_imagenet(32, 32);
        let out = s.run_tensor(&x).unwrap();
        let diff = max_abs_diff(&out, &want);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(diff > 0.0 && diff <= 1e-2 * scale.max(1.0), "{layout}: f16 max |diff| = {diff} (scale {scale})");
        let f32_engine = Engine::load_with(&model, &LoadOptions { layout, ..LoadOptions::default() }).unwrap();
        assert_eq!(f32_engine.precision(), Precision::F32);
        assert!(max_abs_diff(&f32_engine.session().unwrap().run_tensor(&x).unwrap(), &want) <= 1e-4);
    }
}
