//! One call through the failover layer: which upstreams it may go to, one hop to one of them,
//! and what that hop's answer means (hand it back, or move on). The loop that strings them
//! together is [`Failover`](super::Failover)'s, in `layer.rs`, on one screen.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::Next;
use tokio::time::Instant;

use super::breaker::{CallOutcome, Permit};
use super::state::Shared;
use super::stream::{Committed, PreCommit, read_to_commit};
use super::upstream::Upstream;
use crate::error::{Error, ErrorKind};
use crate::evidence::{
    ApiSurface, CallFacts, ContractVerdict, DecisionPolicy, FailoverRecord, FailoverStop,
    FallbackDecision, Hop, HopReason, PassReason, PassedOver, StatusClass, TransportErrorKind,
    VerdictHandle, Violation, WafKind, WafVerdict,
};
use crate::extensions::CallScope;

type Answer = reqwest_middleware::Result<Response>;

/// An upstream picked, with its breaker's permit.
pub(super) struct Pick {
    pub(super) index: usize,
    pub(super) permit: Permit,
}

/// What a hop's answer means for the call.
pub(super) enum Step {
    /// Hand this back: decided, or no hop is left (the record says why).
    Stop(Answer),
    /// Move on to this upstream, leaving this answer for the reason given.
    MoveOn(Answer, HopReason, Pick),
}

/// One call's way through the upstreams.
pub(super) struct Route<'a> {
    shared: &'a Arc<Shared>,
    scope: &'a CallScope,
    policy: Arc<dyn DecisionPolicy>,
    surface: ApiSurface,
    /// A stream whose first token is bounded.
    wants_stream: bool,
    /// Server-side state pins the call to one upstream: never a hop.
    pinned: bool,
    /// The upstreams that serve the surface and are promoted (only the owner, when pinned).
    eligible: Vec<usize>,
    /// Tried or passed over: never picked again.
    tried: Vec<usize>,
    /// Hosts a wall answered from: never gone to again in this call.
    walled_hosts: Vec<String>,
    /// For a context-length hop: a window larger than this first.
    larger_than: Option<u64>,
    /// The answer being left and why, held until the next upstream is really sent the call
    /// (handed back if none is).
    left: Option<(Answer, Arc<str>, HopReason)>,
    pub(super) record: FailoverRecord,
}

impl<'a> Route<'a> {
    /// The upstreams a request may go to; an error when there is none.
    pub(super) fn new(
        shared: &'a Arc<Shared>,
        req: &Request,
        surface: ApiSurface,
        scope: &'a CallScope,
    ) -> Result<Self, Error> {
        let peek = Peek::of(req, surface);
        let mut eligible: Vec<usize> = (0..shared.entries.len())
            .filter(|&i| shared.entries[i].upstream.serves(surface))
            .filter(|&i| shared.entries[i].promoted())
            .collect();
        let pinned = peek.state_id.is_some() || peek.conversation;
        if pinned {
            // State lives on one upstream: the one that minted it, else (not seen here) the
            // first that serves the surface. Never a hop.
            let owner = peek.state_id.as_deref().and_then(|id| {
                shared
                    .affinity
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .owner(id)
            });
            let only = owner
                .filter(|o| eligible.contains(o))
                .or_else(|| eligible.first().copied());
            eligible = only.into_iter().collect();
        }
        if eligible.is_empty() {
            return Err(Error::new(ErrorKind::NoUpstream));
        }
        Ok(Self {
            shared,
            scope,
            policy: scope.policy.clone(),
            surface,
            wants_stream: peek.stream && shared.settings.first_token.is_some(),
            pinned,
            eligible,
            tried: Vec::new(),
            walled_hosts: Vec::new(),
            larger_than: None,
            left: None,
            record: FailoverRecord::default(),
        })
    }

