//! The flusher's Unix-socket server: framed, pipelined, one task per request.

use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::protocol::{self, frame_codec, ErrorKind, RemoteError};
use crate::service::FlusherService;

/// Binds the socket, replacing a stale socket file left by a killed process.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves connections until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    service: Arc<FlusherService>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, service.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a flusher connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves one connection until the peer closes it.
pub async fn serve_connection(stream: UnixStream, service: Arc<FlusherService>) {
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, frame_codec());
    let mut sink = FramedWrite::new(wr, frame_codec());
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(1024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = sink.send(frame).await {
                tracing::debug!(error = %e, "flusher connection closed while answering");
                break;
            }
        }
    });
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f.freeze(),
            Err(e) => {
                tracing::warn!(error = %e, "bad frame on flusher socket; closing connection");
                break;
            }
        };
        match protocol::decode_request(frame) {
            Ok((id, req)) => {
                let service = service.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let op = req.op();
                    let result = service.handle(req).await;
                    if let Err(e) = &result {
                        tracing::warn!(request_id = id, ?op, error = %e, "flusher request failed");
                    }
                    let _ = tx.send(protocol::encode_response(id, op, &result)).await;
                });
            }
            Err((Some(id), e)) => {
                tracing::warn!(request_id = id, error = %e, "malformed flusher request");
                let err = Err(RemoteError {
                    kind: ErrorKind::BadRequest,
                    message: e.to_string(),
                });
                let _ = tx
                    .send(protocol::encode_response(id, protocol::Op::Health, &err))
                    .await;
            }
            Err((None, e)) => {
                tracing::warn!(error = %e, "unreadable flusher request header; closing connection");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
