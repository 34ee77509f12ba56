//! Probe: one 1x1 convolution as f32 Conv vs the integer forms (QLinearConv with i8 or u8
//! weights, QLinearMatMul, MatMulInteger) in tract, timed; `DUMP=1` prints the kernel each
//! matmul uses. Evidence for the quantizer's choice of QDQ (see fieldkit-quantize docs).
//! Usage: cargo run --release -p fieldkit-runtime --example qconv_probe -- C_IN C_OUT HW
use fieldkit_runtime::onnx_graph::*;
use std::time::Instant;
use tract_onnx::prelude::*;

fn t_u8(name: &str, dims: &[i64], v: &[u8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Uint8 as i32,
        raw_data: v.to_vec(),
        ..Default::default()
    }
}
fn t_i8(name: &str, dims: &[i64], v: &[i8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Int8 as i32,
        raw_data: v.iter().map(|x| *x as u8).collect(),
        ..Default::default()
    }
}
fn t_i32(name: &str, dims: &[i64], v: &[i32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Int32 as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn main() -> TractResult<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (c, o, hw) = (args[0], args[1], args[2]);
    let dir = tempfile::tempdir()?;
    let x = vec![0.5f32; c * hw * hw];
    for form in ["f32", "qlinear", "qlinear_u8w", "qmatmul", "mmint"] {
        let mut g = GraphBuilder::new("p");
        g.input_f32("x", &[Dim::Fixed(1), Dim::Fixed(c as i64), Dim::Fixed(hw as i64), Dim::Fixed(hw as i64)]);
        let w: Vec<f32> = (0..o * c).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
        if form == "f32" {
            g.initializer(tensor_f32("w", &[o as i64, c as i64, 1, 1], &w));
            g.node("Conv", &["x", "w"], &["y"], vec![]);
        } else if form == "qmatmul" || form == "mmint" {
            g.initializer(tensor_f32("xs", &[], &[0.01]));
            g.initializer(t_u8("xz", &[], &[128]));
            g.initializer(tensor_i64("s2", &[2], &[c as i64, (hw * hw) as i64]));
            g.initializer(tensor_i64("s4", &[4], &[1, o as i64, hw as i64, hw as i64]));
            g.node("Reshape", &["x", "s2"], &["x2"], vec![]);
            g.node("QuantizeLinear", &["x2", "xs", "xz"], &["xq"], vec![]);
            g.initializer(t_i8("wq", &[o as i64, c as i64], &w.iter().map(|v| (v * 254.0) as i8).collect::<Vec<_>>()));
            if form == "qmatmul" {
                g.initializer(tensor_f32("ws", &[], &[1.0 / 254.0]));
                g.initializer(t_i8("wz", &[], &[0]));
                g.initializer(tensor_f32("ys", &[], &[0.05]));
                g.initializer(t_u8("yz", &[], &[128]));
                g.node("QLinearMatMul", &["wq", "ws", "wz", "xq", "xs", "xz", "ys", "yz"], &["yq"], vec![]);
                g.node("DequantizeLinear", &["yq", "ys", "yz"], &["y2"], vec![]);
            } else {
                g.initializer(t_i8("wz", &[], &[0]));
                g.node("MatMulInteger", &["wq", "xq", "wz", "xz"], &["yi"], vec![]);
                g.node("Cast", &["yi"], &["yf"], vec![attr_int("to", 1)]);
                g.initializer(tensor_f32("sc", &[o as i64, 1], &vec![0.01 / 254.0; o]));
                g.node("Mul", &["yf", "sc"], &["y2"], vec![]);
            }
            g.node("Reshape", &["y2", "s4"], &["y"], vec![]);
        } else {
            g.initializer(tensor_f32("xs", &[], &[0.01]));
            g.initializer(t_u8("xz", &[], &[128]));
            g.node("QuantizeLinear", &["x", "xs", "xz"], &["xq"], vec![]);
            if form == "qlinear" {
                g.initializer(t_i8(
                    "wq",
                    &[o as i64, c as i64, 1, 1],
                    &w.iter().map(|v| (v * 254.0) as i8).collect::<Vec<_>>(),
                ));
                g.initializer(tensor_f32("ws", &[o as i64], &vec![1.0 / 254.0; o]));
                g.initializer(t_i8("wz", &[o as i64], &vec![0; o]));
            } else {
                g.initializer(t_u8(
                    "wq",
                    &[o as i64, c as i64, 1, 1],
                    &w.iter().map(|v| (v * 254.0 + 128.0) as u8).collect::<Vec<_>>(),
                ));
                g.initializer(tensor_f32("ws", &[o as i64], &vec![1.0 / 254.0; o]));
                g.initializer(t_u8("wz", &[o as i64], &vec![128; o]));
            }
            g.initializer(t_i32("b", &[o as i64], &vec![0; o]));
            g.initializer(tensor_f32("ys", &[], &[0.05]));
            g.initializer(t_u8("yz", &[], &[128]));
            g.node("QLinearConv", &["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz", "b"], &["yq"], vec![]);
            g.node("DequantizeLinear", &["yq", "ys", "yz"], &["y"], vec![]);
        }
        g.output_f32("y", &[Dim::Fixed(1), Dim::Fixed(o as i64), Dim::Fixed(hw as i64), Dim::Fixed(hw as i64)]);
        let p = dir.path().join(format!("{form}.onnx"));
        save(&g.into_model(13, "probe"), &p).unwrap();
        let plan = tract_onnx::onnx()
            .model_for_path(&p)?
            .with_input_fact(0, f32::fact([1, c, hw, hw]).into())?
            .into_optimized()?;
        if std::env::var("DUMP").is_ok() {
            for n in plan.nodes() {
                if n.op.name().contains("MatMul") {
                    println!("{} {:?}", n.name, n.op.info());
                }
            }
        }
        let plan = plan.into_runnable()?;
        let input = Tensor::from_shape(&[1, c, hw, hw], &x)?;
        for _ in 0..3 {
            plan.run(tvec!(input.clone().into_tvalue()))?;
        }
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            plan.run(tvec!(input.clone().into_tvalue()))?;
        }
        println!(
            "{form:12} {:.3} ms  ({} MMAC)",
            t.elapsed().as_secs_f64() * 1e3 / n as f64,
            c * o * hw * hw / 1_000_000
        );
    }
    Ok(())
}
