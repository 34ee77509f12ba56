//! The training loop end to end on tiny synthetic data (default tier): checkpoints reload
//! bit-exactly, the exported ONNX matches burn in tract, a run writes every output and
//! learns, and bad input fails with a message naming the culprit.

use std::path::Path;

mod common;
use common::{input, tiny_config, write_dataset};

use burn::prelude::*;
use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::preprocess::Preprocess;
use fieldkit_runtime::Engine;
use fieldkit_trainer::export::export_classifier;
use fieldkit_trainer::export::tta::Tta;
use fieldkit_trainer::model::{MobileNetV2, MobileNetV2Config};
use fieldkit_trainer::train::checkpoint::{load_module, save_module};
use fieldkit_trainer::train::{train_classify, Progress};
use fieldkit_trainer::weights::load_backbone;
use image::RgbImage;

/// A model whose BatchNorm statistics are not the defaults (a few training steps).
fn trained_tiny(classes: usize) -> MobileNetV2 {
    let device = Device::flex();
    let mut m = MobileNetV2Config::new(classes).with_width(0.35).init(&device).train();
    for k in 0..3 {
        let x = Tensor::<4>::random(
            [4, 3, 32, 32],
            burn::tensor::Distribution::Normal(k as f64 * 0.1, 1.0),
            &device.clone().autodiff(),
        );
        let _ = m.forward(x); // BatchNorm running statistics move in training mode
        m = m.clone();
    }
    m.valid()
}

/// The ImageNet backbone with a seeded `classes`-way head, eval mode. A randomly initialised
/// network at these sizes answers every input alike (its activations die), so an export check
/// on it would only see the head's bias.
fn imagenet_classifier(classes: usize) -> MobileNetV2 {
    let device = Device::flex();
    device.seed(11);
    let mut m = MobileNetV2Config::new(classes).init(&device);
    load_backbone(&mut m, &common::vendored_weights()).unwrap();
    m.valid()
}

#[test]
fn checkpoint_round_trip_is_exact() {
    let _one = common::one_run_at_a_time();
    let m = trained_tiny(3);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/m.bpk");
    save_module(&m, &p).unwrap();
    let mut back = MobileNetV2Config::new(3).with_width(0.35).init(&Device::flex());
    load_module(&mut back, &p).unwrap();
    let x = || Tensor::<1>::from_floats(input(2, 32).as_slice(), &Device::flex()).reshape([2, 3, 32, 32]);
    let a: Vec<f32> = m.forward(x()).into_data().try_to_vec().unwrap();
    let b: Vec<f32> = back.valid().forward(x()).into_data().try_to_vec().unwrap();
    assert_eq!(a, b);
    // Another class count does not fit.
    let mut other = MobileNetV2Config::new(5).with_width(0.35).init(&Device::flex());
    let e = load_module(&mut other, &p).unwrap_err().to_string();
    assert!(e.contains("m.bpk"), "{e}");
    assert!(load_module(&mut other, &dir.path().join("none.bpk")).is_err());
}

