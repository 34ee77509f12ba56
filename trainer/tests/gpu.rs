//! The GPU training backend (issue 25) on whatever wgpu adapter the machine has. CI installs
//! Mesa's software Vulkan (lavapipe) and sets `FIELDKIT_REQUIRE_GPU=1`, so there these tests
//! run; elsewhere, without an adapter, each says why it skipped.
//!
//! The same weights on the CPU backend (flex) and on the GPU give the same outputs and the same
//! step, for the classifier and the detector; a short training run on the GPU learns, and its
//! exported ONNX computes in tract what burn computes on the GPU.
#![cfg(feature = "wgpu")]

mod common;
use common::{input, tiny_config, vendored_weights, write_dataset};

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use fieldkit_runtime::Engine;
use fieldkit_trainer::model::yolox::STRIDES;
use fieldkit_trainer::model::{to_host, DetectorConfig};
use fieldkit_trainer::train::checkpoint::{load_module, save_module};
use fieldkit_trainer::train::classify::optimizer_for;
use fieldkit_trainer::train::detect::assign::{Anchors, GtBox};
use fieldkit_trainer::train::detect::loss::{yolox_loss, BoxLoss};
use fieldkit_trainer::train::step::{Input, Stepper};
use fieldkit_trainer::train::{train_classify, OptimizerKind, Progress};
use fieldkit_trainer::weights::load_backbone;
use fieldkit_trainer::DeviceKind;

/// The wgpu device, or `None` (with the reason on stderr) where the machine has no adapter and
/// `FIELDKIT_REQUIRE_GPU` is not set.
fn gpu() -> Option<Device> {
    match DeviceKind::Wgpu.device() {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("FIELDKIT_REQUIRE_GPU").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("FIELDKIT_REQUIRE_GPU is set, but: {e}"),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// Outputs, losses and updated weights agree within this (f32 kernels sum in other orders on
/// the two backends).
const TOL: f32 = 1e-4;

/// The model's parameters by name (BatchNorm running statistics included), on the host.
fn parameters<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<f32>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let (name, _, _, _, bytes) = t.into_parts().unwrap();
            (name, bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        })
        .collect()
}

/// The parameter that differs most between two models of one shape, and by how much.
fn largest_difference(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> (f32, String) {
    a.iter()
        .map(|(k, v)| (max_diff(v, &b[k]), k.clone()))
        .fold((0.0, String::new()), |m, d| if d.0 > m.0 { d } else { m })
}

/// What one training step did on `device`: the eval outputs before it, the loss, the updated
/// parameters and the eval outputs after it.
struct Step {
    before: Vec<f32>,
    loss: f64,
    after: Vec<f32>,
    params: BTreeMap<String, Vec<f32>>,
}

fn compare(cpu: &Step, gpu: &Step, start: &BTreeMap<String, Vec<f32>>) {
    assert!(max_diff(&cpu.before, &gpu.before) <= TOL, "step 0 differs by {}", max_diff(&cpu.before, &gpu.before));
    assert!((cpu.loss - gpu.loss).abs() <= TOL as f64 * cpu.loss.abs().max(1.0), "loss {} vs {}", cpu.loss, gpu.loss);
    // The step moved the weights (else the checks below would only repeat the first).
    let (moved, _) = largest_difference(start, &cpu.params);
    assert!(moved > 1e-2, "the step changed no weight by more than {moved}");
    // The updates agree to 1 % of the largest: a gradient is a sum over the batch and the
    // pixels, which the backends order differently, and the first trainable depthwise layer's
    // gradients pass through train-mode BatchNorm of a small batch (0.2 % apart here).
    let (d, name) = largest_difference(&cpu.params, &gpu.params);
    assert!(
        d <= TOL.max(0.01 * moved),
        "after one step {name} differs by {d} (the step moved weights by up to {moved})"
    );
    // The outputs of the stepped models, to the same 1 % of what the step changed in them.
    let changed = max_diff(&cpu.before, &cpu.after);
    let d = max_diff(&cpu.after, &gpu.after);
    assert!(
        d <= TOL.max(0.01 * changed),
        "outputs after one step differ by {d} (the step changed them by up to {changed})"
    );
}

/// A classifier as `train classify --strategy partial` trains it (ImageNet backbone,
/// `features[14..]` trainable, the trainer's own `Stepper`: train-mode BatchNorm,
/// cross-entropy, backward, SGD): on the GPU its outputs, loss and updated weights equal the
/// CPU backend's. The earliest layers are left frozen as in fine-tuning: their gradients
/// through train-mode BatchNorm on a tiny batch are ill-conditioned on every backend (flex and
/// ndarray, both CPU, part by 3 % there).
#[test]
fn a_classifier_step_on_the_gpu_equals_the_cpu_step() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path());
    // Dropout draws its masks from each backend's own generator: the same seed gives other
    // masks on the GPU, so it is off for the comparison.
    cfg.dropout = 0.0;
    let cpu = Device::flex();
    cpu.seed(1);
    let file = dir.path().join("m.bpk");
    let mut start = cfg.init_model(3, &cpu);
    load_backbone(&mut start, &cfg.weights.clone().unwrap()).unwrap();
    save_module(&start, &file).unwrap();
    let (n, s) = (8, 64);
    let x = input(n, s);
    let run = |device: &Device| -> Step {
        let mut model = cfg.init_model(3, device);
        load_module(&mut model, &file).unwrap();
        let batch = || Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, s, s]), device);
        let before = to_host(model.valid().forward(batch()));
        let mut stepper = Stepper::new(device, &cfg, None);
        let mut optim = optimizer_for(OptimizerKind::Sgd, 0.0, 0.9, None);
        let images = Input::Images { pixels: x.clone(), size: s };
        let labels = vec![0i64, 1, 2, 1, 0, 2, 2, 1];
        let (model, loss) = stepper.step(model.train(), &mut optim, &cfg, images, labels, 0.05, cfg.unfreeze_from);
        let model = model.valid();
        Step { before, loss, after: to_host(model.forward(batch())), params: parameters(&model) }
    };
    compare(&run(&cpu), &run(&gpu), &parameters(&start));
}

