#![allow(clippy::type_complexity)]

use dyn_clone::clone_box;
use tract_itertools::Itertools;
use tract_linalg::WeightType;
use tract_linalg::block_quant::BlockQuantFact;
use tract_linalg::mmm::{MMMInputFormat, Query, Suitable, pick_by_shape, retain_best};

use crate::internal::*;
use crate::ops::matmul::ModePicker;

use super::einsum_matmul::EinSumMatMul;

pub type Impl = Suitable;
pub type Strat = (ModePicker, Box<dyn MMMInputFormat>, Vec<Impl>);

fn single_strat(it: Impl) -> Strat {
    (ModePicker::Single, it.0.packings()[it.1].0.clone(), vec![it])
}

/// True when C's n axis is the innermost non-unit axis, so a row-major SME
/// store hits its aligned bulk path (`col_byte_stride == item_size`).
fn n_axis_contiguous(model: &TypedModel, node: &TypedNode, op: &EinSumMatMul) -> bool {
    let Some(cn) = op.c_n() else {
        return true;
    };
    let Ok(fact) = model.outlet_fact(node.id.into()) else {
        return true;
    };
    fact.shape.iter().skip(cn + 1).all(|d| d.is_one())
}

/// SME 32×32 `st1w` writes a contiguous 128-byte row; a strided n axis would
/// need a scatter, which is illegal in streaming mode without
/// FEAT_SME_FA64, which Apple does not enable. `sme_mmm_f32_32x32` is the
/// exception once M is the contiguous axis: it stores a vertical ZA slice with
/// an ordinary `st1w`. GEMV (nr==1) is unaffected.
fn tile_store_needs_n_contiguous(name: &str, nr: usize) -> bool {
    nr > 1 && (name.starts_with("sme_mmm") || name.starts_with("sme_qmmm"))
}

/// AMX 32×32 `stz` writes a contiguous row, so with a strided n axis the tile
/// goes through a scatter whose cost grows with C while the arithmetic it saves
/// grows with K. NEON wins while K is short: up to 96 on any C, up to 256 once C
/// outgrows the caches. Symbolic shapes keep the AMX pick.
fn amx_scatter_dominates(name: &str, nr: usize, query: &Query) -> bool {
    let (Some(m), Some(k), Some(n)) = (query.m, query.k, query.n) else {
        return false;
    };
    nr > 1 && name.starts_with("apple_amx") && (k <= 96 || (k <= 256 && m * n >= 1 << 19))
}

/// True when C's m axis is the innermost non-unit axis, so a vertical SME
/// slice is a contiguous vector.
fn m_axis_contiguous(model: &TypedModel, node: &TypedNode, op: &EinSumMatMul) -> bool {
    let Some(cm) = op.c_m() else {
        return true;
    };
    let Ok(fact) = model.outlet_fact(node.id.into()) else {
        return true;
    };
    fact.shape.iter().skip(cm + 1).all(|d| d.is_one())
}

/// The 512-bit f32 tiles by relative throughput at full fill, with C's m axis contiguous:
/// (name, mr, nr, scale).
const AVX512_F32_VECTOR_STORE: &[(&str, usize, usize, f32)] = &[
    ("avx512_mmm_f32_48x4", 48, 4, 1.0),
    ("avx512_mmm_f32_32x6", 32, 6, 0.99),
    ("avx512_mmm_f32_32x5", 32, 5, 0.985),
    ("avx512_mmm_f32_16x12", 16, 12, 0.97),
    ("avx512_mmm_f32_64x3", 64, 3, 0.97),
    ("avx512_mmm_f32_16x8", 16, 8, 0.95),
    ("avx512_mmm_f32_80x2", 80, 2, 0.9),
];

