//! The broker's side of the flusher socket: a pipelined client that reconnects
//! by itself. Each call has a deadline; a lost connection fails the calls in
//! flight with `Unavailable`, which the broker reports as a retriable error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{self as protocol, frame_codec, ErrorKind, RemoteError, Request, Response};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, RemoteError>>>>>;

struct Connection {
    tx: mpsc::Sender<bytes::Bytes>,
    pending: Pending,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

pub struct FlusherClient {
    path: PathBuf,
    timeout: Duration,
    next_id: AtomicU64,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

fn unavailable(message: impl Into<String>) -> RemoteError {
    RemoteError {
        kind: ErrorKind::Unavailable,
        message: message.into(),
    }
}

impl FlusherClient {
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            path: path.into(),
            timeout,
            next_id: AtomicU64::new(1),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    pub fn socket_path(&self) -> &std::path::Path {
        &self.path
    }

    async fn connect(&self) -> Result<Connection, RemoteError> {
        let stream = UnixStream::connect(&self.path).await.map_err(|e| {
            unavailable(format!(
                "cannot connect to the flusher at {}: {e}; is the sidecar running?",
                self.path.display()
            ))
        })?;
        let (rd, wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(1024);
        let mut sink = FramedWrite::new(wr, frame_codec());
        let writer_alive = alive.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            writer_alive.store(false, Ordering::Release);
        });
        let reader_pending = pending.clone();
        let reader_alive = alive.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(rd, frame_codec());
            while let Some(Ok(frame)) = frames.next().await {
                match protocol::decode_response(frame.freeze()) {
                    Ok((id, result)) => {
                        let waiter = reader_pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "unreadable frame from the flusher; reconnecting");
                        break;
                    }
                }
            }
            reader_alive.store(false, Ordering::Release);
            // Fail everything still waiting on this connection.
            let waiters: Vec<_> = reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .collect();
            for (_, w) in waiters {
                let _ = w.send(Err(unavailable("connection to the flusher was lost")));
            }
        });
        Ok(Connection { tx, pending, alive })
    }

    /// Sends one request and waits for its response (or the deadline).
    pub async fn call(&self, req: Request) -> Result<Response, RemoteError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = protocol::encode_request(id, &req);
        let (done_tx, done_rx) = oneshot::channel();
        {
            let mut guard = self.conn.lock().await;
            let stale = guard
                .as_ref()
                .map(|c| !c.alive.load(Ordering::Acquire))
                .unwrap_or(true);
            if stale {
                *guard = Some(self.connect().await?);
            }
            let conn = guard
                .as_ref()
                .ok_or_else(|| unavailable("no flusher connection"))?;
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, done_tx);
            if conn.tx.send(frame).await.is_err() {
                conn.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                *guard = None;
                return Err(unavailable("connection to the flusher was lost"));
            }
        }
        match tokio::time::timeout(self.timeout, done_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable("connection to the flusher was lost")),
            Err(_) => {
                if let Some(c) = self.conn.lock().await.as_ref() {
                    c.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                }
                Err(unavailable(format!(
                    "the flusher did not answer within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

/// One partition of one incarnation of a topic: a topic re-created under
/// the same name has another id, and never sees the old one's intake parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionId {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
}

/// Every operation of the protocol, typed (see [`protocol::LogStorage`] and
/// [`protocol::MaintenanceStorage`]), goes through [`FlusherClient::call`].
#[async_trait::async_trait]
impl protocol::Transport for FlusherClient {
    async fn call(&self, request: Request) -> Result<Response, RemoteError> {
        FlusherClient::call(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{request, Health, HealthState, LogStorage};

    /// A flusher that answers every request with a health report.
    async fn confused_flusher(path: &std::path::Path) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (rd, wr) = stream.into_split();
            let mut frames = FramedRead::new(rd, frame_codec());
            let mut sink = FramedWrite::new(wr, frame_codec());
            while let Some(Ok(frame)) = frames.next().await {
                let Ok((id, _)) = protocol::decode_request(frame.freeze()) else {
                    return;
                };
                let answer = Ok(Response::Health(Health {
                    state: HealthState::Healthy,
                    detail: String::new(),
                }));
                let frame = protocol::encode_response(id, protocol::Op::Health, &answer);
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
        });
    }

    #[tokio::test]
    async fn an_answer_to_another_question_is_an_error_not_an_empty_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sock");
        confused_flusher(&path).await;
        let client = FlusherClient::new(&path, Duration::from_secs(5));
        let err = client
            .producer_batches(request::ProducerBatches {
                topic: "t".into(),
                topic_id: [0; 16],
                partition: 0,
                max_bytes: 1 << 20,
            })
            .await
            .expect_err("a health report was taken for an empty producer table");
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(
            err.message.contains("ProducerBatches with Health"),
            "{}",
            err.message
        );
        let err = client
            .read_range(request::ReadRange {
                topic: "t".into(),
                topic_id: [0; 16],
                partition: 0,
                offset: 0,
                max_bytes: 1024,
            })
            .await
            .expect_err("a health report was taken for an empty range");
        assert!(err.message.contains("ReadRange"), "{}", err.message);
    }
}
