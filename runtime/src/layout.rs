//! Where the channel axis sits while tract runs a model's convolutions. ONNX vision models
//! are NCHW; tract can run each float convolution channel-last instead (its `conv_nhwc`
//! rewrite: the input moved channel-last, the conv and depthwise conv run on NHWC data, and
//! the moves between consecutive convs cancel out). That changes which kernels run, not
//! the arithmetic: outputs agree with the NCHW plan to float rounding.
//!
//! Measured with `fieldkit bench --layout nchw,nhwc` (2-core AVX-512 Xeon, tract 0.23.9,
//! p50): the shared MobileNetV2-224 20.0 → 17.2 ms, fieldkit's weed classifier at 96 px
//! 5.0 → 3.3 ms, its INT8 QDQ copy 6.6 → 4.7 ms, the sesame detector at 320 px 40.4 →
//! 37.5 ms, YOLOX-nano 36.1 → 35.7 ms. Hence channel-last by default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The ONNX graph's own layout.
    Nchw,
    /// Float convolutions run channel-last (the default).
    #[default]
    Nhwc,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

    /// Rewrites a decluttered model for this layout; the result is decluttered again so the
    /// axis moves between consecutive convolutions cancel before optimization.
    pub(crate) fn apply(self, model: TypedModel) -> TractResult<TypedModel> {
        match self {
            Layout::Nchw => Ok(model),
            Layout::Nhwc => {
                let rewrite = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
                    .ok_or_else(|| TractError::msg("this tract build has no conv_nhwc transform"))?;
                rewrite.transform_into(model)?.into_decluttered()
            }
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        })
    }
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            other => Err(format!("unknown layout '{other}' (expected nchw or nhwc)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for l in Layout::ALL {
            assert_eq!(l.to_string().parse::<Layout>().unwrap(), l);
        }
        assert_eq!("NHWC".parse::<Layout>().unwrap(), Layout::Nhwc);
        assert!("chw".parse::<Layout>().unwrap_err().contains("'chw'"));
        assert_eq!(Layout::default(), Layout::Nhwc);
    }
}
