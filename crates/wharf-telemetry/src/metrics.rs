//! The StatsD client: DogStatsD tags, a queuing sink so a slow or absent daemon never blocks a request.
//!
//! Metrics are packed into datagrams (cadence's buffered UDP sink) and the buffer is flushed at
//! least every [`FLUSH_INTERVAL`]: one datagram per metric cost the web role four `sendto` calls
//! per request (a third of its system time), while a buffer that is only sent when full would
//! hold a quiet node's gauges back for minutes.

use std::io;
use std::net::UdpSocket;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cadence::{
    BufferedUdpMetricSink, MetricSink, NopMetricSink, QueuingMetricSink, SinkStats, StatsdClient,
};
use wharf_settings::TelemetrySettings;

/// Queue capacity of the sink: metrics beyond it are dropped (and counted by cadence), never waited for.
const QUEUE_CAPACITY: usize = 64 * 1024;

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
    match BufferedUdpMetricSink::from((host.as_str(), settings.statsd.port), socket) {
        Ok(udp) => Some(FlushedSink::start(QueuingMetricSink::with_capacity(
            udp,
            QUEUE_CAPACITY,
        ))),
        Err(e) => {
            tracing::error!(type = "metrics.setup", host = %host, error = %e, "could not resolve STATSD_HOST; metrics disabled");
            None
        }
    }
}

/// A queuing sink whose datagram buffer a background thread flushes every [`FLUSH_INTERVAL`];
/// the thread ends when the client owning the sink is dropped.
struct FlushedSink(Arc<QueuingMetricSink>);

impl FlushedSink {
    fn start(sink: QueuingMetricSink) -> Self {
        let sink = Arc::new(sink);
        let watched: Weak<QueuingMetricSink> = Arc::downgrade(&sink);
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
