//! The Kafka listeners: accept connections until shutdown, each with its
//! security protocol (TLS handshake first on SSL and SASL_SSL).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::kafka::connection::{self, ListenerContext};
use crate::kafka::listener_limits::ConnectionSlot;
use crate::kafka::listeners::SecurityProtocol;
use crate::metrics::ReasonLabels;
use crate::security::reload::Reloadable;
use crate::security::{tls, Principal};
use crate::Broker;

/// Lets a log line through at most once a second, so that a flood of
/// refused connections cannot flood the log.
#[derive(Default)]
struct EverySecond(Option<std::time::Instant>);

impl EverySecond {
    fn allow(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.0 {
            Some(last) if now.duration_since(last) < std::time::Duration::from_secs(1) => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

/// A bound Kafka listener.
pub struct BoundListener {
    pub socket: TcpListener,
    pub name: Arc<str>,
    pub protocol: SecurityProtocol,
    /// SSL and SASL_SSL listeners: the current TLS configuration.
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
}

/// Serves every listener until shutdown.
pub async fn serve(
    broker: Arc<Broker>,
    listeners: Vec<BoundListener>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(accept_loop(broker.clone(), l, stop.clone())))
        .collect();
    shutdown.await;
    stop.cancel();
    for l in loops {
        let _ = l.await;
    }
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: BoundListener,
    stop: tokio_util::sync::CancellationToken,
) {
    let listener = Arc::new(listener);
    let mut refusal_log = EverySecond::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, peer)) => match broker.connections.try_open(peer.ip()) {
                    Ok(slot) => {
                        tokio::spawn(open(broker.clone(), listener.clone(), stream, peer, slot));
                    }
                    Err(refusal) => {
                        // Closed at once, as Kafka closes connections over its limits.
                        drop(stream);
                        broker
                            .metrics
                            .connections_refused
                            .get_or_create(&ReasonLabels {
                                reason: refusal.reason(),
                            })
                            .inc();
                        if refusal_log.allow() {
                            tracing::warn!(%peer, reason = %refusal, "refusing connections over the limit (this line repeats at most once a second)");
                        }
                    }
                },
                Err(e) => {
                    // Out of file descriptors and similar: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Sets a connection up (the TLS handshake, on SSL listeners) and serves it.
async fn open(
    broker: Arc<Broker>,
    listener: Arc<BoundListener>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    let context = ListenerContext {
        name: listener.name.clone(),
        sasl: listener.protocol.uses_sasl(),
    };
    let Some(tls) = &listener.tls else {
        let (rd, wr) = stream.into_split();
        connection::serve(broker, rd, wr, peer, slot, context, Principal::anonymous()).await;
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.get());
    // A client that connects and never completes the handshake is closed
    // like one that stops sending a request.
    let stall = broker.config.listener.stall_timeout;
    let stream = match tokio::time::timeout(stall, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            count_closed(&broker, "tls_handshake");
            tracing::info!(%peer, listener = %listener.name, error = %e, "closing connection: TLS handshake failed");
            return;
        }
        Err(_) => {
            count_closed(&broker, "tls_handshake");
            tracing::info!(%peer, listener = %listener.name, "closing connection: TLS handshake not finished within {stall:?}");
            return;
        }
    };
    // A verified client certificate names the principal (before any SASL).
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(tls::certificate_principal)
        .map(Principal::user)
        .unwrap_or_else(Principal::anonymous);
    tracing::debug!(%peer, listener = %listener.name, %principal, "TLS connection");
    let (rd, wr) = tokio::io::split(stream);
    connection::serve(broker, rd, wr, peer, slot, context, principal).await;
}

fn count_closed(broker: &Broker, reason: &'static str) {
    broker
        .metrics
        .connections_closed
        .get_or_create(&ReasonLabels { reason })
        .inc();
}
