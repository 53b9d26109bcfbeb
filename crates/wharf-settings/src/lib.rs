//! Wharf's configuration: environment variables (read with envy) over optional `CONFIG_URL` defaults, validated all at once.
//!
//! Each settings struct declares its fields with their variables (name, role, default, bounds,
//! secrecy, meaning) in one place, the `settings!` invocations below; the catalogue, `wharf
//! config --list` and the README's table are made from them. Loading never stops at the first
//! problem: every bad or missing variable is collected into one [`ConfigError`] so that an
//! operator fixes a deployment in one pass.

pub mod catalog;
mod config_url;
#[macro_use]
mod define;
mod parse;
pub mod redact;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use catalog::{var, Kind, Required, Scope::*};
pub use config_url::ConfigUrlError;
use parse::{Choice, Parser};
pub use redact::redact_url;

/// The two roles: each needs its own variables and its own cross-checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `wharf web`, which takes submissions into Redis: needs `REDIS_HOST`.
    Web,
    /// `wharf worker`, which batches them into S3: needs `REDIS_HOST` and `S3_BUCKET`.
    Worker,
}

/// What a command needs from the configuration: which required variables must be set, and
/// which role's cross-checks apply. Tools (`canary`, `redrive`, `check`) build their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// `REDIS_HOST` must be set.
    pub redis: bool,
    /// `S3_BUCKET` must be set.
    pub s3: bool,
    /// Whose cross-checks between variables apply; `None` checks only those every role shares.
    pub role: Option<Role>,
}

impl Needs {
    /// Nothing required (reading what is there, such as the port for `wharf check`).
    pub const NOTHING: Needs = Needs {
        redis: false,
        s3: false,
        role: None,
    };
}

impl From<Role> for Needs {
    fn from(role: Role) -> Self {
        Needs {
            redis: true,
            s3: role == Role::Worker,
            role: Some(role),
        }
    }
}

/// A secret value: printed as `[redacted]` by `Debug` and by `wharf config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so that it is no longer printed.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for where it must be used (a connection URL, a token comparison);
    /// never log it.
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

