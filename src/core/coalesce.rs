//! Request coalescing (issue 21): identical in-flight requests reach the
//! upstream once. A request the exact cache would store, on a cache miss,
//! joins a slot in shared data chosen by its cache key. The first becomes
//! the leader and goes upstream; identical requests that arrive while it is
//! in flight, on any worker, become followers: they stay paused and are
//! answered from the leader's response (`x-llmgate-cache: coalesced`) by
//! their own worker's root context, which polls the slot on its 10 ms tick.
//! If the leader fails, is blocked, its answer is not cacheable or too big,
//! or a follower's wait exceeds `max_wait_ms`, each follower goes upstream on
//! its own. Streams: a follower of a streamed leader gets the whole stream
//! replayed once the leader completes (it does not join live: a live join
//! would need every worker to fan out chunks while they arrive).
//!
//! Storage: `slots` pre-created keys `llmgate:coalesce:<i>` (a small JSON
//! state, every write a CAS) and as many `llmgate:coalesce-body:<i>` (the
//! leader's encoded cache entry, written only by the slot's leader). Two
//! different requests that hash into one busy slot are simply not coalesced.
//! State is bounded (slots × `max_body_bytes`) and expires: a leader that
//! never reports frees its slot after `max_wait_ms`.

use serde::{Deserialize, Serialize};

use crate::core::cas::{cas_loop, Cas};
use crate::core::error::ConfigError;
use crate::core::host::{Clock, SharedStore};

pub const SLOT_PREFIX: &str = "llmgate:coalesce:";
pub const BODY_PREFIX: &str = "llmgate:coalesce-body:";
/// How long a finished leader's answer stays readable for its followers.
const LINGER_MS: u64 = 2_000;
const CAS_RETRIES: u32 = 16;

/// `cache.coalesce`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoalesceConfig {
    /// Off by default.
    pub enabled: bool,
    /// Longest a follower waits for its leader before going upstream itself.
    pub max_wait_ms: u64,
    /// Slots in shared data (requests in flight that can lead at once).
    pub slots: u32,
    /// Largest answer shared with followers (bigger: they go upstream).
    pub max_body_bytes: u64,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_wait_ms: 30_000,
            slots: 256,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl CoalesceConfig {
    pub fn compile(&self) -> Result<Coalescer, ConfigError> {
        if self.max_wait_ms == 0 || self.max_wait_ms > 600_000 {
            return Err(ConfigError::new(
                "cache.coalesce.max_wait_ms",
                "must be between 1 and 600000",
            ));
        }
        if self.slots == 0 || self.slots > 65_536 {
            return Err(ConfigError::new(
                "cache.coalesce.slots",
                "must be between 1 and 65536",
            ));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "cache.coalesce.max_body_bytes",
                "must be between 1 and 16777216",
            ));
        }
        Ok(Coalescer {
            enabled: self.enabled,
            max_wait_ms: self.max_wait_ms,
            slots: self.slots,
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// The compiled coalescing settings and logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalescer {
    pub enabled: bool,
    pub max_wait_ms: u64,
    pub slots: u32,
    pub max_body_bytes: usize,
}

impl Default for Coalescer {
    fn default() -> Self {
        CoalesceConfig::default().compile().unwrap_or(Coalescer {
            enabled: false,
            max_wait_ms: 30_000,
            slots: 1,
            max_body_bytes: 0,
        })
    }
}

/// What one slot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    /// The cache key of the request leading (or that led) here.
    k: String,
    /// Until when the state holds (leading: the leader's deadline; done or
    /// failed: how long followers may still read it).
    e: u64,
    /// 0 free, 1 leading, 2 done (answer in the body key), 3 failed.
    s: u8,
}

const LEADING: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;
const FREE_SLOT: &[u8] = br#"{"k":"","e":0,"s":0}"#;

fn decode(v: &[u8]) -> Option<Slot> {
    serde_json::from_slice(v).ok()
}

