//! `fieldkit train --device wgpu` end to end (issue 25): a detector and a segmenter learn on the
//! GPU, a classification run killed with SIGKILL resumes on the GPU and finishes, and a GPU
//! backend without its driver is refused in a sentence. CI runs these on Mesa's software Vulkan
//! (lavapipe) with `FIELDKIT_REQUIRE_GPU=1`; elsewhere, without an adapter, they skip.
#![cfg(feature = "wgpu")]

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

/// The adapter wgpu finds here (`train devices`' line, e.g. `wgpu (llvmpipe (LLVM 15.0.6, 256
/// bits))`), or `None`; a missing one fails the test under FIELDKIT_REQUIRE_GPU.
fn gpu_adapter() -> Option<String> {
    let o = fieldkit(&["train", "devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = stdout(&o);
    let wgpu = listed.lines().find(|l| l.starts_with("wgpu")).unwrap_or_else(|| panic!("no wgpu line in:\n{listed}"));
    if wgpu.starts_with("wgpu (") {
        return Some(wgpu.to_string());
    }
    assert!(std::env::var_os("FIELDKIT_REQUIRE_GPU").is_none(), "FIELDKIT_REQUIRE_GPU is set, but: {wgpu}");
    eprintln!("skipped: {wgpu}");
    None
}

fn have_gpu() -> bool {
    gpu_adapter().is_some()
}

fn losses(csv: &str, column: &str) -> Vec<f64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == column).unwrap_or_else(|| panic!("no {column} in {header:?}"));
    lines.map(|l| l.split(',').nth(k).unwrap().parse().unwrap()).collect()
}

