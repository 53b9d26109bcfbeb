//! An in-process S3-protocol server (s3s-fs) on a free port, backed by a temporary directory.
//!
//! The server runs on its own thread and runtime, so tests can stop it (every open connection is
//! cut) and restart it on the same port to simulate an S3 outage, and can make it answer every
//! request with an S3 error ([`Fault`]: throttling, `RequestTimeout`, `RequestTimeTooSkewed`,
//! `AccessDenied`), switched at runtime and back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The access key the test server accepts.
pub const ACCESS_KEY: &str = "wharf-test-access";
/// The secret key the test server accepts.
pub const SECRET_KEY: &str = "wharf-test-secret";

/// An error the server answers every request with, as S3 does: the HTTP status and an XML body
/// whose `<Code>` is what clients classify the error by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// `503 SlowDown`: S3 throttling.
    SlowDown = 1,
    /// `503 ServiceUnavailable`.
    ServiceUnavailable,
    /// `400 RequestTimeout`: the request body did not arrive in time (transient, whatever its status).
    RequestTimeout,
    /// `403 RequestTimeTooSkewed`: the client's clock is off (transient, whatever its status).
    RequestTimeTooSkewed,
    /// `403 AccessDenied`: a permanent refusal.
    AccessDenied,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::SlowDown,
        Fault::ServiceUnavailable,
        Fault::RequestTimeout,
        Fault::RequestTimeTooSkewed,
        Fault::AccessDenied,
    ];

    fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u8 == value)
    }

    /// The HTTP status S3 answers this fault with.
    pub fn status(self) -> http::StatusCode {
        match self {
            Fault::SlowDown | Fault::ServiceUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Fault::RequestTimeout => http::StatusCode::BAD_REQUEST,
            Fault::RequestTimeTooSkewed | Fault::AccessDenied => http::StatusCode::FORBIDDEN,
        }
    }

    /// The S3 error code, as in `<Code>`.
    pub fn code(self) -> &'static str {
        match self {
            Fault::SlowDown => "SlowDown",
            Fault::ServiceUnavailable => "ServiceUnavailable",
            Fault::RequestTimeout => "RequestTimeout",
            Fault::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            Fault::AccessDenied => "AccessDenied",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Fault::SlowDown => "Please reduce your request rate.",
            Fault::ServiceUnavailable => "Service is unable to handle request.",
            Fault::RequestTimeout => "Your socket connection to the server was not read from or written to within the timeout period.",
            Fault::RequestTimeTooSkewed => "The difference between the request time and the current time is too large.",
            Fault::AccessDenied => "Access Denied",
        }
    }

    /// The whole error answer: status, XML content type and body.
    fn response(self) -> http::Response<s3s::Body> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>wharf-test-fault</RequestId><HostId>wharf-test</HostId></Error>",
            self.code(),
            self.message()
        );
        let mut response = http::Response::new(s3s::Body::from(body));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
        response
    }
}

/// The fault switch shared by a server and whoever sets it: 0 means "answer normally".
#[derive(Debug, Clone, Default)]
struct FaultSwitch {
    /// The old `deny` flag of [`serve`]: `AccessDenied` while set, whatever the fault.
    deny: Arc<AtomicBool>,
    fault: Arc<AtomicU8>,
    /// While true, a `PUT` is carried out (the object is stored) but its answer is held back
    /// until the switch is cleared or the connection is cut: the moment a client dies between
    /// S3 storing its upload and hearing so.
    withhold_put_answers: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FaultSwitch {
    fn current(&self) -> Option<Fault> {
        if self.deny.load(Ordering::SeqCst) {
            return Some(Fault::AccessDenied);
        }
        Fault::from_u8(self.fault.load(Ordering::SeqCst))
    }
}

/// Options for [`serve`]: where to store objects and which credentials to accept.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory holding one sub-directory per bucket.
    pub root: PathBuf,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The access key requests must be signed with.
    pub access_key: String,
    /// The secret key requests must be signed with.
    pub secret_key: String,
}

/// Serves S3 over HTTP on `listener` until `stop` resolves; every connection is cut on return.
///
/// While `deny` is true every request is answered `403 AccessDenied`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    deny: Arc<AtomicBool>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let faults = FaultSwitch {
        deny,
        ..FaultSwitch::default()
    };
    serve_with_faults(listener, root, access_key, secret_key, faults, stop).await
}

