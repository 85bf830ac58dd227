//! The whole stack, in the right order, in one line; and the evidence a call left.

use std::sync::Arc;
use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};
use reqwest_retry::{RetryPolicy, RetryableStrategy};

use crate::evidence::DecisionPolicy;
use crate::extensions::{CallBounds, DEFAULT_DEADLINE};
use crate::failover::Failover;
use crate::inspect::Inspect;
use crate::retry::{Retry, RetryBudget};
use crate::telemetry::Telemetry;

/// The layers of this crate, assembled outermost first: the call layer ([`Telemetry`]: the
/// call's scope, the decision, the [`Evidence`](crate::Evidence), the call span and the
/// metrics), the failover layer when one is given ([`Guard::with_failover`]), [`Retry`], the
/// attempt spans, then [`Inspect`].
///
/// The call's settings are the guard's: its decision policy, its deadline and its retry budget
/// ([`Guard::with_deadline`], [`Guard::with_budget`]) bound every retry and every hop of a call.
/// A deadline or budget set on the [`Retry`] given to the guard becomes the guard's, unless the
/// guard sets its own.
///
/// ```no_run
/// use reqwest_llm_guard::Guard;
///
/// // Defaults throughout: global OpenTelemetry providers, 429-only retry, compat contracts.
/// let client = Guard::new().client(reqwest::Client::new());
/// ```
///
/// Each part can be replaced or switched off, and the layers can be added to a builder that
/// already has others (they go after them, so inside):
///
/// ```no_run
/// use reqwest_llm_guard::evidence::{DecisionTable, FallbackDecision, Rule};
/// use reqwest_llm_guard::{Guard, inspect::Inspect, retry::Retry, contract::Mode};
///
/// let builder = reqwest_middleware::ClientBuilder::new(reqwest::Client::new());
/// let client = Guard::new()
///     .with_retry(Retry::openai_sdk())
///     .with_inspect(Inspect::new().with_mode(Mode::Strict))
///     .with_decision_policy(
///         DecisionTable::default().with_first(Rule::ApiErrorCode("context_length_exceeded"), FallbackDecision::Fallback),
///     )
///     .layer(builder)
///     .build();
/// ```
///
/// Build the guard after the OpenTelemetry pipeline is installed or before: the global
/// providers are read when the first call is made, not when the guard is built.
#[derive(Clone)]
#[must_use]
pub struct Guard {
    call: Telemetry,
    export: bool,
    policy: Option<Arc<dyn DecisionPolicy>>,
    failover: Option<Failover>,
    retry: Option<Arc<dyn Middleware>>,
    inspect: Inspect,
    /// The call settings: set here, else taken from a retry layer that set them.
    deadline: Option<Option<Duration>>,
    budget: Option<Option<Arc<RetryBudget>>>,
    /// Those the retry layer set.
    retry_deadline: Option<Option<Duration>>,
    retry_budget: Option<Option<Arc<RetryBudget>>>,
    /// The default budget, shared by every clone of this guard's clients.
    default_budget: Arc<RetryBudget>,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("call", &self.call)
            .field("telemetry", &self.export)
            .field("custom_policy", &self.policy.is_some())
            .field("failover", &self.failover)
            .field("retry", &self.retry.is_some())
            .field("inspect", &self.inspect)
            .field("call_bounds", &self.bounds())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Every layer with its defaults.
    pub fn new() -> Self {
        Self {
            call: Telemetry::new(),
            export: true,
            policy: None,
            failover: None,
            retry: Some(Arc::new(Retry::new())),
            inspect: Inspect::new(),
            deadline: None,
            budget: None,
            retry_deadline: None,
            retry_budget: None,
            default_budget: Arc::new(RetryBudget::default()),
        }
    }

