//! The intake object: the batches of many partitions from one flush window
//! in one object, with a directory of the partition ranges it holds
//! (`docs/intake-objects.md` has the layout and why). All integers are
//! big-endian; fields are encoded as on the flusher socket ([`Wire`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::batch::{self, BatchError};
use crate::wire::{Wire, WireError};

pub const INTAKE_MAGIC: u32 = 0x4B41_4649; // "KAFI"
pub const INTAKE_FOOTER_MAGIC: u32 = 0x454E_4449; // "ENDI"
pub const INTAKE_VERSION: u16 = 1;
pub const INTAKE_HEADER_LEN: usize = 32;
pub const INTAKE_FOOTER_LEN: usize = 24;
/// Where intake objects live under the cluster's prefix. `!` is not allowed
/// in a Kafka topic name, so no topic's segments share it.
pub const INTAKE_DIR: &str = "!intake";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IntakeError {
    #[error("intake object is {0} bytes, shorter than its header and footer")]
    TooShort(u64),
    #[error("intake footer magic {0:#010x} is not ENDI")]
    BadFooterMagic(u32),
    #[error("intake header magic {0:#010x} is not KAFI")]
    BadMagic(u32),
    #[error("intake format version {0} is not supported (this build reads version 1)")]
    BadVersion(u16),
    #[error("intake directory CRC mismatch: footer says {expected:#010x}, directory gives {actual:#010x}")]
    DirectoryCrc { expected: u32, actual: u32 },
    #[error("intake directory is malformed: {0}")]
    BadDirectory(String),
    #[error("intake part of {topic}-{partition} at {base_offset} failed verification: {reason}")]
    BadPart {
        topic: String,
        partition: i32,
        base_offset: i64,
        reason: String,
    },
    #[error("an intake part needs at least one batch")]
    EmptyPart,
    #[error("batches of one part must be contiguous: {0}")]
    NotContiguous(String),
    #[error("batch in intake part is invalid: {0}")]
    Batch(#[from] BatchError),
}

impl From<WireError> for IntakeError {
    fn from(e: WireError) -> Self {
        IntakeError::BadDirectory(e.to_string())
    }
}

/// One partition's batches for an intake object, offsets assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInput {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader_epoch: i32,
    pub generation: u64,
    pub batches: Vec<Bytes>,
}

/// One directory entry: which offsets of which partition an object holds, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader_epoch: i32,
    pub generation: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    pub max_timestamp: i64,
    /// Of the part's first byte, from the start of the object.
    pub position: u64,
    pub length: u32,
    pub crc32c: u32,
}

/// The fewest bytes an entry takes (an empty topic name).
const MIN_ENTRY_LEN: usize = 2 + 16 + 4 + 4 + 8 + 8 + 8 + 4 + 8 + 8 + 4 + 4;

impl PartEntry {
    fn put(&self, b: &mut BytesMut) {
        self.topic.put(b);
        b.put_slice(&self.topic_id);
        self.partition.put(b);
        self.leader_epoch.put(b);
        self.generation.put(b);
        self.base_offset.put(b);
        self.last_offset.put(b);
        self.record_count.put(b);
        self.max_timestamp.put(b);
        self.position.put(b);
        self.length.put(b);
        self.crc32c.put(b);
    }

    fn get(b: &mut Bytes) -> Result<Self, WireError> {
        let topic = String::get(b, "topic")?;
        if b.remaining() < 16 {
            return Err(WireError::Truncated("topic id"));
        }
        let mut topic_id = [0u8; 16];
        b.copy_to_slice(&mut topic_id);
        Ok(Self {
            topic,
            topic_id,
            partition: Wire::get(b, "partition")?,
            leader_epoch: Wire::get(b, "leader epoch")?,
            generation: Wire::get(b, "generation")?,
            base_offset: Wire::get(b, "base offset")?,
            last_offset: Wire::get(b, "last offset")?,
            record_count: Wire::get(b, "record count")?,
            max_timestamp: Wire::get(b, "max timestamp")?,
            position: Wire::get(b, "position")?,
            length: Wire::get(b, "length")?,
            crc32c: Wire::get(b, "crc")?,
        })
    }

