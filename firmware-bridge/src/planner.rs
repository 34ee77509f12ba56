//! From detections in image pixels to nozzle open/close times.
//!
//! Geometry (all on the ground plane, metres): the camera sees a `ground_width_m` ×
//! `ground_length_m` patch; the robot drives towards the image top, so a plant moves down
//! the image and reaches the nozzle line `offset_m` behind the image's bottom edge.
//! Nozzle i sprays a band `spray_width_m` wide centred `nozzles_m[i]` from the image's
//! vertical centre line (negative = left). A box is sprayed from the moment its near (bottom)
//! edge reaches the nozzle line until its far edge has passed it, widened by `margin_m`.
//! Times are the capture time plus distance over ground speed; capture time is the frame's
//! timestamp, or its arrival minus the measured pipeline latency.
//!
//! A segmenter's class map is planned the same way, as plants: each nozzle's lane is cut into
//! cells `plan.cell_m` long, and a cell where a target (or protected) class covers at least
//! `plan.coverage_min` of the pixels is a plant of that class, boxed tightly around its pixels
//! in the cell ([`PlanConfig::lane_cells`]). Band spraying by weed coverage is then the box
//! planner's timing, margins, merging and crop protection, unchanged.
//!
//! Protected classes (`[protect]`, e.g. the crop) are the other way round: while one passes
//! under a nozzle, widened by `protect_margin_m`, that nozzle stays closed. Where a target and
//! a protected plant share a nozzle's time, the protected one wins: the spray is shortened,
//! split around it, or withdrawn (see [`Merger::protect`]).

use std::collections::BTreeMap;

