//! The retry layer: bounded retry for 429, walls never retried.
//!
//! Built on reqwest-retry's public traits, so a user's
//! `RetryableStrategy` ("whether") and any
//! `RetryPolicy` ("when") plug in. On top of them it does what
//! reqwest-retry does not:
//!
//! - honours the server's `retry-after-ms`, `retry-after` (seconds or an HTTP date) and
//!   `x-should-retry`, the way the OpenAI SDKs do;
//! - caps a server's requested wait (default 60 s): asked to wait longer, it does not retry and
//!   the call goes to `fallback`;
//! - keeps the call's deadline on tokio's clock (default 60 s from the call's start): no retry
//!   starts, and no wait runs, past it. The attempt in flight is never cut short: a long
//!   generation is not a failure;
//! - draws every retry from the call's [`RetryBudget`], shared by all clones of the client, so
//!   a 429 storm cannot multiply load.
//!
//! The deadline and the budget are the call's settings: in a [`Guard`](crate::Guard) they are
//! the guard's ([`Guard::with_deadline`](crate::Guard::with_deadline),
//! [`Guard::with_budget`](crate::Guard::with_budget)), and one deadline and one budget bound
//! every retry on every upstream the call goes to. Set on this layer, they apply when it is
//! the first of the crate's layers to see the call (used alone), and a guard given this layer
//! takes them unless it sets its own;
//! - never retries a WAF or bot wall (at any status) nor a 403, whatever the strategy says;
//!   an edge's own rate limit (`waf.kind=rate_limit`, Cloudflare's 1015) is retried after its
//!   Retry-After, like a 429.
//!
//! Each attempt runs the rest of the stack with a [`CurrentAttempt`] in the request's
//! extensions (inner layers read `http.request.resend_count` from it). When the call ends, a
//! [`RetryRecord`] (every attempt's status, WAF verdict, wait and its reason, and why the layer
//! stopped) is left in the request's extensions and copied into the response's.
//!
//! The last attempt's result is returned as it came: `Ok(429)` when retries ran out, the
//! transport error unwrapped (reqwest-retry wraps it, which hides `is_timeout()`), its URL
//! without userinfo and with its query values replaced.
//!
//! One retry layer per call: a retry layer that finds another one of this crate already
//! running the call (a guard nested in a guard), or finds that the call ran through it before
//! (a retry layer outside it, re-running the whole stack), makes one attempt and leaves the
//! retrying to the outer one (`retry.stop_reason=nested`). For reqwest-retry's own middleware
//! beside this crate, see [`RefuseWalls`] and the crate docs ("Already using reqwest-retry or
//! reqwest-tracing?").
//!
//! # Defaults
//!
//! | setting | default |
//! |---|---|
//! | what is retried | 429 only ([`On429`]); [`Retry::openai_sdk`] adds 408, 409, 5xx and transport errors |
//! | retries | 2 |
//! | backoff | full-jitter exponential, 0.5 s doubling to 8 s, never under 100 ms |
//! | time to response headers, per attempt | none (the client's timeout) |
//! | largest server-requested wait | 60 s |
//! | deadline (the call's) | 60 s from the start of the call |
//! | budget (the call's) | [`RetryBudget::default`]: 10 retries/s reserve plus 20% of calls, over 10 s |
//!
//! ```no_run
//! use std::time::Duration;
//! use reqwest_llm_guard::inspect::Inspect;
//! use reqwest_llm_guard::retry::Retry;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Retry::new().with_deadline(Duration::from_secs(30)))
//!     .with(Inspect::new()) // inside: its WAF verdicts stop retries
//!     .build();
//! ```

mod after;
mod strategy;

pub use crate::budget::RetryBudget;
pub use crate::evidence::{AttemptRecord, RetryRecord, StopReason, WaitReason};
pub use crate::extensions::CurrentAttempt;
pub use after::{server_wait, should_retry_header};
pub use strategy::{On429, OpenAiSdk, RefuseWalls};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Extensions, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy, Retryable, RetryableStrategy};
use retry_policies::policies::ExponentialBackoff;

use crate::error::{Error, ErrorKind};
use crate::evidence::{DecisionTable, WafKind, WafVerdict};
use crate::extensions::{CallBounds, CallScope, put};

/// The retry middleware. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Retry<P = ExponentialBackoff, S = On429> {
    policy: P,
    strategy: S,
    max_server_wait: Duration,
    min_backoff: Duration,
    time_to_headers: Option<Duration>,
    deadline: Option<Duration>,
    budget: Option<Arc<RetryBudget>>,
    /// Which of the call settings were set on this layer (they then become a
    /// [`Guard`](crate::Guard)'s, unless the guard sets its own).
    explicit: Explicit,
}

