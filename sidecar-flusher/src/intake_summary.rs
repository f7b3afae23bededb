//! Directory summaries: the directories of many intake objects of one
//! flusher, copied into one small object, so that a flusher that starts cold
//! learns thousands of objects with a few GETs instead of one tail GET each.
//!
//! A summary is only a cache of immutable bytes. Whether an object exists is
//! still the listing's answer; each copied directory keeps its own CRC and is
//! checked as if read from its object; an object no summary covers, or whose
//! summary cannot be read, costs its own tail GET as before. Losing or
//! deleting a summary therefore never changes what a reader finds.
//!
//! Key: `{prefix}/!intake-directories/{writer:016x}-{first_seq:010}-{last_seq:010}.kfd`,
//! naming the writer and the range of its object sequence numbers covered,
//! so clean-up can tell from a listing alone when none of them is left.
//!
//! ```text
//! header   magic u32 "KAFD", version u16 1, reserved u16 0, count u32
//! objects  count times: key (u16 length + UTF-8), size u64, created_ms i64,
//!          tail_len u32, the object's directory and footer (tail_len bytes)
//! trailer  crc32c u32 of everything before it
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::intake::{self, IntakeError, PartEntry};

pub const SUMMARY_MAGIC: u32 = 0x4B41_4644; // "KAFD"
pub const SUMMARY_VERSION: u16 = 1;
/// Beside the intake objects, not under them: listing intake objects stays
/// one prefix of `.kfi` keys.
pub const SUMMARY_DIR: &str = "!intake-directories";
/// A flusher seals a summary once it covers this many objects...
pub const SEAL_OBJECTS: usize = 256;
/// ...or its copied directories reach this many bytes.
pub const SEAL_BYTES: usize = 1 << 20;
/// Readers skip a summary larger than this (they read the tails instead).
pub const MAX_READ_BYTES: u64 = 8 << 20;
const HEADER_LEN: usize = 12;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SummaryError {
    #[error("directory summary is {0} bytes, shorter than its header and trailer")]
    TooShort(usize),
    #[error(
        "directory summary CRC mismatch: it says {expected:#010x}, its bytes give {actual:#010x}"
    )]
    Crc { expected: u32, actual: u32 },
    #[error("directory summary magic {0:#010x} is not KAFD")]
    BadMagic(u32),
    #[error("directory summary version {0} is not supported (this build reads version 1)")]
    BadVersion(u16),
    #[error("directory summary is malformed: {0}")]
    Malformed(String),
    #[error("directory of {key} in a summary: {error}")]
    Directory { key: String, error: IntakeError },
}

/// One stored intake object as a summary holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummarizedObject {
    pub key: String,
    pub size: u64,
    pub created_ms: i64,
    /// The object's directory and footer, byte for byte.
    pub tail: Bytes,
}

/// The objects one summary covers: sequence numbers `first..=last` of one writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryRange {
    pub writer: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl SummaryRange {
    pub fn covers(&self, writer: u64, seq: u64) -> bool {
        writer == self.writer && (self.first_seq..=self.last_seq).contains(&seq)
    }
}

pub fn summary_prefix(prefix: &str) -> String {
    format!("{prefix}/{SUMMARY_DIR}/")
}

pub fn summary_key(prefix: &str, range: SummaryRange) -> String {
    format!(
        "{prefix}/{SUMMARY_DIR}/{:016x}-{:010}-{:010}.kfd",
        range.writer, range.first_seq, range.last_seq
    )
}

/// The range a summary's key names; `None` for a key that is not a summary's.
pub fn range_from_key(key: &str) -> Option<SummaryRange> {
    let name = key.rsplit('/').next()?.strip_suffix(".kfd")?;
    let mut fields = name.split('-');
    let writer = u64::from_str_radix(fields.next()?, 16).ok()?;
    let first_seq = fields.next()?.parse().ok()?;
    let last_seq = fields.next()?.parse().ok()?;
    if fields.next().is_some() || first_seq > last_seq {
        return None;
    }
    Some(SummaryRange {
        writer,
        first_seq,
        last_seq,
    })
}

/// The tail (directory and footer) of an encoded intake object.
pub fn tail_of(object: &Bytes) -> Result<Bytes, IntakeError> {
    let footer = intake::decode_footer(object)?;
    let from = (object.len() as u64)
        .checked_sub(footer.tail_len())
        .ok_or(IntakeError::TooShort(object.len() as u64))?;
    Ok(object.slice(from as usize..))
}