/// With C's m axis contiguous, the avx512 f32 kernels store each tile column as whole zmm
/// vectors (tract-linalg, fieldkit patch 10). The x86 cost models were fitted on a row-major C,
/// where those kernels store lane by lane: they pay a per-tile price that makes small-k shapes
/// go to the 256-bit fma tiles or the 80x2. With vector stores the 512-bit tiles win: measured
/// on MobileNetV2's pointwise shapes (m = channels, n = pixels), 48x4 runs 96x16x12544 in 0.45
/// ms where the model's fma 32x3 takes 0.80, and 144x24x3136 in 0.21 ms against 0.30+ for
/// the model's 80x2. So pick by tile fill (scale x m fill x n fill, then fewer tiles, then
/// wider nr), as tract's generic x86 picker does. `None` off avx512, for non-f32 or unknown
/// shapes, or with `TRACT_AVX512_VECTOR_STORE_PICK=0`.
pub(crate) fn avx512_vector_store_pick(query: &Query, suitable: &[Impl]) -> Option<Impl> {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON
        .get_or_init(|| std::env::var("TRACT_AVX512_VECTOR_STORE_PICK").map_or(true, |v| v != "0"))
    {
        return None;
    }
    let (Some(m), Some(_), Some(n)) = (query.m, query.k, query.n) else { return None };
    if n == 1
        || query.accumulators.first() != Some(&f32::datum_type())
        || !matches!(query.weight, WeightType::Plain(DatumType::F32))
        || query.activation != f32::datum_type()
    {
        return None;
    }
    let fill = |d: usize, tile: usize| d as f32 / (d.div_ceil(tile) * tile) as f32;
    suitable
        .iter()
        .filter(|(k, packing, pe)| *packing == 0 && pe.is_none() && k.nr() > 1)
        .filter_map(|it| {
            let &(_, mr, nr, scale) =
                AVX512_F32_VECTOR_STORE.iter().find(|(name, ..)| *name == it.0.name())?;
            let key = (
                scale * fill(m, mr) * fill(n, nr),
                -((m.div_ceil(mr) * n.div_ceil(nr)) as i64),
                nr,
            );
            Some((key, it))
        })
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
        .map(|(_, it)| it.clone())
}

pub fn strategize(model: &TypedModel, node: &TypedNode, op: &EinSumMatMul) -> TractResult<Strat> {
    let query = query(model, node, op)?;
    let mut suitable = tract_linalg::MmmDispatch::native().suitable(&query);
    ensure!(suitable.len() > 0);
    // Only with `n` in hand: a symbolic `n` is what the packing-group reasoning below is for,
    // and it serves both roles at once, which a single pick cannot.
    if m_axis_contiguous(model, node, op)
        && let Some(chosen) = avx512_vector_store_pick(&query, &suitable)
    {
        return Ok(single_strat(chosen));
    }
    if query.n.is_some()
        && let Some(chosen) = tract_linalg::MmmDispatch::native().preferred(&query, &suitable)
    {
        let n_ok = n_axis_contiguous(model, node, op);
        let m_ok = m_axis_contiguous(model, node, op);
        // A strided N is fine for the f32 SME tile when M is the contiguous
        // axis: the kernel stores that direction as a vertical slice. Every
        // other wide tile still scatters and stays out.
        let vertical_sme = |name: &str| m_ok && name == "sme_mmm_f32_32x32";
        let scatters = |name: &str, nr: usize| {
            (tile_store_needs_n_contiguous(name, nr) && !vertical_sme(name))
                || amx_scatter_dominates(name, nr, &query)
        };
        if !n_ok && scatters(chosen.0.name(), chosen.0.nr()) {
            suitable.retain(|(k, _, _)| !scatters(k.name(), k.nr()));
            if let Some(fallback) = tract_linalg::MmmDispatch::native().preferred(&query, &suitable)
            {
                return Ok(single_strat(fallback));
            }
        } else {
            return Ok(single_strat(chosen));
        }
    }
    retain_best(&mut suitable);
    if suitable.len() == 1 {
        return Ok(single_strat(suitable.remove(0)));
    }
    if let Some(ix) = pick_by_shape(&query, &suitable) {
        return Ok(single_strat(suitable.swap_remove(ix)));
    }
    let mut grouped_by_left_packing = Vec::<(&dyn MMMInputFormat, Vec<_>)>::new();
    'mmm: for (m, p, pe) in &suitable {
        let left_packing: &dyn MMMInputFormat =
            pe.as_ref().map(|pe| &*pe.from).unwrap_or(&*m.packings()[*p].0);
        for group in &mut grouped_by_left_packing {
            if let Some(merged) = group.0.merge_with(left_packing) {
                group.0 = merged;
                group.1.push((m, p, pe));
                continue 'mmm;
            }
        }
        grouped_by_left_packing.push((left_packing, vec![(m, p, pe)]));
    }
    let (p, mmv, mmm) = grouped_by_left_packing
        .iter()
        .map(|(p, group)| {
            let best_for_mmv =
                group.iter().max_by_key(|(m, _, pe)| (m.nr() == 1, pe.is_none())).unwrap();
            let best_for_mmm = group.iter().max_by_key(|(m, _, _)| m.nr()).unwrap();
            (p, best_for_mmv, best_for_mmm)
        })
        .max_by_key(|(_, mmv, mmm)| {
            // When no group offers the ideal (true GEMV nr==1 + true matrix nr>1)
            // pair, still prefer a group whose matrix-role kernel is a real matrix
            // (nr > 1) over a GEMV-only group. Without this, int8 — whose GEMV
            // (64x1), SMLAL (8x8) and SDOT (8x8_dot) kernels each use a different
            // packing, so no single group is ideal — falls through to `mmm.mr` and
            // picks the 64x1 GEMV even for symbolic (dynamic) n. f32/f16/block-quant
            // are unaffected: they have a packing group that IS ideal (e.g. f32
            // 32x1/32x3, q40 32x1/32x3), so the first key already decides.
            (
                mmv.0.nr() == 1 && mmm.0.nr() > 1,
                mmv.2.is_none(),
                mmm.0.nr() > 1,
                mmm.0.mr(),
                mmm.0.nr(),
            )
        })
        .unwrap();

    if mmm == mmv {
        Ok((ModePicker::Single, clone_box(*p), vec![(mmv.0.clone(), *mmv.1, mmv.2.clone())]))
    } else {
        Ok((
            ModePicker::VecVsMat,
            clone_box(*p),
            vec![(mmv.0.clone(), *mmv.1, mmv.2.clone()), (mmm.0.clone(), *mmm.1, mmm.2.clone())],
        ))
    }
}

