//! `fieldkit train classify` end to end on the vendored weed subset and backbone: outputs,
//! eval of the exported model, the LR finder, resume after `kill -9`, and bad input.
#![cfg(feature = "train")]

mod common;
use common::*;

use std::time::Duration;

fn weed() -> String {
    assets().join("data/weed-mini").display().to_string()
}

#[test]
fn head_strategy_trains_exports_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        &weed(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        &weights(),
        "--strategy",
        "head",
        "--size",
        "96",
        "--epochs",
        "20",
        "--lr",
        "3e-3",
        "--schedule",
        "cosine",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("valid top1"), "{}", stdout(&o));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["strategy"], "head");
    assert_eq!(cfg["valid_split"], "valid");
    assert_eq!(cfg["size"], 96);
    // 64 px tiles: top-down augmentation by default, and the note says so.
    assert_eq!(cfg["augment"]["vflip"], true, "{}", cfg["augment"]);
    assert_eq!(cfg["augment"]["rot90"], true);
    assert!(stderr(&o).contains("--augment topdown"), "{}", stderr(&o));
    // ... and its 8 test-time views in the exported model.
    assert_eq!(cfg["tta"], "d4");
    assert!(stderr(&o).contains("--tta d4"), "{}", stderr(&o));
    assert!(stdout(&o).contains("with test-time views d4 (8 views"), "{}", stdout(&o));
    // The exported model evaluates through `fieldkit eval` with the card written beside it.
    let json = dir.path().join("eval.json");
    let model = out.join("model.onnx");
    let o = fieldkit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &weed(),
        "--json",
        json.to_str().unwrap(),
        "--perturb",
        "blur,noise,dark,jpeg",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(ev["top1"], card["metrics"]["valid_top1"]);
    assert!(ev["top1"].as_f64().unwrap() > 0.2, "{ev}");
    for p in ["blur", "noise", "dark", "jpeg"] {
        let t = ev["robustness"][p]["top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&t), "{p}: {ev}");
    }
    assert!(stdout(&o).contains("robustness"), "{}", stdout(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("macro-F1") && report.contains("confusion.png"));
    assert!(report.contains("test-time views in the exported model: d4 (8 views"), "{report}");
    assert!(report.contains("on one view"), "{report}");
    // `fieldkit export --tta none` writes the network alone: what the run scored on one view.
    let plain = dir.path().join("plain.onnx");
    let o = fieldkit(&["export", "--run", out.to_str().unwrap(), "--out", plain.to_str().unwrap(), "--tta", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o =
        fieldkit(&["eval", "--model", plain.to_str().unwrap(), "--data", &weed(), "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(ev["top1"], card["metrics"]["valid_top1_one_view"], "{}", card["metrics"]);
    let plain_card = std::fs::read_to_string(dir.path().join("plain.json")).unwrap();
    assert!(!plain_card.contains("test-time views"), "{plain_card}");
    assert!(card["source"].as_str().unwrap().contains("test-time views d4"), "{}", card["source"]);
}

#[test]
fn export_refuses_test_time_views_for_detectors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"close_mosaic": 2}"#).unwrap();
    let out = dir.path().join("m.onnx");
    let o =
        fieldkit(&["export", "--run", dir.path().to_str().unwrap(), "--out", out.to_str().unwrap(), "--tta", "flip"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--tta flip") && stderr(&o).contains("detection run"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn lr_find_suggests_a_rate_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr");
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        &weed(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        &weights(),
        "--strategy",
        "head",
        "--size",
        "64",
        "--lr-find",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let lr: f64 = s.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(s.starts_with("suggested lr") && lr > 1e-7 && lr < 10.0, "{s}");
    assert!(out.join("lr_find.png").is_file() && out.join("lr_find.json").is_file());
}

#[test]
fn resume_after_kill_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "train",
        "classify",
        "--data",
        &weed(),
        "--out",
        out.to_str().unwrap(),
        "--strategy",
        "full",
        "--width",
        "0.35",
        "--size",
        "32",
        "--epochs",
        "5",
        "--batch",
        "16",
        "--checkpoint-minutes",
        "0",
        "--quiet",
    ];
    kill_after_first_epoch(&args, &out, Duration::from_secs(120));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let done: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert!(!done.is_empty() && done.len() < 5 && done[0] == "1", "{csv}");
    // Without --resume the directory is protected.
    let o = fieldkit(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = fieldkit(&["train", "classify", "--data", &weed(), "--out", out.to_str().unwrap(), "--resume", "--quiet"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let epochs: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(epochs, vec!["1", "2", "3", "4", "5"], "{csv}");
    assert!(out.join("model.onnx").is_file());
    // Any checkpoint exports on its own.
    let last = dir.path().join("last.onnx");
    let o =
        fieldkit(&["export", "--run", out.to_str().unwrap(), "--checkpoint", "last", "--out", last.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fieldkit(&["eval", "--model", last.to_str().unwrap(), "--data", &weed()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_exits_2_with_the_culprit_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&assets().join("data/weed-mini"), &data);
    std::fs::create_dir_all(data.join("valid/dandelion")).unwrap();
    std::fs::copy(
        assets().join("data/weed-mini/valid/eclipta").read_dir().unwrap().next().unwrap().unwrap().path(),
        data.join("valid/dandelion/a.jpg"),
    )
    .unwrap();
    let out = dir.path().join("o");
    let run = |extra: &[&str]| {
        let mut a =
            vec!["train", "classify", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
        a.extend_from_slice(extra);
        fieldkit(&a)
    };
    let o = run(&["--size", "32"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("dandelion"), "{}", stderr(&o));
    std::fs::remove_dir_all(data.join("valid/dandelion")).unwrap();
    let o = run(&["--size", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--size 100"), "{}", stderr(&o));
    let o = run(&["--weights", "/nonexistent/w.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("w.safetensors"), "{}", stderr(&o));
    // A --data that is not there is said to be missing (it was "no valid/, val/ or test/
    // folder"), and an OS error is said once (it came twice after the file name).
    let nope = dir.path().join("nope");
    let o = fieldkit(&["train", "classify", "--data", nope.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope: no such folder"), "{}", stderr(&o));
    let yaml = dir.path().join("nope.yaml");
    let o = fieldkit(&["train", "detect", "--data", yaml.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).matches("os error 2").count(), 1, "{}", stderr(&o));
}

/// `train devices` names every backend; one this build lacks is refused by `train` with the
/// build command to get it (exit 2), not a panic.
#[test]
fn backends_are_listed_and_one_not_built_in_is_refused_by_name() {
    let o = fieldkit(&["train", "devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = stdout(&o);
    assert!(listed.lines().next() == Some("flex (CPU)"), "{listed}");
    for name in ["ndarray", "wgpu", "vulkan", "cuda"] {
        assert!(listed.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{listed}");
    }
    if cfg!(feature = "cuda") {
        return;
    }
    assert!(listed.contains("cuda: unavailable (--device cuda: this fieldkit was built without it"), "{listed}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        &weed(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cuda",
        "--size",
        "32",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--device cuda: this fieldkit was built without it: cargo build --release --features cuda"),
        "{}",
        stderr(&o)
    );
}

/// `--precision f16|bf16` computes in half precision on a GPU backend only: on the CPU backend
/// it is refused with the reason and the flag that works (exit 2, nothing trained).
#[test]
fn half_precision_on_the_cpu_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (task, data, precision) in [
        ("classify", weed(), "f16"),
        ("detect", assets().join("data/sesame-mini/data.yaml").display().to_string(), "bf16"),
    ] {
        let out = dir.path().join(task);
        let o = fieldkit(&[
            "train",
            task,
            "--data",
            &data,
            "--out",
            out.to_str().unwrap(),
            "--precision",
            precision,
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("--precision {precision}: mixed precision runs on a GPU backend"))
                && err.contains("--device flex trains in f32"),
            "{err}"
        );
        assert!(!out.join("checkpoints").exists(), "{task} started training");
    }
}

/// `--devices` that cannot run is refused before any data is read, each with the reason
/// (exit 2, or clap's usage error for a backend that does not exist): the same device twice,
/// one device, two backends, an index the backend lacks, an unknown backend.
#[test]
fn device_lists_that_cannot_train_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (devices, expected) in [
        ("flex,flex", "--devices: flex and flex are the same device"),
        ("flex", "--devices flex: name two or more devices"),
        ("flex,ndarray", "ndarray is another backend than flex"),
        ("flex:1,flex", "flex:1: the CPU backend has one device (flex:0)"),
        ("tpu:0,tpu:1", "tpu:0: unknown backend \"tpu\""),
    ] {
        let out = dir.path().join(devices.replace([',', ':'], "_"));
        let o = fieldkit(&[
            "train",
            "classify",
            "--data",
            &weed(),
            "--out",
            out.to_str().unwrap(),
            "--devices",
            devices,
            "--batch",
            "8",
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(2), "--devices {devices}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "--devices {devices}: {}", stderr(&o));
        assert!(!out.join("checkpoints").exists(), "--devices {devices} started training");
    }
    // A batch too small to give each device two images says how large it must be.
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        &weed(),
        "--out",
        dir.path().join("small").to_str().unwrap(),
        "--devices",
        "flex,flex",
        "--batch",
        "2",
        "--quiet",
    ]);
    assert!(stderr(&o).contains("raise --batch to 4"), "{}", stderr(&o));
}
