//! The microcontroller's side of the protocol as a `no_std` state machine: a firmware calls
//! [`Device::on_frame`] for each decoded frame and [`Device::tick`] from its main loop, and
//! drives its nozzle pins from the [`Event`]s. The simulated MCU runs this same code.
//!
//! Safety rules it enforces: nozzles open only for an acknowledged `Actuate` of the current
//! session; everything closes on E-stop, on `Hello`, and when the host has been silent for
//! the watchdog period; after E-stop or watchdog nothing opens until the next `Hello`.

use crate::outbox::Outbox;
use crate::protocol::{
    fault, Actuate, DeviceState, FailReason, Frame, Message, NackReason, Outcome, Telemetry, MAX_NOZZLES, VERSION,
};

/// Scheduled actuations the device holds at once.
pub const MAX_SCHEDULED: usize = 32;
const SEEN: usize = 32;

/// What the device did, for the firmware's pins and the simulator's log. Times in the host's
/// clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open { nozzle: u8, id: u32, host_us: u64 },
    Close { nozzle: u8, id: u32, host_us: u64 },
    State { state: DeviceState, host_us: u64 },
}

pub trait DeviceIo {
    fn send(&mut self, frame: &Frame);
    fn event(&mut self, event: Event);
}

#[derive(Debug, Clone, Copy)]
pub struct DeviceConfig {
    pub nozzles: u8,
    pub telemetry_ms: u16,
    pub report_timeout_ms: u16,
    pub report_tries: u8,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig { nozzles: 8, telemetry_ms: 100, report_timeout_ms: 50, report_tries: 10 }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    id: u32,
    nozzle: u8,
    open_at: u64,
    close_at: u64,
    opened_at: Option<u64>,
}

/// The most the host-clock offset follows a late heartbeat by, µs: at the host's 50 ms
/// heartbeat that is 5 ms a second, fifty times a poor crystal's 100 ppm.
const MAX_SLEW_US: i64 = 250;

pub struct Device {
    cfg: DeviceConfig,
    state: DeviceState,
    /// host clock − device clock, µs.
    offset: i64,
    watchdog_us: u64,
    last_rx: u64,
    schedule: heapless::Vec<Slot, MAX_SCHEDULED>,
    seen: [u16; SEEN],
    seen_len: usize,
    seen_next: usize,
    outbox: Outbox<16>,
    tx_seq: u16,
    faults: u16,
    done: u32,
    failed: u32,
    rx_corrupt: u32,
    open_mask: u16,
    detections: u8,
    next_telemetry: u64,
}

impl Device {
    pub fn new(cfg: DeviceConfig) -> Self {
        let cfg = DeviceConfig { nozzles: cfg.nozzles.min(MAX_NOZZLES as u8), ..cfg };
        Device {
            outbox: Outbox::new(cfg.report_timeout_ms as u64 * 1000, cfg.report_tries),
            cfg,
            state: DeviceState::Idle,
            offset: 0,
            watchdog_us: 0,
            last_rx: 0,
            schedule: heapless::Vec::new(),
            seen: [0; SEEN],
            seen_len: 0,
            seen_next: 0,
            tx_seq: 0,
            faults: 0,
            done: 0,
            failed: 0,
            rx_corrupt: 0,
            open_mask: 0,
            detections: 0,
            next_telemetry: 0,
        }
    }

    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// Bit n set = nozzle n open.
    pub fn nozzles_open(&self) -> u16 {
        self.open_mask
    }

    pub fn host_time(&self, device_us: u64) -> u64 {
        (device_us as i64).saturating_add(self.offset).max(0) as u64
    }

    fn device_time(&self, host_us: u64) -> u64 {
        (host_us as i64).saturating_sub(self.offset).max(0) as u64
    }

    /// The firmware's decoder dropped a frame (bad CRC, framing).
    pub fn on_corrupt(&mut self) {
        self.rx_corrupt = self.rx_corrupt.saturating_add(1);
        self.faults |= fault::CORRUPT_RX;
    }

