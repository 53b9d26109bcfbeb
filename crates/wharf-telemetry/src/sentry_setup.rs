//! Sentry client set-up: release and environment, panics captured, personal data scrubbed before sending.

use std::borrow::Cow;

use sentry::protocol::Event;
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

/// Starts Sentry when a DSN is configured; `None` (and no cost) otherwise.
pub fn init(settings: &TelemetrySettings) -> Option<sentry::ClientInitGuard> {
    let dsn = settings.sentry_dsn.as_ref()?;
    let options = sentry::ClientOptions::new()
        .dsn(dsn.expose())
        .release(Cow::Owned(format!("wharf@{}", env!("CARGO_PKG_VERSION"))))
        .environment(Cow::Owned(settings.environment.clone()))
        .send_default_pii(false)
        .before_send(|event| Some(scrub(event)));
    Some(sentry::init(options))
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
