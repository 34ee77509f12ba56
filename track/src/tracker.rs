//! ByteTrack (Zhang et al., ECCV 2022), as its reference implementation
//! (`yolox/tracker/byte_tracker.py`) runs it:
//!
//! 1. tracks (confirmed and lost) move ahead with their Kalman filters;
//! 2. high-score detections are matched to them by IoU (scaled by the score), optimally, at a
//!    cost limit of `match_thresh`; a lost track that matches is re-found under its old id;
//! 3. tracks still unmatched try the low-score detections (0.1 < score < `track_thresh`) at
//!    IoU ≥ 1 − `low_match_thresh` (0.5) — the occluded, blurred animals a plain tracker
//!    drops; tracks unmatched after that are lost;
//! 4. tentative tracks (born last frame) take leftover high detections or are dropped;
//! 5. leftover detections scoring `new_track_thresh` or more start tentative tracks;
//! 6. tracks lost longer than the buffer are removed, and a lost track overlapping a
//!    tracked one (IoU > 0.85) is dropped as its duplicate.
//!
//! Output: the confirmed tracks updated this frame, boxes from the filter's state.

use fieldkit_core::detect::Detection;
use serde::{Deserialize, Serialize};

use crate::assign::solve_with_limit;
use crate::error::{Result, TrackError};
use crate::kalman::{self, Cov, Mean};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ByteTrackConfig {
    /// Detections scoring at least this are "high": matched first, and can start tracks.
    pub track_thresh: f32,
    /// Detections between this and `track_thresh` are "low": matched second, never start one.
    pub low_thresh: f32,
    /// Score a leftover detection needs to start a track (ByteTrack: `track_thresh + 0.1`).
    pub new_track_thresh: f32,
    /// Cost limit (1 − IoU·score) of the first association.
    pub match_thresh: f32,
    /// Cost limit (1 − IoU) of the second association, of the low-score boxes (ByteTrack: 0.5).
    pub low_match_thresh: f32,
    /// Frames a lost track is kept for re-finding, at 30 fps (scaled by `frame_rate`).
    pub track_buffer: u32,
    pub frame_rate: f32,
    /// Scale IoU by the detection score in the first association (ByteTrack off on MOT20).
    pub fuse_score: bool,
    /// Match only detections and tracks of the same class.
    pub class_aware: bool,
    /// Estimate the camera's motion between frames from the detections themselves (the shift
    /// that brings most tracks onto a detection) and move every track by it before matching:
    /// a drone or a robot that pans moves all animals at once.
    pub motion_compensation: bool,
}

impl Default for ByteTrackConfig {
    /// The reference implementation's MOT17 settings, except for looser gates (0.95 and 0.8
    /// instead of 0.8 and 0.5) and motion compensation: on simulated detections of the shared
    /// drone sequences these lift HOTA at 5 fps from 0.34 / 0.25 / 0.12 to 0.62 / 0.46 / 0.20
    /// (low / medium / high noise; `benches/track_bench.sh`).
    fn default() -> Self {
        ByteTrackConfig {
            track_thresh: 0.5,
            low_thresh: 0.1,
            new_track_thresh: 0.6,
            match_thresh: 0.95,
            low_match_thresh: 0.8,
            track_buffer: 30,
            frame_rate: 30.0,
            fuse_score: true,
            class_aware: false,
            motion_compensation: true,
        }
    }
}

impl ByteTrackConfig {
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !(unit(self.low_thresh) && unit(self.track_thresh) && unit(self.new_track_thresh)) {
            return Err(TrackError::Setting(format!(
                "track thresholds must be between 0 and 1 (low {}, track {}, new track {})",
                self.low_thresh, self.track_thresh, self.new_track_thresh
            )));
        }
        if self.low_thresh >= self.track_thresh {
            return Err(TrackError::Setting(format!(
                "the low threshold {} must be under the track threshold {}",
                self.low_thresh, self.track_thresh
            )));
        }
        for (name, v) in [("match", self.match_thresh), ("low match", self.low_match_thresh)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(TrackError::Setting(format!("{name} threshold {v} must be in (0, 1]")));
            }
        }
        if !(self.frame_rate > 0.0 && self.frame_rate.is_finite()) {
            return Err(TrackError::Setting(format!("frame rate {} must be > 0", self.frame_rate)));
        }
        Ok(())
    }

    /// Frames a lost track survives: the buffer at the stream's frame rate.
    pub fn max_time_lost(&self) -> u64 {
        (self.frame_rate / 30.0 * self.track_buffer as f32) as u64
    }
}

