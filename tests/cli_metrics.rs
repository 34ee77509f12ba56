//! `fieldkit metrics coco` end to end against the pycocotools goldens.

mod common;
use common::*;

#[test]
fn metrics_coco_json_matches_pycocotools() {
    let g = repo().join("core/tests/golden/coco/crowd_areas");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("m.json");
    let png = dir.path().join("pr.png");
    let o = fieldkit(&[
        "metrics",
        "coco",
        "--gt",
        g.join("gt.json").to_str().unwrap(),
        "--pred",
        g.join("pred.json").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--pr-plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Average Precision  @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let exp: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("expected.json")).unwrap()).unwrap();
    let close = |a: &serde_json::Value, b: &serde_json::Value| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4;
    assert!(close(&m["map50_95"], &exp["stats"][0]));
    assert!(close(&m["map50"], &exp["stats"][1]));
    assert!(close(&m["per_class"]["class5"]["ap50_95"], &exp["per_class"]["5"]["ap50_95"]));
    assert!(m["count_mae"].as_f64().unwrap() >= 0.0);
    assert!(image::open(&png).is_ok());
}

#[test]
fn metrics_coco_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let gt = repo().join("core/tests/golden/coco/basic/gt.json");
    let bad = dir.path().join("pred.json");
    std::fs::write(&bad, "{not json").unwrap();
    let o = fieldkit(&["metrics", "coco", "--gt", gt.to_str().unwrap(), "--pred", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pred.json: invalid JSON"), "{}", stderr(&o));
    std::fs::write(&bad, r#"[{"image_id": 999, "category_id": 1, "bbox": [1,1,2,2], "score": 0.5}]"#).unwrap();
    let o = fieldkit(&["metrics", "coco", "--gt", gt.to_str().unwrap(), "--pred", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("image_id 999"), "{}", stderr(&o));
}