    pub fn on_frame(&mut self, frame: &Frame, now: u64, io: &mut impl DeviceIo) {
        self.last_rx = now;
        let seq = frame.seq;
        if frame.msg.needs_ack() && !matches!(frame.msg, Message::Hello { .. }) && self.seen(seq) {
            // A retransmission of something already applied: its Ack was lost.
            self.reply(io, Message::Ack { seq });
            return;
        }
        match &frame.msg {
            Message::Hello { version, watchdog_ms, host_time_us } => {
                if *version != VERSION {
                    self.reply(io, Message::Nack { seq, reason: NackReason::Version });
                    return;
                }
                self.offset = *host_time_us as i64 - now as i64;
                self.cancel_all(FailReason::Reset, now, io);
                self.seen_len = 0;
                self.watchdog_us = *watchdog_ms as u64 * 1000;
                self.faults = 0;
                self.set_state(DeviceState::Ready, now, io);
                self.reply(io, Message::Welcome { hello_seq: seq, version: VERSION, nozzles: self.cfg.nozzles });
            }
            Message::Heartbeat { host_time_us } => {
                // Transit only delays a sample, so the largest recent offset is the best one;
                // a slow decay follows a device clock that runs fast. The decay is clamped
                // (MAX_SLEW_US a heartbeat): crystals drift by ppm, and a burst of heartbeats
                // held up on the line (a stalled host, a busy serial driver) must not drag the
                // clock, and every scheduled spray with it, by a share of their delay.
                let sample = *host_time_us as i64 - now as i64;
                if sample > self.offset {
                    self.offset = sample;
                } else {
                    self.offset -= ((self.offset - sample) / 16).min(MAX_SLEW_US);
                }
            }
            Message::Detections(batch) => self.detections = batch.detections.len() as u8,
            Message::Actuate(a) => {
                let answer = self.actuate(a, now, io);
                self.reply(io, answer.map_or(Message::Ack { seq }, |reason| Message::Nack { seq, reason }));
                self.remember(seq);
            }
            Message::Estop { reason: _ } => {
                self.estop(now, io);
                self.reply(io, Message::Ack { seq });
                self.remember(seq);
            }
            Message::Ack { seq } | Message::Nack { seq, .. } => {
                self.outbox.ack(*seq);
            }
            Message::Welcome { .. } | Message::Telemetry(_) | Message::Report { .. } => {}
        }
    }

    fn actuate(&mut self, a: &Actuate, now: u64, io: &mut impl DeviceIo) -> Option<NackReason> {
        match self.state {
            DeviceState::Idle => return Some(NackReason::NotReady),
            DeviceState::Safe | DeviceState::Estop => return Some(NackReason::Estopped),
            DeviceState::Ready => {}
        }
        if a.nozzle >= self.cfg.nozzles {
            return Some(NackReason::UnknownNozzle);
        }
        let open_at = self.device_time(a.open_at_us);
        let close_at = open_at + a.duration_us as u64;
        if let Some(s) = self.schedule.iter_mut().find(|s| s.id == a.id) {
            // An update of a spray (merged triggers): an open nozzle can only be held longer
            // or shorter, not reopened earlier.
            if s.nozzle != a.nozzle {
                return Some(NackReason::UnknownNozzle);
            }
            if s.opened_at.is_none() {
                s.open_at = open_at;
            }
            s.close_at = close_at.max(now);
            self.tick(now, io);
            return None;
        }
        if close_at <= now {
            self.faults |= fault::LATE;
            return Some(NackReason::TooLate);
        }
        if open_at < now {
            self.faults |= fault::LATE;
        }
        if self.schedule.push(Slot { id: a.id, nozzle: a.nozzle, open_at, close_at, opened_at: None }).is_err() {
            self.faults |= fault::QUEUE_FULL;
            return Some(NackReason::QueueFull);
        }
        self.tick(now, io);
        None
    }

    /// Also what a firmware calls for its own E-stop button.
    pub fn estop(&mut self, now: u64, io: &mut impl DeviceIo) {
        self.faults |= fault::ESTOP;
        self.cancel_all(FailReason::Estop, now, io);
        self.set_state(DeviceState::Estop, now, io);
    }

    /// Closes every nozzle and reports every scheduled actuation failed.
    fn cancel_all(&mut self, reason: FailReason, now: u64, io: &mut impl DeviceIo) {
        while let Some(s) = self.schedule.pop() {
            self.failed += 1;
            self.report(io, now, s.id, Outcome::Failed(reason));
        }
        self.update_pins(now, 0, io);
    }

    fn set_state(&mut self, state: DeviceState, now: u64, io: &mut impl DeviceIo) {
        if self.state != state {
            self.state = state;
            io.event(Event::State { state, host_us: self.host_time(now) });
        }
    }