    /// The one eligibility filter, for picks, probes and continuations: serving the surface
    /// and promoted (`eligible`), not tried or passed over, not behind a host a wall answered
    /// from. The breaker is each caller's own question.
    fn candidates(&self) -> impl Iterator<Item = usize> + '_ {
        self.eligible.iter().copied().filter(|i| {
            !self.tried.contains(i)
                && self.shared.entries[*i]
                    .upstream
                    .host()
                    .is_none_or(|h| !self.walled_hosts.iter().any(|w| w == h))
        })
    }

    /// The next upstream: in order, its breaker willing; for a context-length hop, one with a
    /// larger window first. When every breaker refuses and nothing was tried yet, the one that
    /// failed least recently is probed anyway (never every upstream closed off).
    pub(super) fn pick(&self) -> Option<Pick> {
        let entries = &self.shared.entries;
        let larger = |i: &usize| {
            self.larger_than
                .is_some_and(|w| entries[*i].upstream.context_window.is_some_and(|c| c > w))
        };
        let preferred = self.candidates().filter(larger);
        let rest = self.candidates().filter(|i| !larger(i));
        for index in preferred.chain(rest) {
            if let Some(permit) = entries[index].breaker.try_acquire() {
                return Some(Pick { index, permit });
            }
        }
        if !self.record.tried.is_empty() {
            return None;
        }
        let index = self
            .candidates()
            .min_by_key(|&i| entries[i].breaker.last_failure())?;
        Some(Pick {
            index,
            permit: entries[index].breaker.force_probe(),
        })
    }

    /// Where a cut Chat stream would be continued: a candidate whose breaker is not open and
    /// that declares prefill support.
    fn continuation_target(&self) -> Option<usize> {
        self.candidates().find(|&i| {
            let e = &self.shared.entries[i];
            e.upstream.prefill && e.breaker.state() != super::BreakerState::Open
        })
    }

    /// The request for the picked upstream, a new leg begun for it; `None` when it is passed
    /// over (its own key cannot be had: it never gets the caller's instead, and its breaker
    /// gets its permit back, no request having been made).
    pub(super) fn request_for(
        &mut self,
        req: &Request,
        pick: &Pick,
    ) -> Result<Option<Request>, Error> {
        let entry = &self.shared.entries[pick.index];
        let Some(mut attempt) = req.try_clone() else {
            self.record.stop = Some(FailoverStop::NotCloneable);
            self.scope.record_failover(self.record.clone());
            return Err(Error::new(ErrorKind::RequestNotCloneable));
        };
        self.tried.push(pick.index);
        let moved = match prepare(&mut attempt, &entry.upstream, self.surface, req.url()) {
            Ok(moved) => moved,
            Err(reason) => {
                self.record.passed_over.push(PassedOver {
                    upstream: entry.upstream.name.clone(),
                    reason,
                });
                return Ok(None);
            }
        };
        if let Some((previous, from, reason)) = self.left.take() {
            // Free the connection before the next hop.
            drop(previous);
            self.record.hops.push(Hop {
                from,
                to: entry.upstream.name.clone(),
                reason,
            });
        }
        self.record.tried.push(entry.upstream.name.clone());
        // A new leg of the call: the layers below send, retry and record on it.
        self.scope.begin_leg(
            entry.upstream.name.clone(),
            moved.then(|| attempt.url().clone()),
        );
        Ok(Some(attempt))
    }

    /// One hop: sends `attempt` to the picked upstream, decides its answer, reads a stream to
    /// its commit point, and says whether the call stops here or moves on.
    pub(super) async fn hop(
        &mut self,
        req: &Request,
        attempt: Request,
        pick: Pick,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Step {
        let Pick { index, permit } = pick;
        let settings = &self.shared.settings;
        // A stream's first token is due by the first-token limit from the hop's start: a
        // silent upstream that never sends its headers is left too.
        let first_token = settings
            .first_token
            .filter(|_| self.wants_stream)
            .map(|limit| Instant::now() + limit);
        let answer = match first_token {
            Some(by) => tokio::time::timeout_at(by, next.run(attempt, extensions))
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::TimeToHeaders).into())),
            None => next.run(attempt, extensions).await,
        };
        let heard = Heard::of(&answer, self.scope);
        let (decision, reason) = self.decide(&answer, &heard, index);
        let stream = match (&heard.stream, decision, answer) {
            (Some(stream), FallbackDecision::None, Ok(response)) => (stream.clone(), response),
            (_, decision, answer) => {
                permit.record(breaker_outcome(
                    decision,
                    heard.status,
                    heard.waf.as_ref(),
                    heard.server_wait,
                ));
                self.shared.demote_if_open(index);
                return self.move_on(answer, decision, reason, &heard, index);
            }
        };
        // A stream decided `none` so far: hand it on at its commit point, or fail over if it
        // fails before.
        let (stream, response) = stream;
        let (parts, body, url) = crate::redact::split(response);
        let read = read_to_commit(body, settings.commit, first_token, settings.idle, &stream).await;
        let Ok(read) = read else {
            // Failed before the caller saw a byte of it: fail over (its verdict is set, by
            // the checker or by the limit that cut it off).
            permit.record(CallOutcome::Failure { retry_after: None });
            self.shared.demote_if_open(index);
            // What the caller gets if no hop is left: the headers, then an error, never a
            // clean end.
            if stream.get().is_none() {
                stream.complete(ContractVerdict::failed(Violation::StreamTruncated));
            }
            let body = Committed::new(
                PreCommit {
                    prefix: Vec::new(),
                    rest: None,
                },
                stream,
                None,
            );
            let answer = Ok(crate::redact::join(parts, reqwest::Body::wrap(body), url));
            return self.move_on(
                answer,
                FallbackDecision::Fallback,
                Some(HopReason::StreamFailed),
                &heard,
                index,
            );
        };
        watch_stream(
            (self.shared, index),
            &stream,
            permit,
            self.surface,
            heard.status,
            &self.policy,
            heard.waf.as_ref(),
            heard.server_wait,
        );
        let mut body = Committed::new(read, stream, settings.idle);
        let mut caller = None;
        if self.surface == ApiSurface::ChatCompletions
            && let Some(client) = &settings.continuation
            && let Some(target) = self.continuation_target()
        {
            let handle = VerdictHandle::new();
            body = body.with_continuation(
                super::continuation::Plan {
                    client: client.clone(),
                    target: self.shared.entries[target].upstream.clone(),
                    url: req.url().clone(),
                    headers: req.headers().clone(),
                    body: req
                        .body()
                        .and_then(reqwest::Body::as_bytes)
                        .map(bytes::Bytes::copy_from_slice)
                        .unwrap_or_default(),
                    continued_on: self.record.continued_on.clone(),
                },
                handle.clone(),
            );
            caller = Some(handle);
        }
        let mut response = crate::redact::join(parts, reqwest::Body::wrap(body), url);
        if let Some(caller) = caller {
            // The call is judged by the whole answer, continued or not.
            crate::extensions::put(response.extensions_mut(), caller);
        }
        self.record.stop = Some(FailoverStop::Decided);
        Step::Stop(Ok(response))
    }

    /// The decision on an answer and, on `fallback`, why; a Responses id it minted is
    /// remembered for the requests that continue it.
    fn decide(
        &self,
        answer: &Answer,
        heard: &Heard,
        index: usize,
    ) -> (FallbackDecision, Option<HopReason>) {
        let verdict = answer
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<ContractVerdict>());
        // A stream is judged at its end; until then, as if it will keep its contract.
        let provisional = heard.stream.as_ref().map(|_| ContractVerdict::passed());
        let facts = CallFacts {
            surface: self.surface,
            status: heard.status,
            transport_error: heard.transport,
            verdict: verdict.or(provisional.as_ref()),
            waf: heard.waf.as_ref(),
            log: None,
            cancelled: false,
        };
        let decision = facts.decision(&*self.policy);
        // Only Responses ids are state a later request can continue.
        if self.surface == ApiSurface::Responses
            && let Some(v) = verdict
            && heard.status.is_some_and(|s| s.is_success())
            && let Some(id) = &v.facts.response_id
        {
            self.shared
                .affinity
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remember(id, index);
        }
        let reason = (decision == FallbackDecision::Fallback).then(|| hop_reason(&facts));
        (decision, reason)
    }

    /// After a decided answer: stop with it, or, on `fallback`, move on if the call may.
    fn move_on(
        &mut self,
        answer: Answer,
        decision: FallbackDecision,
        reason: Option<HopReason>,
        heard: &Heard,
        index: usize,
    ) -> Step {
        if decision != FallbackDecision::Fallback {
            self.record.stop = Some(FailoverStop::Decided);
            return Step::Stop(answer);
        }
        let reason = reason.unwrap_or(HopReason::Policy);
        let stop = if self.pinned {
            Some(FailoverStop::StateAffinity)
        } else if self.record.tried.len() > self.shared.settings.max_hops {
            Some(FailoverStop::HopsExhausted)
        } else if self.scope.deadline_passed() {
            Some(FailoverStop::Deadline)
        } else {
            None
        };
        if let Some(stop) = stop {
            self.record.stop = Some(stop);
            return Step::Stop(answer);
        }
        let entry = &self.shared.entries[index];
        if heard.waf.is_some()
            && let Some(host) = entry.upstream.host()
        {
            // A wall the policy chose to fail over from: never to the same edge again.
            self.walled_hosts.push(host.to_owned());
        }
        self.larger_than = (reason == HopReason::ContextLength)
            .then(|| entry.upstream.context_window.unwrap_or(0));
        let Some(next) = self.pick() else {
            self.record.stop = Some(FailoverStop::NoEligibleUpstream);
            return Step::Stop(answer);
        };
        if let Some(budget) = &self.scope.bounds.budget
            && !budget.withdraw()
        {
            self.record.stop = Some(FailoverStop::BudgetExhausted);
            return Step::Stop(answer);
        }
        Step::MoveOn(answer, reason, next)
    }

    /// Leaves `answer` for the next upstream, holding it until that one is really sent the
    /// call.
    pub(super) fn leave(&mut self, answer: Answer, index: usize, reason: HopReason) {
        self.left = Some((
            answer,
            self.shared.entries[index].upstream.name.clone(),
            reason,
        ));
    }

    /// The answer handed back, with the record in the call's log and on the response.
    pub(super) fn finish(self, answer: Answer) -> Answer {
        self.scope.record_failover(self.record.clone());
        answer.map(|mut r| {
            crate::extensions::put(r.extensions_mut(), self.record);
            r
        })
    }

    /// No upstream left to send the call to: the answer left for one that was then passed
    /// over, else an error.
    pub(super) fn nothing_left(mut self) -> Answer {
        self.record.stop = Some(FailoverStop::NoEligibleUpstream);
        if let Some((answer, _, _)) = self.left.take() {
            return self.finish(answer);
        }
        self.scope.record_failover(self.record);
        Err(Error::new(ErrorKind::NoUpstream).into())
    }
}

