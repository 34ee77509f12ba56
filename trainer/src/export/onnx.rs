//! MobileNetV2 -> ONNX. burn-onnx's tracing exporter is experimental in 0.22 and needs
//! burn's capture features; the graph here is small and fixed, so we write it node by node:
//! Conv (BN folded) -> Clip(0, 6) for ReLU6, Add for residuals, GlobalAveragePool, Flatten,
//! Gemm. Only standard opset-13 operators, so tract, onnxruntime and the quantizer read it.

use std::path::Path;

use burn::nn::conv::Conv2d;
use fieldkit_runtime::onnx_graph::{self, attr_int, attr_ints, attr_string, tensor_f32, tensor_i64, Dim, GraphBuilder};

use super::tta::{Tta, View};
use crate::error::{Result, TrainerError};
use crate::model::lraspp::{Segmenter, FINE_TAP, HIGH_TAP, LOW_TAP, STRIDE};
use crate::model::mobilenetv2::{ConvBn, MobileNetV2};
use crate::model::to_host;
use crate::model::yolox::{anchor_count, Detector, DwSep, TAPS};

pub const OPSET: i64 = 13;
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";
/// The detector's raw head output.
pub const DET_OUTPUT: &str = "output";
/// The segmenter's per-pixel class logits.
pub const SEG_OUTPUT: &str = "logits";

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
        let y = self.conv_node(name, &dims, &w, &b, c.conv.stride, c.conv.groups, x);
        if !c.relu6 {
            return y;
        }
        let r = self.fresh(&format!("{name}.relu6"));
        self.g.node("Clip", &[&y, "relu6_min", "relu6_max"], &[&r], vec![]);
        r
    }

    /// A plain conv with bias (the detector's prediction layers).
    fn conv(&mut self, name: &str, c: &Conv2d, x: &str) -> String {
        let wt = c.weight.val();
        let dims: Vec<i64> = wt.dims().iter().map(|d| *d as i64).collect();
        let w = to_host(wt);
        let b = c.bias.as_ref().map(|b| to_host(b.val())).unwrap_or_else(|| vec![0.0; dims[0] as usize]);
        self.conv_node(name, &dims, &w, &b, c.stride, c.groups, x)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_node(
        &mut self,
        name: &str,
        dims: &[i64],
        w: &[f32],
        b: &[f32],
        stride: [usize; 2],
        groups: usize,
        x: &str,
    ) -> String {
        let wn = self.g.initializer(tensor_f32(&format!("{name}.weight"), dims, w));
        let bn = self.g.initializer(tensor_f32(&format!("{name}.bias"), &[dims[0]], b));
        let [sh, sw] = stride;
        let (k, groups) = (dims[2], groups as i64);
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
        y
    }

    fn dwsep(&mut self, name: &str, m: &DwSep, x: &str) -> String {
        let y = self.conv_bn(&format!("{name}.dw"), &m.dw, x);
        self.conv_bn(&format!("{name}.pw"), &m.pw, &y)
    }

    fn binary(&mut self, op: &str, name: &str, a: &str, b: &str) -> String {
        let y = self.fresh(name);
        self.g.node(op, &[a, b], &[&y], vec![]);
        y
    }

    /// A graph with input `[N, 3, size, size]` and the ReLU6 bounds.
    fn new(name: &str, size: u32) -> Self {
        Self::new_hw(name, size, size)
    }

    /// A graph with input `[N, 3, height, width]` and the ReLU6 bounds.
    fn new_hw(name: &str, height: u32, width: u32) -> Self {
        let mut w = Writer { g: GraphBuilder::new(name), n: 0 };
        let (h, wd) = (height as i64, width as i64);
        w.g.input_f32(INPUT, &[Dim::Param("N".into()), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(wd)]);
        w.g.initializer(tensor_f32("relu6_min", &[], &[0.0]));
        w.g.initializer(tensor_f32("relu6_max", &[], &[6.0]));
        w
    }

    /// The `views` of the square input stacked along the batch, view-major: `[V·N, 3, S, S]`.
    /// Reversals are Gathers with a constant index list (one meaning in every runtime, where
    /// a negative-step Slice is read differently by some), transposes swap H and W.
    fn views(&mut self, views: &[View], size: u32) -> String {
        let reversed: Vec<i64> = (0..size as i64).rev().collect();
        let rev = self.g.initializer(tensor_i64("tta_reversed", &[size as i64], &reversed));
        let mut parts = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let mut x = INPUT.to_string();
            for (flip, axis) in [(v.flip_w, 3), (v.flip_h, 2)] {
                if flip {
                    let y = format!("view{i}.flip{axis}");
                    self.g.node("Gather", &[&x, &rev], &[&y], vec![attr_int("axis", axis)]);
                    x = y;
                }
            }
            if v.transpose {
                let y = format!("view{i}.transpose");
                self.g.node("Transpose", &[&x], &[&y], vec![attr_ints("perm", &[0, 1, 3, 2])]);
                x = y;
            }
            parts.push(x);
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.g.node("Concat", &parts, &["views"], vec![attr_int("axis", 0)]);
        "views".into()
    }

    /// torchvision `features[from..to]` of `model` applied to `x`, named as torchvision does.
    fn backbone(&mut self, model: &MobileNetV2, from: usize, to: usize, mut x: String) -> String {
        for l in from..to {
            x = match l {
                0 => self.conv_bn("features.0", &model.stem, &x),
                18 => self.conv_bn("features.18", &model.last, &x),
                n => {
                    let b = &model.blocks[n - 1];
                    let name = format!("features.{n}");
                    let input = x.clone();
                    let mut y = input.clone();
                    if let Some(e) = &b.expand {
                        y = self.conv_bn(&format!("{name}.expand"), e, &y);
                    }
                    y = self.conv_bn(&format!("{name}.depthwise"), &b.depthwise, &y);
                    y = self.conv_bn(&format!("{name}.project"), &b.project, &y);
                    if b.residual {
                        y = self.binary("Add", &format!("{name}.add"), &input, &y);
                    }
                    y
                }
            };
        }
        x
    }
}

