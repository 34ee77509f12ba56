//! The GPU training backend (issue 25) on whatever wgpu adapter the machine has. CI installs
//! Mesa's software Vulkan (lavapipe) and sets `FIELDKIT_REQUIRE_GPU=1`, so there these tests
//! run; elsewhere, without an adapter, each says why it skipped.
//!
//! The same weights on the CPU backend (flex) and on the GPU give the same outputs and the same
//! step, for the classifier, the detector and the segmenter; a short training run on the GPU learns, and its
//! exported ONNX computes in tract what burn computes on the GPU.
#![cfg(feature = "wgpu")]

mod common;
use common::{input, tiny_config, vendored_weights, write_dataset};

use std::collections::BTreeMap;

use burn::module::{ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::{DType, FloatDType};
use fieldkit_runtime::Engine;
use fieldkit_trainer::model::precision::{to_dtype, to_f32};
use fieldkit_trainer::model::yolox::STRIDES;
use fieldkit_trainer::model::{to_host, DetectorConfig, SegmenterConfig};
use fieldkit_trainer::train::checkpoint::{load_module, save_module};
use fieldkit_trainer::train::classify::optimizer_for;
use fieldkit_trainer::train::detect::assign::{Anchors, GtBox};
use fieldkit_trainer::train::detect::loss::{yolox_loss, BoxLoss};
use fieldkit_trainer::train::parallel::Replicas;
use fieldkit_trainer::train::precision::{Amp, LossScale, Precision};
use fieldkit_trainer::train::segment::{seg_loss, SegLoss, SegTarget};
use fieldkit_trainer::train::step::{Input, Stepper};
use fieldkit_trainer::train::{train_classify, ClassifyConfig, OptimizerKind, Progress};
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

/// The wgpu device where its adapter computes in f16 (lavapipe does), else `None` saying why.
fn gpu_with_f16() -> Option<Device> {
    let gpu = gpu()?;
    if !gpu.supports_dtype(FloatDType::F16) {
        eprintln!("skipped: this adapter has no f16");
        return None;
    }
    Some(gpu)
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
    eprintln!(
        "step 0 outputs differ by {:.2e}; after one step {name} differs most, by {d:.2e} (the step moved weights by up to {moved:.3})",
        max_diff(&cpu.before, &gpu.before)
    );
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
        let (model, loss) =
            stepper.step(model.train(), &mut optim, &mut Amp::f32(), &cfg, images, labels, 0.05, cfg.unfreeze_from);
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

/// The segmenter (LR-ASPP with the stride-4 decoder, ImageNet backbone, `features[7..]` and
/// the head trainable) the same way: logits at the input size, cross-entropy + Dice, one SGD
/// step. Its three bilinear upsamplings are differentiated on the GPU (burn 0.22.1's own
/// `interpolate` has no backward there; `model::resize` is written as matrix products).
#[test]
fn a_segmenter_step_on_the_gpu_equals_the_cpu_step() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    cpu.seed(3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.bpk");
    let config = SegmenterConfig::new(3).with_inter(16).with_fine(true);
    let mut start = config.init(&cpu);
    load_backbone(&mut start.backbone, &vendored_weights()).unwrap();
    save_module(&start, &file).unwrap();
    let (n, s) = (2, 128);
    let x = input(n, s);
    // Class 1 in a square, class 2 in a band, background elsewhere; a few ignored pixels.
    let masks: Vec<Vec<u8>> = (0..n)
        .map(|b| {
            (0..s * s)
                .map(|i| {
                    let (r, c) = (i / s, i % s);
                    match () {
                        _ if r == c => 255,
                        _ if (16 + 16 * b..80 + 16 * b).contains(&r) && (20..84).contains(&c) => 1,
                        _ if (96..116).contains(&r) => 2,
                        _ => 0,
                    }
                })
                .collect()
        })
        .collect();
    let run = |device: &Device| -> Step {
        let mut model = config.init(device);
        load_module(&mut model, &file).unwrap();
        let batch = || Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, s, s]), device);
        let before = to_host(model.valid().forward(batch()));
        let model = model.train().with_trainable_from(7);
        let ad = device.clone().autodiff();
        let target = SegTarget::new(&masks, 3, s, s, &ad);
        let loss = seg_loss(model.forward(batch().autodiff()), &target, None, SegLoss::CeDice);
        let value = loss.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optimizer_for(OptimizerKind::Sgd, 0.0, 0.9, None).step(0.05, model, grads).valid();
        Step { before, loss: value, after: to_host(model.forward(batch())), params: parameters(&model) }
    };
    compare(&run(&cpu), &run(&gpu), &parameters(&start));
}

