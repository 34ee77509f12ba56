//! What a farmer asks of tracks: how many crossed the gate (per direction and class), who is
//! in the pen and for how long, who has not moved. Events as they happen and a summary at the
//! end, from the tracker's output frame by frame.
//!
//! Jitter: an animal standing on a line or a zone border makes its box flicker across it.
//! Each track's side of a line (inside or outside of a zone) only changes once its anchor is
//! `hysteresis` × its box's shorter side clear of the line or border, so a crossing is counted
//! once, and walking around the end of a line counts nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::tracker::TrackedBox;
use crate::zones::{Line, Point, Zone};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountSettings {
    /// Frames per second of the stream (event times, dwell and still times).
    pub fps: f64,
    /// Clearance a side change needs, as a fraction of the box's shorter side.
    pub hysteresis: f64,
    /// Below this anchor speed, in box heights per second, an animal is standing still.
    pub still_speed: f64,
    /// A track unseen for this many frames has left (its zones are closed).
    pub gone_after: u32,
}

impl Default for CountSettings {
    fn default() -> Self {
        CountSettings { fps: 30.0, hysteresis: 0.1, still_speed: 0.1, gone_after: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A track crossed a line: `in` from its left side to its right (looking from its first
    /// point to its second), `out` back.
    Cross {
        frame: u32,
        t: f64,
        line: String,
        track: u64,
        class: String,
        direction: &'static str,
    },
    Enter {
        frame: u32,
        t: f64,
        zone: String,
        track: u64,
        class: String,
    },
    /// `lost`: the track vanished inside the zone (or the stream ended) rather than walking out.
    Leave {
        frame: u32,
        t: f64,
        zone: String,
        track: u64,
        class: String,
        dwell_s: f64,
        lost: bool,
    },
}

#[derive(Debug, Clone)]
struct TrackState {
    class: usize,
    first_frame: u32,
    last_frame: u32,
    seen: u64,
    anchor: Point,
    distance: f64,
    still_s: f64,
    /// Per line: settled side (true = right).
    side: Vec<Option<bool>>,
    /// Per zone: settled inside, since which frame, frames seen inside.
    inside: Vec<bool>,
    entered: Vec<u32>,
    zone_frames: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LineCount {
    pub name: String,
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
    /// Per class: [in, out].
    pub by_class: BTreeMap<String, [u64; 2]>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ZoneStats {
    pub name: String,
    pub entries: u64,
    pub occupancy_max: u64,
    pub occupancy_mean: f64,
    /// Mean time of the visits that ended (walked out or lost).
    pub dwell_mean_s: f64,
    pub visits_ended: u64,
    #[serde(skip)]
    occupancy_sum: u64,
    #[serde(skip)]
    dwell_sum: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackSummary {
    pub id: u64,
    pub class: String,
    pub first_frame: u32,
    pub last_frame: u32,
    pub seen_frames: u64,
    pub distance_px: f64,
    pub still_s: f64,
    pub zones_s: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountSummary {
    pub frames: u64,
    pub lines: Vec<LineCount>,
    pub zones: Vec<ZoneStats>,
    pub tracks: Vec<TrackSummary>,
}

pub struct Counter {
    settings: CountSettings,
    lines: Vec<Line>,
    zones: Vec<Zone>,
    classes: Vec<String>,
    active: BTreeMap<u64, TrackState>,
    done: Vec<(u64, TrackState)>,
    line_counts: Vec<LineCount>,
    zone_stats: Vec<ZoneStats>,
    frames: u64,
    last_frame: u32,
}

/// How far a box's anchor must be from a line or zone border for its side to count:
/// `hysteresis` × the box's shorter side.
fn clearance(hysteresis: f64, b: &[f32; 4]) -> f64 {
    hysteresis * ((b[2] - b[0]) as f64).min((b[3] - b[1]) as f64).max(0.0)
}

/// The point of a box that counts: its centre (top-down views; a side view would want the
/// feet, its bottom centre).
fn anchor(b: &[f32; 4]) -> Point {
    [(b[0] as f64 + b[2] as f64) / 2.0, (b[1] as f64 + b[3] as f64) / 2.0]
}

impl Counter {
    /// `classes` names class indices in events and summaries (an index without a name is
    /// written as its number).
    pub fn new(settings: CountSettings, lines: Vec<Line>, zones: Vec<Zone>, classes: Vec<String>) -> Self {
        let line_counts = lines.iter().map(|l| LineCount { name: l.name.clone(), ..Default::default() }).collect();
        let zone_stats = zones.iter().map(|z| ZoneStats { name: z.name.clone(), ..Default::default() }).collect();
        Counter {
            settings,
            lines,
            zones,
            classes,
            active: BTreeMap::new(),
            done: Vec::new(),
            line_counts,
            zone_stats,
            frames: 0,
            last_frame: 0,
        }
    }

    /// The name of class `c` in events and summaries (its number when it has none).
    pub fn class_name(&self, c: usize) -> String {
        self.classes.get(c).cloned().unwrap_or_else(|| c.to_string())
    }

    /// Tracks seen so far (each id once).
    pub fn tracks_seen(&self) -> u64 {
        (self.active.len() + self.done.len()) as u64
    }

    /// One frame's confirmed tracks (frames numbered from 1, increasing); returns its events.
    pub fn update(&mut self, frame: u32, tracks: &[TrackedBox]) -> Vec<Event> {
        self.frames += 1;
        self.last_frame = frame;
        let mut events = Vec::new();
        let mut occupancy = vec![0u64; self.zones.len()];
        for t in tracks {
            let p = anchor(&t.bbox);
            let h = (t.bbox[3] - t.bbox[1]) as f64;
            let clear = clearance(self.settings.hysteresis, &t.bbox);
            let class = self.class_name(t.class);
            let (nl, nz) = (self.lines.len(), self.zones.len());
            let st = self.active.entry(t.id).or_insert_with(|| TrackState {
                class: t.class,
                first_frame: frame,
                last_frame: frame,
                seen: 0,
                anchor: p,
                distance: 0.0,
                still_s: 0.0,
                side: vec![None; nl],
                inside: vec![false; nz],
                entered: vec![0; nz],
                zone_frames: vec![0; nz],
            });
            if let (0, Some(b)) = (st.seen, t.born) {
                // A track reported a frame after its birth: its sides start where it was born.
                let q = anchor(&b);
                let c = clearance(self.settings.hysteresis, &b);
                for (i, line) in self.lines.iter().enumerate() {
                    let (d, _) = line.locate(q);
                    if d.abs() >= c.max(f64::EPSILON) {
                        st.side[i] = Some(d > 0.0);
                    }
                }
            }
            if st.seen > 0 {
                let dt = (frame - st.last_frame) as f64 / self.settings.fps;
                let step = ((p[0] - st.anchor[0]).powi(2) + (p[1] - st.anchor[1]).powi(2)).sqrt();
                st.distance += step;
                if dt > 0.0 && step / dt < self.settings.still_speed * h {
                    st.still_s += dt;
                }
            }
            st.seen += 1;
            st.last_frame = frame;
            st.anchor = p;
            st.class = t.class;
            for (i, line) in self.lines.iter().enumerate() {
                let (d, along) = line.locate(p);
                if d.abs() < clear.max(f64::EPSILON) {
                    continue;
                }
                let right = d > 0.0;
                if let Some(prev) = st.side[i] {
                    if prev != right && (0.0..=1.0).contains(&along) {
                        let direction = if right { "in" } else { "out" };
                        let c = &mut self.line_counts[i];
                        let k = usize::from(!right);
                        if right {
                            c.in_ += 1;
                        } else {
                            c.out += 1;
                        }
                        c.by_class.entry(class.clone()).or_default()[k] += 1;
                        events.push(Event::Cross {
                            frame,
                            t: frame as f64 / self.settings.fps,
                            line: line.name.clone(),
                            track: t.id,
                            class: class.clone(),
                            direction,
                        });
                    }
                }
                st.side[i] = Some(right);
            }
            for (i, zone) in self.zones.iter().enumerate() {
                let (inside, edge) = zone.locate(p);
                if edge >= clear && inside != st.inside[i] {
                    st.inside[i] = inside;
                    let t_now = frame as f64 / self.settings.fps;
                    if inside {
                        st.entered[i] = frame;
                        self.zone_stats[i].entries += 1;
                        events.push(Event::Enter {
                            frame,
                            t: t_now,
                            zone: zone.name.clone(),
                            track: t.id,
                            class: class.clone(),
                        });
                    } else {
                        let visit = Visit { track: t.id, class: class.clone(), entered: st.entered[i], left: frame };
                        events.push(end_visit(&mut self.zone_stats[i], visit, self.settings.fps, false));
                    }
                }
                if st.inside[i] {
                    st.zone_frames[i] += 1;
                    occupancy[i] += 1;
                }
            }
        }
        for (i, z) in self.zone_stats.iter_mut().enumerate() {
            z.occupancy_sum += occupancy[i];
            z.occupancy_max = z.occupancy_max.max(occupancy[i]);
        }
        let gone: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, s)| frame - s.last_frame > self.settings.gone_after)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            events.extend(self.close(id));
        }
        events
    }

    /// Retires a track: its open zone visits end where it was last seen.
    fn close(&mut self, id: u64) -> Vec<Event> {
        let Some(st) = self.active.remove(&id) else { return Vec::new() };
        let mut events = Vec::new();
        for i in 0..self.zones.len() {
            if st.inside[i] {
                let visit =
                    Visit { track: id, class: self.class_name(st.class), entered: st.entered[i], left: st.last_frame };
                events.push(end_visit(&mut self.zone_stats[i], visit, self.settings.fps, true));
            }
        }
        self.done.push((id, st));
        events
    }

    /// End of stream: every track still open is retired.
    pub fn finish(&mut self) -> Vec<Event> {
        let ids: Vec<u64> = self.active.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.close(id)).collect()
    }

    pub fn summary(&self) -> CountSummary {
        let fps = self.settings.fps;
        let mut tracks: Vec<TrackSummary> = self
            .done
            .iter()
            .map(|(id, s)| (id, s))
            .chain(self.active.iter())
            .map(|(&id, s)| TrackSummary {
                id,
                class: self.class_name(s.class),
                first_frame: s.first_frame,
                last_frame: s.last_frame,
                seen_frames: s.seen,
                distance_px: s.distance,
                still_s: s.still_s,
                zones_s: self
                    .zones
                    .iter()
                    .zip(&s.zone_frames)
                    .map(|(z, &n)| (z.name.clone(), n as f64 / fps))
                    .collect(),
            })
            .collect();
        tracks.sort_by_key(|t| t.id);
        let zones = self
            .zone_stats
            .iter()
            .map(|z| ZoneStats {
                occupancy_mean: z.occupancy_sum as f64 / self.frames.max(1) as f64,
                dwell_mean_s: z.dwell_sum / z.visits_ended.max(1) as f64,
                ..z.clone()
            })
            .collect();
        CountSummary { frames: self.frames, lines: self.line_counts.clone(), zones, tracks }
    }
}

/// One track's stay in a zone, from the frame it entered to the one it left.
struct Visit {
    track: u64,
    class: String,
    entered: u32,
    left: u32,
}

/// Closes a visit: its dwell time joins the zone's statistics; `lost`: the track vanished
/// inside rather than walking out.
fn end_visit(stats: &mut ZoneStats, v: Visit, fps: f64, lost: bool) -> Event {
    let dwell = (v.left - v.entered) as f64 / fps;
    stats.dwell_sum += dwell;
    stats.visits_ended += 1;
    Event::Leave {
        frame: v.left,
        t: v.left as f64 / fps,
        zone: stats.name.clone(),
        track: v.track,
        class: v.class,
        dwell_s: dwell,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(id: u64, cx: f32, cy: f32) -> TrackedBox {
        TrackedBox {
            id,
            bbox: [cx - 20.0, cy - 10.0, cx + 20.0, cy + 10.0],
            score: 0.9,
            class: 0,
            born: None,
            detection: 0,
        }
    }

    fn counter() -> Counter {
        Counter::new(
            CountSettings { fps: 10.0, ..Default::default() },
            vec![Line::parse("gate:0,100,200,100").unwrap()],
            vec![Zone::parse("pen:0,120,200,120,200,300,0,300").unwrap()],
            vec!["cow".into()],
        )
    }

    #[test]
    fn a_crossing_counts_once_despite_jitter_on_the_line() {
        let mut c = counter();
        let mut events = Vec::new();
        // Above the line, then jittering ±1.5 px around it (hysteresis 0.1 × 20 = 2 px), then below.
        let path = [80.0, 90.0, 98.5, 101.5, 98.5, 101.5, 99.0, 110.0, 112.0];
        for (f, y) in path.iter().enumerate() {
            events.extend(c.update(f as u32 + 1, &[tb(1, 50.0, *y)]));
        }
        let crossings: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Cross { .. })).collect();
        assert_eq!(crossings.len(), 1, "{events:?}");
        assert!(matches!(crossings[0], Event::Cross { direction: "in", frame: 8, .. }));
        let s = c.summary();
        assert_eq!((s.lines[0].in_, s.lines[0].out), (1, 0));
        assert_eq!(s.lines[0].by_class["cow"], [1, 0]);
    }

    /// A track confirmed a frame after its birth crossed the line in between: its birth box
    /// says which side it came from.
    #[test]
    fn a_crossing_while_tentative_counts() {
        let mut c = counter();
        let born = tb(1, 50.0, 90.0).bbox;
        let events = c.update(2, &[TrackedBox { born: Some(born), ..tb(1, 50.0, 110.0) }]);
        assert!(matches!(events[..], [Event::Cross { direction: "in", frame: 2, .. }]), "{events:?}");
        let mut plain = counter();
        assert!(plain.update(2, &[tb(1, 50.0, 110.0)]).is_empty());
    }

    #[test]
    fn walking_round_the_end_of_a_line_is_not_a_crossing() {
        let mut c = counter();
        let mut events = Vec::new();
        for (f, (x, y)) in [(250.0, 80.0), (260.0, 100.0), (250.0, 130.0), (150.0, 130.0)].iter().enumerate() {
            events.extend(c.update(f as u32 + 1, &[tb(1, *x, *y)]));
        }
        assert!(!events.iter().any(|e| matches!(e, Event::Cross { .. })), "{events:?}");
    }

    #[test]
    fn zone_visits_dwell_and_lost_tracks() {
        let mut c = counter();
        let mut events = Vec::new();
        // Track 1 walks into the pen at frame 3 and out at frame 13 (1.0 s at 10 fps).
        for f in 1..=15u32 {
            let y = if (3..13).contains(&f) { 200.0 } else { 60.0 };
            let mut boxes = vec![tb(1, 50.0, y)];
            // Track 2 stands in the pen from frame 1 to 5, then vanishes.
            if f <= 5 {
                boxes.push(tb(2, 150.0, 250.0));
            }
            events.extend(c.update(f, &boxes));
        }
        events.extend(c.finish());
        let enters = events.iter().filter(|e| matches!(e, Event::Enter { .. })).count();
        assert_eq!(enters, 2);
        let leaves: Vec<(u64, f64, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Leave { track, dwell_s, lost, .. } => Some((*track, *dwell_s, *lost)),
                _ => None,
            })
            .collect();
        assert!(leaves.contains(&(1, 1.0, false)), "{leaves:?}");
        assert!(leaves.contains(&(2, 0.4, true)), "{leaves:?}");
        let s = c.summary();
        assert_eq!(s.zones[0].entries, 2);
        assert_eq!(s.zones[0].occupancy_max, 2);
        let t2 = s.tracks.iter().find(|t| t.id == 2).unwrap();
        assert_eq!((t2.seen_frames, t2.distance_px), (5, 0.0));
        assert!((t2.still_s - 0.4).abs() < 1e-9, "{}", t2.still_s);
        assert!((t2.zones_s["pen"] - 0.5).abs() < 1e-9);
        let t1 = s.tracks.iter().find(|t| t.id == 1).unwrap();
        assert!((t1.distance_px - 280.0).abs() < 1e-9, "{}", t1.distance_px);
    }
}
