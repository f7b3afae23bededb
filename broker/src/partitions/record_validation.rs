//! Validation of the records inside a produced v2 batch, before anything of it
//! is stored: the checks Kafka's broker makes (its `LogValidator`), so that no
//! stored batch can stall a consumer.
//!
//! The batch header and CRC are checked by [`kafscale_storage_format::batch`]; this
//! module walks the records the header announces without copying them:
//! uncompressed batches in place, compressed ones through a streaming
//! decompressor that stops at [`RecordLimits::max_uncompressed_bytes`] (a
//! decompression bomb costs bounded memory and CPU). Keys, values and headers
//! are skipped, never collected. Pure and synchronous; the produce handler
//! decides where it runs.

use std::io::{BufRead, BufReader, Read};

use kafscale_storage_format::batch::BatchHeader;

/// Bytes of a v2 batch before its first record.
const RECORDS_START: usize = kafscale_storage_format::batch::BATCH_HEADER_LEN;
/// The largest zstd window a batch may ask for (128 MiB, zstd's own default
/// limit): producers at every level up to 22 stay within it, and at most one
/// decoder per core exists at a time.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 27;
/// Snappy cannot expand input more than about 21 times (a 3-byte copy tag
/// yields at most 64 bytes); a block claiming more is corrupt.
const MAX_SNAPPY_EXPANSION: usize = 24;
/// Uncompressed batches larger than this are walked on the blocking pool
/// too, so one huge batch of tiny records does not hold a runtime thread.
const INLINE_VALIDATION_BYTES: usize = 1024 * 1024;
/// How much compressed input is buffered at a time.
const STREAM_BUFFER: usize = 16 * 1024;
/// The magic that starts the framed snappy stream Kafka's Java client writes.
const XERIAL_SNAPPY_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// The framed snappy header: magic, version, minimum compatible version.
const XERIAL_SNAPPY_HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Largest decompressed size of one batch's records; larger batches are
    /// refused.
    pub max_uncompressed_bytes: u64,
    /// Largest decompressed size of all batches of one produce request, so
    /// that many small bombs in one request cost bounded work too.
    pub max_uncompressed_request_bytes: u64,
}

impl RecordLimits {
    /// Limits for one batch: `per_batch`, and eight of them per request.
    pub fn per_batch(per_batch: u64) -> Self {
        Self {
            max_uncompressed_bytes: per_batch,
            max_uncompressed_request_bytes: per_batch.saturating_mul(8),
        }
    }
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self::per_batch(128 * 1024 * 1024)
    }
}

/// The compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn of(header: &BatchHeader) -> Result<Self, RecordError> {
        Ok(match header.attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(RecordError::UnknownCompression(other)),
        })
    }
}

/// Why a batch was refused. The Kafka edge maps each kind to its error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The header contradicts itself or the rules for client batches.
    #[error("{0}")]
    InvalidBatch(String),
    /// A record's framing is broken: lengths that disagree, bytes missing or
    /// left over.
    #[error("record {index} of the batch is malformed: {reason}")]
    Corrupt { index: usize, reason: String },
    /// A record is well framed but breaks a rule (offset delta, negative
    /// lengths).
    #[error("record {index} of the batch is invalid: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("compression codec {0} is unknown (Kafka knows 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd); the producer is broken or not a Kafka client")]
    UnknownCompression(i16),
    #[error("the batch's {codec:?} data cannot be decompressed: {detail}")]
    Undecompressable { codec: Compression, detail: String },
    #[error("the batch decompresses to more than {limit} bytes, the broker's limit for one batch; send smaller batches")]
    TooLarge { limit: u64 },
    /// A record without a key, for a topic that requires keys (compacted).
    #[error("record {index} of the batch has no key")]
    KeyMissing { index: usize },
}

impl RecordError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::InvalidBatch(_) => "invalid_batch",
            RecordError::Corrupt { .. } => "corrupt_record",
            RecordError::Invalid { .. } => "invalid_record",
            RecordError::UnknownCompression(_) => "unknown_compression",
            RecordError::Undecompressable { .. } => "undecompressable",
            RecordError::TooLarge { .. } => "too_large_uncompressed",
            RecordError::KeyMissing { .. } => "key_missing",
        }
    }

    /// The index of the offending record, where there is one.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            RecordError::Corrupt { index, .. }
            | RecordError::Invalid { index, .. }
            | RecordError::KeyMissing { index } => Some(*index),
            _ => None,
        }
    }
}

