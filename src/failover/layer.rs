//! The failover middleware: the call moves to the next eligible upstream only on `fallback`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig, CallOutcome, Permit};
use super::stream::{CommitPoint, Committed, read_to_commit};
use super::upstream::Upstream;
use crate::contract::ContractVerdict;
use crate::error::{Error, ErrorKind};
use crate::evidence::CallFacts;
use crate::evidence::{
    ApiSurface, DecisionPolicy, DecisionTable, FailoverRecord, FailoverStop, FallbackDecision, Hop,
    HopReason, PassReason, PassedOver, StatusClass, TransportErrorKind, Violation, WafKind,
    WafVerdict,
};
use crate::extensions::{CallBounds, CallScope};
use crate::inspect::VerdictHandle;

/// Default bound on remembered response ids.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 10_000;

/// The failover middleware over an ordered list of upstreams. See the
/// [module docs](super).
///
/// Build it with [`Failover::new`] (the defaults) or [`Failover::builder`]; its clones, and
/// the [`FailoverHandle`](super::FailoverHandle) of [`Failover::handle`], share one state:
/// breakers, promotions, affinity.
#[derive(Clone)]
pub struct Failover {
    pub(super) shared: Arc<Shared>,
}

struct Entry {
    upstream: Upstream,
    breaker: Breaker,
    /// For an upstream that must pass the drill: whether it has, since its breaker last
    /// opened.
    promoted: std::sync::atomic::AtomicBool,
}