/// What a hop heard back, read off the answer once.
struct Heard {
    status: Option<http::StatusCode>,
    transport: Option<TransportErrorKind>,
    waf: Option<WafVerdict>,
    /// The answer is a stream, judged when it ends.
    stream: Option<VerdictHandle>,
    /// What the server asked to wait, for the breaker.
    server_wait: Option<std::time::Duration>,
}

impl Heard {
    fn of(answer: &Answer, scope: &CallScope) -> Self {
        let server_wait = scope.leg_server_wait();
        match answer {
            Ok(r) => Self {
                status: Some(r.status()),
                transport: None,
                waf: r.extensions().get::<WafVerdict>().cloned(),
                stream: r.extensions().get::<VerdictHandle>().cloned(),
                server_wait,
            },
            Err(e) => Self {
                status: None,
                transport: Some(TransportErrorKind::of(e)),
                waf: None,
                stream: None,
                server_wait,
            },
        }
    }
}

/// What the layer needs of a request, read in one pass over its body: whether it asks for a
/// stream, and the state it continues (`previous_response_id`, a `conversation`, or the
/// response named in a `GET`/`POST …/responses/{id}` path).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Peek {
    pub(super) stream: bool,
    pub(super) state_id: Option<String>,
    pub(super) conversation: bool,
}

