//! What a call left behind, in one value, and the handle through which it arrives.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::records::{CallLog, FailoverRecord, FailoverStop, RetryRecord, StopReason};
use super::verdict::{ApiError, ContractVerdict, VerdictHandle};
use super::{
    ApiSurface, DecisionPolicy, DecisionTable, FallbackDecision, Outcome, ParseCheck, SkipReason,
    StatusClass, TransportErrorKind, Violation, WafVerdict,
};

/// What one call left behind: its evidence in one value, for code that acts on it (a failover
/// loop, a log line). The span and the metrics of the call say the same.
///
/// Read it with [`Evidence::of`] from a response, or, for a stream, await the
/// [`EvidenceHandle`] of [`Evidence::handle`] after reading the body:
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// use reqwest_llm_guard::Evidence;
/// use reqwest_llm_guard::evidence::FallbackDecision;
///
/// let response = client.post("http://127.0.0.1:8080/v1/chat/completions").body("{}").send().await?;
/// let evidence = Evidence::of(&response);
/// match evidence.fallback_decision {
///     FallbackDecision::None => { /* use the answer */ }
///     FallbackDecision::Fallback => { /* try the next endpoint */ }
///     FallbackDecision::Hold | _ => { /* stop: a human must look (evidence.waf has the reference) */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Evidence {
    /// The request's API surface.
    pub api_surface: ApiSurface,
    /// The HTTP status, or `None` when no response arrived.
    pub status: Option<http::StatusCode>,
    /// The status class.
    pub status_class: StatusClass,
    /// Why no response arrived, when none did.
    pub transport_error: Option<TransportErrorKind>,
    /// The contract check; `None` while a streaming body is still being read.
    pub parse_check: Option<ParseCheck>,
    /// The first hard violation.
    pub violation: Option<Violation>,
    /// Why the body was not checked (`cancelled` when the caller cancelled the call).
    pub skip_reason: Option<SkipReason>,
    /// The API's error, normalised, when the body carried one. Its `message` is the provider's
    /// text: for the caller, never for telemetry.
    pub api_error: Option<ApiError>,
    /// The wall that answered, if one did.
    pub waf: Option<WafVerdict>,
    /// Retries made in the whole call: on every upstream it went to, those before a hop
    /// included. (Read with [`Evidence::of`] from a response of a stack with no call layer,
    /// it is the last upstream's alone: only the call layer keeps the call's log.)
    pub retry_count: u32,
    /// Retries made on the upstream that answered (or failed last): `retry_count` less those
    /// made on upstreams the call left.
    pub upstream_retry_count: u32,
    /// Why the retry layer stopped retrying on the upstream that answered, when it ran.
    pub retry_stop_reason: Option<StopReason>,
    /// The upstream that answered (or failed last), when the failover layer ran.
    pub upstream: Option<Arc<str>>,
    /// Moves from one upstream to the next (0 when the first stood).
    pub hops: u32,
    /// Why the failover layer stopped where it did, when it ran.
    pub failover_stop: Option<FailoverStop>,
    /// What to do next, decided by the policy set on [`Guard`](crate::Guard) (or on the
    /// [`Telemetry`](crate::telemetry::Telemetry) layer): the same value as the call span's
    /// `fallback_decision` and the metrics' label.
    pub fallback_decision: FallbackDecision,
}

/// Everything a decision is made from; one constructor for every kind of call.
pub(crate) struct CallFacts<'a> {
    pub(crate) surface: ApiSurface,
    pub(crate) status: Option<http::StatusCode>,
    pub(crate) transport_error: Option<TransportErrorKind>,
    pub(crate) verdict: Option<&'a ContractVerdict>,
    pub(crate) waf: Option<&'a WafVerdict>,
    /// What the layers below the call recorded (`None` when only the decision is wanted).
    pub(crate) log: Option<&'a CallLog>,
    pub(crate) cancelled: bool,
}

