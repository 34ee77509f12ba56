//! The wire protocol between the host (the robot's computer) and its microcontroller.
//!
//! A frame is `postcard(Frame) ++ crc32(le)`, COBS-encoded and terminated by a `0x00` byte, so
//! a receiver that starts mid-stream or loses bytes resynchronises at the next zero. Every
//! frame carries the sender's sequence number; messages that change the device's state are
//! acknowledged by that number (see [`Message::needs_ack`]) and retransmitted until they are.
//! All times on the wire are in the host's clock (microseconds); the device keeps the offset
//! to its own clock from `Hello` and `Heartbeat`.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to [`Message`]; both ends refuse other versions.
pub const VERSION: u16 = 1;
/// Largest serialized frame (postcard bytes) either end sends or accepts.
pub const MAX_PAYLOAD: usize = 192;
/// Largest frame on the wire: payload + CRC, COBS overhead, delimiter.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 4 + (MAX_PAYLOAD + 4) / 254 + 1 + 1;
/// Detections carried by one [`DetectionBatch`] (the best-scored ones when there are more).
pub const MAX_DETECTIONS: usize = 12;
/// Nozzles a device may drive (the state masks are `u16`).
pub const MAX_NOZZLES: usize = 16;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u16,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Host → device: start (or restart) a session. Resets the device's duplicate filter,
    /// leaves E-stop and safe state, and sets the watchdog.
    Hello { version: u16, watchdog_ms: u16, host_time_us: u64 },
    /// Device → host: the answer to `Hello` (it acknowledges the Hello's sequence number).
    Welcome { hello_seq: u16, version: u16, nozzles: u8 },
    /// Host → device, periodic: liveness and the clock.
    Heartbeat { host_time_us: u64 },
    /// Host → device: what the camera saw (for the device's display and counters).
    Detections(DetectionBatch),
    /// Host → device: open `nozzle` at `open_at_us` for `duration_us`. Sending the same `id`
    /// again replaces its times (how merged triggers extend a spray).
    Actuate(Actuate),
    /// Host → device: close everything now and refuse actuations until the next `Hello`.
    Estop { reason: EstopReason },
    /// Either way: the message with this sequence number was received and applied.
    Ack { seq: u16 },
    /// Either way: the message with this sequence number was received and refused.
    Nack { seq: u16, reason: NackReason },
    /// Device → host, periodic (it is also the device's heartbeat).
    Telemetry(Telemetry),
    /// Device → host: how an actuation ended.
    Report { id: u32, outcome: Outcome },
}

