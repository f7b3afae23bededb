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

use crate::protocol::{self, ErrorKind, RemoteError, Request, Response};
use crate::server::frame_codec;

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