/// Writes `model` (eval mode) as ONNX taking `[N, 3, size, size]` and giving `[N, classes]`
/// logits, atomically. With test-time views (`tta` other than none) the graph stacks the
/// views of each image into one batch, runs the network once on it and averages each image's
/// logits over its views.
pub fn export_classifier(model: &MobileNetV2, size: u32, tta: Tta, path: &Path) -> Result<()> {
    let head = model
        .classifier
        .as_ref()
        .ok_or_else(|| TrainerError::Config("export: the model has no classifier head".into()))?;
    let mut w = Writer::new("fieldkit_mobilenetv2", size);
    let batch = Dim::Param("N".into());
    let views = tta.views();
    let x = if views.len() == 1 { INPUT.to_string() } else { w.views(&views, size) };
    let x = w.backbone(model, 0, 19, x);
    w.g.node("GlobalAveragePool", &[&x], &["pooled"], vec![]);
    w.g.node("Flatten", &["pooled"], &["features"], vec![attr_int("axis", 1)]);
    // burn's Linear weight is [in, out]: Gemm without transposition.
    let wd: Vec<i64> = head.weight.dims().iter().map(|d| *d as i64).collect();
    let weight = to_host(head.weight.val());
    let wn = w.g.initializer(tensor_f32("classifier.weight", &wd, &weight));
    let bias = head.bias.as_ref().map(|b| to_host(b.val())).unwrap_or_else(|| vec![0.0; wd[1] as usize]);
    let bn = w.g.initializer(tensor_f32("classifier.bias", &[wd[1]], &bias));
    if views.len() == 1 {
        w.g.node("Gemm", &["features", &wn, &bn], &[OUTPUT], vec![]);
    } else {
        // [V·N, classes], view-major -> [V, N, classes] -> mean over the views: [N, classes].
        w.g.node("Gemm", &["features", &wn, &bn], &["view_logits"], vec![]);
        let shape = w.g.initializer(tensor_i64("views_shape", &[3], &[views.len() as i64, -1, wd[1]]));
        w.g.node("Reshape", &["view_logits", &shape], &["per_view_logits"], vec![]);
        w.g.node("ReduceMean", &["per_view_logits"], &[OUTPUT], vec![attr_ints("axes", &[0]), attr_int("keepdims", 0)]);
    }
    w.g.output_f32(OUTPUT, &[batch, Dim::Fixed(wd[1])]);
    let model = w.g.into_model(OPSET, "fieldkit");
    onnx_graph::save(&model, path)?;
    Ok(())
}

