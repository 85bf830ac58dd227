//! The layer's state, shared by its clones and its handle: each upstream with its breaker and
//! promotion, the response ids minted where, and the settings.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig};
use super::stream::CommitPoint;
use super::upstream::Upstream;
use crate::extensions::CallBounds;

/// Default bound on remembered response ids.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 10_000;

pub(super) struct Entry {
    pub(super) upstream: Upstream,
    pub(super) breaker: Breaker,
    /// For an upstream that must pass the drill: whether it has, since its breaker last
    /// opened.
    promoted: std::sync::atomic::AtomicBool,
}

impl Entry {
    pub(super) fn promoted(&self) -> bool {
        !self.upstream.drill || self.promoted.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub(super) struct Shared {
    pub(super) entries: Vec<Entry>,
    pub(super) settings: Settings,
    pub(super) affinity: Mutex<Affinity>,
    /// Set once the breaker metrics are registered (at the first call).
    pub(super) registered: std::sync::OnceLock<()>,
}

impl Shared {
    /// An upstream that must pass the drill loses its promotion when its breaker opens.
    pub(super) fn demote_if_open(&self, index: usize) {
        let entry = &self.entries[index];
        if entry.upstream.drill && entry.breaker.state() == super::BreakerState::Open {
            entry
                .promoted
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

impl super::metrics::Breakers for Shared {
    fn each(&self, f: &mut dyn FnMut(&Arc<str>, &Breaker)) {
        for e in &self.entries {
            f(&e.upstream.name, &e.breaker);
        }
    }
}

/// The longest response id remembered: providers mint ids of well under 100 characters, and
/// one from a hostile upstream must not make the map's bound a matter of its length.
pub(crate) const MAX_AFFINITY_ID_BYTES: usize = 256;

/// Response ids this layer saw minted, and by which upstream: bounded in count (oldest
/// forgotten first) and in length, so at most `capacity` × ~350 bytes.
pub(super) struct Affinity {
    capacity: usize,
    by_id: HashMap<Arc<str>, usize>,
    order: VecDeque<Arc<str>>,
}

impl Affinity {
    pub(super) fn remember(&mut self, id: &str, upstream: usize) {
        if self.capacity == 0 || id.len() > MAX_AFFINITY_ID_BYTES || self.by_id.contains_key(id) {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        // One copy of the id, shared by the map and the order.
        let id: Arc<str> = id.into();
        self.by_id.insert(id.clone(), upstream);
        self.order.push_back(id);
    }

    pub(super) fn owner(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

/// The layer's settings (built by [`FailoverBuilder`](super::FailoverBuilder)).
#[derive(Clone)]
pub(super) struct Settings {
    /// The meter for the breaker metrics; the global one (read at the first call) if unset.
    pub(super) meter: Option<opentelemetry::metrics::Meter>,
    pub(super) max_hops: usize,
    pub(super) breaker: BreakerConfig,
    pub(super) affinity_capacity: usize,
    pub(super) commit: CommitPoint,
    pub(super) first_token: Option<Duration>,
    pub(super) idle: Option<Duration>,
    /// Opt-in: the client continuations are sent with.
    pub(super) continuation: Option<reqwest::Client>,
    /// The call settings when this layer is the first of the crate's to see a call (no
    /// call layer above it): a 60 s deadline and a budget of its own.
    pub(super) bounds: CallBounds,
}

/// Default limit for a stream's first byte (or first content), per attempt: 60 s.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit between a stream's frames, per attempt: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Shared {
    /// The state of a layer over these upstreams: a breaker each, no promotion, no affinity.
    pub(super) fn new(upstreams: Vec<Upstream>, settings: Settings) -> Self {
        Self {
            entries: upstreams
                .into_iter()
                .map(|upstream| Entry {
                    upstream,
                    breaker: Breaker::new(settings.breaker.clone()),
                    promoted: std::sync::atomic::AtomicBool::new(false),
                })
                .collect(),
            affinity: Mutex::new(Affinity {
                capacity: settings.affinity_capacity,
                by_id: HashMap::new(),
                order: VecDeque::new(),
            }),
            settings,
            registered: std::sync::OnceLock::new(),
        }
    }

    /// The upstreams, as configured.
    pub(super) fn upstreams(&self) -> Vec<Upstream> {
        self.entries.iter().map(|e| e.upstream.clone()).collect()
    }

    /// Records that the drill passed against the upstream named `name`.
    pub(super) fn promote(&self, name: &str) -> bool {
        self.entries
            .iter()
            .find(|e| &*e.upstream.name == name)
            .is_some_and(|e| {
                e.promoted.store(true, std::sync::atomic::Ordering::Release);
                true
            })
    }

    /// The upstreams waiting for the drill.
    pub(super) fn awaiting_drill(&self) -> Vec<Upstream> {
        self.entries
            .iter()
            .filter(|e| !e.promoted())
            .map(|e| e.upstream.clone())
            .collect()
    }

    /// The breaker of the upstream named `name`.
    pub(super) fn breaker(&self, name: &str) -> Option<&Breaker> {
        self.entries
            .iter()
            .find(|e| &*e.upstream.name == name)
            .map(|e| &e.breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_is_bounded_in_count_and_in_id_length() {
        let mut a = Affinity {
            capacity: 3,
            by_id: HashMap::new(),
            order: VecDeque::new(),
        };
        for (i, id) in ["resp_a", "resp_b", "resp_c", "resp_d"]
            .into_iter()
            .enumerate()
        {
            a.remember(id, i);
        }
        // The oldest is forgotten first.
        assert_eq!(a.owner("resp_a"), None);
        assert_eq!(a.owner("resp_d"), Some(3));
        assert_eq!((a.by_id.len(), a.order.len()), (3, 3));
        // Seen again: not moved, not counted twice.
        a.remember("resp_b", 9);
        assert_eq!(a.owner("resp_b"), Some(1));
        assert_eq!(a.order.len(), 3);
        // An id longer than any provider mints is not kept.
        let long = "r".repeat(MAX_AFFINITY_ID_BYTES + 1);
        a.remember(&long, 0);
        assert_eq!(a.owner(&long), None);
        assert_eq!(a.owner("resp_b"), Some(1));
    }
}
