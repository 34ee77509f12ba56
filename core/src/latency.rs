//! Latency percentiles from a histogram of fixed size instead of a list of samples: a loop that
//! runs all day (`fieldkit run`, the spray bridge) keeps constant memory however many frames and
//! sprays it sees. HdrHistogram at 3 significant digits: a reported percentile is within 0.1 %
//! of the sample's value.

use hdrhistogram::Histogram;

/// Latencies from 1 µs to 100 s (longer ones are recorded as 100 s).
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    h: Histogram<u32>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    const MAX_US: u64 = 100_000_000;

    pub fn new() -> Self {
        LatencyHistogram { h: Histogram::new_with_bounds(1, Self::MAX_US, 3).expect("static bounds are valid") }
    }

    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.clamp(1, Self::MAX_US));
    }

    /// Milliseconds, as the pipeline's stage timings are kept; negative or NaN counts as 0.
    pub fn record_ms(&mut self, ms: f64) {
        let us = if ms.is_finite() && ms > 0.0 { (ms * 1e3).round() as u64 } else { 0 };
        self.record_us(us);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The `q` quantile (0..=1) in ms; NaN when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return f64::NAN;
        }
        self.h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1e3
    }

    pub fn max_ms(&self) -> f64 {
        if self.h.is_empty() {
            return f64::NAN;
        }
        self.h.max() as f64 / 1e3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles agree with the sorted samples' within 0.1 %; a million records more and
    /// out-of-range values are all counted.
    #[test]
    fn percentiles_within_a_tenth_of_a_percent() {
        let mut h = LatencyHistogram::new();
        assert!(h.quantile_ms(0.5).is_nan() && h.max_ms().is_nan());
        // 1..=1000 ms, each once.
        for ms in 1..=1000 {
            h.record_ms(ms as f64);
        }
        assert_eq!(h.count(), 1000);
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile_ms(q);
            assert!((got - want).abs() <= want * 1e-3, "q{q}: {got} vs {want}");
        }
        assert!((h.max_ms() - 1000.0).abs() <= 1.0);
        for i in 0..1_000_000u64 {
            h.record_us(i % 50_000);
        }
        assert_eq!(h.count(), 1_001_000);
        // Out of range: clamped, not lost.
        h.record_ms(-5.0);
        h.record_ms(f64::NAN);
        h.record_us(u64::MAX);
        assert_eq!(h.count(), 1_001_003);
        assert!((h.max_ms() - 100_000.0).abs() <= 100.0);
    }
}