/// A confirmed track in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackedBox {
    pub id: u64,
    /// `[x1, y1, x2, y2]` from the filter's state after this frame's update.
    pub bbox: [f32; 4],
    /// Score of the detection that updated it.
    pub score: f32,
    pub class: usize,
    /// Index, in this frame's input, of the detection that updated it.
    pub detection: usize,
    /// On the first frame a track is reported, the detection it was born from in an earlier
    /// frame (a tentative track is confirmed a frame after its birth): counting sees where the
    /// animal came from, so a line crossed in those frames still counts.
    pub born: Option<[f32; 4]>,
}

/// For each of a frame's `n` input detections, the id of the track it updated (`None` for a
/// detection no reported track took): how callers label their own detections with track ids.
pub fn ids_by_detection(tracks: &[TrackedBox], n: usize) -> Vec<Option<u64>> {
    let mut ids = vec![None; n];
    for t in tracks {
        ids[t.detection] = Some(t.id);
    }
    ids
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    mean: Mean,
    cov: Cov,
    state: State,
    /// Confirmed: born in the first frame or matched again after birth.
    activated: bool,
    score: f32,
    class: usize,
    start_frame: u64,
    /// Last frame a detection updated it.
    end_frame: u64,
    /// The detection it was born from, until it is first reported.
    born: Option<[f32; 4]>,
    /// Index of the detection that last updated it, in that frame's input.
    detection: usize,
}

impl Track {
    fn bbox(&self) -> [f64; 4] {
        kalman::xyxy(&self.mean)
    }

    /// Detection `index` matched it (`update`, or `re_activate` for a lost track).
    fn take(&mut self, d: &Detection, index: usize, frame: u64) {
        self.detection = index;
        kalman::update(&mut self.mean, &mut self.cov, kalman::xyah(d.bbox.map(f64::from)));
        self.state = State::Tracked;
        self.activated = true;
        self.score = d.score;
        self.class = d.class;
        self.end_frame = frame;
    }
}

/// A ByteTrack tracker over one stream. Feed it every frame in order, empty ones included,
/// so lost tracks age.
#[derive(Debug, Clone)]
pub struct ByteTrack {
    cfg: ByteTrackConfig,
    frame: u64,
    next_id: u64,
    tracked: Vec<Track>,
    lost: Vec<Track>,
}

/// A cost no match takes (over every limit), for pairs of different classes.
const FORBIDDEN: f64 = 1e6;

impl ByteTrack {
    pub fn new(cfg: ByteTrackConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(ByteTrack { cfg, frame: 0, next_id: 1, tracked: Vec::new(), lost: Vec::new() })
    }

    pub fn config(&self) -> &ByteTrackConfig {
        &self.cfg
    }

