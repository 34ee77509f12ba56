//! The operator status screen: link state, frame rate, detections per class, nozzle states
//! and faults on a 128×64 monochrome display (SSD1306-class), drawn with embedded-graphics
//! onto any `DrawTarget` — the display driver on a firmware, a framebuffer on the host.

use core::fmt::Write;

use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use crate::protocol::{fault, DeviceState};

pub const WIDTH: u32 = 128;
pub const HEIGHT: u32 = 64;
/// Classes listed on the screen (the most frequent first is the caller's choice).
pub const CLASS_ROWS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Up,
    Down,
}

#[derive(Debug, Clone)]
pub struct Status<'a> {
    pub link: LinkState,
    pub fps: f32,
    /// (class name, detections in the last frame), at most [`CLASS_ROWS`] shown.
    pub classes: &'a [(&'a str, u32)],
    pub nozzles: u8,
    pub nozzles_open: u16,
    pub state: DeviceState,
    pub faults: u16,
    pub sprayed: u32,
    pub failed: u32,
}

type Line = heapless::String<24>;

pub fn draw<D: DrawTarget<Color = BinaryColor>>(target: &mut D, s: &Status) -> Result<(), D::Error> {
    target.clear(BinaryColor::Off)?;
    let on = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
    let off = MonoTextStyle::new(&FONT_6X10, BinaryColor::Off);
    let text = |t: &mut D, line: &str, x: i32, y: i32, style| {
        Text::with_baseline(line, Point::new(x, y), style, Baseline::Top).draw(t).map(|_| ())
    };

    // Header, inverted so the link state reads at a glance.
    Rectangle::new(Point::zero(), Size::new(WIDTH, 11))
        .into_styled(PrimitiveStyle::with_fill(BinaryColor::On))
        .draw(target)?;
    let link = match s.link {
        LinkState::Up => "LINK UP",
        LinkState::Down => "LINK DOWN",
        LinkState::Connecting => "LINK ...",
    };
    text(target, link, 1, 1, off)?;
    let mut fps = Line::new();
    let _ = write!(fps, "{:>5.1}fps", s.fps);
    text(target, &fps, WIDTH as i32 - 6 * fps.len() as i32 - 1, 1, off)?;

    for (row, (name, n)) in s.classes.iter().take(CLASS_ROWS).enumerate() {
        let mut line = Line::new();
        let name: &str = name.get(..14).unwrap_or(name);
        let _ = write!(line, "{name:<14}{n:>6}");
        text(target, &line, 1, 13 + 10 * row as i32, on)?;
    }

    // One box per nozzle, filled while it sprays.
    let n = s.nozzles.max(1) as u32;
    let pitch = (WIDTH - 2) / n;
    for i in 0..n {
        let r = Rectangle::new(Point::new(1 + (i * pitch) as i32, 44), Size::new(pitch.saturating_sub(2).max(1), 8));
        let style = if s.nozzles_open & (1 << i) != 0 {
            PrimitiveStyle::with_fill(BinaryColor::On)
        } else {
            PrimitiveStyle::with_stroke(BinaryColor::On, 1)
        };
        r.into_styled(style).draw(target)?;
    }

    let mut line = Line::new();
    match s.state {
        DeviceState::Estop => {
            let _ = line.push_str("E-STOP ");
        }
        DeviceState::Safe => {
            let _ = line.push_str("SAFE ");
        }
        DeviceState::Idle => {
            let _ = line.push_str("IDLE ");
        }
        DeviceState::Ready => {}
    }
    for (bit, name) in
        [(fault::WATCHDOG, "WDOG "), (fault::LATE, "LATE "), (fault::QUEUE_FULL, "FULL "), (fault::CORRUPT_RX, "CRC ")]
    {
        if s.faults & bit != 0 {
            let _ = line.push_str(name);
        }
    }
    if line.is_empty() {
        let _ = line.push_str("OK ");
    }
    // The counts follow the faults while the 21 columns hold them.
    let mut counts = Line::new();
    let _ = write!(counts, "spray {} fail {}", s.sprayed, s.failed);
    if line.len() + counts.len() <= (WIDTH / 6) as usize {
        let _ = line.push_str(&counts);
    }
    text(target, &line, 1, 54, on)
}
