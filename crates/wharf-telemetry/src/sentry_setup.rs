//! Sentry client set-up: release and environment, panics captured, personal data scrubbed before sending, and nothing that can stall a request when Sentry is slow or gone.
//!
//! What an event may say about a request passes two filters (`send_default_pii` is off):
//!
//! 1. sentry-tower's `SentryHttpLayer`, which wraps the Dockerflow routes only (`/submit` goes
//!    without, crates/wharf-web/src/lib.rs), puts the method, URL and headers in the event. It
//!    drops sentry-core's deny-list of headers (`Authorization`, `Proxy-Authorization`,
//!    `Cookie`, `Set-Cookie`, `X-Forwarded-For`, `X-Real-IP`, `X-Api-Key`) and header values
//!    marked sensitive, and replaces a user name or password in the URL with `[Filtered]`. It
//!    keeps every other header and the URL's query string. It fills nothing else: no cookies,
//!    body, environment or user, and the SDK never sets a client address.
//! 2. [`scrub`], sentry's `before_send` for every event, removes what that deny-list lets
//!    through: every header not in [`ALLOWED_HEADERS`] (client addresses under other names such
//!    as `Forwarded`, `True-Client-IP`, `CF-Connecting-IP`, cloud session tokens such as
//!    `X-Amz-Security-Token`, Wharf's own `X-Error-Token`, and headers yet to be invented), and
//!    the URL's query string and fragment (the old `?token=` form of `__error__`).
//!
//! Were `send_default_pii` ever turned on, the first filter would keep every header and URL
//! credentials; the second would still let only the allow-list and no query through. The
//! `filters_of_sentry_tower_and_of_scrub` test pins both descriptions to the code.

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

/// Keeps only [`ALLOWED_HEADERS`] and drops the URL's query string and fragment: what
/// sentry-tower's own filtering (the module documentation) lets through.
pub fn scrub(mut event: Event<'static>) -> Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| ALLOWED_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        if let Some(url) = request.url.as_mut() {
            url.set_query(None);
            url.set_fragment(None);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use sentry::{ClientOptions, Envelope, Hub, Scope};
    use tower::{Layer, Service};

    /// Keeps the events a client sends.
    struct Captured(Mutex<Vec<Event<'static>>>);

    impl Transport for Captured {
        fn send_envelope(&self, envelope: Envelope) {
            if let (Some(event), Ok(mut events)) = (envelope.event(), self.0.lock()) {
                events.push(event.clone());
            }
        }
    }

    /// The event a request to the Dockerflow routes raises, as sentry-tower's layer (pii off)
    /// records it, with `before_send` applied.
    fn event_for(
        request: http::Request<()>,
        before_send: Option<fn(Event<'static>) -> Event<'static>>,
    ) -> Event<'static> {
        let captured = Arc::new(Captured(Mutex::new(Vec::new())));
        let transport = Arc::clone(&captured);
        let mut options = ClientOptions::new()
            .dsn("https://public@sentry.invalid/1")
            .send_default_pii(false)
            .transport(move |_: &ClientOptions| Arc::clone(&transport) as Arc<dyn Transport>);
        if let Some(before_send) = before_send {
            options = options.before_send(move |event| Some(before_send(event)));
        }
        let client = Arc::new(sentry::Client::from(options));
        let hub = Arc::new(Hub::new(Some(client), Arc::new(Scope::default())));
        Hub::run(hub, || {
            let mut service = sentry::integrations::tower::SentryHttpLayer::new().layer(
                tower::service_fn(|_: http::Request<()>| async {
                    sentry::capture_message("test error for Sentry", sentry::Level::Error);
                    Ok::<_, std::convert::Infallible>(http::Response::new(()))
                }),
            );
            futures::executor::block_on(service.call(request)).unwrap();
        });
        let mut events = captured.0.lock().unwrap();
        assert_eq!(events.len(), 1);
        events.pop().unwrap()
    }

    fn hostile_request() -> http::Request<()> {
        let mut request = http::Request::get("http://edge.example/__error__?token=s3cret");
        for (k, v) in [
            ("Authorization", "Bearer t"),
            ("Proxy-Authorization", "Basic t"),
            ("Cookie", "a=b"),
            ("X-Forwarded-For", "192.0.2.1"),
            ("X-Real-IP", "192.0.2.2"),
            ("X-Api-Key", "k"),
            ("Forwarded", "for=192.0.2.3"),
            ("True-Client-IP", "192.0.2.4"),
            ("X-Client-IP", "192.0.2.5"),
            ("CF-Connecting-IP", "192.0.2.6"),
            ("X-Amz-Security-Token", "t"),
            ("X-Error-Token", "s3cret"),
            ("User-Agent", "pingsender/1.0"),
            ("Content-Type", "application/json"),
        ] {
            request = request.header(k, v);
        }
        request.body(()).unwrap()
    }

    fn header_names(event: &Event<'static>) -> Vec<String> {
        let request = event.request.as_ref().unwrap();
        let mut names: Vec<String> = request.headers.keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn filters_of_sentry_tower_and_of_scrub() {
        // sentry-tower alone: its deny-list goes, every other header and the query stay.
        let tower_only = event_for(hostile_request(), None);
        assert_eq!(
            header_names(&tower_only),
            [
                "cf-connecting-ip",
                "content-type",
                "forwarded",
                "true-client-ip",
                "user-agent",
                "x-amz-security-token",
                "x-client-ip",
                "x-error-token",
            ],
            "sentry-tower's filtering changed: update the module documentation"
        );
        let request = tower_only.request.as_ref().unwrap();
        assert_eq!(request.url.as_ref().unwrap().query(), Some("token=s3cret"));
        assert!(request.query_string.is_none() && request.cookies.is_none());
        assert!(request.data.is_none() && request.env.is_empty());
        assert!(tower_only.user.is_none(), "the SDK sets no user or address");

        // With scrub: the allow-list and no query.
        let sent = event_for(hostile_request(), Some(scrub));
        assert_eq!(header_names(&sent), ["content-type", "user-agent"]);
        assert_eq!(
            sent.request
                .as_ref()
                .unwrap()
                .url
                .as_ref()
                .unwrap()
                .as_str(),
            "http://edge.example/__error__"
        );
    }

    #[test]
    fn url_credentials_are_filtered_by_sentry_tower() {
        let request = http::Request::get("http://user:pass@edge.example/__error__")
            .body(())
            .unwrap();
        let sent = event_for(request, Some(scrub));
        let url = sent.request.unwrap().url.unwrap();
        assert_eq!(
            (url.username(), url.password()),
            ("%5BFiltered%5D", Some("%5BFiltered%5D"))
        );
    }
}
