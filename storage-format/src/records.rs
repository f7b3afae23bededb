//! The records inside a v2 batch, for the one job that must look at them:
//! the cleaner of compacted topics, which keeps some records of a batch and
//! writes the batch again. (The data path keeps batches opaque, see `batch`.)
//!
//! A rebuilt batch keeps what Kafka's cleaner keeps: the base offset, the
//! last offset delta (so the producer's last sequence stays known), the
//! producer fields, the leader epoch, the timestamp type, the codec and the
//! retained records' offsets, keys, values, headers and timestamps.

use bytes::Bytes;
use thiserror::Error;

use crate::batch::{BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD};
use crate::compression::{Codec, CodecError};

/// Attributes bit 6: the base timestamp holds the batch's delete horizon
/// (KIP-534), the time after which the cleaner may drop its tombstones.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordsError {
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: usize, reason: &'static str },
    #[error("the batch declares {declared} records but holds {found}")]
    Count { declared: i32, found: usize },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One record of a batch, borrowed from its decompressed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's attributes byte.
    attributes: u8,
    /// Everything after the offset delta: key, value and headers, as stored.
    tail: &'a [u8],
}

impl RecordView<'_> {
    /// The same key, value and headers (timestamps may be re-based).
    pub fn same_content(&self, other: &RecordView<'_>) -> bool {
        self.offset_delta == other.offset_delta && self.tail == other.tail
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    index: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, reason: &'static str) -> RecordsError {
        RecordsError::Malformed {
            index: self.index,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, RecordsError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.malformed("cut short"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<i64, RecordsError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(self.malformed("a varint runs past 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.malformed("a field runs past the record"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn nullable(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.malformed("a length overflows"))?;
        self.take(len).map(Some)
    }
}

/// The records of a batch's decompressed record bytes, each checked to end
/// exactly where its size says.
pub fn parse(records: &[u8], declared: i32) -> Result<Vec<RecordView<'_>>, RecordsError> {
    let mut out = Vec::new();
    let mut c = Cursor {
        buf: records,
        pos: 0,
        index: 0,
    };
    while c.pos < records.len() {
        c.index = out.len();
        let size = c.varint()?;
        let size = usize::try_from(size).map_err(|_| c.malformed("negative size"))?;
        let body = c.take(size)?;
        let mut r = Cursor {
            buf: body,
            pos: 0,
            index: out.len(),
        };
        let attributes = r.byte()?;
        let timestamp_delta = r.varint()?;
        let offset_delta =
            i32::try_from(r.varint()?).map_err(|_| r.malformed("the offset delta overflows"))?;
        let tail_start = r.pos;
        let key = r.nullable()?;
        let value = r.nullable()?;
        let headers = r.varint()?;
        for _ in 0..headers.max(0) {
            r.nullable()?;
            r.nullable()?;
        }
        if r.pos != body.len() {
            return Err(r.malformed("its fields do not fill its size"));
        }
        out.push(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            attributes,
            tail: &body[tail_start..],
        });
    }
    if out.len() != declared.max(0) as usize {
        return Err(RecordsError::Count {
            declared,
            found: out.len(),
        });
    }
    Ok(out)
}

/// A batch's records, decompressed (at most `limit` bytes).
pub fn decompress(batch: &[u8], h: &BatchHeader, limit: usize) -> Result<Vec<u8>, RecordsError> {
    let data = batch.get(BATCH_HEADER_LEN..h.size).unwrap_or_default();
    Ok(Codec::of(h.attributes, data)?.decompress(data, limit)?)
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// `batch` (header `h`) written again with only `kept` of its records, and
/// with `delete_horizon_ms` as its delete horizon when given (KIP-534: the
/// base timestamp then holds the horizon, and every record's timestamp
/// delta is taken from it, so each record keeps its timestamp). An empty
/// `kept` gives an empty batch, which Kafka's cleaner also writes to keep a
/// producer's last sequence.
pub fn rebuild(
    batch: &[u8],
    h: &BatchHeader,
    kept: &[RecordView<'_>],
    delete_horizon_ms: Option<i64>,
) -> Result<Bytes, RecordsError> {
    if kept.is_empty() {
        return Ok(empty_batch(batch, h));
    }
    let records_data = batch.get(BATCH_HEADER_LEN..h.size).unwrap_or_default();
    let codec = Codec::of(h.attributes, records_data)?;
    let (base_timestamp, attributes) = match delete_horizon_ms {
        Some(horizon) => (horizon, h.attributes | ATTR_DELETE_HORIZON),
        None => (h.base_timestamp, h.attributes),
    };
    // CreateTime: the greatest timestamp of the records kept, as Kafka's
    // cleaner writes it; LogAppendTime keeps the append time.
    let max_timestamp = if h.attributes & ATTR_LOG_APPEND_TIME != 0 {
        h.max_timestamp
    } else {
        kept.iter()
            .map(|r| h.base_timestamp.wrapping_add(r.timestamp_delta))
            .max()
            .unwrap_or(h.max_timestamp)
    };
    let mut plain = Vec::new();
    let mut body = Vec::new();
    for r in kept {
        let timestamp = h.base_timestamp.wrapping_add(r.timestamp_delta);
        body.clear();
        body.push(r.attributes);
        put_varint(&mut body, timestamp.wrapping_sub(base_timestamp));
        put_varint(&mut body, i64::from(r.offset_delta));
        body.extend_from_slice(r.tail);
        put_varint(&mut plain, body.len() as i64);
        plain.extend_from_slice(&body);
    }
    let compressed = codec.compress(&plain)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + compressed.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&compressed);
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
}

/// A batch's header with no records, as Kafka's cleaner writes one:
/// uncompressed, its offsets, producer fields and leader epoch kept, both
/// timestamps its max timestamp.
fn empty_batch(batch: &[u8], h: &BatchHeader) -> Bytes {
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    let attributes = h.attributes & (ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL);
    let length = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[27..35].copy_from_slice(&h.max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// The delete horizon a batch carries, if any.
pub fn delete_horizon_ms(h: &BatchHeader) -> Option<i64> {
    (h.attributes & ATTR_DELETE_HORIZON != 0).then_some(h.base_timestamp)
}

/// Batches with real records for tests of this crate and of the crates that
/// use it (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use super::*;

    /// A record as a test writes it: timestamp delta, key, value.
    pub type TestRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

    /// A batch as a client writes it: `records` are (timestamp delta, key,
    /// value), offsets 0.. from `base_offset`.
    pub fn client_batch(base_offset: i64, codec: Codec, records: &[TestRecord<'_>]) -> Bytes {
        let mut plain = Vec::new();
        for (i, (ts, key, value)) in records.iter().enumerate() {
            let mut body = vec![0u8];
            put_varint(&mut body, *ts);
            put_varint(&mut body, i as i64);
            for field in [key, value] {
                match field {
                    Some(b) => {
                        put_varint(&mut body, b.len() as i64);
                        body.extend_from_slice(b);
                    }
                    None => put_varint(&mut body, -1),
                }
            }
            put_varint(&mut body, 1);
            put_varint(&mut body, 1);
            body.push(b'h');
            put_varint(&mut body, 1);
            body.push(b'v');
            put_varint(&mut plain, body.len() as i64);
            plain.extend_from_slice(&body);
        }
        let attributes: i16 = match codec {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy { .. } => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        };
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        b.extend_from_slice(&codec.compress(&plain).unwrap());
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&(records.len() as i32 - 1).to_be_bytes());
        b[27..35].copy_from_slice(&1_000i64.to_be_bytes());
        b[35..43].copy_from_slice(&2_000i64.to_be_bytes());
        b[43..51].copy_from_slice(&7i64.to_be_bytes());
        b[53..57].copy_from_slice(&40i32.to_be_bytes());
        b[57..61].copy_from_slice(&(records.len() as i32).to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::client_batch;
    use super::*;
    use crate::batch;

    #[test]
    fn a_rebuilt_batch_keeps_offsets_fields_timestamps_and_codec() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy { framed: true },
            Codec::Snappy { framed: false },
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let original = client_batch(
                100,
                codec,
                &[
                    (0, Some(b"a"), Some(b"1")),
                    (5, Some(b"b"), None),
                    (9, Some(b"a"), Some(b"2")),
                ],
            );
            let h = batch::validate(&original).unwrap();
            let plain = decompress(&original, &h, 1 << 20).unwrap();
            let records = parse(&plain, h.records_count).unwrap();
            assert_eq!(records.len(), 3);
            assert_eq!(records[1].key, Some(&b"b"[..]));
            assert_eq!(records[1].value, None);
            // Keep the tombstone and the last record, with a horizon.
            let kept = [records[1], records[2]];
            let rebuilt = rebuild(&original, &h, &kept, Some(50_000)).unwrap();
            let rh = batch::validate(&rebuilt).expect("a valid CRC");
            assert_eq!(rh.base_offset, 100);
            assert_eq!(rh.last_offset_delta, 2, "the last offset stays");
            assert_eq!(rh.records_count, 2);
            assert_eq!((rh.producer_id, rh.base_sequence), (7, 40));
            assert_eq!(rh.attributes & 0x07, h.attributes & 0x07, "{codec:?}");
            assert_eq!(delete_horizon_ms(&rh), Some(50_000));
            assert_eq!(delete_horizon_ms(&h), None);
            let plain = decompress(&rebuilt, &rh, 1 << 20).unwrap();
            let again = parse(&plain, rh.records_count).unwrap();
            let stamps: Vec<i64> = again
                .iter()
                .map(|r| rh.base_timestamp + r.timestamp_delta)
                .collect();
            assert_eq!(stamps, vec![1_005, 1_009], "timestamps kept");
            assert_eq!(
                again.iter().map(|r| r.offset_delta).collect::<Vec<_>>(),
                vec![1, 2]
            );
            assert_eq!(again[1].value, Some(&b"2"[..]));
            assert_eq!(again[1].tail, records[2].tail, "headers kept");
            assert_eq!(rh.max_timestamp, 1_009, "the kept records' greatest");
            // Empty: a header with no records, the same offsets, uncompressed.
            let empty = rebuild(&original, &h, &[], None).unwrap();
            let eh = batch::validate(&empty).unwrap();
            assert_eq!((eh.records_count, eh.last_offset()), (0, 102));
            assert_eq!((eh.attributes & 0x07, eh.size), (0, BATCH_HEADER_LEN));
            assert_eq!((eh.producer_id, eh.base_sequence), (7, 40));
        }
    }

    #[test]
    fn malformed_records_are_reported_not_trusted() {
        let original = client_batch(0, Codec::None, &[(0, Some(b"k"), Some(b"v"))]);
        let h = batch::validate(&original).unwrap();
        let plain = decompress(&original, &h, 1 << 20).unwrap();
        assert!(matches!(
            parse(&plain, 2),
            Err(RecordsError::Count { declared: 2, .. })
        ));
        assert!(parse(&plain[..plain.len() - 1], 1).is_err());
        let mut bad = plain.clone();
        bad[0] = 0x7f; // a size far past the end
        assert!(matches!(
            parse(&bad, 1),
            Err(RecordsError::Malformed { .. })
        ));
    }
}
