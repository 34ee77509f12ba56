//! The segmenter (LR-ASPP on MobileNetV2): its ONNX export matches burn in tract.

mod common;

use burn::prelude::*;
use fieldkit_runtime::{Engine, LoadOptions};
use fieldkit_trainer::export::export_segmenter;
use fieldkit_trainer::model::{to_host, SegmenterConfig};

/// A non-square input (64x96), BatchNorm statistics moved off their defaults by a few
/// training-mode forwards: burn's logits and tract's on the exported file agree to 1e-4, for
/// LR-ASPP alone and with the stride-4 decoder.
#[test]
fn export_matches_burn_in_tract() {
    let _one = common::one_run_at_a_time();
    for fine in [false, true] {
        export_matches(fine);
    }
}

fn export_matches(fine: bool) {
    let device = Device::flex();
    device.seed(3);
    let m = SegmenterConfig::new(3).with_inter(16).with_fine(fine).init(&device).train();
    for k in 0..2 {
        let x = Tensor::<4>::random(
            [2, 3, 64, 96],
            burn::tensor::Distribution::Normal(k as f64 * 0.2, 1.0),
            &device.clone().autodiff(),
        );
        let _ = m.forward(x);
    }
    let m = m.valid();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.onnx");
    export_segmenter(&m, 64, 96, &path).unwrap();
    let engine = Engine::load_bare(&path, &LoadOptions::default()).unwrap();
    let n = 3 * 64 * 96;
    for k in 0..2 {
        let input: Vec<f32> = (0..n).map(|i| (((i + k * 31) * 7919 % 256) as f32 / 128.0) - 1.0).collect();
        let want = to_host(m.forward(Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, 64, 96]), &device)));
        let got = engine.session().unwrap().run_tensor(&input).unwrap();
        assert_eq!(got.len(), want.len(), "[1, 3, 64, 96] logits");
        let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "burn vs tract max abs diff {diff} (stride-4 decoder: {fine})");
    }
    assert!(export_segmenter(&m, 64, 90, &path).unwrap_err().to_string().contains("does not divide by 32"));
}

/// Two 64-px images: a red square (class 1) and a blue bar (class 2) on a noisy grey field
/// (class 0), and a border of ignored pixels (255).
fn synthetic_batch() -> (Vec<f32>, Vec<Vec<u8>>) {
    use rand::Rng;
    let mut rng = fieldkit_trainer::data::sample_rng(5, 0, 0);
    let layouts: [[(u8, [usize; 4]); 2]; 2] =
        [[(1, [8, 8, 30, 30]), (2, [36, 4, 44, 60])], [(2, [4, 40, 60, 48]), (1, [30, 6, 58, 34])]];
    let colours = [[0.0f32, 0.0, 0.0], [0.9, 0.15, 0.15], [0.15, 0.25, 0.9]];
    let (s, plane) = (64usize, 64 * 64);
    let mut pixels = vec![0f32; 2 * 3 * plane];
    let mut masks = vec![vec![0u8; plane]; 2];
    for (b, layout) in layouts.iter().enumerate() {
        for i in 0..plane {
            let v: f32 = rng.random_range(0.4..0.6);
            for c in 0..3 {
                pixels[(b * 3 + c) * plane + i] = v;
            }
        }
        for &(class, [x1, y1, x2, y2]) in layout {
            for y in y1..y2 {
                for x in x1..x2 {
                    masks[b][y * s + x] = class;
                    for c in 0..3 {
                        pixels[(b * 3 + c) * plane + y * s + x] = colours[class as usize][c];
                    }
                }
            }
        }
        for (i, m) in masks[b].iter_mut().enumerate() {
            let (y, x) = (i / s, i % s);
            if y == 0 || x == 0 || y == s - 1 || x == s - 1 {
                *m = 255;
            }
        }
    }
    (pixels.iter().map(|v| (v - 0.45) / 0.25).collect(), masks)
}

