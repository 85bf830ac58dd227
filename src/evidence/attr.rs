//! Attribute and event names, in one place.
//!
//! The first group is this crate's evidence vocabulary, with exactly these names; the second
//! group is the OpenTelemetry semantic conventions' names for GenAI and HTTP clients, written out
//! here because the `opentelemetry-semantic-conventions` crate marks the GenAI ones deprecated
//! (they moved to the GenAI conventions repository) while the names themselves stand.

/// [`ApiSurface`](super::ApiSurface): `chat_completions`, `responses`, `other`.
pub const API_SURFACE: &str = "api_surface";
/// [`StatusClass`](super::StatusClass): `1xx` … `5xx`, `transport_error`.
pub const STATUS_CLASS: &str = "status_class";
/// [`ParseCheck`](super::ParseCheck): `pass`, `fail`, `skipped`.
pub const PARSE_CHECK: &str = "parse_check";
/// [`FallbackDecision`](super::FallbackDecision): `none`, `retry`, `fallback`, `hold`.
pub const FALLBACK_DECISION: &str = "fallback_decision";
/// Retries made for the call (0 when the first attempt stood).
pub const RETRY_COUNT: &str = "retry_count";
/// The first hard [`Violation`](super::Violation).
pub const CONTRACT_VIOLATION: &str = "contract.violation";
/// Count of distinct tolerated deviations ([`Warnings::len`](super::Warnings::len)).
pub const CONTRACT_WARNINGS: &str = "contract.warnings";
/// Why the body was not checked ([`SkipReason`](super::SkipReason)).
pub const CONTRACT_SKIP_REASON: &str = "contract.skip_reason";
/// On a retried attempt span: the wait before the next attempt, in seconds.
pub const RETRY_WAIT: &str = "retry.wait";
/// On a retried attempt span and the retries metric: why that wait
/// ([`WaitReason`](crate::retry::WaitReason): `backoff`, `retry_after`, `retry_after_ms`).
pub const RETRY_WAIT_REASON: &str = "retry.wait_reason";
/// Why the retry layer stopped ([`StopReason`](crate::retry::StopReason)): on the call span,
/// and on the exhausted-retries metric.
pub const RETRY_STOP_REASON: &str = "retry.stop_reason";
/// `pass` or `warn`: the request lint ([`lint`](crate::lint)) on the call span.
pub const REQUEST_CHECK: &str = "request_check";
/// How many request-lint findings.
pub const REQUEST_CHECK_WARNINGS: &str = "request_check.warnings";
/// `pass` or `warn`: the request/response cross-checks on the call span (2xx answers that kept
/// their contract only).
pub const RESPONSE_CHECK: &str = "response_check";
/// How many cross-check findings.
pub const RESPONSE_CHECK_WARNINGS: &str = "response_check.warnings";
/// On a lint finding's span event and metric: the rule ([`LintRule`](crate::lint::LintRule)).
pub const LINT_RULE: &str = "lint.rule";
/// On a lint finding's span event and metric: the provider family.
pub const LINT_FAMILY: &str = "lint.family";
/// On the lint metric: `request` or `response`.
pub const LINT_PHASE: &str = "lint.phase";
/// `true` on the call span when the client followed a redirect: the answer came from elsewhere.
pub const REDIRECT_FOLLOWED: &str = "redirect.followed";
/// The host the redirect led to (never its path's query or userinfo).
pub const REDIRECT_SERVER_ADDRESS: &str = "redirect.server_address";
/// The upstream an attempt went to (attempt spans), or that answered (the call span): the
/// failover layer's upstream name.
pub const FAILOVER_UPSTREAM: &str = "failover.upstream";
/// Moves from one upstream to the next during the call (call span; 0 when the first stood).
pub const FAILOVER_HOPS: &str = "failover.hops";
/// The upstream that continued a Chat stream cut after its commit point (call span).
pub const FAILOVER_CONTINUED_ON: &str = "failover.continued_on";
/// Why the failover layer stopped where it did ([`FailoverStop`](crate::failover::FailoverStop)).
pub const FAILOVER_STOP_REASON: &str = "failover.stop_reason";
/// On a hop event: the upstream left.
pub const FAILOVER_FROM: &str = "failover.from";
/// On a hop event: the upstream tried next.
pub const FAILOVER_TO: &str = "failover.to";
/// On a hop event: why ([`HopReason`](crate::failover::HopReason)).
pub const FAILOVER_REASON: &str = "failover.reason";
/// An upstream's breaker state (`closed`, `open`, `half_open`), on the breaker metrics.
pub const BREAKER_STATE: &str = "breaker.state";
/// The span event of one move to another upstream (with [`FAILOVER_FROM`], [`FAILOVER_TO`],
/// [`FAILOVER_REASON`]).
pub const EVENT_FAILOVER_HOP: &str = "llm_guard.failover_hop";
/// The span event of an upstream passed over without a request (with [`FAILOVER_UPSTREAM`]
/// and [`FAILOVER_REASON`]: `credential_unresolved`, `credential_invalid`, `unaddressable`).
pub const EVENT_FAILOVER_PASSED_OVER: &str = "llm_guard.failover_passed_over";
/// The span event of one request-lint finding (with [`LINT_RULE`] and [`LINT_FAMILY`]).
pub const EVENT_REQUEST_CHECK: &str = "llm_guard.request_check";
/// The span event of one request/response cross-check finding.
pub const EVENT_RESPONSE_CHECK: &str = "llm_guard.response_check";
/// The WAF or bot-wall vendor (`cloudflare`, `aws`, `akamai`, …).
pub const WAF_VENDOR: &str = "waf.vendor";
/// `block`, `challenge` or `suspected`.
pub const WAF_KIND: &str = "waf.kind";
/// The reference support asks for: Cloudflare Ray ID, Akamai Reference #, F5 support ID, …
pub const WAF_REFERENCE: &str = "waf.reference";