    /// The byte range of the part in its object.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.position..self.position + u64::from(self.length)
    }

    /// Checks a part's bytes as read from its object: the CRC of the whole
    /// part, then that its batches are whole, valid and cover exactly
    /// `base_offset..=last_offset`.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), IntakeError> {
        let bad = |reason: String| IntakeError::BadPart {
            topic: self.topic.clone(),
            partition: self.partition,
            base_offset: self.base_offset,
            reason,
        };
        if bytes.len() != self.length as usize {
            return Err(bad(format!(
                "{} bytes read, the directory says {}",
                bytes.len(),
                self.length
            )));
        }
        let actual = crc32c::crc32c(bytes);
        if actual != self.crc32c {
            return Err(bad(format!(
                "CRC-32C {actual:#010x}, the directory says {:#010x}",
                self.crc32c
            )));
        }
        let mut pos = 0;
        let mut next = self.base_offset;
        while pos < bytes.len() {
            let h = batch::validate(&bytes[pos..]).map_err(|e| bad(e.to_string()))?;
            if h.base_offset != next {
                return Err(bad(format!(
                    "batch at {} where {next} was expected",
                    h.base_offset
                )));
            }
            next = h.last_offset().saturating_add(1);
            pos += h.size;
        }
        if next != self.last_offset.saturating_add(1) {
            return Err(bad(format!(
                "batches end at {}, the directory says {}",
                next - 1,
                self.last_offset
            )));
        }
        Ok(())
    }
}

/// An encoded intake object and its directory.
#[derive(Debug, Clone)]
pub struct EncodedIntake {
    pub body: Bytes,
    pub entries: Vec<PartEntry>,
}

/// Builds an intake object from parts whose batches are valid, with offsets
/// assigned and contiguous within each part.
pub fn encode(parts: &[PartInput], created_ms: i64) -> Result<EncodedIntake, IntakeError> {
    let body_len: usize = parts
        .iter()
        .flat_map(|p| p.batches.iter())
        .map(Bytes::len)
        .sum();
    let mut out = BytesMut::with_capacity(INTAKE_HEADER_LEN + body_len + parts.len() * 96 + 64);
    out.put_u32(INTAKE_MAGIC);
    out.put_u16(INTAKE_VERSION);
    out.put_u16(0);
    out.put_u32(parts.len() as u32);
    out.put_i64(created_ms);
    out.put_u64(0);
    out.put_u32(0);
    let mut entries = Vec::with_capacity(parts.len());
    for part in parts {
        let position = out.len() as u64;
        let mut base_offset = None;
        let mut last_offset = 0;
        let mut record_count: i64 = 0;
        let mut max_timestamp = i64::MIN;
        let mut crc = 0u32;
        for b in &part.batches {
            let h = batch::parse_header(b)?;
            if let Some(base) = base_offset {
                if h.base_offset != last_offset + 1 {
                    return Err(IntakeError::NotContiguous(format!(
                        "{}-{}: batch at {} follows one ending at {last_offset} (part from {base})",
                        part.topic, part.partition, h.base_offset
                    )));
                }
            }
            base_offset.get_or_insert(h.base_offset);
            last_offset = h.last_offset();
            record_count += i64::from(h.records_count);
            max_timestamp = max_timestamp.max(h.max_timestamp);
            crc = crc32c::crc32c_append(crc, b);
            out.put_slice(b);
        }
        let base_offset = base_offset.ok_or(IntakeError::EmptyPart)?;
        let length = u32::try_from(out.len() as u64 - position)
            .map_err(|_| IntakeError::BadDirectory("a part is larger than 4 GiB".into()))?;
        entries.push(PartEntry {
            topic: part.topic.clone(),
            topic_id: part.topic_id,
            partition: part.partition,
            leader_epoch: part.leader_epoch,
            generation: part.generation,
            base_offset,
            last_offset,
            record_count: i32::try_from(record_count).map_err(|_| {
                IntakeError::BadDirectory("more than 2^31 records in one part".into())
            })?,
            max_timestamp,
            position,
            length,
            crc32c: crc,
        });
    }
    let directory_start = out.len();
    for e in &entries {
        e.put(&mut out);
    }
    let directory_len = u32::try_from(out.len() - directory_start)
        .map_err(|_| IntakeError::BadDirectory("directory larger than 4 GiB".into()))?;
    let directory_crc = crc32c::crc32c(&out[directory_start..]);
    out.put_u32(directory_len);
    out.put_u32(directory_crc);
    out.put_u32(0);
    out.put_u32(entries.len() as u32);
    out.put_u32(INTAKE_FOOTER_MAGIC);
    out.put_u32(0);
    Ok(EncodedIntake {
        body: out.freeze(),
        entries,
    })
}

