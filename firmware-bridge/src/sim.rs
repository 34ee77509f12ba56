//! The simulated MCU: the firmware's [`Device`] logic behind a pseudo-terminal, on its own
//! clock, with optional fault injection on the line and scripted unplugging. Every nozzle
//! opening and closing is logged as a JSON line with its time in the host's clock.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serialport::{SerialPort, TTYPort};

use crate::device::{Device, DeviceConfig, DeviceIo, Event};
use crate::error::{io_err, BridgeError};
use crate::protocol::{self, Frame, MAX_FRAME};

/// Line faults, each a probability per byte (corrupt, drop) or per frame (duplicate), applied
/// in both directions.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FaultConfig {
    pub corrupt: f64,
    pub drop: f64,
    pub duplicate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultCounts {
    pub bytes_corrupted: u64,
    pub bytes_dropped: u64,
    pub frames_duplicated: u64,
}

struct Faults {
    cfg: FaultConfig,
    rng: ChaCha8Rng,
    counts: FaultCounts,
}

impl Faults {
    fn new(cfg: FaultConfig) -> Self {
        Faults { cfg, rng: ChaCha8Rng::seed_from_u64(cfg.seed), counts: FaultCounts::default() }
    }

    fn mangle(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            if self.cfg.drop > 0.0 && self.rng.random_bool(self.cfg.drop) {
                self.counts.bytes_dropped += 1;
            } else if self.cfg.corrupt > 0.0 && self.rng.random_bool(self.cfg.corrupt) {
                self.counts.bytes_corrupted += 1;
                out.push(b ^ self.rng.random_range(1..=255u8));
            } else {
                out.push(b);
            }
        }
    }

    fn duplicate(&mut self) -> bool {
        let dup = self.cfg.duplicate > 0.0 && self.rng.random_bool(self.cfg.duplicate);
        self.counts.frames_duplicated += dup as u64;
        dup
    }
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where the simulated device appears: a symlink to the pseudo-terminal.
    pub port: PathBuf,
    pub log: Option<PathBuf>,
    pub device: DeviceConfig,
    pub faults: FaultConfig,
    /// (at, for) in ms since start: the device is unplugged (its pty closed) for a while.
    pub unplug: Vec<(u64, u64)>,
    pub run_for: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimSummary {
    pub frames_received: u64,
    pub corrupt_dropped: u64,
    pub opens: u64,
    pub faults: FaultCounts,
}

#[derive(Serialize)]
struct LogLine<'a> {
    t_us: u64,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nozzle: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

struct Io<'a> {
    out: Vec<Frame>,
    log: &'a mut Log,
    opens: u64,
}

impl DeviceIo for Io<'_> {
    fn send(&mut self, frame: &Frame) {
        self.out.push(frame.clone());
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Open { nozzle, id, host_us } => {
                self.opens += 1;
                self.log.write(host_us, "open", Some(nozzle), Some(id), None)
            }
            Event::Close { nozzle, id, host_us } => self.log.write(host_us, "close", Some(nozzle), Some(id), None),
            Event::State { state, host_us } => self.log.write(host_us, "state", None, None, Some(format!("{state:?}"))),
        }
    }
}

struct Log(Option<BufWriter<File>>);

impl Log {
    fn write(&mut self, t_us: u64, event: &str, nozzle: Option<u8>, id: Option<u32>, state: Option<String>) {
        if let Some(w) = self.0.as_mut() {
            let line = serde_json::to_string(&LogLine { t_us, event, nozzle, id, state }).unwrap_or_default();
            // The log is the test oracle: each line is flushed as it happens.
            let _ = writeln!(w, "{line}").and_then(|_| w.flush());
        }
    }
}

/// One opening of one nozzle in a simulator log, host clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub nozzle: u8,
    pub open_us: u64,
    pub close_us: u64,
}

/// The nozzle openings in a simulator log; a nozzle still open at the end of the log is an
/// error (the device must close everything before it stops being driven).
pub fn read_log(path: &Path) -> Result<Vec<Span>, BridgeError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut open: [Option<u64>; protocol::MAX_NOZZLES] = [None; protocol::MAX_NOZZLES];
    let mut spans = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let bad = |what: &str| BridgeError::Input(format!("{}:{}: {what}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| bad(&e.to_string()))?;
        let t = v["t_us"].as_u64().ok_or_else(|| bad("no t_us"))?;
        let nozzle = || {
            v["nozzle"].as_u64().filter(|&n| (n as usize) < protocol::MAX_NOZZLES).ok_or_else(|| bad("no valid nozzle"))
        };
        match v["event"].as_str() {
            Some("open") => open[nozzle()? as usize] = Some(t),
            Some("close") => {
                let n = nozzle()? as usize;
                let o = open[n].take().ok_or_else(|| bad("close without open"))?;
                spans.push(Span { nozzle: n as u8, open_us: o, close_us: t });
            }
            _ => {}
        }
    }
    if let Some(n) = open.iter().position(Option::is_some) {
        return Err(BridgeError::Input(format!("{}: nozzle {n} left open", path.display())));
    }
    Ok(spans)
}

