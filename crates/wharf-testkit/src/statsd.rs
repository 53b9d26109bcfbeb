//! A real UDP socket that receives StatsD packets and keeps every metric line for assertions.

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects StatsD lines sent to `127.0.0.1:{port}`.
pub struct StatsdListener {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl StatsdListener {
    /// Binds a UDP socket on a free loopback port and starts collecting.
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind udp: {e}"));
        let port = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("udp addr: {e}"))
            .port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        // The thread ends when the listener (and so the last Arc but this one) is gone.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("udp timeout: {e}"));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while Arc::strong_count(&sink) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Ok(mut l) = sink.lock() {
                        l.extend(text.lines().map(str::to_string));
                    }
                }
            }
        });
        Self { port, lines }
    }

    /// The port to give a role as `STATSD_PORT`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Lines whose metric name (before ':') equals `name`.
    pub fn named(&self, name: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.split(':').next() == Some(name))
            .collect()
    }

    /// Waits until the sum of the values of the lines named `name` reaches `at_least`, and
    /// returns the sum then (or what it was when `timeout` passed).
    pub async fn wait_for_sum(&self, name: &str, at_least: i64, timeout: Duration) -> i64 {
        let reached = crate::found(timeout, || Some(self.sum(name)).filter(|s| *s >= at_least));
        reached.await.unwrap_or_else(|| self.sum(name))
    }

    /// The sum of the values (`name:<value>|c`, `|g`, `|ms`) of the lines named `name`.
    pub fn sum(&self, name: &str) -> i64 {
        sum_of(&self.named(name))
    }
}

/// The sum of the values of StatsD `lines` (`name:<value>|<type>...`).
pub fn sum_of(lines: &[String]) -> i64 {
    lines
        .iter()
        .filter_map(|l| l.split(':').nth(1)?.split('|').next()?.parse::<i64>().ok())
        .sum()
}
