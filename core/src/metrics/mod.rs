//! Metrics, each checked against an independent reference (sklearn, pycocotools) through
//! golden files in `core/tests/golden/`.

pub mod boxes;
pub mod classify;
pub mod coco_eval;
pub mod count;

pub use boxes::{giou, iou};
pub use classify::{ClassMetrics, ClassificationReport};
pub use coco_eval::{CocoEval, ClassAp};
pub use count::CountReport;
