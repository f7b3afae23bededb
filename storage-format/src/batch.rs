//! Kafka v2 record batches (magic 2) as opaque byte ranges.
//!
//! Kafscale never decodes individual records on the data path: it validates the
//! 61-byte batch header and the CRC-32C, rewrites the fields the log owns
//! (base offset, partition leader epoch, LogAppendTime) and otherwise keeps the
//! producer's bytes, compression included, exactly as sent.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Size of the fixed v2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the `batchLength` field's coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORDS_COUNT: usize = 57;

const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: {0} bytes left, a batch header needs {BATCH_HEADER_LEN}")]
    Truncated(usize),
    #[error("record batch declares {declared} bytes but only {available} follow")]
    LengthMismatch { declared: usize, available: usize },
    #[error("record batch magic {0} is not supported; only magic 2 (Kafka 0.11+) is accepted")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch header is inconsistent: {0}")]
    Invalid(&'static str),
}

/// A read-only view of one validated v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, including the 12-byte log overhead.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Number of offsets the batch occupies in the log.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Parses the header of the batch at the start of `buf` without checking the CRC.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated(buf.len()));
    }
    let magic = buf[OFF_MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let length = i32_at(buf, OFF_LENGTH);
    if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Invalid(
            "batchLength is smaller than the batch header",
        ));
    }
    let size = length as usize + LOG_OVERHEAD;
    if size > buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: size,
            available: buf.len(),
        });
    }
    let header = BatchHeader {
        base_offset: i64_at(buf, OFF_BASE_OFFSET),
        size,
        partition_leader_epoch: i32_at(buf, OFF_LEADER_EPOCH),
        attributes: i16_at(buf, OFF_ATTRIBUTES),
        last_offset_delta: i32_at(buf, OFF_LAST_OFFSET_DELTA),
        base_timestamp: i64_at(buf, OFF_BASE_TIMESTAMP),
        max_timestamp: i64_at(buf, OFF_MAX_TIMESTAMP),
        producer_id: i64_at(buf, OFF_PRODUCER_ID),
        producer_epoch: i16_at(buf, OFF_PRODUCER_EPOCH),
        base_sequence: i32_at(buf, OFF_BASE_SEQUENCE),
        records_count: i32_at(buf, OFF_RECORDS_COUNT),
    };
    if header.last_offset_delta < 0 {
        return Err(BatchError::Invalid("lastOffsetDelta is negative"));
    }
    if header.records_count < 0 {
        return Err(BatchError::Invalid("recordsCount is negative"));
    }
    Ok(header)
}

/// CRC-32C as stored in a v2 batch: over everything from `attributes` to the end.
fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Parses the batch at the start of `buf` and verifies its CRC.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let batch = &buf[..header.size];
    let expected = u32::from_be_bytes([
        batch[OFF_CRC],
        batch[OFF_CRC + 1],
        batch[OFF_CRC + 2],
        batch[OFF_CRC + 3],
    ]);
    let actual = batch_crc(batch);
    if expected != actual {
        return Err(BatchError::CrcMismatch { expected, actual });
    }
    Ok(header)
}

/// Splits a record set (concatenated batches) into validated batches. Any
/// invalid batch fails the whole set, as Kafka fails the whole partition.
pub fn split_validated(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = validate(&records[pos..])?;
        out.push((header, records.slice(pos..pos + header.size)));
        pos += header.size;
    }
    Ok(out)
}

/// Iterates over the headers of concatenated batches whose CRCs have already been
/// verified (for example a segment body checked as a whole). Stops at the first
/// incomplete batch, which is how a range read ends.
pub fn iter_headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = parse_header(buf.get(pos..)?).ok()?;
        let at = pos;
        pos += header.size;
        Some((at, header))
    })
}

/// What the log changes in a batch as it appends it.
#[derive(Debug, Clone, Copy)]
pub struct BatchRewrite {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// `Some(now_ms)` when the topic uses LogAppendTime.
    pub log_append_time_ms: Option<i64>,
}