use fieldkit_core::metrics::iou;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub ground_width_m: f64,
    pub ground_length_m: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boom {
    pub offset_m: f64,
    pub nozzles_m: Vec<f64>,
    pub spray_width_m: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Motion {
    pub speed_mps: f64,
    /// Capture to detection available, measured (e.g. `fieldkit bench` p90 + camera delay).
    #[serde(default)]
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanOptions {
    /// Spray this much before and after (and beside) each box.
    pub margin_m: f64,
    /// Triggers on one nozzle closer than this merge into one spray.
    pub merge_gap_ms: f64,
    /// A spray that cannot reach the device this long before it opens is dropped (reported
    /// failed), not opened late.
    pub min_lead_ms: f64,
    /// One plant, one class: a box overlapping a higher-scoring box of another class by more
    /// than this IoU is that plant seen as the other class (a crop also boxed as weed at a
    /// lower score), and is not sprayed. 1 turns it off.
    pub class_overlap_iou: f64,
    /// Keep the nozzles closed this much before and after (and beside) each protected box.
    pub protect_margin_m: f64,
    /// A segmenter's lanes are cut into cells this long along the travel.
    pub cell_m: f64,
    /// A cell is a plant of a class when that class covers at least this fraction of its
    /// pixels (a class map has no scores: `targets` and `protect` name the classes, their
    /// score thresholds do not apply).
    pub coverage_min: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            margin_m: 0.02,
            merge_gap_ms: 50.0,
            min_lead_ms: 10.0,
            class_overlap_iou: 0.45,
            protect_margin_m: 0.02,
            cell_m: 0.05,
            coverage_min: 0.01,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub camera: Camera,
    pub boom: Boom,
    pub motion: Motion,
    /// Class name → minimum score; `"*"` applies to classes not listed. Classes matching
    /// neither are never sprayed.
    pub targets: BTreeMap<String, f32>,
    /// Class name → minimum score: plants never sprayed (the crop). A class named here is not
    /// a target, even under `"*"`.
    #[serde(default)]
    pub protect: BTreeMap<String, f32>,
    #[serde(default)]
    pub plan: PlanOptions,
}

impl PlanConfig {
    /// Every number checked, with the field named.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("camera.ground_width_m", self.camera.ground_width_m),
            ("camera.ground_length_m", self.camera.ground_length_m),
            ("boom.spray_width_m", self.boom.spray_width_m),
            ("motion.speed_mps", self.motion.speed_mps),
            ("plan.cell_m", self.plan.cell_m),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, got {v}"));
            }
        }
        let non_negative = [
            ("boom.offset_m", self.boom.offset_m),
            ("motion.latency_ms", self.motion.latency_ms),
            ("plan.margin_m", self.plan.margin_m),
            ("plan.merge_gap_ms", self.plan.merge_gap_ms),
            ("plan.min_lead_ms", self.plan.min_lead_ms),
            ("plan.protect_margin_m", self.plan.protect_margin_m),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a number ≥ 0, got {v}"));
            }
        }
        let n = self.boom.nozzles_m.len();
        if n == 0 || n > crate::protocol::MAX_NOZZLES {
            return Err(format!("boom.nozzles_m: {n} nozzles; 1 to {} supported", crate::protocol::MAX_NOZZLES));
        }
        if let Some(x) = self.boom.nozzles_m.iter().find(|x| !x.is_finite()) {
            return Err(format!("boom.nozzles_m: {x} is not a position"));
        }
        if !(self.plan.coverage_min > 0.0 && self.plan.coverage_min <= 1.0) {
            return Err(format!("plan.coverage_min must be above 0 and at most 1, got {}", self.plan.coverage_min));
        }
        if !(0.0..=1.0).contains(&self.plan.class_overlap_iou) {
            return Err(format!("plan.class_overlap_iou must be between 0 and 1, got {}", self.plan.class_overlap_iou));
        }
        if self.targets.is_empty() {
            return Err("targets: no class to spray (e.g. `weed = 0.4`, or `\"*\" = 0.5` for any class)".into());
        }
        for (table, classes) in [("targets", &self.targets), ("protect", &self.protect)] {
            for (class, t) in classes {
                if !(0.0..=1.0).contains(t) {
                    return Err(format!("{table}.{class}: score threshold {t} is outside 0..1"));
                }
            }
        }
        if self.protect.contains_key("*") {
            return Err("protect: name the classes never to spray (\"*\" would protect the targets too)".into());
        }
        if let Some(class) = self.protect.keys().find(|c| self.targets.contains_key(*c)) {
            return Err(format!("{class} is both in targets and in protect: a class is sprayed or protected"));
        }
        Ok(())
    }

    /// Whether `class` is ever sprayed (listed in `targets`, or covered by `"*"`, and not
    /// protected).
    pub fn is_target(&self, class: &str) -> bool {
        self.threshold(class).is_some()
    }

    fn threshold(&self, class: &str) -> Option<f32> {
        if self.protect.contains_key(class) {
            return None;
        }
        self.targets.get(class).or_else(|| self.targets.get("*")).copied()
    }

    /// The detections taken as plants: each box but those overlapping a higher-scoring box of
    /// another class by more than `plan.class_overlap_iou` (the plant is that class).
    pub fn plants<'a>(&self, dets: &'a [Detection]) -> impl Iterator<Item = &'a Detection> {
        let limit = self.plan.class_overlap_iou;
        dets.iter().filter(move |d| {
            !dets.iter().any(|o| o.name != d.name && o.score > d.score && f64::from(iou(&o.bbox, &d.bbox)) > limit)
        })
    }

    /// The sprays one detection asks for; empty when its class is not a target, its score is
    /// under the class's threshold, or it lies beside every nozzle.
    pub fn triggers(&self, det: &Detection, width: f64, height: f64, capture_us: u64) -> Vec<Trigger> {
        match self.threshold(&det.name) {
            Some(t) if det.score >= t => self.passes(det, width, height, capture_us, self.plan.margin_m),
            _ => Vec::new(),
        }
    }

    /// The times one detection of a protected class keeps nozzles closed (as triggers: which
    /// nozzle, from when to when); empty for other classes and under the class's threshold.
    pub fn guards(&self, det: &Detection, width: f64, height: f64, capture_us: u64) -> Vec<Trigger> {
        match self.protect.get(&det.name) {
            Some(&t) if det.score >= t => self.passes(det, width, height, capture_us, self.plan.protect_margin_m),
            _ => Vec::new(),
        }
    }

    /// A segmenter's class map (`ids`, row-major `width` x `height`, class `k` named
    /// `names[k]`) as plants: per nozzle lane and cell of `plan.cell_m` along the travel, each
    /// target or protected class covering at least `plan.coverage_min` of the cell, boxed
    /// tightly around its pixels there, score 1. Lanes beyond the image are skipped.
    pub fn lane_cells(&self, ids: &[u8], width: u32, height: u32, names: &[String]) -> Vec<Detection> {
        let (w, h) = (width as usize, height as usize);
        if ids.len() != w * h || w == 0 || h == 0 {
            return Vec::new();
        }
        let wanted: Vec<bool> = names.iter().map(|n| self.is_target(n) || self.protect.contains_key(n)).collect();
        let (c, b) = (&self.camera, &self.boom);
        let column = |lateral: f64| {
            ((lateral / c.ground_width_m + 0.5) * width as f64).round().clamp(0.0, width as f64) as usize
        };
        let rows = ((self.plan.cell_m / c.ground_length_m * height as f64).round() as usize).clamp(1, h);
        let mut out = Vec::new();
        for &p in &b.nozzles_m {
            let (x0, x1) = (column(p - b.spray_width_m / 2.0), column(p + b.spray_width_m / 2.0));
            if x1 <= x0 {
                continue;
            }
            for y0 in (0..h).step_by(rows) {
                let y1 = (y0 + rows).min(h);
                // Per class: pixels and their extent [x_min, y_min, x_max, y_max] in the cell.
                let mut seen: BTreeMap<u8, (usize, [usize; 4])> = BTreeMap::new();
                for y in y0..y1 {
                    for (x, &k) in ids[y * w + x0..y * w + x1].iter().enumerate() {
                        if !wanted.get(k as usize).copied().unwrap_or(false) {
                            continue;
                        }
                        let x = x0 + x;
                        let e = seen.entry(k).or_insert((0, [x, y, x, y]));
                        e.0 += 1;
                        e.1 = [e.1[0].min(x), e.1[1].min(y), e.1[2].max(x), e.1[3].max(y)];
                    }
                }
                let cell = ((x1 - x0) * (y1 - y0)) as f64;
                for (k, (n, [ax, ay, bx, by])) in seen {
                    if n as f64 >= self.plan.coverage_min * cell {
                        out.push(Detection {
                            bbox: [ax as f32, ay as f32, (bx + 1) as f32, (by + 1) as f32],
                            class: k as usize,
                            name: names[k as usize].clone(),
                            score: 1.0,
                        });
                    }
                }
            }
        }
        out
    }

    /// When a box, widened by `m` metres on every side, passes under each nozzle it meets.
    fn passes(&self, det: &Detection, width: f64, height: f64, capture_us: u64, m: f64) -> Vec<Trigger> {
        let [x1, y1, x2, y2] = det.bbox.map(|v| v as f64);
        let (c, b) = (&self.camera, &self.boom);
        let lateral = |x: f64| (x / width - 0.5) * c.ground_width_m;
        let ahead = |y: f64| (1.0 - (y / height).clamp(0.0, 1.0)) * c.ground_length_m;
        let (left, right) = (lateral(x1.min(x2)) - m, lateral(x1.max(x2)) + m);
        let near = b.offset_m + ahead(y1.max(y2)) - m;
        let far = b.offset_m + ahead(y1.min(y2)) + m;
        let at = |d: f64| capture_us.saturating_add_signed((d.max(0.0) / self.motion.speed_mps * 1e6).round() as i64);
        let (open_us, close_us) = (at(near), at(far));
        b.nozzles_m
            .iter()
            .enumerate()
            .filter(|(_, &p)| left < p + b.spray_width_m / 2.0 && right > p - b.spray_width_m / 2.0)
            .map(|(i, _)| Trigger { nozzle: i as u8, open_us, close_us, class: det.name.clone(), score: det.score })
            .collect()
    }
}

