//! The host end of the serial link: opens the port, says `Hello`, keeps heartbeats going,
//! retransmits what is not acknowledged, drops corrupt frames, notices a silent or unplugged
//! device and reconnects.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use fieldkit_core::latency::LatencyHistogram;
use serde::{Deserialize, Serialize};
use serialport::SerialPort;

use crate::outbox::Outbox;
use crate::protocol::{self, DeviceState, Frame, Message, NackReason, Telemetry, MAX_FRAME, VERSION};

/// Microseconds on CLOCK_MONOTONIC: the host's clock on the wire, shared by every process on
/// the machine (so a simulated device's log lines up with the host's plan).
pub fn monotonic_us() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    pub baud: u32,
    /// "none", "even" or "odd".
    pub parity: String,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Resend an unacknowledged message after this long.
    pub ack_timeout_ms: u64,
    /// Sends of one message before it is reported lost.
    pub max_tries: u8,
    pub heartbeat_ms: u64,
    /// The device closes everything when the host is silent this long.
    pub watchdog_ms: u16,
    /// The host drops the link when the device is silent this long.
    pub peer_timeout_ms: u64,
    pub reconnect_ms: u64,
}

impl LinkConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.serial_settings().map(|_| ())?;
        if self.baud == 0 {
            return Err("link.baud must be positive".into());
        }
        if self.max_tries == 0 || self.ack_timeout_ms == 0 || self.heartbeat_ms == 0 {
            return Err("link.max_tries, link.ack_timeout_ms and link.heartbeat_ms must be positive".into());
        }
        if self.heartbeat_ms >= self.watchdog_ms as u64 {
            return Err(format!(
                "link.heartbeat_ms ({}) must be shorter than link.watchdog_ms ({}), or the device trips its watchdog between heartbeats",
                self.heartbeat_ms, self.watchdog_ms
            ));
        }
        Ok(())
    }

    fn serial_settings(&self) -> Result<(serialport::Parity, serialport::StopBits), String> {
        let parity = match self.parity.as_str() {
            "none" => serialport::Parity::None,
            "even" => serialport::Parity::Even,
            "odd" => serialport::Parity::Odd,
            p => return Err(format!("link.parity {p:?}: expected \"none\", \"even\" or \"odd\"")),
        };
        let stop = match self.stop_bits {
            1 => serialport::StopBits::One,
            2 => serialport::StopBits::Two,
            n => return Err(format!("link.stop_bits {n}: expected 1 or 2")),
        };
        Ok((parity, stop))
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            baud: 115_200,
            parity: "none".into(),
            stop_bits: 1,
            ack_timeout_ms: 30,
            max_tries: 6,
            heartbeat_ms: 50,
            watchdog_ms: 300,
            peer_timeout_ms: 500,
            reconnect_ms: 100,
        }
    }
}

