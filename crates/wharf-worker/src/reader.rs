//! The reading loop: takes over entries of dead workers (`XAUTOCLAIM`), reads new ones (`XREADGROUP`), dead-letters undecodable entries on sight, and hands the rest to apalis.
//!
//! It runs as its own task and never ends on a Redis error: it reports the outage once, backs
//! off and carries on, so one bad entry or one failover never stops the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cadence::prelude::*;
use cadence::StatsdClient;
use tokio::sync::mpsc;
use wharf_queue::streams::{self, RawEntry};
use wharf_queue::Redis;
use wharf_queue::{Shard, Submission};

use crate::backoff::Backoff;
use crate::held::Held;
use crate::stop::Stop;

/// An entry delivered to this worker, decoded: what an apalis task carries.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shard stream the entry was read from; with `id`, what acknowledges it.
    pub shard: Shard,
    /// The stream entry id (`<ms>-<seq>`): its milliseconds date a submission that has no
    /// `submission_timestamp`.
    pub id: String,
    /// The decoded entry: route, attributes and body.
    pub submission: Submission,
    /// Taken over from a worker that stopped renewing it: it has already waited at least
    /// `WORKER_CLAIM_IDLE_MS`, so its batch is written without waiting `BATCH_MAX_AGE_MS` again.
    pub taken_over: bool,
}

/// What the reading loop needs.
pub struct Reader {
    /// For `XREADGROUP ... BLOCK`: its response timeout exceeds the block time.
    pub conn: Redis,
    /// For everything else (claims, dead letters), so they never queue behind a block.
    pub ops: Redis,
    /// `QUEUE_SHARDS`; shards web nodes registered beyond it are read too (re-listed every 30 s).
    pub configured_shards: u16,
    /// This worker's consumer name in every shard's group ([`crate::naming::process_name`]).
    pub consumer: String,
    /// Most entries one `XREADGROUP` or `XAUTOCLAIM` takes from a shard (`WORKER_FETCH_SIZE`).
    pub fetch_size: usize,
    /// Longest an `XREADGROUP` blocks when no entry waits (`WORKER_POLL_INTERVAL_MS`).
    pub block: Duration,
    /// Idle time after which other workers' entries are taken over (`WORKER_CLAIM_IDLE_MS`);
    /// claims are tried every quarter of it.
    pub claim_idle: Duration,
    /// Reading waits for room in it, and every delivered entry is recorded in it.
    pub held: Held,
    /// Receives `worker.read.errors`, `worker.entries.claimed` and undecodable dead letters.
    pub metrics: Arc<StatsdClient>,
}

/// How often the list of shards (configured plus registered by web nodes) is re-read.
const SHARD_REFRESH: Duration = Duration::from_secs(30);