impl Entry {
    fn promoted(&self) -> bool {
        !self.upstream.drill || self.promoted.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub(super) struct Shared {
    entries: Vec<Entry>,
    settings: Settings,
    affinity: Mutex<Affinity>,
    /// Set once the breaker metrics are registered (at the first call).
    registered: std::sync::OnceLock<()>,
}

impl Shared {
    /// The upstream a cut Chat stream would be continued on: the next eligible one, not tried,
    /// not behind a walled host, whose breaker is not open, that declares prefill support.
    fn continuation_target(
        &self,
        eligible: &[usize],
        tried: &[usize],
        walled_hosts: &[String],
    ) -> Option<usize> {
        eligible.iter().copied().find(|&i| {
            let e = &self.entries[i];
            e.upstream.prefill
                && !tried.contains(&i)
                && e.upstream
                    .host()
                    .is_none_or(|h| !walled_hosts.iter().any(|w| w == h))
                && e.breaker.state() != super::BreakerState::Open
        })
    }

    /// An upstream that must pass the drill loses its promotion when its breaker opens.
    fn demote_if_open(&self, index: usize) {
        let entry = &self.entries[index];
        if entry.upstream.drill && entry.breaker.state() == super::BreakerState::Open {
            entry
                .promoted
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

impl super::metrics::Breakers for Shared {
    fn each(&self, f: &mut dyn FnMut(&Arc<str>, &Breaker)) {
        for e in &self.entries {
            f(&e.upstream.name, &e.breaker);
        }
    }
}

/// The longest response id remembered: providers mint ids of well under 100 characters, and
/// one from a hostile upstream must not make the map's bound a matter of its length.
pub(crate) const MAX_AFFINITY_ID_BYTES: usize = 256;

/// Response ids this layer saw minted, and by which upstream: bounded in count (oldest
/// forgotten first) and in length, so at most `capacity` × ~350 bytes.
struct Affinity {
    capacity: usize,
    by_id: HashMap<Arc<str>, usize>,
    order: VecDeque<Arc<str>>,
}

impl Affinity {
    fn remember(&mut self, id: &str, upstream: usize) {
        if self.capacity == 0 || id.len() > MAX_AFFINITY_ID_BYTES || self.by_id.contains_key(id) {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        // One copy of the id, shared by the map and the order.
        let id: Arc<str> = id.into();
        self.by_id.insert(id.clone(), upstream);
        self.order.push_back(id);
    }

    fn owner(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field(
                "upstreams",
                &self
                    .shared
                    .entries
                    .iter()
                    .map(|e| (&e.upstream, e.breaker.state()))
                    .collect::<Vec<_>>(),
            )
            .field("max_hops", &self.shared.settings.max_hops)
            .field("commit", &self.shared.settings.commit)
            .finish()
    }
}

/// The layer's settings (built by [`FailoverBuilder`](super::FailoverBuilder)).
#[derive(Clone)]
pub(super) struct Settings {
    /// The meter for the breaker metrics; the global one (read at the first call) if unset.
    pub(super) meter: Option<opentelemetry::metrics::Meter>,
    pub(super) max_hops: usize,
    pub(super) breaker: BreakerConfig,
    pub(super) affinity_capacity: usize,
    pub(super) commit: CommitPoint,
    pub(super) first_token: Option<Duration>,
    pub(super) idle: Option<Duration>,
    /// Opt-in: the client continuations are sent with.
    pub(super) continuation: Option<reqwest::Client>,
    /// The call settings when this layer is the first of the crate's to see a call (no
    /// call layer above it): a 60 s deadline and a budget of its own.
    pub(super) bounds: CallBounds,
}

/// Default limit for a stream's first byte (or first content), per attempt: 60 s.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit between a stream's frames, per attempt: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Shared {
    /// The state of a layer over these upstreams: a breaker each, no promotion, no affinity.
    pub(super) fn new(upstreams: Vec<Upstream>, settings: Settings) -> Self {
        Self {
            entries: upstreams
                .into_iter()
                .map(|upstream| Entry {
                    upstream,
                    breaker: Breaker::new(settings.breaker.clone()),
                    promoted: std::sync::atomic::AtomicBool::new(false),
                })
                .collect(),
            affinity: Mutex::new(Affinity {
                capacity: settings.affinity_capacity,
                by_id: HashMap::new(),
                order: VecDeque::new(),
            }),
            settings,
            registered: std::sync::OnceLock::new(),
        }
    }

    /// The upstreams, as configured.
    pub(super) fn upstreams(&self) -> Vec<Upstream> {
        self.entries.iter().map(|e| e.upstream.clone()).collect()
    }

    /// Records that the drill passed against the upstream named `name`.
    pub(super) fn promote(&self, name: &str) -> bool {
        self.entries
            .iter()
            .find(|e| &*e.upstream.name == name)
            .is_some_and(|e| {
                e.promoted.store(true, std::sync::atomic::Ordering::Release);
                true
            })
    }

    /// The upstreams waiting for the drill.
    pub(super) fn awaiting_drill(&self) -> Vec<Upstream> {
        self.entries
            .iter()
            .filter(|e| !e.promoted())
            .map(|e| e.upstream.clone())
            .collect()
    }

    /// The breaker of the upstream named `name`.
    pub(super) fn breaker(&self, name: &str) -> Option<&Breaker> {
        self.entries
            .iter()
            .find(|e| &*e.upstream.name == name)
            .map(|e| &e.breaker)
    }
}

/// What the layer needs of a request, read in one pass over its body: whether it asks for a
/// stream, and the state it continues (`previous_response_id`, a `conversation`, or the
/// response named in a `GET`/`POST …/responses/{id}` path).
#[derive(Debug, Default, PartialEq, Eq)]
struct Peek {
    stream: bool,
    state_id: Option<String>,
    conversation: bool,
}

impl Peek {
    fn of(req: &Request, surface: ApiSurface) -> Self {
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
fn breaker_outcome(
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

fn hop_reason(facts: &CallFacts<'_>) -> HopReason {
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

struct Pick {
    index: usize,
    permit: Permit,
}

impl Shared {
    /// The next upstream to try: in order, not tried yet, eligible, its breaker willing; for a
    /// context-length hop, one with a larger window first. When every eligible breaker refuses
    /// and nothing was tried yet, the one that failed least recently is probed anyway.
    fn pick(
        &self,
        eligible: &[usize],
        tried: &[usize],
        walled_hosts: &[String],
        larger_than: Option<u64>,
        first: bool,
    ) -> Option<Pick> {
        let open: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|i| !tried.contains(i))
            .filter(|&i| {
                self.entries[i]
                    .upstream
                    .host()
                    .is_none_or(|h| !walled_hosts.iter().any(|w| w == h))
            })
            .collect();
        let by_window: Vec<usize> = match larger_than {
            Some(window) => {
                let mut larger: Vec<usize> = open
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.entries[i]
                            .upstream
                            .context_window
                            .is_some_and(|w| w > window)
                    })
                    .collect();
                let rest: Vec<usize> = open
                    .iter()
                    .copied()
                    .filter(|i| !larger.contains(i))
                    .collect();
                larger.extend(rest);
                larger
            }
            None => open.clone(),
        };
        for &i in &by_window {
            if let Some(permit) = self.entries[i].breaker.try_acquire() {
                return Some(Pick { index: i, permit });
            }
        }
        if first {
            // Every breaker refuses: probe the one that failed least recently.
            let index = open
                .iter()
                .copied()
                .min_by_key(|&i| self.entries[i].breaker.last_failure())?;
            return Some(Pick {
                index,
                permit: self.entries[index].breaker.force_probe(),
            });
        }
        None
    }
}

#[async_trait::async_trait]
impl Middleware for Failover {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let surface = extensions
            .get::<ApiSurface>()
            .copied()
            .unwrap_or_else(|| ApiSurface::of_request(&req));
        if surface == ApiSurface::Other {
            return next.run(req, extensions).await;
        }
        // The call's start, deadline, budget and policy: a layer above set them, else this one
        // does, with its own.
        let (scope, owner) = CallScope::get_or_start(extensions, || {
            (
                self.shared.settings.bounds.clone(),
                Arc::new(DecisionTable::default()),
            )
        });
        let result = self.route(req, extensions, next, surface, &scope).await;
        if owner {
            extensions.remove::<CallScope>();
        }
        result
    }
}

impl Failover {
    /// The hop loop: pick an upstream, send, decide; stop, or move on.
    #[allow(clippy::too_many_lines)]
    async fn route(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        surface: ApiSurface,
        scope: &CallScope,
    ) -> reqwest_middleware::Result<Response> {
        self.shared.registered.get_or_init(|| {
            let meter = self.shared.settings.meter.clone().unwrap_or_else(|| {
                opentelemetry::global::meter_with_scope(crate::evidence::metric::scope())
            });
            super::metrics::register(&meter, &self.shared);
        });
        let shared = &*self.shared;
        let policy = scope.policy.clone();
        let Peek {
            stream,
            state_id,
            conversation,
        } = Peek::of(&req, surface);
        let wants_stream = stream && shared.settings.first_token.is_some();
        let mut eligible: Vec<usize> = (0..shared.entries.len())
            .filter(|&i| shared.entries[i].upstream.serves(surface))
            .filter(|&i| shared.entries[i].promoted())
            .collect();
        let pinned = state_id.is_some() || conversation;
        if pinned {
            // State lives on one upstream: the one that minted it, else (not seen here) the
            // first that serves the surface. Never a hop.
            let owner = state_id.as_deref().and_then(|id| {
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
            return Err(Error::new(ErrorKind::NoUpstream).into());
        }
        let mut record = FailoverRecord::default();
        // The upstreams tried or passed over: none is picked again.
        let mut tried: Vec<usize> = Vec::new();
        let mut walled_hosts: Vec<String> = Vec::new();
        // The failure being left and why, held until the next upstream is really sent the call
        // (handed back if none is).
        let mut left: Option<(reqwest_middleware::Result<Response>, Arc<str>, HopReason)> = None;
        let mut larger_than = None;
        // Eligible is not empty and nothing was tried: there is always a first pick.
        let mut pick = shared.pick(&eligible, &tried, &walled_hosts, None, true);
        while let Some(Pick { index, permit }) = pick.take() {
            let entry = &shared.entries[index];
            let Some(mut attempt) = req.try_clone() else {
                record.stop = Some(FailoverStop::NotCloneable);
                scope.record_failover(record);
                return Err(Error::new(ErrorKind::RequestNotCloneable).into());
            };
            tried.push(index);
            let moved = match prepare(&mut attempt, &entry.upstream, surface, req.url()) {
                Ok(moved) => moved,
                Err(reason) => {
                    // Its key cannot be had: passed over, never sent the caller's instead. No
                    // request was made, so nothing for its breaker (the permit goes back).
                    drop(permit);
                    record.passed_over.push(PassedOver {
                        upstream: entry.upstream.name.clone(),
                        reason,
                    });
                    pick = shared.pick(
                        &eligible,
                        &tried,
                        &walled_hosts,
                        larger_than,
                        record.tried.is_empty(),
                    );
                    continue;
                }
            };
            if let Some((previous, from, reason)) = left.take() {
                // Free the connection before the next hop.
                drop(previous);
                record.hops.push(Hop {
                    from,
                    to: entry.upstream.name.clone(),
                    reason,
                });
            }
            record.tried.push(entry.upstream.name.clone());
            // A new leg of the call: the layers below send, retry and record on it.
            scope.begin_leg(
                entry.upstream.name.clone(),
                moved.then(|| attempt.url().clone()),
            );

            // A stream's first token is due by the first-token limit from the hop's start: a
            // silent upstream that never sends its headers is left too.
            let first_token = shared
                .settings
                .first_token
                .filter(|_| wants_stream)
                .map(|limit| Instant::now() + limit);
            let result = match first_token {
                Some(by) => tokio::time::timeout_at(by, next.clone().run(attempt, extensions))
                    .await
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::TimeToHeaders).into())),
                None => next.clone().run(attempt, extensions).await,
            };

            // What the server asked to wait, for the breaker.
            let server_wait = scope.leg_server_wait();
            let (status, transport, waf, stream) = match &result {
                Ok(r) => (
                    Some(r.status()),
                    None,
                    r.extensions().get::<WafVerdict>().cloned(),
                    r.extensions().get::<VerdictHandle>().cloned(),
                ),
                Err(e) => (None, Some(TransportErrorKind::of(e)), None, None),
            };
            // The decision and, on `fallback`, why: read from the answer where it lies.
            let (decision, reason) = {
                let verdict = result
                    .as_ref()
                    .ok()
                    .and_then(|r| r.extensions().get::<ContractVerdict>());
                // A stream is judged at its end; until then, as if it will keep its contract.
                let provisional = stream.as_ref().map(|_| ContractVerdict::passed());
                let facts = CallFacts {
                    surface,
                    status,
                    transport_error: transport,
                    verdict: verdict.or(provisional.as_ref()),
                    waf: waf.as_ref(),
                    log: None,
                    cancelled: false,
                };
                let decision = facts.decision(&*policy);
                // Only Responses ids are state a later request can continue.
                if surface == ApiSurface::Responses
                    && let Some(v) = verdict
                    && status.is_some_and(|s| s.is_success())
                    && let Some(id) = &v.facts.response_id
                {
                    shared
                        .affinity
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remember(id, index);
                }
                let reason = (decision == FallbackDecision::Fallback).then(|| hop_reason(&facts));
                (decision, reason)
            };
            let mut decision = decision;
            let mut result = result;
            let mut stream_failed = false;
            match (&stream, decision, result) {
                (Some(stream), FallbackDecision::None, Ok(response)) => {
                    let settings = &shared.settings;
                    let (parts, body, url) = crate::redact::split(response);
                    let read =
                        read_to_commit(body, settings.commit, first_token, settings.idle, stream)
                            .await;
                    if let Ok(read) = read {
                        watch_stream(
                            (&self.shared, index),
                            stream,
                            permit,
                            surface,
                            status,
                            &policy,
                            waf.as_ref(),
                            server_wait,
                        );
                        let mut body = Committed::new(read, stream.clone(), settings.idle);
                        let mut outer = None;
                        if surface == ApiSurface::ChatCompletions
                            && let Some(client) = &settings.continuation
                            && let Some(target) =
                                shared.continuation_target(&eligible, &tried, &walled_hosts)
                        {
                            let caller = VerdictHandle::new();
                            body = body.with_continuation(
                                super::continuation::Plan {
                                    client: client.clone(),
                                    target: shared.entries[target].upstream.clone(),
                                    url: req.url().clone(),
                                    headers: req.headers().clone(),
                                    body: req
                                        .body()
                                        .and_then(reqwest::Body::as_bytes)
                                        .map(bytes::Bytes::copy_from_slice)
                                        .unwrap_or_default(),
                                    continued_on: record.continued_on.clone(),
                                },
                                caller.clone(),
                            );
                            outer = Some(caller);
                        }
                        let mut response =
                            crate::redact::join(parts, reqwest::Body::wrap(body), url);
                        if let Some(caller) = outer {
                            // The call is judged by the whole answer, continued or not.
                            crate::extensions::put(response.extensions_mut(), caller);
                        }
                        record.stop = Some(FailoverStop::Decided);
                        return finish(Ok(response), record, scope);
                    }
                    // Failed before the caller saw a byte of it: fail over (its verdict
                    // is set, by the checker or by the limit that cut it off).
                    permit.record(CallOutcome::Failure { retry_after: None });
                    shared.demote_if_open(index);
                    decision = FallbackDecision::Fallback;
                    stream_failed = true;
                    // What the caller gets if no hop is left: the headers, then an
                    // error, never a clean end.
                    let verdict = stream.clone();
                    if verdict.get().is_none() {
                        verdict.complete(ContractVerdict::failed(Violation::StreamTruncated));
                    }
                    let body = Committed::new(
                        super::stream::PreCommit {
                            prefix: Vec::new(),
                            rest: None,
                        },
                        verdict,
                        None,
                    );
                    result = Ok(crate::redact::join(parts, reqwest::Body::wrap(body), url));
                }
                (_, _, r) => {
                    permit.record(breaker_outcome(decision, status, waf.as_ref(), server_wait));
                    shared.demote_if_open(index);
                    result = r;
                }
            }
            if decision != FallbackDecision::Fallback {
                record.stop = Some(FailoverStop::Decided);
                return finish(result, record, scope);
            }
            // Fallback: move on if a hop is allowed.
            let reason = if stream_failed {
                HopReason::StreamFailed
            } else {
                reason.unwrap_or(HopReason::Policy)
            };
            let deadline_passed = scope.deadline_passed();
            let stop = if pinned {
                Some(FailoverStop::StateAffinity)
            } else if record.tried.len() > shared.settings.max_hops {
                Some(FailoverStop::HopsExhausted)
            } else if deadline_passed {
                Some(FailoverStop::Deadline)
            } else {
                None
            };
            if let Some(stop) = stop {
                record.stop = Some(stop);
                return finish(result, record, scope);
            }
            if waf.is_some()
                && let Some(host) = entry.upstream.host()
            {
                // A wall the policy chose to fail over from: never to the same edge again.
                walled_hosts.push(host.to_owned());
            }
            larger_than = (reason == HopReason::ContextLength)
                .then(|| entry.upstream.context_window.unwrap_or(0));
            let Some(next_pick) = shared.pick(&eligible, &tried, &walled_hosts, larger_than, false)
            else {
                record.stop = Some(FailoverStop::NoEligibleUpstream);
                return finish(result, record, scope);
            };
            if let Some(budget) = &scope.bounds.budget
                && !budget.withdraw()
            {
                record.stop = Some(FailoverStop::BudgetExhausted);
                return finish(result, record, scope);
            }
            left = Some((result, entry.upstream.name.clone(), reason));
            pick = Some(next_pick);
        }
        // No upstream left to send the call to: the last failure, if one was left for
        // another upstream that was then passed over, else an error.
        record.stop = Some(FailoverStop::NoEligibleUpstream);
        if let Some((result, _, _)) = left {
            return finish(result, record, scope);
        }
        scope.record_failover(record);
        Err(Error::new(ErrorKind::NoUpstream).into())
    }
}

/// The breaker learns a committed stream's outcome at its end; a stream the caller drops
/// before it gives the permit back. (Everything the end's decision needs, passed as it is.)
#[allow(clippy::too_many_arguments)]
fn watch_stream(
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
fn prepare(
    req: &mut Request,
    upstream: &Upstream,
    surface: ApiSurface,
    caller: &reqwest::Url,
) -> Result<bool, PassReason> {
    upstream.authorize(req.headers_mut(), upstream.same_origin(caller))?;
    let moved = !upstream.addressed_by(req.url(), surface);
    if moved && let Some(url) = upstream.url_for(req.url(), surface) {
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

fn finish(
    result: reqwest_middleware::Result<Response>,
    record: FailoverRecord,
    scope: &CallScope,
) -> reqwest_middleware::Result<Response> {
    scope.record_failover(record.clone());
    result.map(|mut r| {
        crate::extensions::put(r.extensions_mut(), record);
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_is_bounded_in_count_and_in_id_length() {
        let mut a = Affinity {
            capacity: 3,
            by_id: HashMap::new(),
            order: VecDeque::new(),
        };
        for (i, id) in ["resp_a", "resp_b", "resp_c", "resp_d"]
            .into_iter()
            .enumerate()
        {
            a.remember(id, i);
        }
        // The oldest is forgotten first.
        assert_eq!(a.owner("resp_a"), None);
        assert_eq!(a.owner("resp_d"), Some(3));
        assert_eq!((a.by_id.len(), a.order.len()), (3, 3));
        // Seen again: not moved, not counted twice.
        a.remember("resp_b", 9);
        assert_eq!(a.owner("resp_b"), Some(1));
        assert_eq!(a.order.len(), 3);
        // An id longer than any provider mints is not kept.
        let long = "r".repeat(MAX_AFFINITY_ID_BYTES + 1);
        a.remember(&long, 0);
        assert_eq!(a.owner(&long), None);
        assert_eq!(a.owner("resp_b"), Some(1));
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
}
