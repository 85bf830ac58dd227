//! Acting on the evidence across upstreams: a circuit breaker per upstream.
//!
//! [`Breaker`] keeps an upstream out of rotation while it fails, on tokio's clock: it opens
//! after consecutive failures or a failure rate over a sliding window (with a minimum number
//! of calls), stays open at least as long as the server's `Retry-After` and longer each time
//! it reopens (with jitter, up to a cap), treats a 429 as a cooldown rather than a failure, and
//! lets probe calls through half-open. A [`Permit`] dropped without an outcome (a stream the
//! caller dropped) gives its probe slot back, so a breaker never sticks half-open; when every
//! breaker refuses, [`least_recently_failed`] says which upstream to probe anyway.
//!
//! ```
//! use std::time::Duration;
//! use reqwest_llm_guard::failover::{Breaker, BreakerConfig, BreakerState, CallOutcome};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = Breaker::new(BreakerConfig::default());
//! for _ in 0..5 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     permit.record(CallOutcome::Failure { retry_after: None });
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! tokio::time::advance(Duration::from_secs(40)).await; // 30 s ± 10 %
//! assert_eq!(breaker.state(), BreakerState::HalfOpen);
//! # }
//! ```

mod breaker;

pub use breaker::{
    Breaker, BreakerConfig, BreakerState, CallOutcome, Permit, least_recently_failed,
};