pub fn encode(objects: &[SummarizedObject]) -> Bytes {
    let len: usize = objects
        .iter()
        .map(|o| 2 + o.key.len() + 20 + o.tail.len())
        .sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + len + 4);
    out.put_u32(SUMMARY_MAGIC);
    out.put_u16(SUMMARY_VERSION);
    out.put_u16(0);
    out.put_u32(objects.len() as u32);
    for o in objects {
        // Keys are ours (`intake::intake_key`), far below u16::MAX.
        out.put_u16(o.key.len() as u16);
        out.put_slice(o.key.as_bytes());
        out.put_u64(o.size);
        out.put_i64(o.created_ms);
        out.put_u32(o.tail.len() as u32);
        out.put_slice(&o.tail);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32(crc);
    out.freeze()
}

/// Every object a summary holds, each with its directory decoded and
/// checked against its own CRC.
pub fn decode(body: &Bytes) -> Result<Vec<(SummarizedObject, Vec<PartEntry>)>, SummaryError> {
    if body.len() < HEADER_LEN + 4 {
        return Err(SummaryError::TooShort(body.len()));
    }
    let (content, mut trailer) = body.split_at(body.len() - 4);
    let expected = trailer.get_u32();
    let actual = crc32c::crc32c(content);
    if expected != actual {
        return Err(SummaryError::Crc { expected, actual });
    }
    let mut b = body.slice(..content.len());
    let magic = b.get_u32();
    if magic != SUMMARY_MAGIC {
        return Err(SummaryError::BadMagic(magic));
    }
    let version = b.get_u16();
    if version != SUMMARY_VERSION {
        return Err(SummaryError::BadVersion(version));
    }
    let _reserved = b.get_u16();
    let count = b.get_u32() as usize;
    let short = |what: &str| SummaryError::Malformed(format!("ends inside {what}"));
    // Each object takes at least 22 bytes: a hostile count cannot reserve more.
    let mut out = Vec::with_capacity(count.min(b.remaining() / 22));
    for _ in 0..count {
        if b.remaining() < 2 {
            return Err(short("a key length"));
        }
        let key_len = b.get_u16() as usize;
        if b.remaining() < key_len + 20 {
            return Err(short("an object's key, size and time"));
        }
        let key = String::from_utf8(b.split_to(key_len).to_vec())
            .map_err(|_| SummaryError::Malformed("a key is not UTF-8".into()))?;
        let size = b.get_u64();
        let created_ms = b.get_i64();
        let tail_len = b.get_u32() as usize;
        if b.remaining() < tail_len {
            return Err(short("a directory"));
        }
        let tail = b.split_to(tail_len);
        let entries =
            intake::decode_directory(&tail, size).map_err(|error| SummaryError::Directory {
                key: key.clone(),
                error,
            })?;
        out.push((
            SummarizedObject {
                key,
                size,
                created_ms,
                tail,
            },
            entries,
        ));
    }
    if b.has_remaining() {
        return Err(SummaryError::Malformed(format!(
            "{} bytes after the last object",
            b.remaining()
        )));
    }
    Ok(out)
}

/// The objects a writer stored since its last summary, until they are sealed
/// into one.
#[derive(Debug, Default)]
pub struct PendingSummary {
    first_seq: Option<u64>,
    last_seq: u64,
    bytes: usize,
    objects: Vec<SummarizedObject>,
}

