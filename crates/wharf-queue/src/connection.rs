//! Opens Wharf's Redis connection: a reconnecting connection manager with bounded timeouts.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wharf_settings::RedisSettings;

use crate::QueueError;

/// A connection manager that connects lazily and reconnects by itself after an outage.
///
/// It never blocks start-up: the first command (or the start-up probe) establishes the
/// connection, and every command fails within the configured timeout while Redis is away, so
/// callers can answer 503 instead of hanging.
pub fn connect(settings: &RedisSettings) -> Result<ConnectionManager, QueueError> {
    manager(settings, settings.timeout)
}

/// One PING, bounded by the connection's timeouts.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), QueueError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

/// A connection manager for blocking reads (`XREADGROUP ... BLOCK`): its response timeout is
/// the block time plus the usual timeout, so an idle read is never mistaken for an outage.
pub fn connect_blocking(
    settings: &RedisSettings,
    block: std::time::Duration,
) -> Result<ConnectionManager, QueueError> {
    manager(settings, block + settings.timeout)
}

fn manager(
    settings: &RedisSettings,
    response_timeout: std::time::Duration,
) -> Result<ConnectionManager, QueueError> {
    let client = redis::Client::open(settings.url())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(settings.timeout);
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}
