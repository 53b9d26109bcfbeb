//! Wharf's telemetry: MozLog JSON logs on stdout, Sentry with header scrubbing, and DogStatsD metrics that never block.

pub mod batched_stdout;
pub mod metrics;
pub mod mozlog;
pub mod sentry_setup;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use wharf_settings::{LogFormat, TelemetrySettings};

use crate::batched_stdout::{BatchedStdout, BatchedStdoutGuard};

pub use cadence::StatsdClient;
pub use metrics::build_metrics;

/// Log bytes that may wait for stdout; lines beyond it are dropped (and counted on stderr) rather
/// than block a request. Small enough that a stalled log collector cannot take the web role past
/// its memory budget, large enough for a second of request.summary lines at full load.
const LOG_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Keeps Sentry and the log writer alive for the life of the process; dropping it flushes pending
/// log lines and Sentry events.
pub struct TelemetryGuard {
    // Field order is drop order: the last log lines are written before Sentry shuts down.
    _log_writer: Option<BatchedStdoutGuard>,
    _sentry: Option<sentry::ClientInitGuard>,
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `LOG_LEVEL` (the directive, then the parser's complaint) is not a filter; loading the
    /// settings already refuses one, so only settings built some other way get here.
    #[error("LOG_LEVEL `{0}` is not a valid tracing filter: {1}")]
    Filter(String, String),
    /// [`init`] was already called in this process, or something else installed a subscriber.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs logging and Sentry for `role` ("web", "worker", ...); call once, before anything logs.
pub fn init(
    settings: &TelemetrySettings,
    role: &'static str,
) -> Result<TelemetryGuard, TelemetryError> {
    let sentry = sentry_setup::init(settings);
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| TelemetryError::Filter(settings.log_level.clone(), e.to_string()))?;
    let (output, log_writer) = match settings.log_format {
        // Lines reach stdout from a writer thread, many per `write`, so a request never waits
        // on a syscall for its request.summary line (nor on a stdout that stopped draining).
        LogFormat::Json => match BatchedStdout::start(std::io::stdout(), LOG_BUFFER_BYTES) {
            Ok((writer, guard)) => (
                mozlog::MozLogLayer::new("wharf", role, move || writer.clone()).boxed(),
                Some(guard),
            ),
            Err(e) => {
                eprintln!("wharf: no log writer thread ({e}); writing log lines directly");
                (
                    mozlog::MozLogLayer::new("wharf", role, std::io::stdout).boxed(),
                    None,
                )
            }
        },
        LogFormat::Pretty => (tracing_subscriber::fmt::layer().boxed(), None),
    };
    tracing_subscriber::registry()
        .with(output.with_filter(filter))
        // Both Sentry layers take every event they are given: the filters decide what is sent.
        // Breadcrumbs from warnings only: an INFO breadcrumb per request.summary line cost the
        // web role a sixth of its instructions per request.
        .with(sentry::integrations::tracing::ErrorLayer::new().with_filter(LevelFilter::ERROR))
        .with(sentry::integrations::tracing::BreadcrumbLayer::new().with_filter(LevelFilter::WARN))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard {
        _log_writer: log_writer,
        _sentry: sentry,
    })
}