    /// Drives the pins to the open slots, emitting an event per nozzle that changes.
    fn update_pins(&mut self, now: u64, cause: u32, io: &mut impl DeviceIo) {
        let mut mask = 0u16;
        for s in &self.schedule {
            if s.opened_at.is_some() {
                mask |= 1 << s.nozzle;
            }
        }
        let changed = mask ^ self.open_mask;
        let host_us = self.host_time(now);
        for n in 0..self.cfg.nozzles {
            if changed & (1 << n) != 0 {
                let id = self.schedule.iter().find(|s| s.nozzle == n).map_or(cause, |s| s.id);
                io.event(if mask & (1 << n) != 0 {
                    Event::Open { nozzle: n, id, host_us }
                } else {
                    Event::Close { nozzle: n, id, host_us }
                });
            }
        }
        self.open_mask = mask;
    }

    /// Runs the clock: watchdog, openings and closings that are due, retransmissions,
    /// telemetry. Call it often (every millisecond or so).
    pub fn tick(&mut self, now: u64, io: &mut impl DeviceIo) {
        if self.state == DeviceState::Ready && now.saturating_sub(self.last_rx) > self.watchdog_us {
            self.faults |= fault::WATCHDOG;
            self.cancel_all(FailReason::Watchdog, now, io);
            self.set_state(DeviceState::Safe, now, io);
        }
        let mut i = 0;
        let mut closed_id = 0;
        while i < self.schedule.len() {
            let s = &mut self.schedule[i];
            if s.opened_at.is_none() && now >= s.open_at {
                s.opened_at = Some(now);
            }
            if let (Some(opened), true) = (s.opened_at, now >= s.close_at) {
                let s = self.schedule.swap_remove(i);
                closed_id = s.id;
                self.done += 1;
                let outcome = Outcome::Done { opened_us: self.host_time(opened), closed_us: self.host_time(now) };
                self.report(io, now, s.id, outcome);
            } else {
                i += 1;
            }
        }
        self.update_pins(now, closed_id, io);
        // A report out of tries is dropped: the host times the actuation out itself.
        self.outbox.poll(now, |f| io.send(f), |_| {});
        if now >= self.next_telemetry {
            self.next_telemetry = now + self.cfg.telemetry_ms as u64 * 1000;
            let t = self.telemetry(now);
            self.reply(io, Message::Telemetry(t));
        }
    }

    pub fn telemetry(&self, now: u64) -> Telemetry {
        Telemetry {
            host_time_us: self.host_time(now),
            state: self.state,
            nozzles_open: self.open_mask,
            faults: self.faults,
            queued: self.schedule.len() as u8,
            done: self.done,
            failed: self.failed,
            rx_corrupt: self.rx_corrupt,
            detections: self.detections,
        }
    }

    fn next_seq(&mut self) -> u16 {
        self.tx_seq = self.tx_seq.wrapping_add(1);
        self.tx_seq
    }

    fn reply(&mut self, io: &mut impl DeviceIo, msg: Message) {
        let seq = self.next_seq();
        io.send(&Frame { seq, msg });
    }

    /// Sends an actuation outcome and keeps resending it until the host acknowledges.
    fn report(&mut self, io: &mut impl DeviceIo, now: u64, id: u32, outcome: Outcome) {
        let frame = Frame { seq: self.next_seq(), msg: Message::Report { id, outcome } };
        io.send(&frame);
        // A full outbox means the host is not acknowledging; the report was still sent once.
        let _ = self.outbox.push(frame, now);
    }

    fn seen(&self, seq: u16) -> bool {
        self.seen[..self.seen_len].contains(&seq)
    }

