//! Sentry client set-up: release and environment, panics captured, personal data scrubbed before sending, and nothing that can stall a request when Sentry is slow or gone.

use std::borrow::Cow;
use std::panic::PanicHookInfo;
use std::sync::{Arc, Once};
use std::time::Duration;

use sentry::integrations::panic::PanicIntegration;
use sentry::protocol::Event;
use sentry::transports::ReqwestHttpTransportOptions;
use sentry::{Transport, TransportFactory, TransportOptions};
use wharf_settings::TelemetrySettings;

/// The only request headers an event may carry: what helps to reproduce a request and says
/// nothing about who sent it. Everything else (credentials, cookies, the many headers proxies and
/// CDNs put client addresses in, cloud session tokens) is dropped, including headers nobody has
/// invented yet.
pub const ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "user-agent",
    "x-request-id",
];

/// Longest one request to Sentry may take, connecting included. The transport sends from one
/// thread, one event at a time: without a limit, one request to a host that never answers
/// holds every later event, and the client's shutdown flush, for ever.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the client waits at exit for queued events to go.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts Sentry when a DSN is configured; `None` (and no cost) otherwise.
pub fn init(settings: &TelemetrySettings) -> Option<sentry::ClientInitGuard> {
    let dsn = settings.sentry_dsn.as_ref()?;
    let options = sentry::ClientOptions::new()
        .dsn(dsn.expose())
        .release(Cow::Owned(format!("wharf@{}", env!("CARGO_PKG_VERSION"))))
        .environment(Cow::Owned(settings.environment.clone()))
        .send_default_pii(false)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .transport(BoundedTransport)
        .before_send(|event| Some(scrub(event)));
    // Rust's own hook, taken before sentry's integration wraps it (both only the first time).
    static HOOKED: Once = Once::new();
    let mut previous = None;
    HOOKED.call_once(|| previous = Some(std::panic::take_hook()));
    let guard = sentry::init(options);
    if let Some(previous) = previous {
        capture_panics_without_flushing(previous);
    }
    Some(guard)
}

/// sentry's reqwest transport, with a time limit on each request.
#[derive(Clone, Copy)]
struct BoundedTransport;

impl TransportFactory for BoundedTransport {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        let transport = ReqwestHttpTransportOptions::from(options);
        let bounded = reqwest::Client::builder()
            .connect_timeout(SEND_TIMEOUT)
            .timeout(SEND_TIMEOUT)
            .build();
        match bounded {
            Ok(client) => Arc::new(transport.with_client(client).build()),
            // Only a broken TLS set-up fails here; sentry's own client is then no worse.
            Err(_) => Arc::new(transport.build()),
        }
    }
}

/// Replaces sentry's panic hook, which flushes the transport on the panicking thread: that
/// blocks a runtime worker whenever Sentry is slow or unreachable, and once the transport's
/// queue is full it blocks for ever (a dead Sentry stopped the web role within a second of
/// panics, bench/blackhole.py). Capturing only queues the event, or drops it when the queue is
/// full; `previous` (Rust's own hook, printing the panic) still runs after it.
fn capture_panics_without_flushing(previous: Box<dyn Fn(&PanicHookInfo<'_>) + Send + Sync>) {
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| {
        sentry::with_integration(|integration: &PanicIntegration, hub| {
            hub.capture_event(integration.event_from_panic_info(info));
        });
        previous(info);
    }));
}

/// Keeps only allow-listed headers, and drops the query string, cookies, body and environment
/// of the request, and the user's address. Runs on every event, after sentry-tower's own
/// filtering (with `send_default_pii` off), which is a deny-list.
pub fn scrub(mut event: Event<'static>) -> Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| ALLOWED_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        if let Some(url) = request.url.as_mut() {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        request.query_string = None;
        request.cookies = None;
        request.data = None;
        request.env.clear();
    }
    if let Some(user) = event.user.as_mut() {
        user.ip_address = None;
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry::protocol::{Request, User};

    #[test]
    fn scrub_keeps_only_allowed_headers_and_drops_the_query() {
        let mut request = Request {
            url: "http://edge.example/__error__?token=s3cret".parse().ok(),
            query_string: Some("token=s3cret".into()),
            ..Default::default()
        };
        for (k, v) in [
            ("Authorization", "Bearer t"),
            ("Cookie", "a=b"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("True-Client-IP", "1.2.3.4"),
            ("X-Client-IP", "1.2.3.4"),
            ("CF-Connecting-IP", "1.2.3.4"),
            ("X-Amz-Security-Token", "t"),
            ("X-Error-Token", "s3cret"),
            ("User-Agent", "pingsender/1.0"),
        ] {
            request.headers.insert(k.into(), v.into());
        }
        request.env.insert("REMOTE_ADDR".into(), "1.2.3.4".into());
        let event = Event {
            request: Some(request),
            user: Some(User {
                ip_address: Some(sentry::protocol::IpAddress::Auto),
                ..Default::default()
            }),
            ..Default::default()
        };
        let clean = scrub(event);
        let request = clean.request.unwrap();
        assert_eq!(
            request.headers.keys().collect::<Vec<_>>(),
            ["User-Agent"],
            "only allow-listed headers stay"
        );
        assert_eq!(
            request.url.unwrap().as_str(),
            "http://edge.example/__error__"
        );
        assert!(request.query_string.is_none());
        assert!(request.env.is_empty());
        assert!(clean.user.unwrap().ip_address.is_none());
    }
}
