//! Telemetry: one span per call, one child span per attempt, metrics; nothing secret
//! (DESIGN §2, §6).
//!
//! Two layers:
//!
//! - [`Telemetry`], outermost: the call span `{gen_ai.operation.name} {gen_ai.request.model}`
//!   (kind client) covering every attempt, with the evidence of DESIGN §2 on it when the call
//!   ends, and the metrics. A streaming call's span stays open until the stream ends, fails or
//!   is dropped; it then records `parse_check`, the finish reasons, token usage and the time to
//!   first chunk.
//! - [`AttemptTelemetry`], between [`Retry`](crate::retry::Retry) and
//!   [`Inspect`](crate::inspect::Inspect): one child span per attempt with
//!   `http.request.resend_count`, the attempt's status and verdict, and `fallback_decision=retry`
//!   on every attempt that was retried (with the wait and its reason).
//!
//! Spans are made with the `opentelemetry` API (measured cheaper than `tracing` spans bridged
//! through `tracing-opentelemetry`: DESIGN §6). Their parent is the caller's current `tracing`
//! span when the `tracing-opentelemetry` layer is installed, else OpenTelemetry's current
//! context. `traceparent` (and whatever else the global propagator carries) is injected into
//! each outgoing attempt: set a propagator with
//! `opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())`.
//!
//! # What is never recorded
//!
//! No header (so no `Authorization`, `api-key`, `x-api-key` or cookie), no URL (only
//! `server.address` and `server.port`: no userinfo, path or query, so no `?key=`), no request
//! or response body, and no API error message (it may quote the request). Prompt and completion
//! text are recorded only after [`Telemetry::with_content_capture`], truncated.
//! Model names and response ids are cut at 128 characters.
//!
//! # Attributes
//!
//! On the call span: `gen_ai.operation.name` (`chat`), `gen_ai.provider.name`,
//! `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.response.id`,
//! `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `openai.api.type`, `server.address`, `server.port`, `http.request.method`,
//! `http.response.status_code`, `error.type`, and the evidence: `api_surface`, `status_class`,
//! `parse_check`, `fallback_decision`, `retry_count`, `contract.violation`,
//! `contract.warnings`, `contract.skip_reason`, `waf.vendor`, `waf.kind`, `waf.reference`,
//! plus `gen_ai.response.time_to_first_chunk` on streams. The names are in
//! [`evidence::attr`](crate::evidence::attr).

mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod request;

pub use metrics::{DURATION_BUCKETS, TOKEN_BUCKETS, name as metric};

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use http::Extensions;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value, global};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::contract::{CaptureContent, Verdict};
use crate::evidence::{
    ApiSurface, DecisionPolicy, DecisionTable, FallbackDecision, Outcome, ParseCheck, StatusClass,
    TransportErrorKind, WafVerdict, attr,
};
use crate::inspect::StreamVerdict;
use crate::lint::{self, Finding, ProviderFamily, Returned};
use crate::retry::{CurrentAttempt, RetryRecord};
use metrics::{Instruments, genai_attributes};
use request::RequestFacts;

const SCOPE: &str = "reqwest-llm-guard";

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

#[derive(Clone)]
struct Shared {
    tracer: Arc<global::BoxedTracer>,
    instruments: Instruments,
    provider: StringValue,
    policy: Arc<dyn DecisionPolicy>,
    capture: Option<usize>,
    family: Option<ProviderFamily>,
}