#[derive(Debug, Clone)]
pub enum LinkEvent {
    Up {
        nozzles: u8,
    },
    Down {
        reason: String,
    },
    Telemetry(Telemetry),
    /// A reliable message was acknowledged after `rtt_us`.
    Acked {
        msg: Message,
        rtt_us: u64,
    },
    Nacked {
        msg: Message,
        reason: NackReason,
    },
    /// A reliable message that was never acknowledged (out of tries, or the link went down).
    Lost {
        msg: Message,
    },
    /// An actuation report from the device (already acknowledged; may repeat).
    Report {
        id: u32,
        outcome: protocol::Outcome,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub retransmits: u64,
    pub frames_received: u64,
    pub corrupt_dropped: u64,
    pub connects: u64,
    pub disconnects: u64,
    /// Round trips of acknowledged first sends.
    #[serde(skip)]
    pub rtt: LatencyHistogram,
}

enum Chunk {
    Bytes(Vec<u8>),
    Closed(String),
}

struct Connection {
    writer: Box<dyn SerialPort>,
    rx: Receiver<Chunk>,
    stop: Arc<AtomicBool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Down,
    Handshake { hello_seq: u16 },
    Up,
}

pub struct Link {
    port: PathBuf,
    cfg: LinkConfig,
    conn: Option<Connection>,
    state: State,
    decoder: protocol::Decoder,
    outbox: Outbox<64>,
    /// First-send time and whether it was resent, per pending sequence number (for RTT).
    sent_at: HashMap<u16, (u64, bool)>,
    tx_seq: u16,
    last_rx: u64,
    next_heartbeat: u64,
    next_connect: u64,
    /// Last error when opening the port, reported once per change.
    last_open_error: Option<String>,
    pub stats: LinkStats,
}

impl Link {
    pub fn new(port: impl Into<PathBuf>, cfg: LinkConfig) -> Self {
        Link {
            port: port.into(),
            outbox: Outbox::new(cfg.ack_timeout_ms * 1000, cfg.max_tries),
            cfg,
            conn: None,
            state: State::Down,
            decoder: protocol::Decoder::new(),
            sent_at: HashMap::new(),
            tx_seq: 0,
            last_rx: 0,
            next_heartbeat: 0,
            next_connect: 0,
            last_open_error: None,
            stats: LinkStats::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Last error opening the port while down (for the operator).
    pub fn open_error(&self) -> Option<&str> {
        self.last_open_error.as_deref()
    }

    /// Sends `msg`; a message that needs an acknowledgement is resent until it gets one and
    /// ends in `Acked`, `Nacked` or `Lost`. Returns false when the link is not up (nothing sent).
    pub fn send(&mut self, msg: Message, now: u64) -> bool {
        if self.state != State::Up {
            return false;
        }
        self.transmit(msg, now);
        true
    }

    fn transmit(&mut self, msg: Message, now: u64) -> u16 {
        self.tx_seq = self.tx_seq.wrapping_add(1);
        let frame = Frame { seq: self.tx_seq, msg };
        self.write(&frame);
        if frame.msg.needs_ack() {
            self.sent_at.insert(frame.seq, (now, false));
            if let Err(frame) = self.outbox.push(frame, now) {
                // 64 unacknowledged messages: the device is not answering; treat as lost now
                // rather than grow without bound.
                self.sent_at.remove(&frame.seq);
            }
        }
        self.tx_seq
    }

    fn write(&mut self, frame: &Frame) {
        let mut buf = [0u8; MAX_FRAME];
        let Ok(n) = protocol::encode(frame, &mut buf) else { return };
        if let Some(c) = self.conn.as_mut() {
            // A failed write shows up as a closed reader or a silent device; the outbox resends.
            if c.writer.write_all(&buf[..n]).is_ok() {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += n as u64;
            }
        }
    }

    /// Drives the link: (re)connects, reads and decodes, acknowledges reports, resends,
    /// heartbeats and watches the device. Call it every few milliseconds.
    pub fn poll(&mut self, now: u64) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        if self.conn.is_none() {
            if now >= self.next_connect {
                self.next_connect = now + self.cfg.reconnect_ms * 1000;
                self.connect(now);
            }
            return events;
        }
        let mut closed = None;
        let mut bytes = Vec::new();
        if let Some(c) = &self.conn {
            loop {
                match c.rx.try_recv() {
                    Ok(Chunk::Bytes(b)) => bytes.extend_from_slice(&b),
                    Ok(Chunk::Closed(why)) => {
                        closed = Some(why);
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = Some("reader stopped".into());
                        break;
                    }
                }
            }
        }
        for b in bytes {
            match self.decoder.push(b) {
                Some(Ok(frame)) => self.receive(frame, now, &mut events),
                Some(Err(_)) => self.stats.corrupt_dropped += 1,
                None => {}
            }
        }
        if let Some(why) = closed {
            self.disconnect(why, &mut events);
            return events;
        }
        if now.saturating_sub(self.last_rx) > self.cfg.peer_timeout_ms * 1000 {
            self.disconnect(format!("device silent for {} ms", self.cfg.peer_timeout_ms), &mut events);
            return events;
        }
        let mut resend = Vec::new();
        let mut lost = Vec::new();
        let before = self.outbox.retransmits;
        self.outbox.poll(now, |f| resend.push(f.clone()), |f| lost.push(f));
        self.stats.retransmits += (self.outbox.retransmits - before) as u64;
        for f in resend {
            if let Some(s) = self.sent_at.get_mut(&f.seq) {
                s.1 = true;
            }
            self.write(&f);
        }
        for f in lost {
            self.sent_at.remove(&f.seq);
            if let State::Handshake { hello_seq } = self.state {
                if f.seq == hello_seq {
                    self.disconnect("no answer to Hello".into(), &mut events);
                    return events;
                }
            }
            events.push(LinkEvent::Lost { msg: f.msg });
        }
        if self.state == State::Up && now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_ms * 1000;
            self.transmit(Message::Heartbeat { host_time_us: now }, now);
        }
        events
    }

    /// Starts a new session on the current connection (after an E-stop).
    pub fn restart(&mut self, now: u64) {
        if self.conn.is_some() {
            self.hello(now);
        }
    }

    fn hello(&mut self, now: u64) {
        let seq = self
            .transmit(Message::Hello { version: VERSION, watchdog_ms: self.cfg.watchdog_ms, host_time_us: now }, now);
        self.state = State::Handshake { hello_seq: seq };
    }

