//! The `.kfs` segment and `.index` formats of the storage contract
//! (`docs/architecture.md`, "Storage format"). All integers are big-endian.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::batch::{self, BatchHeader};

pub const SEGMENT_MAGIC: u32 = 0x4B41_4653; // "KAFS"
pub const SEGMENT_FOOTER_MAGIC: u32 = 0x454E_4421; // "END!"
pub const INDEX_MAGIC: u32 = 0x4944_5800; // "IDX\0"
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const SEGMENT_FOOTER_LEN: usize = 16;
pub const INDEX_HEADER_LEN: usize = 16;
pub const INDEX_ENTRY_LEN: usize = 12;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("segment is {0} bytes, shorter than its header and footer")]
    TooShort(usize),
    #[error("segment header magic {0:#010x} is not KAFS")]
    BadMagic(u32),
    #[error("segment format version {0} is not supported (this build reads version 1)")]
    BadVersion(u16),
    #[error("segment footer magic {0:#010x} is not END!")]
    BadFooterMagic(u32),
    #[error("segment body CRC mismatch: footer says {expected:#010x}, body gives {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("index is malformed: {0}")]
    BadIndex(String),
    #[error("segment has no batches")]
    Empty,
    #[error("batch in segment is invalid: {0}")]
    Batch(#[from] batch::BatchError),
    #[error("segment bounds disagree: {0}")]
    Inconsistent(String),
}

/// The fixed 32-byte segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub flags: u16,
    pub base_offset: i64,
    pub record_count: i32,
    pub created_ms: i64,
}

/// The fixed 16-byte segment footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    pub crc32c: u32,
    pub last_offset: i64,
}

/// An encoded segment ready for upload.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    /// Header, body and footer as separate buffers so the body is never copied.
    pub kfs_parts: Vec<Bytes>,
    pub index: Bytes,
}

impl EncodedSegment {
    pub fn kfs_len(&self) -> usize {
        self.kfs_parts.iter().map(Bytes::len).sum()
    }

    /// The whole `.kfs` object in one buffer (the object store needs one body).
    pub fn kfs_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.kfs_len());
        for p in &self.kfs_parts {
            out.extend_from_slice(p);
        }
        out.freeze()
    }
}

/// Header flag of a segment written by the cleaner of a compacted topic:
/// its offsets may have gaps (superseded records removed), so its header's
/// base offset and its footer's last offset bound the range it covers, not
/// its first and last batch, and `record_count` counts the records present.
/// Readers that ignore flags still read it correctly: batches are found by
/// their own offsets, and such a segment is never a partition's newest (the
/// one recovery checks for contiguous offsets).
pub const FLAG_CLEANED: u16 = 0x0100;

impl SegmentHeader {
    pub fn is_cleaned(&self) -> bool {
        self.flags & FLAG_CLEANED != 0
    }
}

/// Builds `.kfs` and `.index` from batches whose offsets are already assigned and
/// contiguous. `index_interval` is the number of records between index entries.
pub fn encode(
    batches: &[Bytes],
    created_ms: i64,
    index_interval: u32,
) -> Result<EncodedSegment, SegmentError> {
    let first = batches.first().ok_or(SegmentError::Empty)?;
    let base_offset = batch::parse_header(first)?.base_offset;
    encode_range(batches, base_offset, None, 0, created_ms, index_interval)
}

/// A cleaned segment (`FLAG_CLEANED`) covering `base_offset..=last_offset`,
/// holding `batches` (possibly none: everything in the range was removed).
pub fn encode_cleaned(
    batches: &[Bytes],
    base_offset: i64,
    last_offset: i64,
    created_ms: i64,
    index_interval: u32,
) -> Result<EncodedSegment, SegmentError> {
    encode_range(
        batches,
        base_offset,
        Some(last_offset),
        FLAG_CLEANED,
        created_ms,
        index_interval,
    )
}