/// The call-level telemetry middleware. See the [module docs](self).
///
/// Defaults: the global tracer and meter providers (read when the layer is built), provider
/// name `openai`, the default [`DecisionTable`].
#[derive(Clone)]
pub struct Telemetry {
    shared: Arc<Shared>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The layer on the global tracer and meter providers.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tracer: Arc::new(global::tracer_with_scope(scope())),
                instruments: Instruments::new(&global::meter_with_scope(scope())),
                provider: StringValue::from("openai"),
                policy: Arc::new(DecisionTable::default()),
                capture: None,
                family: None,
            }),
        }
    }

    /// Settings apply to this value and to the [`AttemptTelemetry`] taken from it afterwards.
    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Spans go to this provider instead of the global one.
    #[must_use]
    pub fn with_tracer_provider<P, T, S>(self, provider: &P) -> Self
    where
        P: opentelemetry::trace::TracerProvider<Tracer = T>,
        T: opentelemetry::trace::Tracer<Span = S> + Send + Sync + 'static,
        S: opentelemetry::trace::Span + Send + Sync + 'static,
    {
        let tracer = global::BoxedTracer::new(Box::new(provider.tracer_with_scope(scope())));
        self.edit(|s| s.tracer = Arc::new(tracer))
    }

    /// Metrics go to this provider instead of the global one.
    #[must_use]
    pub fn with_meter_provider(
        self,
        provider: &impl opentelemetry::metrics::MeterProvider,
    ) -> Self {
        let instruments = Instruments::new(&provider.meter_with_scope(scope()));
        self.edit(|s| s.instruments = instruments)
    }

    /// `gen_ai.provider.name` (default `openai`; the conventions list `azure.ai.openai`,
    /// `groq`, `deepseek`, … and allow a gateway's own name).
    #[must_use]
    pub fn with_provider_name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = match name.into() {
            Cow::Borrowed(s) => StringValue::from(s),
            Cow::Owned(s) => StringValue::from(Arc::<str>::from(s)),
        };
        self.edit(|s| s.provider = name)
    }

    /// The policy that decides `fallback_decision` (default: [`DecisionTable::default`]).
    #[must_use]
    pub fn with_decision_policy(self, policy: impl DecisionPolicy) -> Self {
        let policy: Arc<dyn DecisionPolicy> = Arc::new(policy);
        self.edit(|s| s.policy = policy)
    }

    /// Records prompt and completion text, each cut at `max_chars` characters: the request's
    /// `messages` (or Responses `input`) as `gen_ai.input.messages` and the completion's text
    /// as `gen_ai.output.messages`, on the call span. Off by default: prompts and completions
    /// are often personal data, and may hold secrets.
    #[must_use]
    pub fn with_content_capture(self, max_chars: usize) -> Self {
        self.edit(|s| s.capture = Some(max_chars))
    }

    /// The provider family the request lint assumes for every call of this client (default:
    /// from each request's model name). A request can set its own by carrying a
    /// [`ProviderFamily`] in its extensions.
    #[must_use]
    pub fn with_provider_family(self, family: ProviderFamily) -> Self {
        self.edit(|s| s.family = Some(family))
    }

    /// The attempt layer that belongs with this one (same tracer). Take it after configuring
    /// this layer.
    pub fn attempts(&self) -> AttemptTelemetry {
        AttemptTelemetry {
            shared: self.shared.clone(),
        }
    }
}

/// The call span's context, for the attempt layer.
#[derive(Clone)]
struct CallContext(Context);

/// The last attempt's span, left open until the retry layer's decision about it is known.
#[derive(Clone)]
struct PendingAttempt {
    cx: Context,
    ended: SystemTime,
}

impl PendingAttempt {
    fn finish(self, decision: FallbackDecision, retry: Option<&RetryRecord>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(attr::FALLBACK_DECISION, decision.as_str()));
        if let Some(attempt) = retry.and_then(|r| r.attempts.last())
            && let Some((wait, reason)) = attempt.retry_after
            && decision == FallbackDecision::Retry
        {
            span.set_attribute(KeyValue::new(attr::RETRY_WAIT, wait.as_secs_f64()));
            span.set_attribute(KeyValue::new(attr::RETRY_WAIT_REASON, reason.as_str()));
        }
        span.end_with_timestamp(self.ended);
    }
}

/// The parent for a new call span: the caller's `tracing` span if it carries an OpenTelemetry
/// context, else the current OpenTelemetry context.
fn parent_context() -> Context {
    let from_tracing = tracing::Span::current().context();
    if from_tracing.span().span_context().is_valid() {
        from_tracing
    } else {
        Context::current()
    }
}

/// Writes propagation headers, skipping any the propagator makes that are not valid headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

fn inject(cx: &Context, request: &mut Request) {
    global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(request.headers_mut()));
    });
}

