//! Real dependencies for Wharf's tests, each on a free port and torn down on drop: nothing on the wire is mocked.

pub mod cluster;
pub mod harness;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod redis_server;
pub mod s3;
pub mod sentry;
pub mod statsd;

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `find` every 20 ms until it gives something, and returns that; None if `timeout` passed
/// first.
pub async fn found<T>(
    timeout: std::time::Duration,
    mut find: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = find() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C. The development stack's servers run as PID 1 in their
/// containers, where nothing stops a process on SIGTERM unless it handles it.
pub async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("cannot handle SIGTERM ({e}); only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `bytes` gzipped, as a client or the worker would send them.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes)
        .and_then(|()| gz.finish())
        .unwrap_or_else(|e| panic!("gzip in memory: {e}"))
}
