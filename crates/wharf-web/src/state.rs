//! The state every handler shares: settings, the queue, the heartbeat and the metrics client.

use std::sync::Arc;
use std::time::Duration;

use cadence::StatsdClient;
use wharf_queue::Enqueuer;
use wharf_settings::WebSettings;

use crate::admission::BacklogGauge;
use crate::heartbeat::Heartbeat;
use crate::version::VersionInfo;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<WebSettings>,
    pub enqueuer: Enqueuer,
    pub enqueue_timeout: Duration,
    pub backlog: BacklogGauge,
    pub heartbeat: Arc<Heartbeat>,
    pub version: Arc<VersionInfo>,
    pub metrics: Arc<StatsdClient>,
}
