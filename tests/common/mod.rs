#![allow(dead_code)]
//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fieldkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldkit")).args(args).output().expect("run fieldkit")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn assets() -> PathBuf {
    repo().join("assets")
}

/// The vendored ImageNet MobileNetV2 backbone, for `--weights`.
pub fn weights() -> String {
    assets().join("models/mobilenetv2-imagenet/mobilenetv2_features.safetensors").display().to_string()
}

/// `../shared`, or `$FIELDKIT_SHARED`.
pub fn shared() -> PathBuf {
    let p = std::env::var_os("FIELDKIT_SHARED").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared"));
    assert!(p.join("assets").is_dir(), "shared assets not found at {} (set FIELDKIT_SHARED)", p.display());
    p
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            let mut perm = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm).unwrap();
        }
    }
}

/// Entries of `dir`, sorted.
pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// The tiny detector fixture (classes crop, weed) with its card, copied into `dir` as
/// `<name>.onnx`.
pub fn tiny_detector(dir: &Path, name: &str) -> PathBuf {
    let m = dir.join(format!("{name}.onnx"));
    std::fs::copy(repo().join("runtime/tests/golden/tiny_detector.onnx"), &m).unwrap();
    std::fs::copy(repo().join("runtime/tests/fixtures/tiny_detector.card.json"), dir.join(format!("{name}.json")))
        .unwrap();
    m
}

/// Whether a test's external tool is here; with FIELDKIT_REQUIRE_STREAMS set (CI, after
/// scripts/setup.sh installed them) a missing one fails the test instead of skipping it.
fn have(what: &str, found: bool) -> bool {
    if !found {
        assert!(
            std::env::var_os("FIELDKIT_REQUIRE_STREAMS").is_none(),
            "{what} is missing (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: {what} is missing (scripts/setup.sh installs it)");
    }
    found
}

pub fn have_ffmpeg() -> bool {
    have("ffmpeg", fieldkit_core::video::ffmpeg_available())
}

/// Debian's Python with GStreamer's RTSP server bindings (tests/support/rtsp_server.py).
pub fn have_rtsp_server() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0')"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    have("GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)", ok)
}

/// A `secs` s clip at `fps` of 160 px panning 40 px/s across a vendored sesame photo (H.264;
/// needs ffmpeg).
pub fn panning_clip(clip: &Path, secs: u32, fps: u32) {
    let photo =
        std::fs::read_dir(assets().join("data/sesame-mini/images/valid")).unwrap().next().unwrap().unwrap().path();
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-loop", "1", "-i"])
        .arg(&photo)
        .args(["-vf", "crop=160:160:'mod(t*40,iw-160)':0", "-t", &secs.to_string(), "-r", &fps.to_string()])
        .args(["-pix_fmt", "yuv420p"])
        .arg(clip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `fieldkit bridge simulate-mcu` on a pty at `dir/mcu`, logging to `dir/mcu.jsonl`, for at
/// most `run_for_s`; with `Some(seed)` the line corrupts 1 % of bytes, loses some and
/// duplicates frames (drawn from the seed). Returned once its port exists.
pub fn simulated_mcu(dir: &Path, faults: Option<u64>, run_for_s: u64) -> std::process::Child {
    let port = dir.join("mcu");
    let sim = Command::new(env!("CARGO_BIN_EXE_fieldkit"))
        .args(["bridge", "simulate-mcu", "--port"])
        .arg(&port)
        .arg("--log")
        .arg(dir.join("mcu.jsonl"))
        .args(match faults {
            Some(seed) => vec![
                "--corrupt".into(),
                "0.01".into(),
                "--drop".into(),
                "0.002".into(),
                "--duplicate".into(),
                "0.02".into(),
                "--seed".into(),
                seed.to_string(),
            ],
            None => Vec::<String>::new(),
        })
        .args(["--run-for-s", &run_for_s.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !port.exists() {
        assert!(std::time::Instant::now() < deadline, "the simulated MCU did not appear");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sim
}

/// Runs `fieldkit args` and kills it (SIGKILL) 0.7 s after its first epoch ended (checkpoints
/// are saved after every batch, `metrics.csv` after every epoch: a quiet run can be followed
/// through it), as a crash mid-run would. Panics if the run finished first or no epoch ended
/// within `timeout`.
pub fn kill_after_first_epoch(args: &[&str], out: &Path, timeout: std::time::Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldkit")).args(args).spawn().expect("run fieldkit");
    let t = std::time::Instant::now();
    while !(out.join("checkpoints/last.json").exists() && out.join("metrics.csv").exists()) && t.elapsed() < timeout {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "the run finished before it could be killed; make it longer");
}
