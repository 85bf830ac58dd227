//! The failover middleware: the call moves to the next eligible upstream only on `fallback`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig, CallOutcome, Permit};
use super::route::{Route, Step};
use super::stream::CommitPoint;
use super::upstream::Upstream;
use crate::evidence::CallFacts;
use crate::evidence::{
    ApiSurface, DecisionPolicy, DecisionTable, FallbackDecision, HopReason, PassReason,
    StatusClass, WafKind, WafVerdict,
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

pub(super) struct Entry {
    pub(super) upstream: Upstream,
    pub(super) breaker: Breaker,
    /// For an upstream that must pass the drill: whether it has, since its breaker last
    /// opened.
    promoted: std::sync::atomic::AtomicBool,
}

impl Entry {
    pub(super) fn promoted(&self) -> bool {
        !self.upstream.drill || self.promoted.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub(super) struct Shared {
    pub(super) entries: Vec<Entry>,
    pub(super) settings: Settings,
    pub(super) affinity: Mutex<Affinity>,
    /// Set once the breaker metrics are registered (at the first call).
    registered: std::sync::OnceLock<()>,
}

impl Shared {
    /// An upstream that must pass the drill loses its promotion when its breaker opens.
    pub(super) fn demote_if_open(&self, index: usize) {
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
pub(super) struct Affinity {
    capacity: usize,
    by_id: HashMap<Arc<str>, usize>,
    order: VecDeque<Arc<str>>,
}

impl Affinity {
    pub(super) fn remember(&mut self, id: &str, upstream: usize) {
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

    pub(super) fn owner(&self, id: &str) -> Option<usize> {
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
    /// The hop loop: pick an upstream, hop to it, decide; stop, or move on.
    async fn route(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        surface: ApiSurface,
        scope: &CallScope,
    ) -> reqwest_middleware::Result<Response> {
        self.register_metrics();
        let mut route = Route::new(&self.shared, &req, surface, scope)?;
        // Something is eligible and nothing was tried: there is always a first pick.
        let mut pick = route.pick();
        while let Some(picked) = pick.take() {
            let Some(attempt) = route.request_for(&req, &picked)? else {
                // Passed over (its key cannot be had): no request, no hop.
                pick = route.pick();
                continue;
            };
            let index = picked.index;
            match route
                .hop(&req, attempt, picked, extensions, next.clone())
                .await
            {
                Step::Stop(answer) => return route.finish(answer),
                Step::MoveOn(answer, reason, next_pick) => {
                    route.leave(answer, index, reason);
                    pick = Some(next_pick);
                }
            }
        }
        route.nothing_left()
    }

    /// The breaker metrics, registered at the first call (on the global meter unless one was
    /// set).
    fn register_metrics(&self) {
        self.shared.registered.get_or_init(|| {
            let meter = self.shared.settings.meter.clone().unwrap_or_else(|| {
                opentelemetry::global::meter_with_scope(crate::evidence::metric::scope())
            });
            super::metrics::register(&meter, &self.shared);
        });
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