impl Peek {
    pub(super) fn of(req: &Request, surface: ApiSurface) -> Self {
        #[derive(serde::Deserialize)]
        struct Fields<'a> {
            #[serde(default)]
            stream: bool,
            // `Cow`: an id with an escape in it cannot be borrowed.
            #[serde(borrow, default)]
            previous_response_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            conversation: Option<serde::de::IgnoredAny>,
        }
        let body = req.body().and_then(reqwest::Body::as_bytes);
        // Most requests name none of the fields read here: a byte search (SIMD, ~0.1 k
        // instructions on a 2 KB body) spares them the parse (~1.9 k). A key written with an
        // escape could hide from it, so a body with one is parsed all the same.
        let keys: &[&[u8]] = match surface {
            ApiSurface::Responses => &[
                b"\"stream\"",
                b"\"previous_response_id\"",
                b"\"conversation\"",
            ],
            _ => &[b"\"stream\""],
        };
        let worth_parsing = body.is_some_and(|b| {
            memchr::memmem::find(b, b"\\u").is_some()
                || keys.iter().any(|k| memchr::memmem::find(b, k).is_some())
        });
        let fields = body
            .filter(|_| worth_parsing)
            .and_then(|b| serde_json::from_slice::<Fields<'_>>(b).ok());
        let mut peek = Self {
            stream: fields.as_ref().is_some_and(|f| f.stream),
            ..Self::default()
        };
        if surface != ApiSurface::Responses {
            return peek;
        }
        let path = req.url().path();
        if let Some(at) = path.rfind("/responses/") {
            let id = path[at + "/responses/".len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            if !id.is_empty() {
                peek.state_id = Some(id.to_owned());
                return peek;
            }
        }
        if let Some(f) = fields {
            peek.state_id = f.previous_response_id.map(std::borrow::Cow::into_owned);
            peek.conversation = f.conversation.is_some();
        }
        peek
    }
}

/// The request with `model` replaced; `None` when the body is not a JSON object.
fn with_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    value.insert("model".to_owned(), serde_json::Value::from(model));
    serde_json::to_vec(&value).ok()
}

