//! `fieldkit train segment`: the LR-ASPP segmenter trained on a mask-folder dataset through
//! the shared epoch loop. So far: its losses (`loss`).

pub mod loss;

pub use loss::{seg_loss, SegLoss, SegTarget};
