//! `statsd-sink`: prints every StatsD line it receives over UDP to stdout, one per line (the development stack's metrics view).
//!
//! Usage: `statsd-sink [--host H] [--port P]`

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Print every StatsD line received over UDP to stdout.
#[derive(Parser, Debug)]
#[command(name = "statsd-sink")]
struct Opt {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// UDP port to listen on.
    #[arg(long, default_value_t = 8125)]
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opt = Opt::parse();
    let socket = match tokio::net::UdpSocket::bind((opt.host.as_str(), opt.port)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "statsd-sink: cannot bind udp {}:{}: {e}",
                opt.host, opt.port
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("statsd-sink: listening on udp {}:{}", opt.host, opt.port);
    let stop = wharf_testkit::terminated();
    tokio::pin!(stop);
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            r = socket.recv(&mut buf) => r,
            _ = &mut stop => return ExitCode::SUCCESS,
        };
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                eprintln!("statsd-sink: receive failed: {e}");
                continue;
            }
        };
        // One datagram may pack several metrics, one per line.
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut out = std::io::stdout().lock();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
        // docker logs should show a metric as soon as it arrives, not when a buffer fills.
        if out.flush().is_err() {
            return ExitCode::FAILURE;
        }
    }
}