/// The header rules Kafka applies to batches from clients.
pub fn check_header(h: &BatchHeader) -> Result<Compression, RecordError> {
    if h.records_count <= 0 {
        return Err(RecordError::InvalidBatch(format!(
            "invalid reported count for record batch: {}",
            h.records_count
        )));
    }
    if i64::from(h.last_offset_delta) + 1 != i64::from(h.records_count) {
        return Err(RecordError::InvalidBatch(format!(
            "inconsistent batch offset range [0, {}] and count of records {}",
            h.last_offset_delta, h.records_count
        )));
    }
    if h.is_control() {
        return Err(RecordError::InvalidBatch(
            "clients are not allowed to write control records".into(),
        ));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(RecordError::InvalidBatch(format!(
            "invalid sequence number {} in record batch with producerId {}",
            h.base_sequence, h.producer_id
        )));
    }
    if h.producer_id < 0 && h.is_transactional() {
        return Err(RecordError::InvalidBatch(
            "a transactional batch needs a producer id".into(),
        ));
    }
    Compression::of(h)
}

/// Validates one whole batch (`batch` is exactly `h.size` bytes); with
/// `keys_required` (compacted topics) every record must have a key. Returns
/// the bytes of records walked (decompressed, for compressed batches).
pub fn validate(
    h: &BatchHeader,
    batch: &[u8],
    limits: &RecordLimits,
    keys_required: bool,
) -> Result<u64, RecordError> {
    let codec = check_header(h)?;
    let records = batch.get(RECORDS_START..h.size).unwrap_or_default();
    let count = h.records_count as usize;
    match codec {
        Compression::None => walk(
            &mut SliceSource {
                buf: records,
                pos: 0,
            },
            count,
            keys_required,
        )
        .map(|()| records.len() as u64),
        Compression::Gzip => walk_stream(
            codec,
            flate2::bufread::MultiGzDecoder::new(records),
            count,
            limits,
            keys_required,
        ),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(records).map_err(|e| undecompressable(codec, e))?;
            walk_stream(codec, decoder, count, limits, keys_required)
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(records)
                .map_err(|e| undecompressable(codec, e))?;
            decoder
                .window_log_max(MAX_ZSTD_WINDOW_LOG)
                .map_err(|e| undecompressable(codec, e))?;
            walk_stream(codec, decoder, count, limits, keys_required)
        }
        Compression::Snappy => walk_stream(
            codec,
            SnappyReader::new(records, limits)?,
            count,
            limits,
            keys_required,
        ),
    }
}

fn undecompressable(codec: Compression, e: impl std::fmt::Display) -> RecordError {
    RecordError::Undecompressable {
        codec,
        detail: e.to_string(),
    }
}

fn walk_stream(
    codec: Compression,
    decoder: impl Read,
    count: usize,
    limits: &RecordLimits,
    keys_required: bool,
) -> Result<u64, RecordError> {
    let mut source = StreamSource {
        reader: BufReader::with_capacity(STREAM_BUFFER, decoder),
        consumed: 0,
        limit: limits.max_uncompressed_bytes,
        codec,
    };
    walk(&mut source, count, keys_required)?;
    Ok(source.consumed)
}

/// Why reading the records stopped early.
enum SourceError {
    /// No more bytes.
    End,
    /// The stream failed or grew past the limit.
    Refused(RecordError),
}

/// The decompressed (or plain) record bytes, read forwards only.
trait RecordSource {
    fn byte(&mut self) -> Result<u8, SourceError>;
    fn skip(&mut self, n: u64) -> Result<(), SourceError>;
    /// Bytes read so far.
    fn position(&self) -> u64;
    fn at_end(&mut self) -> Result<bool, SourceError>;
}

struct SliceSource<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl RecordSource for SliceSource<'_> {
    fn byte(&mut self) -> Result<u8, SourceError> {
        let b = *self.buf.get(self.pos).ok_or(SourceError::End)?;
        self.pos += 1;
        Ok(b)
    }
    fn skip(&mut self, n: u64) -> Result<(), SourceError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            self.pos = self.buf.len();
            return Err(SourceError::End);
        }
        self.pos += n as usize;
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos as u64
    }
    fn at_end(&mut self) -> Result<bool, SourceError> {
        Ok(self.pos == self.buf.len())
    }
}