choice! {
    /// How log lines are written to stdout (`LOG_FORMAT`).
    pub enum LogFormat {
        /// One MozLog JSON object a line, for log collectors.
        "json" => Json,
        /// `tracing`'s human-readable lines, for a terminal.
        "pretty" => Pretty,
    }

    /// How the worker compresses its NDJSON objects (`OUTPUT_COMPRESSION`).
    pub enum Compression {
        /// Objects named `.ndjson.gz`, sent with `Content-Encoding: gzip`.
        "gzip" => Gzip,
        /// Objects named `.ndjson.zst`, sent with `Content-Encoding: zstd`: smaller objects for
        /// less worker CPU, readable by Athena and Spark.
        "zstd" => Zstd,
    }
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

settings! {
    /// The whole effective configuration.
    pub struct Settings {
        /// URL (file://, http://, https://) of a JSON object whose keys are these variable names;
        /// it supplies defaults, the environment overrides it; unreachable or invalid stops the
        /// process
        #[serde(serialize_with = "serialize_redacted_url")]
        config_url: Option<String> = var("CONFIG_URL", Both, Kind::Text, None, "file:///etc/wharf/config.json"),
        /// on SIGTERM, time allowed to finish in-flight requests (web) or flush open batches
        /// (worker); fits docker stop's 10 s
        #[serde(serialize_with = "serialize_ms")]
        shutdown_grace: Duration = var("SHUTDOWN_GRACE_MS", Both, Kind::Millis { min: 100, max: 600_000 }, Some("8000"), "8000"),
        ;
        /// Logs, Sentry and metrics: `ENVIRONMENT`, `SENTRY_DSN`, `LOG_*` and `STATSD_*`.
        telemetry: TelemetrySettings,
        /// The queue's Redis (`REDIS_*`) and its shard count (`QUEUE_SHARDS`).
        redis: RedisSettings,
        /// Read by `wharf web`; `CANARY_TOKEN` also by `wharf canary`, which sends it.
        web: WebSettings,
        /// Read by `wharf worker`; its `s3` group also by `wharf canary` and `wharf landed`.
        worker: WorkerSettings,
    }
}

settings! {
    /// Logs, errors and metrics.
    pub struct TelemetrySettings {
        /// deployment name; Sentry environment and the `env` tag on every metric
        environment: String = var("ENVIRONMENT", Both, Kind::Text, Some("development"), "prod").set_by_deploys(),
        /// Sentry DSN; empty or unset disables Sentry
        sentry_dsn: Option<Secret> = var("SENTRY_DSN", Both, Kind::Url, None, "https://public:secret@sentry.example.com/1").secret(),
        /// `json` (MozLog, for production) or `pretty` (human-readable, for development)
        log_format: LogFormat = var("LOG_FORMAT", Both, Kind::Choice(&["json", "pretty"]), Some("json"), "pretty"),
        /// tracing filter directive, checked at start-up with the other settings
        log_level: String = var("LOG_LEVEL", Both, Kind::LogFilter, Some("info"), "info,wharf_web=debug"),
        ;
        /// The `STATSD_*` variables: where metrics are sent, if anywhere.
        statsd: StatsdSettings,
    }
}

settings! {
    /// Where metrics go.
    pub struct StatsdSettings {
        /// StatsD/DogStatsD host; unset drops metrics without error
        host: Option<String> = var("STATSD_HOST", Both, Kind::Text, None, "172.17.42.1").set_by_deploys(),
        /// StatsD UDP port
        port: u16 = var("STATSD_PORT", Both, Kind::Int { min: 1, max: 65_535 }, Some("8125"), "8125"),
        /// prefix of every metric name
        prefix: String = var("STATSD_PREFIX", Both, Kind::Text, Some("wharf"), "wharf"),
    }
}

settings! {
    /// The Redis holding the queue, and how far to trust it.
    pub struct RedisSettings {
        /// Redis host holding the submission queue
        host: String = var("REDIS_HOST", Both, Kind::Text, None, "example.cache.amazonaws.com").required(Required::ForRedis),
        /// Redis port
        port: u16 = var("REDIS_PORT", Both, Kind::Int { min: 1, max: 65_535 }, Some("6379"), "6379"),
        /// Redis database number
        db: i64 = var("REDIS_DB", Both, Kind::Int { min: 0, max: 15 }, Some("0"), "0"),
        /// Redis AUTH password (ElastiCache auth token)
        password: Option<Secret> = var("REDIS_PASSWORD", Both, Kind::Text, None, "s3cret").secret(),
        /// connect to Redis over TLS (ElastiCache in-transit encryption)
        tls: bool = var("REDIS_TLS", Both, Kind::Bool, Some("false"), "true"),
        /// connect and per-command timeout for Redis, in milliseconds
        #[serde(serialize_with = "serialize_ms")]
        timeout: Duration = var("REDIS_TIMEOUT_MS", Both, Kind::Millis { min: 50, max: 60_000 }, Some("1000"), "1000"),
        /// number of queue shards, streams `wharf:{<n>}:submissions`; a submission's shard comes
        /// from its docId; set the same value on web and worker
        queue_shards: u16 = var("QUEUE_SHARDS", Both, Kind::Int { min: 1, max: 1024 }, Some("4"), "4"),
        /// REDIS_HOST:REDIS_PORT is a Redis Cluster node or configuration endpoint; the shard
        /// streams spread over its masters by their hash tags; REDIS_DB must be 0
        cluster: bool = var("REDIS_CLUSTER", Both, Kind::Bool, Some("false"), "true"),
        /// replicas a submission's write must reach (Redis WAIT, once per pipeline) before it is
        /// answered 200; unconfirmed within REDIS_TIMEOUT_MS gives 503; 0 trusts asynchronous
        /// replication, so a failover can lose the last acknowledged writes
        min_replicas_ack: u8 = var("REDIS_MIN_REPLICAS_ACK", Both, Kind::Int { min: 0, max: 5 }, Some("0"), "1"),
        /// submissions get 507 once Redis used_memory passes this percent of maxmemory (on any
        /// master), leaving room for workers to acknowledge and delete; ignored when maxmemory is 0
        memory_high_water_percent: u8 = var("REDIS_MEMORY_HIGH_WATER_PERCENT", Web, Kind::Int { min: 10, max: 95 }, Some("80"), "80"),
        /// start even though Redis maxmemory-policy is not noeviction, accepting that Redis may
        /// silently delete queued documents under memory pressure
        allow_eviction_data_loss: bool = var("REDIS_ALLOW_EVICTION_DATA_LOSS", Both, Kind::Bool, Some("false"), "true"),
    }
}

settings! {
    /// The web role: the listener, the edge's limits, CORS and the debug view.
    pub struct WebSettings {
        /// address the web role binds
        host: String = var("HOST", Web, Kind::Text, Some("0.0.0.0"), "0.0.0.0"),
        /// port the web role binds (0 picks a free one)
        port: u16 = var("PORT", Web, Kind::Int { min: 0, max: 65_535 }, Some("8000"), "8000"),
        /// largest accepted submission body; larger gets 413
        max_body_bytes: usize = var("MAX_BODY_BYTES", Web, Kind::Int { min: 1, max: 268_435_456 }, Some("1048576"), "1048576"),
        /// longest accepted request path and query; longer gets 414
        max_path_bytes: usize = var("MAX_PATH_BYTES", Web, Kind::Int { min: 32, max: 16_384 }, Some("10240"), "10240"),
        /// queue backlog above which submissions get 507 with Retry-After
        max_queue_depth: u64 = var("MAX_QUEUE_DEPTH", Web, Kind::Int { min: 1, max: 1_000_000_000 }, Some("1000000"), "1000000"),
        /// queue backlog above which `__heartbeat__` reports a warning
        queue_depth_warning: u64 = var("QUEUE_DEPTH_WARNING", Web, Kind::Int { min: 1, max: 1_000_000_000 }, Some("100000"), "100000"),
        /// comma-separated namespaces accepted by /submit; empty accepts all; others get 404 (list
        /// `wharf-canary` too, or set CANARY_TOKEN, for `wharf canary`)
        allowed_namespaces: Vec<String> = var("ALLOWED_NAMESPACES", Web, Kind::List, Some(""), "telemetry,eng-workflow"),
        /// drop remote_addr and x_forwarded_for before anything is stored (IPs are personal data)
        drop_client_ip: bool = var("DROP_CLIENT_IP", Web, Kind::Bool, Some("false"), "true"),
        /// how long a `__heartbeat__` result is reused; concurrent requests share one run
        #[serde(serialize_with = "serialize_ms")]
        heartbeat_cache: Duration = var("HEARTBEAT_CACHE_MS", Web, Kind::Millis { min: 10, max: 60_000 }, Some("1000"), "1000"),
        /// Dockerflow version object served by `__version__`; missing falls back to build-time
        /// values
        version_file: String = var("VERSION_FILE", Web, Kind::Text, Some("/app/version.json"), "/app/version.json"),
        /// enables `GET /__error__` for requests whose X-Error-Token header carries this value;
        /// unset disables the endpoint
        error_endpoint_token: Option<Secret> = var("ERROR_ENDPOINT_TOKEN", Web, Kind::Text, None, "a-long-random-string").secret(),
        /// a connection that has not sent a whole request head within this time (or idles this long
        /// between requests) is closed
        #[serde(serialize_with = "serialize_ms")]
        header_timeout: Duration = var("HEADER_TIMEOUT_MS", Web, Kind::Millis { min: 100, max: 120_000 }, Some("10000"), "10000"),
        /// a submission whose body sends no byte for this long gets 503 with Retry-After; the whole
        /// request is also limited to 30 s
        #[serde(serialize_with = "serialize_ms")]
        body_timeout: Duration = var("BODY_TIMEOUT_MS", Web, Kind::Millis { min: 100, max: 120_000 }, Some("10000"), "10000"),
        /// client connections served at once; further connections wait in the kernel's accept queue
        max_connections: usize = var("MAX_CONNECTIONS", Web, Kind::Int { min: 16, max: 1_000_000 }, Some("2048"), "2048"),
        /// submission body bytes held at once (declared by Content-Length, or read so far when
        /// chunked); past it a submission gets 503 with Retry-After at once; at least
        /// MAX_BODY_BYTES
        max_inflight_bytes: usize = var("MAX_INFLIGHT_BYTES", Web, Kind::Int { min: 1 << 20, max: 16 << 30 }, Some("67108864"), "67108864"),
        /// submissions in progress at once; past it a submission gets 503 with Retry-After at once
        max_inflight_requests: usize = var("MAX_INFLIGHT_REQUESTS", Web, Kind::Int { min: 1, max: 1_000_000 }, Some("1024"), "1024"),
        /// also accept HTTP/2 without TLS (h2c, prior knowledge) on PORT; off, the HTTP/2 preface
        /// gets the connection closed and `Upgrade: h2c` is ignored
        http2_cleartext: bool = var("HTTP2_CLEARTEXT", Web, Kind::Bool, Some("false"), "true"),
        /// origins whose browser pages may submit to /submit: `*` (any), or a comma-separated list
        /// of `scheme://host[:port]`; a request whose Origin header is not allowed gets 403;
        /// requests without Origin (SDKs, servers) are unaffected
        cors: CorsOrigins = var("CORS_ALLOWED_ORIGINS", Web, Kind::Origins, Some("*"), "https://app.example.com,https://example.org"),
        /// how long a browser may reuse a /submit preflight answer (Access-Control-Max-Age, in
        /// whole seconds)
        #[serde(serialize_with = "serialize_ms")]
        cors_max_age: Duration = var("CORS_MAX_AGE_MS", Web, Kind::Millis { min: 0, max: 86_400_000 }, Some("86400000"), "86400000"),
        /// when set, the `wharf-canary` namespace accepts only submissions whose X-Canary-Token
        /// header carries it, and `wharf canary` sends it; unset, that namespace is treated like
        /// any other
        canary_token: Option<Secret> = var("CANARY_TOKEN", Both, Kind::Text, None, "another-long-random-string").secret(),
        ;
        /// The `DEBUG_VIEW_*` variables; the view is off unless `DEBUG_VIEW_TOKEN` is set.
        debug_view: DebugViewSettings,
    }
}

settings! {
    /// The live debug view: documents tagged `X-Debug-ID`, kept per tag in capped Redis streams.
    pub struct DebugViewSettings {
        /// enables the live debug view at /debug/ for whoever presents this token (login form or
        /// `Authorization: Bearer`); unset, /debug/ answers 404 and nothing is kept
        token: Option<Secret> = var("DEBUG_VIEW_TOKEN", Web, Kind::Text, None, "a-third-long-random-string").secret(),
        /// documents kept per X-Debug-ID tag for the debug view, newest first
        max_entries: usize = var("DEBUG_VIEW_MAX_ENTRIES", Web, Kind::Int { min: 1, max: 1_000 }, Some("50"), "50"),
        /// X-Debug-ID tags the debug view lists at once; the least recently seen beyond it are
        /// dropped
        max_tags: usize = var("DEBUG_VIEW_MAX_TAGS", Web, Kind::Int { min: 1, max: 1_000 }, Some("20"), "20"),
        /// a tag's documents are deleted this long after its last submission
        #[serde(serialize_with = "serialize_ms")]
        ttl: Duration = var("DEBUG_VIEW_TTL_MS", Web, Kind::Millis { min: 60_000, max: 604_800_000 }, Some("3600000"), "3600000"),
    }
}

settings! {
    /// The worker role: its bucket, batching, holding and delivery.
    pub struct WorkerSettings {
        /// a batch is flushed when it holds this many documents
        batch_max_documents: usize = var("BATCH_MAX_DOCUMENTS", Worker, Kind::Int { min: 1, max: 1_000_000 }, Some("1000"), "1000"),
        /// a batch is flushed when its bodies reach this many bytes
        batch_max_bytes: usize = var("BATCH_MAX_BYTES", Worker, Kind::Int { min: 1, max: 1 << 30 }, Some("8388608"), "8388608"),
        /// a batch is flushed when its oldest document is this old
        #[serde(serialize_with = "serialize_ms")]
        batch_max_age: Duration = var("BATCH_MAX_AGE_MS", Worker, Kind::Millis { min: 100, max: 3_600_000 }, Some("10000"), "10000"),
        /// most batches open at once; opening one more flushes the oldest
        max_open_batches: usize = var("MAX_OPEN_BATCHES", Worker, Kind::Int { min: 1, max: 10_000 }, Some("64"), "64"),
        /// entries one XREADGROUP takes from each shard
        fetch_size: usize = var("WORKER_FETCH_SIZE", Worker, Kind::Int { min: 1, max: 10_000 }, Some("500"), "500"),
        /// documents a worker holds at once, fetched, batched or uploading; at the limit it flushes
        /// its biggest batch and fetches no more
        max_held_documents: usize = var("WORKER_MAX_HELD_DOCUMENTS", Worker, Kind::Int { min: 1, max: 1_000_000 }, Some("5000"), "5000"),
        /// body bytes a worker holds at once; one more fetch may go over it
        max_held_bytes: usize = var("WORKER_MAX_HELD_BYTES", Worker, Kind::Int { min: 1 << 20, max: 1 << 34 }, Some("67108864"), "67108864"),
        /// longest an idle worker's XREADGROUP blocks; new entries wake it at once
        #[serde(serialize_with = "serialize_ms")]
        poll_interval: Duration = var("WORKER_POLL_INTERVAL_MS", Worker, Kind::Millis { min: 10, max: 10_000 }, Some("1000"), "1000"),
        /// entries left unacknowledged and unrenewed this long (by the Redis clock) are taken over
        /// by another worker; live workers renew theirs every third of it
        #[serde(serialize_with = "serialize_ms")]
        claim_idle: Duration = var("WORKER_CLAIM_IDLE_MS", Worker, Kind::Millis { min: 1_000, max: 3_600_000 }, Some("10000"), "10000"),
        /// refused uploads of a batch, counted once S3 has refused it for S3_REFUSAL_GRACE_MS,
        /// before its documents are dead-lettered
        max_attempts: u32 = var("MAX_ATTEMPTS", Worker, Kind::Int { min: 1, max: 1_000 }, Some("10"), "10"),
        /// how long S3 must refuse a batch (AccessDenied, invalid request) before refusals count
        /// toward MAX_ATTEMPTS; transient errors never count
        #[serde(serialize_with = "serialize_ms")]
        refusal_grace: Duration = var("S3_REFUSAL_GRACE_MS", Worker, Kind::Millis { min: 0, max: 86_400_000 }, Some("300000"), "300000"),
        /// a document (same docId and body) landed within this window is not written again; the
        /// docId ledger in Redis holds about 230 bytes per document in the window (230 MB per
        /// million); 0 turns it off
        #[serde(serialize_with = "serialize_ms")]
        dedup_window: Duration = var("DEDUP_WINDOW_MS", Worker, Kind::Millis { min: 0, max: 604_800_000 }, Some("3600000"), "3600000"),
        /// compression of the NDJSON objects: `gzip` (`.ndjson.gz`) or `zstd` (`.ndjson.zst`)
        output_compression: Compression = var("OUTPUT_COMPRESSION", Worker, Kind::Choice(&["gzip", "zstd"]), Some("gzip"), "zstd"),
        /// TTL of the liveness record each worker publishes for `__heartbeat__`, by the Redis clock
        #[serde(serialize_with = "serialize_ms")]
        liveness_ttl: Duration = var("LIVENESS_TTL_MS", Worker, Kind::Millis { min: 1_000, max: 600_000 }, Some("15000"), "15000"),
        ;
        /// The `S3_*` variables: bucket, key prefix and endpoint.
        s3: S3Settings,
    }
}

settings! {
    /// The bucket the worker writes to (and `wharf canary` and `wharf landed` read).
    pub struct S3Settings {
        /// bucket the worker writes batches to
        bucket: String = var("S3_BUCKET", Worker, Kind::Text, None, "com-example-dev-us-west-2-wharf").required(Required::ForS3),
        /// prefix of every object key
        prefix: String = var("S3_PREFIX", Worker, Kind::Text, Some(""), "landing/"),
        /// S3-compatible endpoint (path-style addressing); unset uses AWS
        #[serde(serialize_with = "serialize_redacted_url")]
        endpoint_url: Option<String> = var("S3_ENDPOINT_URL", Worker, Kind::Url, None, "http://s3:9000"),
    }
}

impl DebugViewSettings {
    /// The token, when the view is on.
    pub fn enabled(&self) -> Option<&Secret> {
        self.token.as_ref()
    }
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
    /// The variable's name (`environment` when the environment itself is unreadable).
    pub variable: String,
    /// What is wrong, phrased to follow the name: "is required but not set".
    pub message: String,
    /// An example of a valid value, shown as `NAME=example` after the message.
    pub example: String,
}

/// Everything wrong with the configuration, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Every variable that is missing, malformed, out of bounds or at odds with another.
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, format_problems(.0))]
    Invalid(Vec<Problem>),
    /// `CONFIG_URL` is set but its document could not be used; no variable was checked.
    #[error("CONFIG_URL could not be used: {0}")]
    ConfigUrl(#[from] ConfigUrlError),
}

