//! A loopback TCP proxy on a free port, to stand between the code under test and a real server:
//! its target can be switched at runtime and every live connection cut at once, as when a DNS
//! name or a load balancer moves to a new primary, and new connections can be held or refused,
//! as in a network outage. Live connections can also be stalled: kept open but silent, as a link
//! whose packets are dropped, which no error reveals.
//!
//! Like the S3 server it runs on its own thread and runtime, so it serves plain `#[test]`s and
//! `#[tokio::test]`s alike, and every control call has taken effect when it returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc as tokio_mpsc;
use tokio::task::JoinSet;

/// What the proxy does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Connect it to the target and forward both ways.
    Open,
    /// Accept it and forward nothing until [`TcpProxy::resume`] (a black hole for now).
    Hold,
    /// Do not listen: connecting is refused.
    Refuse,
}

enum Control {
    Cut(mpsc::Sender<()>),
    Mode(Mode, mpsc::Sender<()>),
}

/// Counts a client connection as live until dropped, with whichever socket it travels.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the proxy handle and its thread.
struct Shared {
    addr: SocketAddr,
    target: Mutex<SocketAddr>,
    accepted: AtomicU64,
    live: Arc<AtomicUsize>,
    /// Bumped by [`TcpProxy::stall`]: connections forwarded before the bump go silent.
    stalls: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn target(&self) -> SocketAddr {
        *self.target.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy on `127.0.0.1:{port}`; stopped (every connection cut) on drop.
pub struct TcpProxy {
    shared: Arc<Shared>,
    control: Option<tokio_mpsc::UnboundedSender<Control>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts a proxy on a free port forwarding to `127.0.0.1:{target_port}`.
    pub fn start(target_port: u16) -> Self {
        Self::start_to(SocketAddr::from(([127, 0, 0, 1], target_port)))
    }

    /// Starts a proxy on a free port forwarding to `target`.
    pub fn start_to(target: SocketAddr) -> Self {
        // Bound here, so the port is known and listening before `start` returns.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind tcp proxy: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("tcp proxy addr: {e}"));
        let shared = Arc::new(Shared {
            addr,
            target: Mutex::new(target),
            accepted: AtomicU64::new(0),
            live: Arc::default(),
            stalls: tokio::sync::watch::Sender::new(0),
        });
        let (control, commands) = tokio_mpsc::unbounded_channel();
        let state = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tcp proxy runtime: {e}"));
            runtime.block_on(run(listener, state, commands));
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            shared,
            control: Some(control),
            thread: Some(thread),
        }
    }

    /// The port clients connect to instead of the upstream's.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The loopback address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A Redis URL through the proxy, for when the target is a redis-server.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port())
    }

    /// Where new connections go.
    pub fn target(&self) -> SocketAddr {
        self.shared.target()
    }

    /// Sends new connections to `127.0.0.1:{port}`; live ones stay where they are (see [`TcpProxy::cut`]).
    pub fn set_target(&self, port: u16) {
        self.set_target_addr(SocketAddr::from(([127, 0, 0, 1], port)));
    }

