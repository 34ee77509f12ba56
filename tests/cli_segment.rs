//! `fieldkit train segment`, then `eval` and `predict` on its model, end to end on the vendored
//! peanut photos (CC BY-SA 4.0, assets/data/peanut-mini).

mod common;
use common::*;

#[cfg(feature = "train")]
#[test]
fn train_segment_exports_a_model_that_eval_and_predict_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = assets().join("data/peanut-mini");
    let weights = assets().join("models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let o = fieldkit(&[
        "train",
        "segment",
        "--data",
        &p(&data),
        "--out",
        &p(&out),
        "--weights",
        &p(&weights),
        "--size",
        "128x96",
        "--epochs",
        "1",
        "--batch",
        "3",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("valid mIoU"), "{}", stdout(&o));
    let model = out.join("model.onnx");

    // eval on the mask folder: the JSON keys, the same mIoU as training's tract score.
    let json = dir.path().join("eval.json");
    let o = fieldkit(&["eval", "--model", &p(&model), "--data", &p(&data), "--json", &p(&json)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let trained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("valid_metrics.json")).unwrap()).unwrap();
    assert_eq!(e["miou"], trained["miou"], "{e}");
    assert_eq!((e["task"].as_str(), e["split"].as_str()), (Some("segment"), Some("valid")));
    assert!(e["pixel_acc"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> = e["per_class"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["background", "crop", "weed"]);
    assert!(e["per_class"][2]["iou"].is_number() && e["per_class"][2]["dice"].is_number(), "{e}");

    // A detector's data is refused by name.
    let o = fieldkit(&["eval", "--model", &p(&model), "--data", &p(&assets().join("data/sesame-mini"))]);
    assert!(!o.status.success() && stderr(&o).contains("segmenter"), "{}", stderr(&o));

    // predict: a class-map PNG per photo at its size, coverage in the JSON line, an overlay.
    let pred = dir.path().join("pred");
    let photo = data.join("valid/images/0003.jpg");
    let o = fieldkit(&["predict", "--model", &p(&model), "--out", &p(&pred), &p(&photo)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(pred.join("predictions.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    let coverage: f64 = line["coverage"].as_array().unwrap().iter().map(|c| c["fraction"].as_f64().unwrap()).sum();
    assert!((coverage - 1.0).abs() < 1e-9, "{line}");
    let mask = image::open(line["mask"].as_str().unwrap()).unwrap().into_luma8();
    assert_eq!(mask.dimensions(), (480, 360));
    assert!(mask.pixels().all(|p| p.0[0] < 3));
    assert!(pred.join("00000_0003.png").exists(), "overlay");
}
