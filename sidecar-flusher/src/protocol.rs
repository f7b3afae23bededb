//! The broker ⇄ flusher socket protocol, version 3.
//!
//! Every frame is `u32 length` followed by `length` bytes:
//!
//! ```text
//! request:  u16 version=2 | u8 op      | u64 request_id | payload
//! response: u16 version=2 | u8 op|0x80 | u64 request_id | u8 status | payload
//! ```
//!
//! Requests are pipelined: a client may have any number in flight on one
//! connection and responses come back in completion order, matched by
//! `request_id`. Strings are `u16 length + UTF-8`, byte blobs `u32 length +
//! bytes`. A non-zero status carries a `u16`-prefixed message instead of the
//! payload. `docs/architecture.md` has the full table of operations.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

pub const PROTOCOL_VERSION: u16 = 3;
/// Largest frame either side accepts; a segment write is bounded by the broker's flush size.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const RESPONSE_BIT: u8 = 0x80;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unsupported flusher protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("unknown operation code {0}")]
    UnknownOp(u8),
    #[error("string field is not UTF-8")]
    Utf8,
}

/// Operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    WriteSegment = 1,
    ReadRange = 2,
    Recover = 3,
    DeleteTopic = 4,
    Health = 5,
    OffsetForTimestamp = 6,
    ProducerBatches = 7,
    RetentionPoint = 8,
    DeleteSegmentsBelow = 9,
    MergeSegments = 10,
}

impl Op {
    fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            1 => Op::WriteSegment,
            2 => Op::ReadRange,
            3 => Op::Recover,
            4 => Op::DeleteTopic,
            5 => Op::Health,
            6 => Op::OffsetForTimestamp,
            7 => Op::ProducerBatches,
            8 => Op::RetentionPoint,
            9 => Op::DeleteSegmentsBelow,
            10 => Op::MergeSegments,
            other => return Err(ProtocolError::UnknownOp(other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Encode the batches (offsets assigned, contiguous) as one sealed segment
    /// and upload it with a create-once write. Answered only once durable.
    /// `not_after_ms` (Unix millis) is when the broker's session may have
    /// ended: no upload starts after it and none runs past it, which bounds how
    /// late a fenced broker's segment can land.
    WriteSegment {
        topic: String,
        partition: i32,
        not_after_ms: i64,
        batches: Vec<Bytes>,
    },
    /// Batches from object storage starting at the batch that holds `offset`:
    /// at most `max_bytes`, but always one whole batch when there is one.
    ReadRange {
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: u32,
    },
    /// The partition's log start and log end from the segment listing and the
    /// last segment's footer.
    Recover {
        topic: String,
        partition: i32,
    },
    /// Delete every object of a topic.
    DeleteTopic {
        topic: String,
        /// No delete starts after this moment (the broker's session end):
        /// a broker that may have lost its session must not sweep a name
        /// that a new topic may own by now.
        not_after_ms: i64,
    },
    Health,
    /// The first offset whose batch max timestamp is `>= timestamp`.
    OffsetForTimestamp {
        topic: String,
        partition: i32,
        timestamp: i64,
    },
    /// Producer fields of the idempotent batches in the partition's newest
    /// segments (at most `max_bytes` of segments, at least the last one), for
    /// rebuilding producer state after a restart.
    ProducerBatches {
        topic: String,
        partition: i32,
        max_bytes: u64,
    },
    /// Where the log may start under these retention limits (-1 = unlimited):
    /// the base offset of the oldest segment that must be kept.
    RetentionPoint {
        topic: String,
        partition: i32,
        retention_ms: i64,
        retention_bytes: i64,
    },
    /// Deletes segments that hold only offsets below `offset` and were
    /// written at least `min_age_ms` ago (younger ones wait for a later
    /// request: a fenced broker's late upload could recreate their key). The
    /// newest segment is always kept: it records the log end. No delete
    /// starts after `not_after_ms`.
    DeleteSegmentsBelow {
        topic: String,
        partition: i32,
        offset: i64,
        min_age_ms: i64,
        not_after_ms: i64,
    },
    /// Merges runs of small adjacent segments older than `min_age_ms` into
    /// segments of up to `target_bytes`; a segment whose oldest data was
    /// sealed more than `max_span_ms` ago is not extended any more (so time
    /// retention can reach it). Every write starts before `not_after_ms`.
    MergeSegments {
        topic: String,
        partition: i32,
        target_bytes: u64,
        min_age_ms: i64,
        max_span_ms: i64,
        not_after_ms: i64,
    },
}

/// One idempotent batch's producer fields, as stored in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub last_offset_delta: i32,
    pub base_offset: i64,
}

impl Response {
    /// The variant's name, for messages (the contents may be large).
    pub fn name(&self) -> &'static str {
        match self {
            Response::Written { .. } => "Written",
            Response::Range { .. } => "Range",
            Response::Recovered { .. } => "Recovered",
            Response::Deleted { .. } => "Deleted",
            Response::Health { .. } => "Health",
            Response::OffsetForTimestamp { .. } => "OffsetForTimestamp",
            Response::ProducerBatches { .. } => "ProducerBatches",
            Response::RetentionPoint { .. } => "RetentionPoint",
            Response::Merged { .. } => "Merged",
        }
    }
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::WriteSegment { .. } => Op::WriteSegment,
            Request::ReadRange { .. } => Op::ReadRange,
            Request::Recover { .. } => Op::Recover,
            Request::DeleteTopic { .. } => Op::DeleteTopic,
            Request::Health => Op::Health,
            Request::OffsetForTimestamp { .. } => Op::OffsetForTimestamp,
            Request::ProducerBatches { .. } => Op::ProducerBatches,
            Request::RetentionPoint { .. } => Op::RetentionPoint,
            Request::DeleteSegmentsBelow { .. } => Op::DeleteSegmentsBelow,
            Request::MergeSegments { .. } => Op::MergeSegments,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Written {
        base_offset: i64,
        last_offset: i64,
        object_bytes: u64,
    },
    Range {
        batches: Bytes,
    },
    Recovered {
        log_start_offset: i64,
        log_end_offset: i64,
        segment_count: u32,
    },
    Deleted {
        objects: u32,
    },
    Health {
        state: HealthState,
        detail: String,
    },
    OffsetForTimestamp {
        /// -1 when no batch has such a timestamp.
        offset: i64,
        timestamp: i64,
    },
    ProducerBatches {
        batches: Vec<ProducerBatch>,
    },
    /// -1 when nothing needs deleting.
    RetentionPoint {
        offset: i64,
    },
    /// What a merge pass did: segments read, segments written, redundant
    /// segments removed (leftovers of an interrupted merge).
    Merged {
        merged: u32,
        written: u32,
        removed: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    Healthy = 0,
    Degraded = 1,
    Unavailable = 2,
}

/// Why a request failed; travels as the response status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorKind {
    /// The segment key already holds different data: another writer owns this
    /// offset range (the writer is fenced).
    Conflict = 1,
    /// Object storage failed or timed out; retrying later may succeed.
    Unavailable = 2,
    /// Stored data failed verification.
    Corrupt = 3,
    BadRequest = 4,
    Internal = 5,
    /// The request's `not_after_ms` passed before its write could start or
    /// finish: the broker's session may be over, so nothing was (or will be)
    /// acknowledged by it.
    Expired = 6,
}

