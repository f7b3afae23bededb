//! The broker ⇄ flusher socket protocol, version 5.
//!
//! Every frame is `u32 length` followed by `length` bytes:
//!
//! ```text
//! request:  u16 version | u8 op      | u64 request_id | payload
//! response: u16 version | u8 op|0x80 | u64 request_id | u8 status | payload
//! ```
//!
//! Requests are pipelined: a client may have any number in flight on one
//! connection and responses come back in completion order, matched by
//! `request_id`. A non-zero status carries a `u16`-prefixed message instead of
//! the payload. Payloads are the fields in the order they are declared below,
//! each in its [`Wire`] encoding. Each operation and each answer is defined
//! once, in the tables at the end of this file, from which the types, the
//! operation codes and both codecs are generated. `docs/architecture.md` has
//! the table of operations.

use bytes::{BufMut, Bytes, BytesMut};
pub use kafscale_storage_format::wire::{Wire, WireError};
use kafscale_storage_format::wire_struct;
use thiserror::Error;
use tokio_util::codec::LengthDelimitedCodec;

pub mod client;
pub use client::{FlusherClient, PartitionId};

pub const PROTOCOL_VERSION: u16 = 5;
/// Largest frame either side accepts; a segment write is bounded by the broker's flush size.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const RESPONSE_BIT: u8 = 0x80;

/// Frames on the socket: a big-endian `u32` length, then that many bytes.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("unsupported flusher protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("unknown operation code {0}")]
    UnknownOp(u8),
}

wire_struct! {
    /// One idempotent batch's producer fields, as stored in its header.
    pub struct ProducerBatch {
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        pub last_offset_delta: i32,
        pub base_offset: i64,
    }
}

wire_struct! {
    /// How far a partition's intake parts are compacted into segments.
    pub struct CompactedTo {
        pub topic: String,
        pub topic_id: [u8; 16],
        pub partition: i32,
        pub last_offset: i64,
    }
}

wire_struct! {
    /// A topic that exists, by name and id.
    pub struct LiveTopic {
        pub name: String,
        pub topic_id: [u8; 16],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    Healthy = 0,
    Degraded = 1,
    Unavailable = 2,
}

/// One byte; a state this build does not know reads as unavailable.
impl Wire for HealthState {
    const MIN_LEN: usize = 1;
    fn put(&self, b: &mut BytesMut) {
        b.put_u8(*self as u8);
    }
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
        Ok(match u8::get(b, what)? {
            0 => HealthState::Healthy,
            1 => HealthState::Degraded,
            _ => HealthState::Unavailable,
        })
    }
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

/// Generates, from one table of answers, a struct per answer, the `Response`
/// enum over them, its codec and `ResponseKind` (which answer an operation
/// expects on the wire).
macro_rules! responses {
    ($(
        $(#[$meta:meta])*
        $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }
    ),* $(,)?) => {
        $(wire_struct! {
            $(#[$meta])*
            pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }
        })*

        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Response {
            $($name($name),)*
        }

        /// The kinds of answer, without their contents.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ResponseKind {
            $($name,)*
        }

        impl Response {
            /// The variant's name, for messages (the contents may be large).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Response::$name(_) => stringify!($name),)*
                }
            }

            fn put_payload(&self, b: &mut BytesMut) {
                match self {
                    $(Response::$name(answer) => {
                        b.reserve(answer.wire_len());
                        answer.put(b);
                    })*
                }
            }

            fn get_payload(kind: ResponseKind, b: &mut Bytes) -> Result<Self, WireError> {
                Ok(match kind {
                    $(ResponseKind::$name => Response::$name(Wire::get(b, stringify!($name))?),)*
                })
            }
        }
    };
}

