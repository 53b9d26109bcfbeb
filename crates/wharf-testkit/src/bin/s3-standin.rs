//! `s3-standin`: a small S3-protocol server (s3s-fs) for docker-compose CI runs and benchmarks.
//!
//! Usage: `s3-standin --root DIR --host H --port P --access-key K --secret-key S [--bucket B]...`,
//! and `s3-standin --healthcheck [--host H] [--port P]` to probe a running one (a container
//! health check that needs no curl).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "s3-standin",
    about = "An S3-protocol server storing objects in a directory"
)]
struct Opt {
    /// Directory holding one sub-directory per bucket.
    #[arg(long, required_unless_present = "healthcheck")]
    root: Option<std::path::PathBuf>,
    /// Address to listen on (and to probe with --healthcheck).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The access key clients sign with.
    #[arg(long, required_unless_present = "healthcheck")]
    access_key: Option<String>,
    /// The secret key clients sign with.
    #[arg(long, required_unless_present = "healthcheck")]
    secret_key: Option<String>,
    /// Buckets to create at start-up (repeatable).
    #[arg(long)]
    bucket: Vec<String>,
    /// Instead of serving: exit 0 if an S3 server answers HTTP on --host/--port, else 1.
    #[arg(long)]
    healthcheck: bool,
}

/// Any HTTP answer counts (an anonymous request gets 403): the server is up and serving.
fn healthcheck(host: &str, port: u16) -> Result<(), String> {
    // A server bound to every address is probed on loopback.
    let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
    let timeout = Duration::from_secs(2);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no HTTP answer from {addr}: {e}"))?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(format!(
            "{addr} answered {:?}, not HTTP",
            String::from_utf8_lossy(&head)
        ))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let opt = Opt::parse();
    if opt.healthcheck {
        return match healthcheck(&opt.host, opt.port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("s3-standin: unhealthy: {why}");
                ExitCode::FAILURE
            }
        };
    }
    // clap requires all three unless --healthcheck is given.
    let (Some(root), Some(access_key), Some(secret_key)) =
        (opt.root, opt.access_key, opt.secret_key)
    else {
        eprintln!("s3-standin: --root, --access-key and --secret-key are required");
        return ExitCode::from(2);
    };
    for bucket in &opt.bucket {
        if let Err(e) = std::fs::create_dir_all(root.join(bucket)) {
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
        root.display(),
        opt.host,
        opt.port
    );
    let stop = wharf_testkit::terminated();
    match wharf_testkit::s3::serve(
        listener,
        &root,
        &access_key,
        &secret_key,
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