/// One detection as `fieldkit predict` writes it (extra fields ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: [f32; 4],
    #[serde(default)]
    pub class: usize,
    pub name: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub nozzle: u8,
    pub open_us: u64,
    pub close_us: u64,
    pub class: String,
    pub score: f32,
}

/// What a trigger or a protected pass did to the sprays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    New {
        id: u32,
        nozzle: u8,
        open_us: u64,
        close_us: u64,
    },
    /// An existing spray changed: grown by a trigger, or shortened before a protected plant.
    /// The device gets the new times under the same id.
    Update {
        id: u32,
        nozzle: u8,
        open_us: u64,
        close_us: u64,
    },
    /// Already covered.
    Covered {
        id: u32,
    },
    /// A spray that has not opened lies wholly over protected plants: it must not open.
    Withdraw {
        id: u32,
    },
}

/// Merges triggers on the same nozzle into sprays (the same plant seen in consecutive frames,
/// or plants closer than the gap), giving each spray an id, and keeps the sprays off the
/// times protected plants are under their nozzle.
#[derive(Debug, Default)]
pub struct Merger {
    gap_us: u64,
    lead_us: u64,
    next_id: u32,
    /// Per nozzle: (id, open, close) of sprays that may still change.
    open: BTreeMap<u8, Vec<(u32, u64, u64)>>,
    /// Per nozzle: sorted, disjoint times a protected plant is under it (not yet past).
    guards: BTreeMap<u8, Vec<(u64, u64)>>,
}