/// Generates, from one table of operations (side, code, name, method,
/// request fields, the kind of answer): a struct per request in [`request`],
/// the `Op` and `Request` enums and the request codec, one trait per side of
/// the protocol ([`LogStorage`], [`MaintenanceStorage`]), their
/// implementation for anything that can carry a request ([`Transport`]: the
/// socket client) and [`dispatch`], which serves a request from any
/// implementation of both (the flusher's service, a test double).
macro_rules! operations {
    ($(
        $(#[$side_meta:meta])*
        $side:ident {
            $(
                $(#[$meta:meta])*
                $code:literal $name:ident $method:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? } -> $answer:ident
            ),* $(,)?
        }
    )*) => {
        /// Each operation's request, its fields in wire order.
        pub mod request {
            use super::*;
            $($(
                wire_struct! {
                    $(#[$meta])*
                    pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }
                }
            )*)*
        }

        /// Operation codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Op {
            $($($name = $code,)*)*
        }

        impl Op {
            fn from_u8(v: u8) -> Result<Self, ProtocolError> {
                match v {
                    $($($code => Ok(Op::$name),)*)*
                    other => Err(ProtocolError::UnknownOp(other)),
                }
            }

            /// The answer this operation gets when it succeeds.
            pub fn answer(self) -> ResponseKind {
                match self {
                    $($(Op::$name => ResponseKind::$answer,)*)*
                }
            }
        }

        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $($($name(request::$name),)*)*
        }

        impl Request {
            pub fn op(&self) -> Op {
                match self {
                    $($(Request::$name(_) => Op::$name,)*)*
                }
            }

            fn payload_len(&self) -> usize {
                match self {
                    $($(Request::$name(r) => r.wire_len(),)*)*
                }
            }

            fn put_payload(&self, b: &mut BytesMut) {
                match self {
                    $($(Request::$name(r) => r.put(b),)*)*
                }
            }

            fn get_payload(op: Op, b: &mut Bytes) -> Result<Self, WireError> {
                Ok(match op {
                    $($(Op::$name => Request::$name(Wire::get(b, stringify!($name))?),)*)*
                })
            }
        }

        $(
            $(#[$side_meta])*
            #[async_trait::async_trait]
            pub trait $side: Send + Sync {
                $(
                    $(#[$meta])*
                    async fn $method(&self, request: request::$name) -> Result<$answer, RemoteError>;
                )*
            }

            #[async_trait::async_trait]
            impl<T: Transport> $side for T {
                $(
                    async fn $method(&self, request: request::$name) -> Result<$answer, RemoteError> {
                        match self.call(Request::$name(request)).await? {
                            Response::$answer(answer) => Ok(answer),
                            other => Err(RemoteError {
                                kind: ErrorKind::Internal,
                                message: format!(
                                    "the flusher answered {} with {}; run a broker and a flusher of the same version",
                                    stringify!($name),
                                    other.name()
                                ),
                            }),
                        }
                    }
                )*
            }
        )*

        /// Serves one request from an implementation of every side.
        pub async fn dispatch<S>(service: &S, request: Request) -> Result<Response, RemoteError>
        where
            S: LogStorage + MaintenanceStorage + ?Sized,
        {
            match request {
                $($(Request::$name(r) => service.$method(r).await.map(Response::$answer),)*)*
            }
        }
    };
}

/// Both sides of the protocol: everything a broker asks of object storage.
pub trait ObjectStorage: LogStorage + MaintenanceStorage {}

impl<T: LogStorage + MaintenanceStorage + ?Sized> ObjectStorage for T {}

/// Carries a request to a flusher and brings back its answer (the socket
/// client); every side of the protocol is implemented on top of it.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn call(&self, request: Request) -> Result<Response, RemoteError>;
}

