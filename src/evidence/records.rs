//! The layers' records, as vocabulary: what the retry layer did on each upstream, what the
//! failover layer did across them, and the call's log of both. Data only: the layers write
//! them, the decision, the evidence and the telemetry read them, and none of those imports a
//! layer to do so.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::{WafVerdict, str_enum};

str_enum! {
    /// Why a retry waited as long as it did.
    #[non_exhaustive]
    pub enum WaitReason {
        /// The policy's backoff: no usable server hint.
        Backoff => "backoff",
        /// The server's `retry-after` header (seconds or an HTTP date).
        RetryAfter => "retry_after",
        /// The server's `retry-after-ms` header (OpenAI, Azure).
        RetryAfterMs => "retry_after_ms",
    }
}

str_enum! {
    /// Why the retry layer stopped after an attempt.
    #[non_exhaustive]
    pub enum StopReason {
        /// The strategy found nothing to retry (a success, usually).
        Done => "done",
        /// The strategy called the failure fatal.
        NotRetryable => "not_retryable",
        /// A WAF or bot wall answered: never retried (an edge's rate limit excepted, retried
        /// after its Retry-After like a 429).
        WafWall => "waf_wall",
        /// A 403: never retried.
        Forbidden => "forbidden",
        /// The server said `x-should-retry: false`.
        ShouldRetryFalse => "x_should_retry_false",
        /// The server asked to wait longer than the cap.
        RetryAfterOverCap => "retry_after_over_cap",
        /// The policy's retries ran out.
        AttemptsExhausted => "attempts_exhausted",
        /// The next attempt would start after the deadline.
        Deadline => "deadline",
        /// The shared retry budget is spent.
        BudgetExhausted => "budget_exhausted",
        /// The attempt got no headers within the layer's time-to-headers limit: a silent route
        /// is not retried.
        TimeToHeaders => "time_to_headers",
        /// The API said the account's quota is spent (`insufficient_quota`): no wait clears it.
        InsufficientQuota => "insufficient_quota",
        /// Another retry layer is in charge of this call (nested guards, or an outer retry
        /// layer re-running the stack): this one made a single attempt.
        Nested => "nested",
    }
}

impl StopReason {
    /// Whether the layer gave up on a failure it would otherwise have retried (the call's
    /// decision is then `fallback`).
    pub fn is_exhausted(self) -> bool {
        matches!(
            self,
            Self::RetryAfterOverCap
                | Self::AttemptsExhausted
                | Self::Deadline
                | Self::BudgetExhausted
        )
    }
}

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// 0 for the first attempt.
    pub resend_count: u32,
    /// The status, or `None` for a transport error.
    pub status: Option<StatusCode>,
    /// The wall that answered, if one did.
    pub waf: Option<WafVerdict>,
    /// The wait before the next attempt and why that long; `None` on the last attempt.
    pub retry_after: Option<(Duration, WaitReason)>,
    /// Why the layer stopped; `None` on a retried attempt.
    pub stop: Option<StopReason>,
    /// The wait the server asked for (`retry-after-ms`, `retry-after`), whether or not it was
    /// honoured: a circuit breaker stays open at least that long.
    pub server_wait: Option<Duration>,
}

/// Every attempt of a call, left in the request's and the response's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryRecord {
    /// The attempts, first to last.
    pub attempts: Vec<AttemptRecord>,
}