impl ErrorKind {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ErrorKind::Conflict,
            2 => ErrorKind::Unavailable,
            3 => ErrorKind::Corrupt,
            4 => ErrorKind::BadRequest,
            6 => ErrorKind::Expired,
            _ => ErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind:?}: {message}")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

// ---- primitive readers/writers ---------------------------------------------

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), ProtocolError> {
    if buf.remaining() < n {
        Err(ProtocolError::Truncated(what))
    } else {
        Ok(())
    }
}

fn get_u8(b: &mut Bytes, what: &'static str) -> Result<u8, ProtocolError> {
    need(b, 1, what)?;
    Ok(b.get_u8())
}
fn get_u16(b: &mut Bytes, what: &'static str) -> Result<u16, ProtocolError> {
    need(b, 2, what)?;
    Ok(b.get_u16())
}
fn get_u32(b: &mut Bytes, what: &'static str) -> Result<u32, ProtocolError> {
    need(b, 4, what)?;
    Ok(b.get_u32())
}
fn get_i32(b: &mut Bytes, what: &'static str) -> Result<i32, ProtocolError> {
    need(b, 4, what)?;
    Ok(b.get_i32())
}
fn get_i64(b: &mut Bytes, what: &'static str) -> Result<i64, ProtocolError> {
    need(b, 8, what)?;
    Ok(b.get_i64())
}
fn get_u64(b: &mut Bytes, what: &'static str) -> Result<u64, ProtocolError> {
    need(b, 8, what)?;
    Ok(b.get_u64())
}
fn get_str(b: &mut Bytes, what: &'static str) -> Result<String, ProtocolError> {
    let n = get_u16(b, what)? as usize;
    need(b, n, what)?;
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| ProtocolError::Utf8)
}
fn get_blob(b: &mut Bytes, what: &'static str) -> Result<Bytes, ProtocolError> {
    let n = get_u32(b, what)? as usize;
    need(b, n, what)?;
    Ok(b.split_to(n))
}
fn put_str(b: &mut BytesMut, s: &str) {
    // Topic names are at most 249 bytes; messages are truncated to fit u16.
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}
fn put_blob(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

// ---- requests -----------------------------------------------------------------

/// Encodes a request frame body (without the u32 length prefix).
pub fn encode_request(request_id: u64, req: &Request) -> Bytes {
    let payload_hint = match req {
        Request::WriteSegment { batches, .. } => batches.iter().map(|b| b.len() + 4).sum(),
        _ => 0,
    };
    let mut b = BytesMut::with_capacity(64 + payload_hint);
    b.put_u16(PROTOCOL_VERSION);
    b.put_u8(req.op() as u8);
    b.put_u64(request_id);
    match req {
        Request::WriteSegment {
            topic,
            partition,
            not_after_ms,
            batches,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_i64(*not_after_ms);
            b.put_u32(batches.len() as u32);
            for batch in batches {
                put_blob(&mut b, batch);
            }
        }
        Request::ReadRange {
            topic,
            partition,
            offset,
            max_bytes,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_i64(*offset);
            b.put_u32(*max_bytes);
        }
        Request::Recover { topic, partition } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
        }
        Request::DeleteTopic {
            topic,
            not_after_ms,
        } => {
            put_str(&mut b, topic);
            b.put_i64(*not_after_ms);
        }
        Request::Health => {}
        Request::OffsetForTimestamp {
            topic,
            partition,
            timestamp,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_i64(*timestamp);
        }
        Request::ProducerBatches {
            topic,
            partition,
            max_bytes,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_u64(*max_bytes);
        }
        Request::RetentionPoint {
            topic,
            partition,
            retention_ms,
            retention_bytes,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_i64(*retention_ms);
            b.put_i64(*retention_bytes);
        }
        Request::DeleteSegmentsBelow {
            topic,
            partition,
            offset,
            min_age_ms,
            not_after_ms,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_i64(*offset);
            b.put_i64(*min_age_ms);
            b.put_i64(*not_after_ms);
        }
        Request::MergeSegments {
            topic,
            partition,
            target_bytes,
            min_age_ms,
            max_span_ms,
            not_after_ms,
        } => {
            put_str(&mut b, topic);
            b.put_i32(*partition);
            b.put_u64(*target_bytes);
            b.put_i64(*min_age_ms);
            b.put_i64(*max_span_ms);
            b.put_i64(*not_after_ms);
        }
    }
    b.freeze()
}