fn encode_range(
    batches: &[Bytes],
    base_offset: i64,
    covered_last: Option<i64>,
    flags: u16,
    created_ms: i64,
    index_interval: u32,
) -> Result<EncodedSegment, SegmentError> {
    let mut crc = 0u32;
    let mut record_count: i64 = 0;
    let mut last_offset = base_offset;
    let mut position = SEGMENT_HEADER_LEN as u64;
    let mut entries: Vec<(i64, u32)> = Vec::new();
    let mut since_entry: i64 = i64::MAX; // forces an entry for the first batch
    for b in batches {
        let h = batch::parse_header(b)?;
        if since_entry >= i64::from(index_interval) {
            let pos = u32::try_from(position)
                .map_err(|_| SegmentError::BadIndex("segment larger than 4 GiB".into()))?;
            entries.push((h.base_offset, pos));
            since_entry = 0;
        }
        since_entry += i64::from(h.records_count);
        record_count += i64::from(h.records_count);
        last_offset = h.last_offset();
        crc = crc32c::crc32c_append(crc, b);
        position += b.len() as u64;
    }
    let record_count = i32::try_from(record_count)
        .map_err(|_| SegmentError::BadIndex("more than 2^31 records in one segment".into()))?;
    if let Some(covered) = covered_last {
        if covered < last_offset || (batches.is_empty() && covered < base_offset - 1) {
            return Err(SegmentError::Inconsistent(format!(
                "a cleaned segment from {base_offset} cannot end at {covered}: its batches reach {last_offset}"
            )));
        }
        last_offset = covered;
    }

    let mut header = BytesMut::with_capacity(SEGMENT_HEADER_LEN);
    header.put_u32(SEGMENT_MAGIC);
    header.put_u16(FORMAT_VERSION);
    header.put_u16(flags);
    header.put_i64(base_offset);
    header.put_i32(record_count);
    header.put_i64(created_ms);
    header.put_u32(0);

    let mut footer = BytesMut::with_capacity(SEGMENT_FOOTER_LEN);
    footer.put_u32(crc);
    footer.put_i64(last_offset);
    footer.put_u32(SEGMENT_FOOTER_MAGIC);

    let mut kfs_parts = Vec::with_capacity(batches.len() + 2);
    kfs_parts.push(header.freeze());
    kfs_parts.extend(batches.iter().cloned());
    kfs_parts.push(footer.freeze());

    Ok(EncodedSegment {
        base_offset,
        last_offset,
        record_count,
        kfs_parts,
        index: encode_index(&entries, index_interval),
    })
}

fn encode_index(entries: &[(i64, u32)], interval: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
    out.put_u32(INDEX_MAGIC);
    out.put_u16(FORMAT_VERSION);
    out.put_u32(entries.len() as u32);
    out.put_u32(interval);
    out.put_u16(0);
    for (offset, pos) in entries {
        out.put_i64(*offset);
        out.put_u32(*pos);
    }
    out.freeze()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

pub fn decode_header(b: &[u8]) -> Result<SegmentHeader, SegmentError> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(SegmentError::TooShort(b.len()));
    }
    let magic = u32_at(b, 0);
    if magic != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic(magic));
    }
    let version = u16_at(b, 4);
    if version != FORMAT_VERSION {
        return Err(SegmentError::BadVersion(version));
    }
    Ok(SegmentHeader {
        flags: u16_at(b, 6),
        base_offset: i64_at(b, 8),
        record_count: i32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        created_ms: i64_at(b, 20),
    })
}

/// Decodes the last 16 bytes of a segment.
pub fn decode_footer(b: &[u8]) -> Result<SegmentFooter, SegmentError> {
    if b.len() < SEGMENT_FOOTER_LEN {
        return Err(SegmentError::TooShort(b.len()));
    }
    let f = &b[b.len() - SEGMENT_FOOTER_LEN..];
    let magic = u32_at(f, 12);
    if magic != SEGMENT_FOOTER_MAGIC {
        return Err(SegmentError::BadFooterMagic(magic));
    }
    Ok(SegmentFooter {
        crc32c: u32_at(f, 0),
        last_offset: i64_at(f, 4),
    })
}

/// A whole segment, verified: header, footer and body CRC.
#[derive(Debug, Clone)]
pub struct VerifiedSegment {
    pub header: SegmentHeader,
    pub footer: SegmentFooter,
    /// The concatenated record batches.
    pub body: Bytes,
}

