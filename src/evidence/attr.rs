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

/// `chat` for both surfaces.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `openai`, or the gateway's provider name when known.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The model the request asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// The model that answered.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// The response's id (`chatcmpl-…`, `resp_…`).
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// Finish reasons, one per choice.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `input` or `output`, on the token-usage metric.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// Seconds from the request to the first body bytes of a stream.
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// The prompt, only with content capture on (truncated).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// The completion's text, only with content capture on (truncated).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// Input (prompt) tokens.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Output (completion) tokens.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `chat_completions` or `responses`.
pub const OPENAI_API_TYPE: &str = "openai.api.type";
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
