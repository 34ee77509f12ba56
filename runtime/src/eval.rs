//! Accuracy of a model on a dataset through the deployment path (tract + the card's
//! preprocessing and decoding), shared by `fieldkit eval`, `fieldkit bench --val` and
//! quantize's accuracy checks.

use std::path::{Path, PathBuf};

use fieldkit_core::card::Task;
use fieldkit_core::dataset::coco::{CocoDataset, CocoPrediction};
use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::dataset::{DetSample, EvalData, ImageFolder, YoloDataset};
use fieldkit_core::detect::NmsOptions;
use fieldkit_core::metrics::{
    BoxFitReport, ClassificationReport, CocoEval, CountReport, SegConfusion, SegmentationReport,
};
use fieldkit_core::perturb::Perturb;
use fieldkit_core::{image_io, CoreError};

use crate::engine::{parallel_map, Engine, Output, PredictOptions};
use crate::error::{Result, RuntimeError};

/// Maps the dataset's class names onto the model's class indices; every dataset class
/// must exist in the model (a model may know more classes than a dataset uses).
fn class_map(model: &[String], data: &[String], source: &std::path::Path) -> Result<Vec<usize>> {
    data.iter()
        .map(|c| {
            model.iter().position(|m| m == c).ok_or_else(|| {
                RuntimeError::Core(CoreError::invalid(
                    source,
                    format!("dataset class '{c}' is not among the model's classes {model:?}"),
                ))
            })
        })
        .collect()
}

pub struct ClassifierEval {
    pub report: ClassificationReport,
    /// (image, true model class, predicted model class) for every sample.
    pub predictions: Vec<(PathBuf, usize, usize)>,
}

pub fn eval_classifier(engine: &Engine, data: &ImageFolder, workers: usize) -> Result<ClassifierEval> {
    eval_classifier_perturbed(engine, data, workers, None)
}

/// [`eval_classifier`] with every image corrupted by `perturb` first (robustness tables).
pub fn eval_classifier_perturbed(
    engine: &Engine,
    data: &ImageFolder,
    workers: usize,
    perturb: Option<Perturb>,
) -> Result<ClassifierEval> {
    let card = engine.card();
    if card.task != Task::Classify {
        return Err(RuntimeError::Mismatch {
            path: engine.path().to_path_buf(),
            msg: format!("not a classifier (card task is {:?})", card.task),
        });
    }
    let map = class_map(&card.classes, &data.classes, &data.root)?;
    let n_classes = card.classes.len();
    let opts = PredictOptions { top_k: n_classes, ..Default::default() };
    let results = parallel_map(engine, data.samples.len(), workers, |s, i| {
        let mut img = image_io::read_rgb(&data.samples[i].path)?;
        if let Some(p) = perturb {
            img = p.apply(&img, i as u64)?;
        }
        match s.predict(&img, &opts)?.output {
            Output::Classes(c) => {
                let mut scores = vec![0.0f32; n_classes];
                for cs in &c {
                    scores[cs.index] = cs.score;
                }
                Ok((c[0].index, scores))
            }
            _ => Err(RuntimeError::Run("the card's decoding does not give class scores".into())),
        }
    })?;
    let y_true: Vec<usize> = data.samples.iter().map(|s| map[s.label]).collect();
    let y_pred: Vec<usize> = results.iter().map(|r| r.0).collect();
    let scores: Vec<Vec<f32>> = results.into_iter().map(|r| r.1).collect();
    let report = ClassificationReport::compute(&y_true, &y_pred, Some(&scores), &card.classes)?;
    let predictions =
        data.samples.iter().zip(y_true.iter().zip(&y_pred)).map(|(s, (&t, &p))| (s.path.clone(), t, p)).collect();
    Ok(ClassifierEval { report, predictions })
}

pub struct DetectorEval {
    pub coco: CocoEval,
    pub counts: CountReport,
    /// How the confident boxes sit on the objects they found (`None`: none found one).
    pub box_fit: Option<BoxFitReport>,
    pub ground_truth: CocoDataset,
    pub predictions: Vec<CocoPrediction>,
}

/// COCO evaluation protocol: keep up to 100 detections per image down to score 0.001, so
/// the PR curve reaches low-confidence recall; counting uses `count_threshold`.
pub fn eval_detector(
    engine: &Engine,
    data: &YoloDataset,
    split: &str,
    workers: usize,
    count_threshold: f64,
) -> Result<DetectorEval> {
    eval_detector_on(engine, data, &data.load_split(split)?, workers, count_threshold)
}

