//! The listener: accepts connections up to a cap and serves them with hyper (HTTP/1.1, h2c only when enabled), a header-read timeout and bounded buffers, then drains them on shutdown.
//!
//! `axum::serve` sets no header timer, so a client trickling header bytes could hold a
//! connection for ever, and it answers HTTP/2 prior knowledge on a cleartext port. Serving each
//! connection with hyper's builder directly puts those limits in one place, and lets each
//! connection's bytes pass through [`crate::framing`] on the way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::framing::{Ambiguous, FramedBothWays, Watched, MAX_HEADERS, MAX_HEAD_BYTES};

/// After a failed `accept` (out of file descriptors, say), wait this long rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// `HEADER_TIMEOUT_MS`: HTTP/1 connections that take longer to send a request head (or idle
    /// longer between requests) are closed.
    pub header_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once; further clients wait in the accept queue.
    pub max_connections: usize,
    /// `HTTP2_CLEARTEXT`: also serve HTTP/2 with prior knowledge; off, HTTP/1 only.
    pub http2_cleartext: bool,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and returns
/// once every open connection has finished its requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: further clients wait in the kernel's accept queue, which
        // costs this process nothing.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(type = "web.accept", error = %e, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Answers are small and written whole: send them at once.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let ambiguous = Ambiguous::default();
        let stream = Watched::new(stream, ambiguous.clone());
        let ordinal = Arc::new(AtomicU64::new(0));
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let router = router.clone();
            // HTTP/1.1 serves a connection's requests in order, so the n-th call is the n-th
            // request the scanner saw.
            let refused = ambiguous.take(ordinal.fetch_add(1, Ordering::Relaxed));
            async move {
                if refused {
                    request.extensions_mut().insert(FramedBothWays);
                }
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                router.oneshot(request).await
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or sends garbage ends its connection; nothing to report.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX));
    if limits.http2_cleartext {
        builder
    } else {
        builder.http1_only()
    }
}
