//! Wharf's configuration: environment variables (read with envy) over optional `CONFIG_URL` defaults, validated all at once.
//!
//! Loading never stops at the first problem: every bad or missing variable is collected into one
//! [`ConfigError`] so that an operator fixes a deployment in one pass.

pub mod catalog;
mod config_url;
mod parse;
pub mod redact;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use config_url::ConfigUrlError;
use parse::Parser;
pub use redact::redact_url;

/// What the process is about to do; decides which variables are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Web,
    Worker,
    /// `wharf canary`: talks to the web role over HTTP and reads S3 with the worker's settings.
    Canary,
    /// Tools that need Redis only (`wharf redrive`).
    RedisTool,
    /// `wharf config`: prints what it can, requires nothing.
    Inspect,
}

/// A secret value: printed as `[redacted]` by `Debug` and by `wharf config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub password: Option<Secret>,
    pub tls: bool,
    #[serde(serialize_with = "serialize_ms")]
    pub timeout: Duration,
    /// Number of queue shards (`wharf:{<n>}:submissions` streams) submissions spread over.
    pub queue_shards: u16,
    /// Talk to a Redis Cluster seeded from `host:port` instead of one Redis.
    pub cluster: bool,
    /// Replicas a write must reach (`WAIT`) before a submission is answered 200.
    pub min_replicas_ack: u8,
    /// Percent of Redis `maxmemory` above which the web role answers 507.
    pub memory_high_water_percent: u8,
    /// Start even when `maxmemory-policy` lets Redis evict queued documents.
    pub allow_eviction_data_loss: bool,
}

impl RedisSettings {
    /// The connection URL, password included: never log it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match &self.password {
            Some(p) => format!(":{}@", url_encode(p.expose())),
            None => String::new(),
        };
        format!("{scheme}://{auth}{}:{}/{}", self.host, self.port, self.db)
    }
}

fn url_encode(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsdSettings {
    pub host: Option<String>,
    pub port: u16,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TelemetrySettings {
    pub environment: String,
    pub sentry_dsn: Option<Secret>,
    pub statsd: StatsdSettings,
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub max_path_bytes: usize,
    pub max_queue_depth: u64,
    pub queue_depth_warning: u64,
    /// Empty means every namespace is accepted.
    pub allowed_namespaces: Vec<String>,
    pub drop_client_ip: bool,
    #[serde(serialize_with = "serialize_ms")]
    pub heartbeat_cache: Duration,
    pub version_file: String,
    pub error_endpoint_token: Option<Secret>,
    /// Longest a client may take to send a request's headers (and an idle keep-alive connection
    /// may wait for its next request) before the connection is closed.
    #[serde(serialize_with = "serialize_ms")]
    pub header_timeout: Duration,
    /// Longest a request body may go without delivering a byte before the request is refused.
    #[serde(serialize_with = "serialize_ms")]
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Submission body bytes held in memory at once, declared or read; past it, 503 at once.
    pub max_inflight_bytes: usize,
    /// Submissions in progress at once; past it, 503 at once.
    pub max_inflight_requests: usize,
    /// Also speak HTTP/2 without TLS (h2c) on the web port.
    pub http2_cleartext: bool,
    /// When set, the canary namespace takes only requests carrying this token.
    pub canary_token: Option<Secret>,
    /// Browser origins allowed to submit.
    pub cors: CorsOrigins,
    /// How long a browser may cache a preflight answer.
    #[serde(serialize_with = "serialize_ms")]
    pub cors_max_age: Duration,
    /// The live debug view, when `DEBUG_VIEW_TOKEN` is set.
    pub debug_view: Option<DebugViewSettings>,
}

/// Which browser origins may submit (`CORS_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CorsOrigins {
    /// `*`: every origin, without credentials.
    Any,
    /// Exactly these `scheme://host[:port]` origins, lowercased.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Whether a request's `Origin` header value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// The live debug view: documents tagged `X-Debug-ID`, kept per tag in capped Redis streams.
#[derive(Debug, Clone, Serialize)]
pub struct DebugViewSettings {
    pub token: Secret,
    /// Documents kept per tag.
    pub max_entries: usize,
    /// Tags listed at once.
    pub max_tags: usize,
    /// A tag's documents expire this long after its last submission.
    #[serde(serialize_with = "serialize_ms")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    #[serde(serialize_with = "serialize_redacted_url")]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerSettings {
    pub s3: S3Settings,
    pub batch_max_documents: usize,
    pub batch_max_bytes: usize,
    #[serde(serialize_with = "serialize_ms")]
    pub batch_max_age: Duration,
    pub max_open_batches: usize,
    /// Entries one `XREADGROUP` takes from each shard.
    pub fetch_size: usize,
    /// Documents a worker holds at once (fetched, in open batches or being uploaded).
    pub max_held_documents: usize,
    /// Body bytes a worker holds at once; one more fetch may go over it.
    pub max_held_bytes: usize,
    #[serde(serialize_with = "serialize_ms")]
    pub poll_interval: Duration,
    #[serde(serialize_with = "serialize_ms")]
    pub claim_idle: Duration,
    pub max_attempts: u32,
    #[serde(serialize_with = "serialize_ms")]
    pub refusal_grace: Duration,
    #[serde(serialize_with = "serialize_ms")]
    pub liveness_ttl: Duration,
    /// How long a landed document's docId stays in the ledger; zero turns deduplication off.
    #[serde(serialize_with = "serialize_ms")]
    pub dedup_window: Duration,
    pub output_compression: Compression,
}

/// How the worker compresses its NDJSON objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
}

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    #[serde(serialize_with = "serialize_redacted_url")]
    pub config_url: Option<String>,
    pub telemetry: TelemetrySettings,
    pub redis: RedisSettings,
    #[serde(serialize_with = "serialize_ms")]
    pub shutdown_grace: Duration,
    pub web: WebSettings,
    /// Present when the role needs S3 and `S3_BUCKET` was given.
    pub worker: Option<WorkerSettings>,
}

