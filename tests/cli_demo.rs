//! `fieldkit demo` on the vendored assets.

mod common;
use common::*;

#[test]
fn demo_runs_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let o = fieldkit(&["demo", "--out", dir.path().to_str().unwrap(), "--assets", assets().to_str().unwrap()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for stage in ["1. data check", "2. preprocessing", "3. labels as COCO"] {
        assert!(out.contains(stage), "missing stage {stage}:\n{out}");
    }
    assert!(dir.path().join("preview-yolox416.png").is_file());
    assert!(dir.path().join("sesame-mini-val.coco.json").is_file());
}
