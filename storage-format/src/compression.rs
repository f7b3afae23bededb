//! The record codecs of Kafka batches (attributes bits 0–2), whole-buffer:
//! what the cleaner needs to read a compressed batch's records and write the
//! ones it keeps with the codec they came with. Decompression stops at a
//! limit, so a batch that expands beyond it costs no more than the limit.

use std::io::{Read, Write};

use thiserror::Error;

/// The framed snappy stream Kafka's Java client writes starts with this.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Magic, then the stream's version and its minimum compatible version.
const XERIAL_HEADER_LEN: usize = 16;
/// The uncompressed size of each framed snappy block the Java client writes.
const XERIAL_BLOCK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    /// `framed`: the Java client's stream of blocks; else one raw block
    /// (librdkafka). Kept as found, so clients read back what they wrote.
    Snappy {
        framed: bool,
    },
    Lz4,
    Zstd,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("compression codec {0} is unknown")]
    Unknown(i16),
    #[error("the {codec} data cannot be decompressed: {detail}")]
    Corrupt { codec: &'static str, detail: String },
    #[error("the batch decompresses to more than {0} bytes")]
    TooLarge(usize),
    #[error("{codec} compression failed: {detail}")]
    Compress { codec: &'static str, detail: String },
}

impl Codec {
    /// The codec of a batch with these attributes holding `records` (the
    /// bytes after the batch header, which tell the snappy framings apart).
    pub fn of(attributes: i16, records: &[u8]) -> Result<Self, CodecError> {
        Ok(match attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy {
                framed: records.starts_with(XERIAL_MAGIC),
            },
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(CodecError::Unknown(other)),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy { .. } => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// The records of a batch, decompressed; at most `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
        let corrupt = |e: std::io::Error| CodecError::Corrupt {
            codec: self.name(),
            detail: e.to_string(),
        };
        let read_all = |reader: &mut dyn Read| -> Result<Vec<u8>, CodecError> {
            let mut out = Vec::new();
            reader
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
            if out.len() > limit {
                return Err(CodecError::TooLarge(limit));
            }
            Ok(out)
        };
        match self {
            Codec::None => {
                if data.len() > limit {
                    return Err(CodecError::TooLarge(limit));
                }
                Ok(data.to_vec())
            }
            Codec::Gzip => read_all(&mut flate2::read::MultiGzDecoder::new(data)),
            Codec::Lz4 => read_all(&mut lz4::Decoder::new(data).map_err(corrupt)?),
            Codec::Zstd => read_all(&mut zstd::stream::read::Decoder::new(data).map_err(corrupt)?),
            Codec::Snappy { framed: false } => snappy_block(data, limit),
            Codec::Snappy { framed: true } => {
                let mut out = Vec::new();
                let mut rest = data.get(XERIAL_HEADER_LEN..).unwrap_or_default();
                while !rest.is_empty() {
                    let (len, tail) = rest.split_at_checked(4).ok_or_else(|| self.truncated())?;
                    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                    let (block, tail) =
                        tail.split_at_checked(len).ok_or_else(|| self.truncated())?;
                    let room = limit - out.len();
                    out.extend(snappy_block(block, room).map_err(|e| match e {
                        CodecError::TooLarge(_) => CodecError::TooLarge(limit),
                        e => e,
                    })?);
                    rest = tail;
                }
                Ok(out)
            }
        }
    }

    fn truncated(self) -> CodecError {
        CodecError::Corrupt {
            codec: self.name(),
            detail: "a framed block is cut short".into(),
        }
    }

    /// `data` compressed as clients of this codec read it.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, CodecError> {
        let failed = |e: std::io::Error| CodecError::Compress {
            codec: self.name(),
            detail: e.to_string(),
        };
        match self {
            Codec::None => Ok(data.to_vec()),
            Codec::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).map_err(failed)?;
                encoder.finish().map_err(failed)
            }
            Codec::Lz4 => {
                // Independent 64 KiB blocks without checksums: the frame
                // Kafka's Java client writes and every client reads.
                let mut encoder = lz4::EncoderBuilder::new()
                    .block_size(lz4::BlockSize::Max64KB)
                    .block_mode(lz4::BlockMode::Independent)
                    .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                    .checksum(lz4::ContentChecksum::NoChecksum)
                    .build(Vec::new())
                    .map_err(failed)?;
                encoder.write_all(data).map_err(failed)?;
                let (out, result) = encoder.finish();
                result.map_err(failed)?;
                Ok(out)
            }
            Codec::Zstd => zstd::stream::encode_all(data, 3).map_err(failed),
            Codec::Snappy { framed: false } => snap::raw::Encoder::new()
                .compress_vec(data)
                .map_err(|e| failed(e.into())),
            Codec::Snappy { framed: true } => {
                let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut encoder = snap::raw::Encoder::new();
                for chunk in data.chunks(XERIAL_BLOCK) {
                    let block = encoder.compress_vec(chunk).map_err(|e| failed(e.into()))?;
                    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                Ok(out)
            }
        }
    }
}

/// One raw snappy block, its claimed size checked against `limit` before
/// anything is allocated for it.
fn snappy_block(block: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = |e: snap::Error| CodecError::Corrupt {
        codec: "snappy",
        detail: e.to_string(),
    };
    let size = snap::raw::decompress_len(block).map_err(corrupt)?;
    if size > limit {
        return Err(CodecError::TooLarge(limit));
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_reads_back_what_it_wrote_and_stops_at_the_limit() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy { framed: false },
            Codec::Snappy { framed: true },
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let packed = codec.compress(&data).unwrap();
            let attributes = match codec {
                Codec::None => 0,
                Codec::Gzip => 1,
                Codec::Snappy { .. } => 2,
                Codec::Lz4 => 3,
                Codec::Zstd => 4,
            };
            assert_eq!(Codec::of(attributes, &packed).unwrap(), codec);
            assert_eq!(
                codec.decompress(&packed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert_eq!(
                codec.decompress(&packed, data.len() - 1),
                Err(CodecError::TooLarge(data.len() - 1)),
                "{codec:?}"
            );
        }
        assert_eq!(Codec::of(5, &[]), Err(CodecError::Unknown(5)));
        assert!(matches!(
            Codec::Gzip.decompress(b"not gzip", 100),
            Err(CodecError::Corrupt { .. })
        ));
    }
}
