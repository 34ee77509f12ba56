//! `fieldkit demo` on the vendored assets.

mod common;
use common::*;

#[test]
fn demo_runs_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let o = fieldkit(&["demo", "--out", dir.path().to_str().unwrap(), "--assets", assets().to_str().unwrap()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for stage in [
        "1. data check",
        "2. preprocessing",
        "3. labels as COCO",
        "4. train a weed classifier",
        "5. benchmark the exported model",
        "6. quantize to INT8",
        "7. serve the model over HTTP",
        "8. train a crop/weed detector",
        "9. detections drive the spray nozzles",
        "10. the field loop",
        "11. segment crop and weed pixels",
    ] {
        assert!(out.contains(stage), "missing stage {stage}:\n{out}");
    }
    assert!(dir.path().join("preview-yolox416.png").is_file());
    assert!(dir.path().join("sesame-mini-val.coco.json").is_file());
    let bench = fieldkit_core_card(&dir.path().join("bench.json"));
    assert!(bench["p50_ms"].as_f64().unwrap() > 0.0, "{bench}");
    let card = fieldkit_core_card(&dir.path().join("train-weed-mini/model.json"));
    assert!(card["metrics"]["valid_top1"].as_f64().unwrap() > 0.2, "{card}");
    // The quantized model, its card and its report; the drop is measured, not assumed.
    let report = fieldkit_core_card(&dir.path().join("model.int8.report.json"));
    assert!(report["size_ratio"].as_f64().unwrap() < 0.4, "{report}");
    assert!(report["drop"].as_f64().is_some() && report["quant_metric"].as_f64().unwrap() > 0.2, "{report}");
    assert!(dir.path().join("model.int8.json").is_file());
    // INT8 and fp32 latencies come from alternated rounds and are reported as a ratio (its
    // value is the machine's; speed goals live in benchmarks, not tests).
    assert!(out.contains("INT8 / fp32 p50: ") && out.contains("(medians of 3 alternated rounds)"), "{out}");
    assert!(
        out.contains("stopped (drained)")
            && out
                .contains(r#"fieldkit_requests_total{model="weeds",route="/v1/models/{name}/predict",status="200"} 3"#),
        "{out}"
    );
    // The detector stage: exported with a YOLOX card and scored through the runtime.
    let det = fieldkit_core_card(&dir.path().join("train-sesame-mini/model.json"));
    assert_eq!(det["decode"]["kind"], "yolox", "{det}");
    assert!(det["metrics"]["valid_map50_95"].as_f64().is_some(), "{det}");
    // The segmentation stage: exported with a segment card, scored through the runtime, drawn.
    let seg = fieldkit_core_card(&dir.path().join("train-peanut-mini/model.json"));
    assert_eq!(seg["decode"]["kind"], "segment", "{seg}");
    assert!(seg["metrics"]["valid_miou"].as_f64().unwrap() > 0.0, "{seg}");
    assert!(dir.path().join("train-peanut-mini/overlay-0249.png").is_file());
    // The bridge stage: every spray accounted for, the device's log checked against the plan.
    let bridge = fieldkit_core_card(&dir.path().join("bridge/report.json"));
    let acts = bridge["actuations"].as_array().unwrap();
    assert!(
        !acts.is_empty() && bridge["done"].as_u64().unwrap() + bridge["failed"].as_u64().unwrap() == acts.len() as u64,
        "{bridge}"
    );
    assert!(out.contains(", 0 outside the plan;"), "{out}");
    assert!(dir.path().join("bridge/status.png").is_file());
    // The field loop: real detections of the vendored detector on unseen photos drive the
    // simulated MCU; the sprays are scored against the clip's truth (skipped without ffmpeg).
    if have_ffmpeg() {
        let run = fieldkit_core_card(&dir.path().join("field/run.json"));
        let f = &run["field"];
        assert!(f["passes"].as_u64().unwrap() >= 5, "{run}");
        // A detector that sees the weeds sprays most of them; a broken loop (late sprays, a
        // clock mismatch, nothing detected) sprays none.
        assert!(f["hit_rate"].as_f64().unwrap() >= 0.5, "{run}");
        assert!(run["latency_ms"]["ack"]["p50"].as_f64().unwrap() > 0.0, "{run}");
        assert!(out.contains("weeds under a nozzle sprayed: "), "{out}");
    }
}

fn fieldkit_core_card(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
