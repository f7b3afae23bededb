//! One client connection: Kafka framing, request decoding, pipelining, and
//! the listener's limits (see `listener_limits`).
//!
//! Requests are read and admitted in order (so two produces on one connection
//! get offsets in the order they were sent), and each admitted request yields
//! a future for its response. Up to `max_in_flight_per_connection` of those run
//! concurrently (a produce waiting for durability does not hold up the next
//! one), and responses are written strictly in request order.
//!
//! Memory: a request's bytes are reserved from the broker-wide request pool
//! (and this connection's share of it) before its body is read, all at once
//! and without queueing (so readers never deadlock on partial reservations),
//! and a fetch
//! reserves its response bytes from the fetch pool when it reads (not while
//! it long-polls), one fetch at a time per connection; both stay reserved
//! until the response has been written. So a
//! client that sends and never reads holds at most its share, and is closed
//! once its responses stall.
//!
//! Anything malformed closes this connection with one log line; nothing a
//! client sends can bring down the broker.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::kafka::handlers::{
    self, api_versions, sasl_authenticate, sasl_handshake, RequestContext,
};
use crate::kafka::listener_limits::{frame_deadline, ConnectionSlot, Reservation, ResponseHold};
use crate::security::sasl::{Gate, SaslSession};
use crate::security::Principal;
use crate::Broker;

/// The listener a connection came in on, as its requests see it.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    pub name: Arc<str>,
    /// Whether clients must authenticate with SASL first.
    pub sasl: bool,
}

/// What a request holds until its response is written: its bytes in the
/// request pool and, for a fetch, its response reservation.
#[derive(Default)]
struct Held {
    _request: Option<Reservation>,
    _own_share: Option<OwnedSemaphorePermit>,
    _fetch_slot: Option<OwnedSemaphorePermit>,
    /// What the handler reserved for its response (a fetch's bytes).
    response: Arc<ResponseHold>,
}

/// A response frame (length prefix included), or none (acks=0).
struct Outgoing {
    frame: Option<Bytes>,
    _held: Held,
}

type PendingResponse = BoxFuture<'static, Outgoing>;

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
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
    #[error("{0}")]
    Authentication(String),
}