/// The second device of a data-parallel pair: wgpu's first enumerated device (`--devices
/// wgpu,wgpu:0`). On lavapipe it is the same adapter as the default device but a device of its
/// own to burn (its own queue and memory), which is the pair CI can make.
fn second_gpu() -> Device {
    DeviceKind::Wgpu.open(Some(0)).expect("wgpu lists the adapter it opened")
}

/// The small classifier (ImageNet backbone, no dropout) the data-parallel tests step, saved
/// in `dir`: its config, its file and its parameters.
fn saved_classifier(
    dir: &std::path::Path,
    device: &Device,
) -> (ClassifyConfig, std::path::PathBuf, BTreeMap<String, Vec<f32>>) {
    let mut cfg = tiny_config(dir);
    cfg.dropout = 0.0;
    let file = dir.join("m.bpk");
    let mut start = cfg.init_model(3, device);
    load_backbone(&mut start, &cfg.weights.clone().unwrap()).unwrap();
    save_module(&start, &file).unwrap();
    (cfg, file, parameters(&start))
}

/// One `Stepper` step (SGD, momentum 0.9, lr 0.05) of the model in `file` on `replicas`; the
/// loss and the updated parameters.
fn step_on(
    replicas: Replicas,
    cfg: &ClassifyConfig,
    file: &std::path::Path,
    input: Input,
    labels: Vec<i64>,
    from: usize,
) -> (f64, BTreeMap<String, Vec<f32>>) {
    let mut model = cfg.init_model(3, replicas.main());
    load_module(&mut model, file).unwrap();
    let mut stepper = Stepper::on(replicas, cfg, None);
    let mut optim = optimizer_for(OptimizerKind::Sgd, 0.0, 0.9, None);
    let model = model.train().with_trainable_from(from);
    let (model, loss) = stepper.step(model, &mut optim, &mut Amp::f32(), cfg, input, labels, 0.05, from);
    (loss, parameters(&model.valid()))
}

/// `--devices` (issue 25): one step with the batch split over two devices equals one step on
/// one device with the whole batch, within 1e-5. The classifier's head on pooled features
/// (`--strategy head`): nothing in it looks across the batch, so splitting the batch changes
/// only the order of float sums.
#[test]
fn a_step_on_two_devices_equals_one_step_on_the_whole_batch() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, start) = saved_classifier(dir.path(), &gpu);
    let (n, dim) = (10, 1280);
    let features: Vec<f32> = (0..n * dim).map(|i| ((i * 7919 % 509) as f32 / 254.0 - 1.0).abs()).collect();
    let labels = vec![0i64, 1, 2, 1, 0, 2, 2, 1, 0, 0];
    let input = || Input::Features { values: features.clone(), dim };
    let (l1, one) = step_on(Replicas::one(&gpu), &cfg, &file, input(), labels.clone(), 19);
    let (l2, two) = step_on(Replicas::new(vec![gpu.clone(), second_gpu()]), &cfg, &file, input(), labels, 19);
    let (moved, _) = largest_difference(&start, &one);
    assert!(moved > 1e-3, "the step moved no weight by more than {moved}");
    let (d, name) = largest_difference(&one, &two);
    eprintln!("loss {l1} vs {l2}; {name} differs most, by {d:.2e} (the step moved weights by up to {moved:.3})");
    assert!((l1 - l2).abs() <= 1e-5, "loss on one device {l1}, on two {l2}");
    assert!(d <= 1e-5, "after one step {name} differs by {d} between one device and two");
}

/// With BatchNorm layers training (`features[14..]`, the partial fine-tune) each device
/// normalises its own share, as PyTorch's DDP does without SyncBatchNorm. Then the weights
/// after a step on two devices are the mean of the weights after each share's step alone on
/// one device (each share's loss weighs by its size; SGD's first step is linear in the
/// gradient), and BatchNorm's running statistics are the main device's share's (DDP keeps rank
/// 0's buffers).
#[test]
fn with_batchnorm_a_two_device_step_is_the_mean_of_each_shares_step() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file, start) = saved_classifier(dir.path(), &gpu);
    let (n, s) = (8, 64);
    let x = input(n, s);
    let labels = vec![0i64, 1, 2, 1, 0, 2, 2, 1];
    let plane = 3 * s * s;
    let rows =
        |r: std::ops::Range<usize>| Input::Images { pixels: x[r.start * plane..r.end * plane].to_vec(), size: s };
    let from = cfg.unfreeze_from;
    let (_, a) = step_on(Replicas::one(&gpu), &cfg, &file, rows(0..4), labels[..4].to_vec(), from);
    let (_, b) = step_on(Replicas::one(&gpu), &cfg, &file, rows(4..8), labels[4..].to_vec(), from);
    let (_, two) = step_on(Replicas::new(vec![gpu.clone(), second_gpu()]), &cfg, &file, rows(0..n), labels, from);
    let running = |k: &str| k.contains("running_");
    let expected: BTreeMap<String, Vec<f32>> = a
        .iter()
        .map(|(k, v)| match running(k) {
            true => (k.clone(), v.clone()),
            false => (k.clone(), v.iter().zip(&b[k]).map(|(x, y)| (x + y) / 2.0).collect()),
        })
        .collect();
    assert!(a.keys().any(|k| running(k)), "no running statistics among {:?}", a.keys().take(5).collect::<Vec<_>>());
    let (moved, _) = largest_difference(&start, &two);
    assert!(moved > 1e-2, "the step moved no weight by more than {moved}");
    let (d, name) = largest_difference(&expected, &two);
    eprintln!("{name} differs most from the mean of the shares' steps, by {d:.2e} (moved up to {moved:.3})");
    assert!(d <= 1e-5_f32.max(1e-4 * moved), "{name} differs from the mean of the shares' steps by {d}");
    // And the shares differ from each other, so the mean is not trivially either of them.
    let (apart, _) = largest_difference(&a, &b);
    assert!(apart > 100.0 * d.max(1e-6), "the shares' steps differ by only {apart}");
}

