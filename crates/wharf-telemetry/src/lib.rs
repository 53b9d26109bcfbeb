//! Wharf's telemetry: MozLog JSON logs on stdout, Sentry with header scrubbing, and DogStatsD metrics that never block.

pub mod metrics;
pub mod mozlog;
pub mod sentry_setup;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use wharf_settings::{LogFormat, TelemetrySettings};

pub use cadence::StatsdClient;
pub use metrics::build_metrics;

/// Keeps Sentry alive for the life of the process; dropping it flushes pending events.
pub struct TelemetryGuard {
    _sentry: Option<sentry::ClientInitGuard>,
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("LOG_LEVEL `{0}` is not a valid tracing filter: {1}")]
    Filter(String, String),
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
    let output = match settings.log_format {
        LogFormat::Json => mozlog::MozLogLayer::stdout("wharf", role).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
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
    Ok(TelemetryGuard { _sentry: sentry })
}
