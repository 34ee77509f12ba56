//! Load an ONNX model with its card into an optimized tract plan, then run it from any
//! number of worker threads, each with its own [`Session`] (tract runs one inference per
//! state on one thread; parallelism comes from workers).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fieldkit_core::card::{Decode, InputSpec, ModelCard, Task};
use fieldkit_core::detect::{self, NmsOptions};
use fieldkit_core::image_io;
use fieldkit_core::preprocess::{Preprocess, Resize};
use image::RgbImage;
use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::{Result, RuntimeError};
use crate::layout::Layout;
use crate::nnef_cache::{self, LoadSource};
use crate::precision::Precision;

struct Inner {
    path: PathBuf,
    card: ModelCard,
    plan: Arc<TypedRunnableModel>,
    input_dt: DatumType,
    /// Model input `(width, height)`.
    input_size: (u32, u32),
    /// The card's preprocessing, made to produce exactly `input_size`.
    preprocess: Preprocess,
    output_shape: Vec<usize>,
    load_ms: f64,
    source: LoadSource,
    layout: Layout,
    precision: Precision,
}

/// How to build a model's plan.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Keep the translated model in this directory (see [`crate::nnef_cache`]).
    pub cache: Option<PathBuf>,
    /// Where the channel axis sits while the convolutions run.
    pub layout: Layout,
    /// The float precision an fp32 model's operators compute in.
    pub precision: Precision,
}