/// `train_classify` on the GPU end to end: the loss falls, the colours are learnt, and the
/// exported ONNX, run in tract, matches the best checkpoint run by burn on the GPU.
#[test]
fn a_run_on_the_gpu_learns_and_exports_what_it_computes() {
    run_learns_and_exports(Precision::F32);
}

/// The same in f16 (mixed precision: f32 master weights, loss scaling): it learns as well,
/// says so in report.md, and its checkpoints and export are f32 models.
#[test]
fn an_f16_run_on_the_gpu_learns_and_exports_an_f32_model() {
    if gpu_with_f16().is_none() {
        return;
    }
    run_learns_and_exports(Precision::F16);
}

fn run_learns_and_exports(precision: Precision) {
    let _one = common::one_run_at_a_time();
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), &[("train", 16), ("valid", 6)]);
    let mut cfg = tiny_config(&dir.path().join("data"));
    cfg.device = DeviceKind::Wgpu;
    cfg.precision = precision;
    let out = dir.path().join("run");
    let s = train_classify(&cfg, &out, false, &Progress { quiet: true }).unwrap();
    let first = s.history.first().unwrap().train_loss;
    let last = s.history.last().unwrap().train_loss;
    assert!(last < first, "training loss did not fall on the GPU in {precision:?}: {first} -> {last}");
    assert!(s.top1 > 0.9, "three colour classes should be learnable on the GPU in {precision:?} too: {:#?}", s.history);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["device"], "wgpu");
    assert_eq!(config["precision"], precision.name());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    if precision == Precision::F16 {
        assert!(report.contains("in f16 (f32 master weights, loss scale"), "{report}");
    }

    let gpu = gpu().unwrap();
    let mut model = cfg.init_model(3, &gpu);
    load_module(&mut model, &out.join("checkpoints/best.bpk")).unwrap();
    let x = input(2, 32);
    // The checkpoint holds the f32 master weights whatever the run computed in.
    let mut dtypes = Dtypes::default();
    model.visit(&mut dtypes);
    assert!(dtypes.0.iter().all(|d| *d == DType::F32), "{:?}", dtypes.0);
    let burn = to_host(model.valid().forward(Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 32, 32]), &gpu)));
    let engine = Engine::load(&out.join("model.onnx")).unwrap();
    let mut session = engine.session().unwrap();
    let mut tract = Vec::new();
    for one in x.chunks(3 * 32 * 32) {
        tract.extend(session.run_tensor(one).unwrap());
    }
    assert!(max_diff(&burn, &tract) <= TOL, "tract {tract:?} vs burn on the GPU {burn:?}");
}

#[derive(Default)]
struct Dtypes(Vec<DType>);

impl ModuleVisitor for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().dtype());
    }
}

