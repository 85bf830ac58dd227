//! What the call layer records of a call: its span (opened when the call starts, ended with the
//! call's evidence) and its metrics. The call layer (`src/call.rs`) decides; this only records
//! the evidence it is handed.

use std::sync::Arc;

use http::Extensions;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use reqwest::Request;
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
use crate::evidence::Evidence;
use crate::evidence::{
    ApiSurface, ParseCheck, SkipReason, TransportErrorKind, Violation, WafVerdict, attr,
};
use crate::extensions::{CallContext, CaptureContent, PendingAttempt, put};
use crate::lint::{self, ModelFamily, Returned};

/// What the call layer hands the recorder when the call ends: the evidence, and the facts it
/// was decided from.
pub(crate) struct Ended<'a> {
    pub(crate) evidence: &'a Evidence,
    pub(crate) verdict: Option<&'a ContractVerdict>,
    pub(crate) status: Option<http::StatusCode>,
    pub(crate) transport: Option<TransportErrorKind>,
    pub(crate) waf: Option<&'a WafVerdict>,
    /// What the layers below recorded: every leg, its attempts, the failover record.
    pub(crate) log: &'a CallLog,
    /// A stream's first chunk.
    pub(crate) first_chunk: Option<Instant>,
    pub(crate) cancelled: bool,
}

/// One call's span and what its metrics need, from its start to its end.
pub(crate) struct Recording {
    shared: Arc<Shared>,
    cx: Context,
    started: Instant,
    surface: ApiSurface,
    facts: RequestFacts,
    /// The attempt layer's slot for the last attempt's span.
    pending: Arc<std::sync::Mutex<Option<PendingAttempt>>>,
    /// The URL the call was sent to, to tell a followed redirect.
    sent_to: reqwest::Url,
    /// The host the caller addressed, once a layer below sent the call elsewhere (the host of
    /// a leg that kept the caller's URL).
    caller_host: Option<String>,
    streamed: bool,
    /// The host a followed redirect led to.
    redirected_to: Option<String>,
}

impl Recording {
    /// Records the ended call on its span and in the metrics, and ends the span.
    pub(crate) fn finish(&mut self, call: &Ended<'_>) {
        // A stream's end (its last chunk), for the time per output chunk.
        let ended = call.first_chunk.map(|_| Instant::now());
        let error = error_type(call.status, call.transport, call.verdict, call.cancelled);
        let ttfc = call
            .first_chunk
            .map(|t| t.saturating_duration_since(self.started).as_secs_f64());
        let tpoc = call
            .first_chunk
            .zip(ended)
            .zip(call.verdict)
            .filter(|(_, v)| stream_ran_to_its_end(v))
            .and_then(|((first, last), v)| {
                super::metrics::time_per_output_chunk(first, last, v.facts.events)
            });
        self.record_span(call, error.clone(), ttfc);
        self.record_metrics(call, error, (ttfc, tpoc));
    }

