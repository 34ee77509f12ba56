//! `fieldkit card init`, `eval` and `bench` end to end on the vendored tiny models.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn tiny(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(repo().join("runtime/tests/golden").join(name), &to).unwrap();
    to
}

/// `card init` arguments for the vendored tiny classifier (3 classes, 32 px).
fn classifier_card_args(model: &Path) -> Vec<&str> {
    let m = model.to_str().unwrap();
    vec!["card", "init", "--model", m, "--preset", "imagenet-stretch", "--classes", "crop,weed,soil", "--size", "32"]
}

/// Card for the vendored tiny detector (2 classes, one stride-32 level, logit outputs).
fn write_detector_card(m: &Path) {
    let mut card = serde_json::json!({
        "card_version": 1, "task": "detect", "classes": ["crop", "weed"],
        "input": {"name": "images", "shape": [1, 3, 64, 64]},
        "preprocess": {"resize": {"mode": "letterbox", "width": 64, "height": 64, "pad": 114, "center": false},
                       "antialias": false, "channels": "rgb", "scale": 0.003921569, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "decode": {"kind": "yolox", "output": "output", "strides": [32], "logits": true},
        "sha256": "", "created_by": "test"
    });
    card["sha256"] = fieldkit_core::fsio::sha256_file(m).unwrap().into();
    std::fs::write(m.with_extension("json"), card.to_string()).unwrap();
}

fn img(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([((x * seed) % 256) as u8, ((y * 7 + seed) % 256) as u8, ((x ^ y) % 256) as u8])
    })
}

