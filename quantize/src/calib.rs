//! Calibration: the images, a probe that runs the float model and returns chosen intermediate
//! tensors, and the statistics (min/max, then histograms) the range methods work on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fieldkit_core::dataset::{self, YoloDataset};
use fieldkit_core::image_io;
use fieldkit_core::parallel::map_indexed;
use fieldkit_core::preprocess::Preprocess;
use fieldkit_runtime::onnx_graph::pb;
use prost::Message;
use tract_onnx::prelude::*;

use crate::error::{tract_err, QuantizeError, Result};

/// Bins of each histogram (ORT and TensorRT use 2048 for entropy calibration).
pub const BINS: usize = 2048;

/// Every image under `path` (recursively, sorted), or the train-split images of a YOLO
/// data.yaml; at most `limit`, spread evenly over the list so every class folder is sampled.
pub fn calibration_images(path: &Path, limit: usize) -> Result<Vec<PathBuf>> {
    let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let mut all = if is_yaml {
        let data = YoloDataset::from_yaml(path)?;
        let split = ["train", "val"].iter().find(|s| data.splits.contains_key(**s)).copied().unwrap_or("train");
        data.split_images(split)?
    } else if path.is_dir() {
        dataset::list_images_recursive(path)?
    } else {
        return Err(QuantizeError::Calibration(format!("{}: not a folder of images or a data.yaml", path.display())));
    };
    all.sort();
    if all.len() > limit && limit > 0 {
        let step = all.len() as f64 / limit as f64;
        all = (0..limit).map(|i| all[(i as f64 * step) as usize].clone()).collect();
    }
    Ok(all)
}

/// The float model compiled with extra outputs: the tensors whose values calibration or the
/// per-layer error table needs.
pub struct Probe {
    plan: Arc<TypedRunnableModel>,
    pub tensors: Vec<String>,
    shape: [usize; 4],
}

impl Probe {
    /// `tensors` must be produced by nodes of `model` (or be its input).
    pub fn new(model: &pb::ModelProto, input_shape: [usize; 4], tensors: &[String]) -> Result<Self> {
        let mut m = model.clone();
        let g = m.graph.as_mut().ok_or_else(|| QuantizeError::Config("model without a graph".into()))?;
        g.output.clear();
        g.value_info.clear();
        for t in tensors {
            g.output.push(pb::ValueInfoProto { name: t.clone(), ..Default::default() });
        }
        let bytes = m.encode_to_vec();
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut bytes.as_slice())
            .and_then(|mut im| {
                im.set_input_fact(0, f32::fact(input_shape).into())?;
                im.into_optimized()?.into_runnable()
            })
            .map_err(tract_err("compiling the calibration probe"))?;
        Ok(Probe { plan, tensors: tensors.to_vec(), shape: input_shape })
    }

    pub fn spawn(&self) -> Result<TypedSimpleState> {
        self.plan.spawn().map_err(tract_err("starting the calibration probe"))
    }

    /// Values of every probed tensor for one preprocessed `[3, H, W]` input.
    pub fn run(&self, state: &mut TypedSimpleState, chw: &[f32]) -> Result<Vec<Vec<f32>>> {
        let x = Tensor::from_shape(&self.shape, chw).map_err(tract_err("building the probe input"))?;
        let outs = state.run(tvec!(x.into_tvalue())).map_err(tract_err("running the calibration probe"))?;
        outs.iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(tract_err("reading a probed tensor as f32"))?;
                Ok(t.to_plain_array_view::<f32>()
                    .map_err(tract_err("reading a probed tensor"))?
                    .iter()
                    .copied()
                    .collect())
            })
            .collect()
    }
}

/// One calibration input: a whole image, or a crop of it (`[left, top, width, height]` as
/// fractions), which adds objects at other scales when photos are few.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub path: PathBuf,
    pub crop: Option<[f64; 4]>,
}

