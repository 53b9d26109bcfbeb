//! Capped exponential backoff with jitter, for every retry loop in the worker.

use std::time::Duration;

/// Doubles from `base` up to `cap`; each delay is jittered down by up to a quarter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`; no delay grows past `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            current: base,
        }
    }

    /// The delay to sleep before the next attempt (up to 25 % shorter than the current step),
    /// and doubles the step for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.cap);
        let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u16) % 250;
        delay.mul_f64(1.0 - jitter as f64 / 1000.0)
    }

    /// Back to `base`, once the retried call succeeds, so the next outage starts with short delays.
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[7] <= Duration::from_secs(1));
        assert!(delays[7] >= Duration::from_millis(750));
    }
}
