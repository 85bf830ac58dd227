//! Configuring the layer, and the handle to its live state: the builder makes one layer and
//! one state, so a setting changed later can never fork the breakers, the promotions or the
//! affinity (tower-resilience's `build_with_handle` split).

use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig};
use super::layer::Failover;
use super::state::{
    DEFAULT_AFFINITY_CAPACITY, DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, Settings, Shared,
};
use super::stream::CommitPoint;
use super::upstream::Upstream;
use crate::extensions::CallBounds;

/// The settings of a [`Failover`] layer, before it is built.
///
/// ```
/// use std::time::Duration;
/// use reqwest_llm_guard::failover::{CommitPoint, Failover, Upstream};
///
/// let (failover, handle) = Failover::builder([
///     Upstream::new("primary", "https://api.openai.com/v1")?,
///     Upstream::new("backup", "https://gateway.example/v1")?,
/// ])
/// .with_max_hops(1)
/// .with_commit_point(CommitPoint::FirstContent)
/// .with_first_token_timeout(Duration::from_secs(20))
/// .build_with_handle();
/// // `failover` goes into the client (Guard::with_failover); `handle` stays with the service,
/// // sharing the layer's state: its breakers, promotions and affinity.
/// assert!(handle.breaker("primary").is_some());
/// # let _ = failover; Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct FailoverBuilder {
    upstreams: Vec<Upstream>,
    settings: Settings,
}

impl std::fmt::Debug for FailoverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverBuilder")
            .field("upstreams", &self.upstreams)
            .field("max_hops", &self.settings.max_hops)
            .field("commit", &self.settings.commit)
            .finish_non_exhaustive()
    }
}

/// The live state of a built [`Failover`] layer, shared with it: promote an upstream after
/// the drill, list those waiting for it, read or force a breaker.
#[derive(Clone)]
pub struct FailoverHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FailoverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverHandle")
            .field("upstreams", &self.shared.upstreams().len())
            .finish_non_exhaustive()
    }
}

impl Failover {
    /// Failover over these upstreams, in priority order, with the defaults: at most 2 hops, a
    /// breaker per upstream with [`BreakerConfig::default`], the last 10,000 response ids
    /// remembered, streams committed at their first byte, 60 s for a stream's first byte and
    /// 60 s between its frames. [`Failover::builder`] sets them otherwise.
    pub fn new(upstreams: impl IntoIterator<Item = Upstream>) -> Self {
        Self::builder(upstreams).build()
    }

    /// The settings of a layer over these upstreams, in priority order, starting from the
    /// defaults of [`Failover::new`].
    pub fn builder(upstreams: impl IntoIterator<Item = Upstream>) -> FailoverBuilder {
        FailoverBuilder {
            upstreams: upstreams.into_iter().collect(),
            settings: Settings {
                meter: None,
                max_hops: 2,
                breaker: BreakerConfig::default(),
                affinity_capacity: DEFAULT_AFFINITY_CAPACITY,
                commit: CommitPoint::FirstByte,
                first_token: Some(DEFAULT_FIRST_TOKEN_TIMEOUT),
                idle: Some(DEFAULT_IDLE_TIMEOUT),
                continuation: None,
                bounds: CallBounds::default(),
            },
        }
    }

    /// The handle to this layer's live state (shared with every clone of it).
    pub fn handle(&self) -> FailoverHandle {
        FailoverHandle {
            shared: self.shared.clone(),
        }
    }

    /// Records that the evidence drill passed against the upstream named `name` (see
    /// [`FailoverHandle::promote`]).
    pub fn promote(&self, name: &str) -> bool {
        self.shared.promote(name)
    }

    /// The upstreams that must pass the drill before they get traffic (again) (see
    /// [`FailoverHandle::awaiting_drill`]).
    pub fn awaiting_drill(&self) -> Vec<Upstream> {
        self.shared.awaiting_drill()
    }