#[test]
fn detector_learns_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = assets().join("data/sesame-mini/data.yaml");
    let o = fieldkit(&[
        "train",
        "detect",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        &weights(),
        "--device",
        "wgpu",
        "--size",
        "96",
        "--epochs",
        "6",
        "--batch",
        "4",
        "--neck-width",
        "16",
        "--head-depth",
        "1",
        "--unfreeze-from",
        "14",
        // One loss throughout: mosaic and close-mosaic's L1 term would change what is summed.
        "--mosaic",
        "0",
        "--close-mosaic",
        "0",
        "--augment",
        "none",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let loss = losses(&csv, "train_loss");
    assert_eq!(loss.len(), 6, "{csv}");
    assert!(loss[4] + loss[5] < loss[0] + loss[1], "the detector's training loss did not fall on the GPU: {csv}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("wgpu"), "report.md does not say what trained it:\n{report}");
    // The exported model runs on the CPU through `fieldkit eval`.
    let o = fieldkit(&["eval", "--model", out.join("model.onnx").to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The segmenter trains on the GPU too (burn 0.22.1's GPU backends cannot differentiate its
/// own bilinear interpolation; the trainer's upsampling is written as matrix products): the
/// loss falls, report.md says wgpu, and `eval` of the export scores what training scored.
#[test]
fn segmenter_learns_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = assets().join("data/peanut-mini");
    let o = fieldkit(&[
        "train",
        "segment",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        &weights(),
        "--device",
        "wgpu",
        "--size",
        "128x96",
        "--epochs",
        "4",
        "--batch",
        "3",
        "--augment",
        "none",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let loss = losses(&csv, "train_loss");
    assert_eq!(loss.len(), 4, "{csv}");
    assert!(loss[3] < loss[0], "the segmenter's training loss did not fall on the GPU: {csv}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("wgpu"), "report.md does not say what trained it:\n{report}");
    let json = dir.path().join("eval.json");
    let model = out.join("model.onnx");
    let o = fieldkit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let trained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("valid_metrics.json")).unwrap()).unwrap();
    assert_eq!(e["miou"], trained["miou"], "{e}");
}

/// `--devices` end to end for each task, on the pair CI can make (wgpu's default device and its
/// enumerated `wgpu:0`, one adapter): the run splits its batches, says so in its log and
/// report.md, and its export scores in `eval`; an index the backend lacks is refused by name.
/// (That a two-device step is the one-device step is `trainer/tests/gpu.rs`'s to show.)
#[test]
fn each_task_trains_data_parallel_on_two_devices() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let weed = assets().join("data/weed-mini");
    let sesame = assets().join("data/sesame-mini/data.yaml");
    let peanut = assets().join("data/peanut-mini");
    let w = weights();
    let runs: [(&str, &std::path::Path, &[&str]); 3] = [
        ("classify", &weed, &["--size", "32", "--batch", "8"]),
        ("detect", &sesame, &["--size", "96", "--batch", "4", "--neck-width", "16", "--head-depth", "1"]),
        ("segment", &peanut, &["--size", "128x96", "--batch", "4"]),
    ];
    for (task, data, extra) in runs {
        let out = dir.path().join(task);
        let mut args = vec![
            "train",
            task,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--weights",
            &w,
            "--devices",
            "wgpu,wgpu:0",
            "--epochs",
            "1",
        ];
        args.extend_from_slice(extra);
        let o = fieldkit(&args);
        assert!(o.status.success(), "{task}: {}{}", stdout(&o), stderr(&o));
        let log = stderr(&o);
        assert!(
            log.contains("devices: wgpu (") && (log.contains("split 4 + 4") || log.contains("split 2 + 2")),
            "{task}: {log}"
        );
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(report.contains("on 2 devices (wgpu, wgpu:0; batch split"), "{task}: {report}");
        let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(cfg.contains("\"wgpu:0\""), "{task}: config.json lacks the devices: {cfg}");
        let model = out.join("model.onnx");
        let o = fieldkit(&["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()]);
        assert!(o.status.success(), "{task}: {}", stderr(&o));
    }
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        weed.to_str().unwrap(),
        "--out",
        dir.path().join("nine").to_str().unwrap(),
        "--devices",
        "wgpu,wgpu:9",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("wgpu:9: burn finds 1 wgpu device(s) here (wgpu:0)"), "{}", stderr(&o));
}

#[test]
fn resume_after_kill_on_the_gpu_finishes_the_run() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let weed = assets().join("data/weed-mini");
    let args = [
        "train",
        "classify",
        "--data",
        weed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "wgpu",
        "--strategy",
        "full",
        "--width",
        "0.35",
        "--size",
        "32",
        "--epochs",
        "4",
        "--batch",
        "16",
        "--checkpoint-minutes",
        "0",
        "--quiet",
    ];
    // Killed (SIGKILL) during the second epoch: the first epoch's row and a checkpoint exist.
    kill_after_first_epoch(&args, &out, Duration::from_secs(600));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let done = losses(&csv, "train_loss").len();
    assert!((1..4).contains(&done), "{csv}");
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        weed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let epochs: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(epochs, vec!["1", "2", "3", "4"], "{csv}");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["device"], "wgpu", "the resumed run must stay on the GPU");
    // A GPU-trained run exports on the CPU, as on a machine without the GPU.
    let onnx = dir.path().join("last.onnx");
    let o =
        fieldkit(&["export", "--run", out.to_str().unwrap(), "--checkpoint", "last", "--out", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `--device vulkan` where the Vulkan loader finds no driver (`VK_ICD_FILENAMES` pointing
/// nowhere): exit 2 and a sentence saying what to install, not a panic from wgpu.
#[test]
fn a_gpu_backend_without_its_driver_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let weed = assets().join("data/weed-mini");
    let o = Command::new(env!("CARGO_BIN_EXE_fieldkit"))
        .args(["train", "classify", "--data", weed.to_str().unwrap(), "--out"])
        .arg(dir.path().join("run"))
        .args(["--device", "vulkan", "--size", "32", "--quiet"])
        .env("VK_ICD_FILENAMES", dir.path().join("no-such-icd.json"))
        .env("VK_DRIVER_FILES", dir.path().join("no-such-icd.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--device vulkan:") && err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A GPU allocation that fails ends the run with exit 2 and advice, not a panic's exit 101.
/// lavapipe binds at most 128 MiB per buffer, and a 640-px detector batch of 8 asks for 300 MB;
/// a real GPU has room for it, so there the test has nothing to provoke and says so.
#[test]
fn a_gpu_allocation_failure_is_an_error_with_advice() {
    let Some(adapter) = gpu_adapter() else { return };
    if !adapter.contains("llvmpipe") {
        eprintln!("skipped: {adapter} is not lavapipe, whose buffer limit this test relies on");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = assets().join("data/sesame-mini/data.yaml");
    let o = fieldkit(&[
        "train",
        "detect",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--weights",
        &weights(),
        "--device",
        "wgpu",
        "--size",
        "640",
        "--batch",
        "8",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: --device wgpu: the GPU failed while training: can't allocate buffer"), "{err}");
    assert!(last.contains("lower --batch or --size"), "{last}");
}

/// `--precision bf16` on an adapter without bf16 shaders (lavapipe has f16, not bf16) is
/// refused naming the adapter and the precisions that work, exit 2; an adapter with bf16
/// has nothing to refuse.
#[test]
fn a_precision_the_gpu_lacks_is_refused_by_name() {
    let Some(adapter) = gpu_adapter() else { return };
    if !adapter.contains("llvmpipe") {
        eprintln!("skipped: {adapter} is not lavapipe, which lacks bf16");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let weed = assets().join("data/weed-mini");
    let o = fieldkit(&[
        "train",
        "classify",
        "--data",
        weed.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--device",
        "wgpu",
        "--precision",
        "bf16",
        "--size",
        "32",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--precision bf16: wgpu (llvmpipe")
            && err.contains("cannot compute in bf16")
            && err.contains("--precision f16 or f32"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
