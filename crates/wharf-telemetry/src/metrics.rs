//! The StatsD client: DogStatsD tags, metrics packed into datagrams, and nothing that can block a request.
//!
//! Metrics go into cadence's buffered UDP sink, which sends a datagram when its
//! [`DATAGRAM_BYTES`] buffer is full, and a background thread sends whatever is buffered at least
//! every [`FLUSH_INTERVAL`] so a quiet node's gauges are not held back. The socket is
//! non-blocking: when the kernel cannot take a datagram it is dropped, never waited for, so a
//! slow or absent daemon cannot slow a request down.
//!
//! Why not cadence's `QueuingMetricSink` in front: its consumer thread woke (and spun in
//! `sched_yield`) for every few metrics; without it the web role made 0.19 instead of 0.57
//! `sendto` and no `sched_yield` per request (`perf stat` syscall counts under load).

use std::io;
use std::net::UdpSocket;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cadence::{BufferedUdpMetricSink, MetricSink, NopMetricSink, SinkStats, StatsdClient};
use wharf_settings::TelemetrySettings;

/// Largest datagram: Datadog's recommended size for UDP, which fits a 1500-byte MTU unfragmented.
pub const DATAGRAM_BYTES: usize = 1432;

/// Longest a metric waits in the datagram buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Builds the metrics client; with no `STATSD_HOST` every metric is dropped without error.
///
/// Every metric carries the `env` and `role` tags.
pub fn build_metrics(settings: &TelemetrySettings, role: &'static str) -> StatsdClient {
    let prefix = settings.statsd.prefix.as_str();
    let builder = match udp_sink(settings) {
        Some(sink) => StatsdClient::builder(prefix, sink),
        None => StatsdClient::builder(prefix, NopMetricSink),
    };
    builder
        .with_tag("env", settings.environment.clone())
        .with_tag("role", role)
        .with_error_handler(
            |e| tracing::debug!(type = "metrics.error", error = %e, "metric not sent"),
        )
        .build()
}

fn udp_sink(settings: &TelemetrySettings) -> Option<FlushedSink> {
    let host = settings.statsd.host.as_ref()?;
    let socket = match UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.set_nonblocking(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(type = "metrics.setup", error = %e, "could not open a UDP socket for StatsD; metrics disabled");
            return None;
        }
    };
    match BufferedUdpMetricSink::with_capacity(
        (host.as_str(), settings.statsd.port),
        socket,
        DATAGRAM_BYTES,
    ) {
        Ok(udp) => Some(FlushedSink::start(udp)),
        Err(e) => {
            tracing::error!(type = "metrics.setup", host = %host, error = %e, "could not resolve STATSD_HOST; metrics disabled");
            None
        }
    }
}

/// A buffered UDP sink whose datagram buffer a background thread flushes every [`FLUSH_INTERVAL`];
/// the thread ends when the client owning the sink is dropped.
struct FlushedSink(Arc<BufferedUdpMetricSink>);

impl FlushedSink {
    fn start(sink: BufferedUdpMetricSink) -> Self {
        let sink = Arc::new(sink);
        let watched: Weak<BufferedUdpMetricSink> = Arc::downgrade(&sink);
        let spawned = std::thread::Builder::new()
            .name("statsd-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                match watched.upgrade() {
                    Some(sink) => {
                        let _ = sink.flush();
                    }
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::error!(type = "metrics.setup", error = %e, "could not start the StatsD flush thread; metrics are sent when the buffer fills");
        }
        Self(sink)
    }
}

impl MetricSink for FlushedSink {
    fn emit(&self, metric: &str) -> io::Result<usize> {
        self.0.emit(metric)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn stats(&self) -> SinkStats {
        self.0.stats()
    }
}

/// A tag whose values come from clients (a namespace, say): the first `max` distinct values are
/// kept and any later one is sent as `other`, so a client cannot create metric series without end.
pub struct BoundedTag {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    max: usize,
}

impl BoundedTag {
    /// The value sent for every value past the first `max`.
    pub const OTHER: &'static str = "other";

    /// A tag that passes on the first `max` distinct values; the bound holds per instance, so
    /// keep one for the life of the process.
    pub fn new(max: usize) -> Self {
        Self {
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            max,
        }
    }

    /// `value` if it is one of the first `max` distinct values seen, else [`Self::OTHER`].
    pub fn get<'a>(&self, value: &'a str) -> &'a str {
        // A poisoned lock only means another thread panicked mid-insert; the set is still usable.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(value) {
            return value;
        }
        if seen.len() < self.max {
            seen.insert(value.to_string());
            return value;
        }
        Self::OTHER
    }
}

#[cfg(test)]
mod bounded_tag_tests {
    use super::BoundedTag;

    #[test]
    fn values_past_the_bound_become_other() {
        let tag = BoundedTag::new(2);
        assert_eq!(tag.get("a"), "a");
        assert_eq!(tag.get("b"), "b");
        assert_eq!(tag.get("c"), BoundedTag::OTHER);
        assert_eq!(tag.get("a"), "a", "values already seen stay");
    }
}
