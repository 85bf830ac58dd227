//! A circuit breaker per upstream, on tokio's clock.
//!
//! Written here rather than taken from a crate: the breakers on crates.io either run on
//! `std::time::Instant` (so tests cannot use tokio's paused clock), or take the call as a
//! closure or a `tower::Service` (so the outcome of a stream that ends long after the call
//! returned cannot be recorded). This one hands out a [`Permit`] and takes the outcome whenever
//! it is known; a permit dropped without an outcome (a stream the caller dropped) gives its
//! half-open slot back, so a breaker never sticks half-open.
//!
//! The knobs are named after resilience4j's and tower-resilience's.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::evidence::str_enum;

str_enum! {
    /// Where a breaker stands (attribute and metric label `breaker.state`).
    pub enum BreakerState {
        /// Calls pass.
        Closed => "closed",
        /// Calls are refused until the open time is over.
        Open => "open",
        /// A few probe calls pass; their outcome closes or reopens the breaker.
        HalfOpen => "half_open",
    }
}

/// What a call through the breaker came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The upstream answered as it should.
    Success,
    /// The upstream failed (5xx, transport error, a broken or cut answer, an in-stream error).
    /// `retry_after` is the server's requested wait, when it gave one: the breaker stays open
    /// at least that long.
    Failure {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The upstream is rate limiting (429): a cooldown for `retry_after` (or the configured
    /// minimum), not a failure that counts towards opening it for longer.
    RateLimited {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Neither: a request error (4xx), a wall, a call the caller cancelled. Releases a
    /// half-open permit without a verdict.
    Ignored,
}

/// A breaker's settings. Defaults in brackets.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Opens after this many failures in a row (default 5).
    pub consecutive_failures: u32,
    /// Opens when failures reach this share of the calls in the window (default 0.5)...
    pub failure_rate: f64,
    /// ...counted over this sliding window (default 60 s)...
    pub window: Duration,
    /// ...once the window holds at least this many calls (default 20).
    pub minimum_calls: u32,
    /// The first open time (default 30 s); each reopening without a success in between doubles it.
    pub open_base: Duration,
    /// The longest open time (default 300 s) (a server's `Retry-After` may ask for longer).
    pub open_max: Duration,
    /// Open times vary by up to this share, up or down (default 0.1), so upstreams shared by many
    /// clients are not probed by all of them at once.
    pub jitter: f64,
    /// Probe calls let through at once while half-open (default 1).
    pub half_open_permits: u32,
    /// The cooldown after a 429 that named no wait (default 1 s).
    pub rate_limit_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            minimum_calls: 20,
            open_base: Duration::from_secs(30),
            open_max: Duration::from_secs(300),
            jitter: 0.1,
            half_open_permits: 1,
            rate_limit_cooldown: Duration::from_secs(1),
        }
    }
}

impl BreakerConfig {
    /// Opens after this many failures in a row.
    #[must_use]
    pub fn with_consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Opens when `rate` of at least `minimum_calls` calls within `window` failed.
    #[must_use]
    pub fn with_failure_rate(mut self, rate: f64, window: Duration, minimum_calls: u32) -> Self {
        self.failure_rate = rate;
        self.window = window;
        self.minimum_calls = minimum_calls;
        self
    }

    /// The first open time and the longest one.
    #[must_use]
    pub fn with_open_time(mut self, base: Duration, max: Duration) -> Self {
        self.open_base = base;
        self.open_max = max;
        self
    }

    /// How much open times vary, up or down (0 for none).
    #[must_use]
    pub fn with_jitter(mut self, share: f64) -> Self {
        self.jitter = share;
        self
    }

    /// Probe calls let through at once while half-open.
    #[must_use]
    pub fn with_half_open_permits(mut self, n: u32) -> Self {
        self.half_open_permits = n;
        self
    }

    /// The cooldown after a 429 that named no wait.
    #[must_use]
    pub fn with_rate_limit_cooldown(mut self, wait: Duration) -> Self {
        self.rate_limit_cooldown = wait;
        self
    }
}

/// Slots of the sliding window.
const SLOTS: usize = 10;

/// A circuit breaker. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    config: Arc<BreakerConfig>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// While open: until when.
    open_until: Option<Instant>,
    /// Whether the open state is a 429 cooldown (it ends straight in closed, not half-open).
    cooldown: bool,
    /// Openings since the last success, for the growing open time.
    openings: u32,
    consecutive: u32,
    /// Per slot: calls, failures.
    slots: [(u32, u32); SLOTS],
    current: usize,
    slot_started: Instant,
    half_open_out: u32,
    last_failure: Option<Instant>,
    forced: Option<BreakerState>,
    transitions: u64,
}