/// The parts of `open..close` outside the sorted, disjoint intervals `guards`.
fn outside(guards: &[(u64, u64)], open: u64, close: u64) -> Vec<(u64, u64)> {
    let (mut out, mut from) = (Vec::new(), open);
    for &(g_open, g_close) in guards.iter().filter(|g| g.1 > open && g.0 < close) {
        if g_open > from {
            out.push((from, g_open));
        }
        from = from.max(g_close);
    }
    if from < close {
        out.push((from, close));
    }
    out
}

impl Merger {
    pub fn new(opts: &PlanOptions) -> Self {
        Merger {
            gap_us: (opts.merge_gap_ms * 1e3) as u64,
            lead_us: (opts.min_lead_ms * 1e3) as u64,
            next_id: 1,
            open: BTreeMap::new(),
            guards: BTreeMap::new(),
        }
    }

    /// Forgets what can no longer change on `nozzle`: a spray the device will have closed
    /// before an update reaches it is final; a protected pass that is over guards nothing.
    fn prune(&mut self, nozzle: u8, now_us: u64) {
        let lead = self.lead_us;
        self.open.entry(nozzle).or_default().retain(|&(_, _, close)| close > now_us + lead);
        self.guards.entry(nozzle).or_default().retain(|&(_, close)| close > now_us);
    }

