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