/// What an upstream's answer means for its breaker.
pub(super) fn breaker_outcome(
    decision: FallbackDecision,
    status: Option<http::StatusCode>,
    waf: Option<&WafVerdict>,
    retry_after: Option<Duration>,
) -> CallOutcome {
    let rate_limited = status == Some(http::StatusCode::TOO_MANY_REQUESTS)
        || waf.is_some_and(|w| w.kind == WafKind::RateLimit);
    match decision {
        FallbackDecision::None => CallOutcome::Success,
        FallbackDecision::Fallback if rate_limited => CallOutcome::RateLimited { retry_after },
        FallbackDecision::Fallback => CallOutcome::Failure { retry_after },
        _ => CallOutcome::Ignored,
    }
}

pub(super) fn hop_reason(facts: &CallFacts<'_>) -> HopReason {
    let code = facts
        .verdict
        .and_then(|v| v.api_error.as_ref())
        .and_then(|e| {
            e.code
                .as_ref()
                .map(|c| c.as_text().into_owned())
                .or_else(|| e.error_type.clone())
        });
    match code.as_deref() {
        Some("context_length_exceeded") => return HopReason::ContextLength,
        Some("insufficient_quota") => return HopReason::QuotaExhausted,
        _ => {}
    }
    match facts.status.map(StatusClass::of) {
        None => HopReason::TransportError,
        Some(_) if facts.status == Some(http::StatusCode::TOO_MANY_REQUESTS) => {
            HopReason::RateLimited
        }
        Some(StatusClass::ServerError | StatusClass::Success) => HopReason::UpstreamFailed,
        Some(_) => HopReason::Policy,
    }
}

/// The breaker learns a committed stream's outcome at its end; a stream the caller drops
/// before it gives the permit back. (Everything the end's decision needs, passed as it is.)
#[allow(clippy::too_many_arguments)]
pub(super) fn watch_stream(
    (shared, index): (&Arc<Shared>, usize),
    stream: &VerdictHandle,
    permit: Permit,
    surface: ApiSurface,
    status: Option<http::StatusCode>,
    policy: &Arc<dyn DecisionPolicy>,
    waf: Option<&WafVerdict>,
    server_wait: Option<Duration>,
) {
    let policy = policy.clone();
    let waf = waf.cloned();
    let mut permit = Some(permit);
    let shared = shared.clone();
    stream.on_verdict(move |v| {
        let facts = CallFacts {
            surface,
            status,
            transport_error: None,
            verdict: Some(v),
            waf: waf.as_ref(),
            log: None,
            cancelled: v.skip_reason == Some(crate::evidence::SkipReason::Cancelled),
        };
        let decision = facts.decision(&*policy);
        if let Some(p) = permit.take() {
            // A stream the caller dropped says nothing of the upstream.
            p.record(if facts.cancelled {
                CallOutcome::Ignored
            } else {
                breaker_outcome(decision, status, waf.as_ref(), server_wait)
            });
            shared.demote_if_open(index);
        }
    });
}

