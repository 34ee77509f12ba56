//! The float precision an fp32 model runs in. `F16` is tract's `f32_to_f16` transform: every
//! float operator of the plan computes in half precision, the input and the outputs stay f32
//! (casts at the edges), so preprocessing and decoding do not change. It pays on boards with
//! FEAT_FP16 (Cortex-A76 in the Pi 5, the Orin's A78AE), where tract runs its f16 kernels;
//! elsewhere tract emulates f16 and it runs far slower than fp32 (`fieldkit bench` says which
//! this CPU is). Quantized models (int8 or already f16) are refused: their precision is the
//! file's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// As the ONNX file says (the default).
    #[default]
    F32,
    /// An fp32 model's float operators in half precision.
    F16,
}

impl Precision {
    /// Rewrites a decluttered fp32 model for this precision. `Err(reason)` when the model is
    /// not one this precision applies to.
    pub(crate) fn apply(self, model: TypedModel) -> Result<TypedModel, String> {
        match self {
            Precision::F32 => Ok(model),
            Precision::F16 => {
                if let Some(dt) = quantized_datum_type(&model) {
                    return Err(format!(
                        "--precision f16 runs an fp32 model in half precision; this one already holds {dt:?} \
                         tensors (a quantized file runs in the precision it was written in)"
                    ));
                }
                let rewrite = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or("this tract build has no f32_to_f16 transform")?;
                rewrite.transform_into(model).and_then(|m| m.into_decluttered()).map_err(|e| format!("{e:#}"))
            }
        }
    }
}

/// The first 8-bit or half-precision datum type among the model's tensors.
fn quantized_datum_type(model: &TypedModel) -> Option<DatumType> {
    model
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .map(|o| o.fact.datum_type)
        .find(|dt| matches!(dt.unquantized(), DatumType::I8 | DatumType::U8 | DatumType::F16))
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            other => Err(format!("unknown precision '{other}' (expected f32 or f16)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for p in [Precision::F32, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("FP16".parse::<Precision>().unwrap(), Precision::F16);
        assert!("bf16".parse::<Precision>().unwrap_err().contains("'bf16'"));
        assert_eq!(Precision::default(), Precision::F32);
    }

    fn model_with_input(dt: DatumType) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", dt.fact([1, 4])).unwrap();
        m.select_output_outlets(&[x]).unwrap();
        m
    }

    #[test]
    fn f16_refuses_a_quantized_model_and_names_what_it_holds() {
        for dt in [DatumType::I8, DatumType::U8, DatumType::F16] {
            let e = Precision::F16.apply(model_with_input(dt)).unwrap_err();
            assert!(e.contains(&format!("{dt:?}")) && e.contains("--precision f16"), "{e}");
            assert!(Precision::F32.apply(model_with_input(dt)).is_ok());
        }
        assert!(Precision::F16.apply(model_with_input(DatumType::F32)).is_ok());
    }
}