/// URLs in `wharf config`'s output lose their credentials and query strings.
fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&redact_url(u)),
        None => s.serialize_none(),
    }
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One misconfigured variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: String,
    pub message: String,
    pub example: String,
}

/// Everything wrong with the configuration, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, format_problems(.0))]
    Invalid(Vec<Problem>),
    #[error("CONFIG_URL could not be used: {0}")]
    ConfigUrl(#[from] ConfigUrlError),
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::ConfigUrl(_) => &[],
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "  - {}: {} (example: {}={})",
                p.variable, p.message, p.variable, p.example
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The raw variables as envy reads them: all strings, so that parsing can report every problem.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct RawEnv {
    config_url: Option<String>,
    environment: Option<String>,
    redis_host: Option<String>,
    redis_port: Option<String>,
    redis_db: Option<String>,
    redis_password: Option<String>,
    redis_tls: Option<String>,
    redis_timeout_ms: Option<String>,
    queue_shards: Option<String>,
    redis_cluster: Option<String>,
    redis_min_replicas_ack: Option<String>,
    redis_memory_high_water_percent: Option<String>,
    redis_allow_eviction_data_loss: Option<String>,
    sentry_dsn: Option<String>,
    statsd_host: Option<String>,
    statsd_port: Option<String>,
    statsd_prefix: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    shutdown_grace_ms: Option<String>,
    host: Option<String>,
    port: Option<String>,
    max_body_bytes: Option<String>,
    max_path_bytes: Option<String>,
    max_queue_depth: Option<String>,
    queue_depth_warning: Option<String>,
    allowed_namespaces: Option<String>,
    drop_client_ip: Option<String>,
    heartbeat_cache_ms: Option<String>,
    version_file: Option<String>,
    error_endpoint_token: Option<String>,
    header_timeout_ms: Option<String>,
    body_timeout_ms: Option<String>,
    max_connections: Option<String>,
    max_inflight_bytes: Option<String>,
    max_inflight_requests: Option<String>,
    http2_cleartext: Option<String>,
    cors_allowed_origins: Option<String>,
    cors_max_age_ms: Option<String>,
    debug_view_token: Option<String>,
    debug_view_max_entries: Option<String>,
    debug_view_max_tags: Option<String>,
    debug_view_ttl_ms: Option<String>,
    canary_token: Option<String>,
    s3_bucket: Option<String>,
    s3_prefix: Option<String>,
    s3_endpoint_url: Option<String>,
    batch_max_documents: Option<String>,
    batch_max_bytes: Option<String>,
    batch_max_age_ms: Option<String>,
    max_open_batches: Option<String>,
    worker_fetch_size: Option<String>,
    worker_max_held_documents: Option<String>,
    worker_max_held_bytes: Option<String>,
    worker_poll_interval_ms: Option<String>,
    worker_claim_idle_ms: Option<String>,
    max_attempts: Option<String>,
    s3_refusal_grace_ms: Option<String>,
    dedup_window_ms: Option<String>,
    output_compression: Option<String>,
    liveness_ttl_ms: Option<String>,
}

impl RawEnv {
    /// The values by variable name, skipping unset ones.
    fn into_map(self) -> BTreeMap<String, String> {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut map = BTreeMap::new();
        if let serde_json::Value::Object(fields) = value {
            for (name, v) in fields {
                if let serde_json::Value::String(s) = v {
                    map.insert(name.to_ascii_uppercase(), s);
                }
            }
        }
        map
    }
}

/// Loads the settings from the process environment.
pub fn from_env(role: Role) -> Result<Settings, ConfigError> {
    from_vars(role, std::env::vars())
}

/// Loads the settings from the given variables (the environment, or a test's map).
pub fn from_vars(
    role: Role,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let env: RawEnv = envy::from_iter(vars.iter().cloned()).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            variable: "environment".into(),
            message: e.to_string(),
            example: "valid UTF-8".into(),
        }])
    })?;
    let config_url = env.config_url.clone().filter(|u| !u.trim().is_empty());
    let mut values = match &config_url {
        Some(url) => config_url::fetch_defaults(url)?,
        None => BTreeMap::new(),
    };
    values.extend(env.into_map());
    build(role, config_url, &values)
}

