//! The HTTP listener: accepts connections under a cap, serves HTTP/1.1 (with upgrades, for the
//! agent WebSocket) under read deadlines, and drains on shutdown.
//!
//! `axum::serve` sets no header or body deadline and no connection cap, so clients that open a
//! connection and then say nothing (or trickle a byte at a time) could hold every file
//! descriptor until `/healthz` stopped answering. Here:
//! - a request head must arrive within `header_timeout`; the same deadline bounds how long a
//!   kept-alive connection may sit idle before its next request (hyper times the wait for a
//!   head, and an idle connection is one waiting for a head);
//! - a request body must arrive whole within `body_timeout` of its head ([`DeadlineBody`]);
//!   the JSON extractor answers 408 when it does not;
//! - at most `max_connections` are being served at once: the next is answered 503 in the
//!   API's error shape and closed, so a flood costs the brain one short write each;
//! - [`connection_cap`] lifts the soft `RLIMIT_NOFILE` to the hard limit at start and keeps
//!   the cap below it.
//!
//! With `--tls-cert`, each accepted connection is a TLS handshake first (within the header
//! deadline, so a client that stalls mid-handshake is closed like one that stalls mid-head),
//! then the same HTTP/1.1 conversation over the decrypted stream.
//!
//! A connection's slot is released when its HTTP conversation ends. An agent's WebSocket
//! outlives it (hyper hands the socket over on upgrade); those are authenticated and few.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The deadlines and the cap (see the module header).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request head to arrive, and the longest idle wait between requests.
    pub header_timeout: Duration,
    /// Time for a request body to arrive whole, from its head.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// What a refused connection is told before it is closed.
const OVERLOADED: &str = "{\"error\":{\"code\":\"overloaded\",\"message\":\"the brain is serving \
as many connections as it allows; retry shortly\"}}";

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight, and returns when all have closed (the caller bounds
/// that wait with its shutdown grace).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver: `closed()` resolves when the last one ends.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: the condition passes as connections close; a hot
                    // retry loop would only burn the core they need.
                    tracing::warn!(%err, "cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle delay: agent frames and API answers are small, and waiting 40 ms to
        // coalesce them would dominate a command's round trip.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(%err, "cannot set TCP_NODELAY");
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, stop) = (app.clone(), stop_rx.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(tcp, addr, app, limits, stop).await,
                        Some(tls) => {
                            match tokio::time::timeout(limits.header_timeout, tls.accept(tcp)).await
                            {
                                Ok(Ok(stream)) => {
                                    serve_connection(stream, addr, app, limits, stop).await;
                                }
                                Ok(Err(err)) => {
                                    tracing::debug!(%err, %addr, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                            }
                        }
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(refuse(tcp));
            }
        }
    }
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Serves one connection until it closes, shutting it down gracefully when told to stop.
async fn serve_connection<Io>(
    io: Io,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = app.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(addr));
        request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, %addr, "connection ended with an error");
                }
                return;
            }
            changed = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers 503 and closes, without reading the request: a refused client costs one short
/// write, bounded in time so a client that never reads cannot hold the task.
async fn refuse(mut tcp: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{OVERLOADED}",
        OVERLOADED.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// File descriptors kept back from the connection cap for the database pool, key and
/// checkpoint files, and the agent sessions that outlive their HTTP slot.
const RESERVED_FILES: u64 = 256;

/// The connection cap to serve with: raises the open-file limit (see
/// [`raise_open_file_limit`]), then keeps `asked` below it, less [`RESERVED_FILES`], saying so
/// when it had to lower it.
pub fn connection_cap(asked: u64) -> usize {
    let cap = match raise_open_file_limit() {
        Some(files) if files.saturating_sub(RESERVED_FILES) < asked => {
            let capped = files.saturating_sub(RESERVED_FILES).max(16);
            tracing::warn!(
                open_files = files,
                asked,
                capped,
                "the open-file limit leaves room for fewer connections than --max-connections; capping"
            );
            capped
        }
        _ => asked,
    };
    cap as usize
}

/// Raises the soft open-file limit to the hard limit (a default soft limit of 1,024 is far
/// below what a brain holding thousands of agent sessions and clients needs) and returns the
/// limit now in force, if it can be read.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let wanted = limit.maximum;
        match setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: wanted,
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => limit.current = wanted,
            Err(err) => tracing::warn!(%err, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

/// Why a body was cut off: it did not arrive within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] once its deadline passes. The timer is armed
/// only when the body first makes the reader wait, so bodiless requests cost nothing.
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an error (an extractor's rejection, say) was caused by a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cause = err.source();
    }
    false
}