impl VerifiedSegment {
    pub fn decode(kfs: Bytes) -> Result<Self, SegmentError> {
        if kfs.len() < SEGMENT_HEADER_LEN + SEGMENT_FOOTER_LEN {
            return Err(SegmentError::TooShort(kfs.len()));
        }
        let header = decode_header(&kfs)?;
        let footer = decode_footer(&kfs)?;
        let body = kfs.slice(SEGMENT_HEADER_LEN..kfs.len() - SEGMENT_FOOTER_LEN);
        let actual = crc32c::crc32c(&body);
        if actual != footer.crc32c {
            return Err(SegmentError::CrcMismatch {
                expected: footer.crc32c,
                actual,
            });
        }
        Ok(Self {
            header,
            footer,
            body,
        })
    }

    /// Size of the `.kfs` object this was decoded from.
    pub fn kfs_len(&self) -> u64 {
        (SEGMENT_HEADER_LEN + self.body.len() + SEGMENT_FOOTER_LEN) as u64
    }

    /// Byte position in `body` of the batch that contains `offset`, or of the
    /// first batch after it.
    pub fn position_of(&self, offset: i64) -> Option<usize> {
        batch::iter_headers(&self.body)
            .find(|(_, h)| h.last_offset() >= offset)
            .map(|(pos, _)| pos)
    }

    pub fn batch_headers(&self) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
        batch::iter_headers(&self.body)
    }
}

/// A decoded `.index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub interval: u32,
    pub entries: Vec<(i64, u32)>,
}

impl SegmentIndex {
    pub fn decode(b: &[u8]) -> Result<Self, SegmentError> {
        if b.len() < INDEX_HEADER_LEN {
            return Err(SegmentError::BadIndex(format!("{} bytes", b.len())));
        }
        if u32_at(b, 0) != INDEX_MAGIC {
            return Err(SegmentError::BadIndex("bad magic".into()));
        }
        if u16_at(b, 4) != FORMAT_VERSION {
            return Err(SegmentError::BadVersion(u16_at(b, 4)));
        }
        let count = u32_at(b, 6) as usize;
        let interval = u32_at(b, 10);
        let need = INDEX_HEADER_LEN + count.saturating_mul(INDEX_ENTRY_LEN);
        if b.len() < need {
            return Err(SegmentError::BadIndex(format!(
                "{count} entries need {need} bytes, have {}",
                b.len()
            )));
        }
        let entries = (0..count)
            .map(|i| {
                let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
                (i64_at(b, at), u32_at(b, at + 8))
            })
            .collect();
        Ok(Self { interval, entries })
    }

    /// Position in the `.kfs` file to start scanning for `offset`: the last entry
    /// whose offset is `<= offset`.
    pub fn lookup(&self, offset: i64) -> Option<u32> {
        let idx = self.entries.partition_point(|(o, _)| *o <= offset);
        if idx == 0 {
            self.entries.first().map(|(_, p)| *p)
        } else {
            Some(self.entries[idx - 1].1)
        }
    }
}

/// Checks that what a segment says of its offsets agrees before recovery
/// takes the log end from its footer: the header's base and record count
/// (offsets are contiguous, so they fix the last offset), the base in its
/// key, and the index entries, when there is an index. A footer that is
/// wrong would otherwise re-number or hide records.
pub fn check_bounds(
    key_base: i64,
    header: &SegmentHeader,
    footer: &SegmentFooter,
    index: Option<&SegmentIndex>,
) -> Result<(), SegmentError> {
    let bad = |what: String| Err(SegmentError::Inconsistent(what));
    if header.base_offset != key_base {
        return bad(format!(
            "the key says base offset {key_base}, the header {}",
            header.base_offset
        ));
    }
    if header.is_cleaned() {
        // Gaps are allowed: the footer bounds the range, the batches lie in it.
        let last = footer.last_offset;
        let outside = index.is_some_and(|index| {
            index
                .entries
                .iter()
                .any(|(o, _)| *o < header.base_offset || *o > last)
        });
        if last < header.base_offset - 1 || outside {
            return bad(format!(
                "the cleaned segment from {} says it ends at {last}, or its index lies outside that",
                header.base_offset
            ));
        }
        return Ok(());
    }
    if header.record_count < 1 {
        return bad(format!("the header counts {} records", header.record_count));
    }
    let last = header.base_offset + i64::from(header.record_count) - 1;
    if footer.last_offset != last {
        return bad(format!(
            "the footer says last offset {}, the header's base {} and {} records say {last}",
            footer.last_offset, header.base_offset, header.record_count
        ));
    }
    if let Some(index) = index {
        let first = index.entries.first().map(|(o, _)| *o);
        let out_of_range = index
            .entries
            .iter()
            .any(|(o, _)| *o < header.base_offset || *o > last);
        let unordered = index.entries.windows(2).any(|w| w[0] >= w[1]);
        if first != Some(header.base_offset) || out_of_range || unordered {
            return bad(format!(
                "the index's {} entries do not run from {} within [{}, {last}]",
                index.entries.len(),
                header.base_offset,
                header.base_offset
            ));
        }
    }
    Ok(())
}

