//! A real `wharf` process for tests: started with exactly the environment given, its output kept, its log lines awaited.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which of the process's pipes a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: MozLog lines and command results.
    Stdout,
    /// Standard error: start-up errors and human-readable reports.
    Stderr,
}

type Lines = Arc<Mutex<Vec<(Stream, String)>>>;

/// A running `wharf` process whose stdout and stderr lines are collected as they arrive.
///
/// Dropping it kills the process, so a test that fails half-way leaves nothing behind.
pub struct WharfProcess {
    child: Child,
    lines: Lines,
    name: String,
}

impl WharfProcess {
    /// Starts `binary ARGS` with exactly `vars` in its environment (see [`command`]).
    pub fn spawn(binary: impl AsRef<Path>, args: &[&str], vars: &[(String, String)]) -> Self {
        let mut child = command(binary.as_ref(), args, vars)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn wharf {args:?}: {e}"));
        let lines: Lines = Arc::new(Mutex::new(Vec::new()));
        let pipes = [
            (
                Stream::Stdout,
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                Stream::Stderr,
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ];
        for (stream, pipe) in pipes {
            let Some(pipe) = pipe else { continue };
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push((stream, line));
                    }
                }
            });
        }
        let name = format!("wharf {} (pid {})", args.join(" "), child.id());
        Self { child, lines, name }
    }

    /// `wharf <args> (pid <pid>)`, for messages about this process among several.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line written so far, stdout and stderr interleaved in arrival order.
    pub fn output(&self) -> Vec<String> {
        self.lines_of(None)
    }

    /// The lines written so far to standard output only (MozLog, when `LOG_FORMAT=json`).
    pub fn stdout(&self) -> Vec<String> {
        self.lines_of(Some(Stream::Stdout))
    }

    fn lines_of(&self, only: Option<Stream>) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(s, _)| only.is_none_or(|o| o == *s))
                    .map(|(_, line)| line.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many output lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    /// The MozLog lines (parsed) whose `Type` is `event_type`.
    pub fn events(&self, event_type: &str) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["Type"] == event_type)
            .collect()
    }

    /// Waits until a MozLog line of type `event_type` has been written, and returns the first.
    pub async fn wait_for_event(
        &self,
        event_type: &str,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        crate::found(timeout, || self.events(event_type).into_iter().next()).await
    }

    /// Waits until an output line contains `needle`; false if none did within `timeout`.
    pub async fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        crate::eventually(timeout, || async { self.count(needle) > 0 }).await
    }

    /// The address `wharf web` logged that it listens on (its `web.start` event), which is how
    /// a test learns the port a role given `PORT=0` was bound to.
    pub async fn listening_on(&self, timeout: Duration) -> Option<SocketAddr> {
        let start = self.wait_for_event("web.start", timeout).await?;
        start["Fields"]["addr"].as_str()?.parse().ok()
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Sends `sig` (`TERM`, `KILL`, `STOP`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.name));
        assert!(status.success(), "kill -{sig} {}: {status:?}", self.name);
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0) within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal("TERM");
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} still running after SIGTERM: {:?}",
                self.name,
                self.output()
            )
        });
        assert!(
            status.success(),
            "{} exited {status:?}: {:?}",
            self.name,
            self.output()
        );
    }
}

impl Drop for WharfProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `binary ARGS` with exactly `vars` (plus PATH) in its environment, piped output, and the AWS
/// SDK kept off the host's credentials, profile files and instance metadata.
pub fn command(binary: &Path, args: &[&str], vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/wharf-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wharf-test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `binary ARGS` to completion off the async runtime.
pub async fn run(binary: impl AsRef<Path>, args: &[&str], vars: &[(String, String)]) -> Output {
    let mut cmd = command(binary.as_ref(), args, vars);
    let shown: PathBuf = binary.as_ref().to_path_buf();
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("join: {e}"))
        .unwrap_or_else(|e| panic!("run {}: {e}", shown.display()))
}

/// stdout then stderr of a finished command, as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
