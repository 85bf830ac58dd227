//! A retry budget shared by every clone of a client, after tower's `TpsBudget` (and Finagle's).
//!
//! Why not `tower::retry::budget::TpsBudget` itself (it is in the dependency tree through
//! reqwest, and on tokio's clock too, so paused-time tests would work):
//! - its withdrawal reads the balance and then subtracts in two atomic steps, so concurrent
//!   retries can overdraw it; a 429 storm is exactly when many withdraw at once, and the bound
//!   "retries ≤ reserve + ratio × calls" must hold then (tests/load.rs checks it exactly);
//! - it turns the ratio into an integer number of deposits per retry (`1 / ratio`, truncated),
//!   so 0.3 allows a third of calls, not 30%;
//! - it panics on a window outside 1-60 s or a ratio outside 0-1000, where this one clamps.
//!
//! One mutex over ten slots costs about what its atomics do at the call rates of an LLM client.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

const SLOTS: usize = 10;

/// Bounds retries to a share of recent traffic, so a 429 storm cannot multiply load.
///
/// Every call deposits one token; every retry must withdraw one. Over the last `ttl`, retries
/// may number at most `min_per_sec × ttl` (a reserve, so quiet clients can still retry) plus
/// `ratio × calls`. When the budget is spent, a retryable failure is returned as it is and the
/// decision is `fallback`.
///
/// The default, `RetryBudget::new(10 s, 10/s, 0.2)`, allows 100 retries plus one for every
/// five calls in any ten seconds. The clock is tokio's, so tests with paused time work.
///
/// ```
/// use std::time::Duration;
/// use reqwest_llm_guard::retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5);
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw(), "4 calls × 0.5 = 2 retries");
/// # }
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    ttl: Duration,
    reserve: f64,
    ratio: f64,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// Per slot: calls deposited and retries withdrawn.
    slots: [(u64, u64); SLOTS],
    current: usize,
    slot_started: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// A budget over a sliding window of `ttl` (clamped to 1-60 s), with a reserve of
    /// `min_per_sec` retries per second and `ratio` (clamped to 0-1000) retries per call.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        Self {
            ttl,
            reserve: f64::from(min_per_sec) * ttl.as_secs_f64(),
            ratio,
            window: Mutex::new(Window {
                slots: [(0, 0); SLOTS],
                current: 0,
                slot_started: Instant::now(),
            }),
        }
    }

    /// The sliding window retries are counted over (`ttl`, clamped).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The share of calls that may be retried (`ratio`).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries allowed with no calls at all (`min_per_sec × ttl`).
    pub fn reserve(&self) -> f64 {
        self.reserve
    }

    /// Records a call.
    pub fn deposit(&self) {
        let mut w = self.window();
        let i = w.current;
        w.slots[i].0 += 1;
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut w = self.window();
        let (calls, retries) = w
            .slots
            .iter()
            .fold((0u64, 0u64), |(c, r), s| (c + s.0, r + s.1));
        #[allow(clippy::cast_precision_loss)]
        let allowed = self.reserve + self.ratio * calls as f64;
        #[allow(clippy::cast_precision_loss)]
        let ok = (retries + 1) as f64 <= allowed;
        if ok {
            let i = w.current;
            w.slots[i].1 += 1;
        }
        ok
    }

    /// The window, with slots older than `ttl` cleared.
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = self.ttl / u32::try_from(SLOTS).unwrap_or(10);
        let elapsed = w.slot_started.elapsed();
        if elapsed >= slot {
            let steps = (elapsed.as_nanos() / slot.as_nanos().max(1)).min(SLOTS as u128);
            for _ in 0..steps {
                w.current = (w.current + 1) % SLOTS;
                let i = w.current;
                w.slots[i] = (0, 0);
            }
            let advanced = slot * u32::try_from(steps).unwrap_or(0);
            w.slot_started = if steps as usize == SLOTS {
                Instant::now()
            } else {
                w.slot_started + advanced
            };
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_reserve_allows_retries_without_calls() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.1);
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10);
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10, "100 calls × 0.1");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_after_its_ttl() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        for _ in 0..5 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 5);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.withdraw(), "old calls no longer count");
        b.deposit();
        assert!(b.withdraw());
    }

    #[test]
    fn settings_are_clamped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = RetryBudget::new(Duration::from_secs(600), 1, f64::NAN);
            assert!((b.reserve() - 60.0).abs() < f64::EPSILON);
            assert!(b.ratio().abs() < f64::EPSILON);
        });
    }
}