/// [`serve`], answering every request with the switch's fault while one is set.
async fn serve_with_faults(
    listener: tokio::net::TcpListener,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    faults: FaultSwitch,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        builder.build()
    };
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            () = stop.as_mut() => break,
        };
        let service = service.clone();
        let faults = faults.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let service = service.clone();
            let faults = faults.clone();
            async move {
                if let Some(fault) = faults.current() {
                    // Read the request body first, as S3 does before it answers an upload, so
                    // the client sees the error answer rather than a connection cut mid-body.
                    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                    return Ok::<_, s3s::HttpError>(fault.response());
                }
                let put = req.method() == http::Method::PUT;
                let answer = service.call(req.map(s3s::Body::from)).await;
                if put {
                    let mut withheld = faults.withhold_put_answers.subscribe();
                    let _ = withheld.wait_for(|on| !*on).await;
                }
                answer
            }
        });
        let http = http.clone();
        connections.spawn(async move {
            let _ = http.serve_connection(TokioIo::new(socket), svc).await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A running s3s-fs server with one bucket, on `127.0.0.1:{port}`.
pub struct S3Server {
    port: u16,
    dir: tempfile::TempDir,
    bucket: String,
    faults: FaultSwitch,
    running: Option<Running>,
}

impl S3Server {
    /// Starts a server on a free port with the bucket `bucket` created.
    pub fn start(bucket: &str) -> Self {
        let server = Self::start_without_bucket(bucket);
        server.create_bucket();
        server
    }

    /// Starts a server whose bucket does not exist yet (see [`S3Server::create_bucket`]).
    pub fn start_without_bucket(bucket: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = Self {
            port: 0,
            dir,
            bucket: bucket.to_string(),
            faults: FaultSwitch::default(),
            running: None,
        };
        server.restart();
        server
    }

    /// The port it listens on (kept across [`S3Server::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, the `S3_ENDPOINT_URL` for a role.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket it was started for.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The directory holding the buckets (one sub-directory per bucket).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Environment variables that point the worker (and the AWS SDK) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("S3_BUCKET".into(), self.bucket.clone()),
            ("S3_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Creates the bucket of a server started with [`S3Server::start_without_bucket`].
    pub fn create_bucket(&self) {
        std::fs::create_dir_all(self.dir.path().join(&self.bucket))
            .unwrap_or_else(|e| panic!("create bucket dir: {e}"));
    }

    /// While set, every request is answered `403 AccessDenied` (a permanent failure).
    pub fn set_denying(&self, deny: bool) {
        self.faults.deny.store(deny, Ordering::SeqCst);
    }

    /// From now on every request is answered with `fault` (see [`S3Server::clear_fault`]).
    pub fn set_fault(&self, fault: Fault) {
        self.faults.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// While on, every `PUT` stores its object but gets no answer until this is turned off (or
    /// the client goes away).
    pub fn set_withholding_put_answers(&self, on: bool) {
        self.faults.withhold_put_answers.send_replace(on);
    }

    /// Back to answering normally (unless [`S3Server::set_denying`] is on).
    pub fn clear_fault(&self) {
        self.faults.fault.store(0, Ordering::SeqCst);
    }

    /// The fault every request is answered with now, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.faults.current()
    }

    /// Stops the server: the port refuses connections and open connections are cut.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Starts the server again, on the same port once it has had one.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "s3 server already running");
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let std_listener = bind_retrying(addr);
        self.port = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("s3 addr: {e}"))
            .port();
        let root = self.dir.path().to_path_buf();
        let faults = self.faults.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("s3 runtime: {e}"));
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .unwrap_or_else(|e| panic!("s3 listener: {e}"));
                let _ = serve_with_faults(listener, &root, ACCESS_KEY, SECRET_KEY, faults, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        self.running = Some(Running {
            stop: stop_tx,
            thread,
        });
    }

    /// Every object key in the bucket (relative to the bucket, '/'-separated), sorted.
    pub fn keys(&self) -> Vec<String> {
        let base = self.dir.path().join(&self.bucket);
        let mut out = Vec::new();
        collect(&base, &base, &mut out);
        out.sort();
        out
    }

    /// The bytes of one object.
    pub fn object(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(&self.bucket).join(key))
            .unwrap_or_else(|e| panic!("read object {key}: {e}"))
    }
}

fn bind_retrying(addr: SocketAddr) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .unwrap_or_else(|e| panic!("nonblocking: {e}"));
                return l;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind s3 server on {addr}: {e}"),
        }
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(base, &path, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