operations! {
    /// What a partition log needs of object storage: its writes, its reads
    /// from storage and its recovery.
    LogStorage {
        /// Encode the batches (offsets assigned, contiguous) as one sealed segment
        /// and upload it with a create-once write. Answered only once durable.
        /// `not_after_ms` (Unix millis) is when the broker's session may have
        /// ended: no upload starts after it and none runs past it, which bounds how
        /// late a fenced broker's segment can land.
        1 WriteSegment write_segment {
            topic: String,
            partition: i32,
            not_after_ms: i64,
            batches: Vec<Bytes>,
        } -> Written,
        /// Adds the batches (offsets assigned, contiguous) as one part to the
        /// intake object this flusher is gathering, and answers once that object
        /// is stored with a create-once PUT (`docs/intake-objects.md`). The
        /// object is sealed when its window ends or its size threshold is
        /// reached; no PUT starts after the earliest `not_after_ms` of its parts.
        /// `generation` is the writer's recovery generation of the partition.
        11 AppendIntake append_intake {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            leader_epoch: i32,
            generation: u64,
            not_after_ms: i64,
            batches: Vec<Bytes>,
        } -> Written,
        /// Batches from object storage starting at the batch that holds `offset`:
        /// at most `max_bytes`, but always one whole batch when there is one.
        2 ReadRange read_range {
            topic: String,
            /// The topic's id: intake parts of an older topic of the same name
            /// are never read.
            topic_id: [u8; 16],
            partition: i32,
            offset: i64,
            max_bytes: u32,
        } -> Range,
        /// The partition's log start and log end from the intake objects' parts
        /// and the segments (the last segment's footer). `generation` is the
        /// recovering writer's: 1 (the first ever taken) means no writer has
        /// stored a part of this partition, so no listing of intake objects is
        /// needed; 0 on the segment path.
        3 Recover recover {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            generation: u64,
        } -> Recovered,
        /// Producer fields of the idempotent batches in the partition's newest
        /// segments (at most `max_bytes` of segments, at least the last one), for
        /// rebuilding producer state after a restart.
        7 ProducerBatches producer_batches {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            max_bytes: u64,
        } -> ProducerBatches,
        /// The first offset whose batch max timestamp is `>= timestamp`.
        6 OffsetForTimestamp offset_for_timestamp {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            timestamp: i64,
        } -> OffsetForTimestamp,
    }
    /// What maintenance needs: retention, merging, intake compaction and
    /// clean-up, topic deletion, and the store's health.
    MaintenanceStorage {
        /// Where the log may start under these retention limits (-1 = unlimited):
        /// the base offset of the oldest segment or intake part that must be kept.
        /// `compacted` (1: the topic is compacted) makes a segment the cleaner
        /// wrote count by its newest data's time, not by when it was rewritten.
        8 RetentionPoint retention_point {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            retention_ms: i64,
            retention_bytes: i64,
            compacted: u8,
        } -> RetentionPoint,
        /// Deletes segments that hold only offsets below `offset` and were
        /// written at least `min_age_ms` ago (younger ones wait for a later
        /// request: a fenced broker's late upload could recreate their key). The
        /// newest segment is always kept: it records the log end. No delete
        /// starts after `not_after_ms`.
        9 DeleteSegmentsBelow delete_segments_below {
            topic: String,
            partition: i32,
            offset: i64,
            min_age_ms: i64,
            not_after_ms: i64,
        } -> Deleted,
        /// Merges runs of small adjacent segments older than `min_age_ms` into
        /// segments of up to `target_bytes`; a segment whose oldest data was
        /// sealed more than `max_span_ms` ago is not extended any more (so time
        /// retention can reach it). Every write starts before `not_after_ms`.
        10 MergeSegments merge_segments {
            topic: String,
            partition: i32,
            target_bytes: u64,
            min_age_ms: i64,
            max_span_ms: i64,
            not_after_ms: i64,
        } -> Merged,
        /// One cleaning pass of a compacted topic's partition: removes the
        /// leftovers of an interrupted pass, then, when the dirty ratio reaches
        /// `min_dirty_ratio_ppm` (millionths) or the oldest dirty data is older
        /// than `max_lag_ms`, rewrites its segments older than `min_age_ms`
        /// (never the newest) keeping the latest record of every key, into
        /// segments of up to `target_bytes` (`docs/architecture.md`,
        /// "Compacted topics"). Every write starts before `not_after_ms`.
        14 CleanSegments clean_segments {
            topic: String,
            partition: i32,
            min_age_ms: i64,
            max_lag_ms: i64,
            min_dirty_ratio_ppm: u32,
            delete_retention_ms: i64,
            target_bytes: u64,
            not_after_ms: i64,
        } -> Cleaned,
        /// One compaction step of a partition: its intake parts from the end of
        /// its segments, below `up_to` (the leader's high watermark), into one
        /// segment of up to `target_bytes`, once that much has gathered or the
        /// oldest part waited `max_delay_ms`. No write starts after `not_after_ms`.
        12 CompactIntake compact_intake {
            topic: String,
            topic_id: [u8; 16],
            partition: i32,
            up_to: i64,
            target_bytes: u64,
            max_delay_ms: i64,
            not_after_ms: i64,
        } -> Compacted,
        /// Deletes the intake objects older than `min_age_ms` whose every part
        /// is compacted (at or below its partition's entry in `compacted`) or
        /// belongs to no topic in `live` (both read from the metadata store just
        /// before).
        13 CollectIntake collect_intake {
            live: Vec<LiveTopic>,
            compacted: Vec<CompactedTo>,
            min_age_ms: i64,
            not_after_ms: i64,
        } -> Deleted,
        /// Delete every object of a topic.
        4 DeleteTopic delete_topic {
            topic: String,
            /// No delete starts after this moment (the broker's session end):
            /// a broker that may have lost its session must not sweep a name
            /// that a new topic may own by now.
            not_after_ms: i64,
        } -> Deleted,
        5 Health health {} -> Health,
    }
}