#[test]
fn card_init_writes_a_verified_card_and_refuses_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny("tiny_classifier.onnx", d.path());
    let args = classifier_card_args(&m);
    let o = fieldkit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("tiny_classifier.json")).unwrap()).unwrap();
    assert_eq!(card["task"], "classify");
    assert_eq!(card["input"]["name"], "input");
    assert_eq!(card["decode"]["output"], "logits");
    assert_eq!(card["sha256"].as_str().unwrap().len(), 64);
    let o = fieldkit(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"));
    // A class count the model cannot produce is refused before anything is written.
    let o = fieldkit(&[
        "card",
        "init",
        "--model",
        m.to_str().unwrap(),
        "--preset",
        "imagenet",
        "--classes",
        "a,b",
        "--size",
        "32",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("2 class scores"), "{}", stderr(&o));
}

#[test]
fn eval_classifier_agrees_with_per_image_predictions() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny("tiny_classifier.onnx", d.path());
    assert!(fieldkit(&classifier_card_args(&m)).status.success());
    let root = d.path().join("data");
    let mut truth = Vec::new();
    for (ci, class) in ["crop", "weed", "soil"].iter().enumerate() {
        std::fs::create_dir_all(root.join("valid").join(class)).unwrap();
        for k in 0..4u32 {
            let p = root.join("valid").join(class).join(format!("{k}.png"));
            img(40 + k, 30, k * 13 + ci as u32 * 29 + 1).save(&p).unwrap();
            truth.push((p, ci));
        }
    }
    let json = d.path().join("eval.json");
    let o = fieldkit(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plots",
        d.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Independent path: one predict per image through the library.
    let engine = fieldkit_runtime::Engine::load(&m).unwrap();
    let mut s = engine.session().unwrap();
    let correct = truth
        .iter()
        .filter(|(p, c)| match s.predict(&image::open(p).unwrap().to_rgb8(), &Default::default()).unwrap().output {
            fieldkit_runtime::Output::Classes(v) => v[0].index == *c,
            _ => unreachable!(),
        })
        .count();
    assert_eq!(r["top1"].as_f64().unwrap(), correct as f64 / truth.len() as f64);
    assert_eq!(r["num_samples"], 12);
    assert!(r["per_class"]["weed"]["f1"].is_number() && r["macro_f1"].is_number());
    assert!(d.path().join("confusion.png").is_file());
    // A class folder the model does not know is named.
    std::fs::create_dir_all(root.join("valid/thistle")).unwrap();
    img(8, 8, 3).save(root.join("valid/thistle/x.png")).unwrap();
    let o = fieldkit(&["eval", "--model", m.to_str().unwrap(), "--data", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("thistle"), "{}", stderr(&o));
}

#[test]
fn eval_detector_reports_map_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny("tiny_detector.onnx", d.path());
    write_detector_card(&m);
    let root = d.path().join("det");
    for (i, lbl) in ["0 0.5 0.5 0.5 0.5\n", "1 0.25 0.25 0.3 0.3\n0 0.7 0.7 0.2 0.2\n", ""].iter().enumerate() {
        std::fs::create_dir_all(root.join("images/val")).unwrap();
        std::fs::create_dir_all(root.join("labels/val")).unwrap();
        img(64, 64, i as u32 + 5).save(root.join(format!("images/val/{i}.png"))).unwrap();
        std::fs::write(root.join(format!("labels/val/{i}.txt")), lbl).unwrap();
    }
    std::fs::write(root.join("data.yaml"), "path: .\nval: images/val\nnames: [crop, weed]\n").unwrap();
    let json = d.path().join("det.json");
    let o = fieldkit(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        root.join("data.yaml").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for k in ["map50", "map50_95", "count_mae", "per_class"] {
        assert!(!r[k].is_null(), "missing {k}: {r}");
    }
    let map = r["map50_95"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map));
    // A random tiny detector may find nothing: the key is there, null or with its figures.
    assert!(r.as_object().unwrap().contains_key("box_fit"), "{r}");
    if !r["box_fit"].is_null() {
        assert!(
            r["box_fit"]["matches"].as_u64().unwrap() >= 1 && r["box_fit"]["median_h_ratio"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    assert!(stdout(&o).contains("box fit @ score"), "{}", stdout(&o));
    // An ImageFolder is not a detector's data: said so, instead of a class-folder mismatch.
    std::fs::create_dir_all(root.join("folder/valid/crop")).unwrap();
    img(8, 8, 3).save(root.join("folder/valid/crop/x.png")).unwrap();
    let o = fieldkit(&["eval", "--model", m.to_str().unwrap(), "--data", root.join("folder").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("detector") && stderr(&o).contains("data.yaml"), "{}", stderr(&o));
}

#[test]
fn bench_writes_the_documented_keys() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny("tiny_classifier.onnx", d.path());
    assert!(fieldkit(&classifier_card_args(&m)).status.success());
    // A report path that is the model's card is refused, and the card is left as it was.
    let card = m.with_extension("json");
    let before = std::fs::read(&card).unwrap();
    let o = fieldkit(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--runs",
        "2",
        "--workers",
        "1",
        "--json",
        card.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("is the model card of"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&card).unwrap(), before);
    let json = d.path().join("bench.json");
    let o = fieldkit(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--workers",
        "1,2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(r["system"]["tract_version"].is_string() && r["system"]["cores"].as_u64().unwrap() >= 1);
    let m0 = &r["models"][0];
    for k in ["load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "peak_rss_mb"] {
        assert!(m0[k].as_f64().unwrap() > 0.0, "{k}: {m0}");
    }
    assert!(m0["p50_ms"].as_f64() <= m0["p99_ms"].as_f64());
    assert_eq!(m0["throughput"].as_array().unwrap().len(), 2);
    // --profile: every node of the plan timed; per-operator rows add up to the nodes'.
    let o = fieldkit(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--runs",
        "2",
        "--workers",
        "1",
        "--profile",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("profile of") && stdout(&o).contains("slowest nodes"), "{}", stdout(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let p = &r["profiles"][0]["profile"];
    assert_eq!(p["runs"].as_u64(), Some(3));
    let node_ms: f64 = p["nodes"].as_array().unwrap().iter().map(|n| n["ms"].as_f64().unwrap()).sum();
    let op_ms: f64 = p["ops"].as_array().unwrap().iter().map(|n| n["ms"].as_f64().unwrap()).sum();
    assert!(!p["nodes"].as_array().unwrap().is_empty() && (node_ms - op_ms).abs() < 1e-6);
    assert!(node_ms <= p["total_ms"].as_f64().unwrap() * 1.01 + 0.01);
    // The convolution's matrix product carries its multiply-adds and its kernel: 4 output
    // channels x 27 inputs x 16x16 positions.
    let mm =
        p["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "c1.matmatmul").unwrap_or_else(|| panic!("{p}"));
    assert_eq!(mm["fma"].as_u64(), Some(4 * 27 * 16 * 16), "{mm}");
    assert!(mm["detail"].as_str().unwrap().contains("m:4 k:27 n:256"), "{mm}");
    assert!(stdout(&o).contains("GFLOP/s"), "{}", stdout(&o));
    // --nnef-cache: the first run translates and writes the plan, the second reads it.
    let cache = d.path().join("cache");
    for want in ["nnef_written", "nnef_cache"] {
        let o = fieldkit(&[
            "bench",
            "--model",
            m.to_str().unwrap(),
            "--runs",
            "2",
            "--workers",
            "1",
            "--nnef-cache",
            cache.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("plan loaded from {want}")), "{}", stdout(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(r["models"][0]["loaded_from"], want);
    }
    // --layout nchw,nhwc: each model once per layout, labelled in the table and the JSON.
    let o = fieldkit(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--runs",
        "2",
        "--workers",
        "1",
        "--layout",
        "nchw,nhwc",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("tiny_classifier.onnx [nchw]") && stdout(&o).contains("tiny_classifier.onnx [nhwc]"),
        "{}",
        stdout(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let layouts: Vec<&str> = r["models"].as_array().unwrap().iter().map(|m| m["layout"].as_str().unwrap()).collect();
    assert_eq!(layouts, ["nchw", "nhwc"]);
    let o = fieldkit(&["bench", "--model", m.to_str().unwrap(), "--runs", "2", "--layout", "hwcn"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown layout 'hwcn'"), "{}", stderr(&o));
    // A model without a card is timed bare (issue 21), as tract's and onnxruntime's perf tools
    // time any ONNX file: its declared input, raw output. Scoring it needs a card, said by name.
    std::fs::remove_file(d.path().join("tiny_classifier.json")).unwrap();
    let o = fieldkit(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--runs",
        "2",
        "--workers",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let m0 = &r["models"][0];
    assert!(m0["loaded_from"].as_str().unwrap().contains("no card"), "{m0}");
    assert!(m0["p50_ms"].as_f64().unwrap() > 0.0, "{m0}");
    let val = d.path().join("val");
    let o = fieldkit(&["bench", "--model", m.to_str().unwrap(), "--runs", "2", "--val", val.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no model card") && stderr(&o).contains("card init"), "{}", stderr(&o));
    // predict still needs the card, and says how to write one.
    let o = fieldkit(&["predict", "--model", m.to_str().unwrap(), d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no model card") && stderr(&o).contains("fieldkit card init"), "{}", stderr(&o));
}

#[test]
fn predict_writes_jsonl_and_annotated_images() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny("tiny_detector.onnx", d.path());
    write_detector_card(&m);
    let src = d.path().join("photos");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        img(80 + i * 20, 60, i + 2).save(src.join(format!("p{i}.png"))).unwrap();
    }
    let single = d.path().join("single.png");
    img(64, 64, 9).save(&single).unwrap();
    let out = d.path().join("out");
    let o = fieldkit(&[
        "predict",
        "--model",
        m.to_str().unwrap(),
        src.to_str().unwrap(),
        single.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--conf",
        "0.05",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["image"], single.to_str().unwrap());
    assert_eq!((lines[0]["width"].as_u64(), lines[0]["height"].as_u64()), (Some(80), Some(60)));
    for l in &lines {
        for det in l["detections"].as_array().unwrap() {
            assert!(det["score"].as_f64().unwrap() >= 0.05);
            assert!(["crop", "weed"].contains(&det["name"].as_str().unwrap()));
        }
    }
    assert_eq!(sorted_files(&out).iter().filter(|p| p.extension().unwrap() == "png").count(), 4);
    let o = fieldkit(&["predict", "--model", m.to_str().unwrap(), "field.mp4", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // Video files go through ffmpeg (tests/cli_detect.rs); a missing one is named.
    assert!(stderr(&o).contains("field.mp4: no such file"), "{}", stderr(&o));
    let o = fieldkit(&["predict", "--model", m.to_str().unwrap(), "missing.jpg"]);
    assert!(stderr(&o).contains("missing.jpg: no such file"), "{}", stderr(&o));
}

#[test]
#[ignore = "needs ../shared"]
fn predict_yolox_nano_finds_the_livestock_in_horses_jpg() {
    let d = tempfile::tempdir().unwrap();
    let src = shared().join("assets/models/yolox-nano-coco");
    let m = d.path().join("yolox.onnx");
    std::fs::copy(src.join("yolox_nano_416x416.onnx"), &m).unwrap();
    let o = fieldkit(&[
        "card",
        "init",
        "--model",
        m.to_str().unwrap(),
        "--preset",
        "yolox",
        "--size",
        "416",
        "--classes",
        src.join("coco.names").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.path().join("out");
    let o = fieldkit(&[
        "predict",
        "--model",
        m.to_str().unwrap(),
        shared().join("assets/images/horses.jpg").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out.join("predictions.jsonl")).unwrap().trim()).unwrap();
    let names: Vec<&str> = line["detections"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "horse").count(), 3, "{names:?}");
    assert!(out.join("00000_horses.png").is_file());
}
