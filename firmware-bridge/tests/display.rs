//! The operator screen, rendered on the host: a snapshot against the committed PNG (look at
//! it: tests/golden/status.png; regenerate with UPDATE_GOLDEN=1) and checks of what it shows.

use std::path::Path;

use fieldkit_bridge::display::{LinkState, Status};
use fieldkit_bridge::protocol::{fault, DeviceState};
use fieldkit_bridge::render;

fn status<'a>(classes: &'a [(&'a str, u32)]) -> Status<'a> {
    Status {
        link: LinkState::Up,
        fps: 14.8,
        classes,
        nozzles: 8,
        nozzles_open: 0b0000_0110,
        state: DeviceState::Ready,
        faults: 0,
        sprayed: 42,
        failed: 1,
    }
}

#[test]
fn status_screen_snapshot() {
    let classes = [("weed", 3), ("crop", 12)];
    let img = render::render(&status(&classes)).to_image(4);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/status.png");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        img.save(&golden).unwrap();
    }
    let want = image::open(&golden).expect("tests/golden/status.png (UPDATE_GOLDEN=1 writes it)").to_rgb8();
    assert_eq!(img.dimensions(), want.dimensions());
    let differing = img.pixels().zip(want.pixels()).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "status screen differs from the snapshot in {differing} pixels");
}

#[test]
fn nozzle_boxes_fill_while_open_and_faults_replace_the_counts() {
    let classes = [("weed", 3)];
    let fb = render::render(&status(&classes));
    // Nozzle pitch is (128 - 2) / 8 = 15 px; boxes start at x = 1 + 15 i, y = 44..52.
    let inside = |i: u32| fb.get(1 + 15 * i + 6, 48);
    assert!(!inside(0) && inside(1) && inside(2) && !inside(3));
    let lit = |fb: &render::Framebuffer, y0: u32| {
        (y0..y0 + 10).flat_map(|y| (0..128).map(move |x| (x, y))).filter(|&(x, y)| fb.get(x, y)).count()
    };
    let ok_line = lit(&fb, 54);
    let mut s = status(&classes);
    s.state = DeviceState::Safe;
    s.faults = fault::WATCHDOG;
    s.link = LinkState::Down;
    let safe = render::render(&s);
    assert_ne!(lit(&safe, 54), ok_line, "the fault line must change");
    assert_ne!(lit(&safe, 0), lit(&fb, 0), "the header must show the link state");
}