    fn receive(&mut self, frame: Frame, now: u64, events: &mut Vec<LinkEvent>) {
        self.stats.frames_received += 1;
        self.last_rx = now;
        match frame.msg {
            Message::Welcome { hello_seq, version, nozzles } => {
                if self.state == (State::Handshake { hello_seq }) {
                    self.outbox.ack(hello_seq);
                    self.sent_at.remove(&hello_seq);
                    if version == VERSION {
                        self.state = State::Up;
                        self.next_heartbeat = now;
                        events.push(LinkEvent::Up { nozzles });
                    }
                }
            }
            Message::Ack { seq } => {
                if let Some(f) = self.outbox.ack(seq) {
                    let rtt_us = match self.sent_at.remove(&seq) {
                        Some((t, resent)) => {
                            let rtt = now.saturating_sub(t);
                            if !resent {
                                self.stats.rtt.record_us(rtt);
                            }
                            rtt
                        }
                        None => 0,
                    };
                    events.push(LinkEvent::Acked { msg: f.msg, rtt_us });
                }
            }
            Message::Nack { seq, reason } => {
                if let Some(f) = self.outbox.ack(seq) {
                    self.sent_at.remove(&seq);
                    if matches!(f.msg, Message::Hello { .. }) {
                        self.disconnect(format!("device refused Hello: {reason:?} (host protocol {VERSION})"), events);
                    } else {
                        events.push(LinkEvent::Nacked { msg: f.msg, reason });
                    }
                }
            }
            Message::Telemetry(t) => {
                // A device that rebooted or tripped its watchdog while we thought all was well
                // needs a new session.
                if self.state == State::Up && matches!(t.state, DeviceState::Idle | DeviceState::Safe) {
                    self.hello(now);
                }
                events.push(LinkEvent::Telemetry(t));
            }
            Message::Report { id, outcome } => {
                self.transmit(Message::Ack { seq: frame.seq }, now);
                events.push(LinkEvent::Report { id, outcome });
            }
            Message::Hello { .. }
            | Message::Heartbeat { .. }
            | Message::Detections(_)
            | Message::Actuate(_)
            | Message::Estop { .. } => {}
        }
    }

    fn connect(&mut self, now: u64) {
        match self.open() {
            Ok(conn) => {
                self.last_open_error = None;
                self.conn = Some(conn);
                self.decoder.reset();
                self.stats.connects += 1;
                self.last_rx = now;
                self.hello(now);
            }
            Err(e) => self.last_open_error = Some(format!("{}: {e}", self.port.display())),
        }
    }

    fn open(&self) -> Result<Connection, serialport::Error> {
        let path = self.port.to_string_lossy().into_owned();
        let (parity, stop_bits) =
            self.cfg.serial_settings().map_err(|e| serialport::Error::new(serialport::ErrorKind::InvalidInput, e))?;
        let port = serialport::new(path, self.cfg.baud)
            .parity(parity)
            .stop_bits(stop_bits)
            .data_bits(serialport::DataBits::Eight)
            .timeout(Duration::from_millis(20))
            .open()?;
        // Whatever the device said while nobody listened is stale.
        let _ = port.clear(serialport::ClearBuffer::All);
        let mut reader = port.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("bridge-rx".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                while !flag.load(Ordering::Relaxed) {
                    match reader.read(&mut buf) {
                        Ok(0) => {
                            let _ = tx.send(Chunk::Closed("end of stream".into()));
                            return;
                        }
                        Ok(n) => {
                            if tx.send(Chunk::Bytes(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::TimedOut
                                || e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Chunk::Closed(e.to_string()));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| serialport::Error::new(serialport::ErrorKind::Unknown, e.to_string()))?;
        Ok(Connection { writer: port, rx, stop })
    }

    fn disconnect(&mut self, reason: String, events: &mut Vec<LinkEvent>) {
        self.conn = None;
        self.state = State::Down;
        self.stats.disconnects += 1;
        self.next_connect = 0;
        let mut lost = Vec::new();
        self.outbox.clear(|f| lost.push(f));
        self.sent_at.clear();
        for f in lost {
            if !matches!(f.msg, Message::Hello { .. }) {
                events.push(LinkEvent::Lost { msg: f.msg });
            }
        }
        events.push(LinkEvent::Down { reason });
    }

    /// Sends a last message (E-stop on shutdown) and waits up to `wait` for its answer.
    pub fn send_and_wait(&mut self, msg: Message, wait: Duration) -> Vec<LinkEvent> {
        let start = monotonic_us();
        let mut events = Vec::new();
        if !self.send(msg, start) {
            return events;
        }
        while monotonic_us() - start < wait.as_micros() as u64 {
            std::thread::sleep(Duration::from_millis(2));
            events.extend(self.poll(monotonic_us()));
            if self.outbox.is_empty() {
                break;
            }
        }
        events
    }
}