impl CallFacts<'_> {
    /// The outcome the policy sees.
    pub(crate) fn outcome(&self) -> Outcome<'_> {
        let mut outcome = match (self.cancelled, self.status, self.verdict) {
            (true, status, _) => Outcome::cancelled(status),
            (false, Some(status), Some(v)) => Outcome::checked(status, v),
            (false, Some(status), None) => Outcome::response(status, ParseCheck::Skipped, None),
            (false, None, _) => {
                Outcome::transport_error(self.transport_error.unwrap_or(TransportErrorKind::Other))
            }
        };
        if let Some(waf) = self.waf {
            outcome = outcome.with_waf(waf);
        }
        outcome
    }

    /// The decision alone, as [`decide`](Self::decide) takes it (for the failover layer,
    /// which needs nothing else of the evidence).
    pub(crate) fn decision(&self, policy: &dyn DecisionPolicy) -> FallbackDecision {
        super::decide(policy, &self.outcome())
    }

    /// The evidence, decided by `policy`: the one step every call's decision goes through.
    pub(crate) fn decide(&self, policy: &dyn DecisionPolicy) -> Evidence {
        let outcome = self.outcome();
        let fallback_decision = super::decide(policy, &outcome);
        let skip_reason = if self.cancelled {
            Some(SkipReason::Cancelled)
        } else {
            self.verdict.and_then(|v| v.skip_reason)
        };
        let retry = self
            .log
            .and_then(CallLog::last)
            .and_then(|l| l.retry.as_ref());
        let failover = self.log.and_then(|l| l.failover.as_ref());
        Evidence {
            api_surface: self.surface,
            status: self.status,
            status_class: outcome.status_class(),
            transport_error: (self.status.is_none() && !self.cancelled)
                .then(|| self.transport_error.unwrap_or(TransportErrorKind::Other)),
            parse_check: Some(outcome.parse_check),
            violation: outcome.violation,
            skip_reason,
            api_error: outcome.api_error.cloned(),
            waf: self.waf.cloned(),
            retry_count: self.log.map_or(0, CallLog::retries),
            upstream_retry_count: retry.map_or(0, RetryRecord::retries),
            retry_stop_reason: retry.and_then(RetryRecord::stop_reason),
            upstream: failover.and_then(|f| f.served_by().map(Arc::from)),
            hops: failover.map_or(0, |f| {
                u32::try_from(f.hops.len() + usize::from(f.continued_on().is_some()))
                    .unwrap_or(u32::MAX)
            }),
            failover_stop: failover.and_then(|f| f.stop),
            fallback_decision,
        }
    }
}

impl Evidence {
    /// The evidence of one attempt that ended in `outcome` on `surface`, decided by `policy`,
    /// with no retry and no failover: what the call layer would leave for it. For testing code
    /// that acts on evidence (a policy, a failover loop of your own).
    ///
    /// ```
    /// use http::StatusCode;
    /// use reqwest_llm_guard::Evidence;
    /// use reqwest_llm_guard::evidence::{ApiSurface, DecisionTable, FallbackDecision, Outcome, ParseCheck};
    ///
    /// let outcome = Outcome::response(StatusCode::SERVICE_UNAVAILABLE, ParseCheck::Skipped, None);
    /// let e = Evidence::of_outcome(ApiSurface::ChatCompletions, &outcome, &DecisionTable::default());
    /// assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    /// ```
    pub fn of_outcome(
        surface: ApiSurface,
        outcome: &Outcome<'_>,
        policy: &dyn DecisionPolicy,
    ) -> Self {
        let fallback_decision = super::decide(policy, outcome);
        Self {
            api_surface: surface,
            status: outcome.status,
            status_class: outcome.status_class(),
            transport_error: outcome.transport_error,
            parse_check: Some(outcome.parse_check),
            violation: outcome.violation,
            skip_reason: outcome.cancelled.then_some(SkipReason::Cancelled),
            api_error: outcome.api_error.cloned(),
            waf: outcome.waf.cloned(),
            retry_count: 0,
            upstream_retry_count: 0,
            retry_stop_reason: None,
            upstream: None,
            hops: 0,
            failover_stop: None,
            fallback_decision,
        }
    }

    /// The evidence of a response that went through the layers, as it stands now.
    ///
    /// For a non-streaming response it is final. For a stream it is final once the body has
    /// been read to its end (or dropped); before that `parse_check` is `None` and the decision
    /// is made as if the stream will keep its contract: await [`Evidence::handle`] for the
    /// final word.
    ///
    /// Without the call layer ([`Telemetry`](crate::telemetry::Telemetry), part of every
    /// [`Guard`](crate::Guard)), the decision is the default [`DecisionTable`]'s and
    /// `retry_count` the retry layer's record.
    pub fn of(response: &reqwest::Response) -> Self {
        let ext = response.extensions();
        if let Some(handle) = ext.get::<EvidenceHandle>() {
            if let Some(evidence) = handle.get() {
                return evidence;
            }
            let policy = handle.policy();
            return Self::from_extensions(response, policy.as_deref());
        }
        Self::from_extensions(response, None)
    }

