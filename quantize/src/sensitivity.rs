//! Per-layer error of a quantized model against its float original, on calibration images:
//! SQNR and cosine of every quantized layer's output (as onnxruntime's qdq_loss_debug), and
//! the share of noise each layer adds itself (output noise minus the noise already in its
//! input) for the report; and each layer's effect on the model output when quantized alone,
//! which orders the fp32 fallback (local SQNR predicted accuracy poorly).

use fieldkit_core::parallel::map_indexed;
use fieldkit_core::preprocess::Preprocess;
use serde::Serialize;

use crate::calib::{prepare, Probe, View};
use crate::error::{QuantizeError, Result};
use crate::graph::{Model, Target};

#[derive(Debug, Clone, Serialize)]
pub struct LayerError {
    pub name: String,
    pub op: String,
    pub depthwise: bool,
    /// Signal-to-quantization-noise ratio of the layer's output, dB (higher is better).
    pub sqnr_db: f64,
    pub cosine: f64,
    /// Noise power (relative to signal) this layer adds on top of what its input carries.
    pub added_noise: f64,
    /// The part of it that int8 weights alone add (measured on the weights-only model).
    pub weight_noise: f64,
    pub kept_fp32: bool,
    /// int8 weights, float input activation (fallback).
    pub float_input: bool,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    signal: f64,
    noise: f64,
    dot: f64,
    na: f64,
    nb: f64,
}

impl Acc {
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as f64, y as f64);
            self.signal += x * x;
            self.noise += (x - y) * (x - y);
            self.dot += x * y;
            self.na += x * x;
            self.nb += y * y;
        }
    }
    fn merge(&mut self, o: &Acc) {
        self.signal += o.signal;
        self.noise += o.noise;
        self.dot += o.dot;
        self.na += o.na;
        self.nb += o.nb;
    }
    fn ratio(&self) -> f64 {
        if self.signal > 0.0 {
            self.noise / self.signal
        } else {
            0.0
        }
    }
    fn sqnr_db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
    fn cosine(&self) -> f64 {
        if self.na == 0.0 || self.nb == 0.0 {
            1.0
        } else {
            self.dot / (self.na.sqrt() * self.nb.sqrt())
        }
    }
}

/// Compares `quant` (and `weights_only`, the same weights with float activations) with
/// `float` on the outputs (and inputs) of every target.
#[allow(clippy::too_many_arguments)]
pub fn layer_errors(
    float: &Model,
    quant: &Model,
    weights_only: &Model,
    targets: &[Target],
    kept: &[String],
    shape: [usize; 4],
    pre: &Preprocess,
    images: &[View],
    workers: usize,
) -> Result<Vec<LayerError>> {
    let graph_inputs: Vec<String> = float.inputs().iter().map(|i| i.name.clone()).collect();
    let consumers = float.consumers();
    let outputs: Vec<String> = targets.iter().map(|t| float.activated_output(t, &consumers)).collect();
    let mut tensors: Vec<String> = Vec::new();
    for (t, out) in targets.iter().zip(&outputs) {
        for name in [out, &t.activation] {
            if !graph_inputs.contains(name) && !tensors.contains(name) {
                tensors.push(name.clone());
            }
        }
    }
    let pf = Probe::new(&float.proto, shape, &tensors)?;
    let pq = Probe::new(&quant.proto, shape, &tensors)?;
    let pw = Probe::new(&weights_only.proto, shape, &tensors)?;
    let per_image = map_indexed(
        images.len(),
        workers,
        || Ok::<_, QuantizeError>((pf.spawn()?, pq.spawn()?, pw.spawn()?)),
        |(sf, sq, sw), i| {
            let x = prepare(pre, &images[i])?;
            let a = pf.run(sf, &x)?;
            let b = pq.run(sq, &x)?;
            let c = pw.run(sw, &x)?;
            let mut acc = vec![(Acc::default(), Acc::default()); tensors.len()];
            for (((acc, a), b), c) in acc.iter_mut().zip(&a).zip(&b).zip(&c) {
                acc.0.add(a, b);
                acc.1.add(a, c);
            }
            Ok(acc)
        },
    )?;
    let mut total = vec![(Acc::default(), Acc::default()); tensors.len()];
    for accs in &per_image {
        for (t, a) in total.iter_mut().zip(accs) {
            t.0.merge(&a.0);
            t.1.merge(&a.1);
        }
    }
    let find = |name: &str| tensors.iter().position(|t| t == name).map(|i| total[i].0);
    let find_w = |name: &str| tensors.iter().position(|t| t == name).map(|i| total[i].1);
    Ok(targets
        .iter()
        .zip(&outputs)
        .map(|(t, o)| {
            let out = find(o).unwrap_or_default();
            let input_ratio = find(&t.activation).map(|a| a.ratio()).unwrap_or(0.0);
            let w_out = find_w(o).unwrap_or_default().ratio();
            let w_in = find_w(&t.activation).map(|a| a.ratio()).unwrap_or(0.0);
            LayerError {
                name: t.name.clone(),
                op: t.op.clone(),
                depthwise: t.depthwise,
                sqnr_db: out.sqnr_db(),
                cosine: out.cosine(),
                added_noise: (out.ratio() - input_ratio).max(0.0),
                weight_noise: (w_out - w_in).max(0.0),
                kept_fp32: kept.contains(&t.name),
                float_input: false,
            }
        })
        .collect())
}

