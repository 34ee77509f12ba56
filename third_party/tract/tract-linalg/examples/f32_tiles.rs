//! Times every runnable f32 matmul kernel on one shape, with the epilogue a 1x1 convolution
//! runs (per-channel bias, clamp to [0, 6], store), for both output orientations.
//! `cargo run --release --example f32_tiles -- M K N [mcontig|ncontig]`
use tract_data::internal::*;
use tract_linalg::BinOp;
use tract_linalg::mmm::{AsInputValue, FusedSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m: usize = args[1].parse().unwrap();
    let k: usize = args[2].parse().unwrap();
    let n: usize = args[3].parse().unwrap();
    let orient = args.get(4).map(|s| s.as_str()).unwrap_or("ncontig");
    let dispatch = tract_linalg::MmmDispatch::native();
    let pref = dispatch
        .preferred_kernel(DatumType::F32, Some(m), Some(k), Some(n))
        .map(|k| k.name().to_string())
        .unwrap_or_default();
    let a = Tensor::from_shape(&[m, k], &(0..m * k).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>()).unwrap();
    let b = Tensor::from_shape(&[k, n], &(0..k * n).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<_>>()).unwrap();
    let bias = Tensor::from_shape(&[m], &vec![0.5f32; m]).unwrap();
    let lo = tensor0(0f32);
    let hi = tensor0(6f32);
    let mut res = vec![];
    for mmm in dispatch.runnable() {
        if mmm.internal_type() != DatumType::F32 || mmm.nr() == 1 {
            continue;
        }
        if std::env::var("KERNEL").is_ok_and(|want| want != mmm.name()) {
            continue;
        }
        let packing = &mmm.packings()[0];
        if !packing.0.precursor().as_dt().is_some_and(|dt| dt == DatumType::F32)
            || !packing.1.precursor().as_dt().is_some_and(|dt| dt == DatumType::F32)
        {
            continue;
        }
        let pa = packing.0.prepare_one(&a, 1, 0).unwrap();
        let pb = packing.1.prepare_one(&b, 0, 1).unwrap();
        // ncontig: C is [m, n] row-major; mcontig: C is [n, m].
        let mut c = if orient == "mcontig" {
            Tensor::zero::<f32>(&[n, m]).unwrap()
        } else {
            Tensor::zero::<f32>(&[m, n]).unwrap()
        };
        let (ma, na) = if orient == "mcontig" { (1, 0) } else { (0, 1) };
        let mut times = vec![];
        let mut scratch = unsafe { mmm.allocate_scratch_space() };
        for _ in 0..std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(60) {
            let t = std::time::Instant::now();
            unsafe {
                let store = mmm.c_view(Some(ma), Some(na)).wrap(&c.view_mut());
                mmm.run_with_scratch_space(
                    m,
                    n,
                    scratch.as_mut(),
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&*pa),
                            b: AsInputValue::Borrowed(&*pb),
                            packing: 0,
                        },
                        FusedSpec::BinPerRow(bias.view(), BinOp::Add),
                        FusedSpec::BinScalar(&lo, BinOp::Max),
                        FusedSpec::BinScalar(&hi, BinOp::Min),
                        FusedSpec::Store(store),
                    ],
                )
                .unwrap();
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        res.push((times[times.len() / 2], mmm.name().to_string()));
    }
    res.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let flop = 2.0 * (m * k * n) as f64;
    println!("m:{m} k:{k} n:{n} {orient}; cost model picks {pref}");
    for (t, name) in res {
        let mark = if name == pref { " <= picked" } else { "" };
        println!("  {name:26} {t:7.3} ms {:6.1} GFLOP/s{mark}", flop / t / 1e6);
    }
}