    /// Frames seen so far.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Advances one frame with its detections; returns the confirmed tracks updated in it,
    /// by id.
    pub fn update(&mut self, dets: &[Detection]) -> Result<Vec<TrackedBox>> {
        self.frame += 1;
        let f = self.frame;
        let cfg = self.cfg.clone();
        // Indices into `dets` of the high and the low boxes.
        let high_at: Vec<usize> = (0..dets.len()).filter(|&i| dets[i].score >= cfg.track_thresh).collect();
        let low_at: Vec<usize> =
            (0..dets.len()).filter(|&i| dets[i].score > cfg.low_thresh && dets[i].score < cfg.track_thresh).collect();
        let high: Vec<&Detection> = high_at.iter().map(|&i| &dets[i]).collect();
        let low: Vec<&Detection> = low_at.iter().map(|&i| &dets[i]).collect();

        let (mut pool, mut unconfirmed): (Vec<Track>, Vec<Track>) =
            std::mem::take(&mut self.tracked).into_iter().partition(|t| t.activated);
        pool.append(&mut self.lost);
        for t in &mut pool {
            if t.state != State::Tracked {
                // A lost box keeps moving but stops growing (ByteTrack's multi_predict).
                t.mean[7] = 0.0;
            }
            kalman::predict(&mut t.mean, &mut t.cov);
        }
        if cfg.motion_compensation {
            if let Some([dx, dy]) = camera_shift(&pool, &high) {
                for t in pool.iter_mut().chain(unconfirmed.iter_mut()) {
                    t.mean[0] += dx;
                    t.mean[1] += dy;
                }
            }
        }

        // 1. Confirmed and lost tracks × high detections.
        let m1 = self.associate(&pool, &high, cfg.fuse_score, cfg.match_thresh)?;
        let mut track_used = vec![false; pool.len()];
        let mut high_used = vec![false; high.len()];
        for &(t, d) in &m1 {
            pool[t].take(high[d], high_at[d], f);
            track_used[t] = true;
            high_used[d] = true;
        }

        // 2. Tracks that were being tracked (not lost) × low detections, IoU ≥ 0.5.
        let second: Vec<usize> =
            (0..pool.len()).filter(|&t| !track_used[t] && pool[t].state == State::Tracked).collect();
        let second_tracks: Vec<Track> = second.iter().map(|&t| pool[t].clone()).collect();
        for (k, d) in self.associate(&second_tracks, &low, false, cfg.low_match_thresh)? {
            pool[second[k]].take(low[d], low_at[d], f);
            track_used[second[k]] = true;
        }
        for &t in &second {
            if !track_used[t] {
                pool[t].state = State::Lost;
            }
        }

        // 3. Tentative tracks × the high detections left.
        let rest_at: Vec<usize> = (0..high.len()).filter(|&d| !high_used[d]).map(|d| high_at[d]).collect();
        let rest: Vec<&Detection> = rest_at.iter().map(|&i| &dets[i]).collect();
        let m3 = self.associate(&unconfirmed, &rest, cfg.fuse_score, 0.7)?;
        let mut rest_used = vec![false; rest.len()];
        let mut kept_unconfirmed = vec![false; unconfirmed.len()];
        for &(t, d) in &m3 {
            unconfirmed[t].take(rest[d], rest_at[d], f);
            kept_unconfirmed[t] = true;
            rest_used[d] = true;
        }

        // 4. Births.
        let mut born = Vec::new();
        for (d, det) in rest.iter().enumerate() {
            if rest_used[d] || det.score < cfg.new_track_thresh {
                continue;
            }
            let (mean, cov) = kalman::initiate(kalman::xyah(det.bbox.map(f64::from)));
            born.push(Track {
                id: self.next_id,
                mean,
                cov,
                state: State::Tracked,
                activated: f == 1,
                score: det.score,
                class: det.class,
                start_frame: f,
                end_frame: f,
                born: (f > 1).then_some(det.bbox),
                detection: rest_at[d],
            });
            self.next_id += 1;
        }

        // 5. Lists for the next frame; lost tracks past the buffer are forgotten.
        let max_lost = cfg.max_time_lost();
        let mut tracked = Vec::new();
        let mut lost = Vec::new();
        for t in pool {
            match t.state {
                State::Tracked => tracked.push(t),
                State::Lost if f - t.end_frame <= max_lost => lost.push(t),
                State::Lost => {}
            }
        }
        tracked.extend(unconfirmed.into_iter().zip(kept_unconfirmed).filter_map(|(t, keep)| keep.then_some(t)));
        tracked.extend(born);
        let (tracked, lost) = remove_duplicates(tracked, lost);
        self.tracked = tracked;
        self.lost = lost;

        let mut out: Vec<TrackedBox> = self
            .tracked
            .iter_mut()
            .filter(|t| t.activated && t.end_frame == f)
            .map(|t| TrackedBox {
                id: t.id,
                bbox: t.bbox().map(|v| v as f32),
                score: t.score,
                class: t.class,
                born: t.born.take(),
                detection: t.detection,
            })
            .collect();
        out.sort_by_key(|t| t.id);
        Ok(out)
    }

    /// Optimal matches (track index, detection index) at cost 1 − IoU (× score when `fuse`)
    /// under `limit`.
    fn associate(&self, tracks: &[Track], dets: &[&Detection], fuse: bool, limit: f32) -> Result<Vec<(usize, usize)>> {
        let (n, m) = (tracks.len(), dets.len());
        let mut cost = vec![0.0; n * m];
        for (i, t) in tracks.iter().enumerate() {
            let tb = t.bbox();
            for (j, d) in dets.iter().enumerate() {
                let iou = iou64(&tb, &d.bbox.map(f64::from));
                let sim = if fuse { iou * d.score as f64 } else { iou };
                cost[i * m + j] = if self.cfg.class_aware && t.class != d.class { FORBIDDEN } else { 1.0 - sim };
            }
        }
        solve_with_limit(n, m, &cost, limit as f64)
    }
}