/// Decodes a request frame body. On error the request id is returned when it
/// could be read, so the server can still answer.
pub fn decode_request(mut b: Bytes) -> Result<(u64, Request), (Option<u64>, ProtocolError)> {
    let version = get_u16(&mut b, "version").map_err(|e| (None, e))?;
    if version != PROTOCOL_VERSION {
        return Err((None, ProtocolError::Version(version)));
    }
    let op = get_u8(&mut b, "op").map_err(|e| (None, e))?;
    let id = get_u64(&mut b, "request id").map_err(|e| (None, e))?;
    let op = Op::from_u8(op).map_err(|e| (Some(id), e))?;
    let req = (|| -> Result<Request, ProtocolError> {
        Ok(match op {
            Op::WriteSegment => {
                let topic = get_str(&mut b, "topic")?;
                let partition = get_i32(&mut b, "partition")?;
                let not_after_ms = get_i64(&mut b, "not after")?;
                let n = get_u32(&mut b, "batch count")? as usize;
                // Each batch takes at least its 4-byte length: the count cannot
                // make the capacity exceed what the frame holds.
                let mut batches = Vec::with_capacity(n.min(b.remaining() / 4));
                for _ in 0..n {
                    batches.push(get_blob(&mut b, "batch")?);
                }
                Request::WriteSegment {
                    topic,
                    partition,
                    not_after_ms,
                    batches,
                }
            }
            Op::ReadRange => Request::ReadRange {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                offset: get_i64(&mut b, "offset")?,
                max_bytes: get_u32(&mut b, "max bytes")?,
            },
            Op::Recover => Request::Recover {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
            },
            Op::DeleteTopic => Request::DeleteTopic {
                topic: get_str(&mut b, "topic")?,
                not_after_ms: get_i64(&mut b, "not_after_ms")?,
            },
            Op::Health => Request::Health,
            Op::OffsetForTimestamp => Request::OffsetForTimestamp {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                timestamp: get_i64(&mut b, "timestamp")?,
            },
            Op::ProducerBatches => Request::ProducerBatches {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                max_bytes: get_u64(&mut b, "max bytes")?,
            },
            Op::RetentionPoint => Request::RetentionPoint {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                retention_ms: get_i64(&mut b, "retention ms")?,
                retention_bytes: get_i64(&mut b, "retention bytes")?,
            },
            Op::DeleteSegmentsBelow => Request::DeleteSegmentsBelow {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                offset: get_i64(&mut b, "offset")?,
                min_age_ms: get_i64(&mut b, "min age")?,
                not_after_ms: get_i64(&mut b, "not after")?,
            },
            Op::MergeSegments => Request::MergeSegments {
                topic: get_str(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
                target_bytes: get_u64(&mut b, "target bytes")?,
                min_age_ms: get_i64(&mut b, "min age")?,
                max_span_ms: get_i64(&mut b, "max span")?,
                not_after_ms: get_i64(&mut b, "not after")?,
            },
        })
    })()
    .map_err(|e| (Some(id), e))?;
    Ok((id, req))
}

// ---- responses ----------------------------------------------------------------

pub fn encode_response(request_id: u64, op: Op, result: &Result<Response, RemoteError>) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u16(PROTOCOL_VERSION);
    b.put_u8(op as u8 | RESPONSE_BIT);
    b.put_u64(request_id);
    match result {
        Err(e) => {
            b.put_u8(e.kind as u8);
            put_str(&mut b, &e.message);
        }
        Ok(resp) => {
            b.put_u8(0);
            match resp {
                Response::Written {
                    base_offset,
                    last_offset,
                    object_bytes,
                } => {
                    b.put_i64(*base_offset);
                    b.put_i64(*last_offset);
                    b.put_u64(*object_bytes);
                }
                Response::Range { batches } => {
                    b.reserve(batches.len() + 4);
                    put_blob(&mut b, batches);
                }
                Response::Recovered {
                    log_start_offset,
                    log_end_offset,
                    segment_count,
                } => {
                    b.put_i64(*log_start_offset);
                    b.put_i64(*log_end_offset);
                    b.put_u32(*segment_count);
                }
                Response::Deleted { objects } => b.put_u32(*objects),
                Response::Health { state, detail } => {
                    b.put_u8(*state as u8);
                    put_str(&mut b, detail);
                }
                Response::OffsetForTimestamp { offset, timestamp } => {
                    b.put_i64(*offset);
                    b.put_i64(*timestamp);
                }
                Response::ProducerBatches { batches } => {
                    b.reserve(4 + batches.len() * 26);
                    b.put_u32(batches.len() as u32);
                    for p in batches {
                        b.put_i64(p.producer_id);
                        b.put_i16(p.producer_epoch);
                        b.put_i32(p.base_sequence);
                        b.put_i32(p.last_offset_delta);
                        b.put_i64(p.base_offset);
                    }
                }
                Response::RetentionPoint { offset } => b.put_i64(*offset),
                Response::Merged {
                    merged,
                    written,
                    removed,
                } => {
                    b.put_u32(*merged);
                    b.put_u32(*written);
                    b.put_u32(*removed);
                }
            }
        }
    }
    b.freeze()
}