impl PendingSummary {
    /// Adds a stored object (its sequence number above every one before);
    /// answers the summary to upload once it is due.
    pub fn add(
        &mut self,
        writer: u64,
        seq: u64,
        object: SummarizedObject,
    ) -> Option<(SummaryRange, Vec<SummarizedObject>)> {
        self.first_seq.get_or_insert(seq);
        self.last_seq = seq;
        self.bytes += object.tail.len() + object.key.len();
        self.objects.push(object);
        if self.objects.len() < SEAL_OBJECTS && self.bytes < SEAL_BYTES {
            return None;
        }
        let taken = std::mem::take(self);
        Some((
            SummaryRange {
                writer,
                first_seq: taken.first_seq.unwrap_or(seq),
                last_seq: taken.last_seq,
            },
            taken.objects,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_support::make_batch;
    use crate::intake::PartInput;

    fn stored(key: &str, partitions: i32) -> (SummarizedObject, Vec<PartEntry>) {
        let parts: Vec<PartInput> = (0..partitions)
            .map(|partition| PartInput {
                topic: "orders".into(),
                topic_id: [7; 16],
                partition,
                leader_epoch: 1,
                generation: 2,
                batches: vec![make_batch(10, 3, b"abc")],
            })
            .collect();
        let encoded = intake::encode(&parts, 42).unwrap();
        let object = SummarizedObject {
            key: key.into(),
            size: encoded.body.len() as u64,
            created_ms: 42,
            tail: tail_of(&encoded.body).unwrap(),
        };
        (object, encoded.entries)
    }

    #[test]
    fn a_summary_gives_back_every_directory_as_its_object_holds_it() {
        let a = stored("p/!intake/a.kfi", 3);
        let b = stored("p/!intake/b.kfi", 1);
        let decoded = decode(&encode(&[a.0.clone(), b.0.clone()])).unwrap();
        assert_eq!(decoded, vec![a, b]);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_summary_is_refused_not_half_believed() {
        let body = encode(&[stored("k", 2).0]);
        let mut flipped = body.to_vec();
        flipped[HEADER_LEN + 5] ^= 1;
        assert!(matches!(
            decode(&Bytes::from(flipped)),
            Err(SummaryError::Crc { .. })
        ));
        assert!(matches!(
            decode(&body.slice(..body.len() - 1)),
            Err(SummaryError::Crc { .. })
        ));
        assert_eq!(decode(&Bytes::new()), Err(SummaryError::TooShort(0)));

        // A valid CRC over a count that promises more than is there.
        let mut lying = BytesMut::new();
        lying.put_u32(SUMMARY_MAGIC);
        lying.put_u16(SUMMARY_VERSION);
        lying.put_u16(0);
        lying.put_u32(u32::MAX);
        let crc = crc32c::crc32c(&lying);
        lying.put_u32(crc);
        assert!(matches!(
            decode(&lying.freeze()),
            Err(SummaryError::Malformed(_))
        ));

        // A directory copied wrongly fails its own CRC.
        let (mut object, _) = stored("k", 2);
        let mut tail = object.tail.to_vec();
        tail[3] ^= 1;
        object.tail = Bytes::from(tail);
        assert!(matches!(
            decode(&encode(&[object])),
            Err(SummaryError::Directory { .. })
        ));
    }

    #[test]
    fn the_key_names_the_writer_and_the_sequence_numbers_covered() {
        let range = SummaryRange {
            writer: 0xabc,
            first_seq: 7,
            last_seq: 262,
        };
        let key = summary_key("test/x", range);
        assert!(key.starts_with(&summary_prefix("test/x")));
        assert_eq!(range_from_key(&key), Some(range));
        assert!(range.covers(0xabc, 7) && range.covers(0xabc, 262));
        assert!(!range.covers(0xabc, 263) && !range.covers(0xabd, 8));
        assert_eq!(
            range_from_key("test/x/!intake-directories/zz-1-2.kfd"),
            None
        );
        assert_eq!(range_from_key("test/x/!intake-directories/1-9-2.kfd"), None);
        assert_eq!(range_from_key("test/x/!intake/1-9-2.kfi"), None);
    }

    #[test]
    fn a_summary_is_sealed_by_object_count_or_bytes() {
        let mut pending = PendingSummary::default();
        let (object, _) = stored("k", 1);
        for seq in 10..10 + SEAL_OBJECTS as u64 - 1 {
            assert!(pending.add(1, seq, object.clone()).is_none());
        }
        let (range, objects) = pending.add(1, 9_999, object.clone()).unwrap();
        assert_eq!((range.first_seq, range.last_seq), (10, 9_999));
        assert_eq!(objects.len(), SEAL_OBJECTS);
        // Started afresh.
        assert!(pending.add(1, 10_000, object.clone()).is_none());

        let mut pending = PendingSummary::default();
        let (big, _) = stored("k", 20_000);
        assert!(big.tail.len() >= SEAL_BYTES);
        let (range, objects) = pending.add(1, 5, big).unwrap();
        assert_eq!((range.first_seq, range.last_seq, objects.len()), (5, 5, 1));
    }
}