    fn record_span(
        &mut self,
        call: &Ended<'_>,
        error: Option<std::borrow::Cow<'static, str>>,
        ttfc: Option<f64>,
    ) {
        let (evidence, verdict) = (call.evidence, call.verdict);
        let span = self.cx.span();
        let flavor = self.flavor();
        let operation = self.facts.operation;
        let mut kv = Vec::with_capacity(32);
        if self.shared.retargets {
            // Known only now: the target that answered.
            target_attributes(&self.facts, self.surface, flavor, &mut kv);
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
        if let Some(failover) = &call.log.failover {
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
        if let Some(status) = call.status {
            kv.push(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(e) = &error {
            kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
        }
        if let Some(v) = verdict
            && v.is_pass()
            && call.status.is_some_and(|s| s.is_success())
            && self.surface != ApiSurface::Other
        {
            let returned = Returned {
                choices: v.facts.choices,
                streamed: self.streamed,
                model: v.facts.response_model.as_deref(),
                tool_calls: v.facts.tool_calls,
            };
            let found = lint::cross_check_summary(
                &self.facts.asked,
                self.surface,
                self.facts.family,
                &returned,
            );
            findings::record(&self.shared, &self.cx, &found, Phase::Response);
        }
        if let Some(v) = verdict {
            // The conventions: no token usage for `fetch_response`, which runs no model.
            let usage = operation.is_some_and(Operation::is_inference);
            verdict_attributes(v, self.streamed, usage, flavor, &mut kv);
            if let Some(text) = &v.facts.output_text
                && model_answered(call, v, text)
            {
                kv.push(KeyValue::new(
                    attr::GEN_AI_OUTPUT_MESSAGES,
                    output_messages(text, v, self.streamed, flavor),
                ));
            }
        }
        if let Some(waf) = call.waf {
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
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(pending) = pending {
            let retry = call.log.last().and_then(|l| l.retry.as_ref());
            pending.finish(evidence.fallback_decision, retry);
        }
        span.end();
    }

    /// The call's flavour: its provider's, and the conventions'.
    fn flavor(&self) -> Flavor {
        self.shared.flavor(&self.facts)
    }

    fn record_metrics(
        &self,
        call: &Ended<'_>,
        error: Option<std::borrow::Cow<'static, str>>,
        (ttfc, tpoc): (Option<f64>, Option<f64>),
    ) {
        let facts = &self.facts;
        super::metrics::record_call(
            self.shared.instruments(),
            &super::metrics::CallRecord {
                operation: facts.operation,
                provider: &facts.provider,
                openai: self.flavor().openai,
                model: facts.model.as_ref(),
                server: (facts.server_address.as_ref(), facts.server_port),
                evidence: call.evidence,
                verdict: call.verdict,
                log: call.log,
                caller_host: self.caller_host.as_deref(),
                error,
                ttfc,
                tpoc,
                duration: self.started.elapsed().as_secs_f64(),
            },
        );
    }
}

impl Telemetry {
    /// Opens the call span when this layer records (else `None`), injects the trace context
    /// into the request and leaves the attempt layer its context.
    pub(crate) fn recording(
        &self,
        req: &mut Request,
        surface: ApiSurface,
        extensions: &mut Extensions,
    ) -> Option<Recording> {
        let shared = &self.shared;
        if !shared.export {
            return None;
        }
        let started = Instant::now();
        let (cx, facts) = start_span(shared, req, surface, extensions);
        inject(&cx, req);
        let pending = Arc::new(std::sync::Mutex::new(None));
        put(
            extensions,
            CallContext {
                cx: cx.clone(),
                tracer: shared.tracer_arc(),
                pending: pending.clone(),
            },
        );
        Some(Recording {
            shared: shared.clone(),
            cx,
            started,
            surface,
            facts,
            pending,
            sent_to: req.url().clone(),
            caller_host: None,
            streamed: false,
            redirected_to: None,
        })
    }
}

impl Recording {
    /// Where the call went, once the layers below are done: the last leg's target when one
    /// moved it (after a hop: never the URL the caller wrote), and the URL a response came
    /// from (a followed redirect, when it is not where the call was sent).
    pub(crate) fn went(
        &mut self,
        target: Option<&reqwest::Url>,
        answered_from: Option<&reqwest::Url>,
    ) {
        if let Some(url) = target {
            self.facts.retarget(url, self.shared.provider.as_ref());
            self.caller_host = self.sent_to.host_str().map(str::to_owned);
            self.sent_to = url.clone();
        }
        if let Some(at) = answered_from
            && (at.host_str() != self.sent_to.host_str()
                || at.path() != self.sent_to.path()
                || at.port_or_known_default() != self.sent_to.port_or_known_default())
        {
            self.redirected_to = at.host_str().map(str::to_owned);
        }
    }

    /// The call's answer is a stream (its span ends when the stream does).
    pub(crate) fn streamed(&mut self) {
        self.streamed = true;
    }
}

/// Whether captured text is an answer the model gave: a success, no wall, no API error, and
/// text, or a body that kept its contract. A 429, a wall or an HTML page is not.
fn model_answered(call: &Ended<'_>, v: &ContractVerdict, text: &str) -> bool {
    call.status.is_some_and(|s| s.is_success())
        && call.waf.is_none()
        && v.api_error.is_none()
        && (!text.is_empty() || v.is_pass())
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
