//! The attempt layer: one child span per attempt, under the call span.

use std::sync::Arc;
use std::time::SystemTime;

use http::Extensions;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::Shared;
use super::attributes::{method_name, waf_attributes};
use super::propagation::{inject, parent_context};
use crate::contract::ContractVerdict;
use crate::evidence::RetryRecord;
use crate::evidence::{
    ApiSurface, FallbackDecision, StatusClass, TransportErrorKind, WafVerdict, attr,
};
use crate::extensions::CallScope;
use crate::extensions::{CallContext, CurrentAttempt, PendingAttempt, put, put_default};

impl PendingAttempt {
    /// Ends the attempt's span with the decision about it (and, when retried, the wait).
    pub(super) fn finish(self, decision: FallbackDecision, retry: Option<&RetryRecord>) {
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

/// The attempt-level telemetry middleware: one child span per attempt. Get it from
/// [`Telemetry::attempt_layer`](super::Telemetry::attempt_layer) and place it between
/// [`Retry`](crate::retry::Retry) and [`Inspect`](crate::inspect::Inspect);
/// [`Guard`](crate::Guard) does.
#[derive(Clone)]
pub struct AttemptTelemetry {
    /// Used only outside a call layer; inside one, that layer's settings are.
    own: Arc<Shared>,
}

impl std::fmt::Debug for AttemptTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptTelemetry").finish_non_exhaustive()
    }
}

impl AttemptTelemetry {
    pub(super) fn new(own: Arc<Shared>) -> Self {
        Self { own }
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
        // Inside a call layer that records spans: its span and tracer. Outside one: this
        // layer's own settings, and its own slot for the attempt left open.
        let call = if let Some(call) = extensions.get::<CallContext>() {
            call.clone()
        } else {
            if !self.own.export {
                return next.run(req, extensions).await;
            }
            let call = CallContext {
                cx: parent_context(),
                tracer: self.own.tracer_arc(),
                pending: Arc::default(),
            };
            put(extensions, call.clone());
            call
        };
        let parent = call.cx.clone();
        let resend = extensions
            .get::<CurrentAttempt>()
            .map_or(0, |a| a.resend_count);
        // The previous attempt, if any, was retried (the retry layer decided so) or, when this
        // is a first attempt, left for another upstream (the failover layer did).
        let previous = call
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(previous) = previous {
            if resend == 0 {
                previous.finish(FallbackDecision::Fallback, None);
            } else {
                previous.finish(FallbackDecision::Retry, extensions.get::<RetryRecord>());
            }
        }
        let surface = *put_default(extensions, || ApiSurface::of_request(&req));
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
        if let Some(upstream) = extensions
            .get::<CallScope>()
            .and_then(CallScope::current_upstream)
        {
            kv.push(KeyValue::new(
                attr::FAILOVER_UPSTREAM,
                opentelemetry::StringValue::from(upstream),
            ));
        }
        let tracer = &*call.tracer;
        let span = tracer
            .span_builder(method_name(req.method()))
            .with_kind(SpanKind::Client)
            .with_attributes(kv)
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        inject(&cx, &mut req);

        let result = next.run(req, extensions).await;

        cx.span().set_attributes(attempt_attributes(&cx, &result));
        *call
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(PendingAttempt {
            cx,
            ended: SystemTime::now(),
        });
        result
    }
}

/// What the attempt got: status, class, verdict, wall, or the transport error.
fn attempt_attributes(
    cx: &Context,
    result: &reqwest_middleware::Result<Response>,
) -> Vec<KeyValue> {
    let span = cx.span();
    let mut kv = Vec::with_capacity(8);
    match result {
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
            if let Some(v) = response.extensions().get::<ContractVerdict>() {
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
    kv
}
