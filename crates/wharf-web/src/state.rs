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

pub struct WebState {
    pub settings: Arc<WebSettings>,
    pub enqueuer: Enqueuer,
    pub enqueue_timeout: Duration,
    /// `MAX_INFLIGHT_REQUESTS` and `MAX_INFLIGHT_BYTES`.
    pub budget: InflightBudget,
    pub backlog: BacklogGauge,
    /// `REDIS_MEMORY_HIGH_WATER_PERCENT`.
    pub memory_high_water_percent: u8,
    pub heartbeat: Arc<Heartbeat>,
    pub version: Arc<VersionInfo>,
    pub metrics: Arc<StatsdClient>,
    /// The live debug view, when `DEBUG_VIEW_TOKEN` is set.
    pub debug: Option<Arc<DebugView>>,
}
