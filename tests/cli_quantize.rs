//! `fieldkit quantize` from the command line: exit codes and messages (the quantizer itself
//! is tested in quantize/tests).

mod common;
use common::*;

#[test]
fn quantize_reports_bad_input_with_exit_code_2() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let out = d.path().join("out.onnx");
    let o =
        fieldkit(&["quantize", "--model", junk.to_str().unwrap(), "--out", out.to_str().unwrap(), "--weights-only"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.onnx") && stderr(&o).contains("not an ONNX model"), "{}", stderr(&o));
    assert!(!out.exists());
    // A mode is required; FP16 and INT8 do not mix.
    let o = fieldkit(&["quantize", "--model", junk.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o =
        fieldkit(&["quantize", "--model", junk.to_str().unwrap(), "--out", out.to_str().unwrap(), "--fp16", "--int8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--fp16 cannot be combined"), "{}", stderr(&o));
    let o = fieldkit(&[
        "quantize",
        "--model",
        junk.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--int8",
        "--method",
        "kl",
    ]);
    assert!(stderr(&o).contains("'kl' is not one of"), "{}", stderr(&o));
}
