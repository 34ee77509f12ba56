//! The detector end to end on the vendored sesame subset (default tier): the loss falls over
//! a few optimisation steps from the ImageNet backbone, overfitting one synthetic batch
//! recovers its boxes, the exported ONNX matches burn in tract, and a short `train_detect`
//! run writes every output, exports and evaluates.

mod common;

use std::path::PathBuf;

use burn::optim::GradientsParams;
use burn::prelude::*;
use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::dataset::YoloDataset;
use fieldkit_core::detect::{decode_yolox, nms, NmsOptions};
use fieldkit_core::metrics::iou;
use fieldkit_runtime::Engine;
use fieldkit_trainer::data::boxes::{load_box_split, DetAugment};
use fieldkit_trainer::data::sample_rng;
use fieldkit_trainer::export::export_detector;
use fieldkit_trainer::model::yolox::{anchor_count, STRIDES};
use fieldkit_trainer::model::{to_host, DetectorConfig};
use fieldkit_trainer::train::classify::optimizer_for;
use fieldkit_trainer::train::detect::assign::{Anchors, GtBox};
use fieldkit_trainer::train::detect::loss::{yolox_loss, BoxLoss};
use fieldkit_trainer::train::detect::{train_detect, DetectConfig};
use fieldkit_trainer::train::{OptimizerKind, Progress};
use fieldkit_trainer::weights::load_backbone;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

fn sesame() -> PathBuf {
    assets().join("data/sesame-mini/data.yaml")
}

fn weights() -> PathBuf {
    assets().join("models/mobilenetv2-imagenet/mobilenetv2_features.safetensors")
}

#[test]
fn loss_falls_on_a_fixed_batch() {
    let _one = common::one_run_at_a_time();
    let device = Device::flex();
    device.seed(3);
    let size = 128u32;
    let data = YoloDataset::from_yaml(&sesame()).unwrap();
    let set = load_box_split(&data, "train", size, 2).unwrap();
    let mut model = DetectorConfig::new(2).with_neck_width(32).with_head_depth(1).init(&device);
    load_backbone(&mut model.backbone, &weights()).unwrap();
    let mut model = model.train().with_trainable_from(7);
    let pre = DetectConfig::new(sesame()).preprocess();
    let s = size as usize;
    let mut pixels = vec![0f32; 4 * 3 * s * s];
    let mut boxes = Vec::new();
    for i in 0..4 {
        let (img, b) = DetAugment::none().sample(&set, i, false, &mut sample_rng(0, 0, i));
        pre.normalize_into(&img, &mut pixels[i * 3 * s * s..(i + 1) * 3 * s * s]).unwrap();
        boxes.push(b);
    }
    assert!(boxes.iter().map(|b| b.len()).sum::<usize>() > 0);
    let anchors = Anchors::new(size, &STRIDES);
    let mut optim = optimizer_for(OptimizerKind::AdamW, 0.0, 0.9, Some(10.0));
    let ad = device.clone().autodiff();
    let mut losses = Vec::new();
    // 24 steps, not 12: the first dozen fall 19-23 % depending on the CPU (AVX2 Zen 3 vs the
    // 48 KiB-L1 geometry gemm blocks for differently), too close to the 20 % this asserts;
    // by step 24 both are at 0.53-0.56 of the start.
    for _ in 0..24 {
        let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [4, 3, s, s]), &ad);
        let (loss, parts) = yolox_loss(model.forward(x), &boxes, &anchors, BoxLoss::Iou, false);
        assert!(parts.positives > 0 && parts.total.is_finite(), "{parts:?}");
        losses.push(parts.total);
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(2e-3, model, g);
    }
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[21..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.8 * first, "loss did not fall: {losses:?}");
}

/// Two 128-px images with flat-coloured objects of two classes on a noisy grey field.
fn synthetic_batch() -> (Vec<image::RgbImage>, Vec<Vec<GtBox>>) {
    use rand::Rng;
    let mut rng = sample_rng(11, 0, 0);
    let layouts: [&[(usize, [u32; 4])]; 2] =
        [&[(0, [16, 24, 64, 88]), (1, [76, 12, 116, 52])], &[(1, [8, 70, 56, 118]), (0, [70, 40, 120, 104])]];
    let colours = [[220u8, 40, 40], [40, 60, 220]];
    let mut images = Vec::new();
    let mut boxes = Vec::new();
    for layout in layouts {
        let mut img = image::RgbImage::from_fn(128, 128, |_, _| {
            let v = rng.random_range(100..156u8);
            image::Rgb([v, v, v])
        });
        for &(c, [x1, y1, x2, y2]) in layout {
            for y in y1..y2 {
                for x in x1..x2 {
                    img.put_pixel(x, y, image::Rgb(colours[c]));
                }
            }
        }
        boxes.push(layout.iter().map(|&(c, b)| GtBox { class: c, bbox: b.map(|v| v as f32) }).collect());
        images.push(img);
    }
    (images, boxes)
}

