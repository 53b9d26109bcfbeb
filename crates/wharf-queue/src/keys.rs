//! Redis key names both roles share: the shard streams, their dead letters, the consumer group and worker liveness.
//!
//! Every per-shard key carries the shard number as a Redis Cluster hash tag (`{n}`), so a shard's
//! stream and its dead letters always live in one slot and can change together in one `MULTI`.

/// The consumer group every worker reads the shard streams through.
pub const GROUP: &str = "wharf-workers";

/// The namespace `wharf canary` submits to; with `CANARY_TOKEN` set, only requests carrying it may.
pub const CANARY_NAMESPACE: &str = "wharf-canary";

/// The request header that carries `CANARY_TOKEN` to the web role.
pub const CANARY_TOKEN_HEADER: &str = "x-canary-token";

/// Sorted set of live workers: member = worker name, score = expiry time in milliseconds by the
/// Redis server's clock (never a host's).
pub const LIVENESS_KEY: &str = "wharf:workers:live";

/// Set of every shard number a web node has written to, so that workers also drain shards that
/// a smaller `QUEUE_SHARDS` no longer names.
pub const SHARDS_KEY: &str = "wharf:queue:shards";

/// One queue shard: a stream of submissions and a stream of dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(pub u16);

impl Shard {
    /// `wharf:{<n>}:submissions`
    pub fn stream(self) -> String {
        format!("wharf:{{{}}}:submissions", self.0)
    }

    /// `wharf:{<n>}:dead`
    pub fn dead(self) -> String {
        format!("wharf:{{{}}}:dead", self.0)
    }

    /// `wharf:{<n>}:landed:<docId>`: the docId ledger's record of a document, in its shard's
    /// hash slot so that one pipeline per shard reaches every record a batch needs.
    pub fn landed(self, doc_id: &str) -> String {
        format!("wharf:{{{}}}:landed:{doc_id}", self.0)
    }

    /// The shard a document goes to: a hash of its docId, so a client's retry of the same
    /// document lands in the same shard.
    ///
    /// FNV-1a, then the splitmix64 finaliser: FNV's low bits depend only on the low bits of each
    /// byte, so ids that differ in one repeated digit all fell in one shard of a power-of-two
    /// count; the finaliser mixes every bit into the low ones.
    pub fn for_doc(doc_id: &str, shards: u16) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in doc_id.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= hash >> 30;
        hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 27;
        hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        Shard((hash % u64::from(shards.max(1))) as u16)
    }

    /// Shards `0..count`.
    pub fn all(count: u16) -> impl Iterator<Item = Shard> {
        (0..count.max(1)).map(Shard)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_the_documented_ones() {
        assert_eq!(Shard(3).stream(), "wharf:{3}:submissions");
        assert_eq!(Shard(3).dead(), "wharf:{3}:dead");
    }

    #[test]
    fn documents_spread_over_every_shard_and_stay_put() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let id = format!("2c3a0767-d84a-4d02-8a92-{i:012}");
            let shard = Shard::for_doc(&id, 4);
            assert_eq!(shard, Shard::for_doc(&id, 4));
            counts[usize::from(shard.0)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
        assert_eq!(Shard::for_doc("anything", 1), Shard(0));
    }

    #[test]
    fn ids_that_differ_only_in_high_bits_of_their_characters_still_spread() {
        // '0', '4', '8' and 'd' share their two low bits: without the finaliser, FNV-1a modulo
        // 4 depends on nothing else, and all 64 of these ids fell in one shard.
        let mut counts = [0u32; 4];
        for a in "048d".chars() {
            for b in "048d".chars() {
                for c in "048d".chars() {
                    let id = format!("2c3a0767-d84a-4d02-8a92-fa54a3376{a}{b}{c}");
                    counts[usize::from(Shard::for_doc(&id, 4).0)] += 1;
                }
            }
        }
        for c in counts {
            assert!((6..30).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