/// Points the request at `upstream`: its URL, its key (the caller's only where the caller sent
/// it, `caller`, or where the upstream opts in), its model. `true` when the URL changed (a
/// request already addressed to the upstream keeps its own); an error when its own key cannot
/// be had: the request must not be sent.
pub(super) fn prepare(
    req: &mut Request,
    upstream: &Upstream,
    surface: ApiSurface,
    caller: &reqwest::Url,
) -> Result<bool, PassReason> {
    let moved = !upstream.addressed_by(req.url(), surface);
    // Its URL first: an upstream's key never goes to a URL that is not the upstream's.
    let url = if moved {
        let url = upstream.url_for(req.url(), surface);
        Some(url.ok_or(PassReason::Unaddressable)?)
    } else {
        None
    };
    upstream.authorize(req.headers_mut(), upstream.same_origin(caller))?;
    if let Some(url) = url {
        *req.url_mut() = url;
    }
    if let Some(model) = &upstream.model
        && let Some(body) = req.body().and_then(reqwest::Body::as_bytes)
        && let Some(rewritten) = with_model(body, model)
    {
        let len = rewritten.len();
        *req.body_mut() = Some(reqwest::Body::from(rewritten));
        if let Ok(v) = http::HeaderValue::from_str(&len.to_string()) {
            req.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    //! The hop loop stepped in process, tower-test style: a scripted stub stands where the
    //! network would be (below the inspect layer), answers each request from its script and
    //! records where each went. No socket, no clock but tokio's (paused where time matters).

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};

    use crate::Guard;
    use crate::evidence::{EvidenceHandle, FailoverStop, FallbackDecision};
    use crate::failover::{Credential, Failover, Upstream};

    const CHAT_OK: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    /// One scripted answer: a status and a JSON body, after a wait on tokio's clock.
    #[derive(Clone, Copy)]
    struct Say(u16, &'static str, Duration);

    /// Each host's answers, in order.
    type Script = Vec<(String, VecDeque<Say>)>;

    /// Answers each request with the next line of its host's script; records the hosts asked.
    #[derive(Clone, Default)]
    struct Stub {
        script: std::sync::Arc<Mutex<Script>>,
        asked: std::sync::Arc<Mutex<Vec<String>>>,
    }

    impl Stub {
        fn new(script: &[(&str, &[Say])]) -> Self {
            let stub = Self::default();
            *stub.script.lock().unwrap() = script
                .iter()
                .map(|(host, says)| ((*host).to_owned(), says.iter().copied().collect()))
                .collect();
            stub
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl Middleware for Stub {
        async fn handle(
            &self,
            req: reqwest::Request,
            _: &mut http::Extensions,
            _: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            let host = req.url().host_str().unwrap_or_default().to_owned();
            self.asked.lock().unwrap().push(host.clone());
            let say = {
                let mut script = self.script.lock().unwrap();
                let line = script.iter_mut().find(|(h, _)| *h == host);
                line.and_then(|(_, says)| says.pop_front()).unwrap_or(Say(
                    500,
                    "{}",
                    Duration::ZERO,
                ))
            };
            tokio::time::sleep(say.2).await;
            let response = http::Response::builder()
                .status(say.0)
                .header("content-type", "application/json")
                .body(say.1)
                .unwrap();
            Ok(reqwest::Response::from(response))
        }
    }

    fn up(name: &str) -> Upstream {
        Upstream::new(name, &format!("http://{name}.test/v1")).unwrap()
    }

    fn client(guard: Guard, stub: &Stub) -> ClientWithMiddleware {
        guard
            .without_telemetry()
            .without_retry()
            .layer(ClientBuilder::new(reqwest::Client::new()))
            .with(stub.clone())
            .build()
    }

    async fn call(client: &ClientWithMiddleware) -> crate::Evidence {
        let handle = EvidenceHandle::new();
        let _ = client
            .post("http://placeholder.invalid/v1/chat/completions")
            .with_extension(handle.clone())
            .bearer_auth("sk-caller")
            .body(r#"{"model":"m","messages":[]}"#)
            .send()
            .await;
        handle.settled().await
    }

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn a_failure_moves_on_once_and_the_record_says_why() {
        let stub = Stub::new(&[
            ("a.test", &[Say(503, "{}", NOW)]),
            ("b.test", &[Say(200, CHAT_OK, NOW)]),
        ]);
        let client = client(
            Guard::new().with_failover(Failover::new([up("a"), up("b")])),
            &stub,
        );
        let e = call(&client).await;
        assert_eq!(stub.asked(), ["a.test", "b.test"]);
        assert_eq!(e.fallback_decision, FallbackDecision::None);
        assert_eq!((e.upstream.as_deref(), e.hops), (Some("b"), 1));
        assert_eq!(e.failover_stop, Some(FailoverStop::Decided));
    }

    #[tokio::test]
    async fn the_hops_allowed_bound_the_loop_and_the_last_failure_comes_back() {
        let stub = Stub::new(&[
            ("a.test", &[Say(503, "{}", NOW)]),
            ("b.test", &[Say(502, "{}", NOW)]),
            ("c.test", &[Say(200, CHAT_OK, NOW)]),
        ]);
        let failover = Failover::builder([up("a"), up("b"), up("c")])
            .with_max_hops(1)
            .build();
        let client = client(Guard::new().with_failover(failover), &stub);
        let e = call(&client).await;
        assert_eq!(stub.asked(), ["a.test", "b.test"]);
        assert_eq!(e.status.map(|s| s.as_u16()), Some(502));
        assert_eq!(e.failover_stop, Some(FailoverStop::HopsExhausted));
        assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    }

    #[tokio::test]
    async fn a_passed_over_upstream_gets_no_request_and_the_next_is_no_hop() {
        let stub = Stub::new(&[("b.test", &[Say(200, CHAT_OK, NOW)])]);
        let failover = Failover::new([
            up("a").with_credential(Credential::env("LLM_GUARD_UNIT_NEVER_SET")),
            up("b"),
        ]);
        let client = client(Guard::new().with_failover(failover), &stub);
        let e = call(&client).await;
        assert_eq!(stub.asked(), ["b.test"]);
        assert_eq!((e.upstream.as_deref(), e.hops), (Some("b"), 0));
    }

    #[tokio::test]
    async fn passing_over_the_last_one_hands_back_the_failure_it_was_to_replace() {
        let stub = Stub::new(&[("a.test", &[Say(503, "{}", NOW)])]);
        let failover = Failover::new([
            up("a"),
            up("b").with_credential(Credential::value("sk-line\nbreak")),
        ]);
        let client = client(Guard::new().with_failover(failover), &stub);
        let e = call(&client).await;
        assert_eq!(stub.asked(), ["a.test"]);
        assert_eq!(e.status.map(|s| s.as_u16()), Some(503));
        assert_eq!(e.failover_stop, Some(FailoverStop::NoEligibleUpstream));
        assert_eq!(e.hops, 0, "no upstream took the call from a");
    }

    #[tokio::test(start_paused = true)]
    async fn no_hop_starts_past_the_calls_deadline_on_tokios_clock() {
        // a answers after 2 s of tokio's (paused) clock: past the 1 s deadline.
        let stub = Stub::new(&[
            ("a.test", &[Say(503, "{}", Duration::from_secs(2))]),
            ("b.test", &[Say(200, CHAT_OK, NOW)]),
        ]);
        let guard = Guard::new()
            .with_deadline(Duration::from_secs(1))
            .with_failover(Failover::new([up("a"), up("b")]));
        let e = call(&client(guard, &stub)).await;
        assert_eq!(stub.asked(), ["a.test"]);
        assert_eq!(e.failover_stop, Some(FailoverStop::Deadline));

        // Within it, the same failure moves on.
        let stub = Stub::new(&[
            ("a.test", &[Say(503, "{}", Duration::from_millis(500))]),
            ("b.test", &[Say(200, CHAT_OK, NOW)]),
        ]);
        let guard = Guard::new()
            .with_deadline(Duration::from_secs(1))
            .with_failover(Failover::new([up("a"), up("b")]));
        let e = call(&client(guard, &stub)).await;
        assert_eq!(stub.asked(), ["a.test", "b.test"]);
        assert_eq!(e.hops, 1);
    }

    #[tokio::test]
    async fn a_context_length_error_goes_to_the_larger_window_first() {
        const TOO_LONG: &str = r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"context_length_exceeded"}}"#;
        let stub = Stub::new(&[
            ("small.test", &[Say(400, TOO_LONG, NOW)]),
            ("same.test", &[Say(200, CHAT_OK, NOW)]),
            ("large.test", &[Say(200, CHAT_OK, NOW)]),
        ]);
        let failover = Failover::new([
            up("small").with_context_window(8_000),
            up("same").with_context_window(8_000),
            up("large").with_context_window(128_000),
        ]);
        let client = client(Guard::new().with_failover(failover), &stub);
        let e = call(&client).await;
        assert_eq!(stub.asked(), ["small.test", "large.test"]);
        assert_eq!(e.upstream.as_deref(), Some("large"));
    }

    fn request(method: &str, path: &str, body: &str) -> Request {
        let mut r = Request::new(
            method.parse().unwrap(),
            format!("http://h{path}").parse().unwrap(),
        );
        *r.body_mut() = Some(reqwest::Body::from(body.to_owned()));
        r
    }

    #[test]
    fn the_byte_search_spares_the_parse_only_where_the_parse_would_find_nothing() {
        for (surface, body, stream, state) in [
            (
                ApiSurface::ChatCompletions,
                r#"{"model":"m","messages":[]}"#,
                false,
                None,
            ),
            (
                ApiSurface::ChatCompletions,
                r#"{"model":"m","stream":true}"#,
                true,
                None,
            ),
            // An escaped key hides from the byte search: parsed all the same.
            (
                ApiSurface::ChatCompletions,
                r#"{"\u0073tream":true}"#,
                true,
                None,
            ),
            (
                ApiSurface::Responses,
                r#"{"model":"m","input":"hi"}"#,
                false,
                None,
            ),
            (
                ApiSurface::Responses,
                r#"{"input":"stream","previous_response_id":"resp_1"}"#,
                false,
                Some("resp_1"),
            ),
            (
                ApiSurface::Responses,
                r#"{"previous_\u0072esponse_id":"resp_2"}"#,
                false,
                Some("resp_2"),
            ),
        ] {
            let path = if surface == ApiSurface::Responses {
                "/v1/responses"
            } else {
                "/v1/chat/completions"
            };
            let peek = Peek::of(&request("POST", path, body), surface);
            assert_eq!(
                (peek.stream, peek.state_id.as_deref()),
                (stream, state),
                "{body}"
            );
        }
    }

    #[test]
    fn one_pass_reads_the_stream_flag_and_the_state_continued() {
        let chat = request(
            "POST",
            "/v1/chat/completions",
            r#"{"stream":true,"previous_response_id":"resp_x"}"#,
        );
        assert_eq!(
            Peek::of(&chat, ApiSurface::ChatCompletions),
            Peek {
                stream: true,
                state_id: None,
                conversation: false
            },
            "state is a Responses matter"
        );
        let escaped = request(
            "POST",
            "/v1/responses",
            r#"{"previous_response_id":"resp_\u0061b","conversation":{"id":"c"}}"#,
        );
        assert_eq!(
            Peek::of(&escaped, ApiSurface::Responses),
            Peek {
                stream: false,
                state_id: Some("resp_ab".into()),
                conversation: true
            }
        );
        let get = request("GET", "/v1/responses/resp_9/input_items", "");
        assert_eq!(
            Peek::of(&get, ApiSurface::Responses).state_id.as_deref(),
            Some("resp_9")
        );
    }

    #[tokio::test]
    async fn an_upstream_that_cannot_be_addressed_gets_neither_a_request_nor_its_key() {
        // The caller says Chat of a path that is none of Chat's: the upstream's URL cannot be
        // made, so its key must not go to the caller's URL instead.
        let stub = Stub::new(&[]);
        let failover = Failover::new([up("a").with_credential(Credential::value("sk-a-key"))]);
        let client = client(Guard::new().with_failover(failover), &stub);
        let handle = EvidenceHandle::new();
        let result = client
            .post("http://caller.test/llm")
            .with_extension(handle.clone())
            .with_extension(crate::evidence::ApiSurface::ChatCompletions)
            .body(r#"{"model":"m","messages":[]}"#)
            .send()
            .await;
        assert!(result.is_err());
        assert!(stub.asked().is_empty(), "{:?}", stub.asked());
        let e = handle.settled().await;
        assert_eq!(e.failover_stop, Some(FailoverStop::NoEligibleUpstream));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_layer_outside_re_running_the_stack_gets_one_attempt_per_upstream() {
        use reqwest_retry::RetryTransientMiddleware;
        use retry_policies::policies::ExponentialBackoff;
        let stub = Stub::new(&[
            ("a.test", &[Say(503, "{}", NOW); 16]),
            ("b.test", &[Say(503, "{}", NOW); 16]),
        ]);
        let fast = || {
            ExponentialBackoff::builder()
                .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
                .build_with_max_retries(2)
        };
        let guard = Guard::new()
            .without_telemetry()
            .with_retry(crate::retry::Retry::openai_sdk().with_policy(fast()))
            .with_failover(Failover::new([up("a"), up("b")]));
        let outside = ClientBuilder::new(reqwest::Client::new())
            .with(RetryTransientMiddleware::new_with_policy(fast()));
        let client = guard.layer(outside).with(stub.clone()).build();
        let _ = client
            .post("http://placeholder.invalid/v1/chat/completions")
            .body(r#"{"model":"m","messages":[]}"#)
            .send()
            .await;
        let asked = stub.asked();
        let (a, b) = (
            asked.iter().filter(|h| *h == "a.test").count(),
            asked.iter().filter(|h| *h == "b.test").count(),
        );
        // First run: 1 + 2 retries on each upstream. Each of the outside layer's 2 re-runs:
        // one attempt on each (the guard's retry layer leaves the retrying to it).
        assert_eq!((a, b), (3 + 2, 3 + 2), "{asked:?}");
    }
}