/// What the last bytes of an intake object say about its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeFooter {
    pub directory_len: u32,
    pub directory_crc: u32,
    pub part_count: u32,
}

impl IntakeFooter {
    /// How many bytes at the end of an object of `object_len` bytes hold the
    /// directory and the footer.
    pub fn tail_len(&self) -> u64 {
        u64::from(self.directory_len) + INTAKE_FOOTER_LEN as u64
    }
}

/// Reads the footer from the last `INTAKE_FOOTER_LEN` bytes of an object.
pub fn decode_footer(b: &[u8]) -> Result<IntakeFooter, IntakeError> {
    let Some(mut f) = b.len().checked_sub(INTAKE_FOOTER_LEN).map(|at| &b[at..]) else {
        return Err(IntakeError::TooShort(b.len() as u64));
    };
    let directory_len = f.get_u32();
    let directory_crc = f.get_u32();
    let _reserved = f.get_u32();
    let part_count = f.get_u32();
    let magic = f.get_u32();
    if magic != INTAKE_FOOTER_MAGIC {
        return Err(IntakeError::BadFooterMagic(magic));
    }
    Ok(IntakeFooter {
        directory_len,
        directory_crc,
        part_count,
    })
}

/// Decodes the directory from the object's tail (at least
/// [`IntakeFooter::tail_len`] bytes, ending where the object ends) and checks
/// every entry against the object's length, so a reader never asks for
/// bytes outside it.
pub fn decode_directory(tail: &Bytes, object_len: u64) -> Result<Vec<PartEntry>, IntakeError> {
    let footer = decode_footer(tail)?;
    let tail_len = footer.tail_len();
    let min_len = INTAKE_HEADER_LEN as u64 + tail_len;
    if object_len < min_len {
        return Err(IntakeError::TooShort(object_len));
    }
    if (tail.len() as u64) < tail_len {
        return Err(IntakeError::BadDirectory(format!(
            "{} bytes of the tail were read, the directory and footer take {tail_len}",
            tail.len()
        )));
    }
    let start = tail.len() - tail_len as usize;
    let mut dir = tail.slice(start..tail.len() - INTAKE_FOOTER_LEN);
    let actual = crc32c::crc32c(&dir);
    if actual != footer.directory_crc {
        return Err(IntakeError::DirectoryCrc {
            expected: footer.directory_crc,
            actual,
        });
    }
    let count = footer.part_count as usize;
    if count > dir.len() / MIN_ENTRY_LEN {
        return Err(IntakeError::BadDirectory(format!(
            "{count} parts cannot fit in {} bytes",
            dir.len()
        )));
    }
    let body_end = object_len - tail_len;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let e = PartEntry::get(&mut dir)?;
        let end = e.position.checked_add(u64::from(e.length));
        if e.position < INTAKE_HEADER_LEN as u64 || end.is_none_or(|end| end > body_end) {
            return Err(IntakeError::BadDirectory(format!(
                "part {}-{} at {} lies outside the object's body",
                e.topic, e.partition, e.base_offset
            )));
        }
        // Offsets are non-negative and leave room for "one past the last",
        // which readers compute.
        if e.base_offset < 0
            || e.last_offset < e.base_offset
            || e.last_offset == i64::MAX
            || e.length == 0
        {
            return Err(IntakeError::BadDirectory(format!(
                "part {}-{} claims offsets {}..={} in {} bytes",
                e.topic, e.partition, e.base_offset, e.last_offset, e.length
            )));
        }
        entries.push(e);
    }
    if !dir.is_empty() {
        return Err(IntakeError::BadDirectory(format!(
            "{} bytes follow the last entry",
            dir.len()
        )));
    }
    Ok(entries)
}