    /// The evidence as the extensions say now, with `policy` (else the default table).
    fn from_extensions(response: &reqwest::Response, policy: Option<&dyn DecisionPolicy>) -> Self {
        let ext = response.extensions();
        let verdict = super::verdict::of_response(response);
        let pending = verdict.is_none() && ext.get::<VerdictHandle>().is_some();
        let log = CallLog::of_records(ext.get::<RetryRecord>(), ext.get::<FailoverRecord>());
        let facts = CallFacts {
            surface: ext
                .get::<ApiSurface>()
                .copied()
                .unwrap_or(ApiSurface::Other),
            status: Some(response.status()),
            transport_error: None,
            verdict: verdict.as_ref(),
            waf: ext.get::<WafVerdict>(),
            log: Some(&log),
            cancelled: false,
        };
        let default = DecisionTable::default();
        let policy = policy.unwrap_or(&default);
        let mut evidence = if pending {
            // Decided as if the stream will keep its contract.
            let pass = ContractVerdict::passed();
            CallFacts {
                verdict: Some(&pass),
                ..facts
            }
            .decide(policy)
        } else {
            facts.decide(policy)
        };
        if pending {
            evidence.parse_check = None;
        }
        evidence
    }

    /// The handle through which this response's final evidence arrives: at once for a
    /// non-streaming response, when the body ends, fails or is dropped for a stream.
    ///
    /// ```no_run
    /// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use reqwest_llm_guard::Evidence;
    ///
    /// let response = client.post("http://127.0.0.1:8080/v1/chat/completions")
    ///     .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
    ///     .send()
    ///     .await?;
    /// let evidence = Evidence::handle(&response);
    /// let mut chunks = response.bytes_stream();
    /// while let Some(chunk) = chunks.next().await {
    ///     let _bytes = chunk?; // exactly the bytes the server sent
    /// }
    /// let evidence = evidence.settled().await;
    /// println!("parse_check={:?} decision={}", evidence.parse_check, evidence.fallback_decision);
    /// # Ok(()) }
    /// ```
    pub fn handle(response: &reqwest::Response) -> EvidenceHandle {
        let ext = response.extensions();
        if let Some(handle) = ext.get::<EvidenceHandle>() {
            return handle.clone();
        }
        // No call layer: settle it here, with the default table.
        let handle = EvidenceHandle::new();
        let now = Self::of(response);
        match ext.get::<VerdictHandle>() {
            Some(stream) if now.parse_check.is_none() => {
                let done = handle.clone();
                let status = response.status();
                let waf = ext.get::<WafVerdict>().cloned();
                let log =
                    CallLog::of_records(ext.get::<RetryRecord>(), ext.get::<FailoverRecord>());
                stream.on_verdict(move |v| {
                    let facts = CallFacts {
                        surface: now.api_surface,
                        status: Some(status),
                        transport_error: None,
                        verdict: Some(v),
                        waf: waf.as_ref(),
                        log: Some(&log),
                        cancelled: v.skip_reason == Some(SkipReason::Cancelled),
                    };
                    done.complete(facts.decide(&DecisionTable::default()));
                });
            }
            _ => handle.complete(now),
        }
        handle
    }
}

