//! The `#[ignore]`d tier on ../shared data (run by `.ci/run`).

mod common;
use common::*;

fn check_json(data: &std::path::Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = fieldkit(&["data", "check", "--data", data.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

#[test]
#[ignore = "needs ../shared"]
fn shared_datasets_have_documented_counts() {
    let d = shared().join("assets/data");
    let r = check_json(&d.join("weed-cls9"));
    assert_eq!((r["splits"][0]["images"].as_u64(), r["splits"][1]["images"].as_u64()), (Some(9364), Some(1088)));
    assert_eq!(r["splits"][0]["class_counts"]["eclipta"], 60);
    assert_eq!(r["splits"][0]["class_counts"]["purslane"], 3450);
    let r = check_json(&d.join("sesame-weed-det/data.yaml"));
    assert_eq!(r["format"], "yolo");
    assert_eq!((r["splits"][0]["name"].as_str(), r["splits"][0]["images"].as_u64()), (Some("train"), Some(1820)));
    assert_eq!((r["splits"][1]["name"].as_str(), r["splits"][1]["images"].as_u64()), (Some("val"), Some(260)));
    assert_eq!(r["splits"][0]["image_sizes"]["512x512"], 1820);
    let r = check_json(&d.join("cattle-breed5"));
    assert_eq!((r["splits"][0]["images"].as_u64(), r["splits"][1]["images"].as_u64()), (Some(850), Some(166)));
}

#[test]
#[ignore = "needs ../shared"]
fn shared_sesame_copy_with_corruptions_exits_1() {
    let src = shared().join("assets/data/sesame-weed-det");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sesame");
    // The valid split only (260 images) keeps the copy small.
    copy_dir(&src.join("images/valid"), &root.join("images/valid"));
    copy_dir(&src.join("labels/valid"), &root.join("labels/valid"));
    std::fs::write(root.join("data.yaml"), "path: .\nval: images/valid\nnames:\n  0: crop\n  1: weed\n").unwrap();
    let label = sorted_files(&root.join("labels/valid")).swap_remove(10);
    std::fs::write(&label, "0 0.5 1.7 0.2 0.2\n").unwrap();
    let jpeg = sorted_files(&root.join("images/valid")).swap_remove(10);
    let bytes = std::fs::read(&jpeg).unwrap();
    std::fs::write(&jpeg, &bytes[..bytes.len() - 4000]).unwrap();
    let o = fieldkit(&["data", "check", "--data", root.join("data.yaml").to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("{}:1: coordinate 1.7 outside [0, 1]", label.display())), "{out}");
    assert!(out.contains(&format!("{}: unreadable image: truncated JPEG", jpeg.display())), "{out}");
}
