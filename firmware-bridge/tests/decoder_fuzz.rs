//! The decoder against arbitrary and damaged input (bounded proptest runs, in CI).

use fieldkit_bridge::protocol::{self, Actuate, Decoder, EstopReason, Frame, Message, MAX_FRAME};
use proptest::prelude::*;

fn frames() -> impl Strategy<Value = Frame> {
    let msg = prop_oneof![
        (any::<u32>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(|(id, nozzle, open_at_us, duration_us)| {
            Message::Actuate(Actuate { id, nozzle, open_at_us, duration_us })
        }),
        any::<u64>().prop_map(|host_time_us| Message::Heartbeat { host_time_us }),
        any::<u16>().prop_map(|seq| Message::Ack { seq }),
        Just(Message::Estop { reason: EstopReason::Vision }),
    ];
    (any::<u16>(), msg).prop_map(|(seq, msg)| Frame { seq, msg })
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = protocol::encode(f, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn decode(bytes: &[u8]) -> Vec<Result<Frame, protocol::DecodeError>> {
    let mut d = Decoder::new();
    bytes.iter().filter_map(|&b| d.push(b)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic, and anything accepted re-encodes to exactly the bytes it came
    /// from (so it carried a valid CRC).
    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut d = Decoder::new();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(Ok(f)) = d.push(b) {
                prop_assert_eq!(encode(&f), bytes[start..=i].to_vec());
            }
            if b == 0 {
                start = i + 1;
            }
        }
    }

    #[test]
    fn round_trip(fs in proptest::collection::vec(frames(), 1..20)) {
        let wire: Vec<u8> = fs.iter().flat_map(encode).collect();
        let got: Vec<Frame> = decode(&wire).into_iter().map(|r| r.unwrap()).collect();
        prop_assert_eq!(got, fs);
    }

    /// Corrupted, dropped or inserted bytes lose frames but never yield one that was not sent,
    /// and the decoder is back in step after the next delimiter.
    #[test]
    fn damage_never_forges_a_frame(
        fs in proptest::collection::vec(frames(), 3..10),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, 1u8..=255), 1..4),
    ) {
        let mut wire: Vec<u8> = fs.iter().flat_map(encode).collect();
        // The last two frames stay intact: the one before the last may swallow the damage
        // (its delimiter ends it), the last must then arrive.
        let intact: usize = fs[fs.len() - 2..].iter().map(|f| encode(f).len()).sum();
        let damaged_len = wire.len() - intact;
        for (at, kind, v) in edits {
            let i = at.index(damaged_len);
            match kind {
                0 => wire[i] ^= v,
                1 => { wire.remove(i); }
                _ => wire.insert(i, v),
            }
        }
        let got = decode(&wire);
        for f in got.iter().flatten() {
            prop_assert!(fs.contains(f), "forged {:?}", f);
        }
        prop_assert_eq!(got.last().cloned(), Some(Ok(fs.last().unwrap().clone())));
    }
}