/// The node's matmul as kernel selection sees it: operand types from the input facts, dims
/// wherever they are already concrete.
pub fn query(model: &TypedModel, node: &TypedNode, op: &EinSumMatMul) -> TractResult<Query> {
    let (a_fact, b_fact) = model.node_input_facts(node.id)?.into_iter().collect_tuple().unwrap();
    let a_dt = a_fact.datum_type;
    let b_dt = b_fact.datum_type;

    let a_weight: WeightType = if let Some(of) = a_fact.exotic_fact() {
        if let Some(bqf) = of.downcast_ref::<BlockQuantFact>() {
            WeightType::BlockQuant(bqf.format.clone())
        } else {
            bail!("Can not translate to matmul operand {a_fact:?}");
        }
    } else {
        a_dt.into()
    };

    Ok(Query {
        weight: a_weight,
        activation: b_dt,
        accumulators: op.acceptable_accumulators(),
        store: Some(op.operating_dt.unquantized()),
        allow_extractor: true,
        m: op.m.as_i64().map(|d| d as usize),
        k: op.k.as_i64().map(|d| d as usize),
        n: op.n.as_i64().map(|d| d as usize),
    })
}

#[cfg(test)]
mod sme_strided_store {
    use super::*;
    use crate::ops::einsum::EinSum;
    use crate::ops::matmul::optimized::OptMatMul;

