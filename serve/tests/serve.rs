//! The daemon over real HTTP on loopback: every route, bad inputs, auth, backpressure, hot
//! swap under load, metrics.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fieldkit_serve::{Running, ServeConfig};
use serde_json::{json, Value};

fn fixture(dir: &Path, model: &str, name: &str) -> PathBuf {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests");
    let to = dir.join(format!("{name}.onnx"));
    std::fs::copy(runtime.join("golden").join(format!("{model}.onnx")), &to).unwrap();
    std::fs::copy(runtime.join("fixtures").join(format!("{model}.card.json")), dir.join(format!("{name}.json")))
        .unwrap();
    to
}

struct Daemon {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    url: String,
    server: Option<Running>,
}

fn start(tune: impl FnOnce(&mut ServeConfig)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let cls = fixture(dir.path(), "tiny_classifier", "cls");
    let det = fixture(dir.path(), "tiny_detector", "det");
    let mut cfg = ServeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        models: BTreeMap::from([("cls".to_string(), cls), ("det".to_string(), det)]),
        model_dir: Some(dir.path().to_path_buf()),
        ..ServeConfig::default()
    };
    tune(&mut cfg);
    let server = Running::start(cfg).unwrap();
    Daemon { url: format!("http://{}", server.addr), dir: dir.path().to_path_buf(), _dir: dir, server: Some(server) }
}

fn image(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(80, 60, |x, y| image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x + y) * 2) as u8]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// (status, JSON body or {"text": ...}, Retry-After)
fn call(req: ureq::Request, body: Option<(&str, &[u8])>) -> (u16, Value, Option<String>) {
    let resp = match body {
        Some((ct, b)) => req.set("Content-Type", ct).send_bytes(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("retry-after").map(str::to_string);
    let text = resp.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, body, retry)
}

fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc(&ihdr).to_be_bytes());
    png
}

/// A request declaring `len` body bytes with `Expect: 100-continue`; (status, response text).
fn oversized(url: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "POST /v1/models/cls/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn predict_classifier_and_detector() {
    let d = start(|_| {});
    let (s, b, _) = call(
        ureq::post(&format!("{}/v1/models/cls/predict?top_k=2", d.url)),
        Some(("image/png", &image(image::ImageFormat::Png))),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["kind"], "classes");
    assert_eq!(b["classes"].as_array().unwrap().len(), 2);
    assert_eq!((b["width"].as_u64(), b["height"].as_u64()), (Some(80), Some(60)));
    assert!(b["timing"]["inference_ms"].as_f64().unwrap() > 0.0, "{b}");
    // Multipart upload, thresholds as query parameters.
    let jpeg = image(image::ImageFormat::Jpeg);
    let mut form = b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
    form.extend(&jpeg);
    form.extend(b"\r\n--XyZ--\r\n");
    let (s, b, _) = call(
        ureq::post(&format!("{}/v1/models/det/predict?conf=0.01&agnostic=true", d.url)),
        Some(("multipart/form-data; boundary=XyZ", &form)),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["kind"], "detections");
    for det in b["detections"].as_array().unwrap() {
        assert!(det["score"].as_f64().unwrap() >= 0.01 && det["name"].is_string(), "{det}");
    }
}

#[test]
fn models_load_through_the_nnef_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_path_buf();
    let d = start(|c| c.nnef_cache = Some(dir.clone()));
    let entries = || {
        std::fs::read_dir(cache.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".nnef.tar"))
            .count()
    };
    assert_eq!(entries(), 2, "one entry per configured model");
    let (s, b, _) = call(
        ureq::post(&format!("{}/v1/models/cls/predict?top_k=1", d.url)),
        Some(("image/png", &image(image::ImageFormat::Png))),
    );
    assert_eq!(s, 200, "{b}");
    // Loading the same file again over HTTP reads the entry instead of adding one.
    let body = serde_json::json!({"name": "cls2", "path": "cls.onnx"}).to_string();
    let (s, b, _) = call(ureq::post(&format!("{}/v1/models", d.url)), Some(("application/json", body.as_bytes())));
    assert_eq!(s, 200, "{b}");
    assert_eq!(entries(), 2);
}