/// IoU of two `[x1, y1, x2, y2]` boxes in f64 (0 for empty ones).
pub fn iou64(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The image shift since the last frame that the tracks agree on: among the displacements from
/// each tracked box's prediction to the high-score detections within 8 box sizes of it, the one
/// that puts the most tracks within a quarter of their size of a detection (a vote, as
/// RANSAC), refined as the median over those tracks. `None` unless at least 3 tracks agree,
/// and clearly more (two more, and a quarter more) than without any shift. Each track only
/// looks at the detections near it, so the vote stays linear in the number of animals.
fn camera_shift(tracks: &[Track], dets: &[&Detection]) -> Option<[f64; 2]> {
    let centre = |b: [f64; 4]| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
    let det_centres: Vec<[f64; 2]> = dets.iter().map(|d| centre(d.bbox.map(f64::from))).collect();
    // Per tracked box: its tolerance and its displacements to the detections near it.
    let near: Vec<(f64, Vec<[f64; 2]>)> = tracks
        .iter()
        .filter(|t| t.state == State::Tracked)
        .map(|t| {
            let b = t.bbox();
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            let p = centre(b);
            let reach = 8.0 * w.max(h);
            let v = det_centres
                .iter()
                .map(|d| [d[0] - p[0], d[1] - p[1]])
                .filter(|v| v[0].abs() < reach && v[1].abs() < reach)
                .collect();
            (0.25 * w.min(h).max(1.0), v)
        })
        .collect();
    if near.len() < 3 {
        return None;
    }
    let dist2 = |a: &[f64; 2], s: [f64; 2]| (a[0] - s[0]).powi(2) + (a[1] - s[1]).powi(2);
    // For a shift: the tracks that land near a detection, with their own displacement.
    let agree = |s: [f64; 2]| -> Vec<[f64; 2]> {
        near.iter()
            .filter_map(|(tol, vs)| {
                vs.iter()
                    .filter(|v| dist2(v, s) < tol * tol)
                    .min_by(|a, b| dist2(a, s).total_cmp(&dist2(b, s)))
                    .copied()
            })
            .collect()
    };
    let still = agree([0.0, 0.0]).len();
    let mut best: Option<(usize, [f64; 2])> = None;
    for s in near.iter().flat_map(|(_, vs)| vs.iter().copied()) {
        let n = agree(s).len();
        if best.is_none_or(|(m, _)| n > m) {
            best = Some((n, s));
        }
    }
    let (n, s) = best?;
    // A shift must win clearly: with noisy boxes a spurious one can beat standing still by a
    // track or two.
    if n < 3 || n < still + 2 || (n as f64) < 1.25 * still as f64 {
        return None;
    }
    let inliers = agree(s);
    let median = |k: usize| {
        let mut v: Vec<f64> = inliers.iter().map(|d| d[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Some([median(0), median(1)])
}

/// A tracked and a lost track on the same spot (1 − IoU < 0.15) are one animal: the one
/// followed for fewer frames goes.
fn remove_duplicates(tracked: Vec<Track>, lost: Vec<Track>) -> (Vec<Track>, Vec<Track>) {
    let mut drop_a = vec![false; tracked.len()];
    let mut drop_b = vec![false; lost.len()];
    for (p, a) in tracked.iter().enumerate() {
        for (q, b) in lost.iter().enumerate() {
            if 1.0 - iou64(&a.bbox(), &b.bbox()) < 0.15 {
                let (age_a, age_b) = (a.end_frame - a.start_frame, b.end_frame - b.start_frame);
                if age_a > age_b {
                    drop_b[q] = true;
                } else {
                    drop_a[p] = true;
                }
            }
        }
    }
    let keep =
        |v: Vec<Track>, drop: Vec<bool>| v.into_iter().zip(drop).filter_map(|(t, d)| (!d).then_some(t)).collect();
    (keep(tracked, drop_a), keep(lost, drop_b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, score: f32) -> Detection {
        Detection { bbox: [x, y, x + 40.0, y + 80.0], class: 0, score }
    }

    #[test]
    fn keeps_ids_through_motion_and_a_low_score_frame() {
        let mut bt = ByteTrack::new(ByteTrackConfig::default()).unwrap();
        let mut ids = Vec::new();
        for t in 0..30 {
            let x = 10.0 + 4.0 * t as f32;
            // Frames 10..13: the first animal is half hidden, its score drops to 0.3.
            let s = if (10..13).contains(&t) { 0.3 } else { 0.9 };
            let out = bt.update(&[det(x, 20.0, s), det(400.0 - 3.0 * t as f32, 200.0, 0.8)]).unwrap();
            assert_eq!(out.len(), 2, "frame {t}: {out:?}");
            ids.push((out[0].id, out[1].id));
        }
        assert!(ids.iter().all(|&p| p == (1, 2)), "{ids:?}");
    }

    #[test]
    fn tentative_tracks_need_a_second_frame_and_noise_does_not_start_one() {
        let mut bt = ByteTrack::new(ByteTrackConfig::default()).unwrap();
        assert_eq!(bt.update(&[det(0.0, 0.0, 0.9)]).unwrap().len(), 1, "frame 1 confirms at once");
        // A new animal in frame 2 is tentative, confirmed in frame 3.
        assert_eq!(bt.update(&[det(0.0, 0.0, 0.9), det(300.0, 0.0, 0.9)]).unwrap().len(), 1);
        assert_eq!(bt.update(&[det(0.0, 0.0, 0.9), det(300.0, 0.0, 0.9)]).unwrap().len(), 2);
        // Under new_track_thresh: never a track.
        for _ in 0..3 {
            let out = bt.update(&[det(0.0, 0.0, 0.9), det(300.0, 0.0, 0.9), det(600.0, 0.0, 0.55)]).unwrap();
            assert_eq!(out.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2]);
        }
    }

    #[test]
    fn a_lost_track_is_refound_within_the_buffer_and_forgotten_after() {
        let cfg = ByteTrackConfig { track_buffer: 10, ..Default::default() };
        let mut bt = ByteTrack::new(cfg).unwrap();
        for _ in 0..5 {
            bt.update(&[det(100.0, 100.0, 0.9)]).unwrap();
        }
        for _ in 0..5 {
            assert!(bt.update(&[]).unwrap().is_empty());
        }
        assert_eq!(bt.update(&[det(100.0, 100.0, 0.9)]).unwrap()[0].id, 1, "re-found");
        for _ in 0..12 {
            bt.update(&[]).unwrap();
        }
        bt.update(&[det(100.0, 100.0, 0.9)]).unwrap();
        let out = bt.update(&[det(100.0, 100.0, 0.9)]).unwrap();
        assert_eq!(out[0].id, 2, "past the buffer: a new id");
    }

    /// A row of animals 40 px apart; the camera pans 30 px in one frame. Without motion
    /// compensation every track takes its neighbour's box (IoU 0.5 against 0 for its own);
    /// with it every id stays.
    #[test]
    fn motion_compensation_follows_a_sudden_pan() {
        let row = |dx: f32| -> Vec<Detection> {
            (0..6)
                .map(|i| Detection {
                    bbox: [i as f32 * 40.0 + dx, 0.0, i as f32 * 40.0 + dx + 30.0, 30.0],
                    class: 0,
                    score: 0.9,
                })
                .collect()
        };
        for (cmc, want_same) in [(true, true), (false, false)] {
            let mut bt = ByteTrack::new(ByteTrackConfig { motion_compensation: cmc, ..Default::default() }).unwrap();
            let before: Vec<(u64, f32)> = (0..3)
                .map(|_| bt.update(&row(0.0)).unwrap())
                .last()
                .unwrap()
                .iter()
                .map(|t| (t.id, t.bbox[0]))
                .collect();
            let after = bt.update(&row(30.0)).unwrap();
            // Same id on the same animal: its box moved by the pan.
            let same =
                before.iter().all(|(id, x)| after.iter().any(|t| t.id == *id && (t.bbox[0] - x - 30.0).abs() < 3.0));
            assert_eq!(same, want_same, "motion compensation {cmc}: {before:?} -> {after:?}");
        }
    }

    /// Each reported track names the detection that updated it, whichever round matched it.
    #[test]
    fn tracks_name_their_detection() {
        let mut bt = ByteTrack::new(ByteTrackConfig::default()).unwrap();
        for k in 0..4 {
            // Order shuffled each frame; the third box is low-score (second round).
            let mut dets =
                vec![det(0.0, 0.0, 0.9), det(200.0, 0.0, 0.8), det(400.0, 0.0, if k == 0 { 0.9 } else { 0.3 })];
            dets.rotate_left(k % 3);
            for t in bt.update(&dets).unwrap() {
                let d = &dets[t.detection];
                assert!((t.bbox[0] - d.bbox[0]).abs() < 5.0, "frame {k}: track {} on {:?}", t.id, d);
            }
        }
    }

    #[test]
    fn class_aware_matching_keeps_classes_apart() {
        let cfg = ByteTrackConfig { class_aware: true, ..Default::default() };
        let mut bt = ByteTrack::new(cfg).unwrap();
        bt.update(&[det(0.0, 0.0, 0.9)]).unwrap();
        let other = Detection { class: 1, ..det(2.0, 0.0, 0.9) };
        assert!(bt.update(&[other]).unwrap().is_empty(), "a class-1 box does not continue a class-0 track");
        assert!(ByteTrack::new(ByteTrackConfig { low_thresh: 0.6, ..Default::default() }).is_err());
    }
}
