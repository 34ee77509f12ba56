//! `fieldkit data check` end to end on the vendored sample data.

mod common;
use common::*;

#[test]
fn check_vendored_imagefolder_counts() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = fieldkit(&[
        "data",
        "check",
        "--data",
        assets().join("data/weed-mini").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["format"], "imagefolder");
    assert_eq!(r["classes"].as_array().unwrap().len(), 9);
    assert_eq!(r["splits"][0]["name"], "train");
    assert_eq!(r["splits"][0]["images"], 144);
    assert_eq!(r["splits"][1]["images"], 54);
    assert_eq!(r["splits"][0]["class_counts"]["eclipta"], 16);
    assert_eq!(r["splits"][0]["image_sizes"]["64x64"], 144);
    assert_eq!(r["errors"], 0);
}

#[test]
fn corrupted_label_and_truncated_jpeg_are_named_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sesame");
    copy_dir(&assets().join("data/sesame-mini"), &root);
    // sesame-mini keeps Ultralytics' layout: images/valid with the yaml key 'val'.
    let (label, jpeg) = corrupt_yolo_valid(&root);
    let o = fieldkit(&["data", "check", "--data", root.join("data.yaml").to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let label_line =
        out.lines().find(|l| l.contains(label.file_name().unwrap().to_str().unwrap())).expect("label named");
    assert!(label_line.starts_with("  error:") && label_line.contains(":2: class id 7 out of range"), "{label_line}");
    let jpeg_line = out.lines().find(|l| l.contains(jpeg.file_name().unwrap().to_str().unwrap())).expect("jpeg named");
    assert!(jpeg_line.contains("truncated JPEG"), "{jpeg_line}");
    assert!(out.contains("problems: 2 errors"), "{out}");
}

fn corrupt_yolo_valid(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let label = sorted_files(&root.join("labels/valid")).remove(0);
    let text = std::fs::read_to_string(&label).unwrap();
    assert_eq!(text.lines().count(), 1, "test assumes a one-box label");
    std::fs::write(&label, format!("{text}7 0.5 0.5 0.2 0.2\n")).unwrap();
    let jpeg = sorted_files(&root.join("images/valid")).remove(0);
    let bytes = std::fs::read(&jpeg).unwrap();
    std::fs::write(&jpeg, &bytes[..bytes.len() / 2]).unwrap();
    (label, jpeg)
}

#[test]
fn warnings_pass_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sesame");
    copy_dir(&assets().join("data/sesame-mini"), &root);
    std::fs::remove_file(&sorted_files(&root.join("labels/train"))[0]).unwrap();
    let yaml = root.join("data.yaml");
    let o = fieldkit(&["data", "check", "--data", yaml.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("missing label file"), "{}", stdout(&o));
    let o = fieldkit(&["data", "check", "--data", yaml.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn duplicate_across_splits_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("weed");
    copy_dir(&assets().join("data/weed-mini"), &root);
    std::fs::copy(&sorted_files(&root.join("train/eclipta"))[0], root.join("valid/eclipta/leaked.jpg")).unwrap();
    let o = fieldkit(&["data", "check", "--data", root.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("leaked.jpg: same bytes as"), "{}", stdout(&o));
}

#[test]
fn bad_paths_are_clear_errors() {
    let o = fieldkit(&["data", "check", "--data", "/nonexistent/data.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/data.yaml"), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("data.yaml");
    std::fs::write(&y, "train: [unclosed\n").unwrap();
    let o = fieldkit(&["data", "check", "--data", y.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("data.yaml: invalid YAML"), "{}", stderr(&o));
}