#[test]
fn bad_inputs_get_a_4xx_with_a_message_and_the_daemon_keeps_serving() {
    let d = start(|c| c.max_body_mb = 1.0);
    let predict =
        |body: &[u8]| call(ureq::post(&format!("{}/v1/models/cls/predict", d.url)), Some(("image/jpeg", body)));
    let jpeg = image(image::ImageFormat::Jpeg);
    // (what is sent, the reply: status, body, header, what its error must say)
    type Case<'a> = (&'a str, (u16, Value, Option<String>), &'a str);
    let cases: Vec<Case> = vec![
        ("empty body", predict(b""), "empty body"),
        ("truncated JPEG", predict(&jpeg[..jpeg.len() / 2]), "truncated"),
        ("50,000 x 50,000 PNG header", predict(&png_claiming(50_000, 50_000)), "image"),
        ("not an image", predict(b"hello"), "image"),
        (
            "unknown model",
            call(ureq::post(&format!("{}/v1/models/nope/predict", d.url)), Some(("image/jpeg", &jpeg))),
            "unknown model",
        ),
        (
            "bad threshold",
            call(ureq::post(&format!("{}/v1/models/cls/predict?conf=7", d.url)), Some(("image/jpeg", &jpeg))),
            "conf=7",
        ),
        (
            "unknown query",
            call(ureq::post(&format!("{}/v1/models/cls/predict?confidence=0.2", d.url)), Some(("image/jpeg", &jpeg))),
            "confidence",
        ),
    ];
    for (what, (status, body, _), needle) in cases {
        assert!((400..500).contains(&status), "{what}: {status} {body}");
        let msg = body["error"].as_str().or(body["text"].as_str()).unwrap_or_default().to_lowercase();
        assert!(msg.contains(&needle.to_lowercase()), "{what}: {status} {body}");
    }
    // Over the body limit: refused from the declared length, before the body is sent (a
    // client that sends it anyway may see the connection closed instead).
    let (status, text) = oversized(&d.url, 2 * 1024 * 1024);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("limit"), "{text}");
    let infer = |v: Value| {
        call(
            ureq::post(&format!("{}/v2/models/cls/infer", d.url)),
            Some(("application/json", v.to_string().as_bytes())),
        )
    };
    let zeros = vec![0.0f32; 3 * 32 * 32];
    for (what, req, needle) in [
        (
            "wrong shape",
            json!({"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": zeros}]}),
            "shape",
        ),
        (
            "wrong datatype",
            json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "INT8", "data": zeros}]}),
            "datatype",
        ),
        (
            "wrong input name",
            json!({"inputs": [{"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": zeros}]}),
            "input",
        ),
        (
            "too few values",
            json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [1.0, 2.0]}]}),
            "values",
        ),
        (
            "not numbers",
            json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ["a"]}]}),
            "numbers",
        ),
        ("no inputs", json!({"inputs": []}), "inputs"),
        ("not a request", json!({"hello": 1}), "inputs"),
    ] {
        let (status, body, _) = infer(req);
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{what}: {body}");
    }
    let (s, _, _) = predict(&jpeg);
    assert_eq!(s, 200, "still serving");
}

#[test]
fn open_inference_protocol_routes() {
    let d = start(|_| {});
    assert_eq!(call(ureq::get(&format!("{}/v2/health/live", d.url)), None).0, 200);
    assert_eq!(call(ureq::get(&format!("{}/v2/health/ready", d.url)), None).0, 200);
    let (s, meta, _) = call(ureq::get(&format!("{}/v2/models/cls", d.url)), None);
    assert_eq!(s, 200);
    assert_eq!(meta["inputs"][0]["shape"], json!([1, 3, 32, 32]));
    assert_eq!(meta["inputs"][0]["name"], "input");
    assert_eq!(call(ureq::get(&format!("{}/v2/models/cls/ready", d.url)), None).0, 200);
    assert_eq!(call(ureq::get(&format!("{}/v2/models/nope/ready", d.url)), None).0, 404);
    // The same tensor through the daemon and through the engine directly.
    let data: Vec<f32> = (0..3 * 32 * 32).map(|i| ((i % 97) as f32 / 97.0) - 0.5).collect();
    let req =
        json!({"id": "r1", "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": data}]});
    let (s, out, _) = call(
        ureq::post(&format!("{}/v2/models/cls/infer", d.url)),
        Some(("application/json", req.to_string().as_bytes())),
    );
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["id"], "r1");
    let got: Vec<f32> =
        out["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let engine = fieldkit_runtime::Engine::load(&d.dir.join("cls.onnx")).unwrap();
    let want = engine.session().unwrap().run_tensor(&data).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6), "{got:?} vs {want:?}");
    // The binary tensor extension: JSON header, then the raw little-endian floats.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "parameters": {"binary_data_size": data.len() * 4}}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    let req = ureq::post(&format!("{}/v2/models/cls/infer", d.url))
        .set("Inference-Header-Content-Length", &header.len().to_string());
    let (s, out, _) = call(req, Some(("application/octet-stream", &body)));
    assert_eq!(s, 200, "{out}");
    let got_b: Vec<f32> =
        out["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(got_b, got);
}

