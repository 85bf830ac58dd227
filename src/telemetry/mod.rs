//! Telemetry: the call layer (decision, evidence, call span, metrics) and the attempt spans;
//! nothing secret.
//!
//! Two layers:
//!
//! - [`Telemetry`], outermost: the call layer. It decides every call with one
//!   [`DecisionPolicy`] (JSON answers, streams at their end, transport errors, cancelled calls),
//!   leaves the [`Evidence`](crate::Evidence) in an [`EvidenceHandle`](crate::EvidenceHandle),
//!   and records the call span `{gen_ai.operation.name} {gen_ai.request.model}` (kind client;
//!   `{method}` for a call that is no GenAI operation) covering every attempt, with the same
//!   decision on it, and the metrics. A streaming call's
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
//! The names are in [`evidence::attr`](crate::evidence::attr). On the call span, set when it
//! starts: `gen_ai.operation.name` (`chat` for a request that runs the model, `fetch_response`
//! for a `GET` of a stored response; absent on calls that are no GenAI operation, whose span is
//! then named `{method}` as the HTTP conventions name client spans), `gen_ai.provider.name`
//! (from the host, see [`Telemetry::with_provider_name`]), `gen_ai.request.model`,
//! `server.address`, `server.port`, `http.request.method`, `api_surface`, and for `chat` the
//! request's parameters: `gen_ai.request.stream`, `gen_ai.request.max_tokens`,
//! `gen_ai.request.temperature`, `gen_ai.request.top_p`, `gen_ai.request.top_k`,
//! `gen_ai.request.frequency_penalty`, `gen_ai.request.presence_penalty`,
//! `gen_ai.request.stop_sequences`, `gen_ai.request.seed`, `gen_ai.request.choice.count`
//! (when not 1), `gen_ai.request.reasoning.level`, `gen_ai.request.previous_response.id`,
//! `gen_ai.conversation.id`, `gen_ai.output.type`. Never a message's text.
//!
//! At its end: `gen_ai.response.model`, `gen_ai.response.id`, `gen_ai.response.finish_reasons`
//! (`error` at the end for a stream that broke off), `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `gen_ai.usage.cache_read.input_tokens`, the cache writes
//! (`gen_ai.usage.cache_creation.input_tokens`, or `gen_ai.usage.cache_write.input_tokens`
//! under the latest conventions), `gen_ai.usage.reasoning.output_tokens` (token usage on `chat`
//! only), `gen_ai.response.time_to_first_chunk` on streams, `http.response.status_code`,
//! `error.type`, and the evidence: `api_surface`, `status_class`, `parse_check`,
//! `fallback_decision`, `retry_count`, `retry.stop_reason`, `contract.violation`,
//! `contract.warnings`, `contract.skip_reason`, `waf.vendor`, `waf.kind`, `waf.reference`,
//! `failover.*` when the failover layer ran.
//!
//! With provider `openai` only (the conventions make the provider name a discriminator):
//! `openai.api.type`, `openai.request.service_tier`, `openai.response.service_tier`,
//! `openai.response.system_fingerprint`.
//!
//! With [`Telemetry::with_content_capture`] only: `gen_ai.input.messages`,
//! `gen_ai.system_instructions` (Responses `instructions`) and `gen_ai.output.messages`, as the
//! conventions' JSON (messages of `role` and `parts`), their text cut.
//!
//! This crate's own names stay off the conventions' namespaces (`gen_ai.`, `http.`, `openai.`):
//! its span events are `llm_guard.*`, and the `http.*` names are the HTTP conventions' own.
//!
//! # Metrics
//!
//! The GenAI instruments take v1.41's names by default, and the GenAI repository's current
//! `gen_ai.client.inference.*` names when `OTEL_SEMCONV_STABILITY_OPT_IN` holds
//! `gen_ai_latest_experimental` (read at the first call) or after
//! [`Telemetry::with_latest_genai_conventions`]. The [`metric`] module lists every name with its
//! kind, unit and attributes, which names each mode emits, and what bounds each attribute's
//! values.

