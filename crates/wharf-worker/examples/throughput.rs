//! Ad-hoc throughput measurement: pre-loads N submissions into a real redis-server, runs the worker
//! in-process against an in-process s3s-fs server, and reports documents per second into S3.
//!
//! `cargo run --release -p wharf-worker --example throughput -- [N] [BODY_BYTES] [FETCH_SIZE]`

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use wharf_queue::{Enqueuer, Route, Submission};
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn count_lines(s3: &S3Server, seen: &mut BTreeMap<String, usize>) -> usize {
    for key in s3.keys() {
        if seen.contains_key(&key) {
            continue;
        }
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&s3.object(&key)[..])
            .read_to_string(&mut text)
            .is_ok()
        {
            seen.insert(key, text.lines().count());
        }
    }
    seen.values().sum()
}

#[tokio::main]
async fn main() {
    let total = arg(1, 20_000);
    let size = arg(2, 1024);
    let fetch = arg(3, 500);
    let redis = RedisServer::start();
    let s3 = S3Server::start("bench");
    for (k, v) in s3.env() {
        if k.starts_with("AWS_") {
            std::env::set_var(k, v);
        }
    }
    let mut vars: Vec<(String, String)> = s3.env();
    vars.push(("REDIS_HOST".into(), "127.0.0.1".into()));
    vars.push(("REDIS_PORT".into(), redis.port().to_string()));
    vars.push(("WORKER_FETCH_SIZE".into(), fetch.to_string()));
    vars.push(("LOG_LEVEL".into(), "warn".into()));
    let settings = match wharf_settings::from_vars(wharf_settings::Role::Worker, vars) {
        Ok(s) => s,
        Err(e) => return eprintln!("{e}"),
    };
    let enqueuer = match wharf_queue::connect(&settings.redis) {
        Ok(conn) => Enqueuer::new(conn, settings.redis.queue_shards),
        Err(e) => return eprintln!("{e}"),
    };
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let mut batch = Vec::new();
    for n in 0..total {
        let mut attributes = BTreeMap::new();
        attributes.insert("uri".to_string(), format!("/submit/bench/doc/1/{n}"));
        batch.push(Submission::new(
            Route {
                namespace: ["bench", "other"][n % 2].into(),
                doc_type: "doc".into(),
                doc_version: "1".into(),
                doc_id: n.to_string(),
            },
            attributes,
            body.clone(),
        ));
        if batch.len() == 1000 || n + 1 == total {
            if let Err(e) = enqueuer.enqueue(&batch).await {
                return eprintln!("enqueue: {e}");
            }
            batch.clear();
        }
    }
    eprintln!(
        "enqueued {total} submissions of {size} bytes; starting the worker (fetch size {fetch})"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = cadence::StatsdClient::from_sink("wharf", cadence::NopMetricSink);
    // Its own thread and runtime, as the binary's `block_on`: rustc cannot prove the worker's
    // future `Send` for `tokio::spawn` (apalis's worker future and a higher-ranked lifetime).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return eprintln!("worker runtime: {e}"),
    };
    let worker = std::thread::spawn(move || {
        runtime.block_on(wharf_worker::run(settings, metrics, async move {
            let _ = stop_rx.await;
        }))
    });
    let started = Instant::now();
    let mut seen = BTreeMap::new();
    loop {
        let landed = count_lines(&s3, &mut seen);
        if landed >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!("gave up: {landed}/{total} after 600 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "{total} documents ({size}-byte bodies) in S3 in {:.2} s: {:.0} docs/s, {} objects",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        seen.len()
    );
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
}
