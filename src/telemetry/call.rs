//! The call layer's middleware: one decision, one span and one set of metrics per call.

use std::sync::Arc;

use http::Extensions;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use super::attributes::{
    Flavor, Operation, error_type, method_name, output_messages, verdict_attributes, waf_attributes,
};
use super::findings::{self, Phase};
use super::propagation::{inject, parent_context};
use super::request::{self, RequestFacts, request_attributes};
use super::{Shared, Telemetry};
use crate::contract::ContractVerdict;
use crate::evidence::CallLog;
use crate::evidence::{
    ApiSurface, ParseCheck, SkipReason, TransportErrorKind, Violation, WafVerdict, attr,
};
use crate::evidence::{CallFacts, Evidence, EvidenceHandle};
use crate::extensions::{CallContext, CallScope, CaptureContent, PendingAttempt, put, put_default};
use crate::inspect::VerdictHandle;
use crate::lint::{self, ModelFamily, Returned};

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
    /// What the layers below recorded: every leg, its attempts, the failover record.
    log: CallLog,
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
        // A stream's end (its last chunk), for the time per output chunk.
        let ended = first_chunk.map(|_| Instant::now());
        let cancelled =
            cancelled || verdict.is_some_and(|v| v.skip_reason == Some(SkipReason::Cancelled));
        let facts = CallFacts {
            surface: self.surface,
            status: self.status,
            transport_error: self.transport,
            verdict,
            waf: self.waf.as_ref(),
            log: Some(&self.log),
            cancelled,
        };
        let evidence = facts.decide(&*self.shared.policy);
        if self.shared.export {
            let error = error_type(self.status, self.transport, verdict, cancelled);
            let ttfc = first_chunk.map(|t| t.saturating_duration_since(self.started).as_secs_f64());
            let tpoc = first_chunk
                .zip(ended)
                .zip(verdict)
                .filter(|(_, v)| stream_ran_to_its_end(v))
                .and_then(|((first, last), v)| {
                    super::metrics::time_per_output_chunk(first, last, v.facts.events)
                });
            self.record_span(&evidence, verdict, error.clone(), ttfc);
            self.record_metrics(&evidence, verdict, error, (ttfc, tpoc));
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
        let flavor = self.flavor();
        let operation = self.facts.as_ref().and_then(|f| f.operation);
        let mut kv = Vec::with_capacity(32);
        if self.shared.retargets
            && let Some(facts) = &self.facts
        {
            // Known only now: the target that answered.
            target_attributes(facts, self.surface, flavor, &mut kv);
        }
        kv.push(KeyValue::new(
            attr::STATUS_CLASS,
            evidence.status_class.as_str(),
        ));
        kv.push(KeyValue::new(
            attr::PARSE_CHECK,
            evidence
                .parse_check
                .map_or(ParseCheck::Skipped.as_str(), ParseCheck::as_str),
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
        if let Some(failover) = &self.log.failover {
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
            if let Some(on) = failover.continued_on() {
                kv.push(KeyValue::new(attr::FAILOVER_CONTINUED_ON, on.to_owned()));
            }
            for passed in &failover.passed_over {
                span.add_event(
                    attr::EVENT_FAILOVER_PASSED_OVER,
                    vec![
                        KeyValue::new(
                            attr::FAILOVER_UPSTREAM,
                            opentelemetry::StringValue::from(passed.upstream.clone()),
                        ),
                        KeyValue::new(attr::FAILOVER_REASON, passed.reason.as_str()),
                    ],
                );
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
            // The conventions: no token usage for `fetch_response`, which runs no model.
            let usage = operation.is_some_and(Operation::is_inference);
            verdict_attributes(v, self.streamed, usage, flavor, &mut kv);
            if let Some(text) = &v.facts.output_text
                && self.model_answered(v, text)
            {
                kv.push(KeyValue::new(
                    attr::GEN_AI_OUTPUT_MESSAGES,
                    output_messages(text, v, self.streamed, flavor),
                ));
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
            let retry = self.log.last().and_then(|l| l.retry.as_ref());
            pending.finish(evidence.fallback_decision, retry);
        }
        span.end();
    }

    /// Whether captured text is an answer the model gave: a success, no wall, no API error,
    /// and text, or a body that kept its contract. A 429, a wall or an HTML page is not.
    fn model_answered(&self, v: &ContractVerdict, text: &str) -> bool {
        self.status.is_some_and(|s| s.is_success())
            && self.waf.is_none()
            && v.api_error.is_none()
            && (!text.is_empty() || v.is_pass())
    }

    /// The call's flavour: its provider's, and the conventions'.
    fn flavor(&self) -> Flavor {
        self.facts
            .as_ref()
            .map(|f| self.shared.flavor(f))
            .unwrap_or_default()
    }

    fn record_metrics(
        &self,
        evidence: &Evidence,
        verdict: Option<&ContractVerdict>,
        error: Option<std::borrow::Cow<'static, str>>,
        (ttfc, tpoc): (Option<f64>, Option<f64>),
    ) {
        let Some(facts) = &self.facts else { return };
        super::metrics::record_call(
            self.shared.instruments(),
            &super::metrics::CallRecord {
                operation: facts.operation,
                provider: &facts.provider,
                openai: self.flavor().openai,
                model: facts.model.as_ref(),
                server: (facts.server_address.as_ref(), facts.server_port),
                evidence,
                verdict,
                log: &self.log,
                error,
                ttfc,
                tpoc,
                duration: self.started.elapsed().as_secs_f64(),
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
        if extensions.get::<CallScope>().is_some() {
            // A guard inside another guard's call: the outer call layer records the call.
            return next.run(req, extensions).await;
        }
        let shared = self.shared.clone();
        let started = Instant::now();
        let handle = extensions
            .get::<EvidenceHandle>()
            .cloned()
            .unwrap_or_default();
        // For `Evidence::of` on a stream not read to its end yet.
        handle.set_policy(shared.policy.clone());
        put(extensions, handle.clone());
        // The call, written once here and read by every layer below.
        let scope = CallScope::start(shared.bounds.clone(), shared.policy.clone());
        put(extensions, scope.clone());
        let surface = *put_default(extensions, || ApiSurface::of_request(&req));
        // To tell a followed redirect: reqwest follows them inside `send`.
        let sent_to = shared.export.then(|| req.url().clone());
        let pending = Arc::new(std::sync::Mutex::new(None));
        let (cx, facts) = if shared.export {
            let (cx, facts) = start_span(&shared, &req, surface, extensions);
            inject(&cx, &mut req);
            put(
                extensions,
                CallContext {
                    cx: cx.clone(),
                    tracer: shared.tracer_arc(),
                    pending: pending.clone(),
                },
            );
            (Some(cx), Some(facts))
        } else {
            (None, None)
        };
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
            log: CallLog::default(),
            pending: None,
            streamed: false,
            redirected_to: None,
            done: false,
        };

        let result = next.run(req, extensions).await;

        // The call is over for the layers below: this layer started it, and ends it.
        extensions.remove::<CallScope>();
        extensions.remove::<CallContext>();
        end.pending = pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        end.log = scope.take_log();
        // Where the call went: the last leg's target when a layer below moved it, else the
        // URL the caller wrote.
        let target = end.log.last().and_then(|l| l.url.clone());
        if let (Some(url), Some(facts)) = (&target, &mut end.facts) {
            facts.retarget(url, end.shared.provider.as_ref());
        }
        let sent_to = target.or(sent_to);
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
                put(response.extensions_mut(), handle);
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

/// Whether a stream's verdict came at its end, so the moment it came is its last chunk's: not
/// when the caller dropped it or the connection broke off.
fn stream_ran_to_its_end(v: &ContractVerdict) -> bool {
    v.skip_reason != Some(SkipReason::Cancelled) && !v.violation.is_some_and(Violation::is_cut_off)
}

/// What depends on the target the call goes to: the provider and what it decides, the server,
/// and the request's parameters (some named for the provider).
fn target_attributes(
    facts: &RequestFacts,
    surface: ApiSurface,
    flavor: Flavor,
    kv: &mut Vec<KeyValue>,
) {
    kv.push(KeyValue::new(
        attr::GEN_AI_PROVIDER_NAME,
        facts.provider.clone(),
    ));
    if flavor.openai {
        kv.push(KeyValue::new(attr::OPENAI_API_TYPE, surface.as_str()));
    }
    if let Some(address) = &facts.server_address {
        kv.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
    }
    if let Some(port) = facts.server_port {
        kv.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
    }
    if facts.operation == Some(Operation::Chat) {
        request_attributes(&facts.params, flavor, kv);
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
    let facts = RequestFacts::of(req, surface, family, shared.provider.as_ref());
    let flavor = shared.flavor(&facts);
    let method = method_name(req.method());
    // A GenAI span is `{operation} {model}`; any other call's follows the HTTP conventions.
    let name = match (facts.operation, &facts.model) {
        (Some(op), Some(model)) => format!("{} {model}", op.as_str()),
        (Some(op), None) => op.as_str().to_owned(),
        (None, _) => method.clone().into_owned(),
    };
    let mut kv = Vec::with_capacity(24);
    if let Some(op) = facts.operation {
        kv.push(KeyValue::new(attr::GEN_AI_OPERATION_NAME, op.as_str()));
    }
    kv.push(KeyValue::new(attr::API_SURFACE, surface.as_str()));
    kv.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, method));
    if let Some(model) = &facts.model {
        kv.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()));
    }
    if !shared.retargets {
        // Where the call goes is where the caller sent it: known now, for samplers.
        target_attributes(&facts, surface, flavor, &mut kv);
    }
    if let Some(max) = shared.capture
        && facts.operation.is_some()
    {
        put(extensions, CaptureContent(max));
        if let Some(body) = req.body().and_then(reqwest::Body::as_bytes) {
            let prompt = request::prompt(body, surface, max);
            if let Some(messages) = prompt.messages {
                kv.push(KeyValue::new(attr::GEN_AI_INPUT_MESSAGES, messages));
            }
            if let Some(system) = prompt.system_instructions {
                kv.push(KeyValue::new(attr::GEN_AI_SYSTEM_INSTRUCTIONS, system));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_cut_off_in_any_way_did_not_run_to_its_end() {
        for cut in [
            Violation::BodyReadError,
            Violation::BodyTimeout,
            Violation::BodyStalled,
        ] {
            assert!(
                !stream_ran_to_its_end(&ContractVerdict::failed(cut)),
                "{cut}"
            );
        }
        assert!(stream_ran_to_its_end(&ContractVerdict::passed()));
        assert!(stream_ran_to_its_end(&ContractVerdict::failed(
            Violation::StreamTruncated
        )));
    }
}