struct StreamSource<R> {
    reader: BufReader<R>,
    consumed: u64,
    limit: u64,
    codec: Compression,
}

impl<R: Read> StreamSource<R> {
    fn fill(&mut self) -> Result<&[u8], SourceError> {
        let codec = self.codec;
        let limit = self.limit;
        let buf = self.reader.fill_buf().map_err(|e| {
            SourceError::Refused(if e.kind() == std::io::ErrorKind::FileTooLarge {
                RecordError::TooLarge { limit }
            } else {
                undecompressable(codec, e)
            })
        })?;
        if buf.is_empty() {
            return Err(SourceError::End);
        }
        Ok(buf)
    }

    fn advance(&mut self, n: usize) -> Result<(), SourceError> {
        self.reader.consume(n);
        self.consumed += n as u64;
        if self.consumed > self.limit {
            return Err(SourceError::Refused(RecordError::TooLarge {
                limit: self.limit,
            }));
        }
        Ok(())
    }
}

impl<R: Read> RecordSource for StreamSource<R> {
    fn byte(&mut self) -> Result<u8, SourceError> {
        let b = self.fill()?[0];
        self.advance(1)?;
        Ok(b)
    }
    fn skip(&mut self, mut n: u64) -> Result<(), SourceError> {
        while n > 0 {
            let available = self.fill()?.len() as u64;
            let step = available.min(n);
            self.advance(step as usize)?;
            n -= step;
        }
        Ok(())
    }
    fn position(&self) -> u64 {
        self.consumed
    }
    fn at_end(&mut self) -> Result<bool, SourceError> {
        match self.fill() {
            Ok(_) => Ok(false),
            Err(SourceError::End) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Reads one record's fields, never past the record's declared end.
struct RecordReader<'s, S> {
    source: &'s mut S,
    end: u64,
    index: usize,
}

impl<S: RecordSource> RecordReader<'_, S> {
    fn corrupt(&self, reason: impl Into<String>) -> RecordError {
        RecordError::Corrupt {
            index: self.index,
            reason: reason.into(),
        }
    }

    fn lift(&self, e: SourceError, what: &str) -> RecordError {
        match e {
            SourceError::End => self.corrupt(format!("the batch ends inside the record's {what}")),
            SourceError::Refused(e) => e,
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, RecordError> {
        if self.source.position() >= self.end {
            return Err(self.corrupt(format!("the record's {what} lies past its declared size")));
        }
        self.source.byte().map_err(|e| self.lift(e, what))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), RecordError> {
        if self.source.position().saturating_add(n) > self.end {
            return Err(self.corrupt(format!(
                "the record's {what} of {n} bytes lies past its declared size"
            )));
        }
        self.source.skip(n).map_err(|e| self.lift(e, what))
    }

    /// Kafka's zigzag varint of at most `max_bytes` bytes, as a signed value.
    fn varint(&mut self, max_bytes: u32, what: &str) -> Result<i64, RecordError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte(what)?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(self.corrupt(format!(
            "the record's {what} is a varint longer than {max_bytes} bytes"
        )))
    }

    fn varint32(&mut self, what: &str) -> Result<i32, RecordError> {
        let v = self.varint(5, what)?;
        i32::try_from(v)
            .map_err(|_| self.corrupt(format!("the record's {what} {v} overflows 32 bits")))
    }

    /// A length-prefixed field that may be null; skips it and says whether
    /// it was present. Any negative length is null, as Kafka reads it.
    fn nullable_bytes(&mut self, what: &str) -> Result<bool, RecordError> {
        let len = self.varint32(what)?;
        if len > 0 {
            self.skip(len as u64, what)?;
        }
        Ok(len >= 0)
    }
}

/// Walks `count` records and requires the data to end exactly after them.
fn walk<S: RecordSource>(
    source: &mut S,
    count: usize,
    keys_required: bool,
) -> Result<(), RecordError> {
    for index in 0..count {
        let size = {
            let mut r = RecordReader {
                source: &mut *source,
                end: u64::MAX,
                index,
            };
            r.varint32("size")?
        };
        if size < 0 {
            return Err(RecordError::Corrupt {
                index,
                reason: format!("the record size {size} is negative"),
            });
        }
        let start = source.position();
        let mut r = RecordReader {
            source: &mut *source,
            end: start + size as u64,
            index,
        };
        r.byte("attributes")?;
        r.varint(10, "timestamp delta")?;
        let offset_delta = r.varint32("offset delta")?;
        if i64::from(offset_delta) != index as i64 {
            return Err(RecordError::Invalid {
                index,
                reason: format!(
                    "its offset delta is {offset_delta}; record {index} must have {index}"
                ),
            });
        }
        if !r.nullable_bytes("key")? && keys_required {
            return Err(RecordError::KeyMissing { index });
        }
        r.nullable_bytes("value")?;
        let headers = r.varint32("header count")?;
        if headers < 0 {
            return Err(RecordError::Invalid {
                index,
                reason: format!("its header count {headers} is negative"),
            });
        }
        for _ in 0..headers {
            // Every header takes at least two bytes, so a hostile count ends
            // at the record's declared size, not after billions of steps.
            let key_len = r.varint32("header key length")?;
            if key_len < 0 {
                return Err(RecordError::Invalid {
                    index,
                    reason: format!("a header key length {key_len} is negative"),
                });
            }
            r.skip(key_len as u64, "header key")?;
            r.nullable_bytes("header value")?;
        }
        let read = source.position() - start;
        if read != size as u64 {
            return Err(RecordError::Corrupt {
                index,
                reason: format!("its declared size is {size} bytes but its fields take {read}"),
            });
        }
    }
    match source.at_end() {
        Ok(true) => Ok(()),
        Ok(false) => Err(RecordError::InvalidBatch(format!(
            "the batch declares {count} records but more bytes follow them"
        ))),
        Err(SourceError::End) => Ok(()),
        Err(SourceError::Refused(e)) => Err(e),
    }
}

/// Snappy as Kafka's clients write it: the Java client's framed stream
/// (`\x82SNAPPY\0` header, then blocks of `u32 length + raw snappy`), or one
/// raw snappy block (librdkafka). Each block's decompressed size is read
/// from its preamble and checked before anything is allocated for it.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    block_pos: usize,
    produced: u64,
    limit: u64,
    decoder: snap::raw::Decoder,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limits: &RecordLimits) -> Result<Self, RecordError> {
        let framed = input.starts_with(XERIAL_SNAPPY_MAGIC);
        let input = if framed {
            input.get(XERIAL_SNAPPY_HEADER_LEN..).ok_or_else(|| {
                undecompressable(
                    Compression::Snappy,
                    "the framed stream's header is truncated",
                )
            })?
        } else {
            input
        };
        Ok(Self {
            input,
            framed,
            block: Vec::new(),
            block_pos: 0,
            produced: 0,
            limit: limits.max_uncompressed_bytes,
            decoder: snap::raw::Decoder::new(),
        })
    }

