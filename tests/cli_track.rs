//! `fieldkit track` and `fieldkit metrics mot` end to end: detections from a golden case's
//! ground truth tracked back to it, counting lines and zones, and bad input named.

mod common;
use common::*;

use std::fmt::Write as _;

/// The random_a golden case's ground truth as detections (id -1, score 0.9) with every
/// fourth box of object 3 scored 0.3 (a partly hidden animal): ByteTrack's second round keeps
/// them.
fn detections_from_gt(gt: &str) -> String {
    let mut out = String::new();
    for line in gt.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let (frame, id) = (f[0], f[1]);
        let score = if id == "3" && frame.parse::<u32>().unwrap() % 4 == 0 { 0.3 } else { 0.9 };
        writeln!(out, "{frame},-1,{},{},{},{},{score},-1,-1,-1", f[2], f[3], f[4], f[5]).unwrap();
    }
    out
}

#[test]
fn tracks_detections_back_to_their_ground_truth_and_counts() {
    let case = repo().join("tests/data/mot/random_a");
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det.txt");
    std::fs::write(&det, detections_from_gt(&std::fs::read_to_string(case.join("gt.txt")).unwrap())).unwrap();
    let [tracks, summary, events, metrics] =
        ["tracks.txt", "summary.json", "events.jsonl", "mot.json"].map(|n| dir.path().join(n));
    let o = fieldkit(&[
        "track",
        "--detections",
        det.to_str().unwrap(),
        "--out",
        tracks.to_str().unwrap(),
        "--json",
        summary.to_str().unwrap(),
        "--line",
        "middle:500,0,500,2000",
        "--zone",
        "left:0,0,200,0,200,480,0,480",
        "--events",
        events.to_str().unwrap(),
        "--classes",
        "cow",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = fieldkit(&[
        "metrics",
        "mot",
        "--gt",
        case.join("gt.txt").to_str().unwrap(),
        "--pred",
        tracks.to_str().unwrap(),
        "--json",
        metrics.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("HOTA "), "{}", stdout(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    for key in ["mota", "idf1", "hota", "id_switches"] {
        assert!(m.get(key).is_some(), "{key} missing from {m}");
    }
    // Perfect boxes: the tracker may only lose the first frame of each track (tentative
    // births) and the Kalman smoothing's sub-pixel offsets.
    assert!(m["mota"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["idf1"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["hota"].as_f64().unwrap() > 0.8, "{m}");
    assert!(m["id_switches"].as_u64().unwrap() <= 2, "{m}");

    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let line = &s["counts"]["lines"][0];
    let crossings = line["in"].as_u64().unwrap() + line["out"].as_u64().unwrap();
    let ev = std::fs::read_to_string(&events).unwrap();
    let cross_events = ev.lines().filter(|l| l.contains("\"event\":\"cross\"")).count() as u64;
    assert_eq!(crossings, cross_events, "summary and events agree");
    assert!(crossings >= 1, "two animals cross x = 500 in this case: {s}");
    // Every event line is JSON naming its class.
    for l in ev.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(e["class"], "cow", "{l}");
    }
    assert_eq!(s["counts"]["zones"][0]["name"], "left");
}

#[test]
fn bad_rows_and_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det.txt");
    std::fs::write(&det, "1,-1,10,10,20,20,0.9\n2,-1,10,10,twenty,20,0.9\n").unwrap();
    let out = dir.path().join("t.txt");
    let o = fieldkit(&["track", "--detections", det.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("det.txt:2: width \"twenty\" is not a number"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written on bad input");
    std::fs::write(&det, "1,-1,10,10,20,20,0.9\n").unwrap();
    let o = fieldkit(&[
        "track",
        "--detections",
        det.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--line",
        "gate:1,2,3",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--line \"gate:1,2,3\": 3 numbers"), "{}", stderr(&o));
    let o = fieldkit(&[
        "track",
        "--detections",
        det.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--low-thresh",
        "0.7",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("low threshold 0.7 must be under the track threshold 0.5"), "{}", stderr(&o));
}

/// A clip panning across a vendored sesame photo, tracked through the tiny detector: the
/// annotated video has every frame, the summary its frame rate, the tracks file parses. Without
/// ffmpeg the command says it needs it.
#[test]
fn tracks_a_video_through_a_detector() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_detector(dir.path(), "det");
    let clip = dir.path().join("pan.mp4");
    let (ann, tracks, summary) = (dir.path().join("ann.mp4"), dir.path().join("t.txt"), dir.path().join("s.json"));
    let args = |src: &str| {
        vec![
            "track".to_string(),
            "--source".into(),
            src.into(),
            "--model".into(),
            m.to_str().unwrap().into(),
            "--out".into(),
            ann.to_str().unwrap().into(),
            "--mot".into(),
            tracks.to_str().unwrap().into(),
            "--json".into(),
            summary.to_str().unwrap().into(),
            "--line".into(),
            "mid:80,0,80,160".into(),
        ]
    };
    let run = |a: Vec<String>| fieldkit(&a.iter().map(String::as_str).collect::<Vec<_>>());
    if !have_ffmpeg() {
        std::fs::write(&clip, b"not a video").unwrap();
        let o = run(args(clip.to_str().unwrap()));
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("ffprobe"), "{}", stderr(&o));
        return;
    }
    let photo =
        std::fs::read_dir(assets().join("data/sesame-mini/images/valid")).unwrap().next().unwrap().unwrap().path();
    let o = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-loop", "1", "-i"])
        .arg(&photo)
        .args(["-vf", "crop=160:160:'t*40':0", "-t", "2", "-r", "8", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(args(clip.to_str().unwrap()));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["frames"], 16, "{s}");
    assert_eq!(s["fps"], 8.0, "the tracker runs at the video's rate: {s}");
    assert_eq!(s["settings"]["frame_rate"], 8.0);
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&ann)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "16", "annotated video frames");
    for l in std::fs::read_to_string(&tracks).unwrap().lines() {
        assert_eq!(l.split(',').count(), 10, "{l}");
    }
    // --max-frames stops early; a missing source is named.
    let mut a = args(clip.to_str().unwrap());
    a.extend(["--max-frames".into(), "5".into()]);
    let o = run(a);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["frames"], 5);
    let o = run(args(dir.path().join("nope.mp4").to_str().unwrap()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.mp4"), "{}", stderr(&o));
    let o = fieldkit(&["track", "--source", clip.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "--source needs --model");
}
