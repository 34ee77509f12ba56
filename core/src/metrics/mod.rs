//! Metrics, each checked against an independent reference (sklearn, pycocotools) through
//! golden files in `core/tests/golden/`.

pub mod box_fit;
pub mod boxes;
pub mod classify;
pub mod coco_eval;
pub mod count;
pub mod segment;

pub use box_fit::BoxFitReport;
pub use boxes::{giou, iou};
pub use classify::{ClassMetrics, ClassificationReport};
pub use coco_eval::{ClassAp, CocoEval};
pub use count::CountReport;
pub use segment::{SegClassMetrics, SegConfusion, SegmentationReport};