/// Which call settings were set explicitly.
#[derive(Debug, Clone, Copy, Default)]
struct Explicit {
    deadline: bool,
    budget: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

/// The default floor of the layer's own backoff: 100 ms.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Full-jitter exponential backoff from 0.5 s to 8 s, 2 retries.
pub fn default_policy() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(500), Duration::from_secs(8))
        .jitter(Jitter::Full)
        .base(2)
        .build_with_max_retries(2)
}

impl Retry {
    /// 429 only, with the defaults in the [module docs](self#defaults).
    pub fn new() -> Self {
        Self {
            policy: default_policy(),
            strategy: On429,
            max_server_wait: Duration::from_secs(60),
            min_backoff: DEFAULT_MIN_BACKOFF,
            time_to_headers: None,
            deadline: Some(crate::extensions::DEFAULT_DEADLINE),
            budget: Some(Arc::new(RetryBudget::default())),
            explicit: Explicit::default(),
        }
    }
}

impl Retry<ExponentialBackoff, OpenAiSdk> {
    /// The OpenAI SDKs' set (408, 409, 429, 5xx, transport errors); other defaults unchanged.
    ///
    /// Mind what it re-sends: a `POST` that timed out or got a 5xx may still have run upstream,
    /// and is sent again. For chat and response generation that costs tokens twice at worst;
    /// for a request with side effects (a stored response, a tool that acts) send an
    /// idempotency key the server honours, or keep the 429-only default.
    pub fn openai_sdk() -> Self {
        Retry::new().with_strategy(OpenAiSdk)
    }
}

impl<P, S> Retry<P, S> {
    /// Another "when": any `retry_policies::RetryPolicy`. Its elapsed-time bounds use the
    /// system clock; this layer's deadline uses tokio's.
    #[must_use]
    pub fn with_policy<P2: RetryPolicy>(self, policy: P2) -> Retry<P2, S> {
        Retry {
            policy,
            strategy: self.strategy,
            max_server_wait: self.max_server_wait,
            min_backoff: self.min_backoff,
            time_to_headers: self.time_to_headers,
            deadline: self.deadline,
            budget: self.budget,
            explicit: self.explicit,
        }
    }

    /// Another "whether": any reqwest-retry `RetryableStrategy`. Walls and 403s stay unretried.
    #[must_use]
    pub fn with_strategy<S2: RetryableStrategy>(self, strategy: S2) -> Retry<P, S2> {
        Retry {
            policy: self.policy,
            strategy,
            max_server_wait: self.max_server_wait,
            min_backoff: self.min_backoff,
            time_to_headers: self.time_to_headers,
            deadline: self.deadline,
            budget: self.budget,
            explicit: self.explicit,
        }
    }

    /// The shortest wait of the layer's own backoff (default 100 ms): jitter never retries
    /// within milliseconds. A server's own `Retry-After` is honoured as it asks.
    #[must_use]
    pub fn with_min_backoff(mut self, floor: Duration) -> Self {
        self.min_backoff = floor;
        self
    }

    /// The most each attempt may wait for its response's headers (default: no limit but the
    /// client's own timeout). An attempt past it ends with an error of kind
    /// [`ErrorKind::TimeToHeaders`] (`error.type=time_to_headers`),
    /// and is never retried: a silent route stays silent; the failover layer moves on instead.
    #[must_use]
    pub fn with_time_to_headers(mut self, limit: Duration) -> Self {
        self.time_to_headers = Some(limit);
        self
    }

    /// The longest server-requested wait honoured; above it, no retry (default 60 s).
    #[must_use]
    pub fn with_max_server_wait(mut self, max: Duration) -> Self {
        self.max_server_wait = max;
        self
    }