#[test]
fn bearer_token_guards_everything_but_health() {
    let token = "0123456789abcdef-secret";
    let d = start(|c| c.token = Some(token.into()));
    assert_eq!(call(ureq::get(&format!("{}/v2/health/live", d.url)), None).0, 200);
    let (s, b, _) = call(ureq::get(&format!("{}/v1/models", d.url)), None);
    assert_eq!(s, 401, "{b}");
    assert_eq!(
        call(ureq::get(&format!("{}/v1/models", d.url)).set("Authorization", "Bearer wrong-token-000000"), None).0,
        401
    );
    assert_eq!(call(ureq::get(&format!("{}/metrics", d.url)), None).0, 401);
    let (s, b, _) =
        call(ureq::get(&format!("{}/v1/models", d.url)).set("Authorization", &format!("Bearer {token}")), None);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["models"].as_array().unwrap().len(), 2);
    // Beyond loopback without a token: refused before binding.
    let cfg = ServeConfig { bind: "0.0.0.0:0".parse().unwrap(), ..ServeConfig::default() };
    let e = Running::start(cfg).err().unwrap().to_string();
    assert!(e.contains("requires --token"), "{e}");
}

#[test]
fn a_full_queue_sheds_with_503_and_retry_after() {
    let d = start(|c| {
        c.workers = 1;
        c.queue = 2;
    });
    let img = Arc::new(image(image::ImageFormat::Png));
    let url = format!("{}/v1/models/det/predict", d.url);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (img, url) = (img.clone(), url.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| call(ureq::post(&url), Some(("image/png", &img))))
                    .map(|(s, _, r)| (s, r))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok + shed.len(), results.len(), "only 200 or 503: {results:?}");
    assert!(ok > 0 && !shed.is_empty(), "{ok} ok, {} shed", shed.len());
    assert!(shed.iter().all(|r| r.1.as_deref() == Some("1")), "Retry-After on every 503");
}