    /// The call's deadline, from its start: no retry starts, no wait runs and no hop is made
    /// past it (default 60 s). The attempt in flight is never cut short.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(Some(deadline));
        self
    }

    /// No deadline: only the retry policy and the hops allowed bound a call.
    pub fn without_deadline(mut self) -> Self {
        self.deadline = Some(None);
        self
    }

    /// The budget every retry and every hop is drawn from (default:
    /// [`RetryBudget::default`], one per guard, shared by every client it builds). Share one
    /// across guards to bound them together.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(Some(budget));
        self
    }

    /// No budget: retries and hops are not bounded by recent traffic.
    pub fn without_budget(mut self) -> Self {
        self.budget = Some(None);
        self
    }

    /// The call settings: the guard's own, else those set on its retry layer, else the
    /// defaults.
    fn bounds(&self) -> CallBounds {
        CallBounds {
            deadline: self
                .deadline
                .or(self.retry_deadline)
                .unwrap_or(Some(DEFAULT_DEADLINE)),
            budget: self
                .budget
                .clone()
                .or_else(|| self.retry_budget.clone())
                .unwrap_or_else(|| Some(self.default_budget.clone())),
        }
    }

    /// This telemetry layer (the attempt spans come with it).
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.call = telemetry;
        self.export = true;
        self
    }

    /// No spans, no metrics. Calls are still decided and leave their [`Evidence`](crate::Evidence).
    pub fn without_telemetry(mut self) -> Self {
        self.export = false;
        self
    }

    /// The policy that decides `fallback_decision` for every call (default:
    /// [`DecisionTable::default`](crate::evidence::DecisionTable)): JSON answers, streams at
    /// their end, transport errors and cancelled calls alike. The span, the metrics and
    /// [`Evidence`](crate::Evidence) all carry its decision.
    pub fn with_decision_policy(mut self, policy: impl DecisionPolicy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// This retry layer: a configured [`Retry`] (any `RetryPolicy` and `RetryableStrategy`
    /// of reqwest-retry plug into it). Walls and 403s are never retried, whatever the strategy.
    pub fn with_retry<P, S>(mut self, retry: Retry<P, S>) -> Self
    where
        P: RetryPolicy + Send + Sync + 'static,
        S: RetryableStrategy + Send + Sync + 'static,
    {
        (self.retry_deadline, self.retry_budget) = retry.explicit_bounds();
        self.retry = Some(Arc::new(retry));
        self
    }

    /// One attempt per call (for a client whose own retry layer sits outside the guard: see
    /// the crate docs, "Already using reqwest-retry or reqwest-tracing?").
    pub fn without_retry(mut self) -> Self {
        self.retry = None;
        self
    }

    /// Fails over between these upstreams (see [`Failover`]): between the call layer and the
    /// retry layer, so one call span, one decision policy, one retry budget and one deadline
    /// cover every hop, and each upstream's attempts are retried within those bounds.
    pub fn with_failover(mut self, failover: Failover) -> Self {
        self.failover = Some(failover);
        self
    }

    /// This inspect layer.
    pub fn with_inspect(mut self, inspect: Inspect) -> Self {
        self.inspect = inspect;
        self
    }

    /// Adds the layers to `builder`, after (inside) any it already has.
    pub fn layer(self, builder: ClientBuilder) -> ClientBuilder {
        let mut call = self.call.clone().with_bounds(self.bounds());
        if self.failover.is_some() {
            call = call.retargeting();
        }
        if let Some(policy) = self.policy {
            call = call.with_decision_policy_arc(policy);
        }
        if !self.export {
            call = call.without_export();
        }
        let attempts = call.attempt_layer();
        let mut builder = builder.with(call);
        if let Some(f) = self.failover {
            builder = builder.with(f);
        }
        if let Some(r) = self.retry {
            builder = builder.with_arc(r);
        }
        if self.export {
            builder = builder.with(attempts);
        }
        builder.with(self.inspect)
    }

    /// A client with the layers around `client`.
    pub fn client(self, client: reqwest::Client) -> ClientWithMiddleware {
        self.layer(ClientBuilder::new(client)).build()
    }
}