#[test]
fn exported_onnx_matches_burn_in_tract() {
    let _one = common::one_run_at_a_time();
    let m = imagenet_classifier(4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    export_classifier(&m, 64, Tta::None, &path).unwrap();
    write_classifier_card(&path, 4, 64);
    let engine = Engine::load(&path).unwrap();
    let mut s = engine.session().unwrap();
    let x = input(1, 64);
    let ours = s.run_tensor(&x).unwrap();
    let burn: Vec<f32> = m
        .forward(Tensor::<1>::from_floats(x.as_slice(), &Device::flex()).reshape([1, 3, 64, 64]))
        .into_data()
        .try_to_vec()
        .unwrap();
    let diff = ours.iter().zip(&burn).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(ours.len(), 4);
    assert!(diff <= 1e-4, "tract vs burn max abs diff {diff}");
}

/// The card of a `classes`-way classifier taking `size` px exported at `path`.
fn write_classifier_card(path: &Path, classes: usize, size: i64) {
    let mut card = ModelCard::new(
        Task::Classify,
        (0..classes).map(|i| format!("c{i}")).collect(),
        InputSpec { name: "input".into(), shape: vec![-1, 3, size, size] },
        Preprocess::imagenet_stretch(size as u32),
        Decode::Softmax { output: "logits".into() },
    );
    card.write_for(path).unwrap();
}

/// Test-time views in the graph: tract's logits are burn's logits averaged over the image's
/// flipped / transposed views. (That a batch's images do not mix in the view-major stack is
/// checked in onnxruntime by CI's export parity, batch 2; the runtime here runs batch 1.)
#[test]
fn exported_test_time_views_average_the_views_in_tract() {
    let _one = common::one_run_at_a_time();
    let m = imagenet_classifier(4);
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let x = input(1, 64);
    let batch = || Tensor::<1>::from_floats(x.as_slice(), &device).reshape([1, 3, 64, 64]);
    let logits = |t: Tensor<4>| -> Vec<f32> { m.forward(t).into_data().try_to_vec().unwrap() };
    let one = logits(batch());
    for (tta, views) in [
        (Tta::Flip, vec![batch(), batch().flip([3])]),
        (
            Tta::D4,
            [false, true]
                .into_iter()
                .flat_map(|t| {
                    let turn = move |v: Tensor<4>| if t { v.swap_dims(2, 3) } else { v };
                    [turn(batch()), turn(batch().flip([3])), turn(batch().flip([2])), turn(batch().flip([2, 3]))]
                })
                .collect(),
        ),
    ] {
        let n = views.len() as f32;
        let mut want = vec![0f32; 4];
        for v in views {
            for (w, l) in want.iter_mut().zip(logits(v)) {
                *w += l / n;
            }
        }
        let path = dir.path().join(format!("{}.onnx", tta.name()));
        export_classifier(&m, 64, tta, &path).unwrap();
        write_classifier_card(&path, 4, 64);
        let ours = Engine::load(&path).unwrap().session().unwrap().run_tensor(&x).unwrap();
        assert_eq!(ours.len(), 4);
        let diff = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "{tta:?}: tract vs burn's view average, max abs diff {diff}");
        // The views change the answer, so the comparison above can tell them apart.
        let moved = one.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(moved > 1e-3, "{tta:?}: the views moved the logits by only {moved}");
    }
}

#[test]
fn trains_writes_every_output_and_refuses_to_overwrite() {
    let _one = common::one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 16), ("valid", 6)]);
    let cfg = tiny_config(&dir.path().join("data"));
    let out = dir.path().join("run");
    let s = train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    for f in [
        "model.onnx",
        "model.json",
        "metrics.csv",
        "report.md",
        "config.json",
        "loss.png",
        "accuracy.png",
        "confusion.png",
        "checkpoints/best.bpk",
        "checkpoints/last.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(s.history.len(), cfg.epochs);
    let first = s.history.first().unwrap().train_loss;
    let last = s.history.last().unwrap().train_loss;
    assert!(last < first, "training loss did not fall: {first} -> {last}");
    assert!(s.top1 > 0.9, "three colour classes should be learnable, top1 {}: {:#?}", s.top1, s.history);
    let card = ModelCard::load_verified(&out.join("model.onnx")).unwrap();
    assert_eq!(card.classes, vec!["blue", "green", "red"]);
    assert_eq!(card.metrics["valid_top1"], s.top1);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,lr,train_loss,valid_loss,top1,macro_f1"));
    assert_eq!(csv.lines().count(), 5);
    // A second run into the same directory must not clobber the first.
    let err = train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    // Resuming a finished run just re-exports.
    let again = train_classify(&cfg, &out, true, &Progress { quiet: true }).unwrap();
    assert_eq!(again.history, s.history);
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data, &[("train", 3), ("valid", 2)]);
    let q = Progress { quiet: true };
    // A valid class the training split lacks.
    std::fs::create_dir_all(data.join("valid/purple")).unwrap();
    RgbImage::new(8, 8).save(data.join("valid/purple/x.png")).unwrap();
    let e = train_classify(&tiny_config(&data), &dir.path().join("o1"), false, &q).unwrap_err().to_string();
    assert!(e.contains("purple"), "{e}");
    std::fs::remove_dir_all(data.join("valid/purple")).unwrap();
    // A corrupt image.
    std::fs::write(data.join("train/red/broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = train_classify(&tiny_config(&data), &dir.path().join("o2"), false, &q).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    std::fs::remove_file(data.join("train/red/broken.png")).unwrap();
    // Weights that are not a MobileNetV2.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let mut c = tiny_config(&data);
    c.weights = Some(junk);
    let e = train_classify(&c, &dir.path().join("o3"), false, &q).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors"), "{e}");
    // A missing data directory.
    let e = train_classify(&tiny_config(&dir.path().join("nowhere")), &dir.path().join("o4"), false, &q)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
}

/// `--clip-grad 0` must train without clipping (issue 21): it once became a zero norm that
/// scaled every gradient to nothing, so the run "trained" for its epochs and learned nothing.
/// A config.json carrying 0 is read the same way.
#[test]
fn clip_grad_zero_trains_unclipped() {
    let _one = common::one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 16), ("valid", 6)]);
    let mut cfg = tiny_config(&dir.path().join("data"));
    cfg.clip_grad = Some(0.0);
    let s = train_classify(&cfg, &dir.path().join("run"), false, &Progress { quiet: true }).unwrap();
    let (first, last) = (s.history.first().unwrap().train_loss, s.history.last().unwrap().train_loss);
    assert!(last < 0.9 * first, "training loss did not fall with --clip-grad 0: {first} -> {last}");
    assert!(s.top1 > 0.9, "three colour classes should be learnable, top1 {}: {:#?}", s.top1, s.history);
}