struct Pty {
    master: TTYPort,
    _slave: TTYPort,
}

fn plug(path: &Path) -> Result<Pty, BridgeError> {
    let (mut master, slave) =
        TTYPort::pair().map_err(|e| BridgeError::Serial(format!("creating a pseudo-terminal: {e}")))?;
    master.set_timeout(Duration::from_millis(1)).map_err(|e| BridgeError::Serial(e.to_string()))?;
    let name = slave.name().ok_or_else(|| BridgeError::Serial("pseudo-terminal without a name".into()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(path).map_err(io_err(path))?,
        Ok(_) => {
            return Err(BridgeError::Config(format!(
                "{}: exists and is not a symlink; refusing to replace it",
                path.display()
            )))
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&name, path).map_err(io_err(path))?;
    Ok(Pty { master, _slave: slave })
}

/// Runs the simulated device until `stop` is set or `run_for` has passed.
pub fn run(opts: &SimOptions, stop: Arc<AtomicBool>) -> Result<SimSummary, BridgeError> {
    let mut log = Log(match &opts.log {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(io_err(p))?)),
        None => None,
    });
    let start = Instant::now();
    let clock = || start.elapsed().as_micros() as u64;
    let mut device = Device::new(opts.device);
    let mut decoder = protocol::Decoder::new();
    let mut faults = Faults::new(opts.faults);
    let mut summary = SimSummary::default();
    let mut pty = Some(plug(&opts.port)?);
    let mut replug_at: Option<u64> = None;
    let mut unplug = opts.unplug.clone();
    unplug.sort();
    let mut buf = [0u8; 512];
    let mut mangled = Vec::new();
    let mut wire = [0u8; MAX_FRAME];
    while !stop.load(Ordering::Relaxed) && opts.run_for.is_none_or(|d| start.elapsed() < d) {
        let now = clock();
        let ms = now / 1000;
        if let Some(&(at, dur)) = unplug.first() {
            if ms >= at && pty.is_some() {
                unplug.remove(0);
                pty = None;
                let _ = std::fs::remove_file(&opts.port);
                replug_at = Some(at + dur);
                log.write(device.host_time(now), "unplug", None, None, None);
            }
        }
        if replug_at.is_some_and(|t| ms >= t) {
            replug_at = None;
            pty = Some(plug(&opts.port)?);
            decoder.reset();
            log.write(device.host_time(now), "replug", None, None, None);
        }
        let mut io = Io { out: Vec::new(), log: &mut log, opens: 0 };
        match pty.as_mut() {
            Some(p) => match p.master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    mangled.clear();
                    faults.mangle(&buf[..n], &mut mangled);
                    for &b in &mangled {
                        match decoder.push(b) {
                            Some(Ok(frame)) => {
                                summary.frames_received += 1;
                                device.on_frame(&frame, clock(), &mut io);
                                if faults.duplicate() {
                                    device.on_frame(&frame, clock(), &mut io);
                                }
                            }
                            Some(Err(_)) => {
                                summary.corrupt_dropped += 1;
                                device.on_corrupt();
                            }
                            None => {}
                        }
                    }
                }
                _ => {}
            },
            // Unplugged from the host but still powered: the clock and watchdog run on.
            None => std::thread::sleep(Duration::from_millis(1)),
        }
        device.tick(clock(), &mut io);
        let (out, opens) = (std::mem::take(&mut io.out), io.opens);
        summary.opens += opens;
        if let Some(p) = pty.as_mut() {
            for f in out {
                let Ok(n) = protocol::encode(&f, &mut wire) else { continue };
                let copies = 1 + faults.duplicate() as usize;
                for _ in 0..copies {
                    mangled.clear();
                    faults.mangle(&wire[..n], &mut mangled);
                    // Nobody reading: the bytes are lost, as on a real UART.
                    let _ = p.master.write_all(&mangled);
                }
            }
        }
    }
    drop(pty);
    let _ = std::fs::remove_file(&opts.port);
    summary.faults = faults.counts;
    Ok(summary)
}