mod attempt;
mod attributes;
mod findings;
mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod propagation;
mod record;
mod request;

pub use crate::evidence::metric;
pub use attempt::AttemptTelemetry;
pub use metrics::{DURATION_BUCKETS, TOKEN_BUCKETS};
pub(crate) use record::{Ended, Recording};

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::metrics::Meter;
use opentelemetry::{StringValue, global};

use crate::evidence::{DecisionPolicy, DecisionTable};
use crate::extensions::CallBounds;
use crate::lint::ModelFamily;
use attributes::Flavor;
use metrics::{Conventions, Instruments};

/// The environment variable that moves instrumentations to newer semantic conventions: a
/// comma-separated list of opt-ins.
pub const OTEL_SEMCONV_STABILITY_OPT_IN: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";

/// The opt-in, in [`OTEL_SEMCONV_STABILITY_OPT_IN`], to the GenAI conventions' current names.
pub const GEN_AI_LATEST_EXPERIMENTAL: &str = "gen_ai_latest_experimental";

pub(crate) use crate::evidence::metric::scope;

/// The settings of a call layer and its attempt layer.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Set by `with_tracer_provider`, else the global provider's, taken at the first call.
    tracer: OnceLock<Arc<global::BoxedTracer>>,
    /// Set by `with_meter_provider`, else the global provider's, taken at the first call.
    meter: Option<Meter>,
    /// Made at the first call, once the conventions are known.
    instruments: OnceLock<Instruments>,
    /// Set by `with_latest_genai_conventions`, else read from the environment at the first
    /// call.
    conventions: OnceLock<Conventions>,
    /// Set by `with_provider_name`; else each call's host decides.
    provider: Option<StringValue>,
    policy: Arc<dyn DecisionPolicy>,
    /// The call settings: deadline and budget of every retry and hop.
    bounds: CallBounds,
    /// A failover layer runs below: the target is known when the call ends, not before.
    retargets: bool,
    capture: Option<usize>,
    family: Option<ModelFamily>,
    /// Spans and metrics on; off, the layer still decides and leaves the evidence.
    export: bool,
}

impl Shared {
    fn tracer(&self) -> &global::BoxedTracer {
        self.tracer_arc_ref()
    }

    fn tracer_arc_ref(&self) -> &Arc<global::BoxedTracer> {
        self.tracer
            .get_or_init(|| Arc::new(global::tracer_with_scope(scope())))
    }

    /// The tracer, shared with the attempt layer.
    fn tracer_arc(&self) -> Arc<global::BoxedTracer> {
        self.tracer_arc_ref().clone()
    }

    fn conventions(&self) -> Conventions {
        *self.conventions.get_or_init(Conventions::from_env)
    }

    fn instruments(&self) -> &Instruments {
        self.instruments.get_or_init(|| {
            let conventions = self.conventions();
            match &self.meter {
                Some(meter) => Instruments::new(meter, conventions),
                None => Instruments::new(&global::meter_with_scope(scope()), conventions),
            }
        })
    }

    /// How a call's attributes are spelled: the `openai.*` ones only on a GenAI operation whose
    /// provider is `openai`.
    fn flavor(&self, facts: &request::RequestFacts) -> Flavor {
        Flavor {
            openai: facts.operation.is_some() && facts.provider.as_str() == "openai",
            latest: self.conventions() == Conventions::Latest,
        }
    }
}