    fn remember(&mut self, seq: u16) {
        self.seen[self.seen_next] = seq;
        self.seen_next = (self.seen_next + 1) % SEEN;
        self.seen_len = (self.seen_len + 1).min(SEEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EstopReason;

    #[derive(Default)]
    struct Rec {
        sent: heapless::Vec<Frame, 64>,
        events: heapless::Vec<Event, 64>,
    }

    impl DeviceIo for Rec {
        fn send(&mut self, frame: &Frame) {
            let _ = self.sent.push(frame.clone());
        }
        fn event(&mut self, event: Event) {
            let _ = self.events.push(event);
        }
    }

    fn hello(d: &mut Device, io: &mut Rec, now: u64) {
        let f =
            Frame { seq: 1, msg: Message::Hello { version: VERSION, watchdog_ms: 300, host_time_us: 1_000_000 + now } };
        d.on_frame(&f, now, io);
    }

    fn actuate(seq: u16, id: u32, nozzle: u8, open: u64, dur: u32) -> Frame {
        Frame { seq, msg: Message::Actuate(Actuate { id, nozzle, open_at_us: open, duration_us: dur }) }
    }

    #[test]
    fn opens_and_closes_on_the_host_clock_and_reports() {
        let mut d = Device::new(DeviceConfig { nozzles: 4, ..Default::default() });
        let mut io = Rec::default();
        hello(&mut d, &mut io, 0);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Welcome { hello_seq: 1, nozzles: 4, .. }));
        // Host clock runs 1 s ahead of the device's.
        d.on_frame(&actuate(2, 10, 3, 1_200_000, 100_000), 1_000, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Ack { seq: 2 }));
        for t in (0..400_000).step_by(1000) {
            d.tick(t, &mut io);
            if t % 100_000 == 0 {
                d.on_frame(&Frame { seq: 0, msg: Message::Heartbeat { host_time_us: 1_000_000 + t } }, t, &mut io);
            }
        }
        let opens: heapless::Vec<_, 8> = io.events.iter().filter(|e| !matches!(e, Event::State { .. })).collect();
        assert_eq!(
            opens.as_slice(),
            &[
                &Event::Open { nozzle: 3, id: 10, host_us: 1_200_000 },
                &Event::Close { nozzle: 3, id: 10, host_us: 1_300_000 }
            ]
        );
        assert!(io.sent.iter().any(|f| f.msg
            == Message::Report { id: 10, outcome: Outcome::Done { opened_us: 1_200_000, closed_us: 1_300_000 } }));
    }

    /// Heartbeats held up on the line move the device's idea of host time by at most
    /// MAX_SLEW_US each (before: a sixteenth of the delay, 72 % of it after 20 late ones),
    /// while a device clock that runs 1000 ppm fast is still followed within a millisecond.
    #[test]
    fn late_heartbeats_barely_move_the_clock_and_drift_is_followed() {
        let mut d = Device::new(DeviceConfig { nozzles: 2, ..Default::default() });
        let mut io = Rec::default();
        hello(&mut d, &mut io, 0);
        let start = d.offset;
        for k in 1..=20u64 {
            // Sent at host 1 s + k·50 ms, arriving 500 ms late.
            let now = k * 50_000 + 500_000;
            d.on_frame(
                &Frame { seq: 0, msg: Message::Heartbeat { host_time_us: 1_000_000 + k * 50_000 } },
                now,
                &mut io,
            );
        }
        assert!((start - d.offset).abs() <= 20 * MAX_SLEW_US, "{} -> {}", start, d.offset);
        // On time again: back at once (the largest sample wins).
        d.on_frame(&Frame { seq: 0, msg: Message::Heartbeat { host_time_us: 2_100_000 } }, 1_100_000, &mut io);
        assert_eq!(d.offset, start);
        // The device clock runs 1000 ppm fast: each 50 ms of host time is 50.05 ms here.
        for k in 1..=400u64 {
            let host = 2_100_000 + k * 50_000;
            let now = 1_100_000 + k * 50_050;
            d.on_frame(&Frame { seq: 0, msg: Message::Heartbeat { host_time_us: host } }, now, &mut io);
            let truth = host as i64 - now as i64;
            if k > 100 {
                assert!((d.offset - truth).abs() <= 1_000, "heartbeat {k}: {} vs {truth}", d.offset);
            }
        }
    }

    #[test]
    fn a_duplicate_is_acked_but_applied_once_and_an_update_extends() {
        let mut d = Device::new(DeviceConfig { nozzles: 2, ..Default::default() });
        let mut io = Rec::default();
        hello(&mut d, &mut io, 0);
        d.on_frame(&actuate(2, 1, 0, 1_100_000, 50_000), 0, &mut io);
        d.on_frame(&actuate(2, 1, 0, 1_100_000, 50_000), 10, &mut io);
        assert_eq!(d.schedule.len(), 1);
        d.tick(120_000, &mut io);
        assert_eq!(d.nozzles_open(), 1);
        // The same id again, later close: the nozzle stays open until then.
        d.on_frame(&actuate(3, 1, 0, 1_100_000, 80_000), 121_000, &mut io);
        d.tick(160_000, &mut io);
        assert_eq!(d.nozzles_open(), 1);
        d.tick(180_000, &mut io);
        assert_eq!(d.nozzles_open(), 0);
        let acks = io.sent.iter().filter(|f| matches!(f.msg, Message::Ack { .. })).count();
        assert_eq!(acks, 3);
    }

    /// The host's answer to a protected plant: a spray updated to no length before it opens
    /// never opens and is reported done with no time open (withdrawn); one shortened while
    /// open to a close already past closes as the update lands.
    #[test]
    fn an_update_withdraws_a_spray_not_open_and_shortens_an_open_one() {
        let mut d = Device::new(DeviceConfig { nozzles: 2, ..Default::default() });
        let mut io = Rec::default();
        hello(&mut d, &mut io, 0);
        d.on_frame(&actuate(2, 1, 0, 1_100_000, 50_000), 0, &mut io);
        d.on_frame(&actuate(3, 1, 0, 1_100_000, 0), 10, &mut io);
        for t in (0..200_000).step_by(1000) {
            d.tick(t, &mut io);
            assert_eq!(d.nozzles_open(), 0, "at {t}");
        }
        assert!(!io.events.iter().any(|e| matches!(e, Event::Open { .. })), "{:?}", io.events);
        let withdrawn = io.sent.iter().find_map(|f| match f.msg {
            Message::Report { id: 1, outcome: Outcome::Done { opened_us, closed_us } } => Some((opened_us, closed_us)),
            _ => None,
        });
        assert!(matches!(withdrawn, Some((o, c)) if o == c), "{withdrawn:?}");
        d.on_frame(&actuate(4, 2, 1, 1_300_000, 100_000), 200_000, &mut io);
        d.tick(310_000, &mut io);
        assert_eq!(d.nozzles_open(), 0b10);
        d.on_frame(&actuate(5, 2, 1, 1_300_000, 20_000), 330_000, &mut io);
        assert_eq!(d.nozzles_open(), 0);
    }

    #[test]
    fn watchdog_closes_everything_and_refuses_until_hello() {
        let mut d = Device::new(DeviceConfig { nozzles: 2, ..Default::default() });
        let mut io = Rec::default();
        hello(&mut d, &mut io, 0);
        d.on_frame(&actuate(2, 1, 1, 1_000_000, 1_000_000), 0, &mut io);
        d.tick(1000, &mut io);
        assert_eq!(d.nozzles_open(), 2);
        d.tick(300_000, &mut io);
        assert_eq!(d.state(), DeviceState::Ready);
        d.tick(301_001, &mut io);
        assert_eq!(d.state(), DeviceState::Safe);
        assert_eq!(d.nozzles_open(), 0);
        assert!(io
            .sent
            .iter()
            .any(|f| f.msg == Message::Report { id: 1, outcome: Outcome::Failed(FailReason::Watchdog) }));
        d.on_frame(&actuate(3, 2, 0, 1_400_000, 1000), 302_000, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { seq: 3, reason: NackReason::Estopped }));
        hello(&mut d, &mut io, 303_000);
        assert_eq!(d.state(), DeviceState::Ready);
    }

    #[test]
    fn refusals() {
        let mut d = Device::new(DeviceConfig { nozzles: 2, ..Default::default() });
        let mut io = Rec::default();
        d.on_frame(&actuate(1, 1, 0, 0, 10), 0, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { reason: NackReason::NotReady, .. }));
        d.on_frame(
            &Frame { seq: 2, msg: Message::Hello { version: VERSION + 1, watchdog_ms: 1, host_time_us: 0 } },
            0,
            &mut io,
        );
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { reason: NackReason::Version, .. }));
        hello(&mut d, &mut io, 0);
        d.on_frame(&actuate(3, 1, 2, 1_100_000, 10), 0, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { reason: NackReason::UnknownNozzle, .. }));
        d.on_frame(&actuate(4, 1, 0, 1_020_000, 10), 50_000, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { reason: NackReason::TooLate, .. }));
        d.on_frame(&Frame { seq: 5, msg: Message::Estop { reason: EstopReason::Vision } }, 0, &mut io);
        d.on_frame(&actuate(6, 1, 0, 1_100_000, 10), 0, &mut io);
        assert!(matches!(io.sent.last().unwrap().msg, Message::Nack { reason: NackReason::Estopped, .. }));
    }
}

#[cfg(test)]
mod footprint {
    /// The device side must fit a small microcontroller's RAM next to its application.
    #[test]
    fn device_and_decoder_fit_in_a_few_kilobytes() {
        let device = core::mem::size_of::<super::Device>();
        let decoder = core::mem::size_of::<crate::protocol::Decoder>();
        assert!(device + decoder < 8 * 1024, "device {device} B + decoder {decoder} B");
        extern crate std;
        std::println!("RAM: Device {device} B, Decoder {decoder} B");
    }
}
