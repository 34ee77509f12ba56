//! The models' side of mixed precision (`--precision f16|bf16`): a model computes in the dtype
//! of its convolution and linear weights. [`lowered`] makes the half-precision copy a step
//! runs; the f32 weights it was made from stay the ones the optimizer updates (the casts are
//! autodiff operations, so their gradients arrive in f32). BatchNorm stays in f32 (its
//! statistics, like PyTorch's autocast keeps them): `ConvBn` hands it f32 and takes its output
//! back to the compute dtype. Inputs are converted where they meet the first weight, and every
//! model's output comes back as f32, so losses, metrics and exports never see a half tensor.
//! In f32 every conversion here is a no-op.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// `x` in `dtype` (itself when it already is).
pub fn to_dtype<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(FloatDType::from(dtype))
    }
}

/// `x` as f32, the dtype every model output is returned in.
pub fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    to_dtype(x, DType::F32)
}

/// The copy of `model` that computes in `dtype`: every float parameter converted except
/// BatchNorm's (the `bn` of each `ConvBn`), which stays f32. On an autodiff model the
/// converted weights are functions of the originals, so gradients flow back to them.
pub fn lowered<M: Module>(model: M, dtype: FloatDType) -> M {
    model.map(&mut Lower { dtype, in_norm: 0 })
}

struct Lower {
    dtype: FloatDType,
    /// How deep inside a BatchNorm the mapper is (its parameters and running statistics).
    in_norm: usize,
}

impl Lower {
    fn is_norm(name: &str, container: &str) -> bool {
        name == "bn" && container == "Struct:ConvBn"
    }
}

impl ModuleMapper for Lower {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if Self::is_norm(name, container_type) {
            self.in_norm += 1;
        }
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        if Self::is_norm(name, container_type) {
            self.in_norm -= 1;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.in_norm > 0 {
            return param;
        }
        let dtype = DType::from(self.dtype);
        // `Param::map` keeps the cast in the graph (no new leaf), so the step's gradient reaches
        // the f32 weight the optimizer holds.
        param.map(|t| to_dtype(t, dtype))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::prelude::*;
    use burn::tensor::{DType, FloatDType};

    use super::lowered;
    use crate::model::mobilenetv2::ConvBn;

    #[derive(Default)]
    struct Dtypes(Vec<DType>);

    impl ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dtype());
        }
    }

    fn dtypes<M: Module>(m: &M) -> Vec<DType> {
        let mut v = Dtypes::default();
        m.visit(&mut v);
        v.0
    }

    /// The convolution weight is converted; BatchNorm's gamma, beta and running statistics are
    /// not; the original stays f32; the output comes back in the compute dtype of the block.
    #[test]
    fn lowering_converts_weights_but_not_batchnorm() {
        let device = Device::flex();
        if !device.supports_dtype(FloatDType::F16) {
            return;
        }
        let block = ConvBn::new(3, 4, 3, 1, 1, true, &device);
        let half = lowered(block.clone(), FloatDType::F16);
        // conv weight, then gamma, beta, running mean, running var
        assert_eq!(dtypes(&half), vec![DType::F16, DType::F32, DType::F32, DType::F32, DType::F32]);
        assert!(dtypes(&block).iter().all(|d| *d == DType::F32));
        let x = Tensor::<4>::ones([1, 3, 5, 5], &device);
        assert_eq!(half.valid().forward(x.clone()).dtype(), DType::F16);
        assert_eq!(block.valid().forward(x).dtype(), DType::F32);
    }
}
