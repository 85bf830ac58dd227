//! The call layer's middleware (the [`Telemetry`] layer's work): it owns the call. It writes the
//! call's scope once for every layer below (start, deadline, budget, policy), decides the call
//! when it ends with the one policy (an answer, a stream at its end, a transport error, a
//! cancelled call), and leaves the [`Evidence`]. Recording that evidence on the call span and
//! in the metrics is the telemetry recorder's (`telemetry::Recording`), handed the evidence
//! decided here: telemetry decides nothing, and with it off the call is decided all the same.

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::evidence::{
    ApiSurface, CallFacts, CallLog, ContractVerdict, DecisionPolicy, EvidenceHandle, SkipReason,
    TransportErrorKind, VerdictHandle, WafVerdict,
};
use crate::extensions::{CallContext, CallScope, put, put_default};
use crate::telemetry::{Ended, Recording, Telemetry};

/// Everything the call's end needs, moved into the stream callback when the call streams.
/// Dropped without being finished (the caller dropped the call's future, or a stream's
/// verdict never came), it finishes the call as cancelled.
struct CallEnd {
    policy: Arc<dyn DecisionPolicy>,
    handle: EvidenceHandle,
    surface: ApiSurface,
    status: Option<http::StatusCode>,
    transport: Option<TransportErrorKind>,
    waf: Option<WafVerdict>,
    /// The call; its log is taken when the layers below are done (or when the call is
    /// cancelled under them).
    scope: CallScope,
    /// What the layers below recorded: every leg, its attempts, the failover record.
    log: Option<CallLog>,
    /// The span and the metrics, when the layer records them.
    recording: Option<Recording>,
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
    /// Decides the call, leaves its evidence, and hands it to the recorder.
    fn finish(
        &mut self,
        verdict: Option<&ContractVerdict>,
        first_chunk: Option<Instant>,
        cancelled: bool,
    ) {
        self.done = true;
        let log = if let Some(log) = self.log.take() {
            log
        } else {
            // Cancelled while the layers below ran: what they did so far.
            let log = self.scope.take_log();
            if let Some(recording) = &mut self.recording {
                recording.went(log.last().and_then(|l| l.url.as_ref()), None);
            }
            log
        };
        let cancelled =
            cancelled || verdict.is_some_and(|v| v.skip_reason == Some(SkipReason::Cancelled));
        let evidence = CallFacts {
            surface: self.surface,
            status: self.status,
            transport_error: self.transport,
            verdict,
            waf: self.waf.as_ref(),
            log: Some(&log),
            cancelled,
        }
        .decide(&*self.policy);
        if let Some(recording) = &mut self.recording {
            recording.finish(&Ended {
                evidence: &evidence,
                verdict,
                status: self.status,
                transport: self.transport,
                waf: self.waf.as_ref(),
                log: &log,
                first_chunk,
                cancelled,
            });
        }
        self.handle.complete(evidence);
        self.log = Some(log);
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
        // A guard inside another guard's call: the outer call layer owns the call. (A scope
        // a retry or failover layer used alone started above is theirs: this call layer still
        // owns its call, and gives theirs back when it ends.)
        let outer = extensions.get::<CallScope>().cloned();
        if outer.as_ref().is_some_and(|s| s.by_call_layer) {
            return next.run(req, extensions).await;
        }
        let (policy, bounds) = self.call_settings();
        let handle = extensions
            .get::<EvidenceHandle>()
            .cloned()
            .unwrap_or_default();
        // For `Evidence::of` on a stream not read to its end yet.
        handle.set_policy(policy.clone());
        put(extensions, handle.clone());
        // The call, written once here and read by every layer below.
        let scope = CallScope::start(bounds, policy.clone(), true);
        put(extensions, scope.clone());
        let surface = *put_default(extensions, || ApiSurface::of_request(&req));
        let recording = self.recording(&mut req, surface, extensions);
        let mut end = CallEnd {
            policy,
            handle: handle.clone(),
            surface,
            status: None,
            transport: None,
            waf: None,
            scope: scope.clone(),
            log: None,
            recording,
            done: false,
        };

        let result = next.run(req, extensions).await;

        // The call is over for the layers below: this layer started it, and ends it.
        extensions.remove::<CallScope>();
        extensions.remove::<CallContext>();
        if let Some(outer) = outer {
            put(extensions, outer);
        }
        let log = scope.take_log();
        // Where the call went: the last leg's target when a layer below moved it, else the
        // URL the caller wrote.
        if let Some(recording) = &mut end.recording {
            let target = log.last().and_then(|l| l.url.as_ref());
            recording.went(target, result.as_ref().ok().map(Response::url));
        }
        end.log = Some(log);
        match result {
            Err(e) => {
                end.transport = Some(TransportErrorKind::of(&e));
                end.finish(None, None, false);
                Err(crate::redact::error(e))
            }
            Ok(response) => {
                let mut response = crate::redact::response(response);
                end.status = Some(response.status());
                end.waf = response.extensions().get::<WafVerdict>().cloned();
                put(response.extensions_mut(), handle);
                if let Some(stream) = response.extensions().get::<VerdictHandle>() {
                    if let Some(recording) = &mut end.recording {
                        recording.streamed();
                    }
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