    fn optimize_mn(m: usize, k: usize, n: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let a = model.add_source("a", f32::fact([m, k])).unwrap();
        let b = model.add_source("b", f32::fact([k, n])).unwrap();
        let out = model
            .wire_node(
                "gemm",
                EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type()),
                &[a, b],
            )
            .unwrap();
        model.select_output_outlets(&out).unwrap();
        model.optimize().unwrap();
        model
    }

    fn run_mn(model: &TypedModel, m: usize, k: usize, n: usize) -> Tensor {
        let a = Tensor::from_shape(
            &[m, k],
            &(0..m * k).map(|i| (i % 13) as f32 - 6.0).collect::<Vec<_>>(),
        )
        .unwrap();
        let b = Tensor::from_shape(
            &[k, n],
            &(0..k * n).map(|i| (i % 7) as f32 * 0.5).collect::<Vec<_>>(),
        )
        .unwrap();
        let plan = model.clone().into_runnable().unwrap();
        plan.run(tvec!(a.into_tvalue(), b.into_tvalue())).unwrap().remove(0).into_tensor()
    }

    /// C [m, n] row-major with n a multiple of 16: the operands swap so C's contiguous axis (n)
    /// is the kernel's m, and the product is unchanged (fieldkit patch 11).
    #[test]
    fn contiguous_axis_goes_on_the_vector_lanes() {
        let (m, k, n) = (200, 16, 96);
        let model = optimize_mn(m, k, n);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        assert_eq!(mm.c_m_axis, Some(1), "C's contiguous axis is not m: {mm:?}");
        let mut reference = TypedModel::default();
        let a = reference.add_source("a", f32::fact([m, k])).unwrap();
        let b = reference.add_source("b", f32::fact([k, n])).unwrap();
        let out = reference
            .wire_node(
                "gemm",
                EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type()),
                &[a, b],
            )
            .unwrap();
        reference.select_output_outlets(&out).unwrap();
        let want = run_mn(&reference, m, k, n);
        let got = run_mn(&model, m, k, n);
        want.close_enough(&got, Approximation::Close).unwrap();
    }

    /// A contiguous dim that does not fill 16-lane vectors keeps the shape rule (m >= n).
    #[test]
    fn ragged_contiguous_axis_keeps_the_shape_rule() {
        let model = optimize_mn(1280, 320, 49);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        assert_eq!(mm.c_m_axis, Some(0));
    }

    /// On avx512, a contiguous-m f32 matmul runs a 512-bit tile: the 256-bit fma 32x3 the cost
    /// model names for 96x16x12544 stores half as much per instruction.
    #[test]
    fn contiguous_m_picks_a_512_bit_tile() {
        if !tract_linalg::MmmDispatch::native()
            .runnable()
            .iter()
            .any(|k| k.name() == "avx512_mmm_f32_48x4")
        {
            return;
        }
        let model = optimize_mn(12544, 16, 96);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        assert_eq!(mm.mmm[0].name(), "avx512_mmm_f32_48x4");
    }

    fn has_tile_kernel() -> bool {
        tract_linalg::MmmDispatch::native()
            .runnable()
            .iter()
            .any(|k| tile_store_needs_n_contiguous(k.name(), k.nr()))
    }

    /// m<n transposes so n is no longer innermost and m is. The f32 SME tile
    /// stores that direction; the i32 SME tile still must not.
    #[test]
    fn strided_n_does_not_select_scattering_tile() {
        if !has_tile_kernel() {
            return;
        }
        let model = optimize_mn(64, 64, 160);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        let name = mm.mmm[0].name();
        let sme_f32 = tract_linalg::MmmDispatch::native()
            .runnable()
            .iter()
            .any(|k| k.name() == "sme_mmm_f32_32x32");
        if sme_f32 {
            assert_eq!(name, "sme_mmm_f32_32x32", "m-contiguous GEMM selected {name}");
        } else {
            assert!(
                !tile_store_needs_n_contiguous(name, mm.mmm[0].nr()),
                "strided-n GEMM selected {name}"
            );
        }
    }

    /// m>n keeps n innermost, so the SME 32x32 tile is correct.
    #[test]
    fn contiguous_n_selects_wide_tile() {
        if !has_tile_kernel() {
            return;
        }
        let model = optimize_mn(160, 64, 64);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        assert!(
            tile_store_needs_n_contiguous(mm.mmm[0].name(), mm.mmm[0].nr()),
            "contiguous-n GEMM selected {}",
            mm.mmm[0].name()
        );
    }

    fn has_amx_tile() -> bool {
        tract_linalg::MmmDispatch::native()
            .runnable()
            .iter()
            .any(|k| k.nr() > 1 && k.name().starts_with("apple_amx"))
    }

    /// m<n leaves n strided; with a short K the AMX scatter costs more than NEON.
    #[test]
    fn short_k_strided_n_avoids_amx() {
        if !has_amx_tile() {
            return;
        }
        let model = optimize_mn(64, 64, 160);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        let name = mm.mmm[0].name();
        assert!(!name.starts_with("apple_amx"), "short-K strided-n GEMM selected {name}");
    }

    /// With a long K the AMX arithmetic outweighs its scatter, so AMX stays.
    #[test]
    fn long_k_strided_n_keeps_amx() {
        if !has_amx_tile() {
            return;
        }
        let model = optimize_mn(64, 512, 160);
        let mm = model.nodes.iter().find_map(|n| n.op_as::<OptMatMul>()).expect("OptMatMul");
        let name = mm.mmm[0].name();
        assert!(name.starts_with("apple_amx"), "long-K strided-n GEMM selected {name}");
    }
}