/// Overfitting one batch drives the loss near its floor and the decoded, suppressed
/// predictions of the eval-mode model recover every box with its class; a loss that ignored
/// the targets (or an assignment that paired the wrong anchors) could not pass this.
///
/// The trajectory differs between CPUs: burn's flex matmuls (the `gemm` crate) split the
/// reduction dimension into blocks sized from the L1 data cache that `/sys` reports, so a
/// 32 KiB 8-way L1 (Zen 4, most client cores) sums k > 512 in two blocks where a 48 KiB
/// 12-way one (Zen 5, Sapphire Rapids) sums it in one. The first loss differs in the 7th digit
/// and the 320 steps amplify it; SimOTA re-assigns positives every step. The schedule is the
/// one that converges from every start tried (seeds 1–6, both cache geometries: final loss
/// 1.4–5.8 % of the first), where the earlier 160 steps at a stepped rate ended at 4–13 %.
/// An AVX2 Zen 3 (no AVX-512: burn-flex's other kernels) ends at 1.4 % natively and 7.6 % under
/// the 48 KiB geometry, where a low duplicate box survives NMS; the detection check below is
/// therefore AP50-style (matches outrank every false positive) rather than a count.
/// `scripts/cache-geometry.sh` runs this under the other geometry (CI does).
#[test]
fn overfit_one_batch_recovers_the_boxes() {
    let _one = common::one_run_at_a_time();
    let device = Device::flex();
    device.seed(5);
    let (images, boxes) = synthetic_batch();
    let s = 128usize;
    let mut model = DetectorConfig::new(2).with_neck_width(32).with_head_depth(1).init(&device);
    load_backbone(&mut model.backbone, &weights()).unwrap();
    let mut model = model.train().with_trainable_from(7);
    let pre = DetectConfig::new(sesame()).preprocess();
    let mut pixels = vec![0f32; 2 * 3 * s * s];
    for (i, img) in images.iter().enumerate() {
        pre.normalize_into(img, &mut pixels[i * 3 * s * s..(i + 1) * 3 * s * s]).unwrap();
    }
    let anchors = Anchors::new(s as u32, &STRIDES);
    let mut optim = optimizer_for(OptimizerKind::AdamW, 0.0, 0.9, Some(10.0));
    let ad = device.clone().autodiff();
    let steps = 320;
    let mut losses = Vec::new();
    for step in 0..steps {
        let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [2, 3, s, s]), &ad);
        let (loss, parts) = yolox_loss(model.forward(x), &boxes, &anchors, BoxLoss::Iou, step >= steps / 2);
        losses.push(parts);
        let g = GradientsParams::from_grads(loss.backward(), &model);
        // Cosine from 3e-3 down to 2 % of it: the late steps settle instead of bouncing
        // between assignments.
        let t = step as f64 / steps as f64;
        let lr = 3e-3 * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()));
        model = optim.step(lr, model, g);
    }
    let (first, last) = (losses[0], losses[steps - 1]);
    eprintln!("overfit: first {first:?}\n         last  {last:?}");
    // IoU loss 5·(1 − IoU²) under 0.5 means a mean IoU above ~0.95 on the positives.
    // Measured: 12.5 -> 0.23 (48 KiB L1) and 0.21 (32 KiB L1) at seed 5, boxes back to the pixel.
    assert!(last.total < 0.1 * first.total && last.iou < 0.5 && last.obj < 0.1 * first.obj, "{last:?} vs {first:?}");
    let eval = model.valid();
    let y = to_host(eval.forward(Tensor::<4>::from_data(TensorData::new(pixels, [2, 3, s, s]), &device)));
    let per = y.len() / 2;
    for (i, want) in boxes.iter().enumerate() {
        let dets = decode_yolox(&y[i * per..(i + 1) * per], 2, s as u32, s as u32, &STRIDES, true, 0.3).unwrap();
        let dets = nms(
            dets,
            &NmsOptions { score_threshold: 0.3, iou_threshold: 0.5, class_agnostic: false, max_detections: 100 },
        );
        let found: Vec<String> =
            dets.iter().map(|d| format!("{} {:.2} {:?}", d.class, d.score, d.bbox.map(|v| v.round()))).collect();
        eprintln!("image {i}: {found:?}");
        // COCO-style greedy matching by descending score (NMS already sorted them): each
        // detection takes the best unmatched same-class box at IoU >= 0.5. The batch is
        // recovered when every box is matched at IoU >= 0.9 and no unmatched detection is
        // confident (>= 0.5) or outranks a match, i.e. AP50 is 1. A low duplicate beside a
        // box (one CPU's run leaves a 0.41 one whose box runs off the image) ranks below every
        // match and costs no precision, so it does not fail the test; a wrong box or class does.
        let mut matched = vec![None::<f32>; want.len()];
        let mut false_scores = Vec::new();
        let mut lowest_match = 1.0f32;
        for d in &dets {
            let best = want
                .iter()
                .enumerate()
                .filter(|(j, gt)| gt.class == d.class && matched[*j].is_none())
                .map(|(j, gt)| (j, iou(&d.bbox, &gt.bbox)))
                .filter(|&(_, o)| o >= 0.5)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((j, o)) => {
                    matched[j] = Some(o);
                    lowest_match = lowest_match.min(d.score);
                }
                None => false_scores.push(d.score),
            }
        }
        for (gt, m) in want.iter().zip(&matched) {
            assert!(
                m.is_some_and(|o| o >= 0.9),
                "image {i}: class {} box {:?} recovered at IoU {m:?} only: {found:?}",
                gt.class,
                gt.bbox
            );
        }
        for s in &false_scores {
            assert!(*s < 0.5 && *s < lowest_match, "image {i}: a false positive at score {s}: {found:?} vs {want:?}");
        }
    }
}

