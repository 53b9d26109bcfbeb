//! The `wharf` entrypoint: parses the command line, loads configuration, starts telemetry and runs one role or tool.

mod cli;
mod landed;
mod signals;

use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: a submission makes a few dozen small allocations, and
/// glibc's malloc/free were a fifth of the web role's CPU. Measured against glibc (and mimalloc)
/// with the same-run baseline: web CPU per request -18 % (mimalloc -16 %), peak RSS 21 MB
/// against 18 MB (mimalloc 43 MB). See docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use wharf_settings::{ConfigError, Needs, Role, Settings};

use crate::cli::{Cli, Command};

/// Exit code for a misconfiguration, distinct from runtime failures (1).
const EXIT_MISCONFIGURED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Web);
    match command {
        Command::Check(args) => cli::check(args),
        Command::Config(args) if args.list => cli::print_variables(),
        Command::Config(args) => match load(Role::from(args.role).into()) {
            Ok(settings) => cli::print_config(&settings),
            Err(code) => code,
        },
        Command::Web => run_role(Role::Web.into(), "web", |settings, metrics| async move {
            let app = wharf_web::WebApp::build(&settings, metrics).await?;
            tracing::info!(type = "web.start", addr = %app.local_addr()?, "wharf web listening");
            app.run_until_stopped(signals::terminated()).await?;
            Ok(())
        }),
        Command::Worker => run_role(
            Role::Worker.into(),
            "worker",
            |settings, metrics| async move {
                wharf_worker::run(settings, metrics, signals::terminated()).await?;
                Ok(())
            },
        ),
        Command::Canary(args) => run_role(
            cli::CANARY_NEEDS,
            "canary",
            |settings, _metrics| async move {
                let timeout = std::time::Duration::from_secs(args.timeout);
                let report = wharf_worker::canary::run(&settings, &args.url, timeout).await?;
                tracing::info!(type = "canary", doc_id = %report.doc_id, object = %report.object_key, elapsed_ms = report.elapsed.as_millis() as u64, "canary landed in S3");
                println!(
                    "canary {} landed in S3 as {} after {:?}",
                    report.doc_id, report.object_key, report.elapsed
                );
                Ok(())
            },
        ),
        Command::Landed(args) => landed(args),
        Command::Redrive => run_role(
            cli::REDIS_TOOL_NEEDS,
            "redrive",
            |settings, _metrics| async move {
                let moved = wharf_worker::redrive(&settings).await?;
                tracing::info!(type = "redrive", moved, "dead letters moved back to their shard streams");
                println!("{moved} dead letter(s) moved back to their shard streams");
                Ok(())
            },
        ),
    }
}

/// `wharf landed`: an operator's read-only look at S3. No telemetry, so stdout holds only the
/// report and nothing is sent to Sentry or StatsD.
fn landed(args: cli::LandedArgs) -> ExitCode {
    let settings = match load(cli::CANARY_NEEDS) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let request = landed::Request {
        prefix: args.prefix,
        decode: args.decode,
        limit: usize::try_from(args.limit).unwrap_or(usize::MAX),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf landed: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(landed::run(&settings, &request)) {
        Ok(()) => ExitCode::SUCCESS,
        // `wharf landed | head` closes stdout early; that is not a failure.
        Err(landed::LandedError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf landed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads what `needs` asks for; on error prints every problem to stderr and returns exit code 2.
fn load(needs: Needs) -> Result<Settings, ExitCode> {
    wharf_settings::from_env(needs).map_err(|e: ConfigError| {
        eprintln!("wharf: {e}");
        ExitCode::from(EXIT_MISCONFIGURED)
    })
}

/// Loads settings, starts telemetry and a tokio runtime, and runs `body` to completion.
fn run_role<F, Fut>(needs: Needs, name: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Settings, wharf_telemetry::StatsdClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let settings = match load(needs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _telemetry = match wharf_telemetry::init(&settings.telemetry, name) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(EXIT_MISCONFIGURED);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(type = "startup.runtime", error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let metrics = wharf_telemetry::build_metrics(&settings.telemetry, name);
        body(settings, metrics).await
    });
    match result {
        Ok(()) => {
            tracing::info!(type = "shutdown", role = name, "stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(type = "fatal", role = name, error = format!("{e:#}"), "stopped on an error");
            eprintln!("wharf {name}: {e:#}");
            // A Redis set up to lose data is a misconfiguration like a bad variable: exit 2, so
            // an orchestrator does not restart into the same refusal as if it were an outage.
            let misconfigured = e.chain().any(|cause| {
                cause
                    .downcast_ref::<wharf_queue::QueueError>()
                    .is_some_and(wharf_queue::QueueError::is_misconfiguration)
            });
            if misconfigured {
                ExitCode::from(EXIT_MISCONFIGURED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
