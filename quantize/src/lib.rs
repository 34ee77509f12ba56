//! fieldkit-quantize: post-training quantization of ONNX models that does not silently break
//! them. Static INT8 (calibrated activations, per-channel int8 weights, int32 biases) in
//! standard QDQ form, weight-only INT8, and FP16; every run measures what it did to the model
//! (per-layer SQNR, accuracy on a validation split) and can keep the most damaging layers in
//! float until the accuracy drop fits a budget.
//!
//! Why QDQ and not QLinearConv: QDQ is the form both runtimes read well. onnxruntime fuses it
//! into its integer kernels; fieldkit's patched tract (third_party/tract PATCHES.md §5–§8)
//! folds each QDQ convolution with `group == 1` into an integer convolution (VNNI / SDOT
//! kernels), while a depthwise one stays a float convolution between its quantization passes.
//! tract's own QLinearConv path puts depthwise convolutions through an eager im2col and one
//! m = 1 matmul per channel, which is why a QOperator model runs ~10x slower than fp32 there.

pub mod calib;
pub mod cli;
pub mod error;
pub mod fp16;
pub mod graph;
pub mod int8;
pub mod ranges;
pub mod report;
pub mod sensitivity;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fieldkit_core::card::{ModelCard, Task};
use fieldkit_runtime::eval::{headline, Headline};
use fieldkit_runtime::Engine;
use serde::Serialize;

pub use error::{QuantizeError, Result};
use graph::{Model, Target};
pub use int8::{Int8Options, Placement};
pub use ranges::Method;
use sensitivity::LayerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Static INT8: weights and calibrated activations.
    Int8,
    /// INT8 weights, float activations (no calibration data needed).
    WeightsOnly,
    Fp16,
}

#[derive(Debug, Clone)]
pub struct QuantizeConfig {
    pub model: PathBuf,
    pub out: PathBuf,
    pub mode: Mode,
    pub calib: Option<PathBuf>,
    /// Calibration images used at most (spread over the folder).
    pub calib_limit: usize,
    /// Extra seeded crops per calibration image (objects at other scales when photos are few).
    pub calib_crops: usize,
    pub method: Method,
    pub per_channel: bool,
    pub placement: Placement,
    pub reduce_range: bool,
    /// Accept fewer than 10 calibration images.
    pub force: bool,
    pub val: Option<PathBuf>,
    pub split: Option<String>,
    /// Accuracy budget in percentage points (top-1, or mAP50-95 × 100 for detectors).
    pub max_drop: Option<f64>,
    /// Layers (node names) kept in float from the start.
    pub keep_fp32: Vec<String>,
    pub keep_io_f32: bool,
    pub workers: usize,
    /// Calibration images the per-layer error table is measured on.
    pub error_images: usize,
}