/// Object key of a segment: `{prefix}/{topic}/{partition}/segment-{base:020}.kfs`.
pub fn segment_key(prefix: &str, topic: &str, partition: i32, base_offset: i64) -> String {
    format!(
        "{}segment-{base_offset:020}.kfs",
        partition_prefix(prefix, topic, partition)
    )
}

pub fn index_key(prefix: &str, topic: &str, partition: i32, base_offset: i64) -> String {
    format!(
        "{}segment-{base_offset:020}.index",
        partition_prefix(prefix, topic, partition)
    )
}

/// Key prefix (ending in `/`) under which all of a partition's objects live.
pub fn partition_prefix(prefix: &str, topic: &str, partition: i32) -> String {
    format!("{}{partition}/", topic_prefix(prefix, topic))
}

pub fn topic_prefix(prefix: &str, topic: &str) -> String {
    if prefix.is_empty() {
        format!("{topic}/")
    } else {
        format!("{}/{topic}/", prefix.trim_end_matches('/'))
    }
}

/// Parses the base offset out of a `.kfs` key; `None` for other objects.
pub fn base_offset_from_key(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix("segment-")?
        .strip_suffix(".kfs")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_support::make_batch;
    use crate::batch::{rewrite, BatchRewrite};

    fn batches(base: i64, sizes: &[i32]) -> Vec<Bytes> {
        let mut next = base;
        sizes
            .iter()
            .map(|&n| {
                let b = rewrite(
                    &make_batch(0, n, &vec![7u8; n as usize * 10]),
                    BatchRewrite {
                        base_offset: next,
                        partition_leader_epoch: 0,
                        log_append_time_ms: None,
                    },
                );
                next += i64::from(n);
                b
            })
            .collect()
    }

    #[test]
    fn segment_round_trip() {
        let seg = encode(&batches(100, &[3, 5, 2]), 1_700_000_000_000, 4).unwrap();
        assert_eq!(
            (seg.base_offset, seg.last_offset, seg.record_count),
            (100, 109, 10)
        );
        let v = VerifiedSegment::decode(seg.kfs_bytes()).unwrap();
        assert_eq!(v.header.base_offset, 100);
        assert_eq!(v.header.record_count, 10);
        assert_eq!(v.header.created_ms, 1_700_000_000_000);
        assert_eq!(v.footer.last_offset, 109);
        assert_eq!(v.batch_headers().count(), 3);
        assert_eq!(&seg.kfs_bytes()[0..4], b"KAFS");
        assert_eq!(&seg.kfs_bytes()[seg.kfs_len() - 4..], b"END!");
    }

    #[test]
    fn cleaned_segments_bound_their_range_around_gaps() {
        // Batches at 12..=14 and 20..=21 of a segment that covered 10..=29.
        let mut kept = batches(12, &[3]);
        kept.extend(batches(20, &[2]));
        let seg = encode_cleaned(&kept, 10, 29, 5, 4).unwrap();
        assert_eq!(
            (seg.base_offset, seg.last_offset, seg.record_count),
            (10, 29, 5)
        );
        let v = VerifiedSegment::decode(seg.kfs_bytes()).unwrap();
        assert!(v.header.is_cleaned());
        assert_eq!((v.header.base_offset, v.footer.last_offset), (10, 29));
        // An offset in a gap is served from the next batch.
        assert_eq!(v.position_of(16), v.batch_headers().nth(1).map(|(p, _)| p));
        assert_eq!(v.position_of(25), None);
        let index = SegmentIndex::decode(&seg.index).unwrap();
        assert!(check_bounds(10, &v.header, &v.footer, Some(&index)).is_ok());
        // Nothing left at all: a header and footer for the range.
        let empty = encode_cleaned(&[], 10, 29, 5, 4).unwrap();
        let v = VerifiedSegment::decode(empty.kfs_bytes()).unwrap();
        assert_eq!((v.header.record_count, v.footer.last_offset), (0, 29));
        assert_eq!(v.batch_headers().count(), 0);
        // A range that does not hold its batches is refused.
        assert!(encode_cleaned(&kept, 10, 20, 5, 4).is_err());
    }

    #[test]
    fn crc_mismatch_is_detected() {
        let seg = encode(&batches(0, &[2, 2]), 0, 1).unwrap();
        let mut raw = BytesMut::from(&seg.kfs_bytes()[..]);
        raw[SEGMENT_HEADER_LEN + 70] ^= 1;
        assert!(matches!(
            VerifiedSegment::decode(raw.freeze()),
            Err(SegmentError::CrcMismatch { .. })
        ));
        let mut raw = BytesMut::from(&seg.kfs_bytes()[..]);
        raw[0] = 0;
        assert!(matches!(
            VerifiedSegment::decode(raw.freeze()),
            Err(SegmentError::BadMagic(_))
        ));
    }

    #[test]
    fn index_round_trip_and_lookup() {
        // Batches of 3,5,2,4 records at offsets 10,13,18,20; interval 4 records.
        let seg = encode(&batches(10, &[3, 5, 2, 4]), 0, 4).unwrap();
        let idx = SegmentIndex::decode(&seg.index).unwrap();
        assert_eq!(idx.interval, 4);
        // First batch always indexed; after 3 records (<4) no entry for 13; after
        // 3+5 an entry for 18; after 2 more (<4) none for 20.
        let offsets: Vec<i64> = idx.entries.iter().map(|e| e.0).collect();
        assert_eq!(offsets, vec![10, 18]);
        assert_eq!(idx.lookup(10), Some(32));
        assert_eq!(idx.lookup(15), Some(32));
        let pos18 = idx.entries[1].1;
        assert_eq!(idx.lookup(21), Some(pos18));
        // The position really is the batch with base offset 18.
        let kfs = seg.kfs_bytes();
        let h = batch::parse_header(&kfs[pos18 as usize..]).unwrap();
        assert_eq!(h.base_offset, 18);
        assert!(SegmentIndex::decode(&seg.index[..10]).is_err());
    }

    #[test]
    fn keys_sort_by_offset_and_parse_back() {
        let k = segment_key("ns/cluster", "orders", 2, 1234);
        assert_eq!(k, "ns/cluster/orders/2/segment-00000000000000001234.kfs");
        assert_eq!(base_offset_from_key(&k), Some(1234));
        assert_eq!(base_offset_from_key("x/segment-1.index"), None);
        assert!(segment_key("p", "t", 0, 9) < segment_key("p", "t", 0, 10));
    }

    #[test]
    fn bounds_must_agree_before_a_log_end_is_trusted() {
        let header = SegmentHeader {
            flags: 0,
            base_offset: 10,
            record_count: 5,
            created_ms: 1,
        };
        let footer = |last| SegmentFooter {
            crc32c: 0,
            last_offset: last,
        };
        let index = |entries: Vec<(i64, u32)>| SegmentIndex {
            interval: 2,
            entries,
        };
        assert!(check_bounds(10, &header, &footer(14), None).is_ok());
        assert!(check_bounds(
            10,
            &header,
            &footer(14),
            Some(&index(vec![(10, 32), (12, 90)]))
        )
        .is_ok());
        // Each disagreement on its own is refused.
        assert!(check_bounds(11, &header, &footer(14), None).is_err(), "key");
        assert!(
            check_bounds(10, &header, &footer(20), None).is_err(),
            "footer past the records"
        );
        assert!(
            check_bounds(10, &header, &footer(13), None).is_err(),
            "footer short of them"
        );
        let past_end = index(vec![(10, 32), (15, 90)]);
        assert!(
            check_bounds(10, &header, &footer(14), Some(&past_end)).is_err(),
            "index"
        );
        let not_from_base = index(vec![(12, 32)]);
        assert!(check_bounds(10, &header, &footer(14), Some(&not_from_base)).is_err());
        let empty = SegmentHeader {
            record_count: 0,
            ..header
        };
        assert!(
            check_bounds(10, &empty, &footer(9), None).is_err(),
            "no records"
        );
    }
}
