//! One harness for tests of a running role: real Redis, S3, StatsD and Sentry, the role on port 0 with the settings a test changes, and a client.
//!
//! In the spirit of merino's `merino_test(settings_changer, |tools| …)`:
//!
//! ```no_run
//! # async fn example() {
//! use wharf_testkit::harness::{wharf_test, Role};
//! wharf_test("target/debug/wharf", Role::Web, |env| env.set("MAX_BODY_BYTES", "10"), |tools| async move {
//!     let r = tools.client.post(tools.url("/submit/ns/t/1/2c3a0767-d84a-4d02-8a92-fa54a3376049"))
//!         .body("more than ten bytes").send().await.unwrap();
//!     assert_eq!(r.status(), 413);
//! }).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::WharfProcess;
use crate::redis_server::RedisServer;
use crate::s3::S3Server;
use crate::sentry::SentryListener;
use crate::statsd::StatsdListener;

/// The bucket the harness's S3 server holds.
pub const BUCKET: &str = "wharf-test";

/// How long the harness waits for a role to come up on a loaded 2-core host.
const START: Duration = Duration::from_secs(60);

/// The role a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `wharf web`, bound to a free port and waited for.
    Web,
    /// `wharf worker`, with fast polling and liveness so that tests wait less, waited for until
    /// it has passed its start-up checks.
    Worker,
}

impl Role {
    fn arg(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }
}

/// The environment a role starts with, which a test's settings changer edits.
#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// Sets `name` to `value`, replacing what the harness chose.
    pub fn set(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    /// Leaves `name` out, so the role uses its default (or reports it missing).
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.0.remove(name);
        self
    }

    /// Sets every `(name, value)` of `vars`, in order.
    pub fn set_all(&mut self, vars: &[(&str, &str)]) -> &mut Self {
        for (name, value) in vars {
            self.set(name, value);
        }
        self
    }

    /// The value `name` will have, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The variables as the process will get them.
    pub fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// What a test gets: the running role, a client, and every server the role talks to.
pub struct Tools {
    /// The role's process: its output, its log events, signals.
    pub wharf: WharfProcess,
    /// An HTTP client for [`Tools::url`].
    pub client: reqwest::Client,
    /// The Redis the role was pointed at.
    pub redis: RedisServer,
    /// The S3-protocol server holding [`BUCKET`].
    pub s3: S3Server,
    /// Every StatsD line the role sent.
    pub statsd: StatsdListener,
    /// Every Sentry envelope the role sent.
    pub sentry: SentryListener,
    /// The environment the role was started with, for a second process or a command-line tool.
    pub env: Env,
    binary: PathBuf,
    addr: Option<SocketAddr>,
}

impl Tools {
    /// `http://<the web role's address><path>`. Panics for a worker, which serves no HTTP.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The port the web role was bound to.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("{} serves no HTTP", self.wharf.name()))
    }

    /// Runs another `wharf` command (`check`, `landed`, `canary`...) with the role's environment
    /// and `extra` on top, to completion.
    pub async fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let mut env = self.env.clone();
        env.set_all(extra);
        crate::process::run(&self.binary, args, &env.vars()).await
    }
}

/// Worker timings shorter than shipped, so that tests wait less: polling, liveness, fetch size.
pub const FAST_WORKER: [(&str, &str); 3] = [
    ("WORKER_POLL_INTERVAL_MS", "50"),
    ("LIVENESS_TTL_MS", "3000"),
    ("WORKER_FETCH_SIZE", "100"),
];

/// What points `role` at the Redis on `redis_port`, with JSON logs: a web role on a free loopback
/// port without a version file, a worker at `s3`'s bucket. Every timing is at its shipped default.
pub fn role_env(role: Role, redis_port: u16, s3: Option<&S3Server>) -> Env {
    let mut env = Env::default();
    env.set("REDIS_HOST", "127.0.0.1")
        .set("REDIS_PORT", redis_port)
        .set("LOG_FORMAT", "json");
    match role {
        Role::Web => {
            env.set("HOST", "127.0.0.1")
                .set("PORT", 0)
                .set("VERSION_FILE", "/nonexistent/version.json");
        }
        Role::Worker => {
            for (k, v) in s3.map(S3Server::env).unwrap_or_default() {
                env.set(&k, v);
            }
        }
    }
    env
}

/// The environment the harness gives `role` against these servers: [`role_env`], metrics and
/// errors sent to the listeners, and a worker's timings [`FAST_WORKER`].
pub fn base_env(
    role: Role,
    redis: &RedisServer,
    s3: &S3Server,
    statsd: &StatsdListener,
    sentry: &SentryListener,
) -> Env {
    let mut env = role_env(role, redis.port(), Some(s3));
    env.set("STATSD_HOST", "127.0.0.1")
        .set("STATSD_PORT", statsd.port())
        .set("SENTRY_DSN", sentry.dsn());
    if role == Role::Worker {
        env.set_all(&FAST_WORKER);
    }
    env
}

/// Starts the servers and `binary role` with the harness's environment as `change` leaves it,
/// waits until the role is ready (a web role listens, a worker has logged `worker.start`), and
/// hands everything to the caller.
pub async fn start(binary: impl AsRef<Path>, role: Role, change: impl FnOnce(&mut Env)) -> Tools {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let sentry = SentryListener::start().await;
    let mut env = base_env(role, &redis, &s3, &statsd, &sentry);
    change(&mut env);
    let wharf = WharfProcess::spawn(binary.as_ref(), &[role.arg()], &env.vars());
    // Ready means listening for the web role, and past its start-up checks for a worker.
    let (ready, addr) = match role {
        Role::Web => {
            let addr = wharf.listening_on(START).await;
            (addr.is_some(), addr)
        }
        Role::Worker => {
            let started = wharf.wait_for_event("worker.start", START).await;
            (started.is_some(), None)
        }
    };
    assert!(
        ready,
        "{} never became ready: {:#?}",
        wharf.name(),
        wharf.output()
    );
    Tools {
        wharf,
        client: reqwest::Client::new(),
        redis,
        s3,
        statsd,
        sentry,
        env,
        binary: binary.as_ref().to_path_buf(),
        addr,
    }
}

/// Runs `test` against `binary role` started as `change` leaves the harness's environment.
/// Everything is torn down when the test returns or fails.
pub async fn wharf_test<T, F>(
    binary: impl AsRef<Path>,
    role: Role,
    change: impl FnOnce(&mut Env),
    test: T,
) where
    T: FnOnce(Tools) -> F,
    F: Future<Output = ()>,
{
    test(start(binary, role, change).await).await;
}