/// Each image whole, then `crops` seeded crops of it (side 40–80 % of the image's, anywhere).
pub fn views(images: &[PathBuf], crops: usize) -> Vec<View> {
    let mut out = Vec::with_capacity(images.len() * (crops + 1));
    for (i, p) in images.iter().enumerate() {
        out.push(View { path: p.clone(), crop: None });
        for k in 0..crops {
            let mut r = splitmix(((i as u64) << 16) ^ k as u64);
            let mut unit = || {
                r = splitmix(r);
                (r >> 11) as f64 / (1u64 << 53) as f64
            };
            let (w, h) = (0.4 + 0.4 * unit(), 0.4 + 0.4 * unit());
            out.push(View { path: p.clone(), crop: Some([(1.0 - w) * unit(), (1.0 - h) * unit(), w, h]) });
        }
    }
    out
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Decodes, crops and preprocesses a view exactly as the runtime will preprocess an image.
pub fn prepare(pre: &Preprocess, view: &View) -> Result<Vec<f32>> {
    let mut img = image_io::read_rgb(&view.path)?;
    if let Some([l, t, w, h]) = view.crop {
        let (iw, ih) = (img.width() as f64, img.height() as f64);
        let (cw, ch) = (((w * iw) as u32).max(1), ((h * ih) as u32).max(1));
        img = image::imageops::crop_imm(&img, (l * iw) as u32, (t * ih) as u32, cw, ch).to_image();
    }
    Ok(pre.run(&img)?.data)
}

/// Statistics of one activation tensor over the calibration set.
#[derive(Debug, Clone)]
pub struct TensorStats {
    pub min: f32,
    pub max: f32,
    /// Histogram of the values over `[min, max]`.
    pub hist: Vec<u64>,
    /// Histogram of |values| over `[0, max(|min|, |max|)]`.
    pub abs_hist: Vec<u64>,
}

impl TensorStats {
    pub fn abs_max(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    pub fn count(&self) -> u64 {
        self.hist.iter().sum()
    }
}

/// Two passes over the calibration images: min/max of every probed tensor, then histograms
/// over those ranges.
pub fn collect(
    probe: &Probe,
    pre: &Preprocess,
    images: &[View],
    workers: usize,
) -> Result<HashMap<String, TensorStats>> {
    let n = probe.tensors.len();
    let ranges = Mutex::new(vec![(f32::INFINITY, f32::NEG_INFINITY); n]);
    map_indexed(
        images.len(),
        workers,
        || probe.spawn(),
        |state, i| {
            let values = probe.run(state, &prepare(pre, &images[i])?)?;
            let local: Vec<(f32, f32)> = values.iter().map(|v| min_max(v)).collect();
            let mut r = ranges.lock().unwrap();
            for (acc, (lo, hi)) in r.iter_mut().zip(local) {
                acc.0 = acc.0.min(lo);
                acc.1 = acc.1.max(hi);
            }
            Ok::<_, QuantizeError>(())
        },
    )?;
    let ranges = ranges.into_inner().unwrap();
    if let Some((t, _)) = probe.tensors.iter().zip(&ranges).find(|(_, r)| !(r.0.is_finite() && r.1.is_finite())) {
        return Err(QuantizeError::Calibration(format!(
            "tensor '{t}' took non-finite values on the calibration images"
        )));
    }
    let hists = Mutex::new(vec![(vec![0u64; BINS], vec![0u64; BINS]); n]);
    map_indexed(
        images.len(),
        workers,
        || probe.spawn(),
        |state, i| {
            let values = probe.run(state, &prepare(pre, &images[i])?)?;
            let local: Vec<(Vec<u64>, Vec<u64>)> = values
                .iter()
                .zip(&ranges)
                .map(|(v, &(lo, hi))| (histogram(v, lo, hi), abs_histogram(v, lo.abs().max(hi.abs()))))
                .collect();
            let mut h = hists.lock().unwrap();
            for (acc, (a, b)) in h.iter_mut().zip(local) {
                acc.0.iter_mut().zip(a).for_each(|(x, y)| *x += y);
                acc.1.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            }
            Ok::<_, QuantizeError>(())
        },
    )?;
    Ok(probe
        .tensors
        .iter()
        .zip(ranges)
        .zip(hists.into_inner().unwrap())
        .map(|((t, (min, max)), (hist, abs_hist))| (t.clone(), TensorStats { min, max, hist, abs_hist }))
        .collect())
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn bin_of(x: f32, lo: f32, width: f32) -> usize {
    if width <= 0.0 {
        return 0;
    }
    (((x - lo) / width) as usize).min(BINS - 1)
}

pub fn histogram(v: &[f32], lo: f32, hi: f32) -> Vec<u64> {
    let mut h = vec![0u64; BINS];
    let width = (hi - lo) / BINS as f32;
    for &x in v {
        h[bin_of(x, lo, width)] += 1;
    }
    h
}

pub fn abs_histogram(v: &[f32], abs_max: f32) -> Vec<u64> {
    let mut h = vec![0u64; BINS];
    let width = abs_max / BINS as f32;
    for &x in v {
        h[bin_of(x.abs(), 0.0, width)] += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_seeded_and_inside_the_image() {
        let imgs = vec![PathBuf::from("a.jpg"), PathBuf::from("b.jpg")];
        let v = views(&imgs, 3);
        assert_eq!(v.len(), 8);
        assert_eq!(v, views(&imgs, 3));
        assert!(v[0].crop.is_none() && v[4].crop.is_none());
        for c in v.iter().filter_map(|v| v.crop) {
            assert!(c[2] >= 0.4 && c[3] >= 0.4 && c[0] + c[2] <= 1.0 && c[1] + c[3] <= 1.0, "{c:?}");
        }
        assert_ne!(v[1].crop, v[5].crop);
    }

    #[test]
    fn histograms_cover_the_range() {
        let v = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let h = histogram(&v, -1.0, 1.0);
        assert_eq!(h.iter().sum::<u64>(), 5);
        assert_eq!(h[0], 1);
        assert_eq!(h[BINS - 1], 1);
        let a = abs_histogram(&v, 1.0);
        assert_eq!(a[0], 1);
        assert_eq!(a[BINS - 1], 2);
        // A constant tensor lands in one bin instead of dividing by zero.
        assert_eq!(histogram(&[3.0, 3.0], 3.0, 3.0)[0], 2);
    }
}