/// End-to-end impact of quantizing one layer alone: the model's output noise (relative power)
/// with only that layer quantized (`full`) and with only its weights quantized (`weights`).
/// Local SQNR predicts accuracy poorly (a BN-folded layer with tiny local error can flip
/// ReLU6 channels downstream); this measures at the output the metric is computed from.
#[derive(Debug, Clone, Serialize)]
pub struct Impact {
    pub name: String,
    pub full: f64,
    pub weights: f64,
}

/// With `weights_only` the full quantization is not built (there are no activation ranges):
/// `full` is then the weights' impact too.
#[allow(clippy::too_many_arguments)]
pub fn isolated_impact(
    float: &Model,
    targets: &[Target],
    build: &(dyn Fn(&crate::int8::Keep, bool) -> Result<Model> + Sync),
    weights_only: bool,
    shape: [usize; 4],
    pre: &Preprocess,
    images: &[View],
    workers: usize,
) -> Result<Vec<Impact>> {
    let output =
        float.graph().output.first().map(|o| o.name.clone()).ok_or_else(|| float.err("the model has no output"))?;
    let outs = [output];
    let inputs: Vec<Vec<f32>> = images.iter().map(|p| prepare(pre, p)).collect::<Result<_>>()?;
    let pf = Probe::new(&float.proto, shape, &outs)?;
    let reference: Vec<Vec<f32>> = {
        let mut s = pf.spawn()?;
        inputs.iter().map(|x| Ok(pf.run(&mut s, x)?.remove(0))).collect::<Result<_>>()?
    };
    let noise = |m: &Model| -> Result<f64> {
        let p = Probe::new(&m.proto, shape, &outs)?;
        let mut s = p.spawn()?;
        let mut acc = Acc::default();
        for (x, r) in inputs.iter().zip(&reference) {
            acc.add(r, &p.run(&mut s, x)?[0]);
        }
        Ok(acc.ratio())
    };
    map_indexed(
        targets.len(),
        workers,
        || Ok::<_, QuantizeError>(()),
        |_, i| {
            let t = &targets[i];
            let others: Vec<String> = targets.iter().filter(|o| o.name != t.name).map(|o| o.name.clone()).collect();
            let keep = crate::int8::Keep::fp32(&others);
            let weights = noise(&build(&keep, true)?)?;
            let full = if weights_only { weights } else { noise(&build(&keep, false)?)? };
            Ok(Impact { name: t.name.clone(), full, weights })
        },
    )
}

/// Fallback steps from measured impacts, most harmful first: `(layer, whole)`; a layer whose
/// impact comes mostly from its weights goes back whole, else its input activation only
/// (int8 weights and the size gain stay); a second pass offers those layers whole. With
/// `whole_layers` every step is a whole layer: under inputs-and-outputs placement a layer
/// with a float input and int8 weights is a pattern onnxruntime cannot fuse into a QLinearConv
/// (the weed model ran 3x slower than its float version that way), while a float layer
/// between two quantized ones costs only its own speed.
pub fn steps_from_impact(impacts: &[Impact], kept: &[String], whole_layers: bool) -> Vec<(String, bool)> {
    let mut v: Vec<&Impact> = impacts.iter().filter(|i| !kept.contains(&i.name)).collect();
    v.sort_by(|a, b| b.full.total_cmp(&a.full));
    let first: Vec<(String, bool)> =
        v.iter().map(|i| (i.name.clone(), whole_layers || i.weights >= 0.5 * i.full)).collect();
    let second = first.iter().filter(|(_, whole)| !whole).map(|(n, _)| (n.clone(), true));
    first.clone().into_iter().chain(second).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(name: &str, full: f64, weights: f64) -> Impact {
        Impact { name: name.into(), full, weights }
    }

    #[test]
    fn steps_put_inputs_back_first_unless_whole_layers_are_asked_for() {
        let impacts = [imp("a", 1.0, 0.1), imp("b", 3.0, 2.5), imp("c", 2.0, 0.2), imp("kept", 9.0, 9.0)];
        let kept = vec!["kept".to_string()];
        let s = |v: &[(&str, bool)]| v.iter().map(|(n, w)| (n.to_string(), *w)).collect::<Vec<_>>();
        // Most harmful first; b's harm is its weights (whole), a's and c's their inputs, which a
        // second pass then offers whole.
        assert_eq!(
            steps_from_impact(&impacts, &kept, false),
            s(&[("b", true), ("c", false), ("a", false), ("c", true), ("a", true)])
        );
        assert_eq!(steps_from_impact(&impacts, &kept, true), s(&[("b", true), ("c", true), ("a", true)]));
    }
}
