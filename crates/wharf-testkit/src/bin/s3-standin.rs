//! `s3-standin`: a small S3-protocol server (s3s-fs) for docker-compose CI runs and benchmarks.
//!
//! Usage: `s3-standin --root DIR --host H --port P --access-key K --secret-key S`

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "s3-standin",
    about = "An S3-protocol server storing objects in a directory"
)]
struct Opt {
    /// Directory holding one sub-directory per bucket.
    #[arg(long)]
    root: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 9000)]
    port: u16,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    /// Buckets to create at start-up (repeatable).
    #[arg(long)]
    bucket: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let opt = Opt::parse();
    for bucket in &opt.bucket {
        if let Err(e) = std::fs::create_dir_all(opt.root.join(bucket)) {
            eprintln!("s3-standin: cannot create bucket {bucket}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let listener = match tokio::net::TcpListener::bind((opt.host.as_str(), opt.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("s3-standin: cannot bind {}:{}: {e}", opt.host, opt.port);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "s3-standin: serving {} on http://{}:{}",
        opt.root.display(),
        opt.host,
        opt.port
    );
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    match wharf_testkit::s3::serve(
        listener,
        &opt.root,
        &opt.access_key,
        &opt.secret_key,
        Arc::new(AtomicBool::new(false)),
        stop,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3-standin: {e}");
            ExitCode::FAILURE
        }
    }
}
