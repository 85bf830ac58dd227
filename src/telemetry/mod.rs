//! Telemetry: the call layer (decision, evidence, call span, metrics) and the attempt spans;
//! nothing secret.
//!
//! Two layers:
//!
//! - [`Telemetry`], outermost: the call layer. It decides every call with one
//!   [`DecisionPolicy`] (JSON answers, streams at their end, transport errors, cancelled calls),
//!   leaves the [`Evidence`](crate::Evidence) in an [`EvidenceHandle`](crate::EvidenceHandle),
//!   and records the call span `{gen_ai.operation.name} {gen_ai.request.model}` (kind client)
//!   covering every attempt, with the same decision on it, and the metrics. A streaming call's
//!   span stays open until the stream ends, fails or is dropped; it then records `parse_check`,
//!   the finish reasons, token usage and the time to first chunk. A call the caller cancels
//!   (its future dropped) still ends its span, with `parse_check=skipped`,
//!   `contract.skip_reason=cancelled` and a decision, and is counted.
//! - [`AttemptTelemetry`], between [`Retry`](crate::retry::Retry) and
//!   [`Inspect`](crate::inspect::Inspect): one child span per attempt with
//!   `http.request.resend_count`, the attempt's status and verdict, and `fallback_decision=retry`
//!   on every attempt that was retried (with the wait and its reason). Inside a call layer it
//!   takes that layer's tracer and settings, so the two are always in step.
//!
//! This crate speaks the `opentelemetry` API 0.33 (with `opentelemetry_sdk` 0.33 and
//! `tracing-opentelemetry` 0.34): install a pipeline of those versions. The global tracer and
//! meter providers are read when the first call is made, not when the layer is built, so a
//! layer built before the pipeline is installed still exports.
//!
//! Spans are made with the `opentelemetry` API (measured cheaper than `tracing` spans bridged
//! through `tracing-opentelemetry`; BENCHMARKS.md has the figures). Their parent is the caller's
//! current `tracing` span when the `tracing-opentelemetry` layer is installed, else
//! OpenTelemetry's current context. `traceparent` (and whatever else the global propagator
//! carries) is injected into each outgoing attempt: set a propagator with
//! `opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())`.
//!
//! A guard nested in another guard's call (the same client wrapped twice) records nothing of
//! its own: the outer call layer records the call.
//!
//! # What is never recorded
//!
//! No header (so no `Authorization`, `api-key`, `x-api-key` or cookie), no URL (only
//! `server.address` and `server.port`: no userinfo, path or query, so no `?key=`), no request
//! or response body, and no API error message (it may quote the request). Prompt and completion
//! text are recorded only after [`Telemetry::with_content_capture`], truncated.
//! Model names and response ids are cut at 128 characters. Transport errors handed back to the
//! caller carry the request's URL without its userinfo and with its query values replaced.
//!
//! # Attributes
//!
//! On the call span: `gen_ai.operation.name` (`chat`), `gen_ai.provider.name`,
//! `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.response.id`,
//! `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `openai.api.type`, `server.address`, `server.port`, `http.request.method`,
//! `http.response.status_code`, `error.type`, and the evidence: `api_surface`, `status_class`,
//! `parse_check`, `fallback_decision`, `retry_count`, `retry.stop_reason`,
//! `contract.violation`, `contract.warnings`, `contract.skip_reason`, `waf.vendor`,
//! `waf.kind`, `waf.reference`, plus `gen_ai.response.time_to_first_chunk` on streams. The
//! names are in [`evidence::attr`](crate::evidence::attr).

mod attempt;
mod attributes;
mod call;
mod findings;
mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod propagation;
mod request;

pub use attempt::AttemptTelemetry;
pub use metrics::{DURATION_BUCKETS, TOKEN_BUCKETS, name as metric};

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::{InstrumentationScope, StringValue, global};

use crate::evidence::{DecisionPolicy, DecisionTable};
use crate::lint::ModelFamily;
use metrics::Instruments;

const SCOPE: &str = "reqwest-llm-guard";

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The settings of a call layer and its attempt layer.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Set by `with_tracer_provider`, else the global provider's, taken at the first call.
    tracer: OnceLock<Arc<global::BoxedTracer>>,
    /// Likewise for metrics.
    instruments: OnceLock<Instruments>,
    provider: StringValue,
    policy: Arc<dyn DecisionPolicy>,
    capture: Option<usize>,
    family: Option<ModelFamily>,
    /// Spans and metrics on; off, the layer still decides and leaves the evidence.
    export: bool,
}

impl Shared {
    fn tracer(&self) -> &global::BoxedTracer {
        self.tracer
            .get_or_init(|| Arc::new(global::tracer_with_scope(scope())))
    }

    fn instruments(&self) -> &Instruments {
        self.instruments
            .get_or_init(|| Instruments::new(&global::meter_with_scope(scope())))
    }
}

/// The call layer: decision, evidence, call span and metrics. See the [module docs](self).
///
/// Defaults: the global tracer and meter providers (read at the first call), provider name
/// `openai`, the default [`DecisionTable`].
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
            .field("export", &self.shared.export)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The layer on the global tracer and meter providers.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tracer: OnceLock::new(),
                instruments: OnceLock::new(),
                provider: StringValue::from("openai"),
                policy: Arc::new(DecisionTable::default()),
                capture: None,
                family: None,
                export: true,
            }),
        }
    }

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
        self.edit(|s| s.tracer = OnceLock::from(Arc::new(tracer)))
    }

    /// Metrics go to this provider instead of the global one.
    #[must_use]
    pub fn with_meter_provider(
        self,
        provider: &impl opentelemetry::metrics::MeterProvider,
    ) -> Self {
        let instruments = Instruments::new(&provider.meter_with_scope(scope()));
        self.edit(|s| s.instruments = OnceLock::from(instruments))
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

    /// The policy that decides `fallback_decision` for every call (default:
    /// [`DecisionTable::default`]). [`Guard::with_decision_policy`](crate::Guard::with_decision_policy)
    /// sets it for the whole stack.
    #[must_use]
    pub fn with_decision_policy(self, policy: impl DecisionPolicy) -> Self {
        self.with_decision_policy_arc(Arc::new(policy))
    }

    pub(crate) fn with_decision_policy_arc(self, policy: Arc<dyn DecisionPolicy>) -> Self {
        self.edit(|s| s.policy = policy)
    }

    /// No spans and no metrics: the layer only decides and leaves the evidence.
    pub(crate) fn without_export(self) -> Self {
        self.edit(|s| s.export = false)
    }

    /// Records prompt and completion text, each cut at `max_chars` characters: the request's
    /// `messages` (or Responses `input`) as `gen_ai.input.messages` and the completion's text
    /// as `gen_ai.output.messages`, on the call span. Off by default: prompts and completions
    /// are often personal data, and may hold secrets.
    #[must_use]
    pub fn with_content_capture(self, max_chars: usize) -> Self {
        self.edit(|s| s.capture = Some(max_chars))
    }

    /// The model family the request lint assumes for every call of this client (default:
    /// from each request's model name). A request can set its own by carrying a
    /// [`ModelFamily`] in its extensions.
    #[must_use]
    pub fn with_model_family(self, family: ModelFamily) -> Self {
        self.edit(|s| s.family = Some(family))
    }

    /// The attempt layer that goes with this one, between the retry and inspect layers. Inside
    /// this call layer it uses this layer's settings as they are when the call runs; alone, its
    /// own copy of them.
    pub fn attempt_layer(&self) -> AttemptTelemetry {
        AttemptTelemetry::new(self.shared.clone())
    }
}