/// A request frame as the broker understands it.
#[derive(Debug)]
pub enum DecodedFrame {
    Request {
        api: ApiKey,
        header: RequestHeader,
        request: Box<RequestKind>,
    },
    /// An ApiVersions of a version this broker does not parse: Kafka answers
    /// it in v0 form, so any client can learn what is supported and retry.
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Decodes one request frame (without its length prefix). Every length in it
/// is checked against the bytes left before anything is allocated (see
/// `third_party/kafka-protocol`), so any byte sequence yields a request or a
/// refusal, never more memory than the frame itself holds.
pub fn decode_frame(frame: Bytes) -> Result<DecodedFrame, Refusal> {
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
    if !(min..=max).contains(&version) {
        if api == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok(DecodedFrame::UnsupportedApiVersions { correlation_id });
        }
        return Err(Refusal::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let (header, request) = decode_request(api, version, frame)?;
    Ok(DecodedFrame::Request {
        api,
        header,
        request: Box::new(request),
    })
}

/// How much of an unauthenticated client's frame is read (and held) at a
/// time.
const UNAUTHENTICATED_READ_STEP: usize = 16 * 1024;

/// Why a connection ended, for the log line and the metric.
#[derive(Debug)]
enum Closed {
    /// The client closed it (or reset it) between requests.
    ByClient,
    Idle(Duration),
    /// A frame began but its remaining bytes stopped arriving.
    HalfSentFrame {
        have: usize,
        want: usize,
    },
    TooLarge {
        size: usize,
        limit: usize,
    },
    Refused(Refusal),
    ReadFailed(std::io::Error),
    /// The client stopped reading its responses.
    NotReading,
    /// Authentication failed (answered, then closed).
    AuthenticationFailed(String),
}

impl Closed {
    fn reason(&self) -> &'static str {
        match self {
            Closed::ByClient => "client",
            Closed::Idle(_) => "idle",
            Closed::HalfSentFrame { .. } => "stalled_request",
            Closed::TooLarge { .. } => "request_too_large",
            Closed::Refused(Refusal::Authentication(_)) => "not_authenticated",
            Closed::Refused(_) => "malformed",
            Closed::ReadFailed(_) => "read_error",
            Closed::NotReading => "not_reading",
            Closed::AuthenticationFailed(_) => "authentication_failed",
        }
    }
}

/// Counts an open connection for as long as it lives.
struct ConnectionGauge(Arc<crate::metrics::BrokerMetrics>);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Serves one connection, given its two halves (a TCP socket's, or a TLS
/// stream's), until it closes. `principal` is who the transport says the
/// client is (a TLS client certificate), before any SASL.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R, W>(
    broker: Arc<Broker>,
    mut rd: R,
    wr: W,
    peer: SocketAddr,
    slot: ConnectionSlot,
    listener: ListenerContext,
    principal: Arc<Principal>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    broker.metrics.connections.inc();
    let _gauge = ConnectionGauge(broker.metrics.clone());
    let mut session = SaslSession::new(listener.sasl, principal);
    let max_in_flight = broker.config.max_in_flight_per_connection.max(1);
    let (tx, rx) = mpsc::channel::<PendingResponse>(max_in_flight);
    // Requests admitted whose responses are not yet written: while there are
    // any, the connection is not idle.
    let unanswered = Arc::new(AtomicUsize::new(0));
    let mut writer = tokio::spawn(write_responses(
        wr,
        peer,
        rx,
        max_in_flight,
        broker.config.listener.stall_timeout,
        unanswered.clone(),
    ));
    // This connection's share of the request pool: one largest request.
    let own_share = Arc::new(Semaphore::new(broker.config.max_request_bytes.max(1)));
    // One fetch response in memory at a time, as Kafka reads one request at a
    // time from a connection.
    let fetch_slot = Arc::new(Semaphore::new(1));

    let mut writer_done = false;
    let closed = loop {
        let next = tokio::select! {
            // The writer ends only when the client stopped reading (or the
            // socket failed): nothing more is worth reading from it.
            _ = &mut writer => {
                writer_done = true;
                break Closed::NotReading;
            }
            next = read_frame(&broker, &mut rd, &unanswered, &own_share, session.authenticated()) => next,
        };
        let frame = match next {
            Ok(f) => f,
            Err(closed) => break closed,
        };
        let connection = Connection {
            peer,
            listener: &listener,
            session: &mut session,
        };
        match admit(&broker, connection, frame, &fetch_slot).await {
            Ok(Admitted {
                pending,
                then_close,
            }) => {
                unanswered.fetch_add(1, Ordering::Relaxed);
                if tx.send(pending).await.is_err() {
                    break Closed::NotReading;
                }
                if let Some(reason) = then_close {
                    break Closed::AuthenticationFailed(reason);
                }
            }
            Err(refusal) => break Closed::Refused(refusal),
        }
    };
    broker
        .metrics
        .connections_closed
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: closed.reason(),
        })
        .inc();
    match &closed {
        Closed::ByClient => {}
        Closed::Idle(after) => {
            tracing::debug!(%peer, "closing idle connection after {after:?} without requests")
        }
        Closed::HalfSentFrame { have, want } => tracing::warn!(
            %peer,
            "closing connection: a request stopped arriving after {have} of its {want} bytes (limit {:?} without progress, or too slow to arrive as a whole)",
            broker.config.listener.stall_timeout
        ),
        Closed::TooLarge { size, limit } => tracing::warn!(
            %peer,
            "closing connection: a request of {size} bytes exceeds the limit of {limit} (--max-request-bytes; before SASL authentication --sasl-server-max-receive-bytes)"
        ),
        Closed::Refused(refusal) => tracing::warn!(%peer, reason = %refusal, "closing connection"),
        Closed::AuthenticationFailed(reason) => {
            tracing::info!(%peer, listener = %listener.name, reason = %reason, "closing connection: authentication failed")
        }
        Closed::ReadFailed(e) => tracing::debug!(%peer, error = %e, "connection read failed"),
        // The writer logged why.
        Closed::NotReading => {}
    }
    drop(tx);
    if matches!(closed, Closed::ByClient | Closed::ReadFailed(_)) {
        // Kafka closes a connection the client closed; its pending responses
        // have nobody to go to.
        writer.abort();
    } else if !writer_done {
        // Answer what was admitted before the refusal, then close.
        let _ = writer.await;
    }
}