/// The method's name, without an allocation for the usual ones.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    match *method {
        http::Method::POST => Cow::Borrowed("POST"),
        http::Method::GET => Cow::Borrowed("GET"),
        http::Method::DELETE => Cow::Borrowed("DELETE"),
        _ => Cow::Owned(method.as_str().to_owned()),
    }
}

fn operation(surface: ApiSurface) -> &'static str {
    match surface {
        ApiSurface::ChatCompletions | ApiSurface::Responses => "chat",
        ApiSurface::Other => "http",
    }
}

/// Everything the call's end needs, moved into the stream callback when the call streams.
struct CallEnd {
    shared: Arc<Shared>,
    cx: Context,
    started: Instant,
    surface: ApiSurface,
    facts: RequestFacts,
    status: Option<http::StatusCode>,
    transport: Option<TransportErrorKind>,
    waf: Option<WafVerdict>,
    retry: Option<RetryRecord>,
    pending: Option<PendingAttempt>,
    streamed: bool,
}

impl CallEnd {
    /// Records the call's verdict on its span and in the metrics, and ends the span.
    fn finish(
        mut self,
        verdict: Option<&Verdict>,
        first_chunk: Option<Instant>,
    ) -> FallbackDecision {
        let span = self.cx.span();
        let (parse_check, violation) = verdict.map_or((ParseCheck::Skipped, None), |v| {
            (v.parse_check, v.violation)
        });
        let mut outcome = match (self.status, self.transport) {
            (Some(status), _) => Outcome::response(status, parse_check, violation),
            (None, kind) => Outcome::transport_error(kind.unwrap_or(TransportErrorKind::Other)),
        };
        if let Some(waf) = &self.waf {
            outcome = outcome.with_waf(waf);
        }
        let decision = self.shared.policy.decide(&outcome);
        let status_class = outcome.status_class();
        let error_type: Option<Cow<'static, str>> = match (self.status, self.transport) {
            (None, kind) => Some(kind.unwrap_or(TransportErrorKind::Other).as_str().into()),
            (Some(s), _) if s.as_u16() >= 400 => Some(s.as_u16().to_string().into()),
            (Some(_), _) => violation.map(|v| v.as_str().into()),
        };
        let retries = self.retry.as_ref().map_or(0, RetryRecord::retries);

        let mut kv = vec![
            KeyValue::new(attr::STATUS_CLASS, status_class.as_str()),
            KeyValue::new(attr::PARSE_CHECK, parse_check.as_str()),
            KeyValue::new(attr::FALLBACK_DECISION, decision.as_str()),
            KeyValue::new(attr::RETRY_COUNT, i64::from(retries)),
        ];
        if let Some(status) = self.status {
            kv.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(e) = &error_type {
            kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
        }
        if let Some(v) = verdict
            && v.parse_check == ParseCheck::Pass
            && self.status.is_some_and(|s| s.is_success())
            && self.surface != ApiSurface::Other
        {
            let returned = Returned {
                choices: v.facts.choices,
                streamed: self.streamed,
                model: v.facts.response_model.as_deref(),
                tool_calls: v.facts.tool_calls,
            };
            let findings = lint::cross_check_summary(
                &self.facts.asked,
                self.surface,
                self.facts.family,
                &returned,
            );
            record_findings(&self.shared, &self.cx, &findings, Phase::Response);
        }
        if let Some(v) = verdict {
            verdict_attributes(v, &mut kv);
            if let Some(text) = &v.facts.output_text {
                kv.push(KeyValue::new(attr::GEN_AI_OUTPUT_MESSAGES, text.clone()));
            }
        }
        if let Some(waf) = &self.waf {
            waf_attributes(waf, &mut kv);
        }
        let ttfc = first_chunk.map(|t| t.saturating_duration_since(self.started).as_secs_f64());
        if let Some(ttfc) = ttfc {
            kv.push(KeyValue::new(
                attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                ttfc,
            ));
        }
        span.set_attributes(kv);
        if let Some(e) = &error_type {
            span.set_status(Status::error(e.clone()));
        }
        if let Some(pending) = self.pending.take() {
            pending.finish(decision, self.retry.as_ref());
        }
        span.end();

        self.record_metrics(verdict, decision, status_class, error_type, ttfc);
        decision
    }

