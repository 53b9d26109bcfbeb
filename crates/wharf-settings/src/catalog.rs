//! The catalogue of every environment variable Wharf reads: the one place names, defaults and meanings live.

/// Which role reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read by both `web` and `worker`.
    Both,
    /// Read by `web` only.
    Web,
    /// Read by `worker` (and the tools that use S3: `canary`).
    Worker,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Both => "both",
            Scope::Web => "web",
            Scope::Worker => "worker",
        }
    }
}

/// One environment variable: its name, default and the example shown when it is wrong.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub scope: Scope,
    /// `None` means unset by default (optional, or required where `required` says so).
    pub default: Option<&'static str>,
    pub required: bool,
    pub secret: bool,
    pub example: &'static str,
    pub help: &'static str,
}

const fn var(
    name: &'static str,
    scope: Scope,
    default: Option<&'static str>,
    example: &'static str,
    help: &'static str,
) -> Variable {
    Variable {
        name,
        scope,
        default,
        required: false,
        secret: false,
        example,
        help,
    }
}

const fn required(mut v: Variable) -> Variable {
    v.required = true;
    v
}

const fn secret(mut v: Variable) -> Variable {
    v.secret = true;
    v
}

/// Every variable, in the order the README lists them.
pub const VARIABLES: &[Variable] = &[
    var("CONFIG_URL", Scope::Both, None, "file:///etc/wharf/config.json",
        "URL (file://, http://, https://) of a JSON object whose keys are these variable names; it supplies defaults, the environment overrides it; unreachable or invalid stops the process"),
    var("ENVIRONMENT", Scope::Both, Some("development"), "prod",
        "deployment name; Sentry environment and the `env` tag on every metric"),
    required(var("REDIS_HOST", Scope::Both, None, "example.cache.amazonaws.com",
        "Redis host holding the submission queue")),
    var("REDIS_PORT", Scope::Both, Some("6379"), "6379", "Redis port (1 to 65535)"),
    var("REDIS_DB", Scope::Both, Some("0"), "0", "Redis database number (0 to 15)"),
    secret(var("REDIS_PASSWORD", Scope::Both, None, "s3cret",
        "Redis AUTH password (ElastiCache auth token)")),
    var("REDIS_TLS", Scope::Both, Some("false"), "true",
        "connect to Redis over TLS (ElastiCache in-transit encryption)"),
    var("REDIS_TIMEOUT_MS", Scope::Both, Some("1000"), "1000",
        "connect and per-command timeout for Redis, in milliseconds (50 to 60000)"),
    var("QUEUE_SHARDS", Scope::Both, Some("4"), "4",
        "number of queue shards, streams `wharf:{<n>}:submissions` (1 to 1024); a submission's shard comes from its docId; set the same value on web and worker"),
    var("REDIS_CLUSTER", Scope::Both, Some("false"), "true",
        "REDIS_HOST:REDIS_PORT is a Redis Cluster node or configuration endpoint; the shard streams spread over its masters by their hash tags; REDIS_DB must be 0"),
    var("REDIS_MIN_REPLICAS_ACK", Scope::Both, Some("0"), "1",
        "replicas a submission's write must reach (Redis WAIT, once per pipeline) before it is answered 200; unconfirmed within REDIS_TIMEOUT_MS gives 503; 0 trusts asynchronous replication, so a failover can lose the last acknowledged writes (0 to 5)"),
    var("REDIS_MEMORY_HIGH_WATER_PERCENT", Scope::Web, Some("80"), "80",
        "submissions get 507 once Redis used_memory passes this percent of maxmemory (on any master), leaving room for workers to acknowledge and delete; ignored when maxmemory is 0 (10 to 95)"),
    var("REDIS_ALLOW_EVICTION_DATA_LOSS", Scope::Both, Some("false"), "true",
        "start even though Redis maxmemory-policy is not noeviction, accepting that Redis may silently delete queued documents under memory pressure"),
    secret(var("SENTRY_DSN", Scope::Both, None, "https://public:secret@sentry.example.com/1",
        "Sentry DSN; empty or unset disables Sentry")),
    var("STATSD_HOST", Scope::Both, None, "172.17.42.1",
        "StatsD/DogStatsD host; unset drops metrics without error"),
    var("STATSD_PORT", Scope::Both, Some("8125"), "8125", "StatsD UDP port (1 to 65535)"),
    var("STATSD_PREFIX", Scope::Both, Some("wharf"), "wharf", "prefix of every metric name"),
    var("LOG_FORMAT", Scope::Both, Some("json"), "pretty",
        "`json` (MozLog, for production) or `pretty` (human-readable, for development)"),
    var("LOG_LEVEL", Scope::Both, Some("info"), "info,wharf_web=debug",
        "tracing filter directive, checked at start-up with the other settings"),
    var("SHUTDOWN_GRACE_MS", Scope::Both, Some("8000"), "8000",
        "on SIGTERM, time allowed to finish in-flight requests (web) or flush open batches (worker); fits docker stop's 10 s (100 to 600000)"),
    var("HOST", Scope::Web, Some("0.0.0.0"), "0.0.0.0", "address the web role binds"),
    var("PORT", Scope::Web, Some("8000"), "8000", "port the web role binds (0 picks a free one)"),
    var("MAX_BODY_BYTES", Scope::Web, Some("1048576"), "1048576",
        "largest accepted submission body; larger gets 413 (1 to 268435456)"),
    var("MAX_PATH_BYTES", Scope::Web, Some("10240"), "10240",
        "longest accepted request path and query; longer gets 414 (32 to 16384)"),
    var("MAX_QUEUE_DEPTH", Scope::Web, Some("1000000"), "1000000",
        "queue backlog above which submissions get 507 with Retry-After (1 to 1000000000)"),
    var("QUEUE_DEPTH_WARNING", Scope::Web, Some("100000"), "100000",
        "queue backlog above which __heartbeat__ reports a warning (1 to 1000000000)"),
    var("ALLOWED_NAMESPACES", Scope::Web, Some(""), "telemetry,eng-workflow",
        "comma-separated namespaces accepted by /submit; empty accepts all; others get 404 (list `wharf-canary` too, or set CANARY_TOKEN, for `wharf canary`)"),
    var("DROP_CLIENT_IP", Scope::Web, Some("false"), "true",
        "drop remote_addr and x_forwarded_for before anything is stored (IPs are personal data)"),
    var("HEARTBEAT_CACHE_MS", Scope::Web, Some("1000"), "1000",
        "how long a __heartbeat__ result is reused; concurrent requests share one run (10 to 60000)"),
    var("VERSION_FILE", Scope::Web, Some("/app/version.json"), "/app/version.json",
        "Dockerflow version object served by __version__; missing falls back to build-time values"),
    secret(var("ERROR_ENDPOINT_TOKEN", Scope::Web, None, "a-long-random-string",
        "enables GET /__error__ for requests whose X-Error-Token header carries this value; unset disables the endpoint")),
    var("HEADER_TIMEOUT_MS", Scope::Web, Some("10000"), "10000",
        "a connection that has not sent a whole request head within this time (or idles this long between requests) is closed (100 to 120000)"),
    var("BODY_TIMEOUT_MS", Scope::Web, Some("10000"), "10000",
        "a submission whose body sends no byte for this long gets 503 with Retry-After; the whole request is also limited to 30 s (100 to 120000)"),
    var("MAX_CONNECTIONS", Scope::Web, Some("2048"), "2048",
        "client connections served at once; further connections wait in the kernel's accept queue (16 to 1000000)"),
    var("MAX_INFLIGHT_BYTES", Scope::Web, Some("67108864"), "67108864",
        "submission body bytes held at once (declared by Content-Length, or read so far when chunked); past it a submission gets 503 with Retry-After at once; at least MAX_BODY_BYTES (1 MiB to 16 GiB)"),
    var("MAX_INFLIGHT_REQUESTS", Scope::Web, Some("1024"), "1024",
        "submissions in progress at once; past it a submission gets 503 with Retry-After at once (1 to 1000000)"),
    var("HTTP2_CLEARTEXT", Scope::Web, Some("false"), "true",
        "also accept HTTP/2 without TLS (h2c, prior knowledge) on PORT; off, the HTTP/2 preface gets the connection closed and `Upgrade: h2c` is ignored"),
    var("CORS_ALLOWED_ORIGINS", Scope::Web, Some("*"), "https://app.example.com,https://example.org",
        "origins whose browser pages may submit to /submit: `*` (any), or a comma-separated list of `scheme://host[:port]`; a request whose Origin header is not allowed gets 403; requests without Origin (SDKs, servers) are unaffected"),
    var("CORS_MAX_AGE_MS", Scope::Web, Some("86400000"), "86400000",
        "how long a browser may reuse a /submit preflight answer (Access-Control-Max-Age, in whole seconds) (0 to 86400000)"),
    secret(var("DEBUG_VIEW_TOKEN", Scope::Web, None, "a-third-long-random-string",
        "enables the live debug view at /debug/ for whoever presents this token (login form or `Authorization: Bearer`); unset, /debug/ answers 404 and nothing is kept")),
    var("DEBUG_VIEW_MAX_ENTRIES", Scope::Web, Some("50"), "50",
        "documents kept per X-Debug-ID tag for the debug view, newest first (1 to 1000)"),
    var("DEBUG_VIEW_MAX_TAGS", Scope::Web, Some("20"), "20",
        "X-Debug-ID tags the debug view lists at once; the least recently seen beyond it are dropped (1 to 1000)"),
    var("DEBUG_VIEW_TTL_MS", Scope::Web, Some("3600000"), "3600000",
        "a tag's documents are deleted this long after its last submission (60000 to 604800000)"),
    secret(var("CANARY_TOKEN", Scope::Both, None, "another-long-random-string",
        "when set, the `wharf-canary` namespace accepts only submissions whose X-Canary-Token header carries it, and `wharf canary` sends it; unset, that namespace is treated like any other")),
    required(var("S3_BUCKET", Scope::Worker, None, "com-example-dev-us-west-2-wharf",
        "bucket the worker writes batches to")),
    var("S3_PREFIX", Scope::Worker, Some(""), "landing/",
        "prefix of every object key"),
    var("S3_ENDPOINT_URL", Scope::Worker, None, "http://s3:9000",
        "S3-compatible endpoint (path-style addressing); unset uses AWS"),
    var("BATCH_MAX_DOCUMENTS", Scope::Worker, Some("1000"), "1000",
        "a batch is flushed when it holds this many documents (1 to 1000000)"),
    var("BATCH_MAX_BYTES", Scope::Worker, Some("8388608"), "8388608",
        "a batch is flushed when its bodies reach this many bytes (1 to 1073741824)"),
    var("BATCH_MAX_AGE_MS", Scope::Worker, Some("10000"), "10000",
        "a batch is flushed when its oldest document is this old (100 to 3600000)"),
    var("MAX_OPEN_BATCHES", Scope::Worker, Some("64"), "64",
        "most batches open at once; opening one more flushes the oldest (1 to 10000)"),
    var("WORKER_FETCH_SIZE", Scope::Worker, Some("500"), "500",
        "entries one XREADGROUP takes from each shard (1 to 10000)"),
    var("WORKER_MAX_HELD_DOCUMENTS", Scope::Worker, Some("5000"), "5000",
        "documents a worker holds at once, fetched, batched or uploading; at the limit it flushes its biggest batch and fetches no more (1 to 1000000)"),
    var("WORKER_MAX_HELD_BYTES", Scope::Worker, Some("67108864"), "67108864",
        "body bytes a worker holds at once; one more fetch may go over it (1 MiB to 16 GiB)"),
    var("WORKER_POLL_INTERVAL_MS", Scope::Worker, Some("1000"), "1000",
        "longest an idle worker's XREADGROUP blocks; new entries wake it at once (10 to 10000)"),
    var("WORKER_CLAIM_IDLE_MS", Scope::Worker, Some("10000"), "10000",
        "entries left unacknowledged and unrenewed this long (by the Redis clock) are taken over by another worker; live workers renew theirs every third of it (1000 to 3600000)"),
    var("MAX_ATTEMPTS", Scope::Worker, Some("10"), "10",
        "refused uploads of a batch, counted once S3 has refused it for S3_REFUSAL_GRACE_MS, before its documents are dead-lettered (1 to 1000)"),
    var("S3_REFUSAL_GRACE_MS", Scope::Worker, Some("300000"), "300000",
        "how long S3 must refuse a batch (AccessDenied, invalid request) before refusals count toward MAX_ATTEMPTS; transient errors never count (0 to 86400000)"),
    var("DEDUP_WINDOW_MS", Scope::Worker, Some("3600000"), "3600000",
        "a document (same docId and body) landed within this window is not written again; the docId ledger in Redis costs about 130 bytes per document in the window; 0 turns it off (0 to 604800000)"),
    var("OUTPUT_COMPRESSION", Scope::Worker, Some("gzip"), "zstd",
        "compression of the NDJSON objects: `gzip` (`.ndjson.gz`) or `zstd` (`.ndjson.zst`)"),
    var("LIVENESS_TTL_MS", Scope::Worker, Some("15000"), "15000",
        "TTL of the liveness record each worker publishes for __heartbeat__, by the Redis clock (1000 to 600000)"),
];

/// Looks a variable up by name.
pub fn find(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}
