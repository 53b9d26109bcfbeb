//! Wharf's web role: edge-spec submissions into the Redis queue, the Dockerflow endpoints and the debug view.
//!
//! A submission's path through this crate: [`routes::submit`] checks the request against the edge
//! spec ([`edge`]), builds a [`wharf_queue::Submission`] and hands it to the
//! [`wharf_queue::Enqueuer`]; the client gets 200 only once Redis has it. Browsers' submissions
//! pass [`cors`] first; tagged ones are also kept for the [`debug_view`].

pub mod admission;
pub mod budget;
pub mod cors;
pub mod debug_view;
pub mod edge;
pub mod framing;
pub mod heartbeat;
pub mod middleware;
pub mod rejection;
pub mod routes;
pub mod server;
pub mod state;
pub mod token;
pub mod version;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use axum::Router;
use cadence::StatsdClient;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use wharf_queue::enqueue::GroupCommitLimits;
use wharf_queue::Enqueuer;
use wharf_settings::Settings;

use crate::admission::BacklogGauge;
use crate::budget::InflightBudget;
use crate::cors::Cors;
use crate::debug_view::DebugView;
use crate::heartbeat::{Heartbeat, Thresholds};
use crate::server::ConnectionLimits;
use crate::state::{AppState, WebState};
use crate::version::VersionInfo;

/// Longest a client may take to send a request and get the answer, however steadily its body
/// trickles in (`BODY_TIMEOUT_MS` bounds the pauses).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting or running the web role.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `HOST:PORT` could not be bound (in use, or not an address of this host).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// `HOST:PORT` as configured.
        addr: String,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// Redis settings that cannot make a connection, or a Redis the start-up probe refused to
    /// run on (an eviction policy that could lose documents).
    #[error("redis configuration: {0}")]
    Redis(#[from] wharf_queue::QueueError),
    /// The serving task ended abnormally (it panicked or was cancelled); holds its join error.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving, web role (the listener is open so tests can read the port first).
pub struct WebApp {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    grace: Duration,
    /// The start-up Redis probe: it ends with an error only for a Redis that is unsafe to use
    /// (an eviction policy), which stops the role.
    startup: tokio::task::JoinHandle<Result<(), wharf_queue::QueueError>>,
}

impl WebApp {
    /// Binds `HOST:PORT` (port 0 picks a free one), opens the lazy Redis connection and starts
    /// the background tasks (backlog sampler, start-up Redis probe). Must run inside a tokio runtime.
    pub async fn build(settings: &Settings, metrics: StatsdClient) -> Result<Self, WebError> {
        let web = &settings.web;
        let addr = format!("{}:{}", web.host, web.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| WebError::Bind { addr, source })?;

        let canary = wharf_queue::CANARY_NAMESPACE;
        if !web.allowed_namespaces.is_empty()
            && !web.allowed_namespaces.iter().any(|n| n == canary)
            && web.canary_token.is_none()
        {
            tracing::warn!(type = "web.start", "ALLOWED_NAMESPACES does not list {canary} and CANARY_TOKEN is unset: `wharf canary` will get 404");
        }
        let conn = wharf_queue::connect(&settings.redis)?;
        let metrics = Arc::new(metrics);
        let shards = settings.redis.queue_shards;
        let backlog = BacklogGauge::default();
        tokio::spawn(backlog.clone().run_sampler(conn.clone(), shards));
        let startup = tokio::spawn(probe_redis_at_startup(
            conn.clone(),
            shards,
            settings.redis.allow_eviction_data_loss,
        ));

        let heartbeat = Heartbeat::new(
            conn.clone(),
            Thresholds {
                depth_warning: web.queue_depth_warning,
                max_depth: web.max_queue_depth,
                redis_timeout: settings.redis.timeout,
                shards,
                memory_high_water_percent: settings.redis.memory_high_water_percent,
            },
            web.heartbeat_cache,
            Arc::clone(&metrics),
        );
        let debug = web.debug_view.enabled().map(|token| {
            Arc::new(DebugView::new(
                web.debug_view.clone(),
                token.clone(),
                conn.clone(),
                settings.redis.timeout * 2,
                Arc::clone(&metrics),
            ))
        });
        let state = Arc::new(WebState {
            settings: Arc::new(web.clone()),
            // Group commit: concurrent submissions share one pipeline of XADDs (each still gets
            // its 200 only after Redis answered the XADD carrying it, and after WAIT when
            // replicas must confirm it). WAIT gets half the Redis timeout, so its answer arrives
            // within the pipeline's own response timeout.
            enqueuer: Enqueuer::new(conn, shards)
                .with_replication(settings.redis.min_replicas_ack, settings.redis.timeout / 2)
                .with_group_commit(GroupCommitLimits::default()),
            enqueue_timeout: settings.redis.timeout * 2,
            budget: InflightBudget::new(web.max_inflight_requests, web.max_inflight_bytes),
            backlog,
            memory_high_water_percent: settings.redis.memory_high_water_percent,
            heartbeat: Arc::new(heartbeat),
            version: Arc::new(VersionInfo::load(&web.version_file)),
            metrics,
            debug,
        });
        Ok(Self {
            listener,
            router: router(state),
            limits: ConnectionLimits {
                header_timeout: web.header_timeout,
                max_connections: web.max_connections,
                http2_cleartext: web.http2_cleartext,
            },
            grace: settings.shutdown_grace,
            startup,
        })
    }

    /// The address actually bound: with `PORT=0`, where to find the port the system picked.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and gives in-flight
    /// requests up to the grace period to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            self.listener,
            self.router,
            self.limits,
            async move {
                shutdown.await;
                tracing::info!(type = "web.shutdown", "stop signal received; draining in-flight requests");
                let _ = stopping_tx.send(());
            },
        ));
        let grace = self.grace;
        let startup = self.startup;
        tokio::select! {
            refused = async {
                match startup.await {
                    Ok(Err(e)) => e,
                    _ => std::future::pending().await,
                }
            } => {
                tracing::error!(type = "startup.redis", error = %refused, "refusing to run on this Redis");
                return Err(WebError::Redis(refused));
            }
            result = server => {
                return result.map_err(|e| WebError::Serve(std::io::Error::other(e)));
            }
            _ = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(type = "web.shutdown", grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), "grace period over; abandoning requests still in flight");
            }
        }
        Ok(())
    }
}

