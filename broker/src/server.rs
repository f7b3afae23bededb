//! The Kafka listener: accepts connections until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::metrics::ReasonLabels;
use crate::{connection, Broker};

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

pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut refusal_log = EverySecond::default();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match broker.connections.try_open(peer.ip()) {
                    Ok(slot) => {
                        tokio::spawn(connection::serve(broker.clone(), stream, peer, slot));
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