/// The final [`Evidence`] of one call, delivered when the call ends: at once for a
/// non-streaming answer or a transport error, when the body ends, fails or is dropped for a
/// stream, and when the caller cancels the call.
///
/// The call layer leaves one in every response's extensions ([`Evidence::handle`] reads it).
/// To get the evidence of a call that returns an error (no response to read it from), attach
/// a handle to the request first:
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) {
/// use reqwest_llm_guard::EvidenceHandle;
///
/// let evidence = EvidenceHandle::new();
/// let result = client
///     .post("http://127.0.0.1:1/v1/chat/completions")
///     .with_extension(evidence.clone())
///     .body("{}")
///     .send()
///     .await;
/// if result.is_err() {
///     let e = evidence.get().expect("the call layer settles it before returning");
///     println!("{} {:?} retries={} decision={}", e.status_class, e.transport_error, e.retry_count, e.fallback_decision);
/// }
/// # }
/// ```
///
/// Clones share the evidence. A handle attached to one request serves that request only.
#[derive(Clone)]
pub struct EvidenceHandle {
    slot: Arc<Slot>,
}

struct Slot {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    evidence: Option<Evidence>,
    policy: Option<Arc<dyn DecisionPolicy>>,
}

impl Default for EvidenceHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl EvidenceHandle {
    /// An empty handle, to attach to a request with
    /// `RequestBuilder::with_extension(handle.clone())`.
    pub fn new() -> Self {
        Self {
            slot: Arc::new(Slot {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The evidence, once the call has ended.
    pub fn get(&self) -> Option<Evidence> {
        self.state().evidence.clone()
    }

    /// Whether the call has ended.
    pub fn is_settled(&self) -> bool {
        self.state().evidence.is_some()
    }

    /// Waits for the call to end. A stream's call ends when its body is read to the end,
    /// fails or is dropped: awaiting this while holding the body unread waits forever.
    pub async fn settled(&self) -> Evidence {
        loop {
            // Created before the check, so evidence stored in between still wakes it.
            let notified = self.slot.ready.notified();
            if let Some(e) = self.get() {
                return e;
            }
            notified.await;
        }
    }

    pub(crate) fn set_policy(&self, policy: Arc<dyn DecisionPolicy>) {
        self.state().policy = Some(policy);
    }

    pub(crate) fn policy(&self) -> Option<Arc<dyn DecisionPolicy>> {
        self.state().policy.clone()
    }

    /// Stores the evidence (the first one wins) and wakes the waiters.
    pub(crate) fn complete(&self, evidence: Evidence) {
        {
            let mut state = self.state();
            if state.evidence.is_some() {
                return;
            }
            state.evidence = Some(evidence);
        }
        self.slot.ready.notify_waiters();
    }
}

impl fmt::Debug for EvidenceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvidenceHandle")
            .field("evidence", &self.state().evidence)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn facts(status: Option<u16>, verdict: Option<&ContractVerdict>) -> CallFacts<'_> {
        CallFacts {
            surface: ApiSurface::ChatCompletions,
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            transport_error: status.is_none().then_some(TransportErrorKind::Timeout),
            verdict,
            waf: None,
            log: None,
            cancelled: false,
        }
    }

    #[test]
    fn one_step_decides_every_kind_of_call_with_the_given_policy() {
        let always_hold = |_: &Outcome<'_>| FallbackDecision::Hold;
        let pass = ContractVerdict::passed();
        for f in [
            facts(Some(200), Some(&pass)),
            facts(None, None),
            CallFacts {
                cancelled: true,
                ..facts(Some(200), None)
            },
        ] {
            assert_eq!(
                f.decide(&always_hold).fallback_decision,
                FallbackDecision::Hold
            );
        }
        let default = DecisionTable::default();
        let timeout = facts(None, None).decide(&default);
        assert_eq!(timeout.status_class, StatusClass::TransportError);
        assert_eq!(timeout.transport_error, Some(TransportErrorKind::Timeout));
        assert_eq!(timeout.fallback_decision, FallbackDecision::Fallback);
        let cancelled = CallFacts {
            cancelled: true,
            ..facts(None, None)
        }
        .decide(&default);
        assert_eq!(cancelled.skip_reason, Some(SkipReason::Cancelled));
        assert_eq!(cancelled.parse_check, Some(ParseCheck::Skipped));
        assert_eq!(cancelled.transport_error, None);
        assert_eq!(cancelled.fallback_decision, FallbackDecision::None);
    }

    #[test]
    fn the_policy_sees_the_api_error() {
        let body = br#"{"error":{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        let verdict = crate::contract::check_body(
            ApiSurface::ChatCompletions,
            StatusCode::BAD_REQUEST,
            Some("application/json"),
            body,
            crate::contract::Mode::Compat,
        );
        let seen = |o: &Outcome<'_>| {
            if o.error_code().as_deref() == Some("context_length_exceeded") {
                FallbackDecision::Fallback
            } else {
                FallbackDecision::Hold
            }
        };
        let e = facts(Some(400), Some(&verdict)).decide(&seen);
        assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
        assert_eq!(
            e.api_error.and_then(|a| a.error_type).as_deref(),
            Some("invalid_request_error")
        );
    }

    #[tokio::test]
    async fn a_handle_settles_once_and_wakes_its_waiters() {
        let handle = EvidenceHandle::new();
        assert!(!handle.is_settled());
        let waiter = tokio::spawn({
            let h = handle.clone();
            async move { h.settled().await }
        });
        tokio::task::yield_now().await;
        let first = facts(None, None).decide(&DecisionTable::default());
        handle.complete(first.clone());
        let mut second = first.clone();
        second.fallback_decision = FallbackDecision::Hold;
        handle.complete(second);
        assert_eq!(waiter.await.unwrap(), first);
        assert_eq!(handle.get(), Some(first));
    }
}