/// Writes `model` (eval mode) as ONNX taking `[N, 3, size, size]` and giving the raw head
/// `[N, anchors, 5 + classes]` in YOLOX's layout with objectness and class scores sigmoided
/// (as the shared YOLOX-nano export), atomically. The 2x upsampling is a nearest Resize.
pub fn export_detector(model: &Detector, size: u32, path: &Path) -> Result<()> {
    if !size.is_multiple_of(32) {
        return Err(TrainerError::Config(format!("export: size {size} is not a multiple of 32")));
    }
    let mut w = Writer::new("fieldkit_yolox_mobilenetv2", size);
    w.g.initializer(tensor_f32("upsample_scales", &[4], &[1.0, 1.0, 2.0, 2.0]));
    let c3 = w.backbone(&model.backbone, 0, TAPS[0], INPUT.to_string());
    let c4 = w.backbone(&model.backbone, TAPS[0], TAPS[1], c3.clone());
    let c5 = w.backbone(&model.backbone, TAPS[1], TAPS[2], c4.clone());
    let n = &model.neck;
    let up = |w: &mut Writer, x: &str| {
        let y = w.fresh("neck.upsample");
        w.g.node(
            "Resize",
            &[x, "", "upsample_scales"],
            &[&y],
            vec![
                attr_string("mode", "nearest"),
                attr_string("coordinate_transformation_mode", "asymmetric"),
                attr_string("nearest_mode", "floor"),
            ],
        );
        y
    };
    let l5 = w.conv_bn("neck.lateral.2", &n.lateral[2], &c5);
    let l4 = w.conv_bn("neck.lateral.1", &n.lateral[1], &c4);
    let l3 = w.conv_bn("neck.lateral.0", &n.lateral[0], &c3);
    let u5 = up(&mut w, &l5);
    let s4 = w.binary("Add", "neck.td.0.add", &l4, &u5);
    let p4 = w.dwsep("neck.td.0", &n.td[0], &s4);
    let u4 = up(&mut w, &p4);
    let s3 = w.binary("Add", "neck.td.1.add", &l3, &u4);
    let p3 = w.dwsep("neck.td.1", &n.td[1], &s3);
    let d3 = w.conv_bn("neck.down.0", &n.down[0], &p3);
    let s4b = w.binary("Add", "neck.bu.0.add", &p4, &d3);
    let o4 = w.dwsep("neck.bu.0", &n.bu[0], &s4b);
    let d4 = w.conv_bn("neck.down.1", &n.down[1], &o4);
    let s5b = w.binary("Add", "neck.bu.1.add", &l5, &d4);
    let o5 = w.dwsep("neck.bu.1", &n.bu[1], &s5b);
    let row = 5 + model.num_classes as i64;
    let shape = w.g.initializer(tensor_i64("level_shape", &[3], &[0, row, -1]));
    let mut levels = Vec::new();
    for (i, x) in [p3, o4, o5].iter().enumerate() {
        let h = &model.heads[i];
        let name = format!("heads.{i}");
        let mut c = x.clone();
        for (k, m) in h.cls_convs.iter().enumerate() {
            c = w.dwsep(&format!("{name}.cls_convs.{k}"), m, &c);
        }
        let mut r = x.clone();
        for (k, m) in h.reg_convs.iter().enumerate() {
            r = w.dwsep(&format!("{name}.reg_convs.{k}"), m, &r);
        }
        let reg = w.conv(&format!("{name}.reg_pred"), &h.reg_pred, &r);
        let obj = w.conv(&format!("{name}.obj_pred"), &h.obj_pred, &r);
        let cls = w.conv(&format!("{name}.cls_pred"), &h.cls_pred, &c);
        let (so, sc) = (w.fresh(&format!("{name}.obj_sigmoid")), w.fresh(&format!("{name}.cls_sigmoid")));
        w.g.node("Sigmoid", &[&obj], &[&so], vec![]);
        w.g.node("Sigmoid", &[&cls], &[&sc], vec![]);
        let cat = w.fresh(&format!("{name}.concat"));
        w.g.node("Concat", &[&reg, &so, &sc], &[&cat], vec![attr_int("axis", 1)]);
        let flat = w.fresh(&format!("{name}.flatten"));
        w.g.node("Reshape", &[&cat, &shape], &[&flat], vec![]);
        levels.push(flat);
    }
    let refs: Vec<&str> = levels.iter().map(|s| s.as_str()).collect();
    w.g.node("Concat", &refs, &["levels"], vec![attr_int("axis", 2)]);
    w.g.node("Transpose", &["levels"], &[DET_OUTPUT], vec![attr_ints("perm", &[0, 2, 1])]);
    let anchors = anchor_count(size) as i64;
    w.g.output_f32(DET_OUTPUT, &[Dim::Param("N".into()), Dim::Fixed(anchors), Dim::Fixed(row)]);
    let m = w.g.into_model(OPSET, "fieldkit");
    onnx_graph::save(&m, path)?;
    Ok(())
}

