//! Retransmission of messages that need an acknowledgement; one implementation for both ends.

use crate::protocol::Frame;

struct Pending {
    frame: Frame,
    due_us: u64,
    tries: u8,
}

/// Frames sent and not yet acknowledged, each resent every `timeout_us` until `max_tries`
/// sends, then given up (the caller reports the failure).
pub struct Outbox<const N: usize> {
    pending: heapless::Vec<Pending, N>,
    timeout_us: u64,
    max_tries: u8,
    /// Resends so far (for link statistics).
    pub retransmits: u32,
}

impl<const N: usize> Outbox<N> {
    pub const fn new(timeout_us: u64, max_tries: u8) -> Self {
        Outbox { pending: heapless::Vec::new(), timeout_us, max_tries, retransmits: 0 }
    }

    /// Registers a frame the caller has just sent; gives it back when the outbox is full.
    // The frame comes back whole for the caller to retry: boxing it would need an allocator,
    // which the microcontroller side does not have.
    #[allow(clippy::result_large_err)]
    pub fn push(&mut self, frame: Frame, now_us: u64) -> Result<(), Frame> {
        self.pending.push(Pending { frame, due_us: now_us + self.timeout_us, tries: 1 }).map_err(|p| p.frame)
    }

    /// The acknowledged frame, if it was pending.
    pub fn ack(&mut self, seq: u16) -> Option<Frame> {
        let i = self.pending.iter().position(|p| p.frame.seq == seq)?;
        Some(self.pending.swap_remove(i).frame)
    }

    /// Resends what is due through `send`; frames out of tries go to `give_up`.
    pub fn poll(&mut self, now_us: u64, mut send: impl FnMut(&Frame), mut give_up: impl FnMut(Frame)) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if now_us < p.due_us {
                i += 1;
            } else if p.tries >= self.max_tries {
                give_up(self.pending.swap_remove(i).frame);
            } else {
                p.tries += 1;
                p.due_us = now_us + self.timeout_us;
                self.retransmits += 1;
                send(&p.frame);
                i += 1;
            }
        }
    }

    /// Empties the outbox (the session ended), handing each frame to `give_up`.
    pub fn clear(&mut self, mut give_up: impl FnMut(Frame)) {
        while let Some(p) = self.pending.pop() {
            give_up(p.frame);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.pending.is_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;

    #[test]
    fn resends_until_acked_or_out_of_tries() {
        let mut o = Outbox::<4>::new(100, 3);
        o.push(Frame { seq: 1, msg: Message::Ack { seq: 0 } }, 0).unwrap();
        o.push(Frame { seq: 2, msg: Message::Ack { seq: 0 } }, 0).unwrap();
        let (mut sent, mut lost) = (0, 0);
        o.poll(99, |_| sent += 1, |_| lost += 1);
        assert_eq!((sent, lost), (0, 0));
        o.poll(100, |_| sent += 1, |_| lost += 1);
        assert_eq!((sent, lost), (2, 0));
        assert_eq!(o.ack(2).map(|f| f.seq), Some(2));
        assert!(o.ack(2).is_none());
        o.poll(200, |_| sent += 1, |_| lost += 1);
        o.poll(
            300,
            |_| sent += 1,
            |f| {
                assert_eq!(f.seq, 1);
                lost += 1
            },
        );
        assert_eq!((sent, lost, o.len()), (3, 1, 0));
        assert_eq!(o.retransmits, 3);
    }
}