/// The call layer: decision, evidence, call span and metrics. See the [module docs](self).
///
/// Defaults: the global tracer and meter providers (read at the first call), the provider name
/// from each call's host, the conventions' v1.41 metric names unless
/// `OTEL_SEMCONV_STABILITY_OPT_IN` opts in to the latest, no content recorded, the default
/// [`DecisionTable`].
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
                meter: None,
                instruments: OnceLock::new(),
                conventions: OnceLock::new(),
                provider: None,
                policy: Arc::new(DecisionTable::default()),
                bounds: CallBounds::default(),
                retargets: false,
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
        let meter = provider.meter_with_scope(scope());
        self.edit(|s| {
            s.meter = Some(meter);
            s.instruments = OnceLock::new();
        })
    }

    /// The GenAI conventions' current names for the metrics (`gen_ai.client.inference.*`) and
    /// for the renamed span attributes, as
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` asks, whatever the environment
    /// says. The [`metric`] module lists the names of each mode.
    #[must_use]
    pub fn with_latest_genai_conventions(self) -> Self {
        self.edit(|s| {
            s.conventions = OnceLock::from(Conventions::Latest);
            s.instruments = OnceLock::new();
        })
    }

    /// `gen_ai.provider.name` for every call, instead of the one its host gives.
    ///
    /// By default the host decides: `api.openai.com` is `openai`, `*.openai.azure.com` and
    /// `*.cognitiveservices.azure.com` `azure.ai.openai`, `models.inference.ai.azure.com`
    /// `azure.ai.inference`, `api.groq.com` `groq`, `api.deepseek.com` `deepseek`,
    /// `openrouter.ai` `openrouter`, `api.anthropic.com` `anthropic`, `api.mistral.ai`
    /// `mistral_ai`, `api.x.ai` `x_ai`, `generativelanguage.googleapis.com` `gcp.gemini`,
    /// `*aiplatform.googleapis.com` `gcp.vertex_ai`, `api.perplexity.ai` `perplexity`,
    /// `api.cohere.ai` and `api.cohere.com` `cohere`, `api.moonshot.ai` and `api.moonshot.cn`
    /// `moonshot_ai`, `bedrock-runtime.*.amazonaws.com` and `bedrock-mantle.*.api.aws`
    /// `aws.bedrock`, `*.ml.cloud.ibm.com` `ibm.watsonx.ai`, `*.cometapi.com` `cometapi`; any
    /// other host (a self-hosted server, a gateway of your own) `openai`, the API it speaks.
    /// The `openai.*` attributes are recorded only when the name is `openai`.
    #[must_use]
    pub fn with_provider_name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = match name.into() {
            Cow::Borrowed(s) => StringValue::from(s),
            Cow::Owned(s) => StringValue::from(Arc::<str>::from(s)),
        };
        self.edit(|s| s.provider = Some(name))
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

    /// The call's settings: the decision policy, and the bounds every retry and hop is held to.
    pub(crate) fn call_settings(&self) -> (Arc<dyn DecisionPolicy>, CallBounds) {
        (self.shared.policy.clone(), self.shared.bounds.clone())
    }

    /// The call settings (deadline, budget) every retry and hop of a call is bounded by.
    pub(crate) fn with_bounds(self, bounds: CallBounds) -> Self {
        self.edit(|s| s.bounds = bounds)
    }

    /// A failover layer runs below: `server.*` and the provider are recorded when the call
    /// ends, for the target that answered.
    pub(crate) fn retargeting(self) -> Self {
        self.edit(|s| s.retargets = true)
    }

    /// No spans and no metrics: the layer only decides and leaves the evidence.
    pub(crate) fn without_export(self) -> Self {
        self.edit(|s| s.export = false)
    }

    /// Records prompt and completion on the call span, as the conventions' JSON (messages of
    /// `role` and `parts`): the request's `messages` (or Responses `input`) as
    /// `gen_ai.input.messages`, Responses `instructions` as `gen_ai.system_instructions`, and the
    /// completion's text as `gen_ai.output.messages`. Each attribute's texts hold at most
    /// `max_chars` characters together: the text is cut (with `…`), never the JSON, and
    /// messages past the cut are left out. Parts that are not text (images, audio, files) are
    /// recorded by their type only; the completion's tool calls are not recorded. Off by
    /// default: prompts and completions are often personal data, and may hold secrets.
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