    fn record_metrics(
        &self,
        verdict: Option<&Verdict>,
        decision: FallbackDecision,
        status_class: StatusClass,
        error_type: Option<Cow<'static, str>>,
        ttfc: Option<f64>,
    ) {
        let m = &self.shared.instruments;
        let op = operation(self.surface);
        let server = (self.facts.server_address.as_ref(), self.facts.server_port);
        let base = genai_attributes(
            op,
            &self.shared.provider,
            self.facts.model.as_ref(),
            server,
            4,
        );
        let surface = KeyValue::new(attr::API_SURFACE, self.surface.as_str());
        let parse_check = verdict.map_or(ParseCheck::Skipped, |v| v.parse_check);

        // One vector, extended and shrunk in place, for the three GenAI instruments.
        let mut kv = base;
        if let Some(ttfc) = ttfc {
            m.ttfc.record(ttfc, &kv);
        }
        if let Some(usage) = verdict.and_then(|v| v.facts.usage) {
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                if let Some(n) = n {
                    kv.push(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind));
                    m.tokens.record(n, &kv);
                    kv.pop();
                }
            }
        }
        if let Some(model) = verdict.and_then(|v| v.facts.response_model.as_deref()) {
            kv.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, truncated(model)));
        }
        if let Some(e) = error_type {
            kv.push(KeyValue::new(attr::ERROR_TYPE, e));
        }
        kv.push(surface.clone());
        m.duration.record(self.started.elapsed().as_secs_f64(), &kv);
        m.calls.add(
            1,
            &[
                surface.clone(),
                KeyValue::new(attr::STATUS_CLASS, status_class.as_str()),
                KeyValue::new(attr::PARSE_CHECK, parse_check.as_str()),
                KeyValue::new(attr::FALLBACK_DECISION, decision.as_str()),
                KeyValue::new(attr::GEN_AI_PROVIDER_NAME, self.shared.provider.clone()),
            ],
        );
        if let Some(retry) = &self.retry {
            for attempt in &retry.attempts {
                if let Some((_, reason)) = attempt.retry_after {
                    m.retries.add(
                        1,
                        &[
                            surface.clone(),
                            KeyValue::new(attr::RETRY_REASON, reason.as_str()),
                        ],
                    );
                }
            }
            if let Some(stop) = retry.stop_reason().filter(|s| s.is_exhausted()) {
                m.exhausted.add(
                    1,
                    &[
                        surface.clone(),
                        KeyValue::new(attr::RETRY_STOP_REASON, stop.as_str()),
                    ],
                );
            }
        }
        if let Some(waf) = &self.waf {
            m.walls.add(
                1,
                &[
                    surface.clone(),
                    KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()),
                    KeyValue::new(attr::WAF_KIND, waf.kind.as_str()),
                ],
            );
        }
        if let Some(v) = verdict.and_then(|v| v.violation) {
            m.violations.add(
                1,
                &[surface, KeyValue::new(attr::CONTRACT_VIOLATION, v.as_str())],
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

/// Lint findings as span events, a check attribute and a count, and the lint metric.
fn record_findings(shared: &Shared, cx: &Context, findings: &[Finding], phase: Phase) {
    let (check, warnings, event, phase_name) = match phase {
        Phase::Request => (
            attr::REQUEST_CHECK,
            attr::REQUEST_CHECK_WARNINGS,
            "gen_ai.request.lint",
            "request",
        ),
        Phase::Response => (
            attr::RESPONSE_CHECK,
            attr::RESPONSE_CHECK_WARNINGS,
            "gen_ai.response.check",
            "response",
        ),
    };
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        check,
        if findings.is_empty() { "pass" } else { "warn" },
    ));
    span.set_attribute(KeyValue::new(
        warnings,
        i64::try_from(findings.len()).unwrap_or(i64::MAX),
    ));
    for f in findings {
        let kv = [
            KeyValue::new(attr::LINT_RULE, f.rule.as_str()),
            KeyValue::new(attr::LINT_FAMILY, f.family.as_str()),
        ];
        span.add_event(event, kv.to_vec());
        let mut labels = kv.to_vec();
        labels.push(KeyValue::new(attr::LINT_PHASE, phase_name));
        shared.instruments.lint.add(1, &labels);
    }
}