impl Message {
    /// Messages retransmitted until acknowledged; the rest are periodic or are themselves
    /// answers.
    pub fn needs_ack(&self) -> bool {
        matches!(self, Message::Hello { .. } | Message::Actuate(_) | Message::Estop { .. } | Message::Report { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Detections(_) => "Detections",
            Message::Actuate(_) => "Actuate",
            Message::Estop { .. } => "Estop",
            Message::Ack { .. } => "Ack",
            Message::Nack { .. } => "Nack",
            Message::Telemetry(_) => "Telemetry",
            Message::Report { .. } => "Report",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionBatch {
    pub frame: u32,
    /// Capture time of the camera frame.
    pub time_us: u64,
    pub detections: heapless::Vec<CompactDetection, MAX_DETECTIONS>,
}

/// A detection in 10 bytes: box corners as fractions of the image (0..=65535), score 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompactDetection {
    pub class: u8,
    pub score: u8,
    pub x1: u16,
    pub y1: u16,
    pub x2: u16,
    pub y2: u16,
}

impl CompactDetection {
    /// `bbox` in pixels of a `width` × `height` image; out-of-image coordinates are clamped.
    pub fn new(class: u8, score: f32, bbox: [f32; 4], width: f32, height: f32) -> Self {
        let q = |v: f32, size: f32| ((v / size).clamp(0.0, 1.0) * 65535.0 + 0.5) as u16;
        CompactDetection {
            class,
            score: (score.clamp(0.0, 1.0) * 255.0 + 0.5) as u8,
            x1: q(bbox[0], width),
            y1: q(bbox[1], height),
            x2: q(bbox[2], width),
            y2: q(bbox[3], height),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Actuate {
    pub id: u32,
    pub nozzle: u8,
    pub open_at_us: u64,
    pub duration_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EstopReason {
    Operator,
    /// The detection stream stopped (camera or model failure).
    Vision,
    /// The host is shutting down cleanly.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NackReason {
    Version,
    /// No `Hello` yet in this session.
    NotReady,
    UnknownNozzle,
    /// The open time had already passed when the message arrived.
    TooLate,
    QueueFull,
    Estopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done { opened_us: u64, closed_us: u64 },
    Failed(FailReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// Cut short or cancelled by an E-stop.
    Estop,
    /// Cut short or cancelled because the host went silent.
    Watchdog,
    /// The host re-opened the session (`Hello`) before it ran.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Powered, waiting for `Hello`; nozzles closed.
    Idle,
    Ready,
    /// Watchdog tripped: nozzles closed until the next `Hello`.
    Safe,
    /// E-stopped: nozzles closed until the next `Hello`.
    Estop,
}

/// Fault bits in [`Telemetry::faults`], latched until the next `Hello`.
pub mod fault {
    pub const WATCHDOG: u16 = 1 << 0;
    pub const ESTOP: u16 = 1 << 1;
    /// An actuation arrived after its open time.
    pub const LATE: u16 = 1 << 2;
    pub const QUEUE_FULL: u16 = 1 << 3;
    /// Corrupt frames were dropped.
    pub const CORRUPT_RX: u16 = 1 << 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub host_time_us: u64,
    pub state: DeviceState,
    /// Bit n set = nozzle n open.
    pub nozzles_open: u16,
    pub faults: u16,
    pub queued: u8,
    pub done: u32,
    pub failed: u32,
    pub rx_corrupt: u32,
    /// Detections received in the last `Detections` message.
    pub detections: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// More than [`MAX_FRAME`] bytes without a delimiter; skipped to the next one.
    Overflow,
    Cobs,
    Crc,
    /// The CRC matched but the payload is not a `Frame` (a peer of another version).
    Malformed,
}

/// Writes `frame` to `out` as it goes on the wire (delimiter included); returns the length.
pub fn encode(frame: &Frame, out: &mut [u8; MAX_FRAME]) -> Result<usize, EncodeError> {
    let mut raw = [0u8; MAX_PAYLOAD + 4];
    let n = postcard::to_slice(frame, &mut raw[..MAX_PAYLOAD]).map_err(|_| EncodeError::TooLarge)?.len();
    let crc = CRC.checksum(&raw[..n]);
    raw[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let len = cobs::try_encode(&raw[..n + 4], &mut out[..MAX_FRAME - 1]).map_err(|_| EncodeError::TooLarge)?;
    out[len] = 0;
    Ok(len + 1)
}

/// Byte-stream decoder: feed every received byte, get a frame (or why one was dropped) at
/// each delimiter. Never panics, whatever the input.
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub const fn new() -> Self {
        Decoder { buf: [0; MAX_FRAME], len: 0, overflowed: false }
    }

    /// Forgets a partial frame (after a reconnect).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, DecodeError>> {
        if byte != 0 {
            if self.len == self.buf.len() {
                self.overflowed = true;
            } else {
                self.buf[self.len] = byte;
                self.len += 1;
            }
            return None;
        }
        let len = core::mem::replace(&mut self.len, 0);
        if core::mem::replace(&mut self.overflowed, false) {
            return Some(Err(DecodeError::Overflow));
        }
        if len == 0 {
            // Back-to-back delimiters: senders may flush the line with one.
            return None;
        }
        Some(decode_frame(&mut self.buf[..len]))
    }
}

fn decode_frame(encoded: &mut [u8]) -> Result<Frame, DecodeError> {
    let n = cobs::decode_in_place(encoded).map_err(|_| DecodeError::Cobs)?;
    if n < 5 || n > encoded.len() {
        return Err(DecodeError::Cobs);
    }
    let (payload, crc) = encoded[..n].split_at(n - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if CRC.checksum(payload) != crc {
        return Err(DecodeError::Crc);
    }
    match postcard::from_bytes::<Frame>(payload) {
        Ok(frame) => Ok(frame),
        Err(_) => Err(DecodeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> heapless::Vec<Result<Frame, DecodeError>, 16> {
        let mut d = Decoder::new();
        let mut out = heapless::Vec::new();
        for &b in bytes {
            if let Some(r) = d.push(b) {
                let _ = out.push(r);
            }
        }
        out
    }

    fn biggest() -> Frame {
        let det = CompactDetection { class: 255, score: 255, x1: 65535, y1: 65535, x2: 65535, y2: 65535 };
        let mut detections = heapless::Vec::new();
        for _ in 0..MAX_DETECTIONS {
            detections.push(det).unwrap();
        }
        Frame {
            seq: u16::MAX,
            msg: Message::Detections(DetectionBatch { frame: u32::MAX, time_us: u64::MAX, detections }),
        }
    }

    #[test]
    fn round_trip_and_resync_after_garbage() {
        let f = Frame {
            seq: 7,
            msg: Message::Actuate(Actuate { id: 3, nozzle: 2, open_at_us: 1_000_000, duration_us: 250_000 }),
        };
        let mut wire = [0u8; MAX_FRAME];
        let n = encode(&f, &mut wire).unwrap();
        assert_eq!(wire[n - 1], 0);
        assert!(wire[..n - 1].iter().all(|&b| b != 0));
        let mut stream = heapless::Vec::<u8, 512>::new();
        stream.extend_from_slice(&[1, 2, 3, 0]).unwrap(); // garbage before the frame
        stream.extend_from_slice(&wire[..n]).unwrap();
        let got = decode_all(&stream);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert_eq!(got[1], Ok(f));
    }

    #[test]
    fn the_largest_message_fits() {
        let mut wire = [0u8; MAX_FRAME];
        let n = encode(&biggest(), &mut wire).unwrap();
        assert_eq!(decode_all(&wire[..n]).as_slice(), &[Ok(biggest())]);
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let f = Frame { seq: 1, msg: Message::Estop { reason: EstopReason::Operator } };
        let mut wire = [0u8; MAX_FRAME];
        let n = encode(&f, &mut wire).unwrap();
        for i in 0..n - 1 {
            for bit in 0..8 {
                let mut w = wire;
                w[i] ^= 1 << bit;
                for r in decode_all(&w[..n]) {
                    assert!(r.is_err(), "byte {i} bit {bit} gave {r:?}");
                }
            }
        }
    }

    #[test]
    fn overflow_is_reported_once_and_skipped() {
        let mut d = Decoder::new();
        for _ in 0..MAX_FRAME * 2 {
            assert!(d.push(0x55).is_none());
        }
        assert_eq!(d.push(0), Some(Err(DecodeError::Overflow)));
        let mut wire = [0u8; MAX_FRAME];
        let f = Frame { seq: 2, msg: Message::Ack { seq: 9 } };
        let n = encode(&f, &mut wire).unwrap();
        let got: heapless::Vec<_, 4> = wire[..n].iter().filter_map(|&b| d.push(b)).collect();
        assert_eq!(got.as_slice(), &[Ok(f)]);
    }
}