/// A decoded response frame: its request id and the result.
pub type DecodedResponse = (u64, Result<Response, RemoteError>);

pub fn decode_response(mut b: Bytes) -> Result<DecodedResponse, ProtocolError> {
    let version = get_u16(&mut b, "version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    let op = Op::from_u8(get_u8(&mut b, "op")? & !RESPONSE_BIT)?;
    let id = get_u64(&mut b, "request id")?;
    let status = get_u8(&mut b, "status")?;
    if status != 0 {
        let message = get_str(&mut b, "error message")?;
        return Ok((
            id,
            Err(RemoteError {
                kind: ErrorKind::from_u8(status),
                message,
            }),
        ));
    }
    let resp = match op {
        Op::WriteSegment => Response::Written {
            base_offset: get_i64(&mut b, "base offset")?,
            last_offset: get_i64(&mut b, "last offset")?,
            object_bytes: get_u64(&mut b, "object bytes")?,
        },
        Op::ReadRange => Response::Range {
            batches: get_blob(&mut b, "batches")?,
        },
        Op::Recover => Response::Recovered {
            log_start_offset: get_i64(&mut b, "log start")?,
            log_end_offset: get_i64(&mut b, "log end")?,
            segment_count: get_u32(&mut b, "segment count")?,
        },
        Op::DeleteTopic => Response::Deleted {
            objects: get_u32(&mut b, "objects")?,
        },
        Op::Health => Response::Health {
            state: match get_u8(&mut b, "state")? {
                0 => HealthState::Healthy,
                1 => HealthState::Degraded,
                _ => HealthState::Unavailable,
            },
            detail: get_str(&mut b, "detail")?,
        },
        Op::OffsetForTimestamp => Response::OffsetForTimestamp {
            offset: get_i64(&mut b, "offset")?,
            timestamp: get_i64(&mut b, "timestamp")?,
        },
        Op::ProducerBatches => {
            let n = get_u32(&mut b, "batch count")? as usize;
            need(&b, n.saturating_mul(26), "producer batches")?;
            let batches = (0..n)
                .map(|_| ProducerBatch {
                    producer_id: b.get_i64(),
                    producer_epoch: b.get_i16(),
                    base_sequence: b.get_i32(),
                    last_offset_delta: b.get_i32(),
                    base_offset: b.get_i64(),
                })
                .collect();
            Response::ProducerBatches { batches }
        }
        Op::RetentionPoint => Response::RetentionPoint {
            offset: get_i64(&mut b, "offset")?,
        },
        Op::DeleteSegmentsBelow => Response::Deleted {
            objects: get_u32(&mut b, "objects")?,
        },
        Op::MergeSegments => Response::Merged {
            merged: get_u32(&mut b, "merged")?,
            written: get_u32(&mut b, "written")?,
            removed: get_u32(&mut b, "removed")?,
        },
    };
    Ok((id, Ok(resp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::WriteSegment {
                topic: "orders".into(),
                partition: 2,
                not_after_ms: 1_700_000_000_000,
                batches: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
            },
            Request::ReadRange {
                topic: "t".into(),
                partition: 0,
                offset: 99,
                max_bytes: 1 << 20,
            },
            Request::Recover {
                topic: "t".into(),
                partition: 1,
            },
            Request::DeleteTopic {
                topic: "t".into(),
                not_after_ms: 99,
            },
            Request::Health,
            Request::OffsetForTimestamp {
                topic: "t".into(),
                partition: 0,
                timestamp: 5,
            },
            Request::ProducerBatches {
                topic: "t".into(),
                partition: 0,
                max_bytes: 9,
            },
            Request::RetentionPoint {
                topic: "t".into(),
                partition: 0,
                retention_ms: 1,
                retention_bytes: -1,
            },
            Request::DeleteSegmentsBelow {
                topic: "t".into(),
                partition: 3,
                offset: 7,
                min_age_ms: 60_000,
                not_after_ms: 1_700_000_000_000,
            },
            Request::MergeSegments {
                topic: "t".into(),
                partition: 1,
                target_bytes: 1 << 24,
                min_age_ms: 60_000,
                max_span_ms: 3_600_000,
                not_after_ms: 1_700_000_000_000,
            },
        ];
        for (i, r) in reqs.into_iter().enumerate() {
            let frame = encode_request(i as u64, &r);
            assert_eq!(decode_request(frame).unwrap(), (i as u64, r));
        }
    }

    #[test]
    fn responses_round_trip_and_errors_carry_messages() {
        let ok = Ok(Response::Recovered {
            log_start_offset: 3,
            log_end_offset: 10,
            segment_count: 2,
        });
        let f = encode_response(7, Op::Recover, &ok);
        assert_eq!(decode_response(f).unwrap(), (7, ok));
        let err = Err(RemoteError {
            kind: ErrorKind::Unavailable,
            message: "s3 down".into(),
        });
        let f = encode_response(8, Op::WriteSegment, &err);
        assert_eq!(decode_response(f).unwrap(), (8, err));
        let batches = Ok(Response::ProducerBatches {
            batches: vec![ProducerBatch {
                producer_id: 5,
                producer_epoch: 1,
                base_sequence: 10,
                last_offset_delta: 3,
                base_offset: 100,
            }],
        });
        let f = encode_response(9, Op::ProducerBatches, &batches);
        assert_eq!(decode_response(f).unwrap(), (9, batches));
        let merged = Ok(Response::Merged {
            merged: 40,
            written: 2,
            removed: 1,
        });
        let f = encode_response(10, Op::MergeSegments, &merged);
        assert_eq!(decode_response(f).unwrap(), (10, merged));
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors_not_panics() {
        let frame = encode_request(
            1,
            &Request::ReadRange {
                topic: "topic".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1,
            },
        );
        for cut in 0..frame.len() {
            assert!(decode_request(frame.slice(..cut)).is_err());
        }
        let mut bad = BytesMut::from(&frame[..]);
        bad[2] = 99;
        assert_eq!(
            decode_request(bad.freeze()).unwrap_err(),
            (Some(1), ProtocolError::UnknownOp(99))
        );
    }
}
