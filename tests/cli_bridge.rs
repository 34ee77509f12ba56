//! `fieldkit bridge` against `fieldkit bridge simulate-mcu`, two processes over a pty, with
//! 1 % byte corruption, dropped bytes and duplicated frames on the line.

mod common;

use common::*;
use serde_json::Value;

fn detections(path: &std::path::Path) {
    // A weed under the leftmost nozzle moving down the image, 10 frames at 100 ms, plus a crop
    // (never sprayed) and a line that is not JSON (skipped with a message).
    let mut text = String::new();
    for k in 0..10 {
        let y = 20.0 * k as f64;
        let line = serde_json::json!({"width": 400, "height": 300, "capture_ms": 100 * k, "detections": [
            {"bbox": [0.0, y, 40.0, y + 40.0], "class": 1, "name": "weed", "score": 0.9},
            {"bbox": [200.0, 0.0, 400.0, 300.0], "class": 0, "name": "crop", "score": 0.9}]});
        text += &format!("{line}\n");
    }
    text += "not json\n";
    std::fs::write(path, text).unwrap();
}

#[test]
fn bridge_drives_the_simulated_mcu_through_a_faulty_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = d.join("mcu");
    let mut sim = simulated_mcu(d, Some(3), 30);
    detections(&d.join("det.jsonl"));
    let config = repo().join("firmware-bridge/bridge.toml");
    let out = fieldkit(&[
        "bridge",
        "--port",
        port.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--detections",
        d.join("det.jsonl").to_str().unwrap(),
        "--report",
        d.join("report.json").to_str().unwrap(),
        "--status-png",
        d.join("status.png").to_str().unwrap(),
    ]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("det.jsonl:11: not a detection line"), "{}", stderr(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["lines"], 10);
    assert_eq!(r["bad_lines"], 1);
    let acts = r["actuations"].as_array().unwrap();
    // One plant seen ten times is one spray, on the leftmost nozzle only.
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0]["nozzle"], 0);
    assert_eq!(acts[0]["status"], "done", "{acts:?}");
    let log = std::fs::read_to_string(d.join("mcu.jsonl")).unwrap();
    let opens: Vec<Value> =
        log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["event"] == "open").collect();
    assert_eq!(opens.len(), 1, "{log}");
    assert_eq!(opens[0]["nozzle"], 0);
    let planned = acts[0]["open_us"].as_i64().unwrap();
    assert!((opens[0]["t_us"].as_i64().unwrap() - planned).abs() < 40_000, "{log}");
    assert!(image::open(d.join("status.png")).unwrap().width() == 512);
}

#[test]
fn bridge_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = repo().join("firmware-bridge/bridge.toml");
    let bad = d.join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&config).unwrap().replace("weed = 0.35", "weed = 3.5")).unwrap();
    std::fs::write(d.join("det.jsonl"), "").unwrap();
    let out =
        fieldkit(&["bridge", "--port", "/nonexistent/tty", "--config", bad.to_str().unwrap(), "--detections", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("targets.weed"), "{}", stderr(&out));
    let mut fast =
        std::fs::read_to_string(&config).unwrap().replace("connect_timeout_ms = 5000", "connect_timeout_ms = 300");
    fast.push('\n');
    std::fs::write(&bad, fast).unwrap();
    let out = fieldkit(&[
        "bridge",
        "--port",
        "/nonexistent/tty",
        "--config",
        bad.to_str().unwrap(),
        "--detections",
        d.join("det.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no answer from a device on /nonexistent/tty"), "{}", stderr(&out));
    let out = fieldkit(&["bridge", "simulate-mcu", "--port", d.join("p").to_str().unwrap(), "--unplug", "10-20"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("AT_MS:FOR_MS"), "{}", stderr(&out));
}

/// The planner and timing on their own: a drive over the vendored sesame photos with its
/// labels as detections (`field-clip --labels`), replayed into the simulated MCU on a clean
/// line, sprays every labelled weed under the boom for its whole passage and no crop.
#[test]
fn labels_as_detections_spray_every_weed() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = repo().join("firmware-bridge/bridge.toml");
    let data = assets().join("data/sesame-mini/data.yaml");
    let (clip, labels) = (d.join("field.mp4"), d.join("labels.jsonl"));
    let o = fieldkit(&[
        "bridge",
        "field-clip",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        clip.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--images",
        "8",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut sim = simulated_mcu(d, None, 120);
    let o = fieldkit(&[
        "bridge",
        "--port",
        d.join("mcu").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--detections",
        labels.to_str().unwrap(),
        "--truth",
        d.join("field.truth.json").to_str().unwrap(),
        "--quiet",
    ]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let field = out.lines().find(|l| l.starts_with("field: ")).expect("a field score");
    assert!(field.contains("(hit rate 1.000,"), "{field}");
    assert!(field.contains("other classes: 0 of "), "{field}");
}
