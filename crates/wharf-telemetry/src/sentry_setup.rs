//! Sentry client set-up: release and environment, panics captured, personal data scrubbed before sending.

use std::borrow::Cow;

use sentry::protocol::Event;
use wharf_settings::TelemetrySettings;

/// Request headers that must never leave the process: credentials and client addresses.
pub const SCRUBBED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
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

/// Removes credentials, cookies and client IPs from an event.
pub fn scrub(mut event: Event<'static>) -> Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| !SCRUBBED_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        request.cookies = None;
        request.env.remove("REMOTE_ADDR");
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
    fn scrub_removes_credentials_and_addresses() {
        let mut request = Request::default();
        for (k, v) in [
            ("Authorization", "Bearer t"),
            ("Cookie", "a=b"),
            ("X-Forwarded-For", "1.2.3.4"),
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
        assert_eq!(request.headers.len(), 1);
        assert!(request.headers.contains_key("User-Agent"));
        assert!(request.env.is_empty());
        assert!(clean.user.unwrap().ip_address.is_none());
    }
}
