//! `fieldkit serve` as a process: starts, answers, reloads on SIGHUP, drains and exits 0 on
//! SIGTERM; `fieldkit loadtest` against it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn serve_answers_reloads_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cls.onnx");
    std::fs::copy(repo().join("runtime/tests/golden/tiny_classifier.onnx"), &model).unwrap();
    std::fs::copy(repo().join("runtime/tests/fixtures/tiny_classifier.card.json"), dir.path().join("cls.json"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldkit"))
        .args(["serve", "--bind", "127.0.0.1:0", "--workers", "2", "--model"])
        .arg(format!("cls={}", model.display()))
        .env("FIELDKIT_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err_pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the daemon said nothing");
        log.push(line.clone());
        if let Some(i) = line.find("addr=") {
            break line[i + 5..].split_whitespace().next().unwrap().to_string();
        }
    };
    let url = format!("http://{addr}");
    let img = image::RgbImage::from_pixel(40, 40, image::Rgb([30, 160, 40]));
    let png = dir.path().join("a.png");
    img.save(&png).unwrap();
    let out = fieldkit(&[
        "loadtest",
        "--url",
        &url,
        "--model",
        "cls",
        "--image",
        png.to_str().unwrap(),
        "--concurrency",
        "4",
        "--requests",
        "200",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(r#"statuses {"200": 200}"#), "{}", stdout(&out));
    signal(child.id(), "-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut reloaded = false;
    while !reloaded && std::time::Instant::now() < deadline {
        let line = rx.recv_timeout(Duration::from_millis(200)).unwrap_or_default();
        reloaded = line.contains("SIGHUP");
        log.push(line);
    }
    assert!(reloaded, "{:?}", &log[log.len().saturating_sub(5)..]);
    signal(child.id(), "-TERM");
    let status = child.wait().unwrap();
    log.extend(rx.try_iter());
    let tail = &log[log.len().saturating_sub(5)..];
    assert_eq!(status.code(), Some(0), "{tail:#?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{tail:#?}");
}

#[test]
fn serve_refuses_a_public_bind_without_a_token() {
    let out = fieldkit(&["serve", "--bind", "0.0.0.0:0", "--model-dir", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("requires --token"), "{}", stderr(&out));
}
