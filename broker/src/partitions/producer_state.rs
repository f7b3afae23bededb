//! Idempotent-producer state of one partition: per producer id, its epoch and
//! the sequence ranges and offsets of its last five batches. A retried batch is
//! recognised and answered with its original offsets instead of being stored
//! twice; a gap or a stale epoch is refused.

use std::collections::{HashMap, VecDeque};

use kafscale_flusher_protocol::ProducerBatch;
use kafscale_storage_format::batch::BatchHeader;

/// Batches remembered per producer, as in Kafka (max.in.flight ≤ 5).
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// The table's clock when the producer last wrote (see `tick`).
    last_write_ms: i64,
}

/// How often the table looks for producers to forget.
pub const EXPIRY_CHECK_INTERVAL_MS: i64 = 60_000;

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: assign offsets and store it.
    Append,
    /// A retry of a batch already stored at these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("out-of-order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}; the producer was replaced")]
    StaleEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

/// Sequence numbers wrap from i32::MAX to 0.
pub fn seq_add(seq: i32, delta: i32) -> i32 {
    ((i64::from(seq) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Debug, Default, Clone)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// The time of the last `tick` (Unix ms): writes are stamped with it,
    /// so the table needs no clock of its own.
    clock_ms: i64,
}

impl ProducerStateTable {
    /// Rebuilds the table from stored batches (oldest first).
    pub fn rebuild(batches: &[ProducerBatch]) -> Self {
        let mut table = Self::default();
        for b in batches {
            table.record(
                b.producer_id,
                b.producer_epoch,
                b.base_sequence,
                b.last_offset_delta,
                b.base_offset,
            );
        }
        table
    }

    /// Checks a batch against the state, as if the batches in `pending` (earlier
    /// batches of the same request, already accepted) were recorded.
    pub fn check(
        &self,
        h: &BatchHeader,
        pending: &[(i64, i16, i32)],
    ) -> Result<SequenceCheck, SequenceError> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let last_seq = seq_add(h.base_sequence, h.last_offset_delta);
        let earlier = pending
            .iter()
            .rev()
            .find(|(pid, _, _)| *pid == h.producer_id);
        let entry = self.producers.get(&h.producer_id);
        let (epoch, expected) = match (earlier, entry) {
            (Some(&(_, epoch, prev_last)), _) => (epoch, Some(seq_add(prev_last, 1))),
            (None, Some(e)) => (e.epoch, e.batches.back().map(|b| seq_add(b.last_seq, 1))),
            // Unknown producer (new, or its state aged out): accept its sequence.
            (None, None) => return Ok(SequenceCheck::Append),
        };
        if h.producer_epoch < epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: h.producer_id,
                current: epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > epoch {
            // A bumped epoch starts its sequences again at 0.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        if earlier.is_none() {
            if let Some(dup) = entry.and_then(|e| {
                e.batches
                    .iter()
                    .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
            }) {
                return Ok(SequenceCheck::Duplicate {
                    base_offset: dup.base_offset,
                    last_offset: dup.last_offset,
                });
            }
        }
        match expected {
            Some(want) if want != h.base_sequence => Err(SequenceError::OutOfOrder {
                producer_id: h.producer_id,
                expected: want,
                got: h.base_sequence,
            }),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a stored batch.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        base_seq: i32,
        last_offset_delta: i32,
        base_offset: i64,
    ) {
        if producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(producer_id).or_default();
        entry.last_write_ms = self.clock_ms;
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: base_seq,
            last_seq: seq_add(base_seq, last_offset_delta),
            base_offset,
            last_offset: base_offset + i64::from(last_offset_delta),
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Advances the table's clock to `now_ms` and, at most once per
    /// [`EXPIRY_CHECK_INTERVAL_MS`], forgets producers that have not written
    /// for `expiration_ms` (Kafka's producer.id.expiration.ms): a retry that
    /// old is past every client's delivery timeout. Returns how many went.
    pub fn tick(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        if self.clock_ms != 0 && now_ms - self.clock_ms < EXPIRY_CHECK_INTERVAL_MS {
            return 0;
        }
        if self.clock_ms == 0 {
            // Entries rebuilt before the first tick count from now.
            for entry in self.producers.values_mut() {
                entry.last_write_ms = now_ms;
            }
        }
        self.clock_ms = now_ms;
        let before = self.producers.len();
        // A write is stamped with the clock of the tick before it, up to one
        // interval early: keep entries that long more.
        let oldest = now_ms - expiration_ms - EXPIRY_CHECK_INTERVAL_MS;
        self.producers.retain(|_, e| e.last_write_ms >= oldest);
        before - self.producers.len()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether the table remembers the producer.
    pub fn knows(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            size: 100,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn idle_producers_are_forgotten_after_the_expiration() {
        const DAY: i64 = 86_400_000;
        let mut t = ProducerStateTable::default();
        t.tick(1_000_000, DAY);
        for pid in 0..20_000 {
            t.record(pid, 0, 0, 0, pid);
        }
        assert_eq!(t.len(), 20_000);
        // Within the expiration, everyone is remembered (and checks still
        // recognise a retry).
        assert_eq!(t.tick(1_000_000 + DAY / 2, DAY), 0);
        t.record(7, 0, 1, 0, 30_000);
        // Long after, only the producer that kept writing is left.
        assert_eq!(
            t.tick(1_000_000 + DAY + 2 * EXPIRY_CHECK_INTERVAL_MS, DAY),
            19_999
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.check(&header(7, 0, 1, 1), &[]).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 30_000,
                last_offset: 30_000
            }
        );
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(&header(7, 0, 0, 5), &[]), Ok(SequenceCheck::Append));
        t.record(7, 0, 0, 4, 100);
        assert_eq!(t.check(&header(7, 0, 5, 5), &[]), Ok(SequenceCheck::Append));
        t.record(7, 0, 5, 4, 105);
        // A retry of either stored batch gets its original offsets.
        assert_eq!(
            t.check(&header(7, 0, 0, 5), &[]),
            Ok(SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 104
            })
        );
        assert_eq!(
            t.check(&header(7, 0, 5, 5), &[]),
            Ok(SequenceCheck::Duplicate {
                base_offset: 105,
                last_offset: 109
            })
        );
        // A gap is refused.
        assert!(matches!(
            t.check(&header(7, 0, 12, 1), &[]),
            Err(SequenceError::OutOfOrder { expected: 10, .. })
        ));
        // An older epoch is fenced; a newer one must restart at 0.
        t.record(7, 1, 0, 0, 110);
        assert!(matches!(
            t.check(&header(7, 0, 10, 1), &[]),
            Err(SequenceError::StaleEpoch { current: 1, .. })
        ));
        assert!(matches!(
            t.check(&header(7, 2, 3, 1), &[]),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert_eq!(t.check(&header(7, 2, 0, 1), &[]), Ok(SequenceCheck::Append));
        // Unknown producers and non-idempotent batches are accepted.
        assert_eq!(
            t.check(&header(8, 0, 42, 1), &[]),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            t.check(&header(-1, -1, -1, 3), &[]),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(1, 0, i, 0, i64::from(i));
        }
        assert!(matches!(
            t.check(&header(1, 0, 0, 1), &[]),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            t.check(&header(1, 0, 2, 1), &[]),
            Ok(SequenceCheck::Duplicate { .. })
        ));
        let mut w = ProducerStateTable::default();
        w.record(2, 0, i32::MAX - 1, 1, 0);
        assert_eq!(w.check(&header(2, 0, 0, 1), &[]), Ok(SequenceCheck::Append));
    }

    #[test]
    fn batches_of_one_request_are_checked_in_order() {
        let t = ProducerStateTable::rebuild(&[ProducerBatch {
            producer_id: 3,
            producer_epoch: 0,
            base_sequence: 0,
            last_offset_delta: 1,
            base_offset: 0,
        }]);
        // Second batch of the request continues the first one, not the table.
        assert_eq!(
            t.check(&header(3, 0, 4, 1), &[(3, 0, 3)]),
            Ok(SequenceCheck::Append)
        );
        assert!(t.check(&header(3, 0, 4, 1), &[]).is_err());
    }
}