/// Reads the next request frame: waits up to the idle timeout for it to
/// begin (longer while responses are still due), checks its length, reserves
/// its bytes from this connection's share and then from the broker-wide pool
/// (each all at once, so no two readers can hold part of what the other
/// needs), and reads it with the stall timeout between bytes and one
/// deadline for the whole frame (`listener_limits::frame_deadline`): a frame
/// that claims much and stops sending, or trickles, is closed. Before SASL
/// authentication frames are small (`sasl_max_receive_bytes`) and held in a
/// pool of their own.
async fn read_frame(
    broker: &Broker,
    rd: &mut (impl AsyncRead + Unpin),
    unanswered: &AtomicUsize,
    own_share: &Arc<Semaphore>,
    authenticated: bool,
) -> Result<(Bytes, Held), Closed> {
    let limits = &broker.config.listener;
    let mut prefix = [0u8; 4];
    // `read` is cancel-safe: a timeout never loses a byte.
    loop {
        match tokio::time::timeout(limits.idle_timeout, rd.read(&mut prefix[..1])).await {
            Ok(Ok(0)) => return Err(Closed::ByClient),
            Ok(Ok(_)) => break,
            Ok(Err(e)) => return Err(Closed::ReadFailed(e)),
            Err(_) if unanswered.load(Ordering::Relaxed) > 0 => continue,
            Err(_) => return Err(Closed::Idle(limits.idle_timeout)),
        }
    }
    let prefix_deadline =
        tokio::time::Instant::now() + frame_deadline(4, limits.stall_timeout, authenticated);
    read_with_progress(
        rd,
        &mut prefix[1..],
        limits.stall_timeout,
        prefix_deadline,
        1,
        4,
    )
    .await?;
    let size = u32::from_be_bytes(prefix) as usize;
    let limit = if authenticated {
        broker.config.max_request_bytes
    } else {
        limits.sasl_max_receive_bytes
    };
    if size > limit {
        return Err(Closed::TooLarge { size, limit });
    }
    // Own share first, so a connection waiting on its own earlier requests
    // holds nothing of the pool everyone shares. Its capacity is the largest
    // request, so any one frame fits.
    let own = own_share
        .clone()
        .acquire_many_owned(u32::try_from(size.max(1)).unwrap_or(u32::MAX))
        .await
        .ok();
    if !authenticated {
        // Before authentication memory is taken as bytes arrive, so a frame
        // that claims much and sends little holds little.
        let deadline =
            tokio::time::Instant::now() + frame_deadline(size, limits.stall_timeout, false);
        let mut request = Reservation::default();
        let mut body = Vec::new();
        while body.len() < size {
            let step = (size - body.len()).min(UNAUTHENTICATED_READ_STEP);
            request.absorb(
                broker
                    .unauthenticated_request_memory
                    .reserve_whole(step)
                    .await,
            );
            let at = body.len();
            body.resize(at + step, 0);
            read_with_progress(
                rd,
                &mut body[at..],
                limits.stall_timeout,
                deadline,
                4 + at,
                size + 4,
            )
            .await?;
        }
        return Ok((
            Bytes::from(body),
            Held {
                _request: Some(request),
                _own_share: own,
                ..Held::default()
            },
        ));
    }
    let request = broker.request_memory.reserve_whole(size).await;
    // The deadline counts from when the bytes are reserved: waiting for
    // room is the broker's doing, not the client's.
    let deadline =
        tokio::time::Instant::now() + frame_deadline(size, limits.stall_timeout, authenticated);
    let mut body = vec![0u8; size];
    read_with_progress(rd, &mut body, limits.stall_timeout, deadline, 4, size + 4).await?;
    Ok((
        Bytes::from(body),
        Held {
            _request: Some(request),
            _own_share: own,
            ..Held::default()
        },
    ))
}