    /// Plans a trigger: the parts of it clear of protected plants join a spray on its nozzle
    /// within the merge gap (never across a protected plant) or start new ones.
    pub fn add(&mut self, t: &Trigger, now_us: u64) -> Vec<Merge> {
        self.prune(t.nozzle, now_us);
        let guards = &self.guards[&t.nozzle];
        let sprays = self.open.get_mut(&t.nozzle).expect("pruned above");
        let gap = self.gap_us;
        let crosses = |o: u64, c: u64| guards.iter().any(|g| g.0 < c && g.1 > o);
        let mut out = Vec::new();
        for (o, c) in outside(guards, t.open_us, t.close_us) {
            if let Some(s) =
                sprays.iter_mut().find(|s| o <= s.2 + gap && c + gap >= s.1 && !crosses(s.1.min(o), s.2.max(c)))
            {
                let (open, close) = (s.1.min(o), s.2.max(c));
                if (open, close) == (s.1, s.2) {
                    out.push(Merge::Covered { id: s.0 });
                    continue;
                }
                // The device cannot reopen earlier a spray it has started; keep its open time then.
                let open = if s.1 <= now_us { s.1 } else { open };
                *s = (s.0, open, close);
                out.push(Merge::Update { id: s.0, nozzle: t.nozzle, open_us: open, close_us: close });
                continue;
            }
            // A new spray may overlap one that is already final: the device holds the nozzle
            // open while any of its sprays is open.
            let id = self.next_id;
            self.next_id += 1;
            sprays.push((id, o, c));
            out.push(Merge::New { id, nozzle: t.nozzle, open_us: o, close_us: c });
        }
        out
    }