#[test]
fn hot_swap_under_load_loses_no_request() {
    let d = start(|c| c.workers = 2);
    // A second copy of the classifier to swap in.
    fixture(&d.dir, "tiny_classifier", "cls2");
    let stop = Arc::new(AtomicBool::new(false));
    let img = Arc::new(image(image::ImageFormat::Png));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, img, url) = (stop.clone(), img.clone(), format!("{}/v1/models/cls/predict", d.url));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (s, b, _) = call(ureq::post(&url), Some(("image/png", &img)));
                    seen.push((s, b["version"].as_str().unwrap_or("").to_string()));
                }
                seen
            })
        })
        .collect();
    let mut versions = Vec::new();
    for i in 0..6 {
        let path = if i % 2 == 0 { "cls2.onnx" } else { "cls.onnx" };
        let (s, b, _) = call(
            ureq::post(&format!("{}/v1/models", d.url)),
            Some(("application/json", json!({"name": "cls", "path": path}).to_string().as_bytes())),
        );
        assert_eq!(s, 200, "{b}");
        versions.push(b["version"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(u16, String)> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = seen.iter().filter(|r| r.0 != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed during swaps: {failed:?}", failed.len(), seen.len());
    let served: std::collections::BTreeSet<_> = seen.iter().map(|r| r.1.clone()).collect();
    assert!(served.len() >= 3, "requests saw versions {served:?} (loaded {versions:?})");
}

#[test]
fn model_management_and_metrics() {
    let d = start(|_| {});
    let load = |v: Value| {
        call(ureq::post(&format!("{}/v1/models", d.url)), Some(("application/json", v.to_string().as_bytes())))
    };
    let (s, b, _) = load(json!({"name": "x", "path": "/etc/passwd"}));
    assert_eq!(s, 403, "{b}");
    let (s, b, _) = load(json!({"name": "x", "path": "../../etc"}));
    assert!(s == 403 || s == 400, "{b}");
    let (s, b, _) = load(json!({"name": "bad name!", "path": "cls.onnx"}));
    assert_eq!(s, 400, "{b}");
    std::fs::write(d.dir.join("junk.onnx"), b"not a model").unwrap();
    let (s, b, _) = load(json!({"name": "junk", "path": "junk.onnx"}));
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("junk"), "{b}");
    let (s, _, _) = call(ureq::delete(&format!("{}/v1/models/det", d.url)), None);
    assert_eq!(s, 200);
    assert_eq!(call(ureq::delete(&format!("{}/v1/models/det", d.url)), None).0, 404);
    assert_eq!(
        call(
            ureq::post(&format!("{}/v1/models/det/predict", d.url)),
            Some(("image/png", &image(image::ImageFormat::Png)))
        )
        .0,
        404
    );
    let (s, _, _) = call(
        ureq::post(&format!("{}/v1/models/cls/predict", d.url)),
        Some(("image/png", &image(image::ImageFormat::Png))),
    );
    assert_eq!(s, 200);
    let (s, m, _) = call(ureq::get(&format!("{}/metrics", d.url)), None);
    assert_eq!(s, 200);
    let text = m["text"].as_str().unwrap();
    for needle in [
        r#"fieldkit_requests_total{model="cls",route="/v1/models/{name}/predict",status="200"} 1"#,
        r#"fieldkit_requests_total{model="det",route="/v1/models/{name}/predict",status="404"} 1"#,
        r#"fieldkit_inference_seconds_count{model="cls"} 1"#,
        r#"fieldkit_queue_wait_seconds_bucket{le="+Inf",model="cls"} 1"#,
        "fieldkit_models_loaded 1",
        r#"fieldkit_queue_depth{model="cls"} 0"#,
        "fieldkit_worker_busy_ratio ",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    drop(d.server);
}

fn queue_depth(url: &str, model: &str) -> i64 {
    let text = ureq::get(&format!("{url}/metrics")).call().unwrap().into_string().unwrap();
    let key = format!("fieldkit_queue_depth{{model=\"{model}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn stopping_under_load_finishes_every_admitted_request() {
    let mut d = start(|c| {
        c.workers = 1;
        c.queue = 64;
    });
    // A large photo keeps the one worker decoding for a while, so requests pile up in the queue.
    let big = image::RgbImage::from_fn(3000, 2000, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut jpeg = Vec::new();
    big.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let jpeg = Arc::new(jpeg);
    let url = format!("{}/v1/models/cls/predict", d.url);
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (jpeg, url) = (jpeg.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().max_idle_connections(0).build();
                match agent.post(&url).set("Content-Type", "image/jpeg").send_bytes(&jpeg) {
                    Ok(r) => Ok(r.status()),
                    Err(ureq::Error::Status(s, _)) => Ok(s),
                    // Not yet accepted when the listener closed: refused, never admitted.
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut depth = 0;
    while depth < 6 && std::time::Instant::now() < deadline {
        depth = queue_depth(&d.url, "cls");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(depth >= 6, "requests never queued up (depth {depth})");
    // Returns once the listener is closed, every admitted request answered and the worker gone.
    d.server.take().unwrap().stop().unwrap();
    let results: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    eprintln!("queued at the stop: {depth}; answered 200: {ok}; {results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(200) | Err(_))), "an admitted request failed: {results:?}");
    assert!(ok as i64 >= depth, "{depth} were queued at the stop, only {ok} answered: {results:?}");
    assert!(ureq::get(&format!("{}/v2/health/live", d.url)).call().is_err(), "still listening after stop");
}