/// The detector the same way (ImageNet backbone, `features[7..]`, neck and heads trainable):
/// raw head outputs, the YOLOX loss (SimOTA assignment on the device's predictions), one SGD
/// step, the updated weights and the outputs after it.
#[test]
fn a_detector_step_on_the_gpu_equals_the_cpu_step() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    cpu.seed(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.bpk");
    let config = DetectorConfig::new(2).with_neck_width(16).with_head_depth(1);
    let mut start = config.init(&cpu);
    load_backbone(&mut start.backbone, &vendored_weights()).unwrap();
    save_module(&start, &file).unwrap();
    let (n, s) = (2, 128);
    let x = input(n, s);
    let boxes = vec![
        vec![GtBox { class: 0, bbox: [8.0, 12.0, 60.0, 80.0] }, GtBox { class: 1, bbox: [72.0, 60.0, 120.0, 116.0] }],
        vec![GtBox { class: 1, bbox: [20.0, 24.0, 100.0, 88.0] }],
    ];
    let anchors = Anchors::new(s as u32, &STRIDES);
    let run = |device: &Device| -> Step {
        let mut model = config.init(device);
        load_module(&mut model, &file).unwrap();
        let batch = || Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, s, s]), device);
        let before = to_host(model.valid().forward(batch()));
        let model = model.train().with_trainable_from(7);
        let (loss, parts) = yolox_loss(model.forward(batch().autodiff()), &boxes, &anchors, BoxLoss::Iou, false);
        assert!(parts.positives > 0, "{parts:?}");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optimizer_for(OptimizerKind::Sgd, 0.0, 0.9, None).step(0.01, model, grads).valid();
        Step { before, loss: parts.total, after: to_host(model.forward(batch())), params: parameters(&model) }
    };
    compare(&run(&cpu), &run(&gpu), &parameters(&start));
}

/// `train_classify` on the GPU end to end: the loss falls, the colours are learnt, and the
/// exported ONNX, run in tract, matches the best checkpoint run by burn on the GPU.
#[test]
fn a_run_on_the_gpu_learns_and_exports_what_it_computes() {
    let _one = common::one_run_at_a_time();
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 16), ("valid", 6)]);
    let mut cfg = tiny_config(&dir.path().join("data"));
    cfg.device = DeviceKind::Wgpu;
    let out = dir.path().join("run");
    let s = train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    let first = s.history.first().unwrap().train_loss;
    let last = s.history.last().unwrap().train_loss;
    assert!(last < first, "training loss did not fall on the GPU: {first} -> {last}");
    assert!(s.top1 > 0.9, "three colour classes should be learnable on the GPU too: {:#?}", s.history);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["device"], "wgpu");

    let gpu = gpu().unwrap();
    let mut model = cfg.init_model(3, &gpu);
    load_module(&mut model, &out.join("checkpoints/best.bpk")).unwrap();
    let x = input(2, 32);
    let burn = to_host(model.valid().forward(Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 32, 32]), &gpu)));
    let engine = Engine::load(&out.join("model.onnx")).unwrap();
    let mut session = engine.session().unwrap();
    let mut tract = Vec::new();
    for one in x.chunks(3 * 32 * 32) {
        tract.extend(session.run_tensor(one).unwrap());
    }
    assert!(max_diff(&burn, &tract) <= TOL, "tract {tract:?} vs burn on the GPU {burn:?}");
}