/// Fills `buf`, failing when no byte arrives for `stall` or `deadline`
/// passes. `at` is where `buf` starts within a frame of `frame_len` bytes,
/// for the log line.
async fn read_with_progress(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    stall: Duration,
    deadline: tokio::time::Instant,
    at: usize,
    frame_len: usize,
) -> Result<(), Closed> {
    let mut have = 0;
    while have < buf.len() {
        let until = deadline.min(tokio::time::Instant::now() + stall);
        match tokio::time::timeout_at(until, rd.read(&mut buf[have..])).await {
            Ok(Ok(0)) => return Err(Closed::ByClient),
            Ok(Ok(n)) => have += n,
            Ok(Err(e)) => return Err(Closed::ReadFailed(e)),
            Err(_) => {
                return Err(Closed::HalfSentFrame {
                    have: at + have,
                    want: frame_len,
                })
            }
        }
    }
    Ok(())
}

async fn write_responses(
    mut wr: impl AsyncWrite + Unpin,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<PendingResponse>,
    max_in_flight: usize,
    stall: Duration,
    unanswered: Arc<AtomicUsize>,
) {
    let mut in_flight: FuturesOrdered<PendingResponse> = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(out) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(frame) = &out.frame {
                    if let Err(e) = write_with_progress(&mut wr, frame, stall).await {
                        if e.kind() == std::io::ErrorKind::TimedOut {
                            tracing::warn!(%peer, error = %e, "closing connection: the client does not read its responses");
                        }
                        return;
                    }
                }
                unanswered.fetch_sub(1, Ordering::Relaxed);
            }
            next = rx.recv(), if open && in_flight.len() < max_in_flight => match next {
                Some(f) => in_flight.push_back(f),
                None => open = false,
            },
            else => return,
        }
    }
}

/// Writes `frame`, failing when the client accepts no byte for `stall`.
async fn write_with_progress(
    wr: &mut (impl AsyncWrite + Unpin),
    frame: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < frame.len() {
        match tokio::time::timeout(stall, wr.write(&frame[sent..])).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{sent} of {} response bytes accepted, then none for {stall:?}",
                        frame.len()
                    ),
                ))
            }
        }
    }
    // A TLS stream holds written bytes until flushed; a socket has nothing to flush.
    match tokio::time::timeout(stall, wr.flush()).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client accepted none of the last response bytes for {stall:?}"),
        )),
    }
}

fn peek_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// What admitting a request needs of its connection.
struct Connection<'a> {
    peer: SocketAddr,
    listener: &'a ListenerContext,
    session: &'a mut SaslSession,
}

/// An admitted request: its response to come and, after a failed
/// authentication, why the connection closes once it is written.
struct Admitted {
    pending: PendingResponse,
    then_close: Option<String>,
}

impl Admitted {
    fn now(frame: Option<Bytes>, held: Held) -> Self {
        Self {
            pending: futures::future::ready(Outgoing { frame, _held: held }).boxed(),
            then_close: None,
        }
    }
}

/// Holds a failed authentication's answer back by Kafka's
/// `connection.failed.authentication.delay.ms`, which slows password guessing.
fn delayed(pending: handlers::Deferred, delay: Duration) -> handlers::Deferred {
    async move {
        tokio::time::sleep(delay).await;
        pending.await
    }
    .boxed()
}

