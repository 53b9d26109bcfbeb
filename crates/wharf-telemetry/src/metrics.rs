//! The StatsD client: DogStatsD tags, a queuing sink so a slow or absent daemon never blocks a request.
//!
//! One datagram per metric (not cadence's buffered sink): a buffered sink holds metrics back until
//! its buffer fills, which on a quiet node means gauges arrive minutes late.

use std::net::UdpSocket;

use cadence::{NopMetricSink, QueuingMetricSink, StatsdClient, UdpMetricSink};
use wharf_settings::TelemetrySettings;

/// Queue capacity of the sink: metrics beyond it are dropped (and counted by cadence), never waited for.
const QUEUE_CAPACITY: usize = 64 * 1024;

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

fn udp_sink(settings: &TelemetrySettings) -> Option<QueuingMetricSink> {
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
    match UdpMetricSink::from((host.as_str(), settings.statsd.port), socket) {
        Ok(udp) => Some(QueuingMetricSink::with_capacity(udp, QUEUE_CAPACITY)),
        Err(e) => {
            tracing::error!(type = "metrics.setup", host = %host, error = %e, "could not resolve STATSD_HOST; metrics disabled");
            None
        }
    }
}