    fn next_block(&mut self) -> std::io::Result<bool> {
        use std::io::{Error, ErrorKind};
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            if self.input.len() < 4 {
                return Err(Error::new(ErrorKind::InvalidData, "truncated block length"));
            }
            let len =
                u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
                    as usize;
            let block = self
                .input
                .get(4..4 + len)
                .ok_or_else(|| Error::new(ErrorKind::InvalidData, "truncated block"))?;
            self.input = &self.input[4 + len..];
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let size = snap::raw::decompress_len(compressed)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        // Checked before anything is allocated for the block.
        if size > compressed.len().saturating_mul(MAX_SNAPPY_EXPANSION) + 64 {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "a block of {} bytes claims {size} decompressed",
                    compressed.len()
                ),
            ));
        }
        if self.produced + size as u64 > self.limit {
            return Err(Error::new(
                ErrorKind::FileTooLarge,
                format!("decompresses to more than {} bytes", self.limit),
            ));
        }
        self.block.resize(size, 0);
        let n = self
            .decoder
            .decompress(compressed, &mut self.block)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        self.block.truncate(n);
        self.block_pos = 0;
        self.produced += n as u64;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.block_pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.block_pos);
        out[..n].copy_from_slice(&self.block[self.block_pos..self.block_pos + n]);
        self.block_pos += n;
        Ok(n)
    }
}

/// Runs validation for the produce path: uncompressed batches in place on
/// the calling task (a linear scan), compressed ones on the blocking pool,
/// at most one per core at a time, so that decompression neither stalls the
/// runtime nor holds more than a few decoder windows in memory at once.
pub struct RecordValidator {
    limits: RecordLimits,
    decompressing: std::sync::Arc<tokio::sync::Semaphore>,
}

