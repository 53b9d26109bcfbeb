//! The state every handler shares: settings, the queue, the heartbeat, the metrics client and the debug view.

use std::sync::Arc;
use std::time::Duration;

use cadence::StatsdClient;
use wharf_queue::Enqueuer;
use wharf_settings::WebSettings;

use crate::admission::BacklogGauge;
use crate::budget::InflightBudget;
use crate::debug_view::DebugView;
use crate::heartbeat::Heartbeat;
use crate::version::VersionInfo;

/// What handlers get from axum's `State`: one `Arc`, because axum clones the state for every
/// request and a clone of each field (reference counts bounced between cores) showed up at 1 %
/// of the web role's CPU.
pub type AppState = Arc<WebState>;

/// Everything a request may need, built once by [`crate::WebApp::build`].
pub struct WebState {
    /// The web role's settings, shared rather than copied per request.
    pub settings: Arc<WebSettings>,
    /// Puts submissions on the shard streams, with group commit and `REDIS_MIN_REPLICAS_ACK`.
    pub enqueuer: Enqueuer,
    /// Longest a submission waits for its enqueue before a 503: twice `REDIS_TIMEOUT_MS`.
    pub enqueue_timeout: Duration,
    /// `MAX_INFLIGHT_REQUESTS` and `MAX_INFLIGHT_BYTES`.
    pub budget: InflightBudget,
    /// The sampled backlog and Redis memory the 507 checks read, with no Redis call per request.
    pub backlog: BacklogGauge,
    /// `REDIS_MEMORY_HIGH_WATER_PERCENT`.
    pub memory_high_water_percent: u8,
    /// `__heartbeat__`'s cached checks.
    pub heartbeat: Arc<Heartbeat>,
    /// `__version__`'s answer, read from `VERSION_FILE` once at start-up.
    pub version: Arc<VersionInfo>,
    /// The StatsD client every request's metrics go to.
    pub metrics: Arc<StatsdClient>,
    /// The live debug view, when `DEBUG_VIEW_TOKEN` is set.
    pub debug: Option<Arc<DebugView>>,
}