/// `--holdout`: part of train is held out by whole photos, never trained on, and the exported
/// model is scored on it at the end (summary, card, report) beside valid.
#[test]
fn holdout_is_left_out_of_training_and_scored_at_the_end() {
    let _one = common::one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 16), ("valid", 6)]);
    let mut cfg = tiny_config(&dir.path().join("data"));
    cfg.epochs = 2;
    cfg.holdout = 0.25;
    let out = dir.path().join("run");
    let s = train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    let h = s.holdout.expect("a held-out score");
    assert!((4..=24).contains(&h.num_samples), "{} of 48 train images held out at 0.25", h.num_samples);
    let card = ModelCard::load_verified(&out.join("model.onnx")).unwrap();
    assert_eq!(card.metrics["holdout_top1"], h.top1);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("held-out part of train"), "{report}");
    let listed = std::fs::read_to_string(out.join("holdout.txt")).unwrap();
    assert_eq!(listed.lines().count(), h.num_samples);
    // `fieldkit export` takes the same images out: the card names the same training data.
    let again = dir.path().join("exported.onnx");
    let exported =
        fieldkit_trainer::train::export_run(&out, fieldkit_trainer::train::Which::Best, None, &again).unwrap();
    assert_eq!(exported.data_fingerprint, card.data_fingerprint);
    let cfg_json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["holdout"], 0.25);
}

/// `--ema`: the checkpoint carries the weight average and its update count, and `--resume`
/// continues both (the count keeps pace with the optimiser steps).
#[test]
fn ema_is_checkpointed_and_resumed() {
    let _one = common::one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 8), ("valid", 4)]);
    let mut cfg = tiny_config(&dir.path().join("data"));
    cfg.epochs = 1;
    cfg.ema = 1.0;
    let out = dir.path().join("run");
    let state = |out: &Path| -> serde_json::Value {
        let last: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("checkpoints/last.json")).unwrap()).unwrap();
        let d = out.join("checkpoints").join(last["dir"].as_str().unwrap());
        assert!(d.join("ema.bpk").is_file(), "{} holds no ema.bpk", d.display());
        serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap()
    };
    train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    let s1 = state(&out);
    assert!(s1["step"].as_u64().unwrap() > 0);
    assert_eq!(s1["ema_updates"], s1["step"]);
    // Two more epochs from the checkpoint: the average goes on from its saved count.
    let mut longer = cfg.clone();
    longer.epochs = 3;
    std::fs::write(out.join("config.json"), serde_json::to_vec(&longer).unwrap()).unwrap();
    let s = train_classify(&longer, &out, true, &Progress { quiet: true }).unwrap();
    assert_eq!(s.history.len(), 3);
    let s3 = state(&out);
    assert_eq!(s3["ema_updates"], s3["step"]);
    assert_eq!(s3["step"].as_u64().unwrap(), 3 * s1["step"].as_u64().unwrap());
}