responses! {
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
    /// What a cleaning pass did so far: the dirty ratio it found
    /// (millionths), segments it cleans and cleaned segments written,
    /// leftovers of an interrupted pass removed, distinct keys mapped, bytes
    /// read and written (all 0 but the ratio: not due); `more` (1) when the
    /// deadline came first and the pass goes on at the next request.
    Cleaned {
        more: u8,
        dirty_ratio_ppm: u32,
        segments: u32,
        written: u32,
        removed: u32,
        keys: u64,
        bytes_read: u64,
        bytes_written: u64,
    },
    /// What a compaction step did: intake parts copied, segments written,
    /// and the last offset now in the partition's segments (-1: none).
    Compacted {
        parts: u32,
        written: u32,
        last_offset: i64,
    },
}

/// The fixed part of every frame: version, op and request id.
const FRAME_HEAD_LEN: usize = 2 + 1 + 8;

/// Encodes a request frame body (without the u32 length prefix).
pub fn encode_request(request_id: u64, req: &Request) -> Bytes {
    let mut b = BytesMut::with_capacity(FRAME_HEAD_LEN + req.payload_len());
    b.put_u16(PROTOCOL_VERSION);
    b.put_u8(req.op() as u8);
    b.put_u64(request_id);
    req.put_payload(&mut b);
    b.freeze()
}

/// Decodes a request frame body. On error the request id is returned when it
/// could be read, so the server can still answer.
pub fn decode_request(mut b: Bytes) -> Result<(u64, Request), (Option<u64>, ProtocolError)> {
    let version = u16::get(&mut b, "version").map_err(|e| (None, e.into()))?;
    if version != PROTOCOL_VERSION {
        return Err((None, ProtocolError::Version(version)));
    }
    let op = u8::get(&mut b, "op").map_err(|e| (None, e.into()))?;
    let id = u64::get(&mut b, "request id").map_err(|e| (None, e.into()))?;
    let op = Op::from_u8(op).map_err(|e| (Some(id), e))?;
    let req = Request::get_payload(op, &mut b).map_err(|e| (Some(id), e.into()))?;
    Ok((id, req))
}

pub fn encode_response(request_id: u64, op: Op, result: &Result<Response, RemoteError>) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u16(PROTOCOL_VERSION);
    b.put_u8(op as u8 | RESPONSE_BIT);
    b.put_u64(request_id);
    match result {
        Err(e) => {
            b.put_u8(e.kind as u8);
            e.message.put(&mut b);
        }
        Ok(resp) => {
            b.put_u8(0);
            resp.put_payload(&mut b);
        }
    }
    b.freeze()
}

/// A decoded response frame: its request id and the result.
pub type DecodedResponse = (u64, Result<Response, RemoteError>);

