//! Samples waiting for JetStream's acknowledgement.

use std::collections::VecDeque;

use pas_nats::Outgoing;

/// A bounded queue of messages not yet acknowledged by JetStream. When full,
/// the oldest message is dropped to make room (newer load matters more to an
/// autoscaler than older).
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    next_seq: u64,
    queue: VecDeque<(u64, Outgoing)>,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Self {
        Outbox {
            capacity: capacity.max(1),
            next_seq: 0,
            queue: VecDeque::new(),
        }
    }

    /// Appends a message; returns how many old ones were dropped for it.
    pub fn push(&mut self, msg: Outgoing) -> u64 {
        let mut dropped = 0;
        while self.queue.len() >= self.capacity {
            self.queue.pop_front();
            dropped += 1;
        }
        self.queue.push_back((self.next_seq, msg));
        self.next_seq += 1;
        dropped
    }

    /// Up to `n` of the oldest messages with their positions.
    pub fn peek(&self, n: usize) -> Vec<(u64, Outgoing)> {
        self.queue.iter().take(n).cloned().collect()
    }

    /// Removes every message up to and including position `seq` (those that
    /// were acknowledged; any dropped meanwhile are gone already).
    pub fn ack_through(&mut self, seq: u64) {
        while self.queue.front().is_some_and(|(s, _)| *s <= seq) {
            self.queue.pop_front();
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Outgoing {
        Outgoing {
            subject: "pas.cpu.node.n".into(),
            msg_id: i.to_string(),
            payload: i.to_string().into(),
        }
    }

    #[test]
    fn drops_oldest_when_full_and_acks_by_position() {
        let mut ob = Outbox::new(3);
        for i in 0..3 {
            assert_eq!(ob.push(msg(i)), 0);
        }
        let batch = ob.peek(2);
        assert_eq!(
            batch.iter().map(|(_, m)| m.msg_id.as_str()).collect::<Vec<_>>(),
            ["0", "1"]
        );
        // Two more arrive while the batch is in flight: 0 and 1 are dropped.
        assert_eq!(ob.push(msg(3)), 1);
        assert_eq!(ob.push(msg(4)), 1);
        // The batch's ack must not remove the newer messages.
        ob.ack_through(batch[1].0);
        assert_eq!(
            ob.peek(10)
                .iter()
                .map(|(_, m)| m.msg_id.as_str())
                .collect::<Vec<_>>(),
            ["2", "3", "4"]
        );
        ob.ack_through(ob.peek(1)[0].0);
        assert_eq!(ob.len(), 2);
    }
}