/// Overfitting one batch with CE + Dice from the ImageNet backbone: the loss falls to a
/// fraction of its start and the model's last forward labels the batch's pixels (a loss that
/// ignored the masks, or mixed up the one-hot layout, could not pass). That forward is in
/// training mode: the eval-mode model on a batch of two reads BatchNorm statistics that
/// differ between CPUs' cache geometries (mIoU 0.93 vs 0.82 here), the loss does not.
#[test]
fn overfitting_one_batch_recovers_its_masks() {
    let _one = common::one_run_at_a_time();
    use burn::optim::GradientsParams;
    use fieldkit_core::metrics::SegConfusion;
    use fieldkit_trainer::train::classify::optimizer_for;
    use fieldkit_trainer::train::segment::{seg_loss, SegLoss, SegTarget};
    use fieldkit_trainer::train::OptimizerKind;
    let device = Device::flex();
    device.seed(9);
    let weights = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors");
    let mut model = SegmenterConfig::new(3).with_inter(32).init(&device);
    fieldkit_trainer::weights::load_backbone(&mut model.backbone, &weights).unwrap();
    let mut model = model.train();
    let (pixels, masks) = synthetic_batch();
    let ad = device.clone().autodiff();
    let target = SegTarget::new(&masks, 3, 64, 64, &ad);
    let mut optim = optimizer_for(OptimizerKind::AdamW, 0.0, 0.9, Some(10.0));
    let mut losses = Vec::new();
    let mut pred = Vec::new();
    for _ in 0..100 {
        let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [2, 3, 64, 64]), &ad);
        let logits = model.forward(x);
        pred = to_host(logits.clone().inner().argmax(1).float()).iter().map(|v| *v as u8).collect();
        let loss = seg_loss(logits, &target, Some(&[1.0, 2.0, 2.0]), SegLoss::CeDice);
        losses.push(loss.clone().into_scalar::<f64>());
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, g);
    }
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[97..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.25 * first, "loss did not fall: {losses:?}");
    let mut cm = SegConfusion::new(3, Some(255));
    for b in 0..2 {
        cm.add(&masks[b], &pred[b * 4096..(b + 1) * 4096]).unwrap();
    }
    let r = cm.report(&["field".into(), "square".into(), "bar".into()]).unwrap();
    eprintln!("loss {first:.3} -> {last:.3}; mIoU {:.3}, pixel accuracy {:.3}", r.miou, r.pixel_acc);
    assert!(r.miou > 0.85 && r.pixel_acc > 0.95, "{r:?}");
}

/// `train_segment` end to end on the vendored peanut photos: two epochs from the ImageNet
/// backbone write config.json, metrics.csv and curves, checkpoints, model.onnx + card; tract's
/// mIoU on the exported model equals burn's at the best epoch; train photos held out
/// (`--holdout`) are scored beside valid and listed; `--resume` of a finished run trains no
/// more.
#[test]
fn a_short_run_trains_exports_and_scores_in_tract() {
    let _one = common::one_run_at_a_time();
    use fieldkit_trainer::train::segment::{train_segment, SegmentConfig};
    use fieldkit_trainer::train::Progress;
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/data/peanut-mini");
    let mut cfg = SegmentConfig::new(data);
    cfg.weights = Some(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors"),
    );
    cfg.size = [128, 96];
    cfg.inter = 16;
    cfg.train.epochs = 2;
    cfg.train.batch = 4;
    cfg.train.workers = 2;
    cfg.train.holdout = 0.34;
    let out = dir.path().join("run");
    let progress = Progress { quiet: true };
    let s = train_segment(&cfg, &out, false, &progress).unwrap();
    for f in ["config.json", "metrics.csv", "loss.png", "miou.png", "model.onnx", "model.json", "valid_metrics.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert_eq!(s.history.len(), 2);
    let best = s.history.iter().find(|m| Some(m.epoch) == s.best_epoch).unwrap();
    assert!((best.miou - s.valid.miou).abs() < 1e-3, "burn {} vs tract {}", best.miou, s.valid.miou);
    assert!(s.valid.per_class.iter().all(|c| c.iou.is_some()) && s.valid.pixels == 3 * 480 * 360);
    let card = fieldkit_core::ModelCard::load_verified(&out.join("model.onnx")).unwrap();
    assert_eq!(card.task, fieldkit_core::Task::Segment);
    assert_eq!(card.metrics.get("valid_miou").copied(), Some(s.valid.miou));
    let held = s.holdout.as_ref().expect("holdout scored");
    assert_eq!(card.metrics.get("holdout_miou").copied(), Some(held.miou));
    // The share is drawn per photo by a seeded hash, so about a third, not exactly two.
    let listed = std::fs::read_to_string(out.join("holdout.txt")).unwrap();
    let n = listed.lines().count() as u64;
    assert!((1..6).contains(&n), "{listed}");
    assert_eq!(held.pixels, n * 480 * 360);
    assert!(out.join("holdout_metrics.json").exists());
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // `fieldkit export` of the best checkpoint gives the same model and card.
    let exported = dir.path().join("exported.onnx");
    let card =
        fieldkit_trainer::train::export_run(&out, fieldkit_trainer::train::Which::Best, None, &exported).unwrap();
    assert_eq!(card.task, fieldkit_core::Task::Segment);
    let engine = fieldkit_runtime::Engine::load(&exported).unwrap();
    let data = fieldkit_core::dataset::masks::MaskDataset::open(&cfg.data).unwrap();
    let again = fieldkit_runtime::eval::eval_segmenter(&engine, &data, "valid", 2).unwrap();
    assert_eq!(again.miou, s.valid.miou);
    let again = train_segment(&cfg, &out, true, &progress).unwrap();
    assert_eq!(again.history.len(), 2);
    // A fresh run into a used folder is refused.
    assert!(train_segment(&cfg, &out, false, &progress).is_err());
}
