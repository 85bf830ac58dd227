//! The call layer's middleware: one decision, one span and one set of metrics per call.

use std::sync::Arc;

use http::Extensions;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use super::attempt::PendingAttempt;
use super::attributes::{error_type, method_name, operation, verdict_attributes, waf_attributes};
use super::findings::{self, Phase};
use super::propagation::{inject, parent_context};
use super::request::{self, RequestFacts};
use super::{Shared, Telemetry};
use crate::contract::ContractVerdict;
use crate::evidence::{ApiSurface, TransportErrorKind, WafVerdict, attr};
use crate::extensions::{CallActive, CaptureContent};
use crate::failover::FailoverRecord;
use crate::guard::{CallFacts, Evidence, EvidenceHandle};
use crate::inspect::VerdictHandle;
use crate::lint::{self, ModelFamily, Returned};
use crate::retry::RetryRecord;

/// The call span's context and the call layer's settings, for the attempt layer.
#[derive(Clone)]
pub(crate) struct CallContext {
    pub(crate) cx: Context,
    pub(crate) shared: Arc<Shared>,
}

/// Everything the call's end needs, moved into the stream callback when the call streams.
/// Dropped without being finished (the caller dropped the call's future, or a stream's
/// verdict never came), it finishes the call as cancelled.
struct CallEnd {
    shared: Arc<Shared>,
    handle: EvidenceHandle,
    /// The call span, when spans are on.
    cx: Option<Context>,
    started: Instant,
    surface: ApiSurface,
    facts: Option<RequestFacts>,
    status: Option<http::StatusCode>,
    transport: Option<TransportErrorKind>,
    waf: Option<WafVerdict>,
    retry: Option<RetryRecord>,
    failover: Option<FailoverRecord>,
    pending: Option<PendingAttempt>,
    streamed: bool,
    /// The host a followed redirect led to.
    redirected_to: Option<String>,
    done: bool,
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None, None, true);
        }
    }
}

impl CallEnd {
    /// Decides the call, leaves its evidence, records it on its span and in the metrics, and
    /// ends the span.
    fn finish(
        &mut self,
        verdict: Option<&ContractVerdict>,
        first_chunk: Option<Instant>,
        cancelled: bool,
    ) {
        self.done = true;
        let cancelled = cancelled
            || verdict
                .is_some_and(|v| v.skip_reason == Some(crate::evidence::SkipReason::Cancelled));
        let facts = CallFacts {
            surface: self.surface,
            status: self.status,
            transport_error: self.transport,
            verdict,
            waf: self.waf.as_ref(),
            retry: self.retry.as_ref(),
            cancelled,
            failover: self.failover.as_ref(),
        };
        let evidence = facts.decide(&*self.shared.policy);
        if self.shared.export {
            let error = error_type(self.status, self.transport, verdict, cancelled);
            let ttfc = first_chunk.map(|t| t.saturating_duration_since(self.started).as_secs_f64());
            self.record_span(&evidence, verdict, error.clone(), ttfc);
            self.record_metrics(&evidence, verdict, error, ttfc);
        }
        self.handle.complete(evidence);
    }