#[test]
fn exported_detector_matches_burn_in_tract() {
    let _one = common::one_run_at_a_time();
    let device = Device::flex();
    device.seed(5);
    let size = 96u32;
    // A few training-mode forwards move BatchNorm statistics off their defaults.
    let m = DetectorConfig::new(3).with_neck_width(16).with_head_depth(1).init(&device).train();
    for k in 0..2 {
        let x = Tensor::<4>::random(
            [2, 3, 64, 64],
            burn::tensor::Distribution::Normal(k as f64 * 0.2, 1.0),
            &device.clone().autodiff(),
        );
        let _ = m.forward(x);
    }
    let m = m.valid();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("det.onnx");
    export_detector(&m, size, &path).unwrap();
    let mut card = ModelCard::new(
        Task::Detect,
        vec!["a".into(), "b".into(), "c".into()],
        InputSpec { name: "input".into(), shape: vec![-1, 3, size as i64, size as i64] },
        DetectConfig { size, ..DetectConfig::new(sesame()) }.preprocess(),
        Decode::Yolox { output: "output".into(), strides: STRIDES.to_vec(), logits: false },
    );
    card.write_for(&path).unwrap();
    let s = size as usize;
    for k in 0..2 {
        let input: Vec<f32> = (0..3 * s * s).map(|i| (((i + k * 31) * 7919 % 256) as f32 / 128.0) - 1.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, s, s]), &device);
        let raw = m.forward(x);
        assert_eq!(raw.dims(), [1, anchor_count(size), 8]);
        // The export sigmoids objectness and class scores.
        let r = raw.dims()[2];
        let mut want = to_host(raw);
        for (i, v) in want.iter_mut().enumerate() {
            if i % r >= 4 {
                *v = 1.0 / (1.0 + (-*v).exp());
            }
        }
        let engine = Engine::load(&path).unwrap();
        let got = engine.session().unwrap().run_tensor(&input).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "burn vs tract max abs diff {diff}");
    }
}

#[test]
fn a_short_run_writes_every_output_and_evaluates() {
    let _one = common::one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = DetectConfig::new(sesame());
    cfg.weights = Some(weights());
    cfg.size = 128;
    cfg.neck_width = 32;
    cfg.head_depth = 1;
    cfg.unfreeze_from = 14;
    cfg.epochs = 2;
    cfg.batch = 4;
    cfg.close_mosaic = 1;
    let s = train_detect(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    for f in [
        "model.onnx",
        "model.json",
        "metrics.csv",
        "report.md",
        "loss.png",
        "map.png",
        "config.json",
        "checkpoints/best.bpk",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(s.history.len(), 2);
    assert!(s.history[0].mosaic && !s.history[1].mosaic);
    assert!((0.0..=1.0).contains(&s.map50) && s.map50 >= s.map50_95);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,lr,train_loss,valid_loss,map50,map50_95,count_mae"), "{csv}");
    let card = ModelCard::load_verified(&out.join("model.onnx")).unwrap();
    assert_eq!(card.classes, vec!["crop".to_string(), "weed".to_string()]);
    assert!(card.metrics.contains_key("valid_map50_95"));
    // The runtime runs the export with its card.
    let engine = Engine::load(&out.join("model.onnx")).unwrap();
    assert_eq!(engine.card().input.shape, vec![-1, 3, 128, 128]);
    // A finished run is never overwritten; export of its checkpoint works.
    assert!(train_detect(&cfg, &out, false, &Progress { quiet: true }).unwrap_err().to_string().contains("--resume"));
    let again = dir.path().join("again.onnx");
    fieldkit_trainer::train::export_run(&out, fieldkit_trainer::train::Which::Last, None, &again).unwrap();
    assert!(ModelCard::load_verified(&again).is_ok());
}

#[test]
fn bad_input_names_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DetectConfig::new(dir.path().join("missing.yaml"));
    cfg.weights = Some(weights());
    let e = train_detect(&cfg, &dir.path().join("r"), false, &Progress { quiet: true }).unwrap_err().to_string();
    assert!(e.contains("missing.yaml"), "{e}");
    let mut cfg = DetectConfig::new(sesame());
    cfg.weights = Some(weights());
    cfg.valid_split = "test".into();
    let e = train_detect(&cfg, &dir.path().join("r2"), false, &Progress { quiet: true }).unwrap_err().to_string();
    assert!(e.contains("test"), "{e}");
}
