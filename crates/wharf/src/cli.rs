//! The command line (clap) and the small operator tools: `check` and `config`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wharf_settings::{Needs, Role, Settings};

/// Wharf accepts documents over HTTP (Mozilla's edge-server specification), queues them in Redis
/// and lands them in S3 as gzip NDJSON. One binary, two roles: `web` (the default) and `worker`.
///
/// Configuration comes from environment variables (see `wharf config` and the README).
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP on HOST:PORT: submissions and the Dockerflow endpoints (the default command).
    Web,
    /// Consume queued submissions and write them to S3 in batches.
    Worker,
    /// Submit a unique document to the web role at --url and wait until it is in S3 (deploy smoke test); exit 0 or 1.
    Canary(CanaryArgs),
    /// Move every dead letter back to its shard stream as a new entry (after fixing the cause).
    Redrive,
    /// List the newest objects in S3 with their document counts; --decode prints the documents (run with the worker's S3 settings).
    Landed(LandedArgs),
    /// Container health check: exit 0 if the local web role answers /__lbheartbeat__ (or, for a worker, its liveness record in Redis is fresh), else 1.
    Check(CheckArgs),
    /// Print the effective configuration as JSON, secrets redacted; exit 2 listing every problem if it is invalid.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check. `auto` checks a worker when PID 1 is `wharf worker` (a worker container), else the web role.
    #[arg(long, value_enum, default_value_t = CheckTarget::Auto)]
    pub role: CheckTarget,
    /// Base URL of the web role; defaults to http://127.0.0.1:$PORT.
    #[arg(long)]
    pub url: Option<String>,
    /// Process id of the worker to check (in a container, the worker is PID 1).
    #[arg(long, default_value_t = 1)]
    pub pid: u32,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckTarget {
    Auto,
    Web,
    Worker,
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Base URL of the web role, e.g. https://wharf.example.com.
    #[arg(long)]
    pub url: String,
    /// Seconds to wait for the document to land in S3 (allow BATCH_MAX_AGE_MS and more).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LandedArgs {
    /// Only keys starting with this, after S3_PREFIX, e.g. `my-namespace/my-doc/1/`.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub prefix: String,
    /// Also print every document: its attributes and its body (gunzipped when gzip, escaped when not text).
    #[arg(long)]
    pub decode: bool,
    /// How many objects to show, the most recently modified first.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Which role's requirements to validate against.
    #[arg(long, value_enum, default_value_t = ConfigRole::Web)]
    pub role: ConfigRole,
    /// Print every variable instead (name, role, default, bounds, meaning), as a Markdown table:
    /// the README's configuration table.
    #[arg(long)]
    pub list: bool,
}

/// `wharf canary` and `wharf landed`: S3 (with the worker's settings), and no Redis.
pub const CANARY_NEEDS: Needs = Needs {
    redis: false,
    s3: true,
    role: None,
};

/// `wharf redrive` and the worker's `wharf check`: Redis only.
pub const REDIS_TOOL_NEEDS: Needs = Needs {
    redis: true,
    s3: false,
    role: None,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConfigRole {
    Web,
    Worker,
}

impl From<ConfigRole> for Role {
    fn from(role: ConfigRole) -> Self {
        match role {
            ConfigRole::Web => Role::Web,
            ConfigRole::Worker => Role::Worker,
        }
    }
}

/// `wharf check`: the container health check for either role.
pub fn check(args: CheckArgs) -> ExitCode {
    let target = match args.role {
        CheckTarget::Auto if pid1_is_worker() => CheckTarget::Worker,
        CheckTarget::Auto => CheckTarget::Web,
        explicit => explicit,
    };
    let outcome = match target {
        CheckTarget::Worker => check_worker(args.pid, Duration::from_secs(args.timeout)),
        _ => check_web(args.url, Duration::from_secs(args.timeout)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("wharf check: {why}");
            ExitCode::FAILURE
        }
    }
}

/// One GET of `/__lbheartbeat__`, which touches no backing service.
fn check_web(url: Option<String>, timeout: Duration) -> Result<(), String> {
    let base = url.unwrap_or_else(|| {
        let port = wharf_settings::from_env(Needs::NOTHING)
            .map(|s| s.web.port)
            .unwrap_or(8000);
        format!("http://127.0.0.1:{port}")
    });
    let url = format!("{}/__lbheartbeat__", base.trim_end_matches('/'));
    let response = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .and_then(|client| client.get(&url).send())
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}

/// Whether this worker process has a fresh liveness record in Redis (the worker refreshes it
/// every third of LIVENESS_TTL_MS, so a stuck or disconnected worker turns unhealthy).
fn check_worker(pid: u32, timeout: Duration) -> Result<(), String> {
    let settings = wharf_settings::from_env(REDIS_TOOL_NEEDS).map_err(|e| e.to_string())?;
    let prefix = wharf_worker::naming::process_prefix(pid);
    let live = wharf_queue::liveness::is_live_blocking(&settings.redis, &prefix, timeout)
        .map_err(|e| format!("cannot read the liveness records from Redis: {e}"))?;
    if live {
        Ok(())
    } else {
        Err(format!(
            "no fresh liveness record for worker {prefix}* in Redis"
        ))
    }
}

/// Whether PID 1 is `wharf worker`: the image's entrypoint in a worker container.
fn pid1_is_worker() -> bool {
    std::fs::read("/proc/1/cmdline")
        .map(|raw| {
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"wharf")) && args.contains(&&b"worker"[..])
        })
        .unwrap_or(false)
}

/// `wharf config --list`: every variable the settings declare, as the README's table.
pub fn print_variables() -> ExitCode {
    emit(&wharf_settings::catalog::markdown_table())
}

/// `wharf config`: the effective configuration, secrets redacted.
pub fn print_config(settings: &Settings) -> ExitCode {
    match serde_json::to_string_pretty(settings) {
        Ok(text) => emit(&format!("{text}\n")),
        Err(e) => {
            eprintln!("wharf config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout; a reader that stops early (`wharf config | head`) is no failure.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf config: {e}");
            ExitCode::FAILURE
        }
    }
}