/// Leave to make one call; give back the outcome with [`Permit::record`]. Dropped without an
/// outcome, it records [`CallOutcome::Ignored`]: a half-open slot is never held forever.
#[must_use = "record the call's outcome, or drop the permit to give it back"]
pub struct Permit {
    breaker: Option<Breaker>,
    probe: bool,
}

impl Breaker {
    /// A closed breaker with these settings (out-of-range values are clamped).
    pub fn new(config: BreakerConfig) -> Self {
        let mut config = config;
        config.consecutive_failures = config.consecutive_failures.max(1);
        config.minimum_calls = config.minimum_calls.max(1);
        config.half_open_permits = config.half_open_permits.max(1);
        config.failure_rate = if config.failure_rate.is_finite() {
            config.failure_rate.clamp(0.0, 1.0)
        } else {
            1.0
        };
        config.jitter = if config.jitter.is_finite() {
            config.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        config.window = config.window.max(Duration::from_millis(SLOTS as u64));
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                open_until: None,
                cooldown: false,
                openings: 0,
                consecutive: 0,
                slots: [(0, 0); SLOTS],
                current: 0,
                slot_started: Instant::now(),
                half_open_out: 0,
                last_failure: None,
                forced: None,
                transitions: 0,
            })),
            config: Arc::new(config),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state now (an open breaker whose time is over reads as half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        if let Some(forced) = inner.forced {
            return forced;
        }
        inner.tick(&self.config);
        inner.state
    }

    /// State changes so far (closed → open → half-open → closed is three).
    pub fn transitions(&self) -> u64 {
        self.lock().transitions
    }

    /// When the last failure was recorded.
    pub fn last_failure(&self) -> Option<Instant> {
        self.lock().last_failure
    }

    /// Leave for one call, or `None` while the breaker refuses calls.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut inner = self.lock();
        match inner.forced {
            Some(BreakerState::Open) => return None,
            Some(_) => {
                return Some(Permit {
                    breaker: Some(self.clone()),
                    probe: false,
                });
            }
            None => {}
        }
        inner.tick(&self.config);
        match inner.state {
            BreakerState::Closed => Some(Permit {
                breaker: Some(self.clone()),
                probe: false,
            }),
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                if inner.half_open_out < self.config.half_open_permits {
                    inner.half_open_out += 1;
                    Some(Permit {
                        breaker: Some(self.clone()),
                        probe: true,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// A probe permit even though the breaker is open: for when every upstream is open and one
    /// must still be tried (the caller picks the one that failed least recently).
    pub fn force_probe(&self) -> Permit {
        let mut inner = self.lock();
        if inner.forced.is_none() && inner.state == BreakerState::Open {
            inner.set(BreakerState::HalfOpen);
            inner.open_until = None;
        }
        inner.half_open_out += 1;
        Permit {
            breaker: Some(self.clone()),
            probe: true,
        }
    }

    /// Holds the breaker open until [`reset`](Self::reset) or [`force_closed`](Self::force_closed).
    pub fn force_open(&self) {
        self.lock().forced = Some(BreakerState::Open);
    }

    /// Holds the breaker closed until [`reset`](Self::reset) or [`force_open`](Self::force_open).
    pub fn force_closed(&self) {
        self.lock().forced = Some(BreakerState::Closed);
    }

    /// Back to closed, counts cleared, nothing forced.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.forced = None;
        inner.set(BreakerState::Closed);
        inner.open_until = None;
        inner.cooldown = false;
        inner.openings = 0;
        inner.consecutive = 0;
        inner.slots = [(0, 0); SLOTS];
        inner.half_open_out = 0;
    }

    fn record(&self, outcome: CallOutcome, probe: bool) {
        let config = &*self.config;
        let mut inner = self.lock();
        if probe {
            inner.half_open_out = inner.half_open_out.saturating_sub(1);
        }
        inner.tick(config);
        let now = Instant::now();
        match outcome {
            CallOutcome::Ignored => {}
            CallOutcome::Success => {
                inner.count(config, false);
                inner.consecutive = 0;
                if inner.state == BreakerState::HalfOpen {
                    inner.close();
                }
            }
            CallOutcome::RateLimited { retry_after } => {
                // A cooldown: no failure counted, no longer opening next time.
                let wait = retry_after.unwrap_or(config.rate_limit_cooldown);
                let until = now + wait;
                if inner.open_until.is_none_or(|u| u < until) {
                    inner.open_until = Some(until);
                }
                if inner.state != BreakerState::Open {
                    inner.cooldown = true;
                    inner.set(BreakerState::Open);
                }
            }
            CallOutcome::Failure { retry_after } => {
                inner.count(config, true);
                inner.consecutive = inner.consecutive.saturating_add(1);
                inner.last_failure = Some(now);
                let trip = inner.state == BreakerState::HalfOpen
                    || inner.consecutive >= config.consecutive_failures
                    || inner.rate_tripped(config);
                if trip {
                    inner.open(config, retry_after, now);
                }
            }
        }
    }
}

impl Inner {
    fn set(&mut self, state: BreakerState) {
        if self.state != state {
            self.state = state;
            self.transitions += 1;
        }
    }

    fn close(&mut self) {
        self.set(BreakerState::Closed);
        self.open_until = None;
        self.cooldown = false;
        self.openings = 0;
        self.consecutive = 0;
        self.slots = [(0, 0); SLOTS];
    }

    fn open(&mut self, config: &BreakerConfig, retry_after: Option<Duration>, now: Instant) {
        // base × 2^openings, capped, jittered; never shorter than the server asked.
        let factor = 2u32.saturating_pow(self.openings.min(16));
        let grown = config.open_base.saturating_mul(factor).min(config.open_max);
        let jitter = 1.0 + config.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        let jittered = grown.mul_f64(jitter.max(0.0));
        let open_for = retry_after.map_or(jittered, |r| r.max(jittered));
        self.openings = self.openings.saturating_add(1);
        self.open_until = Some(now + open_for);
        self.cooldown = false;
        self.half_open_out = 0;
        self.set(BreakerState::Open);
    }

    /// Open time over: half-open (or closed after a 429 cooldown); the window slides.
    fn tick(&mut self, config: &BreakerConfig) {
        let now = Instant::now();
        if self.state == BreakerState::Open && self.open_until.is_some_and(|u| now >= u) {
            self.open_until = None;
            if std::mem::take(&mut self.cooldown) {
                self.set(BreakerState::Closed);
            } else {
                self.set(BreakerState::HalfOpen);
            }
        }
        let slot = config.window / u32::try_from(SLOTS).unwrap_or(10);
        let elapsed = now.saturating_duration_since(self.slot_started);
        if elapsed >= slot {
            let steps = (elapsed.as_nanos() / slot.as_nanos().max(1)).min(SLOTS as u128);
            for _ in 0..steps {
                self.current = (self.current + 1) % SLOTS;
                self.slots[self.current] = (0, 0);
            }
            self.slot_started = if steps as usize == SLOTS {
                now
            } else {
                self.slot_started + slot * u32::try_from(steps).unwrap_or(0)
            };
        }
    }

    fn count(&mut self, config: &BreakerConfig, failure: bool) {
        self.tick(config);
        let slot = &mut self.slots[self.current];
        slot.0 = slot.0.saturating_add(1);
        if failure {
            slot.1 = slot.1.saturating_add(1);
        }
    }

    fn rate_tripped(&self, config: &BreakerConfig) -> bool {
        let (calls, failures) = self
            .slots
            .iter()
            .fold((0u32, 0u32), |(c, f), s| (c + s.0, f + s.1));
        calls >= config.minimum_calls
            && f64::from(failures) >= config.failure_rate * f64::from(calls)
    }
}

impl Permit {
    /// Records the call's outcome.
    pub fn record(mut self, outcome: CallOutcome) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(outcome, self.probe);
        }
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(CallOutcome::Ignored, self.probe);
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Breaker")
            .field("state", &inner.state)
            .field("forced", &inner.forced)
            .field("consecutive", &inner.consecutive)
            .field("openings", &inner.openings)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

/// Which of these breakers to try when every one refuses: the one whose last failure is the
/// oldest (one never failed comes first), so the whole set is never closed for good.
pub fn least_recently_failed<'a>(breakers: &[&'a Breaker]) -> Option<&'a Breaker> {
    breakers.iter().min_by_key(|b| b.last_failure()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> BreakerConfig {
        BreakerConfig {
            jitter: 0.0,
            ..BreakerConfig::default()
        }
    }

    fn fail(b: &Breaker) {
        b.try_acquire()
            .expect("permitted")
            .record(CallOutcome::Failure { retry_after: None });
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_a_probe_closes_it() {
        let b = Breaker::new(quiet());
        for _ in 0..4 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().expect("one probe");
        assert!(probe.is_probe());
        assert!(b.try_acquire().is_none(), "one probe at a time");
        probe.record(CallOutcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.transitions(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_it_for_longer_up_to_the_cap() {
        let b = Breaker::new(BreakerConfig {
            open_max: Duration::from_secs(100),
            ..quiet()
        });
        for _ in 0..5 {
            fail(&b);
        }
        let mut waits = Vec::new();
        for _ in 0..4 {
            let started = Instant::now();
            while b.state() == BreakerState::Open {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            waits.push(started.elapsed().as_secs());
            fail(&b); // the probe fails
        }
        assert_eq!(waits, vec![30, 60, 100, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_over_the_window_opens_it() {
        let b = Breaker::new(BreakerConfig {
            minimum_calls: 10,
            ..quiet()
        });
        for i in 0..10 {
            let p = b.try_acquire().unwrap();
            if i % 2 == 1 {
                p.record(CallOutcome::Failure { retry_after: None });
            } else {
                p.record(CallOutcome::Success);
            }
            if i < 9 {
                assert_eq!(b.state(), BreakerState::Closed, "call {i}");
            }
        }
        assert_eq!(b.state(), BreakerState::Open, "5 of 10 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = Breaker::new(BreakerConfig {
            minimum_calls: 4,
            ..quiet()
        });
        fail(&b);
        fail(&b);
        b.try_acquire().unwrap().record(CallOutcome::Success);
        tokio::time::advance(Duration::from_secs(61)).await;
        b.try_acquire().unwrap().record(CallOutcome::Success);
        fail(&b);
        // Counting the forgotten calls it would be 3 failures of 5 and open.
        assert_eq!(b.state(), BreakerState::Closed, "1 of 2 in the window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_a_cooldown_of_its_retry_after_not_a_failure() {
        let b = Breaker::new(quiet());
        b.try_acquire().unwrap().record(CallOutcome::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.try_acquire().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "no probe needed after a cooldown"
        );
        // And it counted nothing: four failures still do not open it.
        for _ in 0..4 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_time_is_at_least_the_servers_retry_after() {
        let b = Breaker::new(BreakerConfig {
            consecutive_failures: 1,
            ..quiet()
        });
        b.try_acquire().unwrap().record(CallOutcome::Failure {
            retry_after: Some(Duration::from_secs(90)),
        });
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_gives_its_permit_back() {
        let b = Breaker::new(BreakerConfig {
            consecutive_failures: 1,
            ..quiet()
        });
        fail(&b);
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none());
        drop(probe); // the stream it was for was dropped
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let again = b.try_acquire().expect("the permit came back");
        again.record(CallOutcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_states_hold_until_reset() {
        let b = Breaker::new(quiet());
        b.force_open();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
        b.force_closed();
        for _ in 0..10 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..5 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Open, "counting again after reset");
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_refuse_the_least_recently_failed_is_probed() {
        let one = Breaker::new(BreakerConfig {
            consecutive_failures: 1,
            ..quiet()
        });
        let two = Breaker::new(BreakerConfig {
            consecutive_failures: 1,
            ..quiet()
        });
        fail(&one);
        tokio::time::advance(Duration::from_secs(1)).await;
        fail(&two);
        assert!(one.try_acquire().is_none() && two.try_acquire().is_none());
        let pick = least_recently_failed(&[&two, &one]).unwrap();
        assert!(Arc::ptr_eq(&pick.inner, &one.inner));
        let probe = pick.force_probe();
        assert!(probe.is_probe());
        probe.record(CallOutcome::Success);
        assert_eq!(one.state(), BreakerState::Closed);
        assert_eq!(two.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_its_share() {
        for _ in 0..50 {
            let b = Breaker::new(BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            });
            fail(&b);
            tokio::time::advance(Duration::from_secs(26)).await;
            assert_eq!(b.state(), BreakerState::Open, "not before 27 s");
            tokio::time::advance(Duration::from_secs(8)).await;
            assert_eq!(b.state(), BreakerState::HalfOpen, "by 33 s");
        }
    }
}
