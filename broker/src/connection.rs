//! One client connection: Kafka framing, request decoding, pipelining.
//!
//! Requests are read and admitted in order (so two produces on one connection
//! get offsets in the order they were sent), and each admitted request yields
//! a future for its response. Up to `max_in_flight_per_connection` of those run
//! concurrently (a produce waiting for durability does not hold up the next
//! one), and responses are written strictly in request order.
//! Anything malformed closes this connection with a log line; nothing a client
//! sends can bring down the broker.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tracing::Instrument;

use crate::handlers::{self, api_versions, RequestContext};
use crate::Broker;

type PendingResponse = BoxFuture<'static, Option<Bytes>>;

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("request of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (this broker serves v{min}-v{max}); upgrade the broker or pin the client's API version")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{0:?} is not served by this broker")]
    UnsupportedApi(ApiKey),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// Counts an open connection for as long as it lives.
struct ConnectionGauge(Arc<crate::metrics::BrokerMetrics>);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    broker.metrics.connections.inc();
    let _gauge = ConnectionGauge(broker.metrics.clone());
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, codec(broker.config.max_request_bytes));
    let max_in_flight = broker.config.max_in_flight_per_connection.max(1);
    let (tx, rx) = mpsc::channel::<PendingResponse>(max_in_flight);
    let writer = tokio::spawn(write_responses(
        FramedWrite::new(wr, codec(usize::MAX)),
        rx,
        max_in_flight,
    ));

    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f.freeze(),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: unreadable frame (limit {} bytes per request)", broker.config.max_request_bytes);
                break;
            }
        };
        match admit(&broker, peer, frame).await {
            Ok(pending) => {
                if tx.send(pending).await.is_err() {
                    break;
                }
            }
            Err(refusal) => {
                tracing::warn!(%peer, reason = %refusal, "closing connection");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn write_responses(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<PendingResponse>,
    max_in_flight: usize,
) {
    let mut in_flight: FuturesOrdered<PendingResponse> = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(out) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(frame) = out {
                    if sink.send(frame).await.is_err() {
                        return;
                    }
                }
            }
            next = rx.recv(), if open && in_flight.len() < max_in_flight => match next {
                Some(f) => in_flight.push_back(f),
                None => open = false,
            },
            else => return,
        }
    }
}

fn peek_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Decodes one request, runs its in-order part, and returns its response future.
async fn admit(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    frame: Bytes,
) -> Result<PendingResponse, Refusal> {
    // api_key(2) + api_version(2) + correlation_id(4) are in every header version.
    if frame.len() < 8 {
        return Err(Refusal::TooShort(frame.len()));
    }
    let key_raw = peek_i16(&frame, 0);
    let version = peek_i16(&frame, 2);
    let api = ApiKey::try_from(key_raw).map_err(|_| Refusal::UnknownApi(key_raw))?;
    let Some((min, max)) = handlers::supported_versions(api) else {
        return Err(Refusal::UnsupportedApi(api));
    };
    if api == ApiKey::ApiVersions && !(min..=max).contains(&version) {
        // Kafka answers an ApiVersions it cannot parse in v0 form, so any
        // client can learn what is supported and retry.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let resp = api_versions::unsupported_version_response();
        let out = encode_response(api, 0, correlation_id, &ResponseKind::ApiVersions(resp));
        return Ok(futures::future::ready(out).boxed());
    }
    if !(min..=max).contains(&version) {
        return Err(Refusal::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let (header, request) = decode_request(api, version, frame)?;
    let correlation_id = header.correlation_id;
    let ctx = RequestContext {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
    };
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("request", api = ?api, version, correlation_id, client_id = %ctx.client_id);
    let pending = handlers::dispatch(broker, &ctx, &header, request)
        .instrument(span.clone())
        .await;
    let metrics = broker.metrics.clone();
    Ok(async move {
        let response = pending.await;
        // Kafka's name for the API, as in its own metrics (`Produce`, `Fetch`, ...).
        metrics.observe_request(&format!("{api:?}"), started, response.as_ref());
        encode_response(api, version, correlation_id, &response?)
    }
    .instrument(span)
    .boxed())
}

fn decode_request(
    api: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<(RequestHeader, RequestKind), Refusal> {
    // The codec returns errors for malformed input; the unwind guard is a second
    // line of defence so that no byte sequence can take the broker down.
    let decoded =
        std::panic::catch_unwind(AssertUnwindSafe(move || {
            let mut buf = frame;
            let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
                .map_err(|e| Refusal::Malformed {
                    what: "request header",
                    detail: e.to_string(),
                })?;
            let request =
                RequestKind::decode(api, &mut buf, version).map_err(|e| Refusal::Malformed {
                    what: "request body",
                    detail: format!("{api:?} v{version}: {e}"),
                })?;
            Ok((header, request))
        }));
    decoded.unwrap_or_else(|_| {
        Err(Refusal::Malformed {
            what: "request",
            detail: format!("{api:?} v{version} could not be decoded"),
        })
    })
}

fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let result = header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| response.encode(&mut buf, version));
    match result {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            // A response we cannot encode is a broker bug; the client times out
            // and retries rather than reading a corrupt frame.
            tracing::error!(?api, version, error = %e, "failed to encode response");
            None
        }
    }
}