/// Returns a copy of `batch` with the log-owned fields rewritten. Only the header
/// is touched; with LogAppendTime the CRC is recomputed because the timestamp and
/// attributes are covered by it.
pub fn rewrite(batch: &Bytes, rw: BatchRewrite) -> Bytes {
    let mut out = BytesMut::from(&batch[..]);
    out[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&rw.base_offset.to_be_bytes());
    out[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4]
        .copy_from_slice(&rw.partition_leader_epoch.to_be_bytes());
    if let Some(now) = rw.log_append_time_ms {
        let attrs = i16_at(&out, OFF_ATTRIBUTES) | ATTR_TIMESTAMP_TYPE_LOG_APPEND;
        out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        out[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let crc = batch_crc(&out);
        out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    out.freeze()
}

/// Batches for tests of this crate and of the crates that use it (feature
/// `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use super::*;

    /// Builds a minimal valid v2 batch with `count` empty-bodied records' worth of
    /// offsets. The record bodies are opaque to Kafscale, so a fixed payload does.
    pub fn make_batch(base_offset: i64, count: i32, payload: &[u8]) -> Bytes {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        b.extend_from_slice(payload);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[OFF_BASE_OFFSET..8].copy_from_slice(&base_offset.to_be_bytes());
        b[OFF_LENGTH..12].copy_from_slice(&len.to_be_bytes());
        b[OFF_MAGIC] = 2;
        b[OFF_LAST_OFFSET_DELTA..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[OFF_BASE_TIMESTAMP..35].copy_from_slice(&1_000i64.to_be_bytes());
        b[OFF_MAX_TIMESTAMP..43].copy_from_slice(&(1_000i64 + i64::from(count)).to_be_bytes());
        b[OFF_PRODUCER_ID..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[OFF_BASE_SEQUENCE..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[OFF_RECORDS_COUNT..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
        b[OFF_CRC..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::make_batch;
    use super::*;

    #[test]
    fn validates_and_splits_concatenated_batches() {
        let mut set = BytesMut::new();
        set.extend_from_slice(&make_batch(0, 3, b"abc"));
        set.extend_from_slice(&make_batch(0, 2, b"defgh"));
        let batches = split_validated(&set.freeze()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].0.records_count, 3);
        assert_eq!(batches[1].0.offset_count(), 2);
        assert_eq!(batches[1].1.len(), BATCH_HEADER_LEN + 5);
    }

    #[test]
    fn detects_crc_mismatch() {
        let mut b = BytesMut::from(&make_batch(0, 1, b"payload")[..]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn rejects_old_magic_truncation_and_bad_length() {
        let good = make_batch(0, 1, b"x");
        let mut old = BytesMut::from(&good[..]);
        old[OFF_MAGIC] = 1;
        assert_eq!(validate(&old), Err(BatchError::UnsupportedMagic(1)));
        assert_eq!(validate(&good[..30]), Err(BatchError::Truncated(30)));
        assert!(matches!(
            validate(&good[..good.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut short = BytesMut::from(&good[..]);
        short[OFF_LENGTH..12].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(validate(&short), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn rewrite_assigns_offset_and_keeps_crc_valid() {
        let b = make_batch(0, 4, b"data");
        let out = rewrite(
            &b,
            BatchRewrite {
                base_offset: 42,
                partition_leader_epoch: 7,
                log_append_time_ms: None,
            },
        );
        let h = validate(&out).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset(), h.partition_leader_epoch),
            (42, 45, 7)
        );
        let out = rewrite(
            &b,
            BatchRewrite {
                base_offset: 9,
                partition_leader_epoch: 0,
                log_append_time_ms: Some(123_456),
            },
        );
        let h = validate(&out).expect("CRC recomputed for LogAppendTime");
        assert_eq!(h.max_timestamp, 123_456);
        assert_ne!(h.attributes & ATTR_TIMESTAMP_TYPE_LOG_APPEND, 0);
    }
}