impl ConfigError {
    /// The problems, one per variable at fault; none for a `CONFIG_URL` failure.
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

/// Loads the settings from the process environment.
pub fn from_env(needs: impl Into<Needs>) -> Result<Settings, ConfigError> {
    from_vars(needs, std::env::vars())
}

/// Loads the settings from the given variables (the environment, or a test's map), over the
/// defaults `CONFIG_URL` names when it is set.
pub fn from_vars(
    needs: impl Into<Needs>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let env: BTreeMap<String, String> = envy::from_iter(vars).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            variable: "environment".into(),
            message: e.to_string(),
            example: "valid UTF-8".into(),
        }])
    })?;
    // envy lowercases the names; only the catalogue's are kept.
    let env: BTreeMap<String, String> = env
        .into_iter()
        .map(|(name, value)| (name.to_ascii_uppercase(), value))
        .filter(|(name, _)| catalog::find(name).is_some())
        .collect();
    let mut values = match env.get("CONFIG_URL").filter(|u| !u.trim().is_empty()) {
        Some(url) => config_url::fetch_defaults(url)?,
        None => BTreeMap::new(),
    };
    values.extend(env);
    build(needs.into(), &values)
}

fn build(needs: Needs, values: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
    let mut p = Parser::new(values, needs);
    let settings = Settings::load(&mut p);
    let (redis, web, worker) = (&settings.redis, &settings.web, &settings.worker);
    if redis.cluster && redis.db != 0 {
        p.problem(
            "REDIS_DB",
            "must be 0 with REDIS_CLUSTER=true: a Redis Cluster has only database 0",
        );
    }
    let role = p.needs().role;
    if role == Some(Role::Worker) && worker.claim_idle < worker.poll_interval * 3 {
        p.problem(
            "WORKER_CLAIM_IDLE_MS",
            format!(
                "must be at least 3 x WORKER_POLL_INTERVAL_MS ({} ms): a live worker renews its entries every third of it",
                worker.poll_interval.as_millis()
            ),
        );
    }
    if role == Some(Role::Worker) && worker.claim_idle <= redis.timeout * 3 {
        p.problem(
            "WORKER_CLAIM_IDLE_MS",
            format!(
                "must be more than 3 x REDIS_TIMEOUT_MS ({} ms), or one slow renewal lets another worker take live entries",
                redis.timeout.as_millis()
            ),
        );
    }
    if role == Some(Role::Web) && web.max_inflight_bytes < web.max_body_bytes {
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
    Ok(settings)
}

#[cfg(test)]
mod tests;
