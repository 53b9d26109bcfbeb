//! Baseline (a) of the benchmark: axum + tokio answering `POST`/`PUT /submit/...` with one Redis RPUSH of the body, nothing else.
//!
//! Usage: `wharf-bench-baseline [--host 127.0.0.1] [--port 8001] [--redis redis://127.0.0.1:6379/0] [--key baseline]`
//! It uses the same axum, tokio and redis crates (and the same multiplexed connection manager) as
//! `wharf web`, so the gap between the two is Wharf's own per-request work.

use std::process::ExitCode;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use redis::aio::ConnectionManager;

#[derive(Clone)]
struct Baseline {
    conn: ConnectionManager,
    key: String,
}

async fn submit(State(state): State<Baseline>, body: Bytes) -> StatusCode {
    let mut conn = state.conn.clone();
    let pushed: Result<i64, redis::RedisError> = redis::cmd("RPUSH")
        .arg(&state.key)
        .arg(body.as_ref())
        .query_async(&mut conn)
        .await;
    match pushed {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn flag(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: wharf-bench-baseline [--host H] [--port P] [--redis URL] [--key LIST]");
        return ExitCode::SUCCESS;
    }
    let host = flag(&args, "--host", "127.0.0.1");
    let port = flag(&args, "--port", "8001");
    let redis_url = flag(&args, "--redis", "redis://127.0.0.1:6379/0");
    let key = flag(&args, "--key", "baseline");

    let conn = match redis::Client::open(redis_url.as_str()) {
        Ok(client) => match ConnectionManager::new(client).await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("wharf-bench-baseline: cannot connect to {redis_url}: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("wharf-bench-baseline: bad redis URL {redis_url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/submit/{*rest}", post(submit).put(submit))
        .with_state(Baseline { conn, key });
    let listener = match tokio::net::TcpListener::bind(format!("{host}:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wharf-bench-baseline: cannot bind {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    match axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf-bench-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}
