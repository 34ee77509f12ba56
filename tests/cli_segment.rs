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
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| IoU background | IoU crop | IoU weed |") && report.contains("| weed |"), "{report}");
    assert!(out.join("confusion.png").exists() && out.join("miou.png").exists());
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

    // A detector's data.yaml is read as YOLO-seg: its box rows are refused by file and line.
    let o = fieldkit(&["eval", "--model", &p(&model), "--data", &p(&assets().join("data/sesame-mini"))]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains(".txt:1: a box") && e.contains("segmentation labels are polygons"),
        "{e}"
    );

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

/// The same objects as a YOLO-seg data.yaml and as COCO (Roboflow's layout) over vendored
/// peanut photos: `data check` counts the same pixels in both; a segmenter (LR-ASPP alone, the
/// other test trains the default stride-4 decoder) trains on the data.yaml; `eval` on the COCO copy gives training's own valid mIoU (the same masks); and a
/// card written by `card init --preset segment` for that ONNX scores it the same again.
#[cfg(feature = "train")]
#[test]
fn yolo_seg_and_coco_polygons_train_and_score_alike() {
    let dir = tempfile::tempdir().unwrap();
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let photos = assets().join("data/peanut-mini");
    let (yolo, coco) = (dir.path().join("yolo"), dir.path().join("coco"));
    // Objects as sixteenths of the 480x360 photo (exact in binary, so normalised x 480 and
    // the COCO pixels are the same numbers): a crop quad and a weed triangle over it.
    let objects = |k: usize| -> Vec<(usize, Vec<f64>)> {
        let s = k as f64;
        vec![
            (0, vec![1.0 + s, 2.0, 9.0 + s, 1.0, 10.0, 12.0, 2.0, 13.0]),
            (1, vec![5.0, 4.0 + s, 14.0, 6.0, 7.0, 15.0 - s]),
        ]
    };
    for split in ["train", "valid"] {
        let images = sorted_files(&photos.join(split).join("images"));
        std::fs::create_dir_all(yolo.join(split).join("images")).unwrap();
        std::fs::create_dir_all(yolo.join(split).join("labels")).unwrap();
        std::fs::create_dir_all(coco.join(split)).unwrap();
        let (mut coco_images, mut anns) = (Vec::new(), Vec::new());
        for (k, image) in images.iter().enumerate() {
            let name = image.file_name().unwrap().to_str().unwrap();
            std::fs::copy(image, yolo.join(split).join("images").join(name)).unwrap();
            std::fs::copy(image, coco.join(split).join(name)).unwrap();
            let rows: Vec<String> = objects(k)
                .iter()
                .map(|(c, xy)| {
                    let v: Vec<String> = xy.iter().map(|v| format!("{}", v / 16.0)).collect();
                    format!("{c} {}", v.join(" "))
                })
                .collect();
            let stem = name.trim_end_matches(".jpg");
            std::fs::write(yolo.join(split).join("labels").join(format!("{stem}.txt")), rows.join("\n")).unwrap();
            coco_images.push(serde_json::json!({"id": k + 1, "file_name": name, "width": 480, "height": 360}));
            for (c, xy) in objects(k) {
                let px: Vec<f64> = xy.chunks(2).flat_map(|q| [q[0] * 30.0, q[1] * 22.5]).collect();
                anns.push(serde_json::json!({
                    "id": anns.len() + 1, "image_id": k + 1, "category_id": c + 1,
                    "bbox": [0, 0, 1, 1], "segmentation": [px],
                }));
            }
        }
        let cats = serde_json::json!([{"id": 1, "name": "crop"}, {"id": 2, "name": "weed"}]);
        let json = serde_json::json!({"images": coco_images, "annotations": anns, "categories": cats});
        std::fs::write(coco.join(split).join("_annotations.coco.json"), json.to_string()).unwrap();
    }
    std::fs::write(yolo.join("data.yaml"), "train: train/images\nval: valid/images\nnames: [crop, weed]\n").unwrap();

    let counts = |args: &[&str], json: &std::path::Path| {
        let mut a = vec!["data", "check", "--json", json.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = fieldkit(&a);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("pixels per class"), "{}", stdout(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        r["splits"].as_array().unwrap().iter().map(|s| s["class_counts"].clone()).collect::<Vec<_>>()
    };
    let from_yolo = counts(&["--segment", "--data", &p(&yolo.join("data.yaml"))], &dir.path().join("y.json"));
    let from_coco = counts(&["--data", &p(&coco)], &dir.path().join("c.json"));
    assert_eq!(from_yolo, from_coco);
    assert!(from_yolo[0]["weed"].as_u64().unwrap() > 1000, "{from_yolo:?}");

    let out = dir.path().join("run");
    let weights = assets().join("models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let o = fieldkit(&[
        "train",
        "segment",
        "--data",
        &p(&yolo.join("data.yaml")),
        "--out",
        &p(&out),
        "--weights",
        &p(&weights),
        "--size",
        "64x64",
        "--epochs",
        "1",
        "--batch",
        "3",
        "--decoder",
        "lraspp",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let trained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("valid_metrics.json")).unwrap()).unwrap();
    let eval = |model: &std::path::Path, json: &std::path::Path| {
        let o = fieldkit(&["eval", "--model", &p(model), "--data", &p(&coco), "--json", &p(json)]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let e: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        e
    };
    let e = eval(&out.join("model.onnx"), &dir.path().join("e.json"));
    assert_eq!(e["miou"], trained["miou"], "{e}");

    // A card written for the bare ONNX scores it the same.
    let bare = dir.path().join("bare.onnx");
    std::fs::copy(out.join("model.onnx"), &bare).unwrap();
    let o = fieldkit(&[
        "card",
        "init",
        "--model",
        &p(&bare),
        "--preset",
        "segment",
        "--classes",
        "background,crop,weed",
        "--size",
        "64x64",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(eval(&bare, &dir.path().join("b.json"))["miou"], trained["miou"]);
    let o = fieldkit(&[
        "card",
        "init",
        "--model",
        &p(&bare),
        "--preset",
        "imagenet",
        "--classes",
        "a,b",
        "--size",
        "64x48",
        "--force",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("square"), "{}", stderr(&o));
}
