//! Metric names, in one place. In Prometheus (through the OpenTelemetry Collector) dots become
//! underscores, units are appended to histograms (`_seconds`) and counters end in `_total`.
//!
//! # Which names, in which mode
//!
//! The GenAI instruments follow the conventions' last release (v1.41) by default, and the
//! GenAI repository's current names when `OTEL_SEMCONV_STABILITY_OPT_IN` holds
//! `gen_ai_latest_experimental` (read when the instruments are first made: at the first
//! call) or after
//! [`Telemetry::with_latest_genai_conventions`](crate::telemetry::Telemetry::with_latest_genai_conventions).
//! Each default name, and what takes its place:
//!
//! - [`OPERATION_DURATION`] becomes [`INFERENCE_DURATION`] for `chat`; `fetch_response`,
//!   which is no inference, keeps [`OPERATION_DURATION`];
//! - [`TIME_TO_FIRST_CHUNK`] becomes [`INFERENCE_TIME_TO_FIRST_CHUNK`];
//! - [`TIME_PER_OUTPUT_CHUNK`] becomes [`INFERENCE_TIME_PER_OUTPUT_CHUNK`];
//! - [`TOKEN_USAGE`] (a histogram by `gen_ai.token.type` = `input` | `output`) becomes the
//!   counters [`INFERENCE_USAGE_INPUT_TOKENS`], [`INFERENCE_USAGE_OUTPUT_TOKENS`],
//!   [`INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS`], [`INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS`],
//!   [`INFERENCE_USAGE_REASONING_OUTPUT_TOKENS`] (by `gen_ai.token.modality` = `unknown`),
//!   and the histograms [`INFERENCE_OPERATION_INPUT_TOKENS`],
//!   [`INFERENCE_OPERATION_OUTPUT_TOKENS`].
//!
//! v1.41 has no metric for cached or reasoning tokens (`gen_ai.token.type` is `input` or
//! `output`, and cached tokens are part of the input): by default they are on the call span
//! only. The `llm_guard.*` instruments are the same in both modes.
//!
//! # Attributes and their cardinality
//!
//! The GenAI instruments carry `gen_ai.operation.name` (`chat`, `fetch_response`),
//! `gen_ai.provider.name` (one per host: the known providers' names, else `openai`, or the one
//! set with `with_provider_name`), `gen_ai.request.model` (as the caller sent it, cut at 128
//! characters: as many as the models the application asks for), `gen_ai.response.model` (as
//! many as the models that answer, cut likewise), `server.address` and `server.port` (the
//! configured base URLs' hosts), and, with provider `openai`, `openai.response.service_tier` on
//! the duration and token instruments (a handful of tiers). The duration instruments add
//! `error.type` (a transport error kind, a status code or a violation: closed sets) and
//! `api_surface` (2 values here).
//! Calls that are no GenAI operation (`api_surface=other`) are not recorded in them.
//!
//! The evidence counters ([`CALLS`], [`RETRIES`], [`RETRIES_EXHAUSTED`], [`WAF_WALLS`],
//! [`CONTRACT_VIOLATIONS`]) all carry `api_surface` (3 values), `server.address` (the host
//! the caller's request names: bounded by the base URLs the application uses),
//! `gen_ai.provider.name` (one per host, as above) and, when the failover layer ran,
//! `failover.upstream` (the upstream that answered, or whose failure was handed back: one of
//! the configured names), plus each its own closed set below. No instrument carries an id, a
//! URL path or free text.

