//! `fieldkit run --metrics-bind ADDR`: the field loop's counters for Prometheus — frames and
//! drops, detections per class, per-stage latency histograms, tracks, line crossings and zone
//! entries, exits and occupancy per class, and with a spray link the sprays, E-stops, the
//! link's state and the glass-to-nozzle latency (read from the bridge's live totals at each
//! scrape) — served by `fieldkit_serve::exporter` on its own thread while the loop runs. Names
//! start `fieldkit_run_`; counters end in `_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fieldkit_bridge::bridge::LiveCounts;

use fieldkit_track::Event;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SprayLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LineLabels {
    line: String,
    direction: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
    class: String,
}

fn stage_histogram() -> Histogram {
    // 0.25 ms .. ~8 s, as the daemon's.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

pub struct LoopMetrics {
    registry: Registry,
    frames: Counter,
    dropped: Counter,
    detections: Family<ClassLabel, Counter>,
    stage_seconds: Family<StageLabel, Histogram, fn() -> Histogram>,
    tracks_active: Gauge,
    tracks_seen: Counter,
    crossings: Family<LineLabels, Counter>,
    entries: Family<ZoneLabels, Counter>,
    exits: Family<ZoneLabels, Counter>,
    occupancy: Family<ZoneLabels, Gauge>,
    source_up: Gauge,
    reconnects: Counter,
    fps: Gauge<f64, AtomicU64>,
    sprays: Family<SprayLabel, Counter>,
    estops: Counter,
    link_up: Gauge,
    capture_to_ack: Histogram,
    /// The spray bridge's live totals, once it runs.
    bridge: OnceLock<Arc<LiveCounts>>,
}

impl LoopMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fieldkit_run");
        let m = LoopMetrics {
            registry: Registry::default(),
            frames: Counter::default(),
            dropped: Counter::default(),
            detections: Family::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            tracks_active: Gauge::default(),
            tracks_seen: Counter::default(),
            crossings: Family::default(),
            entries: Family::default(),
            exits: Family::default(),
            occupancy: Family::default(),
            source_up: Gauge::default(),
            reconnects: Counter::default(),
            fps: Gauge::default(),
            sprays: Family::default(),
            estops: Counter::default(),
            link_up: Gauge::default(),
            capture_to_ack: stage_histogram(),
            bridge: OnceLock::new(),
        };
        registry.register("frames", "Frames processed", m.frames.clone());
        registry.register(
            "frames_dropped",
            "Frames dropped because inference was busy (newest frame wins)",
            m.dropped.clone(),
        );
        registry.register("detections", "Detections, per class", m.detections.clone());
        registry.register(
            "stage_seconds",
            "Per frame and stage: queue, preprocess, inference, postprocess, track, total (capture to result)",
            m.stage_seconds.clone(),
        );
        registry.register("tracks_active", "Tracks reported in the latest frame", m.tracks_active.clone());
        registry.register("tracks_seen", "Distinct tracks reported since the start", m.tracks_seen.clone());
        registry.register("line_crossings", "Line crossings, per line, direction and class", m.crossings.clone());
        registry.register("zone_entries", "Zone entries, per zone and class", m.entries.clone());
        registry.register("zone_exits", "Zone visits ended (walked out or lost), per zone and class", m.exits.clone());
        registry.register("zone_occupancy", "Tracks inside each zone now, per class", m.occupancy.clone());
        registry.register("source_up", "1 while the source delivers frames, 0 while it is lost", m.source_up.clone());
        registry.register("source_reconnects", "Times the source was reopened after it was lost", m.reconnects.clone());
        registry.register("fps", "Frames processed per second since the start", m.fps.clone());
        registry.register(
            "sprays",
            "Sprays by status: planned, done, failed, withdrawn (spray link)",
            m.sprays.clone(),
        );
        registry.register("estops", "E-stops sent to the spray device", m.estops.clone());
        registry.register("link_up", "1 while the spray device answers", m.link_up.clone());
        registry.register(
            "capture_to_ack_seconds",
            "Glass to nozzle: a spray's frame captured to the device acknowledging its command",
            m.capture_to_ack.clone(),
        );
        LoopMetrics { registry, ..m }
    }

    /// One processed frame: its stage times (ms), detections' class names and, with tracking,
    /// the tracks reported, the distinct tracks so far and the counting events.
    pub fn frame<'a>(
        &self,
        stages_ms: &[(&str, f64)],
        classes: impl IntoIterator<Item = &'a str>,
        tracks: Option<(usize, u64)>,
        events: &[Event],
    ) {
        self.frames.inc();
        self.source_up.set(1);
        for (stage, ms) in stages_ms {
            self.stage_seconds.get_or_create(&StageLabel { stage: stage.to_string() }).observe(ms / 1e3);
        }
        for class in classes {
            self.detections.get_or_create(&ClassLabel { class: class.to_string() }).inc();
        }
        if let Some((active, seen)) = tracks {
            self.tracks_active.set(active as i64);
            self.tracks_seen.inc_by(seen.saturating_sub(self.tracks_seen.get()));
        }
        self.events(events);
    }

    /// Counting events (also the ones `finish` emits at the end of the stream).
    pub fn events(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::Cross { line, class, direction, .. } => {
                    let l = LineLabels { line: line.clone(), direction: direction.to_string(), class: class.clone() };
                    self.crossings.get_or_create(&l).inc();
                }
                Event::Enter { zone, class, .. } => {
                    let z = ZoneLabels { zone: zone.clone(), class: class.clone() };
                    self.entries.get_or_create(&z).inc();
                    self.occupancy.get_or_create(&z).inc();
                }
                Event::Leave { zone, class, .. } => {
                    let z = ZoneLabels { zone: zone.clone(), class: class.clone() };
                    self.exits.get_or_create(&z).inc();
                    self.occupancy.get_or_create(&z).dec();
                }
            }
        }
    }

    /// Frames dropped so far (a running total).
    pub fn dropped(&self, total: u64) {
        self.dropped.inc_by(total.saturating_sub(self.dropped.get()));
    }

    pub fn fps(&self, fps: f64) {
        self.fps.set(fps);
    }

    /// The source was lost (`up` false) or is back.
    pub fn source(&self, up: bool) {
        self.source_up.set(i64::from(up));
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Reads the spray bridge's live totals at every scrape from now on.
    pub fn attach_bridge(&self, live: Arc<LiveCounts>) {
        live.watch_acks();
        let _ = self.bridge.set(live);
    }

    fn bridge_totals(&self) {
        let Some(live) = self.bridge.get() else { return };
        for (status, n) in
            [("planned", &live.planned), ("done", &live.done), ("failed", &live.failed), ("withdrawn", &live.withdrawn)]
        {
            let c = self.sprays.get_or_create(&SprayLabel { status: status.into() });
            c.inc_by(n.load(Ordering::Relaxed).saturating_sub(c.get()));
        }
        self.estops.inc_by(live.estops.load(Ordering::Relaxed).saturating_sub(self.estops.get()));
        self.link_up.set(i64::from(live.link_up.load(Ordering::Relaxed)));
        for us in live.take_acks() {
            self.capture_to_ack.observe(us as f64 / 1e6);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.bridge_totals();
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for LoopMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frames_classes_crossings_and_occupancy() {
        let m = LoopMetrics::new();
        let enter = Event::Enter { frame: 1, t: 0.0, zone: "pen".into(), track: 1, class: "cow".into() };
        let cross =
            Event::Cross { frame: 2, t: 0.1, line: "gate".into(), track: 1, class: "cow".into(), direction: "in" };
        m.frame(&[("total", 12.0)], ["cow", "cow", "weed"], Some((2, 2)), &[enter]);
        m.frame(&[("total", 30.0)], ["cow"], Some((1, 3)), &[cross]);
        m.events(&[Event::Leave {
            frame: 9,
            t: 0.9,
            zone: "pen".into(),
            track: 1,
            class: "cow".into(),
            dwell_s: 0.8,
            lost: false,
        }]);
        m.dropped(4);
        m.dropped(7);
        let text = m.render();
        for line in [
            "fieldkit_run_frames_total 2",
            "fieldkit_run_frames_dropped_total 7",
            r#"fieldkit_run_detections_total{class="cow"} 3"#,
            r#"fieldkit_run_detections_total{class="weed"} 1"#,
            r#"fieldkit_run_stage_seconds_count{stage="total"} 2"#,
            "fieldkit_run_tracks_active 1",
            "fieldkit_run_tracks_seen_total 3",
            r#"fieldkit_run_line_crossings_total{line="gate",direction="in",class="cow"} 1"#,
            r#"fieldkit_run_zone_entries_total{zone="pen",class="cow"} 1"#,
            r#"fieldkit_run_zone_exits_total{zone="pen",class="cow"} 1"#,
            r#"fieldkit_run_zone_occupancy{zone="pen",class="cow"} 0"#,
            "fieldkit_run_source_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("fieldkit_run_sprays_total{"), "no spray link, no spray counts:\n{text}");
        let sum = text.lines().find(|l| l.starts_with(r#"fieldkit_run_stage_seconds_sum{stage="total"}"#)).unwrap();
        let v: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 0.042).abs() < 1e-9, "{sum}");
    }
}
