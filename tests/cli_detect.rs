//! `fieldkit train detect`, `export`, `eval` and `predict` on its model, and `fieldkit label`
//! with a teacher detector, end to end on the vendored sesame subset.

mod common;
use common::*;

fn sesame() -> String {
    assets().join("data/sesame-mini/data.yaml").display().to_string()
}

#[cfg(feature = "train")]
#[test]
fn train_detect_exports_a_model_that_eval_and_predict_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let weights = assets().join("models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let o = fieldkit(&[
        "train",
        "detect",
        "--data",
        &sesame(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--size",
        "128",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--neck-width",
        "16",
        "--head-depth",
        "1",
        "--unfreeze-from",
        "14",
        "--close-mosaic",
        "1",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("valid mAP50"), "{}", stdout(&o));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["size"], 128);
    assert_eq!(cfg["neck_width"], 16);
    let model = out.join("model.onnx");
    let json = dir.path().join("eval.json");
    let o =
        fieldkit(&["eval", "--model", model.to_str().unwrap(), "--data", &sesame(), "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in ["map50", "map50_95", "count_mae"] {
        assert!(ev[k].as_f64().is_some(), "{k} missing: {ev}");
    }
    let pred = dir.path().join("pred");
    let images = assets().join("data/sesame-mini/images/valid");
    let o = fieldkit(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--conf",
        "0.01",
        "--out",
        pred.to_str().unwrap(),
        images.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(pred.join("predictions.jsonl")).unwrap().lines().count(), 4);
    let exported = dir.path().join("last.onnx");
    let o = fieldkit(&[
        "export",
        "--run",
        out.to_str().unwrap(),
        "--checkpoint",
        "last",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("last.json").is_file());
}

#[cfg(feature = "train")]
#[test]
fn train_detect_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = fieldkit(&[
        "train",
        "detect",
        "--data",
        &sesame(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
        "--size",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--size 100"), "{}", stderr(&o));
    let o =
        fieldkit(&["train", "detect", "--data", "nowhere/data.yaml", "--out", dir.path().join("r").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nowhere/data.yaml"), "{}", stderr(&o));
}

/// The tiny detector fixture (classes crop, weed) as a teacher on the sesame images.
fn teacher(dir: &std::path::Path) -> std::path::PathBuf {
    tiny_detector(dir, "teacher")
}

#[test]
fn label_writes_a_yolo_dataset_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = teacher(dir.path());
    let out = dir.path().join("labelled");
    let images = assets().join("data/sesame-mini/images");
    let o = fieldkit(&[
        "label",
        "--teacher",
        m.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--classes",
        "weed,crop",
        "--out",
        out.to_str().unwrap(),
        "--conf",
        "0.05",
        "--keep-empty",
        "--val-fraction",
        "0.3",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("label.json")).unwrap()).unwrap();
    assert_eq!(summary["images"], 12, "{summary}");
    assert_eq!(summary["labelled"].as_u64().unwrap() + summary["background"].as_u64().unwrap(), 12);
    // The source's train/ and valid/ folders are kept as the splits (--val-fraction is for
    // folders without them).
    assert_eq!(summary["splits"]["train"], 8, "{summary}");
    assert_eq!(summary["splits"]["val"], 4, "{summary}");
    // The written dataset passes fieldkit's own check and converts to COCO.
    let o = fieldkit(&["data", "check", "--data", out.join("data.yaml").to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let yaml = std::fs::read_to_string(out.join("data.yaml")).unwrap();
    assert!(yaml.contains("\"weed\"") && yaml.find("weed") < yaml.find("crop"), "{yaml}");
    assert!(out.join("annotations/train.json").is_file());
    assert!(out.join("review/sheet_000.png").is_file());
    // Merging the teacher's classes into one: a single class, every box under it.
    let merged = dir.path().join("merged");
    let o = fieldkit(&[
        "label",
        "--teacher",
        m.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--classes",
        "weed=plant,crop=plant",
        "--agnostic",
        "--out",
        merged.to_str().unwrap(),
        "--conf",
        "0.05",
        "--keep-empty",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let yaml = std::fs::read_to_string(merged.join("data.yaml")).unwrap();
    assert!(yaml.contains("nc: 1") && yaml.contains("\"plant\""), "{yaml}");
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("label.json")).unwrap()).unwrap();
    assert!(s2["boxes"]["plant"].as_u64().unwrap() > 0, "{s2}");
    // Labelling never overwrites.
    let o = fieldkit(&[
        "label",
        "--teacher",
        m.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

#[test]
fn label_refuses_unknown_classes_and_classifiers() {
    let dir = tempfile::tempdir().unwrap();
    let m = teacher(dir.path());
    let images = assets().join("data/sesame-mini/images");
    let out = dir.path().join("o");
    let o = fieldkit(&[
        "label",
        "--teacher",
        m.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--classes",
        "cow",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'cow'"), "{}", stderr(&o));
    let c = dir.path().join("cls.onnx");
    std::fs::copy(repo().join("runtime/tests/golden/tiny_classifier.onnx"), &c).unwrap();
    std::fs::copy(repo().join("runtime/tests/fixtures/tiny_classifier.card.json"), dir.path().join("cls.json"))
        .unwrap();
    let o = fieldkit(&[
        "label",
        "--teacher",
        c.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be a detector"), "{}", stderr(&o));
}

#[test]
fn predict_reads_video_frames_through_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let m = teacher(dir.path());
    let video = dir.path().join("row.mp4");
    let out = dir.path().join("pred");
    if !have_ffmpeg() {
        std::fs::write(&video, b"not a video").unwrap();
        let o = fieldkit(&[
            "predict",
            "--model",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            video.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("needs ffmpeg"), "{}", stderr(&o));
        return;
    }
    // Four vendored photos as a 2 fps clip.
    let frames = assets().join("data/sesame-mini/images/valid");
    let o = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-framerate", "2", "-pattern_type", "glob", "-i"])
        .arg(format!("{}/*.jpg", frames.display()))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&video)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = fieldkit(&[
        "predict",
        "--model",
        m.to_str().unwrap(),
        "--conf",
        "0.05",
        "--out",
        out.to_str().unwrap(),
        video.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines.iter().map(|l| l["capture_ms"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 500, 1000, 1500]);
    assert_eq!(lines[3]["frame"], 3);
    assert!(out.join("row.annotated.mp4").is_file());
    // --fps resamples: one frame per second of the 2 s clip.
    let out1 = dir.path().join("pred1");
    let o = fieldkit(&[
        "predict",
        "--model",
        m.to_str().unwrap(),
        "--fps",
        "1",
        "--no-images",
        "--out",
        out1.to_str().unwrap(),
        video.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out1.join("predictions.jsonl")).unwrap().lines().count(), 2);
}