/// Decodes a response frame body; the answer's kind follows from its op.
pub fn decode_response(mut b: Bytes) -> Result<DecodedResponse, ProtocolError> {
    let version = u16::get(&mut b, "version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    let op = Op::from_u8(u8::get(&mut b, "op")? & !RESPONSE_BIT)?;
    let id = u64::get(&mut b, "request id")?;
    let status = u8::get(&mut b, "status")?;
    if status != 0 {
        let message = String::get(&mut b, "error message")?;
        return Ok((
            id,
            Err(RemoteError {
                kind: ErrorKind::from_u8(status),
                message,
            }),
        ));
    }
    let resp = Response::get_payload(op.answer(), &mut b)?;
    Ok((id, Ok(resp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::WriteSegment(request::WriteSegment {
                topic: "orders".into(),
                partition: 2,
                not_after_ms: 1_700_000_000_000,
                batches: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
            }),
            Request::ReadRange(request::ReadRange {
                topic: "t".into(),
                topic_id: [7; 16],
                partition: 0,
                offset: 99,
                max_bytes: 1 << 20,
            }),
            Request::Recover(request::Recover {
                topic: "t".into(),
                topic_id: [7; 16],
                partition: 1,
                generation: 4,
            }),
            Request::DeleteTopic(request::DeleteTopic {
                topic: "t".into(),
                not_after_ms: 99,
            }),
            Request::AppendIntake(request::AppendIntake {
                topic: "t".into(),
                topic_id: [9; 16],
                partition: 4,
                leader_epoch: 2,
                generation: 11,
                not_after_ms: 1_700_000_000_000,
                batches: vec![Bytes::from_static(b"xyz")],
            }),
            Request::Health(request::Health {}),
            Request::OffsetForTimestamp(request::OffsetForTimestamp {
                topic: "t".into(),
                topic_id: [7; 16],
                partition: 0,
                timestamp: 5,
            }),
            Request::ProducerBatches(request::ProducerBatches {
                topic: "t".into(),
                topic_id: [7; 16],
                partition: 0,
                max_bytes: 9,
            }),
            Request::RetentionPoint(request::RetentionPoint {
                topic: "t".into(),
                topic_id: [3; 16],
                partition: 0,
                retention_ms: 1,
                retention_bytes: -1,
                compacted: 1,
            }),
            Request::DeleteSegmentsBelow(request::DeleteSegmentsBelow {
                topic: "t".into(),
                partition: 3,
                offset: 7,
                min_age_ms: 60_000,
                not_after_ms: 1_700_000_000_000,
            }),
            Request::MergeSegments(request::MergeSegments {
                topic: "t".into(),
                partition: 1,
                target_bytes: 1 << 24,
                min_age_ms: 60_000,
                max_span_ms: 3_600_000,
                not_after_ms: 1_700_000_000_000,
            }),
            Request::CleanSegments(request::CleanSegments {
                topic: "t".into(),
                partition: 2,
                min_age_ms: 60_000,
                max_lag_ms: i64::MAX,
                min_dirty_ratio_ppm: 500_000,
                delete_retention_ms: 86_400_000,
                target_bytes: 1 << 24,
                not_after_ms: 1_700_000_000_000,
            }),
        ];
        for (i, r) in reqs.into_iter().enumerate() {
            let frame = encode_request(i as u64, &r);
            assert_eq!(decode_request(frame).unwrap(), (i as u64, r));
        }
    }

    #[test]
    fn responses_round_trip_and_errors_carry_messages() {
        let ok = Ok(Response::Recovered(Recovered {
            log_start_offset: 3,
            log_end_offset: 10,
            segment_count: 2,
        }));
        let f = encode_response(7, Op::Recover, &ok);
        assert_eq!(decode_response(f).unwrap(), (7, ok));
        let err = Err(RemoteError {
            kind: ErrorKind::Unavailable,
            message: "s3 down".into(),
        });
        let f = encode_response(8, Op::WriteSegment, &err);
        assert_eq!(decode_response(f).unwrap(), (8, err));
        let batches = Ok(Response::ProducerBatches(ProducerBatches {
            batches: vec![ProducerBatch {
                producer_id: 5,
                producer_epoch: 1,
                base_sequence: 10,
                last_offset_delta: 3,
                base_offset: 100,
            }],
        }));
        let f = encode_response(9, Op::ProducerBatches, &batches);
        assert_eq!(decode_response(f).unwrap(), (9, batches));
        let merged = Ok(Response::Merged(Merged {
            merged: 40,
            written: 2,
            removed: 1,
        }));
        let f = encode_response(10, Op::MergeSegments, &merged);
        assert_eq!(decode_response(f).unwrap(), (10, merged));
        let cleaned = Ok(Response::Cleaned(Cleaned {
            more: 1,
            dirty_ratio_ppm: 640_000,
            segments: 12,
            written: 3,
            removed: 0,
            keys: 1_000,
            bytes_read: 1 << 30,
            bytes_written: 1 << 20,
        }));
        let f = encode_response(11, Op::CleanSegments, &cleaned);
        assert_eq!(decode_response(f).unwrap(), (11, cleaned));
    }

    #[test]
    fn a_long_error_message_is_cut_at_a_character_boundary() {
        let err = Err(RemoteError {
            kind: ErrorKind::Internal,
            message: "é".repeat(40_000),
        });
        let (_, back) = decode_response(encode_response(1, Op::Recover, &err)).unwrap();
        let message = back.unwrap_err().message;
        assert_eq!(message.len(), 65_534, "the longest whole-character prefix");
        assert!(message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_hostile_count_fails_as_truncated_without_allocating_for_it() {
        let mut frame = BytesMut::new();
        frame.put_u16(PROTOCOL_VERSION);
        frame.put_u8(Op::WriteSegment as u8);
        frame.put_u64(4);
        "t".to_string().put(&mut frame);
        frame.put_i32(0);
        frame.put_i64(0);
        frame.put_u32(u32::MAX);
        assert_eq!(
            decode_request(frame.freeze()).unwrap_err(),
            (
                Some(4),
                ProtocolError::Wire(WireError::Truncated("batches"))
            )
        );
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors_not_panics() {
        let frame = encode_request(
            1,
            &Request::ReadRange(request::ReadRange {
                topic: "topic".into(),
                topic_id: [7; 16],
                partition: 0,
                offset: 0,
                max_bytes: 1,
            }),
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