    /// Sends new connections to `target`; live ones stay where they are.
    pub fn set_target_addr(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Closes every live connection (held ones too) at once, so clients must reconnect, and
    /// reconnect to the current target. Returns once the proxy closed them all (a client may
    /// see its close a moment later if another test is spawning a process just then: the
    /// child holds copies of the proxy's sockets until it execs).
    pub fn cut(&self) {
        self.send(Control::Cut);
    }

    /// Every live connection stops forwarding, both ways, but stays open: a silent partition,
    /// where requests time out and no error or close ever comes. New connections are forwarded
    /// as usual (as if the client found another route).
    pub fn stall(&self) {
        self.shared
            .stalls
            .send_modify(|generation| *generation += 1);
    }

    /// From now on new connections are accepted but nothing is forwarded until
    /// [`TcpProxy::resume`] (clients time out); live connections keep flowing.
    pub fn pause(&self) {
        self.send(|ack| Control::Mode(Mode::Hold, ack));
    }

    /// From now on the port is closed, so connecting is refused, until [`TcpProxy::resume`];
    /// live connections keep flowing.
    pub fn refuse(&self) {
        self.send(|ack| Control::Mode(Mode::Refuse, ack));
    }

    /// Back to forwarding new connections (held ones are forwarded to the current target now).
    pub fn resume(&self) {
        self.send(|ack| Control::Mode(Mode::Open, ack));
    }

    /// How many client connections were accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many client connections are open now (forwarded or held).
    pub fn connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Sends a command to the proxy thread and waits until it was carried out.
    fn send(&self, command: impl FnOnce(mpsc::Sender<()>) -> Control) {
        let (ack, done) = mpsc::channel();
        let sent = self
            .control
            .as_ref()
            .is_some_and(|c| c.send(command(ack)).is_ok());
        if !sent || done.recv().is_err() {
            panic!(
                "tcp proxy on port {} has stopped (see its panic above)",
                self.port()
            );
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Closing the control channel ends the proxy loop, which closes every connection.
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What woke the proxy loop.
enum Event {
    Accepted(std::io::Result<TcpStream>),
    Control(Option<Control>),
}

async fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut commands: tokio_mpsc::UnboundedReceiver<Control>,
) {
    let mut listener =
        Some(TcpListener::from_std(listener).unwrap_or_else(|e| panic!("tcp proxy listener: {e}")));
    let mut mode = Mode::Open;
    let mut held: Vec<(TcpStream, Live)> = Vec::new();
    let mut connections = JoinSet::new();
    loop {
        let event = tokio::select! {
            accepted = accept(listener.as_ref()) => Event::Accepted(accepted),
            command = commands.recv() => Event::Control(command),
        };
        match event {
            Event::Accepted(Ok(client)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let live = Live::new(&shared.live);
                if mode == Mode::Hold {
                    held.push((client, live));
                } else {
                    connections.spawn(forward(
                        client,
                        shared.target(),
                        live,
                        shared.stalls.subscribe(),
                    ));
                }
            }
            // Out of descriptors and the like: try again shortly rather than spin.
            Event::Accepted(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Event::Control(None) => break,
            Event::Control(Some(Control::Cut(ack))) => {
                held.clear();
                close_all(&mut connections).await;
                let _ = ack.send(());
            }
            Event::Control(Some(Control::Mode(new, ack))) => {
                match new {
                    Mode::Refuse => {
                        listener = None;
                        wait_refused(shared.addr).await;
                    }
                    Mode::Open | Mode::Hold if listener.is_none() => {
                        listener = Some(bind_retrying(shared.addr).await);
                    }
                    Mode::Open | Mode::Hold => {}
                }
                if new == Mode::Open {
                    for (client, live) in held.drain(..) {
                        connections.spawn(forward(
                            client,
                            shared.target(),
                            live,
                            shared.stalls.subscribe(),
                        ));
                    }
                }
                mode = new;
                let _ = ack.send(());
            }
        }
        while connections.try_join_next().is_some() {}
    }
    held.clear();
    close_all(&mut connections).await;
}

/// The next connection, or never while the port is closed.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(socket, _)| socket),
        None => std::future::pending().await,
    }
}

/// Forwards one client connection to `target` until either side closes; the client is closed
/// at once if the target cannot be reached, as it would be by a server that is down. After
/// [`TcpProxy::stall`] it forwards nothing more but keeps both sockets open until cut.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    _live: Live,
    mut stalls: tokio::sync::watch::Receiver<u64>,
) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    // Requests and replies are small: do not let Nagle hold them back.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let started = *stalls.borrow_and_update();
    let stalled = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
        _ = stalls.wait_for(|generation| *generation != started) => true,
    };
    if stalled {
        std::future::pending::<()>().await;
    }
}

/// Aborts every forwarding task and waits until each has dropped (so closed) its sockets.
async fn close_all(connections: &mut JoinSet<()>) {
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Waits until connecting to the closed port is refused. Closing the listener is not enough on
/// its own: a process being spawned at that moment (by another test in the same binary) holds a
/// copy of the socket until it execs, and meanwhile the port still accepts connections.
async fn wait_refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tcp proxy port {addr} still accepts connections 5 s after it was closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Binds the proxy's port again after [`TcpProxy::refuse`], waiting out whoever holds it briefly.
async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind tcp proxy again on {addr}: {e}"),
        }
    }
}
