//! The command line (clap) and the small operator tools: `check` and `config`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wharf_settings::{Role, Settings};

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
    /// Move every dead-lettered job back to the queue, attempts reset (after fixing the cause).
    Redrive,
    /// Probe the local web role's /__lbheartbeat__; exit 0 if it answers 200, else 1 (for container health checks).
    Check(CheckArgs),
    /// Print the effective configuration as JSON, secrets redacted; exit 2 listing every problem if it is invalid.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Base URL of the web role; defaults to http://127.0.0.1:$PORT.
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
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
pub struct ConfigArgs {
    /// Which role's requirements to validate against.
    #[arg(long, value_enum, default_value_t = ConfigRole::Web)]
    pub role: ConfigRole,
}

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

/// `wharf check`: one GET of `/__lbheartbeat__`.
pub fn check(args: CheckArgs) -> ExitCode {
    let base = args.url.unwrap_or_else(|| {
        let port = wharf_settings::from_env(Role::Inspect)
            .map(|s| s.web.port)
            .unwrap_or(8000);
        format!("http://127.0.0.1:{port}")
    });
    let url = format!("{}/__lbheartbeat__", base.trim_end_matches('/'));
    let outcome = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .and_then(|client| client.get(&url).send());
    match outcome {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("wharf check: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wharf check: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wharf config`: the effective configuration, secrets redacted.
pub fn print_config(settings: &Settings) -> ExitCode {
    match serde_json::to_string_pretty(settings) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf config: {e}");
            ExitCode::FAILURE
        }
    }
}