fn encode(s: &Slot) -> Option<Vec<u8>> {
    serde_json::to_vec(s).ok()
}

/// A request's part in coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Goes upstream and publishes its answer in `slot`.
    Leader { slot: u32 },
    /// Waits for the leader of `slot`.
    Follower { slot: u32 },
    /// Not coalesced (slot busy with another request, store failure).
    Alone,
}

/// What a follower's slot says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Pending,
    /// The leader's encoded cache entry.
    Ready(Vec<u8>),
    /// The leader failed, or the slot moved on: go upstream.
    Failed,
}

impl Coalescer {
    pub fn slot_key(i: u32) -> String {
        format!("{SLOT_PREFIX}{i}")
    }

    pub fn body_key(i: u32) -> String {
        format!("{BODY_PREFIX}{i}")
    }

    /// Creates every slot and body key (plugin start, before traffic).
    pub fn init(&self, store: &dyn SharedStore) -> Result<(), crate::core::budget::StoreFailure> {
        if !self.enabled {
            return Ok(());
        }
        for i in 0..self.slots {
            crate::core::budget::ensure_key(store, &Self::slot_key(i), FREE_SLOT, |v| {
                decode(v).is_some()
            })?;
            crate::core::budget::ensure_key(store, &Self::body_key(i), b"", |_| true)?;
        }
        Ok(())
    }

    fn slot_of(&self, key: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        u32::try_from(h.checked_rem(u64::from(self.slots.max(1))).unwrap_or(0)).unwrap_or(0)
    }

    /// Joins the slot of `key`: leader if it is free (or its state is over),
    /// follower if the same request is in flight, alone otherwise.
    pub fn join(&self, store: &dyn SharedStore, clock: &dyn Clock, key: &str) -> Role {
        let slot = self.slot_of(key);
        let now = clock.now_ms();
        let deadline = now.saturating_add(self.max_wait_ms);
        let r = cas_loop(
            store,
            &Self::slot_key(slot),
            CAS_RETRIES,
            FREE_SLOT,
            decode,
            encode,
            |st: Slot| {
                let live = st.e > now;
                if st.s == LEADING && live {
                    if st.k == key {
                        Cas::<Slot, Role, ()>::Done(Role::Follower { slot })
                    } else {
                        Cas::Done(Role::Alone)
                    }
                } else {
                    Cas::Write(
                        Slot {
                            k: key.to_string(),
                            e: deadline,
                            s: LEADING,
                        },
                        Role::Leader { slot },
                    )
                }
            },
        );
        r.unwrap_or(Role::Alone)
    }

    /// The leader's end: its encoded entry (`None`: failed, blocked, not
    /// cacheable) for the followers. Returns whether followers got an answer.
    pub fn publish(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        slot: u32,
        key: &str,
        entry: Option<&[u8]>,
    ) -> bool {
        let entry = entry.filter(|e| !e.is_empty() && e.len() <= self.max_body_bytes);
        if let Some(bytes) = entry {
            if store.set(&Self::body_key(slot), bytes, None).is_err() {
                return self.publish(store, clock, slot, key, None);
            }
        }
        let state = if entry.is_some() { DONE } else { FAILED };
        let until = clock.now_ms().saturating_add(LINGER_MS);
        let r: Result<bool, _> = cas_loop(
            store,
            &Self::slot_key(slot),
            CAS_RETRIES,
            FREE_SLOT,
            decode,
            encode,
            |st: Slot| {
                if st.k != key || st.s != LEADING {
                    // Expired and taken over: nothing of ours to publish.
                    Cas::<Slot, bool, ()>::Done(false)
                } else {
                    Cas::Write(
                        Slot {
                            k: st.k.clone(),
                            e: until,
                            s: state,
                        },
                        state == DONE,
                    )
                }
            },
        );
        r.unwrap_or(false)
    }