/// [`eval_detector`] on chosen samples of `data` (a held-out part of a split).
pub fn eval_detector_on(
    engine: &Engine,
    data: &YoloDataset,
    samples: &[DetSample],
    workers: usize,
    count_threshold: f64,
) -> Result<DetectorEval> {
    let card = engine.card();
    if card.task != Task::Detect {
        return Err(RuntimeError::Mismatch {
            path: engine.path().to_path_buf(),
            msg: format!("not a detector (card task is {:?})", card.task),
        });
    }
    let map = class_map(&card.classes, &data.names, &data.yaml)?;
    let mut gt = data.samples_to_coco(samples)?;
    // Ground truth in the model's class ids (category id = model class + 1).
    for a in &mut gt.annotations {
        a.category_id = map[(a.category_id - 1) as usize] as u64 + 1;
    }
    gt.categories = data
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| fieldkit_core::dataset::CocoCategory {
            id: map[i] as u64 + 1,
            name: n.clone(),
            supercategory: None,
        })
        .collect();
    let images: Vec<PathBuf> = gt.images.iter().map(|im| data.root.join(&im.file_name)).collect();
    let opts = PredictOptions { top_k: 1, nms: NmsOptions::COCO_EVAL };
    let per_image = parallel_map(engine, images.len(), workers, |s, i| {
        let img = image_io::read_rgb(&images[i])?;
        match s.predict(&img, &opts)?.output {
            Output::Detections(d) => Ok(d),
            _ => Err(RuntimeError::Run("the card's decoding does not give detections".into())),
        }
    })?;
    let predictions: Vec<CocoPrediction> = gt
        .images
        .iter()
        .zip(per_image)
        .flat_map(|(im, dets)| {
            dets.iter().map(|d| CocoPrediction::from_box(im.id, d.bbox, d.class, d.score)).collect::<Vec<_>>()
        })
        .collect();
    let coco = CocoEval::evaluate(&gt, &predictions)?;
    let counts = CountReport::compute(&gt, &predictions, count_threshold);
    let box_fit = BoxFitReport::compute(&gt, &predictions, count_threshold);
    Ok(DetectorEval { coco, counts, box_fit, ground_truth: gt, predictions })
}

/// One model's headline accuracy on a dataset: top-1 for a classifier on an ImageFolder,
/// COCO mAP50-95 for a detector on a data.yaml, mIoU for a segmenter on a mask folder (the
/// metric `bench --val` and `quantize --val` report), with the per-class figure behind it
/// (recall, AP50-95 or IoU).
#[derive(Debug, Clone)]
pub struct Headline {
    /// "top1", "map50_95" or "miou".
    pub metric: &'static str,
    pub value: f64,
    /// The split evaluated.
    pub split: String,
    pub per_class: Vec<(String, f64)>,
}

pub fn headline(engine: &Engine, data: &Path, split: Option<&str>, workers: usize) -> Result<Headline> {
    Ok(match EvalData::open(data, split, engine.card())? {
        EvalData::Classes(ds) => {
            let r = eval_classifier(engine, &ds, workers)?.report;
            let per_class = r.per_class.iter().map(|c| (c.name.clone(), c.recall)).collect();
            Headline { metric: "top1", value: r.top1, split: ds.split, per_class }
        }
        EvalData::Boxes { data, split } => {
            let r = eval_detector(engine, &data, &split, workers, 0.3)?.coco;
            let per_class = r.per_class.iter().map(|c| (c.name.clone(), c.ap50_95)).collect();
            Headline { metric: "map50_95", value: r.map50_95, split, per_class }
        }
        EvalData::Masks { data, split } => {
            let r = eval_segmenter(engine, &data, &split, workers)?;
            let per_class = r.per_class.iter().map(|c| (c.name.clone(), c.iou.unwrap_or(f64::NAN))).collect();
            Headline { metric: "miou", value: r.miou, split, per_class }
        }
    })
}

/// Pixel metrics of a segmenter on split `split` of a mask folder, each prediction at its
/// photo's own size; the dataset's classes must be the model's, in the same order.
pub fn eval_segmenter(engine: &Engine, data: &MaskDataset, split: &str, workers: usize) -> Result<SegmentationReport> {
    let pairs = data.pairs(split)?;
    if pairs.is_empty() {
        return Err(RuntimeError::Core(CoreError::invalid(&data.root, format!("split '{split}' holds no images"))));
    }
    eval_segmenter_on(engine, data, &pairs, workers)
}

/// [`eval_segmenter`] on chosen image / mask pairs of `data` (a held-out part of a split).
pub fn eval_segmenter_on(
    engine: &Engine,
    data: &MaskDataset,
    pairs: &[(PathBuf, PathBuf)],
    workers: usize,
) -> Result<SegmentationReport> {
    let card = engine.card();
    if card.task != Task::Segment {
        return Err(RuntimeError::Mismatch {
            path: engine.path().to_path_buf(),
            msg: format!("not a segmenter (card task is {:?})", card.task),
        });
    }
    let names: Vec<String> = data.classes.iter().map(|c| c.name.clone()).collect();
    if names != card.classes {
        return Err(RuntimeError::Core(CoreError::invalid(
            data.classes_file(),
            format!("classes {names:?}, the model's are {:?} (same names, same order)", card.classes),
        )));
    }
    let classes = card.classes.len();
    let opts = PredictOptions::default();
    let parts = parallel_map(engine, pairs.len(), workers, |s, i| {
        let (image, mask) = &pairs[i];
        let img = image_io::read_rgb(image)?;
        let truth = data.read_mask(image, mask, Some(img.dimensions()))?;
        match s.predict(&img, &opts)?.output {
            Output::Segmentation(map) => {
                let mut cm = SegConfusion::new(classes, Some(255));
                cm.add(&truth.ids, &map.ids)?;
                Ok(cm)
            }
            _ => Err(RuntimeError::Run("the card's decoding does not give a class map".into())),
        }
    })?;
    let mut total = SegConfusion::new(classes, Some(255));
    for p in &parts {
        total.merge(p)?;
    }
    Ok(total.report(&card.classes)?)
}
