//! What this worker holds: the entries it was delivered and has not yet acknowledged, bounded in documents and bytes, and kept from being claimed by renewing them.
//!
//! Redis measures an entry's idle time from its delivery to its `XACK`, through the whole batch
//! and the S3 write. Without renewal, a live worker waiting out an S3 outage would see its
//! entries claimed by another worker and written twice. So every third of `WORKER_CLAIM_IDLE_MS`
//! the worker re-claims what it holds (`XCLAIM ... JUSTID`, which resets the idle time and is not
//! a delivery). Only a worker that stops renewing, because it died or lost Redis, loses its entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use wharf_queue::Redis;
use wharf_queue::{streams, Shard};

/// Ids sent per `XCLAIM` when renewing.
const RENEW_CHUNK: usize = 500;

/// The limits of what one worker may hold.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most documents held at once (`WORKER_MAX_HELD_DOCUMENTS`); also caps what one read asks for.
    pub documents: usize,
    /// Most body bytes held at once (`WORKER_MAX_HELD_BYTES`); one read may go over it, since
    /// sizes are known only once read.
    pub bytes: usize,
}

#[derive(Default)]
struct Inner {
    ids: BTreeMap<Shard, BTreeMap<String, usize>>,
    documents: usize,
    bytes: usize,
}

/// The entries this worker holds, shared by the reader, the batcher and the renewal task.
#[derive(Clone)]
pub struct Held {
    inner: Arc<Mutex<Inner>>,
    freed: Arc<Notify>,
    budget: Budget,
}

impl Held {
    /// Holds nothing yet; clones share what is held.
    pub fn new(budget: Budget) -> Self {
        Self {
            inner: Arc::default(),
            freed: Arc::new(Notify::new()),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counts half-updated in a way that
        // matters more than stopping would; keep going with what is there.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a delivered entry; false if this worker already holds it (a claim of its own
    /// entry), in which case it must not be handled twice.
    pub fn take(&self, shard: Shard, id: &str, bytes: usize) -> bool {
        let mut inner = self.lock();
        let ids = inner.ids.entry(shard).or_default();
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(id.to_string(), bytes);
        inner.documents += 1;
        inner.bytes += bytes;
        true
    }

    /// Forgets entries once they are acknowledged, dead-lettered or handed back.
    pub fn release<'a>(&self, shard: Shard, ids: impl IntoIterator<Item = &'a String>) {
        let mut inner = self.lock();
        let mut freed_docs = 0;
        let mut freed_bytes = 0;
        if let Some(held) = inner.ids.get_mut(&shard) {
            for id in ids {
                if let Some(bytes) = held.remove(id) {
                    freed_docs += 1;
                    freed_bytes += bytes;
                }
            }
        }
        inner.documents -= freed_docs;
        inner.bytes -= freed_bytes;
        drop(inner);
        if freed_docs > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Entries held now, across every shard.
    pub fn documents(&self) -> usize {
        self.lock().documents
    }

    /// Whether the budget is used up (the batcher then flushes its biggest batch).
    pub fn is_full(&self) -> bool {
        let inner = self.lock();
        inner.documents >= self.budget.documents || inner.bytes >= self.budget.bytes
    }

    /// Waits until there is room, then says how many more documents may be fetched.
    pub async fn room(&self) -> usize {
        loop {
            let notified = self.freed.notified();
            {
                let inner = self.lock();
                if inner.documents < self.budget.documents && inner.bytes < self.budget.bytes {
                    return self.budget.documents - inner.documents;
                }
            }
            notified.await;
        }
    }

    /// Every held id, by shard.
    pub fn snapshot(&self) -> Vec<(Shard, Vec<String>)> {
        self.lock()
            .ids
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(shard, ids)| (*shard, ids.keys().cloned().collect()))
            .collect()
    }
}

/// Re-claims every held entry every `claim_idle / 3`, so no live worker's entries are claimed.
pub async fn renew_loop(mut conn: Redis, held: Held, consumer: String, claim_idle: Duration) {
    let mut tick = tokio::time::interval(claim_idle / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let mut ok = true;
        for (shard, ids) in held.snapshot() {
            for chunk in ids.chunks(RENEW_CHUNK) {
                if let Err(e) = streams::renew(&mut conn, shard, &consumer, chunk).await {
                    ok = false;
                    if !failing {
                        tracing::warn!(type = "worker.renew", error = %e, "could not renew held entries; another worker may take them over after WORKER_CLAIM_IDLE_MS");
                    }
                }
            }
        }
        if ok && failing {
            tracing::info!(type = "worker.renew", "renewing held entries again");
        }
        failing = !ok;
    }
}

/// Ids by shard, deduplicated, for the ack and dead-letter calls.
pub fn by_shard<'a>(
    refs: impl IntoIterator<Item = (Shard, &'a String)>,
) -> Vec<(Shard, Vec<String>)> {
    let mut map: BTreeMap<Shard, BTreeSet<String>> = BTreeMap::new();
    for (shard, id) in refs {
        map.entry(shard).or_default().insert(id.clone());
    }
    map.into_iter()
        .map(|(shard, ids)| (shard, ids.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_entry_once_and_frees_on_release() {
        let held = Held::new(Budget {
            documents: 2,
            bytes: 100,
        });
        assert!(held.take(Shard(0), "1-0", 10));
        assert!(
            !held.take(Shard(0), "1-0", 10),
            "an own re-claim is not a second entry"
        );
        assert!(
            held.take(Shard(1), "1-0", 10),
            "same id in another shard is another entry"
        );
        assert!(held.is_full());
        held.release(Shard(0), [&"1-0".to_string()]);
        assert_eq!(held.documents(), 1);
        assert!(!held.is_full());
        assert!(!held.take(Shard(1), "1-0", 10), "still held");
    }

    #[tokio::test]
    async fn room_waits_for_a_release() {
        let held = Held::new(Budget {
            documents: 1,
            bytes: 1_000,
        });
        held.take(Shard(0), "1-0", 1);
        let waiter = tokio::spawn({
            let held = held.clone();
            async move { held.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        held.release(Shard(0), [&"1-0".to_string()]);
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