fn build(
    role: Role,
    config_url: Option<String>,
    values: &BTreeMap<String, String>,
) -> Result<Settings, ConfigError> {
    let mut p = Parser::new(values, role);

    let telemetry = TelemetrySettings {
        environment: p.string("ENVIRONMENT"),
        sentry_dsn: p.optional_url("SENTRY_DSN").map(Secret::new),
        statsd: StatsdSettings {
            host: p.optional("STATSD_HOST"),
            port: p.within("STATSD_PORT", 1, 65_535) as u16,
            prefix: p.string("STATSD_PREFIX"),
        },
        log_format: p.choice(
            "LOG_FORMAT",
            &[("json", LogFormat::Json), ("pretty", LogFormat::Pretty)],
            LogFormat::Json,
        ),
        log_level: p.log_filter("LOG_LEVEL"),
    };
    let redis = RedisSettings {
        host: p.required_for(
            "REDIS_HOST",
            matches!(role, Role::Web | Role::Worker | Role::RedisTool),
        ),
        port: p.within("REDIS_PORT", 1, 65_535) as u16,
        db: p.within("REDIS_DB", 0, 15) as i64,
        password: p.optional("REDIS_PASSWORD").map(Secret::new),
        tls: p.boolean("REDIS_TLS"),
        timeout: p.millis("REDIS_TIMEOUT_MS", 50, 60_000),
        queue_shards: p.within("QUEUE_SHARDS", 1, 1024) as u16,
        cluster: p.boolean("REDIS_CLUSTER"),
        min_replicas_ack: p.within("REDIS_MIN_REPLICAS_ACK", 0, 5) as u8,
        memory_high_water_percent: p.within("REDIS_MEMORY_HIGH_WATER_PERCENT", 10, 95) as u8,
        allow_eviction_data_loss: p.boolean("REDIS_ALLOW_EVICTION_DATA_LOSS"),
    };
    if redis.cluster && redis.db != 0 {
        p.problem(
            "REDIS_DB",
            "must be 0 with REDIS_CLUSTER=true: a Redis Cluster has only database 0",
        );
    }
    let shutdown_grace = p.millis("SHUTDOWN_GRACE_MS", 100, 600_000);
    let web = WebSettings {
        host: p.string("HOST"),
        port: p.within("PORT", 0, 65_535) as u16,
        max_body_bytes: p.within("MAX_BODY_BYTES", 1, 256 << 20) as usize,
        max_path_bytes: p.within("MAX_PATH_BYTES", 32, 16_384) as usize,
        max_queue_depth: p.within("MAX_QUEUE_DEPTH", 1, 1_000_000_000),
        queue_depth_warning: p.within("QUEUE_DEPTH_WARNING", 1, 1_000_000_000),
        allowed_namespaces: p.list("ALLOWED_NAMESPACES"),
        drop_client_ip: p.boolean("DROP_CLIENT_IP"),
        heartbeat_cache: p.millis("HEARTBEAT_CACHE_MS", 10, 60_000),
        version_file: p.string("VERSION_FILE"),
        error_endpoint_token: p.optional("ERROR_ENDPOINT_TOKEN").map(Secret::new),
        header_timeout: p.millis("HEADER_TIMEOUT_MS", 100, 120_000),
        body_timeout: p.millis("BODY_TIMEOUT_MS", 100, 120_000),
        max_connections: p.within("MAX_CONNECTIONS", 16, 1_000_000) as usize,
        max_inflight_bytes: p.within("MAX_INFLIGHT_BYTES", 1 << 20, 16 << 30) as usize,
        max_inflight_requests: p.within("MAX_INFLIGHT_REQUESTS", 1, 1_000_000) as usize,
        http2_cleartext: p.boolean("HTTP2_CLEARTEXT"),
        canary_token: p.optional("CANARY_TOKEN").map(Secret::new),
        cors: p.origins("CORS_ALLOWED_ORIGINS"),
        cors_max_age: p.millis("CORS_MAX_AGE_MS", 0, 86_400_000),
        debug_view: None,
    };
    let debug_view = DebugViewSettings {
        token: Secret::new(p.optional("DEBUG_VIEW_TOKEN").unwrap_or_default()),
        max_entries: p.within("DEBUG_VIEW_MAX_ENTRIES", 1, 1_000) as usize,
        max_tags: p.within("DEBUG_VIEW_MAX_TAGS", 1, 1_000) as usize,
        ttl: p.millis("DEBUG_VIEW_TTL_MS", 60_000, 604_800_000),
    };
    let web = WebSettings {
        debug_view: (!debug_view.token.expose().is_empty()).then_some(debug_view),
        ..web
    };
    let needs_s3 = matches!(role, Role::Worker | Role::Canary);
    let bucket = p.required_for("S3_BUCKET", needs_s3);
    let worker = WorkerSettings {
        s3: S3Settings {
            bucket: bucket.clone(),
            prefix: p.string("S3_PREFIX"),
            endpoint_url: p.optional_url("S3_ENDPOINT_URL"),
        },
        batch_max_documents: p.within("BATCH_MAX_DOCUMENTS", 1, 1_000_000) as usize,
        batch_max_bytes: p.within("BATCH_MAX_BYTES", 1, 1 << 30) as usize,
        batch_max_age: p.millis("BATCH_MAX_AGE_MS", 100, 3_600_000),
        max_open_batches: p.within("MAX_OPEN_BATCHES", 1, 10_000) as usize,
        fetch_size: p.within("WORKER_FETCH_SIZE", 1, 10_000) as usize,
        max_held_documents: p.within("WORKER_MAX_HELD_DOCUMENTS", 1, 1_000_000) as usize,
        max_held_bytes: p.within("WORKER_MAX_HELD_BYTES", 1 << 20, 1 << 34) as usize,
        poll_interval: p.millis("WORKER_POLL_INTERVAL_MS", 10, 10_000),
        claim_idle: p.millis("WORKER_CLAIM_IDLE_MS", 1_000, 3_600_000),
        max_attempts: p.within("MAX_ATTEMPTS", 1, 1_000) as u32,
        refusal_grace: p.millis("S3_REFUSAL_GRACE_MS", 0, 86_400_000),
        liveness_ttl: p.millis("LIVENESS_TTL_MS", 1_000, 600_000),
        dedup_window: p.millis("DEDUP_WINDOW_MS", 0, 604_800_000),
        output_compression: p.choice(
            "OUTPUT_COMPRESSION",
            &[("gzip", Compression::Gzip), ("zstd", Compression::Zstd)],
            Compression::Gzip,
        ),
    };
    let worker_role = role == Role::Worker;
    if worker_role && worker.claim_idle < worker.poll_interval * 3 {
        p.problem(
            "WORKER_CLAIM_IDLE_MS",
            format!(
                "must be at least 3 x WORKER_POLL_INTERVAL_MS ({} ms): a live worker renews its entries every third of it",
                worker.poll_interval.as_millis()
            ),
        );
    }
    if worker_role && worker.claim_idle <= redis.timeout * 3 {
        p.problem(
            "WORKER_CLAIM_IDLE_MS",
            format!(
                "must be more than 3 x REDIS_TIMEOUT_MS ({} ms), or one slow renewal lets another worker take live entries",
                redis.timeout.as_millis()
            ),
        );
    }
    if role == Role::Web && web.max_inflight_bytes < web.max_body_bytes {
        p.problem(
            "MAX_INFLIGHT_BYTES",
            format!(
                "must be at least MAX_BODY_BYTES ({}), or the largest accepted body could never be taken",
                web.max_body_bytes
            ),
        );
    }
    if web.queue_depth_warning > web.max_queue_depth {
        p.problem(
            "QUEUE_DEPTH_WARNING",
            format!(
                "must not exceed MAX_QUEUE_DEPTH ({}), or the heartbeat warns only after submissions are refused",
                web.max_queue_depth
            ),
        );
    }
    p.finish()?;
    Ok(Settings {
        config_url,
        telemetry,
        redis,
        shutdown_grace,
        web,
        worker: (!bucket.is_empty()).then_some(worker),
    })
}

#[cfg(test)]
mod tests;
