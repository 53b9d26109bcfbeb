//! The web role's memory bound: submissions and body bytes in flight, taken without waiting, so an excess is refused (503) at once instead of queued in memory.
//!
//! Body bytes are counted as declared by `Content-Length` (reserved before the body is read), or
//! as read so far for a chunked body. A flood of large, slow bodies must not lock out the small
//! submissions real clients send, so the last eighth of the byte budget is a reserve that only
//! bodies up to [`SMALL_BODY_BYTES`] may draw on.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this size may use the reserve.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// Bytes are counted in units of this many, so that a 16 GiB budget fits a semaphore's `u32`
/// acquisitions.
const UNIT: usize = 1024;

/// Every submission's share of the in-flight limits.
#[derive(Clone)]
pub struct InflightBudget {
    requests: Arc<Semaphore>,
    shared: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl InflightBudget {
    /// Room for `max_requests` submissions (`MAX_INFLIGHT_REQUESTS`) and `max_bytes` body bytes
    /// (`MAX_INFLIGHT_BYTES`, rounded up to whole KiB, at least 8 KiB), an eighth of the bytes
    /// reserved for bodies up to [`SMALL_BODY_BYTES`].
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        let units = max_bytes.div_ceil(UNIT).max(8);
        let reserve = units / 8;
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            shared: Arc::new(Semaphore::new(units - reserve)),
            reserve: Arc::new(Semaphore::new(reserve)),
        }
    }

    /// A place for one more submission, or `None` when the request limit is reached.
    pub fn admit(&self) -> Option<Held> {
        let request = Arc::clone(&self.requests).try_acquire_owned().ok()?;
        Some(Held {
            budget: self.clone(),
            _request: request,
            shared: None,
            reserve: None,
            units: 0,
        })
    }
}

/// One submission's share: released when dropped, that is when its answer has been decided.
pub struct Held {
    budget: InflightBudget,
    _request: OwnedSemaphorePermit,
    shared: Option<OwnedSemaphorePermit>,
    reserve: Option<OwnedSemaphorePermit>,
    units: usize,
}

impl Held {
    /// Grows this submission's share to cover `bytes` body bytes in all; `false` when the budget
    /// cannot, in which case the share is unchanged.
    pub fn cover(&mut self, bytes: usize) -> bool {
        let wanted = bytes.div_ceil(UNIT);
        let Some(more) = wanted.checked_sub(self.units).filter(|m| *m > 0) else {
            return true;
        };
        let Ok(more_u32) = u32::try_from(more) else {
            return false;
        };
        let permit = Arc::clone(&self.budget.shared)
            .try_acquire_many_owned(more_u32)
            .ok()
            .map(|p| (p, false))
            .or_else(|| {
                (bytes <= SMALL_BODY_BYTES)
                    .then(|| Arc::clone(&self.budget.reserve).try_acquire_many_owned(more_u32))
                    .and_then(Result::ok)
                    .map(|p| (p, true))
            });
        let Some((permit, from_reserve)) = permit else {
            return false;
        };
        let slot = if from_reserve {
            &mut self.reserve
        } else {
            &mut self.shared
        };
        match slot {
            Some(held) => held.merge(permit),
            None => *slot = Some(permit),
        }
        self.units = wanted;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_leave_the_reserve_to_small_ones() {
        let budget = InflightBudget::new(100, 8 << 20);
        let mut large = Vec::new();
        loop {
            let mut held = budget.admit().unwrap();
            if !held.cover(1 << 20) {
                break;
            }
            large.push(held);
        }
        assert_eq!(large.len(), 7, "7 MiB of 8 are for any body");
        let mut small = budget.admit().unwrap();
        assert!(
            small.cover(SMALL_BODY_BYTES),
            "the reserve takes a small body"
        );
        assert!(
            !small.cover(SMALL_BODY_BYTES + 1),
            "but not once it grows past the size"
        );
        drop(large);
        assert!(small.cover(1 << 20), "freed shares are taken again");
    }

    #[test]
    fn the_request_limit_and_release_on_drop() {
        let budget = InflightBudget::new(2, 1 << 20);
        let a = budget.admit().unwrap();
        let _b = budget.admit().unwrap();
        assert!(budget.admit().is_none());
        drop(a);
        assert!(budget.admit().is_some());
    }
}