/// `chat` (a Chat Completions or Responses request that runs the model) or `fetch_response` (a
/// `GET` of a stored response); absent on calls that are not GenAI operations.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// Who serves the API, from the host (`openai`, `azure.ai.openai`, `groq`, `openrouter`, …) or
/// [`Telemetry::with_provider_name`](crate::telemetry::Telemetry::with_provider_name). The
/// conventions' discriminator: the `openai.*` attributes appear only with `openai`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The model the request asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// Whether the request asked for a stream (`stream`).
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
/// The output token limit asked for (Chat `max_completion_tokens` or `max_tokens`, Responses
/// `max_output_tokens`).
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `temperature`.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `top_p`.
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `top_k` (an integer; sent to some OpenAI-compatible providers).
pub const GEN_AI_REQUEST_TOP_K: &str = "gen_ai.request.top_k";
/// `frequency_penalty`.
pub const GEN_AI_REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
/// `presence_penalty`.
pub const GEN_AI_REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
/// `stop`, as an array (at most 4, each cut at 128 characters).
pub const GEN_AI_REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
/// `seed`.
pub const GEN_AI_REQUEST_SEED: &str = "gen_ai.request.seed";
/// `n`, when it is not 1.
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
/// The reasoning effort asked for (Chat `reasoning_effort`, Responses `reasoning.effort`).
pub const GEN_AI_REQUEST_REASONING_LEVEL: &str = "gen_ai.request.reasoning.level";
/// Responses `previous_response_id`.
pub const GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID: &str = "gen_ai.request.previous_response.id";
/// Responses `conversation` (its id).
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// `json` or `text`, from Chat `response_format.type` or Responses `text.format.type`.
pub const GEN_AI_OUTPUT_TYPE: &str = "gen_ai.output.type";
/// The model that answered.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// The response's id (`chatcmpl-…`, `resp_…`).
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// Finish reasons, one per choice.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `input` or `output`, on the token-usage metric (the default conventions).
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// `unknown` (the APIs do not break their totals down by modality), on the
/// `gen_ai.client.inference.usage.*` counters (the latest conventions).
pub const GEN_AI_TOKEN_MODALITY: &str = "gen_ai.token.modality";
/// Seconds from the request to the first body bytes of a stream.
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// The prompt, only with content capture on: the conventions' messages JSON (`role` and
/// `parts`), its text cut.
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// Responses `instructions`, only with content capture on: the conventions' parts JSON, its text
/// cut.
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
/// The completion, only with content capture on: the conventions' messages JSON, its text cut.
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// Input (prompt) tokens.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Output (completion) tokens.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// Input tokens read from the provider's prompt cache (part of the input tokens).
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// Input tokens written to the provider's prompt cache, by its v1.41 name (the default
/// conventions).
pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
/// Input tokens written to the provider's prompt cache, by its current name (the latest
/// conventions, `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`).
pub const GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: &str = "gen_ai.usage.cache_write.input_tokens";
/// Output tokens spent on reasoning (part of the output tokens).
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
/// `chat_completions` or `responses` (provider `openai` only).
pub const OPENAI_API_TYPE: &str = "openai.api.type";
/// The service tier asked for (`service_tier`; provider `openai` only).
pub const OPENAI_REQUEST_SERVICE_TIER: &str = "openai.request.service_tier";
/// The service tier that served the request (provider `openai` only).
pub const OPENAI_RESPONSE_SERVICE_TIER: &str = "openai.response.service_tier";
/// The backend configuration that answered (Chat `system_fingerprint`; provider `openai` only).
pub const OPENAI_RESPONSE_SYSTEM_FINGERPRINT: &str = "openai.response.system_fingerprint";
/// The class of error: `timeout`, `connect`, a status code, a violation.
pub const ERROR_TYPE: &str = "error.type";
/// The server's host name.
pub const SERVER_ADDRESS: &str = "server.address";
/// The server's port.
pub const SERVER_PORT: &str = "server.port";
/// `GET`, `POST`, …
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// The response status code.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// How many times this request was re-sent (attempt spans; 0 on the first attempt).
pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate's own names, which must stay off the namespaces the conventions own.
    const OWN: &[&str] = &[
        API_SURFACE,
        STATUS_CLASS,
        PARSE_CHECK,
        FALLBACK_DECISION,
        RETRY_COUNT,
        CONTRACT_VIOLATION,
        CONTRACT_WARNINGS,
        CONTRACT_SKIP_REASON,
        RETRY_WAIT,
        RETRY_WAIT_REASON,
        RETRY_STOP_REASON,
        REQUEST_CHECK,
        REQUEST_CHECK_WARNINGS,
        RESPONSE_CHECK,
        RESPONSE_CHECK_WARNINGS,
        LINT_RULE,
        LINT_FAMILY,
        LINT_PHASE,
        REDIRECT_FOLLOWED,
        REDIRECT_SERVER_ADDRESS,
        FAILOVER_UPSTREAM,
        FAILOVER_HOPS,
        FAILOVER_STOP_REASON,
        FAILOVER_FROM,
        FAILOVER_TO,
        FAILOVER_REASON,
        BREAKER_STATE,
        EVENT_FAILOVER_HOP,
        EVENT_FAILOVER_PASSED_OVER,
        EVENT_REQUEST_CHECK,
        EVENT_RESPONSE_CHECK,
        WAF_VENDOR,
        WAF_KIND,
        WAF_REFERENCE,
    ];

    /// The HTTP conventions' names the crate uses: the only `http.` names allowed.
    const HTTP: &[&str] = &[
        HTTP_REQUEST_METHOD,
        HTTP_RESPONSE_STATUS_CODE,
        HTTP_REQUEST_RESEND_COUNT,
    ];

    #[test]
    fn own_names_stay_off_the_conventions_namespaces() {
        for name in OWN {
            for reserved in ["gen_ai.", "http.", "openai.", "server.", "error.", "url."] {
                assert!(!name.starts_with(reserved), "{name} squats `{reserved}`");
            }
        }
        for name in HTTP {
            assert!(name.starts_with("http.request.") || name.starts_with("http.response."));
        }
        // The evidence vocabulary keeps its exact names.
        assert_eq!(
            [API_SURFACE, STATUS_CLASS, PARSE_CHECK, FALLBACK_DECISION],
            [
                "api_surface",
                "status_class",
                "parse_check",
                "fallback_decision"
            ]
        );
    }
}
