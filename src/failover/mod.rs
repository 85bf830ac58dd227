//! Acting on the evidence across upstreams: failover between an ordered list of upstreams,
//! and a circuit breaker per upstream.
//!
//! [`Failover`] sits between the call layer and the retry layer ([`Guard::with_failover`]
//! puts it there), so one call span, one decision policy, one retry budget and one deadline
//! cover every hop. Each upstream's attempts are retried by the retry layer within those
//! bounds; the failover layer then acts on the call's decision, made by the same policy as
//! the span's:
//!
//! | decision | what the layer does |
//! |---|---|
//! | `none` | hands the answer back |
//! | `hold` | hands it back at once, never masked by a hop: a WAF wall, an auth, request or content-policy error |
//! | `fallback` | moves to the next eligible upstream, if a hop is left (default 2), the budget allows one and the deadline has not passed; else hands the last answer (or error) back |
//!
//! The error decides where to: `context_length_exceeded` goes first to an upstream with a
//! larger declared context window; `insufficient_quota` moves on without a retry (a quota never
//! clears in seconds); a wall the policy chose to fail over from never leads to another
//! upstream behind the same host. A request goes only to upstreams that serve its surface (no
//! Chat ↔ Responses translation), and one that continues server-side state
//! (`previous_response_id`, a `conversation`, `GET /responses/{id}`) only to the upstream that
//! minted it (the layer remembers the last 10,000 response ids it saw, each of at most 256
//! bytes: [`FailoverBuilder::with_affinity_capacity`]): if that one fails, the call holds there
//! (`failover.stop_reason=state_affinity`).
//!
//! The deadline and the budget are the call's ([`Guard::with_deadline`](crate::Guard::with_deadline),
//! [`Guard::with_budget`](crate::Guard::with_budget)): with or without the retry layer, no hop
//! is made past the deadline, and every hop draws on the budget. Used without a call layer
//! above it, the layer starts the call itself with the defaults (60 s, a budget of its own).
//!
//! Every layer below reads the call from one scope the call layer writes once, and records on
//! it what it did: the evidence of a call that failed over names the upstream that answered
//! (`server.address`, `server.port`, `gen_ai.provider.name`, `failover.upstream`), never the
//! URL the caller wrote, and counts the retries made on every upstream
//! ([`Evidence::retry_count`](crate::Evidence::retry_count); the answering upstream's alone in
//! [`Evidence::upstream_retry_count`](crate::Evidence::upstream_retry_count)).
//!
//! Keys go only where they were meant (see [`Upstream::new`], "Whose key it gets"): an
//! upstream's own key, never the caller's instead when its own cannot be resolved (it is then
//! passed over, [`PassReason`] on the record and an `llm_guard.failover_passed_over` span
//! event); the caller's credentials only to the host the caller addressed, or to an upstream
//! that opts in ([`Upstream::with_forward_caller_auth`]).
//!
//! An upstream built [`with_drill_required`](Upstream::with_drill_required) gets caller traffic
//! only once the evidence drill has passed against it ([`FailoverHandle::promote`]), and again
//! after its breaker opens ([`FailoverHandle::awaiting_drill`] lists those waiting); until then calls pass
//! it over.
//!
//! Each upstream gets its request with its base URL, its key (`Authorization: Bearer`, read
//! from the environment at each call; the caller's own only as the rule above allows) and its
//! model, if it overrides the request's. Keys are never recorded.
//!
//! Streams fail over freely until their [`CommitPoint`]: the first body byte (the default), the
//! first content event, or the end (the answer held in a bounded buffer). A streaming request's
//! first byte (or content) is due within the first-token limit from the hop's start, headers
//! included (default 60 s), and its frames within the idle limit of each other (60 s). After the
//! commit, a failure ends the caller's body with an error, never a clean end, and the call's
//! decision is `fallback` for the caller to act on. A non-streaming body is bounded by the
//! inspect layer's body idle timeout (30 s by default).
//!
//! Opt-in ([`FailoverBuilder::with_continuation`]): a Chat stream cut after its commit point (truncated,
//! its connection failed, stalled or timed out; not an in-stream error, which is a refusal) is
//! continued on the next eligible upstream that declares prefill support
//! ([`Upstream::with_prefill`]): the text the caller already has goes as an assistant message,
//! and that upstream's answer continues the caller's stream. An upstream that does not declare
//! it never gets a prefill; a continuation that fails ends the caller's body with the original
//! failure, not its own. The call is judged by the whole answer (`failover.continued_on` on the
//! call span, the continuation counted as a hop).
//!
//! The answer's [`FailoverRecord`] (upstreams tried, hops with their reasons, why it stopped)
//! is in the response's extensions; [`Evidence`](crate::Evidence) carries the upstream that
//! answered and the hop count, the call span `failover.upstream`, `failover.hops`,
//! `failover.stop_reason` and one `llm_guard.failover_hop` event per hop, and every attempt
//! span the upstream it went to.
//!
//! ```no_run
//! use reqwest_llm_guard::Guard;
//! use reqwest_llm_guard::failover::{Credential, Failover, Upstream};
//!
//! let (failover, handle) = Failover::builder([
//!     Upstream::new("openai", "https://api.openai.com/v1")?
//!         .with_credential(Credential::env("OPENAI_API_KEY"))
//!         .with_context_window(128_000),
//!     Upstream::new("gateway", "https://gateway.example/v1")?
//!         .with_credential(Credential::env("GATEWAY_KEY"))
//!         .with_model("openai/gpt-4o-mini"),
//! ])
//! .with_max_hops(1)
//! .build_with_handle();
//! let client = Guard::new().with_failover(failover).client(reqwest::Client::new());
//! // Calls name any of the upstreams' URLs (or a placeholder): the layer rewrites them.
//! // The breakers, through the handle: handle.breaker("openai").map(|b| b.force_open());
//! # let _ = client; Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Circuit breakers
//!
//! [`Breaker`] keeps an upstream out of rotation while it fails, on tokio's clock: it opens
//! after consecutive failures or a failure rate over a sliding window (with a minimum number
//! of calls), stays open at least as long as the server's `Retry-After` and longer each time
//! it reopens (with jitter, up to a cap), treats a 429 as a cooldown rather than a failure, and
//! lets probe calls through half-open. A [`Permit`] dropped without an outcome (a stream the
//! caller dropped) gives its probe slot back, so a breaker never sticks half-open; when every
//! breaker refuses, the upstream that failed least recently ([`least_recently_failed`]) is
//! probed anyway, so the upstreams are never all closed off. In-stream errors count as
//! failures when the stream ends.
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
//!
//! [`Guard::with_failover`]: crate::Guard::with_failover

mod breaker;
mod build;
mod continuation;
mod layer;
mod metrics;
mod route;
mod state;
mod stream;
mod upstream;

pub use breaker::{
    Breaker, BreakerConfig, BreakerState, CallOutcome, Permit, least_recently_failed,
};

pub use crate::evidence::{FailoverRecord, FailoverStop, Hop, HopReason, PassReason, PassedOver};
pub use build::{FailoverBuilder, FailoverHandle};
pub use layer::Failover;
pub use state::{DEFAULT_AFFINITY_CAPACITY, DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
pub use stream::{CommitPoint, FIRST_CONTENT_MAX_HELD};
pub use upstream::{Credential, InvalidBaseUrl, Upstream};
