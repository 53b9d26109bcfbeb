//! A real HTTP listener that accepts Sentry envelopes, as a self-hosted Sentry would, and keeps them.

use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;

/// Receives envelopes posted to `/api/{project}/envelope/`.
pub struct SentryListener {
    port: u16,
    envelopes: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl SentryListener {
    /// Starts the listener on the current tokio runtime.
    pub async fn start() -> Self {
        let envelopes = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&envelopes);
        let app = Router::new().route(
            "/api/{project}/envelope/",
            post(move |headers: HeaderMap, body: Bytes| {
                let store = Arc::clone(&store);
                async move {
                    let text = decode(&headers, &body);
                    if let Ok(mut e) = store.lock() {
                        e.push(text);
                    }
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind sentry listener: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            envelopes,
            _server: server,
        }
    }

    /// A DSN pointing at this listener.
    pub fn dsn(&self) -> String {
        format!("http://testkey@127.0.0.1:{}/1", self.port)
    }

    /// Every envelope received so far, decompressed, as text.
    pub fn envelopes(&self) -> Vec<String> {
        self.envelopes.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Waits until an envelope containing `needle` has arrived, and returns the first such.
    pub async fn wait_for(&self, needle: &str, timeout: std::time::Duration) -> Option<String> {
        crate::found(timeout, || {
            self.envelopes().into_iter().find(|e| e.contains(needle))
        })
        .await
    }

    /// The messages of the error-level events (not breadcrumbs, sessions or client reports)
    /// received so far.
    pub fn errors(&self) -> Vec<String> {
        self.envelopes()
            .iter()
            .flat_map(|e| error_messages(e))
            .collect()
    }
}

/// The messages of the error-level events in one envelope.
fn error_messages(envelope: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = envelope.lines();
    let _header = lines.next();
    while let Some(item_header) = lines.next() {
        let Some(payload) = lines.next() else { break };
        let Ok(header) = serde_json::from_str::<serde_json::Value>(item_header) else {
            continue;
        };
        if header["type"] != "event" {
            continue;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(payload) else {
            continue;
        };
        // Sentry's protocol leaves `level` out for the default, "error".
        let level = event["level"].as_str().unwrap_or("error");
        if level != "error" && level != "fatal" {
            continue;
        }
        let message = event["message"]
            .as_str()
            .or_else(|| event["logentry"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| event["exception"].to_string());
        out.push(message);
    }
    out
}

fn decode(headers: &HeaderMap, body: &[u8]) -> String {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if encoding.contains("gzip") {
        let mut out = String::new();
        if flate2::read::GzDecoder::new(body)
            .read_to_string(&mut out)
            .is_ok()
        {
            return out;
        }
    }
    String::from_utf8_lossy(body).to_string()
}

impl Drop for SentryListener {
    fn drop(&mut self) {
        self._server.abort();
    }
}