/// Checks the header at the start of an object.
pub fn decode_header(b: &[u8]) -> Result<(u32, i64), IntakeError> {
    if b.len() < INTAKE_HEADER_LEN {
        return Err(IntakeError::TooShort(b.len() as u64));
    }
    let mut h = b;
    let magic = h.get_u32();
    if magic != INTAKE_MAGIC {
        return Err(IntakeError::BadMagic(magic));
    }
    let version = h.get_u16();
    if version != INTAKE_VERSION {
        return Err(IntakeError::BadVersion(version));
    }
    let _flags = h.get_u16();
    let part_count = h.get_u32();
    let created_ms = h.get_i64();
    Ok((part_count, created_ms))
}

/// `{prefix}/!intake/`: every intake object of the cluster.
pub fn intake_prefix(prefix: &str) -> String {
    format!("{prefix}/{INTAKE_DIR}/")
}

/// The key of one intake object. The time first, zero-padded, orders a
/// listing by age; `writer` (a random id per flusher process) and its
/// sequence number keep keys unique.
pub fn intake_key(prefix: &str, created_ms: i64, writer: u64, seq: u64) -> String {
    format!(
        "{prefix}/{INTAKE_DIR}/{:020}-{writer:016x}-{seq:010}.kfi",
        created_ms.max(0)
    )
}

/// The creation time in an intake key, `None` for any other key.
pub fn created_ms_from_key(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?.strip_suffix(".kfi")?;
    let (ms, _) = name.split_once('-')?;
    if ms.len() != 20 {
        return None;
    }
    ms.parse().ok()
}