/// A loaded model; cheap to clone and share across threads.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// One worker's inference state.
pub struct Session {
    inner: Arc<Inner>,
    state: TypedSimpleState,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictOptions {
    /// Classes reported by a classifier.
    pub top_k: usize,
    pub nms: NmsOptions,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { top_k: 5, nms: NmsOptions::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    pub index: usize,
    pub name: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabeledDetection {
    /// `[x1, y1, x2, y2]` in source-image pixels.
    pub bbox: [f32; 4],
    pub class: usize,
    pub name: String,
    pub score: f32,
}

impl LabeledDetection {
    /// The box without its class name, as NMS and the tracker take it.
    pub fn detection(&self) -> detect::Detection {
        detect::Detection { bbox: self.bbox, class: self.class, score: self.score }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "items", rename_all = "snake_case")]
pub enum Output {
    Classes(Vec<ClassScore>),
    Detections(Vec<LabeledDetection>),
    Features(Vec<f32>),
    Segmentation(ClassMap),
}

/// A segmenter's answer at the source image's size: each pixel's class, and each class's
/// share of the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMap {
    pub width: u32,
    pub height: u32,
    /// Row-major class ids. Not in JSON: 170 k numbers for a 480x360 photo (`fieldkit
    /// predict` writes them as a PNG).
    #[serde(skip)]
    pub ids: Vec<u8>,
    pub coverage: Vec<ClassCoverage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCoverage {
    pub index: usize,
    pub name: String,
    /// Share of the image's pixels.
    pub fraction: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timing {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub width: u32,
    pub height: u32,
    pub output: Output,
    pub timing: Timing,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Engine {
    /// Loads `model` and its card `<model>.json`, refusing a model whose sha256 differs.
    pub fn load(model: &Path) -> Result<Self> {
        Self::load_cached(model, None)
    }

    /// [`Engine::load`], keeping the translated model in `cache` (a directory) when given:
    /// the first load writes an NNEF entry, later loads of the same bytes at the same input
    /// size read it instead of the ONNX file (see [`crate::nnef_cache`]).
    pub fn load_cached(model: &Path, cache: Option<&Path>) -> Result<Self> {
        Self::load_with(model, &LoadOptions { cache: cache.map(Path::to_path_buf), ..LoadOptions::default() })
    }

    /// [`Engine::load`] with every option spelled out.
    pub fn load_with(model: &Path, options: &LoadOptions) -> Result<Self> {
        let card = ModelCard::load_verified(model)?;
        let sha = card.sha256.clone();
        Self::build(
            model,
            card,
            options.cache.as_deref().map(|dir| (dir, sha.as_str())),
            options.layout,
            options.precision,
        )
    }

    /// Loads `model` described by `card` without checking the file hash (for a card being
    /// written, or a third-party model whose card is built in code).
    pub fn with_card(model: &Path, card: ModelCard) -> Result<Self> {
        Self::with_card_in(model, card, Layout::default())
    }

    /// [`Engine::with_card`] in a given layout.
    pub fn with_card_in(model: &Path, card: ModelCard, layout: Layout) -> Result<Self> {
        Self::build(model, card, None, layout, Precision::F32)
    }

    /// Loads an ONNX file that has no card, to time it as tract's and onnxruntime's own perf
    /// tools do: its input at the shape the file declares (a dynamic batch becomes 1), fed a
    /// stretch-resized image, and its first output read raw (no decoding, no classes). An
    /// input whose height or width the file leaves open is refused: it needs a card.
    pub fn load_bare(model: &Path, options: &LoadOptions) -> Result<Self> {
        let m = read_onnx(model)?;
        let (inputs, outputs) = io_names(&m).map_err(RuntimeError::tract(model, "reading its inputs and outputs"))?;
        let fact = m.input_fact(0).map_err(RuntimeError::tract(model, "reading its input"))?;
        let dims: Vec<Option<i64>> = fact.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
        let (Some(input), Some((_, output)), [_, Some(3), Some(h @ 1..), Some(w @ 1..)]) =
            (inputs.first(), outputs.first(), dims.as_slice())
        else {
            let shape: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
            return Err(RuntimeError::Mismatch {
                path: model.to_path_buf(),
                msg: format!(
                    "no model card, and its input [{}] is not an image of a fixed size [N, 3, H, W]: write a card \
                     with `fieldkit card init` (it fixes the size)",
                    shape.join(", ")
                ),
            });
        };
        let (w, h) = (*w as u32, *h as u32);
        let preprocess =
            Preprocess { resize: Resize::Exact { width: w, height: h }, center_crop: None, ..Preprocess::imagenet(w) };
        let card = ModelCard::new(
            Task::Classify,
            vec![output.clone()],
            InputSpec { name: input.clone(), shape: vec![-1, 3, h as i64, w as i64] },
            preprocess,
            Decode::Features { output: output.clone() },
        );
        Self::build(model, card, None, options.layout, options.precision)
    }

    /// `cache`: the cache directory and the model's verified sha256.
    fn build(
        model: &Path,
        card: ModelCard,
        cache: Option<(&Path, &str)>,
        layout: Layout,
        precision: Precision,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let load_err = |msg: String| RuntimeError::Load { path: model.to_path_buf(), msg };
        let mismatch = |msg: String| RuntimeError::Mismatch { path: model.to_path_buf(), msg };
        card.validate(&fieldkit_core::card::card_path(model))?;
        let (width, height) = input_size(&card).map_err(mismatch)?;
        let (typed, source) = match cache {
            None => (translate(model, &card, width, height)?, LoadSource::Onnx),
            Some((dir, sha)) => {
                let entry = nnef_cache::entry_path(dir, sha, width, height, card.decode.output());
                // An entry that cannot be read or does not take this input (written by
                // another build, damaged on disk) is translated again and replaced.
                let cached = entry.is_file().then(|| nnef_cache::read(&entry)).and_then(|r| r.ok()).filter(|m| {
                    m.input_fact(0).ok().and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
                        == Some(vec![1, 3, height as usize, width as usize])
                });
                match cached {
                    Some(m) => (m, LoadSource::Cache(entry)),
                    None => {
                        let m = translate(model, &card, width, height)?;
                        let source = match nnef_cache::write(&entry, &m) {
                            Ok(()) => LoadSource::Written(entry),
                            Err(why) => LoadSource::Uncached(why),
                        };
                        (m, source)
                    }
                }
            }
        };
        // After the cache: entries stay the ONNX graph as translated, whatever runs.
        let (typed, _) =
            crate::pool_chain::chain_max_pools(typed).map_err(RuntimeError::tract(model, "chaining its max pools"))?;
        let typed = layout.apply(typed).map_err(RuntimeError::tract(model, format!("running it {layout}")))?;
        let typed = precision.apply(typed).map_err(mismatch)?;
        // After the precision: f16 makes the input f16 too (the session casts to it).
        let input_dt = typed.input_fact(0).map_err(RuntimeError::tract(model, "reading its input"))?.datum_type;
        let typed = typed
            .into_optimized()
            .map_err(RuntimeError::tract(model, format!("optimizing for a {width}x{height} input")))?;
        let output_shape: Vec<usize> = typed
            .output_fact(0)
            .map_err(RuntimeError::tract(model, "reading its output"))?
            .shape
            .as_concrete()
            .ok_or_else(|| load_err("output shape is not fixed for a fixed input".into()))?
            .to_vec();
        check_output(&card, &output_shape, width, height).map_err(mismatch)?;
        let plan = typed.into_runnable().map_err(RuntimeError::tract(model, "making it runnable"))?;
        let mut preprocess = card.preprocess.clone();
        if preprocess.output_size().is_none() {
            // A card whose preprocess leaves the size open (short-side resize without a crop)
            // still has to meet the plan's fixed input: stretch the final step to it.
            preprocess.resize = Resize::Exact { width, height };
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                path: model.to_path_buf(),
                card,
                plan,
                input_dt,
                input_size: (width, height),
                preprocess,
                output_shape,
                load_ms: ms(t0),
                source,
                layout,
                precision,
            }),
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.inner.card
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// `(width, height)` of the model input.
    pub fn input_size(&self) -> (u32, u32) {
        self.inner.input_size
    }

    /// The preprocessing every input goes through: the card's, fitted to the input size.
    pub fn preprocess(&self) -> &Preprocess {
        &self.inner.preprocess
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.inner.output_shape
    }

    /// Time spent reading, optimizing and planning the model.
    pub fn load_ms(&self) -> f64 {
        self.inner.load_ms
    }

    /// Whether the model came from ONNX or the NNEF cache.
    pub fn load_source(&self) -> &LoadSource {
        &self.inner.source
    }

    /// The layout the plan runs its convolutions in.
    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// The float precision the plan computes in.
    pub fn precision(&self) -> Precision {
        self.inner.precision
    }

    pub fn session(&self) -> Result<Session> {
        let state = self.inner.plan.spawn().map_err(RuntimeError::inference("starting a session"))?;
        Ok(Session { inner: self.inner.clone(), state })
    }
}

/// Parses an ONNX file into tract's inference model. value_info written by other tools
/// (ORT's quantizer) can carry a symbolic batch that fights a fixed input shape; tract infers
/// every shape itself anyway, so it is ignored.
fn read_onnx(model: &Path) -> Result<InferenceModel> {
    let bytes =
        std::fs::read(model).map_err(|e| RuntimeError::Load { path: model.to_path_buf(), msg: e.to_string() })?;
    tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_read(&mut bytes.as_slice())
        .map_err(RuntimeError::tract(model, "reading the ONNX file"))
}

/// Runs `f` over `0..n` on `workers` threads, each with its own session; results in order.
pub fn parallel_map<T: Send>(
    engine: &Engine,
    n: usize,
    workers: usize,
    f: impl Fn(&mut Session, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    fieldkit_core::parallel::map_indexed(n, workers, || engine.session(), f)
}

/// The ONNX file as a decluttered typed model: the card's input name checked, its output
/// selected, the input fixed at `width`x`height`.
fn translate(model: &Path, card: &ModelCard, width: u32, height: u32) -> Result<TypedModel> {
    let mismatch = |msg: String| RuntimeError::Mismatch { path: model.to_path_buf(), msg };
    let mut m = read_onnx(model)?;
    let (input_names, outputs) = io_names(&m).map_err(RuntimeError::tract(model, "reading its inputs and outputs"))?;
    if input_names.len() != 1 || input_names[0] != card.input.name {
        return Err(mismatch(format!(
            "the card expects one input '{}', the model has {:?}",
            card.input.name, input_names
        )));
    }
    let wanted = card.decode.output();
    let names: Vec<&String> = outputs.iter().map(|(_, n)| n).collect();
    let pos = names
        .iter()
        .position(|n| *n == wanted)
        .ok_or_else(|| mismatch(format!("the card names output '{wanted}', the model has {names:?}")))?;
    m.select_output_outlets(&[outputs[pos].0]).map_err(RuntimeError::tract(model, "selecting its output"))?;
    // f32 unless the model declares another input type (an FP16 model without f32 I/O).
    let input_dt = m.input_fact(0).ok().and_then(|f| f.datum_type.concretize()).unwrap_or(f32::datum_type());
    m = m
        .with_input_fact(0, input_dt.fact([1, 3, height as usize, width as usize]).into())
        .map_err(RuntimeError::tract(model, "fixing its input shape"))?;
    m.into_typed()
        .and_then(|t| t.into_decluttered())
        .map_err(RuntimeError::tract(model, format!("translating for a {width}x{height} input")))
}

/// (input names, output outlets with their names), in graph order.
type IoNames = (Vec<String>, Vec<(OutletId, String)>);

fn io_names(m: &InferenceModel) -> TractResult<IoNames> {
    let inputs = m.input_outlets()?.iter().map(|o| m.node(o.node).name.clone()).collect();
    let outputs = m
        .output_outlets()?
        .iter()
        .map(|o| (*o, m.outlet_label(*o).map(str::to_string).unwrap_or_else(|| m.node(o.node).name.clone())))
        .collect();
    Ok((inputs, outputs))
}

/// Input and output names of an ONNX model, in graph order (for writing a card).
pub fn model_io_names(model: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let m = read_onnx(model)?;
    let (inputs, outputs) = io_names(&m).map_err(RuntimeError::tract(model, "reading its inputs and outputs"))?;
    Ok((inputs, outputs.into_iter().map(|(_, n)| n).collect()))
}

fn input_size(card: &ModelCard) -> std::result::Result<(u32, u32), String> {
    let s = &card.input.shape;
    let from_card = (s[3] > 0 && s[2] > 0).then(|| (s[3] as u32, s[2] as u32));
    from_card
        .or(card.preprocess.output_size())
        .ok_or_else(|| format!("input.shape {s:?} has a dynamic height/width and the preprocess spec does not fix it"))
}

fn check_output(card: &ModelCard, shape: &[usize], width: u32, height: u32) -> std::result::Result<(), String> {
    let classes = card.classes.len();
    match (&card.decode, card.task) {
        (Decode::Softmax { .. } | Decode::Probabilities { .. }, Task::Classify) => {
            if shape.iter().product::<usize>() != classes {
                return Err(format!("output shape {shape:?} does not hold the card's {classes} class scores"));
            }
        }
        (Decode::Yolox { strides, .. }, Task::Detect) => {
            let anchors = detect::yolox_anchor_count(width, height, strides);
            if shape != [1, anchors, 5 + classes] {
                return Err(format!(
                    "output shape {shape:?}, but a YOLOX head with strides {strides:?} on {width}x{height} and {classes} classes gives [1, {anchors}, {}]",
                    5 + classes
                ));
            }
        }
        (Decode::Segment { .. }, Task::Segment) => {
            if shape != [1, classes, height as usize, width as usize] {
                return Err(format!(
                    "output shape {shape:?}, but per-pixel logits of {classes} classes on {width}x{height} are [1, {classes}, {height}, {width}]"
                ));
            }
            // Pixels map back to the photo by a plain stretch; a crop or letterbox would
            // need its geometry for every pixel.
            if !matches!(card.preprocess.resize, fieldkit_core::preprocess::Resize::Exact { .. })
                || card.preprocess.center_crop.is_some()
            {
                return Err(
                    "a segmentation card needs an exact resize (preprocess.resize exact, no center crop)".into()
                );
            }
        }
        (Decode::Features { .. }, _) => {}
        (d, t) => return Err(format!("decode {d:?} does not fit task {t:?}")),
    }
    Ok(())
}

impl Session {
    /// Runs the model on an already preprocessed `[3, H, W]` tensor; returns the raw output.
    pub fn run_tensor(&mut self, chw: &[f32]) -> Result<Vec<f32>> {
        let input = self.input_tensor(chw)?;
        let out = self.state.run(tvec!(input.into_tvalue())).map_err(RuntimeError::inference("running the plan"))?;
        let out = out[0].cast_to::<f32>().map_err(RuntimeError::inference("reading the output as f32"))?;
        let view = out.to_plain_array_view::<f32>().map_err(RuntimeError::inference("reading the output"))?;
        Ok(view.iter().copied().collect())
    }

    /// `chw` as the plan's `[1, 3, H, W]` input, checking its length.
    pub(crate) fn input_tensor(&self, chw: &[f32]) -> Result<Tensor> {
        let (w, h) = self.inner.input_size;
        let shape = [1, 3, h as usize, w as usize];
        if chw.len() != shape.iter().product::<usize>() {
            return Err(RuntimeError::Run(format!("input holds {} values, the model takes {shape:?}", chw.len())));
        }
        let t = Tensor::from_shape(&shape, chw).map_err(RuntimeError::inference("building the input"))?;
        if self.inner.input_dt == f32::datum_type() {
            return Ok(t);
        }
        Ok(t.cast_to_dt(self.inner.input_dt).map_err(RuntimeError::inference("casting the input"))?.into_owned())
    }

    pub(crate) fn state_mut(&mut self) -> &mut TypedSimpleState {
        &mut self.state
    }

    /// Decodes image bytes (JPEG/PNG) and predicts.
    pub fn predict_bytes(&mut self, bytes: &[u8], opts: &PredictOptions) -> Result<Prediction> {
        let t = Instant::now();
        let img = image_io::decode_rgb(bytes).map_err(|msg| {
            RuntimeError::Core(fieldkit_core::CoreError::Argument(format!("cannot decode image: {msg}")))
        })?;
        let decode_ms = ms(t);
        let mut p = self.predict(&img, opts)?;
        p.timing.preprocess_ms += decode_ms;
        Ok(p)
    }

    /// Preprocesses with the card's spec, runs, and decodes with the card's decoding.
    pub fn predict(&mut self, img: &RgbImage, opts: &PredictOptions) -> Result<Prediction> {
        let inner = self.inner.clone();
        let card = &inner.card;
        let t = Instant::now();
        let (w, h) = inner.input_size;
        let prepared = inner.preprocess.run(img)?;
        if (prepared.width, prepared.height) != (w, h) {
            return Err(RuntimeError::Run(format!(
                "preprocess gives {}x{}, the model takes {w}x{h}",
                prepared.width, prepared.height
            )));
        }
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let raw = self.run_tensor(&prepared.data)?;
        let inference_ms = ms(t);
        let t = Instant::now();
        let output = match &card.decode {
            Decode::Softmax { .. } | Decode::Probabilities { .. } => {
                let probs = if matches!(card.decode, Decode::Softmax { .. }) { detect::softmax(&raw) } else { raw };
                Output::Classes(
                    detect::top_k(&probs, opts.top_k.min(probs.len()))
                        .into_iter()
                        .map(|i| ClassScore { index: i, name: card.classes[i].clone(), score: probs[i] })
                        .collect(),
                )
            }
            Decode::Yolox { strides, logits, .. } => {
                let dets =
                    detect::decode_yolox(&raw, card.classes.len(), w, h, strides, *logits, opts.nms.score_threshold)?;
                let geo = prepared.geometry;
                Output::Detections(
                    detect::nms(dets, &opts.nms)
                        .into_iter()
                        .map(|d| LabeledDetection {
                            bbox: geo.to_source(d.bbox),
                            class: d.class,
                            name: card.classes[d.class].clone(),
                            score: d.score,
                        })
                        .collect(),
                )
            }
            Decode::Features { .. } => Output::Features(raw),
            Decode::Segment { .. } => {
                let classes = card.classes.len();
                let ids = fieldkit_core::segment::argmax_classes(&raw, classes, (w * h) as usize);
                let ids = fieldkit_core::segment::resize_ids(&ids, w, h, img.width(), img.height());
                let coverage = fieldkit_core::segment::coverage(&ids, classes)
                    .into_iter()
                    .enumerate()
                    .map(|(index, fraction)| ClassCoverage { index, name: card.classes[index].clone(), fraction })
                    .collect();
                Output::Segmentation(ClassMap { width: img.width(), height: img.height(), ids, coverage })
            }
        };
        let postprocess_ms = ms(t);
        Ok(Prediction {
            width: img.width(),
            height: img.height(),
            output,
            timing: Timing { preprocess_ms, inference_ms, postprocess_ms },
        })
    }
}
