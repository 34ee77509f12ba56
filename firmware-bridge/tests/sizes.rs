//! Encoded sizes of typical messages on the wire (printed for docs/bridge.md; the largest must
//! fit MAX_FRAME, which `protocol` tests).

use fieldkit_bridge::protocol::*;

fn wire(msg: Message) -> usize {
    let mut buf = [0u8; MAX_FRAME];
    encode(&Frame { seq: 40_000, msg }, &mut buf).unwrap()
}

#[test]
fn typical_frame_sizes() {
    let t = 3_600_000_000u64; // an hour into the session
    let sizes = [
        ("Hello", wire(Message::Hello { version: VERSION, watchdog_ms: 300, host_time_us: t })),
        ("Welcome", wire(Message::Welcome { hello_seq: 40_000, version: VERSION, nozzles: 8 })),
        ("Heartbeat", wire(Message::Heartbeat { host_time_us: t })),
        ("Actuate", wire(Message::Actuate(Actuate { id: 100_000, nozzle: 7, open_at_us: t, duration_us: 250_000 }))),
        ("Estop", wire(Message::Estop { reason: EstopReason::Vision })),
        ("Nack", wire(Message::Nack { seq: 40_000, reason: NackReason::TooLate })),
        ("Ack", wire(Message::Ack { seq: 40_000 })),
        (
            "Report",
            wire(Message::Report { id: 100_000, outcome: Outcome::Done { opened_us: t, closed_us: t + 250_000 } }),
        ),
        (
            "Telemetry",
            wire(Message::Telemetry(Telemetry {
                host_time_us: t,
                state: DeviceState::Ready,
                nozzles_open: 0xff,
                faults: 0,
                queued: 3,
                done: 100_000,
                failed: 10,
                rx_corrupt: 500,
                detections: 4,
            })),
        ),
    ];
    for (name, n) in sizes {
        println!("{name}: {n} bytes");
        assert!(n <= 40, "{name} {n}");
    }
}