/// Histogram, `s`: the call, from the request to the last byte (of the stream, too), with
/// `error.type` and `api_surface`. Default conventions: every GenAI call; latest:
/// `fetch_response` only.
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// Histogram, `{token}`, with `gen_ai.token.type` = `input` | `output` (default conventions
/// only).
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Histogram, `s`: streaming `chat` calls only, from the request to the first body bytes
/// (default conventions).
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
/// Histogram, `s`: streaming `chat` calls only, the time per output chunk after the first
/// (default conventions). One value per stream: the time from its first to its last chunk
/// divided by the chunks (SSE events) after the first, so a stream's mean gap, not each
/// gap (that would read the clock in the body's path for every chunk). Not recorded for a
/// stream that was cancelled or broke off, or had fewer than two chunks.
pub const TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.operation.time_per_output_chunk";
/// Histogram, `s`: [`OPERATION_DURATION`] for `chat` calls, by its latest name.
pub const INFERENCE_DURATION: &str = "gen_ai.client.inference.duration";
/// Histogram, `s`: [`TIME_TO_FIRST_CHUNK`] by its latest name.
pub const INFERENCE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.inference.time_to_first_chunk";
/// Histogram, `s`: [`TIME_PER_OUTPUT_CHUNK`] by its latest name.
pub const INFERENCE_TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.inference.time_per_output_chunk";
/// Counter, `{token}`: input tokens, cached ones included (latest conventions). Like the
/// other usage counters, with `gen_ai.token.modality` = `unknown` (the APIs report totals,
/// not per modality) and added for every `chat` call, failed ones too (0 when the answer
/// reported no usage), as the conventions ask.
pub const INFERENCE_USAGE_INPUT_TOKENS: &str = "gen_ai.client.inference.usage.input_tokens";
/// Counter, `{token}`: output tokens, reasoning ones included (latest conventions).
pub const INFERENCE_USAGE_OUTPUT_TOKENS: &str = "gen_ai.client.inference.usage.output_tokens";
/// Counter, `{token}`: input tokens read from the provider's prompt cache (latest
/// conventions).
pub const INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS: &str =
    "gen_ai.client.inference.usage.cache_read.input_tokens";
/// Counter, `{token}`: input tokens written to the provider's prompt cache (latest
/// conventions).
pub const INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS: &str =
    "gen_ai.client.inference.usage.cache_write.input_tokens";
/// Counter, `{token}`: output tokens spent on reasoning (latest conventions).
pub const INFERENCE_USAGE_REASONING_OUTPUT_TOKENS: &str =
    "gen_ai.client.inference.usage.reasoning.output_tokens";
/// Histogram, `{token}`: input tokens per `chat` call, with `error.type` (latest
/// conventions; 0 when the answer reported no usage).
pub const INFERENCE_OPERATION_INPUT_TOKENS: &str = "gen_ai.client.inference.operation.input_tokens";
/// Histogram, `{token}`: output tokens per `chat` call, with `error.type` (latest
/// conventions).
pub const INFERENCE_OPERATION_OUTPUT_TOKENS: &str =
    "gen_ai.client.inference.operation.output_tokens";
/// Counter, `{call}`: every call, by `status_class` (7 values), `parse_check` (3),
/// `fallback_decision` (`none`, `fallback`, `hold`), and the evidence counters' common
/// attributes (above).
pub const CALLS: &str = "llm_guard.calls";
/// Counter, `{retry}`: retries made, on every upstream a call went to (those made before a
/// hop included), by `retry.wait_reason` (3 values) and the common attributes.
pub const RETRIES: &str = "llm_guard.retries";
/// Counter, `{call}`: calls whose retries ran out (once for each upstream they ran out on),
/// by `retry.stop_reason`
/// (`attempts_exhausted`, `deadline`, `budget_exhausted`, `retry_after_over_cap`) and the
/// common attributes.
pub const RETRIES_EXHAUSTED: &str = "llm_guard.retries.exhausted";
/// Counter, `{wall}`: WAF and bot walls, by `waf.vendor` (the vendor table's names),
/// `waf.kind` (4 values) and the common attributes.
pub const WAF_WALLS: &str = "llm_guard.waf.walls";
/// Counter, `{violation}`: hard contract violations, by `contract.violation` (the closed
/// violation set) and the common attributes.
pub const CONTRACT_VIOLATIONS: &str = "llm_guard.contract.violations";
/// Counter, `{finding}`: request-lint and cross-check findings, by `lint.rule`,
/// `lint.family`, `lint.phase` (`request` | `response`).
pub const LINT_FINDINGS: &str = "llm_guard.lint.findings";
/// Counter, `{hop}`: moves from one upstream to the next, by `failover.from`,
/// `failover.to`, `failover.reason`, `api_surface` (upstream names are the configured
/// ones: bounded).
pub const FAILOVER_HOPS: &str = "llm_guard.failover.hops";
/// Gauge, `{breaker}`: 1 for each upstream's current breaker state, 0 for the others, by
/// `failover.upstream` and `breaker.state` (`closed`, `open`, `half_open`).
pub const BREAKER_STATE: &str = "llm_guard.breaker.state";
/// Counter, `{transition}`: breaker state changes, by `failover.upstream`.
pub const BREAKER_TRANSITIONS: &str = "llm_guard.breaker.transitions";

/// The instrumentation scope every span and metric of this crate is made under.
pub(crate) fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("reqwest-llm-guard")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