/// One classifier step in f16 (the trainer's `Stepper` through `Amp`: a half copy computes,
/// the loss is scaled, the f32 gradients unscaled) against the same step in f32: the loss
/// agrees to f16's rounding, the weights stay f32 and move as the f32 step moves them.
#[test]
fn an_f16_step_follows_the_f32_step_with_f32_master_weights() {
    let _one = common::one_run_at_a_time();
    let Some(gpu) = gpu_with_f16() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path());
    cfg.dropout = 0.0;
    // The last block and the head: the frozen prefix computes in f16 (0.2-0.7 % per layer
    // here), and train-mode BatchNorm on a batch this small would magnify that into the first
    // trainable layers' gradients (f32 on two backends parts there already, see above).
    cfg.unfreeze_from = 17;
    let file = dir.path().join("m.bpk");
    let mut start = cfg.init_model(3, &gpu);
    load_backbone(&mut start, &cfg.weights.clone().unwrap()).unwrap();
    save_module(&start, &file).unwrap();
    let (n, s) = (8, 64);
    let x = input(n, s);
    let run = |precision: Precision| -> (Step, Amp) {
        let mut model = cfg.init_model(3, &gpu);
        load_module(&mut model, &file).unwrap();
        let batch = || Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, s, s]), &gpu);
        let before = to_host(model.valid().forward(batch()));
        let mut stepper = Stepper::new(&gpu, &cfg, None);
        let mut optim = optimizer_for(OptimizerKind::Sgd, 0.0, 0.9, None);
        // A scale this step does not overflow at: from 2^16 the scaler halves it over the first
        // steps of a run (the next test and the f16 run cover that), which would leave the
        // weights where they were.
        let mut amp = Amp::new(precision, Some(LossScale { scale: 256.0, good_steps: 0, skipped: 0 }));
        let images = Input::Images { pixels: x.clone(), size: s };
        let labels = vec![0i64, 1, 2, 1, 0, 2, 2, 1];
        let (model, loss) =
            stepper.step(model.train(), &mut optim, &mut amp, &cfg, images, labels, 0.05, cfg.unfreeze_from);
        let model = model.valid();
        let mut dtypes = Dtypes::default();
        model.visit(&mut dtypes);
        assert!(dtypes.0.iter().all(|d| *d == DType::F32), "{precision:?} master weights: {:?}", dtypes.0);
        (Step { before, loss, after: to_host(model.forward(batch())), params: parameters(&model) }, amp)
    };
    let (full, _) = run(Precision::F32);
    let (half, amp) = run(Precision::F16);
    let scale = amp.loss_scale().unwrap();
    assert_eq!(scale.skipped, 0, "the step was skipped: {scale:?}");
    assert!((full.loss - half.loss).abs() <= 0.01 * full.loss, "loss f32 {} vs f16 {}", full.loss, half.loss);
    let (moved, _) = largest_difference(&parameters(&start), &full.params);
    assert!(moved > 1e-2, "the step changed no weight by more than {moved}");
    let (d, name) = largest_difference(&full.params, &half.params);
    assert!(
        d <= 0.05 * moved,
        "after one step {name} differs by {d} between f32 and f16 (the step moved up to {moved})"
    );
}

/// Loss scaling on the GPU: a loss whose scaled gradient overflows f16 leaves the weights as
/// they were, halves the scale and counts the skip; the next step applies the unscaled
/// gradient, the update the same step makes in f32.
#[test]
fn an_overflowing_f16_step_is_skipped_and_the_scale_halves() {
    let Some(gpu) = gpu_with_f16() else { return };
    let x: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 8.0).collect();
    let start = LinearConfig::new(4, 3).init(&gpu);
    let weights = |m: &Linear| to_host(m.weight.val());
    // Sum of the outputs times `k`, through the half copy: d loss / d y = k · scale in f16.
    let step = |amp: &mut Amp, model: Linear, k: f64| -> Linear {
        let xs = Tensor::<2>::from_data(TensorData::new(x.clone(), [2, 4]), &gpu).autodiff();
        let compute = amp.lower(model.clone());
        let y = compute.forward(to_dtype(xs, compute.weight.dtype()));
        let loss = to_f32(y).sum().mul_scalar(k);
        let grads = GradientsParams::from_grads(amp.backward(loss), &model);
        amp.apply(&mut optimizer_for(OptimizerKind::Sgd, 0.0, 0.0, None), model, vec![(0.1, grads)])
    };
    let mut amp = Amp::new(Precision::F16, None);
    // 1e4 · 65536 is beyond f16's 65504.
    let model = step(&mut amp, start.clone().train(), 1e4);
    assert_eq!(weights(&model), weights(&start), "an overflowing step changed the weights");
    let s = amp.loss_scale().unwrap();
    assert_eq!((s.scale, s.skipped), (LossScale::INITIAL / 2.0, 1));
    // Two rows: d loss / d bias = 2 · k · 32768, within f16 for k = 0.25.
    let half = weights(&step(&mut amp, model, 0.25));
    assert_eq!(amp.loss_scale().unwrap().skipped, 1);
    let full = weights(&step(&mut Amp::f32(), start.clone().train(), 0.25));
    let moved = max_diff(&full, &weights(&start));
    assert!(moved > 1e-3, "the f32 step moved the weights by only {moved}");
    // f16 rounds the gradient to about 1e-3 of itself; an unscaled-by-the-wrong-factor step
    // would be off by a factor of 2 or more.
    assert!(max_diff(&half, &full) <= 1e-2 * moved, "f16 step {half:?} vs f32 step {full:?}");
}
