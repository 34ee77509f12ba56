//! fieldkit-track: stable identities for detections across frames, and the scores that say
//! how stable they are.
//!
//! - [`mot`]: MOTChallenge text files (`frame,id,x,y,w,h,conf,…`), the format trackers are
//!   benchmarked in, read with line-numbered errors and written atomically.
//! - [`tracker`]: ByteTrack (Zhang et al. 2022) — a constant-velocity Kalman filter per track
//!   ([`kalman`]), high-score detections matched first, low-score ones second, births and
//!   deaths with hysteresis.
//! - [`metrics`]: CLEAR MOT (MOTA, MOTP, ID switches, fragmentations), Identity (IDF1) and
//!   HOTA (DetA, AssA, LocA), equal to TrackEval and py-motmetrics on the golden cases in
//!   `tests/data/mot`.
//! - [`zones`], [`counting`]: counting lines and polygon zones; crossings per direction and
//!   class, entries, occupancy, dwell times, distance moved and time standing still.
//! - [`assign`]: the optimal assignment both use (scipy's solver, with a cost limit).

pub mod assign;
pub mod counting;
pub mod error;
pub mod kalman;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod mot;
pub mod tracker;
pub mod zones;

pub use counting::{CountSettings, CountSummary, Counter, Event};
pub use error::{Result, TrackError};
#[cfg(feature = "metrics")]
pub use metrics::{evaluate, MotScores};
pub use mot::{MotRow, Sequence};
pub use tracker::{ids_by_detection, ByteTrack, ByteTrackConfig, TrackedBox};
pub use zones::{Line, Zone};
