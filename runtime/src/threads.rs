//! Intra-op threads: one inference spread over several cores (tract's rayon executor for
//! matrix products, packing, depthwise convolutions and element-wise ops). Workers give
//! throughput; threads give latency for a single stream, such as one robot camera. Behind
//! the `threads` feature (rayon), which edge builds leave out to stay small.

use crate::error::{Result, RuntimeError};

/// Whether this build can run one inference on several threads.
pub const AVAILABLE: bool = cfg!(feature = "threads");

/// Runs every later inference of this process on `n` threads (1: tract's single-threaded
/// default). Call before inferences start; it replaces tract's process-wide executor.
pub fn set_intra_op_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(RuntimeError::Run("--threads must be at least 1".into()));
    }
    #[cfg(feature = "threads")]
    {
        use tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(if n == 1 { Executor::SingleThread } else { Executor::multithread(n) });
        Ok(())
    }
    #[cfg(not(feature = "threads"))]
    {
        if n == 1 {
            Ok(())
        } else {
            Err(RuntimeError::Run(format!("--threads {n}: this build runs each inference on one thread (built without the `threads` feature, as edge builds are); use --workers for throughput")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_an_error_and_one_always_works() {
        assert!(set_intra_op_threads(0).unwrap_err().to_string().contains("at least 1"));
        set_intra_op_threads(1).unwrap();
        // Without the feature, more than one is refused with the reason.
        if !AVAILABLE {
            assert!(set_intra_op_threads(2).unwrap_err().to_string().contains("threads"));
        }
    }
}