fn truncated(s: &str) -> String {
    request::truncate(s, 128).into_owned()
}

fn verdict_attributes(v: &Verdict, kv: &mut Vec<KeyValue>) {
    if let Some(violation) = v.violation {
        kv.push(KeyValue::new(attr::CONTRACT_VIOLATION, violation.as_str()));
    }
    kv.push(KeyValue::new(
        attr::CONTRACT_WARNINGS,
        i64::from(v.warnings.len()),
    ));
    if let Some(reason) = v.skip_reason {
        kv.push(KeyValue::new(attr::CONTRACT_SKIP_REASON, reason.as_str()));
    }
    let facts = &v.facts;
    if let Some(model) = &facts.response_model {
        kv.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, truncated(model)));
    }
    if let Some(id) = &facts.response_id {
        kv.push(KeyValue::new(attr::GEN_AI_RESPONSE_ID, truncated(id)));
    }
    if !facts.finish_reasons.is_empty() {
        let reasons: Vec<StringValue> = facts
            .finish_reasons
            .iter()
            .take(16)
            .map(|r| StringValue::from(truncated(r)))
            .collect();
        kv.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(reasons)),
        ));
    }
    if let Some(usage) = facts.usage {
        if let Some(n) = usage.input_tokens.and_then(|n| i64::try_from(n).ok()) {
            kv.push(KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, n));
        }
        if let Some(n) = usage.output_tokens.and_then(|n| i64::try_from(n).ok()) {
            kv.push(KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, n));
        }
    }
}

fn waf_attributes(waf: &WafVerdict, kv: &mut Vec<KeyValue>) {
    kv.push(KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()));
    kv.push(KeyValue::new(attr::WAF_KIND, waf.kind.as_str()));
    if let Some(reference) = &waf.reference {
        kv.push(KeyValue::new(attr::WAF_REFERENCE, reference.clone()));
    }
}

#[async_trait::async_trait]
impl Middleware for Telemetry {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let started = Instant::now();
        let surface = *extensions.get_or_insert_with(|| ApiSurface::of_request(&req));
        let family = extensions
            .get::<ProviderFamily>()
            .copied()
            .or(self.shared.family);
        let facts = RequestFacts::of(&req, surface, family);
        let op = operation(surface);
        let name = match &facts.model {
            Some(model) => format!("{op} {model}"),
            None => op.to_owned(),
        };
        let mut kv = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, op),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, self.shared.provider.clone()),
            KeyValue::new(attr::API_SURFACE, surface.as_str()),
            KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(req.method())),
        ];
        if surface != ApiSurface::Other {
            kv.push(KeyValue::new(attr::OPENAI_API_TYPE, surface.as_str()));
        }
        if let Some(model) = &facts.model {
            kv.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()));
        }
        if let Some(address) = &facts.server_address {
            kv.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
        }
        if let Some(port) = facts.server_port {
            kv.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
        }
        if let Some(max) = self.shared.capture {
            extensions.insert(CaptureContent(max));
            if let Some(prompt) = request::prompt(&req, max) {
                kv.push(KeyValue::new(attr::GEN_AI_INPUT_MESSAGES, prompt));
            }
        }
        let parent = parent_context();
        let span = self
            .shared
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(kv)
            .start_with_context(&*self.shared.tracer, &parent);
        let cx = parent.with_span(span);
        record_findings(&self.shared, &cx, &facts.findings, Phase::Request);
        inject(&cx, &mut req);
        extensions.insert(CallContext(cx.clone()));

        let mut result = next.run(req, extensions).await;

        let pending = extensions.remove::<PendingAttempt>();
        let mut end = CallEnd {
            shared: self.shared.clone(),
            cx,
            started,
            surface,
            facts,
            status: None,
            transport: None,
            waf: None,
            retry: extensions.get::<RetryRecord>().cloned(),
            pending,
            streamed: false,
        };
        match &mut result {
            Err(e) => {
                end.transport = Some(TransportErrorKind::of(e));
                let decision = end.finish(None, None);
                extensions.insert(decision);
            }
            Ok(response) => {
                end.status = Some(response.status());
                end.waf = response.extensions().get::<WafVerdict>().cloned();
                if let Some(stream) = response.extensions().get::<StreamVerdict>() {
                    end.streamed = true;
                    let handle = stream.clone();
                    stream.on_verdict(move |v| {
                        end.finish(Some(v), handle.first_chunk_at());
                    });
                } else {
                    let verdict = response.extensions().get::<Verdict>().cloned();
                    let decision = end.finish(verdict.as_ref(), None);
                    // The caller reads it with `Evidence::of`.
                    response.extensions_mut().insert(decision);
                }
            }
        }
        result
    }
}