impl RetryRecord {
    /// Retries made (`retry_count`): 0 when the first attempt stood.
    pub fn retries(&self) -> u32 {
        u32::try_from(self.attempts.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Why the layer stopped.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.attempts.last().and_then(|a| a.stop)
    }
}

str_enum! {
    /// Why a call moved from one upstream to the next (attribute and metric label
    /// `failover.reason`).
    #[non_exhaustive]
    pub enum HopReason {
        /// A 5xx, or an answer out of its contract (HTML, an error in a 2xx, a cut stream).
        UpstreamFailed => "upstream_failed",
        /// No response: connect, reset, timeout.
        TransportError => "transport_error",
        /// 429 after the retry layer's retries (or over its wait cap).
        RateLimited => "rate_limited",
        /// `insufficient_quota`: a quota never clears in seconds.
        QuotaExhausted => "quota_exhausted",
        /// `context_length_exceeded`: to an upstream with a larger context window.
        ContextLength => "context_length",
        /// A stream that failed, stalled or stayed silent before it was handed to the caller.
        StreamFailed => "stream_failed",
        /// Another `fallback` decision of the policy.
        Policy => "policy",
    }
}

str_enum! {
    /// Why the failover layer stopped moving on (attribute `failover.stop_reason`).
    #[non_exhaustive]
    pub enum FailoverStop {
        /// An upstream's answer was decided `none` or `hold`.
        Decided => "decided",
        /// The hops allowed ran out.
        HopsExhausted => "hops_exhausted",
        /// No further upstream serves the request (surface, state, same edge as a wall).
        NoEligibleUpstream => "no_eligible_upstream",
        /// The shared retry budget is spent.
        BudgetExhausted => "budget_exhausted",
        /// The call's deadline has passed.
        Deadline => "deadline",
        /// The request continues server-side state that lives on one upstream only.
        StateAffinity => "state_affinity",
        /// The request's body is a stream and cannot be resent.
        NotCloneable => "not_cloneable",
    }
}

str_enum! {
    /// Why an upstream was passed over without being sent the call (attribute
    /// `failover.reason` on the event `llm_guard.failover_passed_over`).
    #[non_exhaustive]
    pub enum PassReason {
        /// Its own key could not be resolved (the variable unset or empty): it is never sent
        /// the caller's instead.
        CredentialUnresolved => "credential_unresolved",
        /// Its own key is no valid header value.
        CredentialInvalid => "credential_invalid",
        /// The request's path is not one this upstream can be addressed with (neither
        /// `…/chat/completions` nor `…/responses` for its surface): it is never sent the
        /// upstream's key at a URL that is not the upstream's.
        Unaddressable => "unaddressable",
    }
}

/// An upstream the call passed over, without a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassedOver {
    /// The upstream.
    pub upstream: Arc<str>,
    /// Why.
    pub reason: PassReason,
}

/// One move from an upstream to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hop {
    /// The upstream left.
    pub from: Arc<str>,
    /// The upstream tried next.
    pub to: Arc<str>,
    /// Why.
    pub reason: HopReason,
}

/// What the failover layer did for a call, in the response's (and the request's) extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailoverRecord {
    /// The upstreams tried, in order.
    pub tried: Vec<Arc<str>>,
    /// The moves between them.
    pub hops: Vec<Hop>,
    /// The upstreams passed over without a request, and why.
    pub passed_over: Vec<PassedOver>,
    /// Why it stopped where it did.
    pub stop: Option<FailoverStop>,
    /// Set when a stream cut after its commit point was continued on another upstream.
    pub(crate) continued_on: Arc<std::sync::OnceLock<Arc<str>>>,
}

impl FailoverRecord {
    /// The upstream whose answer (or error) was handed back: the one that continued a cut
    /// stream, when one did.
    pub fn served_by(&self) -> Option<&str> {
        self.continued_on()
            .or_else(|| self.tried.last().map(|s| &**s))
    }

    /// The upstream that continued a stream cut after its commit point (known once the
    /// continuation answered).
    pub fn continued_on(&self) -> Option<&str> {
        self.continued_on.get().map(|s| &**s)
    }
}

/// What happened in one call, below the layer that started it.
#[derive(Debug, Default, Clone)]
pub(crate) struct CallLog {
    /// One leg per target the call went to (one, without failover), in order.
    pub(crate) legs: Vec<Leg>,
    /// The failover layer's record, when it ran.
    pub(crate) failover: Option<FailoverRecord>,
}

/// The call's time on one target: which, where its attempts went, and what they got.
#[derive(Debug, Default, Clone)]
pub(crate) struct Leg {
    /// The failover layer's name for the target.
    pub(crate) upstream: Option<Arc<str>>,
    /// Where its attempts were sent, when not the URL the caller wrote.
    pub(crate) url: Option<reqwest::Url>,
    /// The retry layer's record of its attempts.
    pub(crate) retry: Option<RetryRecord>,
}

impl CallLog {
    /// Retries made on every leg.
    pub(crate) fn retries(&self) -> u32 {
        self.legs
            .iter()
            .filter_map(|l| l.retry.as_ref())
            .map(RetryRecord::retries)
            .fold(0u32, u32::saturating_add)
    }

    /// The last leg: the target that answered (or failed last).
    pub(crate) fn last(&self) -> Option<&Leg> {
        self.legs.last()
    }

    /// A log of the records a response carries, for evidence read without a call layer.
    pub(crate) fn of_records(
        retry: Option<&RetryRecord>,
        failover: Option<&FailoverRecord>,
    ) -> Self {
        Self {
            legs: vec![Leg {
                upstream: failover.and_then(|f| f.served_by().map(Arc::from)),
                url: None,
                retry: retry.cloned(),
            }],
            failover: failover.cloned(),
        }
    }
}