    /// The total deadline from the call's start (default 60 s).
    ///
    /// The deadline and the budget are the call's settings: they bound every retry and every
    /// hop of a call. Set here, they apply when this layer is the first of the crate's layers
    /// to see the call (used alone), and a [`Guard`](crate::Guard) given this layer takes them
    /// as its own unless [`Guard::with_deadline`](crate::Guard::with_deadline) sets one; under
    /// a call layer started elsewhere, the call's settings win.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self.explicit.deadline = true;
        self
    }

    /// No deadline: only the policy's retries bound the call (see
    /// [`with_deadline`](Self::with_deadline) for when it applies).
    #[must_use]
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self.explicit.deadline = true;
        self
    }

    /// The budget to draw retries from (share one across clients to bound them together; see
    /// [`with_deadline`](Self::with_deadline) for when it applies).
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self.explicit.budget = true;
        self
    }

    /// No budget: retries are not bounded by recent traffic.
    #[must_use]
    pub fn without_budget(mut self) -> Self {
        self.budget = None;
        self.explicit.budget = true;
        self
    }

    /// The budget retries are drawn from when this layer starts the call.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// The call settings set on this layer, for a guard to take: the deadline, the budget.
    #[allow(clippy::option_option)]
    pub(crate) fn explicit_bounds(
        &self,
    ) -> (Option<Option<Duration>>, Option<Option<Arc<RetryBudget>>>) {
        (
            self.explicit.deadline.then_some(self.deadline),
            self.explicit.budget.then(|| self.budget.clone()),
        )
    }

    /// The call settings this layer starts a call with when it is the first to see it.
    fn own_bounds(&self) -> CallBounds {
        CallBounds {
            deadline: self.deadline,
            budget: self.budget.clone(),
        }
    }
}

/// The wall that answered: the inspect layer's finding when it ran inside, else what the
/// block headers alone say.
pub(crate) fn wall_of(response: &Response) -> Option<WafVerdict> {
    let ext = response.extensions();
    if let Some(wall) = ext.get::<WafVerdict>() {
        return Some(wall.clone());
    }
    let inspected = ext.get::<crate::contract::ContractVerdict>().is_some()
        || ext.get::<crate::inspect::VerdictHandle>().is_some();
    if inspected {
        None
    } else {
        crate::waf::classify_headers(response.headers())
    }
}

/// OpenAI's 429 `insufficient_quota` (in `code` or `type`): a billing state, not a rate.
fn quota_spent(response: &Response) -> bool {
    response
        .extensions()
        .get::<crate::contract::ContractVerdict>()
        .and_then(|v| v.api_error.as_ref())
        .is_some_and(|e| {
            e.error_type.as_deref() == Some("insufficient_quota")
                || e.code
                    .as_ref()
                    .is_some_and(|c| c.as_text() == "insufficient_quota")
        })
}

enum Step {
    Stop(StopReason),
    Retry(Duration, WaitReason),
}

impl<P: RetryPolicy, S: RetryableStrategy> Retry<P, S> {
    fn next_step(
        &self,
        result: &reqwest_middleware::Result<Response>,
        waf: Option<&WafVerdict>,
        retries: u32,
        scope: &CallScope,
    ) -> Step {
        let response = result.as_ref().ok();
        // An edge's own rate limit (Cloudflare 1015) is a 429 in all but name: retried after
        // its Retry-After, at whatever status it came with. Every other wall is final.
        let rate_limit = waf.is_some_and(|w| w.kind == WafKind::RateLimit);
        if waf.is_some() && !rate_limit {
            return Step::Stop(StopReason::WafWall);
        }
        if !rate_limit && response.is_some_and(|r| r.status() == StatusCode::FORBIDDEN) {
            return Step::Stop(StopReason::Forbidden);
        }
        if let Err(reqwest_middleware::Error::Middleware(e)) = result
            && e.downcast_ref::<Error>()
                .is_some_and(|e| e.kind() == ErrorKind::TimeToHeaders)
        {
            return Step::Stop(StopReason::TimeToHeaders);
        }
        if response.is_some_and(quota_spent) {
            return Step::Stop(StopReason::InsufficientQuota);
        }
        let verdict = if rate_limit {
            Some(Retryable::Transient)
        } else {
            self.strategy.handle(result)
        };
        let Some(verdict) = verdict else {
            return Step::Stop(StopReason::Done);
        };
        let headers = response.map(Response::headers);
        match (verdict, headers.and_then(after::should_retry_header)) {
            (_, Some(false)) => return Step::Stop(StopReason::ShouldRetryFalse),
            (Retryable::Fatal, None) => return Step::Stop(StopReason::NotRetryable),
            (Retryable::Fatal | Retryable::Transient, _) => {}
        }
        let server = headers.and_then(|h| after::server_wait(h, SystemTime::now()));
        if let Some((wait, _)) = server
            && wait > self.max_server_wait
        {
            return Step::Stop(StopReason::RetryAfterOverCap);
        }
        let backoff = match self.policy.should_retry(scope.started_at, retries) {
            RetryDecision::DoNotRetry => return Step::Stop(StopReason::AttemptsExhausted),
            RetryDecision::Retry { execute_after } => execute_after
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        };
        // The server's wait is honoured as asked; our own backoff keeps a floor, so a
        // rate-limited upstream is never asked again within milliseconds.
        let (wait, reason) = server.unwrap_or((backoff.max(self.min_backoff), WaitReason::Backoff));
        if let Some(deadline) = scope.bounds.deadline
            && scope.started.elapsed().saturating_add(wait) >= deadline
        {
            return Step::Stop(StopReason::Deadline);
        }
        if let Some(budget) = &scope.bounds.budget
            && !budget.withdraw()
        {
            return Step::Stop(StopReason::BudgetExhausted);
        }
        Step::Retry(wait, reason)
    }
}