impl RecordValidator {
    pub fn new(limits: RecordLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            limits,
            decompressing: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// Validates the batches of one partition; `request_budget` is what is
    /// left of the request's decompressed-bytes limit, and shrinks by what
    /// these batches used.
    pub async fn validate(
        &self,
        batches: &[(BatchHeader, bytes::Bytes)],
        request_budget: &mut u64,
        keys_required: bool,
    ) -> Result<(), RecordError> {
        for (h, b) in batches {
            let limits = RecordLimits {
                max_uncompressed_bytes: self.limits.max_uncompressed_bytes.min(*request_budget),
                ..self.limits
            };
            let used = if check_header(h)? == Compression::None
                && b.len() <= INLINE_VALIDATION_BYTES
            {
                validate(h, b, &limits, keys_required)?
            } else {
                let permit = self
                    .decompressing
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| RecordError::InvalidBatch("the broker is shutting down".into()))?;
                let (h, b) = (*h, b.clone());
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    validate(&h, &b, &limits, keys_required)
                })
                .await
                .map_err(|e| {
                    RecordError::InvalidBatch(format!("validation did not finish: {e}"))
                })??
            };
            *request_budget = request_budget.saturating_sub(used);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{
        Compression as Codec, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use kafscale_storage_format::batch;

    fn record(offset: i64, value: &[u8]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // The encoder starts a new batch wherever offset minus sequence
            // changes; keeping them equal makes one batch of all records.
            sequence: offset as i32,
            timestamp: 1_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::copy_from_slice(value)),
            headers: [(
                kafka_protocol::protocol::StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
        }
    }

    fn encode(records: &[Record], codec: Codec) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression: codec,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn check(b: &[u8]) -> Result<(), RecordError> {
        let h = batch::validate(b).expect("header and CRC valid");
        validate(&h, &b[..h.size], &RecordLimits::default(), false).map(|_| ())
    }

    /// Re-seals `b` after an edit so that only the edit is wrong, not the CRC.
    fn reseal(mut b: Vec<u8>) -> Vec<u8> {
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn set_i32(b: &mut [u8], at: usize, v: i32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn batches_from_every_codec_pass() {
        let records: Vec<_> = (0..50).map(|i| record(i, &[b'x'; 300])).collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            check(&encode(&records, codec)).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        }
    }

    #[test]
    fn framed_snappy_as_the_java_client_writes_it_passes() {
        let plain = encode(&[record(0, b"hello"), record(1, b"world")], Codec::None);
        let raw_records = &plain[RECORDS_START..];
        let block = snap::raw::Encoder::new().compress_vec(raw_records).unwrap();
        let mut b = plain[..RECORDS_START].to_vec();
        b[22] = (b[22] & !0x07) | 2;
        b.extend_from_slice(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
        b.extend_from_slice(&(block.len() as u32).to_be_bytes());
        b.extend_from_slice(&block);
        check(&reseal(b)).unwrap();
    }

    #[test]
    fn header_counts_must_agree() {
        let good = encode(&[record(0, b"a"), record(1, b"b")], Codec::None).to_vec();
        let mut zero = good.clone();
        set_i32(&mut zero, 57, 0);
        assert!(matches!(
            check(&reseal(zero)),
            Err(RecordError::InvalidBatch(_))
        ));
        let mut huge = good.clone();
        set_i32(&mut huge, 57, i32::MAX);
        set_i32(&mut huge, 23, i32::MAX - 1);
        assert!(check(&reseal(huge)).is_err());
        let mut jump = good.clone();
        set_i32(&mut jump, 23, i32::MAX);
        assert!(matches!(
            check(&reseal(jump)),
            Err(RecordError::InvalidBatch(_))
        ));
        let mut one = good;
        set_i32(&mut one, 57, 1);
        set_i32(&mut one, 23, 0);
        // One record announced, two follow.
        assert!(matches!(
            check(&reseal(one)),
            Err(RecordError::InvalidBatch(_))
        ));
    }

    #[test]
    fn unknown_codecs_are_refused() {
        let good = encode(&[record(0, b"a")], Codec::None).to_vec();
        for codec in 5..=7u8 {
            let mut b = good.clone();
            b[22] = (b[22] & !0x07) | codec;
            assert_eq!(
                check(&reseal(b)),
                Err(RecordError::UnknownCompression(i16::from(codec)))
            );
        }
    }

    #[test]
    fn truncated_and_garbage_records_are_refused_with_their_index() {
        let good = encode(&[record(0, b"first"), record(1, b"second")], Codec::None).to_vec();
        // Half of the second record cut off.
        let cut = reseal(good[..good.len() - 6].to_vec());
        assert_eq!(check(&cut).unwrap_err().record_index(), Some(1));
        // Random bytes where the records are.
        let mut garbage = good[..RECORDS_START].to_vec();
        garbage.extend((0..40u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
        assert!(check(&reseal(garbage)).is_err());
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        let mut r1 = record(1, b"b");
        // Encoded as offset delta 5, but the batch says 2 records.
        r1.offset = 5;
        r1.sequence = 5;
        let b = encode(&[record(0, b"a"), r1], Codec::None).to_vec();
        // The encoder derives lastOffsetDelta from the records; make the header
        // agree with the count so only the record is wrong.
        let mut b = b;
        set_i32(&mut b, 23, 1);
        let err = check(&reseal(b)).unwrap_err();
        assert!(
            matches!(err, RecordError::Invalid { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn compacted_topics_refuse_records_without_a_key_in_every_codec() {
        let mut records: Vec<_> = (0..3).map(|i| record(i, b"v")).collect();
        records[2].key = None;
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let b = encode(&records, codec);
            let h = batch::validate(&b).unwrap();
            let limits = RecordLimits::default();
            assert!(validate(&h, &b, &limits, false).is_ok(), "{codec:?}");
            let refused = validate(&h, &b, &limits, true).unwrap_err();
            assert_eq!(refused, RecordError::KeyMissing { index: 2 }, "{codec:?}");
            assert_eq!(refused.record_index(), Some(2));
        }
        // An empty key is a key (Kafka refuses only null ones).
        records[2].key = Some(Bytes::new());
        let b = encode(&records, Codec::None);
        let h = batch::validate(&b).unwrap();
        assert!(validate(&h, &b, &RecordLimits::default(), true).is_ok());
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        // 50 records of 1 MiB of zeros compress to almost nothing.
        let records: Vec<_> = (0..50).map(|i| record(i, &vec![0u8; 1 << 20])).collect();
        let b = encode(&records, Codec::Zstd);
        assert!(b.len() < 64 * 1024, "{} bytes", b.len());
        let h = batch::validate(&b).unwrap();
        let limits = RecordLimits::per_batch(8 << 20);
        assert_eq!(
            validate(&h, &b, &limits, false),
            Err(RecordError::TooLarge { limit: 8 << 20 })
        );
        // A snappy block whose preamble claims far more than it could expand
        // to is refused before anything is allocated for it.
        // 1 MiB claimed (under the limit) by 11 bytes.
        let mut lying = b"\x80\x80\x40".to_vec();
        lying.extend_from_slice(&[0u8; 8]);
        let mut reader = SnappyReader::new(&lying, &limits).unwrap();
        assert!(reader.read(&mut [0u8; 16]).is_err());
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4] {
            let b = encode(&records, codec);
            let h = batch::validate(&b).unwrap();
            assert_eq!(
                validate(&h, &b, &limits, false),
                Err(RecordError::TooLarge { limit: 8 << 20 }),
                "{codec:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_of_many_small_bombs_is_bounded_as_a_whole() {
        let validator = RecordValidator::new(RecordLimits::per_batch(2 << 20));
        // Each batch decompresses to 1 MiB, under the per-batch limit.
        let records: Vec<_> = (0..4).map(|i| record(i, &vec![0u8; 256 << 10])).collect();
        let b = encode(&records, Codec::Gzip);
        let h = batch::validate(&b).unwrap();
        let batches = vec![(h, b.clone())];
        let mut budget = 16 << 20; // what eight batch limits allow
        let mut accepted = 0;
        while validator
            .validate(&batches, &mut budget, false)
            .await
            .is_ok()
        {
            accepted += 1;
            assert!(accepted < 100, "the request budget never ran out");
        }
        assert!(
            (15..=17).contains(&accepted),
            "{accepted} batches of ~1 MiB in 16 MiB"
        );
    }

    #[test]
    fn corrupt_compressed_data_is_refused() {
        let good = encode(&[record(0, &[b'q'; 200])], Codec::Gzip).to_vec();
        let mut b = good.clone();
        let mid = RECORDS_START + (b.len() - RECORDS_START) / 2;
        for x in &mut b[mid..mid + 8] {
            *x ^= 0x5a;
        }
        assert!(check(&reseal(b)).is_err());
    }
}