    /// The breaker of the upstream named `name` (see [`FailoverHandle::breaker`]).
    pub fn breaker(&self, name: &str) -> Option<&Breaker> {
        self.shared.breaker(name)
    }
}

impl FailoverBuilder {
    /// Breaker metrics go to this provider instead of the global one.
    pub fn with_meter_provider(
        mut self,
        provider: &impl opentelemetry::metrics::MeterProvider,
    ) -> Self {
        self.settings.meter = Some(provider.meter_with_scope(crate::evidence::metric::scope()));
        self
    }

    /// At most this many moves to another upstream per call (default 2).
    pub fn with_max_hops(mut self, hops: usize) -> Self {
        self.settings.max_hops = hops;
        self
    }

    /// Every upstream's breaker with these settings.
    pub fn with_breaker(mut self, config: &BreakerConfig) -> Self {
        self.settings.breaker = config.clone();
        self
    }

    /// Remember at most this many response ids for state affinity (default 10,000; the oldest
    /// is forgotten first). An id longer than 256 bytes is not remembered, so the memory kept
    /// is at most about 350 bytes an id (3.5 MB at the default; ~1.4 MB for ids of 60 bytes).
    pub fn with_affinity_capacity(mut self, capacity: usize) -> Self {
        self.settings.affinity_capacity = capacity;
        self
    }

    /// When a stream is handed to the caller (default [`CommitPoint::FirstByte`]).
    pub fn with_commit_point(mut self, commit: CommitPoint) -> Self {
        self.settings.commit = commit;
        self
    }

    /// The most a stream may take for its first byte (or, committing at the first content,
    /// its first content event), per attempt (default 60 s).
    pub fn with_first_token_timeout(mut self, limit: Duration) -> Self {
        self.settings.first_token = Some(limit);
        self
    }

    /// The most a stream may stay silent between frames, per attempt (default 60 s).
    pub fn with_idle_timeout(mut self, limit: Duration) -> Self {
        self.settings.idle = Some(limit);
        self
    }

    /// Opt-in continuation of Chat streams: a stream cut after its commit point (truncated,
    /// its connection failed or stalled) is continued on the next upstream that declares
    /// prefill support ([`Upstream::with_prefill`]), sent with `client`: the text the caller
    /// already has goes as an assistant prefill, and the answer continues the caller's stream.
    /// An upstream that does not declare it never gets a prefill; a continuation that fails
    /// surfaces the original failure, not its own. The continuation is sent outside the layers
    /// (its own stream is checked), and is recorded as the call's last hop.
    pub fn with_continuation(mut self, client: reqwest::Client) -> Self {
        self.settings.continuation = Some(client);
        self
    }

    /// No limits on a stream's first byte or the gaps between its frames.
    pub fn without_stream_timeouts(mut self) -> Self {
        self.settings.first_token = None;
        self.settings.idle = None;
        self
    }

    /// The layer.
    pub fn build(self) -> Failover {
        Failover {
            shared: Arc::new(Shared::new(self.upstreams, self.settings)),
        }
    }

    /// The layer, and the handle to its state.
    pub fn build_with_handle(self) -> (Failover, FailoverHandle) {
        let failover = self.build();
        let handle = failover.handle();
        (failover, handle)
    }
}

impl FailoverHandle {
    /// Records that the evidence drill passed against the upstream named `name` (one built
    /// [`with_drill_required`](Upstream::with_drill_required)): it gets caller traffic from now
    /// on, until its breaker next opens. `false` when no upstream has that name.
    pub fn promote(&self, name: &str) -> bool {
        self.shared.promote(name)
    }

    /// The upstreams that must pass the drill before they get traffic (again): never drilled,
    /// or demoted when their breaker opened.
    pub fn awaiting_drill(&self) -> Vec<Upstream> {
        self.shared.awaiting_drill()
    }

    /// The breaker of the upstream named `name`: read its state, force it open or closed,
    /// reset it.
    pub fn breaker(&self, name: &str) -> Option<&Breaker> {
        self.shared.breaker(name)
    }
}