/// Decodes one request, runs its in-order part, and returns its response future.
async fn admit(
    broker: &Arc<Broker>,
    connection: Connection<'_>,
    (frame, mut held): (Bytes, Held),
    fetch_slot: &Arc<Semaphore>,
) -> Result<Admitted, Refusal> {
    let Connection {
        peer,
        listener,
        session,
    } = connection;
    if session.expects_raw_token() {
        return Ok(raw_sasl_token(broker, session, frame, held).await);
    }
    let (api, header, request) = match decode_frame(frame)? {
        DecodedFrame::Request {
            api,
            header,
            request,
        } => (api, header, *request),
        DecodedFrame::UnsupportedApiVersions { correlation_id } => {
            let resp = api_versions::unsupported_version_response();
            let frame = encode_response(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                &ResponseKind::ApiVersions(resp),
            );
            return Ok(Admitted::now(frame, held));
        }
    };
    if let Gate::Close(reason) = session.gate(api, std::time::Instant::now()) {
        return Err(Refusal::Authentication(reason));
    }
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    if matches!(request, RequestKind::Fetch(_)) {
        // Waits while this connection's previous fetch response is unwritten.
        held._fetch_slot = fetch_slot.clone().acquire_owned().await.ok();
    }
    let ctx = RequestContext {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        hold: held.response.clone(),
        principal: session.principal().clone(),
        listener: listener.name.clone(),
    };
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("request", api = ?api, version, correlation_id, client_id = %ctx.client_id);
    let sasl = &broker.config.sasl;
    // SASL requests change this connection's state, so they are handled
    // here, in order, rather than by `dispatch`.
    let (pending, then_close) = match request {
        RequestKind::SaslHandshake(r) => {
            let (response, then_close) =
                sasl_handshake::handle(session, r, version, sasl.enabled(&listener.name));
            (handlers::ready(response), then_close)
        }
        RequestKind::SaslAuthenticate(r) => {
            let (response, then_close) =
                sasl_authenticate::handle(session, r, version, sasl, &broker.metadata)
                    .instrument(span.clone())
                    .await;
            let pending = handlers::ready(response);
            match then_close {
                Some(_) => (
                    delayed(pending, sasl.failed_authentication_delay),
                    then_close,
                ),
                None => (pending, None),
            }
        }
        request => (
            handlers::dispatch(broker, &ctx, &header, request)
                .instrument(span.clone())
                .await,
            None,
        ),
    };
    let metrics = broker.metrics.clone();
    let pending = async move {
        let response = pending.await;
        // Kafka's name for the API, as in its own metrics (`Produce`, `Fetch`, ...).
        metrics.observe_request(&format!("{api:?}"), started, response.as_ref());
        let frame = response.and_then(|r| encode_response(api, version, correlation_id, &r));
        Outgoing { frame, _held: held }
    }
    .instrument(span)
    .boxed();
    Ok(Admitted {
        pending,
        then_close,
    })
}

/// After SaslHandshake v0 the client sends bare SASL tokens, each framed by
/// its length only, and reads the server's the same way; a failure closes
/// the connection without an answer (there is no field to carry one).
async fn raw_sasl_token(
    broker: &Broker,
    session: &mut SaslSession,
    token: Bytes,
    held: Held,
) -> Admitted {
    let sasl = &broker.config.sasl;
    match session.authenticate(&token, sasl, &broker.metadata).await {
        Ok(step) => {
            let bytes = step.into_bytes();
            let mut frame = BytesMut::with_capacity(4 + bytes.len());
            frame.put_u32(bytes.len() as u32);
            frame.put_slice(&bytes);
            Admitted::now(Some(frame.freeze()), held)
        }
        Err(failure) => Admitted {
            pending: delayed(
                futures::future::ready(None).boxed(),
                sasl.failed_authentication_delay,
            )
            .map(|_| Outgoing {
                frame: None,
                _held: held,
            })
            .boxed(),
            then_close: Some(failure.message),
        },
    }
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
                    detail: format!("{e:#}"),
                })?;
            let request =
                RequestKind::decode(api, &mut buf, version).map_err(|e| Refusal::Malformed {
                    what: "request body",
                    detail: format!("{api:?} v{version}: {e:#}"),
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
    // The length prefix, filled in once the size is known: one buffer, one write.
    buf.put_u32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let result = header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| response.encode(&mut buf, version));
    match result {
        Ok(()) => {
            let Ok(size) = u32::try_from(buf.len() - 4) else {
                tracing::error!(
                    ?api,
                    version,
                    bytes = buf.len(),
                    "response too large to frame"
                );
                return None;
            };
            buf[..4].copy_from_slice(&size.to_be_bytes());
            Some(buf.freeze())
        }
        Err(e) => {
            // A response we cannot encode is a broker bug; the client times out
            // and retries rather than reading a corrupt frame.
            tracing::error!(?api, version, error = %e, "failed to encode response");
            None
        }
    }
}