impl<P, S> Retry<P, S> {
    /// One attempt, for a call another retry layer is in charge of.
    async fn single_attempt(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        scope: &CallScope,
    ) -> reqwest_middleware::Result<Response> {
        let result = next.run(req, extensions).await;
        let waf = result.as_ref().ok().and_then(wall_of);
        let record = RetryRecord {
            attempts: vec![AttemptRecord {
                resend_count: 0,
                status: result.as_ref().ok().map(Response::status),
                waf,
                retry_after: None,
                stop: Some(StopReason::Nested),
                server_wait: None,
            }],
        };
        scope.record_retry(record.clone());
        result
            .map(|mut r| {
                put(r.extensions_mut(), record);
                crate::redact::response(r)
            })
            .map_err(crate::redact::error)
    }
}

#[async_trait::async_trait]
impl<P, S> Middleware for Retry<P, S>
where
    P: RetryPolicy + Send + Sync + 'static,
    S: RetryableStrategy + Send + Sync + 'static,
{
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // The call's start, deadline and budget: a layer above set them, else this one does.
        let (scope, owner) = CallScope::get_or_start(extensions, || {
            (self.own_bounds(), Arc::new(DecisionTable::default()))
        });
        let result = self.retrying(req, extensions, next, &scope).await;
        if owner {
            extensions.remove::<CallScope>();
        }
        result
    }
}

impl<P, S> Retry<P, S>
where
    P: RetryPolicy + Send + Sync + 'static,
    S: RetryableStrategy + Send + Sync + 'static,
{
    /// The attempts on the call's current leg.
    async fn retrying(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        scope: &CallScope,
    ) -> reqwest_middleware::Result<Response> {
        let leg = scope.legs().saturating_sub(1);
        // An attempt of this leg of this call already running (a guard nested in a guard), or
        // of another call (a retry layer outside re-running the stack, each run a call of its
        // own): that layer retries, not this one. Another leg of this call (a hop) is this
        // layer's to retry.
        if extensions
            .get::<CurrentAttempt>()
            .is_some_and(|a| a.call != scope.id || a.leg == leg)
        {
            return self.single_attempt(req, extensions, next, scope).await;
        }
        let mut record = RetryRecord::default();
        let mut retries = 0u32;
        loop {
            let Some(attempt) = req.try_clone() else {
                return Err(Error::new(ErrorKind::RequestNotCloneable).into());
            };
            put(
                extensions,
                CurrentAttempt {
                    resend_count: retries,
                    call: scope.id,
                    leg,
                },
            );
            let result = match self.time_to_headers {
                Some(limit) => tokio::time::timeout(limit, next.clone().run(attempt, extensions))
                    .await
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::TimeToHeaders).into())),
                None => next.clone().run(attempt, extensions).await,
            };
            let waf = result.as_ref().ok().and_then(wall_of);
            let step = self.next_step(&result, waf.as_ref(), retries, scope);
            let status = result.as_ref().ok().map(Response::status);
            let server_wait = result
                .as_ref()
                .ok()
                .and_then(|r| after::server_wait(r.headers(), SystemTime::now()))
                .map(|(wait, _)| wait);
            match step {
                Step::Stop(reason) => {
                    record.attempts.push(AttemptRecord {
                        resend_count: retries,
                        status,
                        waf,
                        retry_after: None,
                        stop: Some(reason),
                        server_wait,
                    });
                    scope.record_retry(record.clone());
                    return result
                        .map(|mut r| {
                            put(r.extensions_mut(), record);
                            crate::redact::response(r)
                        })
                        .map_err(crate::redact::error);
                }
                Step::Retry(wait, reason) => {
                    record.attempts.push(AttemptRecord {
                        resend_count: retries,
                        status,
                        waf,
                        retry_after: Some((wait, reason)),
                        stop: None,
                        server_wait,
                    });
                    // Inner layers of the next attempt see why this one was retried, and the
                    // call's log has the leg's attempts so far (a leg cut off while it waits
                    // keeps them).
                    put(extensions, record.clone());
                    scope.record_retry(record.clone());
                    // Free the connection before sleeping.
                    drop(result);
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
            }
        }
    }
}