    /// Keeps nozzle `g.nozzle` closed from `g.open_us` to `g.close_us` (a protected plant
    /// under it): a spray over that time is shortened to end as the plant arrives, split
    /// around it, or withdrawn when nothing of it is clear. A spray already open closes as
    /// soon as the update lands if the plant has arrived.
    pub fn protect(&mut self, g: &Trigger, now_us: u64) -> Vec<Merge> {
        self.prune(g.nozzle, now_us);
        let guards = self.guards.get_mut(&g.nozzle).expect("pruned above");
        guards.push((g.open_us, g.close_us));
        guards.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(guards.len());
        for &(o, c) in guards.iter() {
            match merged.last_mut() {
                Some(l) if o <= l.1 => l.1 = l.1.max(c),
                _ => merged.push((o, c)),
            }
        }
        *guards = merged;
        let sprays = self.open.get_mut(&g.nozzle).expect("pruned above");
        let (mut out, mut added) = (Vec::new(), Vec::new());
        sprays.retain_mut(|s| {
            if !(s.1 < g.close_us && s.2 > g.open_us) {
                return true;
            }
            let mut pieces = outside(guards, s.1, s.2);
            if s.1 <= now_us {
                // Open already: it keeps its opening and closes at the plant, or now.
                match pieces.first_mut() {
                    Some(p) if p.0 == s.1 => p.1 = p.1.max(now_us),
                    _ => pieces.insert(0, (s.1, now_us)),
                }
            }
            let mut pieces = pieces.into_iter();
            let Some((open, close)) = pieces.next() else {
                out.push(Merge::Withdraw { id: s.0 });
                return false;
            };
            if (open, close) != (s.1, s.2) {
                *s = (s.0, open, close);
                out.push(Merge::Update { id: s.0, nozzle: g.nozzle, open_us: open, close_us: close });
            }
            for (o, c) in pieces {
                let id = self.next_id;
                self.next_id += 1;
                added.push((id, o, c));
                out.push(Merge::New { id, nozzle: g.nozzle, open_us: o, close_us: c });
            }
            true
        });
        sprays.extend(added);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PlanConfig {
        toml::from_str(include_str!("../tests/rig4.toml")).unwrap()
    }

    fn det(name: &str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { bbox, class: 0, name: name.into(), score }
    }

    /// A class map as lane cells (rig4: 400 px per metre, 5 cm cells = 20 rows, lanes 100 px
    /// wide): a weed patch is one plant boxed tightly, one crossing a cell edge two, a speck
    /// under `coverage_min` none; crop cells come out for protection, background never; a
    /// cell's triggers are those of the same box detected.
    #[test]
    fn class_maps_become_lane_cells() {
        let mut c = config();
        c.protect.insert("crop".into(), 0.5);
        c.validate().unwrap();
        let names: Vec<String> = ["background", "crop", "weed"].map(String::from).to_vec();
        let (w, h) = (400usize, 300usize);
        let mut ids = vec![0u8; w * h];
        let mut fill = |x0: usize, y0: usize, x1: usize, y1: usize, k: u8| {
            for y in y0..y1 {
                for x in x0..x1 {
                    ids[y * w + x] = k;
                }
            }
        };
        fill(30, 205, 60, 215, 2); // lane 0, cell rows 200..220
        fill(130, 42, 135, 43, 2); // lane 1: 5 px of a 2000 px cell, under 1 %
        fill(310, 215, 330, 225, 2); // lane 3, across the 220 cell edge
        fill(220, 100, 260, 130, 1); // lane 2: crop over rows 100..140 (two cells)
        let cells = c.lane_cells(&ids, w as u32, h as u32, &names);
        let got: Vec<(&str, [f32; 4])> = cells.iter().map(|d| (d.name.as_str(), d.bbox)).collect();
        assert_eq!(
            got,
            [
                ("weed", [30.0, 205.0, 60.0, 215.0]),
                ("crop", [220.0, 100.0, 260.0, 120.0]),
                ("crop", [220.0, 120.0, 260.0, 130.0]),
                ("weed", [310.0, 215.0, 330.0, 220.0]),
                ("weed", [310.0, 220.0, 330.0, 225.0]),
            ]
        );
        assert!(cells.iter().all(|d| d.score == 1.0 && names[d.class] == d.name));
        let boxed = c.triggers(&det("weed", 1.0, [30.0, 205.0, 60.0, 215.0]), 400.0, 300.0, 7);
        assert_eq!(c.triggers(&cells[0], 400.0, 300.0, 7), boxed);
        assert!(!c.guards(&cells[1], 400.0, 300.0, 7).is_empty());
        // A speck is a plant once coverage_min is low enough; a map of the wrong size is none.
        c.plan.coverage_min = 0.002;
        assert_eq!(c.lane_cells(&ids, w as u32, h as u32, &names).len(), 6);
        assert!(c.lane_cells(&ids[1..], w as u32, h as u32, &names).is_empty());
        c.plan.coverage_min = 0.0;
        assert!(c.validate().unwrap_err().contains("plan.coverage_min"));
    }

    #[test]
    fn box_to_nozzles_and_times() {
        let c = config();
        c.validate().unwrap();
        // 400x300 image: x 0..100 is the leftmost quarter (nozzle 0); y 200..300 is the
        // nearest quarter: near edge at the image bottom, 0.25 m from the nozzles.
        let t = c.triggers(&det("weed", 0.9, [0.0, 200.0, 100.0, 300.0]), 400.0, 300.0, 1_000_000);
        assert_eq!(
            t,
            vec![Trigger { nozzle: 0, open_us: 1_250_000, close_us: 1_500_000, class: "weed".into(), score: 0.9 }]
        );
        // Across the middle: nozzles 1 and 2.
        let t = c.triggers(&det("weed", 0.9, [150.0, 0.0, 250.0, 30.0]), 400.0, 300.0, 0);
        assert_eq!(t.iter().map(|t| t.nozzle).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!((t[0].open_us, t[0].close_us), (925_000, 1_000_000));
        // Not a target, or under its threshold.
        assert!(c.triggers(&det("crop", 0.99, [0.0, 0.0, 400.0, 300.0]), 400.0, 300.0, 0).is_empty());
        assert!(c.triggers(&det("weed", 0.3, [0.0, 0.0, 400.0, 300.0]), 400.0, 300.0, 0).is_empty());
    }

    /// One plant, one class: a weed box over a crop box that scores higher is the crop seen
    /// twice and is not sprayed; beside it, or scoring higher, or the same class, it stays.
    #[test]
    fn a_plant_boxed_as_crop_and_weed_is_the_higher_scoring_class() {
        let mut c = config();
        let dets = [
            det("crop", 0.8, [0.0, 0.0, 100.0, 100.0]),
            det("weed", 0.5, [5.0, 5.0, 100.0, 100.0]), // IoU 0.90 with the crop: dropped
            det("weed", 0.5, [60.0, 0.0, 160.0, 100.0]), // IoU 0.25: kept
            det("crop", 0.4, [200.0, 0.0, 300.0, 100.0]), // under the weed below: dropped
            det("weed", 0.7, [205.0, 0.0, 300.0, 100.0]), // kept
            det("weed", 0.9, [0.0, 200.0, 100.0, 300.0]), // same class overlaps are NMS's
            det("weed", 0.6, [0.0, 205.0, 100.0, 300.0]),
        ];
        let kept = |c: &PlanConfig| c.plants(&dets).map(|d| (d.name.clone(), d.bbox[0])).collect::<Vec<_>>();
        let w = |x: f32| ("weed".to_string(), x);
        assert_eq!(kept(&c), vec![("crop".to_string(), 0.0), w(60.0), w(205.0), w(0.0), w(0.0)]);
        c.plan.class_overlap_iou = 1.0;
        assert_eq!(kept(&c).len(), dets.len(), "1 turns it off");
        c.plan.class_overlap_iou = 1.5;
        assert!(c.validate().unwrap_err().contains("plan.class_overlap_iou must be between 0 and 1, got 1.5"));
    }

    #[test]
    fn consecutive_frames_of_one_plant_merge() {
        let c = config();
        let mut m = Merger::new(&PlanOptions { merge_gap_ms: 50.0, ..c.plan.clone() });
        let t = |o, cl| Trigger { nozzle: 1, open_us: o, close_us: cl, class: "weed".into(), score: 1.0 };
        assert_eq!(
            m.add(&t(1_000_000, 1_200_000), 0),
            [Merge::New { id: 1, nozzle: 1, open_us: 1_000_000, close_us: 1_200_000 }]
        );
        assert_eq!(m.add(&t(1_010_000, 1_190_000), 30_000), [Merge::Covered { id: 1 }]);
        assert_eq!(
            m.add(&t(1_230_000, 1_300_000), 60_000),
            [Merge::Update { id: 1, nozzle: 1, open_us: 1_000_000, close_us: 1_300_000 }]
        );
        assert!(matches!(m.add(&t(1_400_000, 1_500_000), 90_000)[..], [Merge::New { id: 2, .. }]));
        // Once the device has closed spray 1, a trigger touching it starts a new spray.
        assert!(matches!(m.add(&t(1_290_000, 1_310_000), 1_295_000)[..], [Merge::New { id: 3, .. }]));
    }

    /// A protected plant (the crop) keeps its nozzle closed: a spray reaching into it is
    /// shortened, one across it split, one inside it withdrawn, one already open closed at it
    /// (or at once); later triggers are clipped and never merge across it. Other nozzles are
    /// untouched.
    #[test]
    fn a_protected_plant_keeps_its_nozzle_closed() {
        let c = config();
        let mut m = Merger::new(&PlanOptions { merge_gap_ms: 50.0, ..c.plan.clone() });
        let t = |n, o, cl| Trigger { nozzle: n, open_us: o, close_us: cl, class: "weed".into(), score: 1.0 };
        let new = |id, n, o, c| Merge::New { id, nozzle: n, open_us: o, close_us: c };
        let update = |id, n, o, c| Merge::Update { id, nozzle: n, open_us: o, close_us: c };
        assert_eq!(m.add(&t(0, 1_000_000, 1_500_000), 0), [new(1, 0, 1_000_000, 1_500_000)]);
        assert_eq!(m.add(&t(1, 1_000_000, 1_500_000), 0), [new(2, 1, 1_000_000, 1_500_000)]);
        assert_eq!(m.add(&t(2, 1_200_000, 1_300_000), 0), [new(3, 2, 1_200_000, 1_300_000)]);
        assert_eq!(m.add(&t(3, 500_000, 2_000_000), 0), [new(4, 3, 500_000, 2_000_000)]);
        // Nozzle 0: the crop arrives at 1.4 s: spray 1 now ends there.
        assert_eq!(m.protect(&t(0, 1_400_000, 1_800_000), 100_000), [update(1, 0, 1_000_000, 1_400_000)]);
        // Nozzle 1: the crop inside the spray: split around it.
        assert_eq!(
            m.protect(&t(1, 1_200_000, 1_300_000), 100_000),
            [update(2, 1, 1_000_000, 1_200_000), new(5, 1, 1_300_000, 1_500_000)]
        );
        // Nozzle 2: the spray lies within the crop: withdrawn.
        assert_eq!(m.protect(&t(2, 1_100_000, 1_400_000), 100_000), [Merge::Withdraw { id: 3 }]);
        // Nozzle 3: open since 0.5 s; a crop from 0.9 s, seen at 1.0 s: close now.
        assert_eq!(
            m.protect(&t(3, 900_000, 1_100_000), 1_000_000),
            [update(4, 3, 500_000, 1_000_000), new(6, 3, 1_100_000, 2_000_000)]
        );
        // The same crop seen again changes nothing.
        assert_eq!(m.protect(&t(0, 1_400_000, 1_800_000), 200_000), []);
        // The weed seen again on nozzle 0 is clipped at the crop; its part beyond the crop
        // (1.8 s on) does not merge across it although within the gap.
        assert_eq!(
            m.add(&t(0, 1_000_000, 1_850_000), 300_000),
            [Merge::Covered { id: 1 }, new(7, 0, 1_800_000, 1_850_000)]
        );
        // A trigger wholly over the crop plans nothing.
        assert_eq!(m.add(&t(2, 1_150_000, 1_350_000), 300_000), []);
        // A crop on a nozzle without sprays changes nothing else.
        assert_eq!(m.protect(&t(7, 0, 3_000_000), 300_000), []);
    }

    #[test]
    fn bad_config_names_the_field() {
        let mut c = config();
        c.motion.speed_mps = 0.0;
        assert!(c.validate().unwrap_err().contains("motion.speed_mps"));
        let mut c = config();
        c.targets.insert("weed".into(), 1.5);
        assert!(c.validate().unwrap_err().contains("targets.weed"));
        let mut c = config();
        c.protect.insert("crop".into(), -0.1);
        assert!(c.validate().unwrap_err().contains("protect.crop: score threshold -0.1"));
        c.protect.insert("crop".into(), 0.3);
        c.validate().unwrap();
        c.protect.insert("weed".into(), 0.3);
        assert!(c.validate().unwrap_err().contains("weed is both in targets and in protect"));
        let mut c = config();
        c.protect.insert("*".into(), 0.3);
        assert!(c.validate().unwrap_err().contains("protect: name the classes"));
    }

    /// A protected class is never a target, even under "*"; its boxes give guards with the
    /// protect margin, and only at or above its threshold.
    #[test]
    fn protected_classes_give_guards_not_triggers() {
        let mut c = config();
        c.targets.insert("*".into(), 0.5);
        c.protect.insert("crop".into(), 0.4);
        c.plan.protect_margin_m = 0.0;
        assert!(!c.is_target("crop") && c.is_target("thistle"));
        let crop = det("crop", 0.9, [0.0, 200.0, 100.0, 300.0]);
        assert!(c.triggers(&crop, 400.0, 300.0, 0).is_empty());
        let g = c.guards(&crop, 400.0, 300.0, 1_000_000);
        assert_eq!(
            g.iter().map(|g| (g.nozzle, g.open_us, g.close_us)).collect::<Vec<_>>(),
            [(0, 1_250_000, 1_500_000)]
        );
        assert!(c.guards(&det("crop", 0.3, [0.0, 200.0, 100.0, 300.0]), 400.0, 300.0, 0).is_empty());
        assert!(c.guards(&det("thistle", 0.9, [0.0, 200.0, 100.0, 300.0]), 400.0, 300.0, 0).is_empty());
    }
}