/// Writes `model` (eval mode) as ONNX taking `[N, 3, height, width]` and giving per-pixel
/// class logits `[N, classes, height, width]`, atomically. The two upsamplings are Resize
/// `linear` with half-pixel centres by fixed scales (x4 to stride 8, x8 to the input), which
/// is exact because both sides divide by 32.
pub fn export_segmenter(model: &Segmenter, height: u32, width: u32, path: &Path) -> Result<()> {
    let s = STRIDE as u32;
    if !height.is_multiple_of(s) || !width.is_multiple_of(s) {
        return Err(TrainerError::Config(format!("export: {width}x{height} does not divide by {s} on both sides")));
    }
    let mut w = Writer::new_hw("fieldkit_lraspp_mobilenetv2", height, width);
    // Only the scales the graph uses (onnxruntime warns about unused initializers).
    w.g.initializer(tensor_f32("upsample_x4", &[4], &[1.0, 1.0, 4.0, 4.0]));
    let last = if model.fine.is_some() { ("upsample_x2", 2.0) } else { ("upsample_x8", 8.0) };
    w.g.initializer(tensor_f32(last.0, &[4], &[1.0, 1.0, last.1, last.1]));
    let resize = |w: &mut Writer, name: &str, x: &str, scales: &str, out: Option<&str>| {
        let y = out.map(str::to_string).unwrap_or_else(|| w.fresh(name));
        w.g.node(
            "Resize",
            &[x, "", scales],
            &[&y],
            vec![attr_string("mode", "linear"), attr_string("coordinate_transformation_mode", "half_pixel")],
        );
        y
    };
    // With the fine decoder the stride-4 map is kept on the way.
    let (s4, low) = match &model.fine {
        Some(_) => {
            let s4 = w.backbone(&model.backbone, 0, FINE_TAP, INPUT.to_string());
            let low = w.backbone(&model.backbone, FINE_TAP, LOW_TAP, s4.clone());
            (Some(s4), low)
        }
        None => (None, w.backbone(&model.backbone, 0, LOW_TAP, INPUT.to_string())),
    };
    let high = w.backbone(&model.backbone, LOW_TAP, HIGH_TAP, low.clone());
    let h = &model.head;
    w.g.node("GlobalAveragePool", &[&high], &["head.pooled"], vec![]);
    let gate = w.conv("head.scale", &h.scale, "head.pooled");
    w.g.node("Sigmoid", &[&gate], &["head.gate"], vec![]);
    let cbr = w.conv_bn("head.cbr", &h.cbr, &high);
    let y = w.binary("Mul", "head.gated", &cbr, "head.gate");
    let y = resize(&mut w, "head.upsample", &y, "upsample_x4", None);
    let lo = w.conv("head.low_classifier", &h.low_classifier, &low);
    let hi = w.conv("head.high_classifier", &h.high_classifier, &y);
    let sum = w.binary("Add", "head.sum", &lo, &hi);
    match (&model.fine, s4) {
        (Some(f), Some(s4)) => {
            let deep4 = resize(&mut w, "fine.deep_up", &y, "upsample_x2", None);
            let skip = w.conv_bn("fine.skip", &f.skip, &s4);
            let joined = w.fresh("fine.joined");
            w.g.node("Concat", &[&deep4, &skip], &[&joined], vec![attr_int("axis", 1)]);
            let mixed = w.dwsep("fine.mix", &f.mix, &joined);
            let cls = w.conv("fine.classifier", &f.classifier, &mixed);
            let up = resize(&mut w, "fine.logits_up", &sum, "upsample_x2", None);
            let logits4 = w.binary("Add", "fine.sum", &cls, &up);
            resize(&mut w, "upsample", &logits4, "upsample_x4", Some(SEG_OUTPUT));
        }
        _ => {
            resize(&mut w, "upsample", &sum, "upsample_x8", Some(SEG_OUTPUT));
        }
    }
    let (hh, ww) = (height as i64, width as i64);
    let classes = Dim::Fixed(model.num_classes as i64);
    w.g.output_f32(SEG_OUTPUT, &[Dim::Param("N".into()), classes, Dim::Fixed(hh), Dim::Fixed(ww)]);
    let m = w.g.into_model(OPSET, "fieldkit");
    onnx_graph::save(&m, path)?;
    Ok(())
}