impl QuantizeConfig {
    pub fn new(model: PathBuf, out: PathBuf, mode: Mode) -> Self {
        QuantizeConfig {
            model,
            out,
            mode,
            calib: None,
            calib_limit: 500,
            calib_crops: 0,
            method: Method::Percentile(99.99),
            per_channel: true,
            placement: Placement::InputsOutputs,
            reduce_range: false,
            force: false,
            val: None,
            split: None,
            max_drop: None,
            keep_fp32: Vec::new(),
            keep_io_f32: false,
            workers: fieldkit_core::parallel::default_workers(),
            error_images: 32,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassDelta {
    pub name: String,
    pub fp32: f64,
    pub quant: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FallbackStep {
    /// Fallback steps applied (most harmful layer first).
    pub steps: usize,
    pub fp32_layers: usize,
    pub float_inputs: usize,
    pub added: String,
    pub quant_metric: f64,
    pub drop: f64,
}

/// Everything the report says; the JSON keys `fp32_metric`, `quant_metric`, `drop`,
/// `size_ratio` and `fp32_layers` are stable.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub output: String,
    pub mode: Mode,
    pub method: Option<String>,
    pub per_channel: bool,
    pub placement: Option<Placement>,
    /// 7-bit weights (the onnxruntime preset).
    pub reduce_range: bool,
    pub calibration_images: usize,
    /// Calibration inputs: the images plus their crops.
    pub calibration_views: usize,
    pub fp32_bytes: u64,
    pub quant_bytes: u64,
    pub size_ratio: f64,
    /// "top1" (fraction) or "map50_95"; None without --val.
    pub metric: Option<String>,
    pub fp32_metric: Option<f64>,
    pub quant_metric: Option<f64>,
    /// fp32 − quantized, percentage points.
    pub drop: Option<f64>,
    pub max_drop: Option<f64>,
    /// Per class: recall (classifiers) or AP50-95 (detectors).
    pub per_class: Vec<ClassDelta>,
    /// Layers left in float (by --keep-fp32, the accuracy fallback, or FP16's f32 islands).
    pub fp32_layers: Vec<String>,
    /// Layers with int8 weights whose input activation the fallback left in float.
    pub float_inputs: Vec<String>,
    pub quantized_layers: usize,
    pub layers: Vec<LayerError>,
    pub fallback: Vec<FallbackStep>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// Runs `model` (written to a scratch file with `card`) over the validation data.
fn evaluate(
    model: &Model,
    card: &ModelCard,
    val: &Path,
    split: Option<&str>,
    workers: usize,
    scratch: &Path,
) -> Result<Headline> {
    let path = scratch.join("candidate.onnx");
    model.save(&path)?;
    let mut card = card.clone();
    card.write_for(&path)?;
    Ok(headline(&Engine::load(&path)?, val, split, workers)?)
}

fn sorted(names: &HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = names.iter().cloned().collect();
    v.sort();
    v
}

/// `base` with the first `k` fallback steps applied: a step moves a layer's input activation
/// to float, or the whole layer.
fn keep_after(base: &int8::Keep, steps: &[(String, bool)], k: usize) -> int8::Keep {
    let mut keep = base.clone();
    for (name, whole) in &steps[..k] {
        if *whole {
            keep.float_input.remove(name);
            keep.fp32.insert(name.clone());
        } else {
            keep.float_input.insert(name.clone());
        }
    }
    keep
}

/// The accuracy fallback: the fewest fallback steps (from `impacts`, most harmful layer first,
/// layers the user kept left out; only whole layers with `whole_layers`) whose model's drop fits `budget`. Walking them one by one re-evaluated the whole validation split per
/// step (14 steps took ~5 min on the weed model); since putting more back in float rarely makes
/// the model worse, this doubles the step count until the drop fits and then bisects, about
/// 2·log2(n) evaluations. Every evaluated point goes into `trace` in step order. With no
/// prefix fitting, every step is taken and `warnings` says so.
#[allow(clippy::too_many_arguments)]
fn search_fallback(
    impacts: &[sensitivity::Impact],
    base: &int8::Keep,
    whole_layers: bool,
    budget: f64,
    start: (Model, Headline),
    build: &dyn Fn(&int8::Keep) -> Result<Model>,
    eval: &dyn Fn(&Model) -> Result<Headline>,
    drop_of: &dyn Fn(&Headline) -> f64,
    log: &dyn Fn(&str),
    trace: &mut Vec<FallbackStep>,
    warnings: &mut Vec<String>,
) -> Result<(int8::Keep, Model, Headline)> {
    let user_kept: Vec<String> = base.fp32.iter().cloned().collect();
    let steps = sensitivity::steps_from_impact(impacts, &user_kept, whole_layers);
    let steps = steps.as_slice();
    let over = |e: &Headline| {
        format!("the drop stays {:.2} pp above the {budget} pp budget with every layer in float", drop_of(e))
    };
    if drop_of(&start.1) <= budget {
        return Ok((base.clone(), start.0, start.1));
    }
    if steps.is_empty() {
        warnings.push(over(&start.1));
        return Ok((base.clone(), start.0, start.1));
    }
    log(&format!(
        "drop {:.2} pp > {budget} pp: searching the fewest of {} fallback steps",
        drop_of(&start.1),
        steps.len()
    ));
    let n = steps.len();
    let mut points: Vec<FallbackStep> = Vec::new();
    // The last fitting point evaluated (each later one has fewer steps: bisection), and the
    // all-steps point in case none fits.
    let mut fitted: Option<(int8::Keep, Model, Headline)> = None;
    let mut at_n: Option<(int8::Keep, Model, Headline)> = None;
    let k = smallest_fitting(n, |k| {
        let keep = keep_after(base, steps, k);
        let m = build(&keep)?;
        let e = eval(&m)?;
        let d = drop_of(&e);
        let (name, whole) = &steps[k - 1];
        let what = if *whole { "weights too" } else { "input activation" };
        log(&format!("  {k} steps (to {name}, {what}): drop {d:.2} pp"));
        points.push(FallbackStep {
            steps: k,
            fp32_layers: keep.fp32.len(),
            float_inputs: keep.float_input.len(),
            added: format!("{name} ({what})"),
            quant_metric: e.value,
            drop: d,
        });
        let fits = d <= budget;
        if fits {
            fitted = Some((keep, m, e));
        } else if k == n {
            at_n = Some((keep, m, e));
        }
        Ok(fits)
    })?;
    points.sort_by_key(|p| p.steps);
    trace.extend(points);
    match (fitted, at_n) {
        (Some(fit), _) => Ok(fit),
        (None, Some(all)) => {
            warnings.push(over(&all.2));
            Ok(all)
        }
        (None, None) => unreachable!("smallest_fitting({n}) returned {k} without evaluating it"),
    }
}

/// The smallest `k` in `1..=n` (n ≥ 1) with `fits(k)`, for a `fits` that stays true once
/// true; `n` when none fits. Doubles `k` until it fits, then bisects the last gap.
fn smallest_fitting(n: usize, mut fits: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    let (mut lo, mut k) = (0, 1);
    loop {
        if fits(k)? {
            break;
        }
        if k >= n {
            return Ok(n);
        }
        lo = k;
        k = (2 * k).min(n);
    }
    let mut hi = k;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// Inputs for measuring each layer's impact in weights-only mode: up to 32 images spread over
/// --calib when given, else over the validation data; with the card's preprocessing.
fn weights_only_probe_images(
    cfg: &QuantizeConfig,
    card: &ModelCard,
) -> Result<([usize; 4], Vec<calib::View>, fieldkit_core::preprocess::Preprocess)> {
    let engine = Engine::with_card(&cfg.model, card.clone())?;
    let (w, h) = engine.input_size();
    let source = cfg.calib.as_ref().or(cfg.val.as_ref()).expect("--max-drop needs --val");
    let files = calib::calibration_images(source, cfg.error_images.max(1))?;
    if files.is_empty() {
        return Err(QuantizeError::Calibration(format!(
            "{}: no images (jpg/png) to measure the layers on",
            source.display()
        )));
    }
    Ok(([1, 3, h as usize, w as usize], calib::views(&files, 0), engine.preprocess().clone()))
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).map_err(|e| fieldkit_core::CoreError::io(p, e))?.len())
}

/// Quantizes `cfg.model` into `cfg.out` (+ card and report); returns the report.
pub fn quantize(cfg: &QuantizeConfig, log: &dyn Fn(&str)) -> Result<Report> {
    let t0 = Instant::now();
    let mut warnings = Vec::new();
    let model = Model::load(&cfg.model)?;
    let card = if fieldkit_core::card::card_path(&cfg.model).exists() {
        Some(ModelCard::load_verified(&cfg.model)?)
    } else {
        None
    };
    if cfg.out == cfg.model {
        return Err(QuantizeError::Config("--out must differ from --model".into()));
    }
    if cfg.max_drop.is_some() && cfg.val.is_none() {
        return Err(QuantizeError::Config("--max-drop needs --val (the data to measure the drop on)".into()));
    }
    if cfg.max_drop.is_some() && cfg.mode == Mode::Fp16 {
        return Err(QuantizeError::Config(
            "--max-drop applies to INT8 (--int8 or --weights-only); FP16 keeps its sensitive ops in f32 already".into(),
        ));
    }
    if cfg.val.is_some() && card.is_none() {
        return Err(model.err("--val needs the model card beside the model (fieldkit card init writes one)"));
    }
    let out_dir = cfg.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".quantize-")
        .tempdir_in(out_dir)
        .map_err(|e| fieldkit_core::CoreError::io(out_dir, e))?;

    let targets = model.targets();
    let names: HashSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    if let Some(bad) = cfg.keep_fp32.iter().find(|k| !names.contains(k.as_str())) {
        let mut all: Vec<&str> = names.iter().copied().collect();
        all.sort();
        return Err(model.err(format!(
            "--keep-fp32 '{bad}' is not a quantizable layer; they are: {}",
            all.iter().take(20).copied().collect::<Vec<_>>().join(", ")
        )));
    }
    if cfg.mode != Mode::Fp16 && targets.is_empty() {
        return Err(model.err("no Conv, Gemm or MatMul with constant float weights: nothing to quantize"));
    }

    let mut kept: Vec<String> = cfg.keep_fp32.clone();
    let mut layers = Vec::new();
    let mut fallback = Vec::new();
    let mut calibration_images = 0;
    let mut calibration_views = 0;
    let mut float_inputs: Vec<String> = Vec::new();
    let eval = |m: &Model| -> Result<Option<Headline>> {
        match (&cfg.val, &card) {
            (Some(val), Some(card)) => {
                Ok(Some(evaluate(m, card, val, cfg.split.as_deref(), cfg.workers, scratch.path())?))
            }
            _ => Ok(None),
        }
    };
    if cfg.val.is_some() {
        log("evaluating the float model");
    }
    let fp32_eval = eval(&model)?;
    let drop_of = |e: &Headline| fp32_eval.as_ref().map(|f| (f.value - e.value) * 100.0).unwrap_or(0.0);
    let eval_kept = |m: &Model| -> Result<Headline> { Ok(eval(m)?.expect("the fallback runs only with --val")) };

    let (quant, quant_eval) = match cfg.mode {
        Mode::Fp16 => {
            let (m, islands) = fp16::convert(&model, cfg.keep_io_f32)?;
            kept = islands;
            let e = eval(&m)?;
            (m, e)
        }
        Mode::WeightsOnly => {
            let opts = Int8Options {
                per_channel: cfg.per_channel,
                weights_only: true,
                placement: cfg.placement,
                reduce_range: cfg.reduce_range,
            };
            let no_ranges = HashMap::new();
            let build = |keep: &int8::Keep, _: bool| int8::rewrite(&model, &targets, &no_ranges, opts, keep);
            let keep = int8::Keep::fp32(&kept);
            let m = build(&keep, true)?;
            match (cfg.max_drop, eval(&m)?) {
                (Some(budget), Some(e0)) => {
                    // No calibration data is needed to quantize; the impact of each layer's
                    // int8 weights is measured on the --calib images when given, else on
                    // the validation images the drop is measured on anyway.
                    let probe = weights_only_probe_images(cfg, card.as_ref().expect("--val needs a card"))?;
                    log(&format!(
                        "measuring each layer's weights' effect on the output alone ({} images)",
                        probe.1.len()
                    ));
                    let impacts = sensitivity::isolated_impact(
                        &model,
                        &targets,
                        &build,
                        true,
                        probe.0,
                        &probe.2,
                        &probe.1,
                        cfg.workers,
                    )?;
                    let (k, m, e) = search_fallback(
                        &impacts,
                        &keep,
                        true,
                        budget,
                        (m, e0),
                        &|k: &int8::Keep| build(k, true),
                        &eval_kept,
                        &drop_of,
                        log,
                        &mut fallback,
                        &mut warnings,
                    )?;
                    kept = sorted(&k.fp32);
                    (m, Some(e))
                }
                (_, e) => (m, e),
            }
        }
        Mode::Int8 => {
            let card = card.as_ref().ok_or_else(|| {
                model.err("static INT8 calibrates through the model card's preprocessing, and there is no card beside the model (fieldkit card init writes one), or use --weights-only")
            })?;
            let calib = cfg.calib.as_ref().ok_or_else(|| {
                QuantizeError::Config(
                    "static INT8 needs --calib DIR (images like the deployment's), or use --weights-only".into(),
                )
            })?;
            let engine = Engine::with_card(&cfg.model, card.clone())?;
            let pre = engine.preprocess().clone();
            let (w, h) = engine.input_size();
            let shape = [1, 3, h as usize, w as usize];
            let files = calib::calibration_images(calib, cfg.calib_limit)?;
            calibration_images = files.len();
            if files.is_empty() {
                return Err(QuantizeError::Calibration(format!(
                    "{}: no calibration images (jpg/png) found",
                    calib.display()
                )));
            }
            let images = calib::views(&files, cfg.calib_crops);
            calibration_views = images.len();
            let what = if cfg.calib_crops > 0 {
                format!(
                    "{} calibration inputs ({} images with {} crops each)",
                    images.len(),
                    files.len(),
                    cfg.calib_crops
                )
            } else {
                format!("{} calibration images", files.len())
            };
            if images.len() < 10 && !cfg.force {
                return Err(QuantizeError::Calibration(format!(
                    "{}: only {what}; ranges from so few are unreliable (use 100+, add --calib-crops, or --force)",
                    calib.display(),
                )));
            }
            if images.len() < 100 {
                warnings.push(format!("only {what}; 100 or more give steadier ranges"));
            }
            let active: Vec<Target> = targets.iter().filter(|t| !kept.contains(&t.name)).cloned().collect();
            let tensors = int8::activation_tensors(&model, &active, cfg.placement);
            log(&format!(
                "calibrating {} activations on {} images ({})",
                tensors.len(),
                images.len(),
                cfg.method.describe()
            ));
            let probe = calib::Probe::new(&model.proto, shape, &tensors)?;
            let stats = calib::collect(&probe, &pre, &images, cfg.workers)?;
            let ranges: HashMap<String, (f32, f32)> =
                stats.iter().map(|(k, s)| (k.clone(), ranges::range(s, cfg.method))).collect();
            let opts = Int8Options {
                per_channel: cfg.per_channel,
                weights_only: false,
                placement: cfg.placement,
                reduce_range: cfg.reduce_range,
            };
            let mut keep = int8::Keep::fp32(&kept);
            let build = |keep: &int8::Keep, weights_only: bool| {
                int8::rewrite(&model, &targets, &ranges, Int8Options { weights_only, ..opts }, keep)
            };
            let m = build(&keep, false)?;
            let step = (images.len() / cfg.error_images.max(1)).max(1);
            let err_images: Vec<calib::View> = images.iter().step_by(step).take(cfg.error_images).cloned().collect();
            log(&format!("measuring per-layer error on {} images", err_images.len()));
            let wonly = build(&keep, true)?;
            layers =
                sensitivity::layer_errors(&model, &m, &wonly, &targets, &kept, shape, &pre, &err_images, cfg.workers)?;
            let e = eval(&m)?;
            match (cfg.max_drop, e) {
                (Some(budget), Some(e0)) => {
                    log("measuring each layer's effect on the output alone");
                    let impacts = sensitivity::isolated_impact(
                        &model,
                        &targets,
                        &build,
                        false,
                        shape,
                        &pre,
                        &err_images,
                        cfg.workers,
                    )?;
                    let (k, m, e) = search_fallback(
                        &impacts,
                        &keep,
                        cfg.placement == Placement::InputsOutputs,
                        budget,
                        (m, e0),
                        &|k: &int8::Keep| build(k, false),
                        &eval_kept,
                        &drop_of,
                        log,
                        &mut fallback,
                        &mut warnings,
                    )?;
                    keep = k;
                    kept = sorted(&keep.fp32);
                    float_inputs = sorted(&keep.float_input);
                    for l in layers.iter_mut() {
                        l.kept_fp32 = keep.fp32.contains(&l.name);
                        l.float_input = keep.float_input.contains(&l.name);
                    }
                    (m, Some(e))
                }
                (_, e) => (m, e),
            }
        }
    };

    quant.save(&cfg.out)?;
    if let Some(card) = &card {
        let mut c = card.clone();
        c.source = Some(format!(
            "{} quantized by fieldkit quantize ({})",
            cfg.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            match cfg.mode {
                Mode::Int8 => format!("int8 static, {}", cfg.method.describe()),
                Mode::WeightsOnly => "int8 weights only".into(),
                Mode::Fp16 => "fp16".into(),
            }
        ));
        if let Some(q) = &quant_eval {
            let key = match card.task {
                Task::Classify => "valid_top1",
                Task::Detect => "valid_map50_95",
                Task::Segment => "valid_miou",
            };
            c.metrics.insert(key.into(), q.value);
        }
        c.write_for(&cfg.out)?;
    } else {
        warnings.push("no model card beside the input model, so none was written beside the output".into());
    }
    let fp32_bytes = file_len(&cfg.model)?;
    let quant_bytes = file_len(&cfg.out)?;
    let per_class = match (&fp32_eval, &quant_eval) {
        (Some(f), Some(q)) => f
            .per_class
            .iter()
            .zip(&q.per_class)
            .map(|((n, a), (_, b))| ClassDelta { name: n.clone(), fp32: *a, quant: *b })
            .collect(),
        _ => Vec::new(),
    };
    let report = Report {
        model: cfg.model.display().to_string(),
        output: cfg.out.display().to_string(),
        mode: cfg.mode,
        method: (cfg.mode == Mode::Int8).then(|| cfg.method.describe()),
        per_channel: cfg.per_channel,
        placement: (cfg.mode == Mode::Int8).then_some(cfg.placement),
        reduce_range: cfg.reduce_range && cfg.mode != Mode::Fp16,
        calibration_images,
        calibration_views,
        fp32_bytes,
        quant_bytes,
        size_ratio: quant_bytes as f64 / fp32_bytes as f64,
        metric: fp32_eval.as_ref().map(|e| e.metric.to_string()),
        fp32_metric: fp32_eval.as_ref().map(|e| e.value),
        quant_metric: quant_eval.as_ref().map(|e| e.value),
        drop: quant_eval.as_ref().filter(|_| fp32_eval.is_some()).map(drop_of),
        max_drop: cfg.max_drop,
        per_class,
        quantized_layers: if cfg.mode == Mode::Fp16 { 0 } else { targets.len() - kept.len().min(targets.len()) },
        fp32_layers: kept,
        float_inputs,
        layers,
        fallback,
        warnings,
        seconds: t0.elapsed().as_secs_f64(),
    };
    report::write(&cfg.out, &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_search_finds_the_smallest_fitting_prefix_in_few_evaluations() {
        for n in [1usize, 2, 3, 14, 106] {
            for need in 1..=n + 1 {
                let mut calls = Vec::new();
                let k = smallest_fitting(n, |k| {
                    calls.push(k);
                    Ok(k >= need)
                })
                .unwrap();
                assert_eq!(k, need.min(n), "n {n}, need {need}, calls {calls:?}");
                assert!(calls.iter().all(|&c| (1..=n).contains(&c)));
                let bound = 2 * (usize::BITS - n.leading_zeros()) as usize + 1;
                assert!(calls.len() <= bound, "n {n}, need {need}: {} evaluations {calls:?}", calls.len());
                // A point is never evaluated twice.
                let mut u = calls.clone();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), calls.len(), "{calls:?}");
            }
        }
    }

    #[test]
    fn fallback_steps_move_inputs_then_whole_layers() {
        let steps = vec![("a".to_string(), false), ("b".to_string(), true), ("a".to_string(), true)];
        let base = int8::Keep::fp32(&["user".to_string()]);
        let k2 = keep_after(&base, &steps, 2);
        assert!(k2.float_input.contains("a") && k2.fp32.contains("b") && k2.fp32.contains("user"));
        let k3 = keep_after(&base, &steps, 3);
        assert!(!k3.float_input.contains("a") && k3.fp32.contains("a"));
    }
}