/// The full router with its middleware stack.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let max_path = state.settings.max_path_bytes;
    let metrics = Arc::clone(&state.metrics);
    let cors = Arc::new(Cors::new(
        state.settings.cors.clone(),
        state.settings.cors_max_age,
        Arc::clone(&metrics),
    ));
    // Sentry's request context (URL, method, scrubbed headers) is built for every request it
    // wraps, about a tenth of a submission's CPU, so /submit goes without it: a submission can
    // only raise a Sentry event by panicking, and that event still has the panic and the trace.
    let dockerflow = Router::new()
        .route("/__lbheartbeat__", get(routes::dockerflow::lbheartbeat))
        .route("/__heartbeat__", get(routes::dockerflow::heartbeat))
        .route("/__version__", get(routes::dockerflow::version))
        .route("/__error__", get(routes::dockerflow::error))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found\n") })
        .layer(sentry::integrations::tower::SentryHttpLayer::new());
    // Off, the view has no routes at all: every /debug path is the fallback's 404.
    let debug_view = match &state.debug {
        Some(view) => debug_view::routes(Arc::clone(view)),
        None => Router::new(),
    };
    let routes = Router::new()
        .route(
            "/submit/{*rest}",
            post(routes::submit::submit).put(routes::submit::submit),
        )
        .merge(debug_view)
        .merge(dockerflow)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            max_path,
            middleware::limit_path_length,
        ))
        // Inside the summary, so its refusals and preflights are logged and counted.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&cors),
            cors::gate,
        ))
        // Route-level so the summary sees the matched route template.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            middleware::summarize,
        ));
    routes.layer(
        ServiceBuilder::new()
            // Outermost, so every /submit answer carries the allowed origin, whichever layer
            // made it (the timeout's 503, the ambiguous-request 400, a caught panic's 500).
            .layer(axum::middleware::from_fn_with_state(cors, cors::label))
            .layer(axum::middleware::map_response(
                rejection::retry_after_when_unavailable,
            ))
            .layer(axum::middleware::from_fn(
                middleware::refuse_ambiguous_requests,
            ))
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(sentry::integrations::tower::NewSentryLayer::<
                Request<axum::body::Body>,
            >::new_from_top())
            .layer(CatchPanicLayer::new())
            // 503, not 408: Glean clients delete a ping on any 4xx, and a request this slow is
            // as likely a bad network as a bad client.
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                REQUEST_TIMEOUT,
            )),
    )
}

/// Connects to Redis at start-up, retrying with backoff; the first failure is reported to Sentry.
/// Once connected, checks that Redis will not evict queued documents, then registers the shards
/// this node writes to, so workers read every one of them.
///
/// The web role keeps serving meanwhile: `__lbheartbeat__` answers, `__heartbeat__` reports the
/// Redis error, and submissions get 503 until Redis answers. An eviction policy that could lose
/// documents ends the probe with an error, which stops the role (exit code 2).
async fn probe_redis_at_startup(
    mut conn: wharf_queue::Redis,
    shards: u16,
    allow_eviction: bool,
) -> Result<(), wharf_queue::QueueError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let probe = async {
            wharf_queue::connection::ping(&mut conn).await?;
            let risk = wharf_queue::health::check_eviction(&mut conn, allow_eviction).await?;
            wharf_queue::streams::register_shards(&mut conn, shards).await?;
            Ok::<_, wharf_queue::QueueError>(risk)
        };
        match probe.await {
            Ok(risk) => {
                if let Some(risk) = risk {
                    tracing::error!(type = "startup.redis", error = %risk, "{}", wharf_queue::health::EVICTION_RISK_ACCEPTED);
                }
                tracing::info!(type = "startup.redis", attempt, "connected to redis");
                return Ok(());
            }
            Err(e) if e.is_misconfiguration() => return Err(e),
            Err(e) if attempt == 1 => {
                tracing::error!(type = "startup.redis", attempt, error = %e, "cannot reach redis at start-up; retrying in the background");
            }
            Err(e) => {
                tracing::warn!(type = "startup.redis", attempt, error = %e, "still cannot reach redis");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