impl Reader {
    /// Reads until `stop` fires; deliveries go to `out`, which is closed when this returns.
    pub async fn run(mut self, out: mpsc::Sender<Delivery>, stop: Stop) {
        let mut known = streams::KnownShards::new(self.configured_shards, SHARD_REFRESH);
        let mut groups_ready = false;
        let mut last_claim: Option<Instant> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failing = false;
        while !stop.is_triggered() {
            let room = tokio::select! {
                room = self.held.room() => room,
                () = stop.wait() => break,
            };
            let step = async {
                if known.refresh(&mut self.ops).await? {
                    groups_ready = false;
                }
                let shards = known.current();
                if !groups_ready {
                    streams::ensure_groups(&mut self.ops, shards).await?;
                    groups_ready = true;
                }
                let mut delivered = Vec::new();
                if last_claim.is_none_or(|t| t.elapsed() >= self.claim_idle / 4) {
                    delivered.extend(self.claim(shards, room).await?);
                    last_claim = Some(Instant::now());
                }
                let taken_over = !delivered.is_empty();
                if !taken_over {
                    let per_shard = room.div_ceil(shards.len().max(1)).clamp(1, self.fetch_size);
                    let read = streams::read_new(
                        &mut self.conn,
                        shards,
                        &self.consumer,
                        per_shard,
                        self.block,
                    )
                    .await;
                    match read {
                        Ok(entries) => delivered.extend(entries),
                        Err(e) if is_missing_group(&e) => {
                            // The stream or group vanished (Redis restarted empty, a failover,
                            // an operator): recreate before the next read.
                            groups_ready = false;
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, wharf_queue::QueueError>((delivered, taken_over))
            };
            let delivered = tokio::select! {
                result = step => result,
                () = stop.wait() => break,
            };
            match delivered {
                Ok((entries, taken_over)) => {
                    if failing {
                        tracing::info!(type = "worker.read", "reading the queue again");
                        failing = false;
                    }
                    backoff.reset();
                    for entry in entries {
                        if let Some(delivery) = self.admit(entry, taken_over).await {
                            if out.send(delivery).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(type = "worker.read", error = %e, "cannot read the queue; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(type = "worker.read", error = %e, "still cannot read the queue");
                    }
                    self.metrics.incr_with_tags("worker.read.errors").send();
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = stop.wait() => break,
                    }
                }
            }
        }
    }

    /// Takes over entries idle past `WORKER_CLAIM_IDLE_MS` (their worker died or lost Redis),
    /// paging through every shard until `room` is used up.
    async fn claim(
        &mut self,
        shards: &[Shard],
        room: usize,
    ) -> Result<Vec<RawEntry>, wharf_queue::QueueError> {
        let mut claimed = Vec::new();
        for shard in shards {
            let mut cursor = "0-0".to_string();
            loop {
                let left = room.saturating_sub(claimed.len());
                if left == 0 {
                    return Ok(claimed);
                }
                let (next, entries, _gone) = streams::autoclaim(
                    &mut self.ops,
                    *shard,
                    &self.consumer,
                    self.claim_idle,
                    &cursor,
                    left.min(self.fetch_size),
                )
                .await?;
                if !entries.is_empty() {
                    self.metrics
                        .count_with_tags("worker.entries.claimed", entries.len() as i64)
                        .send();
                    tracing::info!(type = "worker.claim", shard = shard.0, entries = entries.len(), "took over entries left idle by another worker");
                }
                claimed.extend(entries);
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(claimed)
    }

    /// Decodes an entry and records it as held; an undecodable one goes to dead letters now.
    ///
    /// A re-claim of an entry this worker is still writing is refused by [`Held::take`]: it is
    /// already on its way.
    async fn admit(&mut self, entry: RawEntry, taken_over: bool) -> Option<Delivery> {
        let decoded = match entry.fields {
            Some(fields) => Submission::decode(fields),
            None => Err(wharf_queue::Poison::Shape),
        };
        match decoded {
            Ok(submission) => {
                if !self
                    .held
                    .take(entry.shard, &entry.id, submission.body.len())
                {
                    return None;
                }
                Some(Delivery {
                    shard: entry.shard,
                    id: entry.id,
                    submission,
                    taken_over,
                })
            }
            Err(poison) => {
                let reason = format!("undecodable entry: {poison}");
                match streams::dead_letter(
                    &mut self.ops,
                    entry.shard,
                    std::slice::from_ref(&entry.id),
                    &reason,
                )
                .await
                {
                    Ok(_) => {
                        self.metrics
                            .incr_with_tags("worker.entries.dead_lettered")
                            .with_tag("reason", "undecodable")
                            .send();
                        tracing::error!(type = "worker.poison", shard = entry.shard.0, entry = %entry.id, reason = %reason, "entry dead-lettered on sight");
                    }
                    Err(e) => {
                        // It stays pending and comes back after the claim idle time.
                        tracing::warn!(type = "worker.poison", shard = entry.shard.0, entry = %entry.id, error = %e, "could not dead-letter an undecodable entry; retrying later");
                    }
                }
                None
            }
        }
    }
}

fn is_missing_group(e: &wharf_queue::QueueError) -> bool {
    matches!(e, wharf_queue::QueueError::Redis(r) if r.code() == Some("NOGROUP"))
}