/// The writer id and sequence number in an intake object's key.
pub fn writer_and_seq_from_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".kfi")?;
    let mut fields = name.split('-').skip(1);
    let writer = u64::from_str_radix(fields.next()?, 16).ok()?;
    let seq = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((writer, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_support::make_batch;

    fn part(topic: &str, partition: i32, base: i64, counts: &[i32]) -> PartInput {
        let mut next = base;
        let batches = counts
            .iter()
            .map(|&n| {
                let b = make_batch(next, n, &[partition as u8; 50]);
                next += i64::from(n);
                b
            })
            .collect();
        PartInput {
            topic: topic.into(),
            topic_id: [partition as u8; 16],
            partition,
            leader_epoch: 3,
            generation: 7,
            batches,
        }
    }

    fn tail_of(obj: &Bytes, n: usize) -> Bytes {
        obj.slice(obj.len().saturating_sub(n)..)
    }

    #[test]
    fn parts_round_trip_through_the_directory_and_verify() {
        let parts = vec![
            part("orders", 0, 100, &[2, 3]),
            part("orders", 1, 0, &[1]),
            part("clicks", 4, 5_000, &[10]),
        ];
        let enc = encode(&parts, 1_700_000_000_000).unwrap();
        assert_eq!(decode_header(&enc.body).unwrap(), (3, 1_700_000_000_000));
        let footer = decode_footer(&enc.body).unwrap();
        assert_eq!(footer.part_count, 3);
        let entries =
            decode_directory(&tail_of(&enc.body, 64 * 1024), enc.body.len() as u64).unwrap();
        assert_eq!(entries, enc.entries);
        let e = &entries[0];
        assert_eq!(
            (e.base_offset, e.last_offset, e.record_count),
            (100, 104, 5)
        );
        assert_eq!(
            (entries[2].topic.as_str(), entries[2].partition),
            ("clicks", 4)
        );
        for (e, p) in entries.iter().zip(&parts) {
            let range = e.range();
            let bytes = &enc.body[range.start as usize..range.end as usize];
            e.verify(bytes).unwrap();
            let concatenated: Vec<u8> = p.batches.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(
                bytes,
                &concatenated[..],
                "a part is its batches as they were"
            );
        }
        // Exactly the directory's tail is enough, one byte less is not.
        let exact = footer.tail_len() as usize;
        assert!(decode_directory(&tail_of(&enc.body, exact), enc.body.len() as u64).is_ok());
        assert!(decode_directory(&tail_of(&enc.body, exact - 1), enc.body.len() as u64).is_err());
    }

    #[test]
    fn a_gap_inside_a_part_or_an_empty_part_is_refused() {
        let mut p = part("t", 0, 0, &[2]);
        p.batches.push(make_batch(5, 1, b"x"));
        assert!(matches!(
            encode(&[p], 0),
            Err(IntakeError::NotContiguous(_))
        ));
        let mut empty = part("t", 0, 0, &[1]);
        empty.batches.clear();
        assert_eq!(encode(&[empty], 0).unwrap_err(), IntakeError::EmptyPart);
    }

    #[test]
    fn damaged_directories_and_parts_are_errors_never_panics() {
        let enc = encode(&[part("t", 0, 0, &[2, 2]), part("u", 1, 9, &[1])], 5).unwrap();
        let len = enc.body.len() as u64;
        for cut in 0..enc.body.len() {
            let _ = decode_directory(&enc.body.slice(cut..), len);
            let _ = decode_footer(&enc.body[..cut]);
            let _ = decode_header(&enc.body[..cut]);
        }
        for i in 0..enc.body.len() {
            let mut bad = enc.body.to_vec();
            bad[i] ^= 0x40;
            let bad = Bytes::from(bad);
            if let Ok(entries) = decode_directory(&bad, len) {
                // A flipped body byte leaves the directory intact: the part's
                // own CRC catches it.
                for e in entries {
                    let r = e.range();
                    let got = e.verify(&bad[r.start as usize..r.end as usize]);
                    let original = &enc.body[r.start as usize..r.end as usize];
                    assert_eq!(
                        got.is_ok(),
                        original == &bad[r.start as usize..r.end as usize]
                    );
                }
            }
        }
        // An object shorter than its directory claims.
        assert!(decode_directory(&enc.body, 40).is_err());
    }

    #[test]
    fn a_directory_with_offsets_no_writer_assigns_is_refused() {
        let enc = encode(&[part("t", 0, 0, &[1])], 5).unwrap();
        for (base, last) in [(-1, 0), (0, i64::MAX), (5, 4)] {
            let mut entry = enc.entries[0].clone();
            entry.base_offset = base;
            entry.last_offset = last;
            // Rebuild the object with the forged entry and a valid CRC.
            let body_end = enc.body.len() - decode_footer(&enc.body).unwrap().tail_len() as usize;
            let mut out = BytesMut::from(&enc.body[..body_end]);
            let start = out.len();
            entry.put(&mut out);
            let len = (out.len() - start) as u32;
            let crc = crc32c::crc32c(&out[start..]);
            out.put_u32(len);
            out.put_u32(crc);
            out.put_u32(0);
            out.put_u32(1);
            out.put_u32(INTAKE_FOOTER_MAGIC);
            out.put_u32(0);
            let forged = out.freeze();
            assert!(
                matches!(
                    decode_directory(&forged, forged.len() as u64),
                    Err(IntakeError::BadDirectory(_))
                ),
                "offsets {base}..={last} were accepted"
            );
        }
    }

    #[test]
    fn keys_sort_by_time_and_give_their_time_back() {
        let a = intake_key("ns/c", 1_000, 0xab, 2);
        let b = intake_key("ns/c", 20_000, 0x01, 1);
        assert!(a < b, "a listing is in time order");
        assert!(a.starts_with(&intake_prefix("ns/c")));
        assert_eq!(created_ms_from_key(&a), Some(1_000));
        assert_eq!(writer_and_seq_from_key(&a), Some((0xab, 2)));
        assert_eq!(
            created_ms_from_key("ns/c/t/0/segment-00000000000000000000.kfs"),
            None
        );
        assert_eq!(
            writer_and_seq_from_key("ns/c/t/0/segment-00000000000000000000.kfs"),
            None
        );
    }
}