    fn record_span(
        &mut self,
        evidence: &Evidence,
        verdict: Option<&ContractVerdict>,
        error: Option<std::borrow::Cow<'static, str>>,
        ttfc: Option<f64>,
    ) {
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        let mut kv = Vec::with_capacity(24);
        kv.push(KeyValue::new(
            attr::STATUS_CLASS,
            evidence.status_class.as_str(),
        ));
        kv.push(KeyValue::new(
            attr::PARSE_CHECK,
            evidence
                .parse_check
                .map_or(crate::evidence::ParseCheck::Skipped.as_str(), |p| {
                    p.as_str()
                }),
        ));
        kv.push(KeyValue::new(
            attr::FALLBACK_DECISION,
            evidence.fallback_decision.as_str(),
        ));
        kv.push(KeyValue::new(
            attr::RETRY_COUNT,
            i64::from(evidence.retry_count),
        ));
        if let Some(stop) = evidence.retry_stop_reason {
            kv.push(KeyValue::new(attr::RETRY_STOP_REASON, stop.as_str()));
        }
        if let Some(failover) = &self.failover {
            if let Some(upstream) = evidence.upstream.clone() {
                kv.push(KeyValue::new(
                    attr::FAILOVER_UPSTREAM,
                    opentelemetry::StringValue::from(upstream),
                ));
            }
            kv.push(KeyValue::new(attr::FAILOVER_HOPS, i64::from(evidence.hops)));
            if let Some(stop) = failover.stop {
                kv.push(KeyValue::new(attr::FAILOVER_STOP_REASON, stop.as_str()));
            }
            for hop in &failover.hops {
                span.add_event(
                    attr::EVENT_FAILOVER_HOP,
                    vec![
                        KeyValue::new(
                            attr::FAILOVER_FROM,
                            opentelemetry::StringValue::from(hop.from.clone()),
                        ),
                        KeyValue::new(
                            attr::FAILOVER_TO,
                            opentelemetry::StringValue::from(hop.to.clone()),
                        ),
                        KeyValue::new(attr::FAILOVER_REASON, hop.reason.as_str()),
                    ],
                );
            }
        }
        if let Some(reason) = evidence.skip_reason {
            kv.push(KeyValue::new(attr::CONTRACT_SKIP_REASON, reason.as_str()));
        }
        if let Some(status) = self.status {
            kv.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(e) = &error {
            kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
        }
        if let (Some(v), Some(facts)) = (verdict, &self.facts)
            && v.is_pass()
            && self.status.is_some_and(|s| s.is_success())
            && self.surface != ApiSurface::Other
        {
            let returned = Returned {
                choices: v.facts.choices,
                streamed: self.streamed,
                model: v.facts.response_model.as_deref(),
                tool_calls: v.facts.tool_calls,
            };
            let found =
                lint::cross_check_summary(&facts.asked, self.surface, facts.family, &returned);
            findings::record(&self.shared, cx, &found, Phase::Response);
        }
        if let Some(v) = verdict {
            verdict_attributes(v, self.streamed, &mut kv);
            if let Some(text) = &v.facts.output_text {
                kv.push(KeyValue::new(attr::GEN_AI_OUTPUT_MESSAGES, text.clone()));
            }
        }
        if let Some(waf) = &self.waf {
            waf_attributes(waf, &mut kv);
        }
        if let Some(host) = self.redirected_to.take() {
            kv.push(KeyValue::new(attr::REDIRECT_FOLLOWED, true));
            kv.push(KeyValue::new(attr::REDIRECT_SERVER_ADDRESS, host));
        }
        if let Some(ttfc) = ttfc {
            kv.push(KeyValue::new(
                attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                ttfc,
            ));
        }
        span.set_attributes(kv);
        if let Some(e) = error {
            span.set_status(Status::error(e));
        }
        if let Some(pending) = self.pending.take() {
            pending.finish(evidence.fallback_decision, self.retry.as_ref());
        }
        span.end();
    }

    fn record_metrics(
        &self,
        evidence: &Evidence,
        verdict: Option<&ContractVerdict>,
        error: Option<std::borrow::Cow<'static, str>>,
        ttfc: Option<f64>,
    ) {
        let Some(facts) = &self.facts else { return };
        super::metrics::record_call(
            self.shared.instruments(),
            &super::metrics::CallRecord {
                operation: operation(self.surface),
                provider: &self.shared.provider,
                model: facts.model.as_ref(),
                server: (facts.server_address.as_ref(), facts.server_port),
                evidence,
                verdict,
                retry: self.retry.as_ref(),
                error,
                ttfc,
                duration: self.started.elapsed().as_secs_f64(),
                failover: self.failover.as_ref(),
            },
        );
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
        if extensions.get::<CallActive>().is_some() {
            // A guard inside another guard's call: the outer call layer records the call.
            return next.run(req, extensions).await;
        }
        let shared = self.shared.clone();
        let started = Instant::now();
        let handle = extensions
            .get::<EvidenceHandle>()
            .cloned()
            .unwrap_or_default();
        handle.set_policy(shared.policy.clone());
        // The failover layer inside decides each hop with the same policy.
        extensions.insert(handle.clone());
        let surface = *extensions.get_or_insert_with(|| ApiSurface::of_request(&req));
        // To tell a followed redirect: reqwest follows them inside `send`.
        let sent_to = shared.export.then(|| req.url().clone());
        let (cx, facts) = if shared.export {
            let (cx, facts) = start_span(&shared, &req, surface, extensions);
            inject(&cx, &mut req);
            extensions.insert(CallContext {
                cx: cx.clone(),
                shared: shared.clone(),
            });
            (Some(cx), Some(facts))
        } else {
            (None, None)
        };
        extensions.insert(CallActive);
        let mut end = CallEnd {
            shared,
            handle: handle.clone(),
            cx,
            started,
            surface,
            facts,
            status: None,
            transport: None,
            waf: None,
            retry: None,
            failover: None,
            pending: None,
            streamed: false,
            redirected_to: None,
            done: false,
        };

        let result = next.run(req, extensions).await;

        extensions.remove::<CallActive>();
        end.pending = extensions.remove::<PendingAttempt>();
        end.retry = extensions.get::<RetryRecord>().cloned();
        end.failover = extensions.get::<FailoverRecord>().cloned();
        match result {
            Err(e) => {
                end.transport = Some(TransportErrorKind::of(&e));
                end.finish(None, None, false);
                Err(crate::redact::error(e))
            }
            Ok(response) => {
                if let Some(sent) = &sent_to
                    && (response.url().host_str() != sent.host_str()
                        || response.url().path() != sent.path()
                        || response.url().port_or_known_default() != sent.port_or_known_default())
                {
                    end.redirected_to = response.url().host_str().map(str::to_owned);
                }
                let mut response = crate::redact::response(response);
                end.status = Some(response.status());
                end.waf = response.extensions().get::<WafVerdict>().cloned();
                response.extensions_mut().insert(handle);
                if let Some(stream) = response.extensions().get::<VerdictHandle>() {
                    end.streamed = true;
                    let first_chunk = stream.clone();
                    stream.on_verdict(move |v| {
                        end.finish(Some(v), first_chunk.first_chunk_at(), false);
                    });
                } else {
                    let verdict = response.extensions().get::<ContractVerdict>();
                    end.finish(verdict, None, false);
                }
                Ok(response)
            }
        }
    }
}

/// Opens the call span with what the request says, and records the request lint on it.
fn start_span(
    shared: &Shared,
    req: &Request,
    surface: ApiSurface,
    extensions: &mut Extensions,
) -> (Context, RequestFacts) {
    let family = extensions.get::<ModelFamily>().copied().or(shared.family);
    let facts = RequestFacts::of(req, surface, family);
    let op = operation(surface);
    let name = match &facts.model {
        Some(model) => format!("{op} {model}"),
        None => op.to_owned(),
    };
    let mut kv = vec![
        KeyValue::new(attr::GEN_AI_OPERATION_NAME, op),
        KeyValue::new(attr::GEN_AI_PROVIDER_NAME, shared.provider.clone()),
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
    if let Some(max) = shared.capture {
        extensions.insert(CaptureContent(max));
        if let Some(prompt) = request::prompt(req, max) {
            kv.push(KeyValue::new(attr::GEN_AI_INPUT_MESSAGES, prompt));
        }
    }
    let parent = parent_context();
    let tracer = shared.tracer();
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(kv)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    findings::record(shared, &cx, &facts.findings, Phase::Request);
    (cx, facts)
}
