//! fieldkit-core: what every fieldkit stage shares — dataset formats, the one preprocessing
//! implementation, metrics, model cards, reports — so that training, quantization and the
//! runtime see the same data the same way.

pub mod card;
pub mod dataset;
pub mod detect;
pub mod error;
pub mod fsio;
pub mod image_io;
pub mod latency;
pub mod metrics;
pub mod parallel;
pub mod perturb;
pub mod preprocess;
pub mod report;
pub mod segment;
pub mod video;
pub mod wxh;

pub use card::{Decode, InputSpec, ModelCard, Task};
pub use error::{CoreError, Result};
pub use preprocess::{Geometry, Preprocess};
