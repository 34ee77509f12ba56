//! MobileNetV2 -> ONNX. burn-onnx's tracing exporter is experimental in 0.22 and needs
//! burn's capture features; the graph here is small and fixed, so we write it node by node:
//! Conv (BN folded) -> Clip(0, 6) for ReLU6, Add for residuals, GlobalAveragePool, Flatten,
//! Gemm. Only standard opset-13 operators, so tract, onnxruntime and the quantizer read it.

use std::path::Path;

use fieldkit_runtime::onnx_graph::{self, attr_int, attr_ints, tensor_f32, Dim, GraphBuilder};

use crate::error::{Result, TrainerError};
use crate::model::mobilenetv2::{ConvBn, MobileNetV2};
use crate::model::to_host;

pub const OPSET: i64 = 13;
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

/// Folds eval-mode BatchNorm into the preceding bias-free conv:
/// w' = w · γ/√(σ²+ε), b' = β − μ · γ/√(σ²+ε).
pub fn fold_conv_bn(c: &ConvBn) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
    let w = c.conv.weight.val();
    let dims: Vec<i64> = w.dims().iter().map(|d| *d as i64).collect();
    let mut weight = to_host(w);
    let gamma = to_host(c.bn.gamma.val());
    let beta = to_host(c.bn.beta.val());
    let mean = to_host(c.bn.running_mean.value());
    let var = to_host(c.bn.running_var.value());
    let eps = c.bn.epsilon;
    let out_ch = dims[0] as usize;
    let per = weight.len() / out_ch;
    let conv_bias = c.conv.bias.as_ref().map(|b| to_host(b.val())).unwrap_or_else(|| vec![0.0; out_ch]);
    let mut bias = vec![0f32; out_ch];
    for o in 0..out_ch {
        let s = (gamma[o] as f64 / (var[o] as f64 + eps).sqrt()) as f32;
        for v in &mut weight[o * per..(o + 1) * per] {
            *v *= s;
        }
        bias[o] = (beta[o] as f64 + (conv_bias[o] as f64 - mean[o] as f64) * s as f64) as f32;
    }
    (dims, weight, bias)
}

struct Writer {
    g: GraphBuilder,
    n: usize,
}

impl Writer {
    fn fresh(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}_{}", self.n)
    }

    fn conv_bn(&mut self, name: &str, c: &ConvBn, x: &str) -> String {
        let (dims, w, b) = fold_conv_bn(c);
        let wn = self.g.initializer(tensor_f32(&format!("{name}.weight"), &dims, &w));
        let bn = self.g.initializer(tensor_f32(&format!("{name}.bias"), &[dims[0]], &b));
        let [sh, sw] = c.conv.stride;
        let (k, groups) = (dims[2], c.conv.groups as i64);
        let pad = (k - 1) / 2;
        let y = self.fresh(&format!("{name}.conv"));
        self.g.node(
            "Conv",
            &[x, &wn, &bn],
            &[&y],
            vec![
                attr_ints("kernel_shape", &[dims[2], dims[3]]),
                attr_ints("strides", &[sh as i64, sw as i64]),
                attr_ints("pads", &[pad, pad, pad, pad]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", groups),
            ],
        );
        if !c.relu6 {
            return y;
        }
        let r = self.fresh(&format!("{name}.relu6"));
        self.g.node("Clip", &[&y, "relu6_min", "relu6_max"], &[&r], vec![]);
        r
    }
}

/// Writes `model` (eval mode) as ONNX taking `[N, 3, size, size]` and giving `[N, classes]`
/// logits, atomically.
pub fn export_classifier(model: &MobileNetV2, size: u32, path: &Path) -> Result<()> {
    let head = model
        .classifier
        .as_ref()
        .ok_or_else(|| TrainerError::Config("export: the model has no classifier head".into()))?;
    let mut w = Writer { g: GraphBuilder::new("fieldkit_mobilenetv2"), n: 0 };
    let s = size as i64;
    let batch = Dim::Param("N".into());
    w.g.input_f32(INPUT, &[batch.clone(), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)]);
    w.g.initializer(tensor_f32("relu6_min", &[], &[0.0]));
    w.g.initializer(tensor_f32("relu6_max", &[], &[6.0]));
    let mut x = w.conv_bn("features.0", &model.stem, INPUT);
    for (i, b) in model.blocks.iter().enumerate() {
        let name = format!("features.{}", i + 1);
        let input = x.clone();
        let mut y = input.clone();
        if let Some(e) = &b.expand {
            y = w.conv_bn(&format!("{name}.expand"), e, &y);
        }
        y = w.conv_bn(&format!("{name}.depthwise"), &b.depthwise, &y);
        y = w.conv_bn(&format!("{name}.project"), &b.project, &y);
        if b.residual {
            let sum = w.fresh(&format!("{name}.add"));
            w.g.node("Add", &[&input, &y], &[&sum], vec![]);
            y = sum;
        }
        x = y;
    }
    x = w.conv_bn("features.18", &model.last, &x);
    w.g.node("GlobalAveragePool", &[&x], &["pooled"], vec![]);
    w.g.node("Flatten", &["pooled"], &["features"], vec![attr_int("axis", 1)]);
    // burn's Linear weight is [in, out]: Gemm without transposition.
    let wd: Vec<i64> = head.weight.dims().iter().map(|d| *d as i64).collect();
    let weight = to_host(head.weight.val());
    let wn = w.g.initializer(tensor_f32("classifier.weight", &wd, &weight));
    let bias = head.bias.as_ref().map(|b| to_host(b.val())).unwrap_or_else(|| vec![0.0; wd[1] as usize]);
    let bn = w.g.initializer(tensor_f32("classifier.bias", &[wd[1]], &bias));
    w.g.node("Gemm", &["features", &wn, &bn], &[OUTPUT], vec![]);
    w.g.output_f32(OUTPUT, &[batch, Dim::Fixed(wd[1])]);
    let model = w.g.into_model(OPSET, "fieldkit");
    onnx_graph::save(&model, path)?;
    Ok(())
}