/// The attempt-level telemetry middleware: one child span per attempt. Get it from
/// [`Telemetry::attempts`] and place it between [`Retry`](crate::retry::Retry) and
/// [`Inspect`](crate::inspect::Inspect).
#[derive(Clone)]
pub struct AttemptTelemetry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AttemptTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptTelemetry").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Middleware for AttemptTelemetry {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // The previous attempt, if any, was retried: the retry layer decided so.
        if let Some(previous) = extensions.remove::<PendingAttempt>() {
            previous.finish(FallbackDecision::Retry, extensions.get::<RetryRecord>());
        }
        let parent = extensions
            .get::<CallContext>()
            .map_or_else(parent_context, |c| c.0.clone());
        let resend = extensions
            .get::<CurrentAttempt>()
            .map_or(0, |a| a.resend_count);
        let surface = *extensions.get_or_insert_with(|| ApiSurface::of_request(&req));
        let url = req.url();
        let mut kv = vec![
            KeyValue::new(attr::HTTP_REQUEST_RESEND_COUNT, i64::from(resend)),
            KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(req.method())),
            KeyValue::new(attr::API_SURFACE, surface.as_str()),
        ];
        if let Some(host) = url.host_str() {
            kv.push(KeyValue::new(attr::SERVER_ADDRESS, host.to_owned()));
        }
        if let Some(port) = url.port_or_known_default() {
            kv.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
        }
        let span = self
            .shared
            .tracer
            .span_builder(method_name(req.method()))
            .with_kind(SpanKind::Client)
            .with_attributes(kv)
            .start_with_context(&*self.shared.tracer, &parent);
        let cx = parent.with_span(span);
        inject(&cx, &mut req);

        let result = next.run(req, extensions).await;

        let span = cx.span();
        let mut kv = Vec::with_capacity(8);
        match &result {
            Ok(response) => {
                let status = response.status();
                kv.push(KeyValue::new(
                    attr::HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status.as_u16()),
                ));
                kv.push(KeyValue::new(
                    attr::STATUS_CLASS,
                    StatusClass::of(status).as_str(),
                ));
                if status.as_u16() >= 400 {
                    kv.push(KeyValue::new(attr::ERROR_TYPE, status.as_u16().to_string()));
                    span.set_status(Status::error(status.as_u16().to_string()));
                }
                if let Some(v) = response.extensions().get::<Verdict>() {
                    kv.push(KeyValue::new(attr::PARSE_CHECK, v.parse_check.as_str()));
                    if let Some(violation) = v.violation {
                        kv.push(KeyValue::new(attr::CONTRACT_VIOLATION, violation.as_str()));
                    }
                }
                if let Some(waf) = response.extensions().get::<WafVerdict>() {
                    waf_attributes(waf, &mut kv);
                }
            }
            Err(e) => {
                let kind = TransportErrorKind::of(e).as_str();
                kv.push(KeyValue::new(
                    attr::STATUS_CLASS,
                    StatusClass::TransportError.as_str(),
                ));
                kv.push(KeyValue::new(attr::ERROR_TYPE, kind));
                span.set_status(Status::error(kind));
            }
        }
        span.set_attributes(kv);
        extensions.insert(PendingAttempt {
            cx,
            ended: SystemTime::now(),
        });
        result
    }
}