    /// A follower's view of its slot.
    pub fn poll(&self, store: &dyn SharedStore, clock: &dyn Clock, slot: u32, key: &str) -> Poll {
        let Ok(Some((v, _))) = store.get(&Self::slot_key(slot)) else {
            return Poll::Failed;
        };
        let Some(st) = decode(&v) else {
            return Poll::Failed;
        };
        if st.k != key {
            return Poll::Failed;
        }
        match st.s {
            LEADING if st.e > clock.now_ms() => Poll::Pending,
            DONE => match store.get(&Self::body_key(slot)) {
                Ok(Some((body, _))) if !body.is_empty() => Poll::Ready(body),
                _ => Poll::Failed,
            },
            _ => Poll::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::{FakeClock, FakeStore};

    fn setup() -> (Coalescer, FakeStore, FakeClock) {
        let c = CoalesceConfig {
            enabled: true,
            slots: 8,
            max_wait_ms: 1000,
            ..CoalesceConfig::default()
        }
        .compile()
        .unwrap();
        let store = FakeStore::new();
        c.init(&store).unwrap();
        (c, store, FakeClock::at(1_000_000))
    }

    #[test]
    fn first_leads_identical_follow_and_get_the_answer() {
        let (c, store, clock) = setup();
        let Role::Leader { slot } = c.join(&store, &clock, "k1") else {
            panic!("leader")
        };
        assert_eq!(c.join(&store, &clock, "k1"), Role::Follower { slot });
        assert_eq!(c.poll(&store, &clock, slot, "k1"), Poll::Pending);
        assert!(c.publish(&store, &clock, slot, "k1", Some(b"entry")));
        assert_eq!(
            c.poll(&store, &clock, slot, "k1"),
            Poll::Ready(b"entry".to_vec())
        );
        // After the linger, a new identical request leads again.
        clock.advance(LINGER_MS + 1);
        assert_eq!(c.join(&store, &clock, "k1"), Role::Leader { slot });
    }

    #[test]
    fn failures_timeouts_and_collisions_send_followers_upstream() {
        let (c, store, clock) = setup();
        let Role::Leader { slot } = c.join(&store, &clock, "a") else {
            panic!()
        };
        assert!(!c.publish(&store, &clock, slot, "a", None));
        assert_eq!(c.poll(&store, &clock, slot, "a"), Poll::Failed);
        // A too-big answer is a failure for followers.
        let Role::Leader { slot } = c.join(&store, &clock, "b") else {
            panic!()
        };
        let big = vec![1u8; c.max_body_bytes + 1];
        assert!(!c.publish(&store, &clock, slot, "b", Some(&big)));
        // A leader that never reports: its slot frees after max_wait.
        let Role::Leader { slot } = c.join(&store, &clock, "c") else {
            panic!()
        };
        clock.advance(1001);
        assert_eq!(c.poll(&store, &clock, slot, "c"), Poll::Failed);
        assert_eq!(c.join(&store, &clock, "c"), Role::Leader { slot });
        // Another key in a busy slot is not coalesced.
        let other = (0..1000)
            .map(|i| format!("x{i}"))
            .find(|k| c.slot_of(k) == slot)
            .unwrap();
        assert_eq!(c.join(&store, &clock, &other), Role::Alone);
        // Garbage in shared data never panics.
        store
            .set(&Coalescer::slot_key(slot), b"\xff{", None)
            .unwrap();
        assert_eq!(c.poll(&store, &clock, slot, "c"), Poll::Failed);
        let _ = c.join(&store, &clock, "c");
    }

    #[test]
    fn config_is_validated() {
        for (json, field) in [
            (r#"{"max_wait_ms": 0}"#, "cache.coalesce.max_wait_ms"),
            (r#"{"slots": 0}"#, "cache.coalesce.slots"),
            (r#"{"max_body_bytes": 0}"#, "cache.coalesce.max_body_bytes"),
        ] {
            let c: CoalesceConfig = serde_json::from_str(json).unwrap();
            assert_eq!(c.compile().unwrap_err().field, field);
        }
        assert!(serde_json::from_str::<CoalesceConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
