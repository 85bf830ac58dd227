//! What the mock gateway does, request by request.

use std::str::FromStr;

use crate::evidence::str_enum;

str_enum! {
    /// A behaviour of the mock gateway, chosen per request with the `x-mock-scenario` header
    /// (or the `mock` query parameter), else the gateway's default.
    ///
    /// Every scenario answers both surfaces (`/v1/chat/completions`, `/v1/responses`) and
    /// streams when the request body says `"stream": true` (where the scenario has a stream).
    #[non_exhaustive]
    pub enum Scenario {
        /// A correct answer. A request without a `model` gets OpenAI's 400 instead.
        Ok => "ok",
        /// 429 with `retry-after: 1` and OpenAI's rate-limit envelope, every time.
        RateLimited => "rate_limited",
        /// 429 with `retry-after-ms: 20`, every time.
        RateLimitedMs => "rate_limited_ms",
        /// 429 (`retry-after-ms: 100`) on a session's first attempt, then a correct answer.
        /// Sessions are told apart by the `x-mock-session` header.
        RateLimitedOnce => "rate_limited_once",
        /// 429 asking to wait 120 s: more than any sane cap.
        RateLimitedLong => "rate_limited_long",
        /// 403 Cloudflare block page ("Sorry, you have been blocked"), with a Ray ID.
        WafCloudflare => "waf_cloudflare",
        /// 429 Cloudflare challenge (`cf-mitigated: challenge`, "Just a moment...").
        WafCloudflareChallenge => "waf_cloudflare_challenge",
        /// 403 Akamai "Access Denied" with its Reference #.
        WafAkamai => "waf_akamai",
        /// 200 F5 BIG-IP "The requested URL was rejected" with a support ID.
        WafF5 => "waf_f5",
        /// 405 AWS WAF CAPTCHA (`x-amzn-waf-action: captcha`).
        WafAwsCaptcha => "waf_aws_captcha",
        /// 200 HTML maintenance page (no WAF).
        Html200 => "html_200",
        /// 200 carrying an error envelope instead of a result.
        ErrorIn200 => "error_in_200",
        /// 402 in OpenRouter's shape (integer `code`, no `type`).
        OpenrouterCredits => "openrouter_credits",
        /// 400 in Gemini's array shape.
        GeminiError => "gemini_error",
        /// 529 in Anthropic's native shape (`overloaded_error`).
        AnthropicOverloaded => "anthropic_overloaded",
        /// 401 `invalid_api_key`.
        Unauthorized => "unauthorized",
        /// 404 `model_not_found`.
        NotFound => "not_found",
        /// 500 `server_error`.
        ServerError => "server_error",
        /// Responses: 200 with `status: failed` (Chat: a 500).
        ResponsesFailed => "responses_failed",
        /// Responses: 200 with `status: incomplete` (`max_output_tokens`); Chat: finish reason
        /// `length`.
        Incomplete => "incomplete",
        /// A stream that ends without finish reason, terminal event or `[DONE]` (the body
        /// itself ends cleanly). For a stream that lacks only its terminator, see
        /// [`StreamNoTerminator`](Self::StreamNoTerminator).
        StreamTruncated => "stream_truncated",
        /// A stream out of order (Responses: a delta before its item; Chat: a chunk after
        /// `[DONE]`).
        StreamOutOfOrder => "stream_out_of_order",
        /// An error inside a 200 stream (Chat: Groq's `event: error`; Responses: `error` then
        /// `response.failed`).
        StreamError => "stream_error",
        /// A correct answer after a delay (`x-mock-delay-ms`, default 300 ms) before the headers.
        Slow => "slow",
        /// Headers and half the body, then the connection is dropped.
        Drop => "drop",
        /// A flapping upstream: each request to the gateway draws, pseudo-randomly but the same
        /// sequence every run, a 429 (`retry-after-ms: 10`) half the time, a 503 one time in
        /// ten, else a correct answer.
        Flaky => "flaky",
        /// Headers and the first bytes of the body, then nothing more: the connection stays
        /// open and silent.
        Stall => "stall",
        /// 429 with `retry-after: 1` (seconds) on a session's first attempt, then a correct
        /// answer ([`RateLimitedOnce`](Self::RateLimitedOnce) asks in `retry-after-ms`).
        RateLimitedOnceRetryAfter => "rate_limited_once_retry_after",
        /// 429 every time, with no `retry-after` nor `retry-after-ms`: the client picks the wait.
        RateLimitedNoRetryAfter => "rate_limited_no_retry_after",
        /// 500 `server_error` on a session's first attempt, then a correct answer.
        ServerErrorOnce => "server_error_once",
        /// 503 (`overloaded`), every time.
        ServiceUnavailable => "service_unavailable",
        /// On a session's first attempt, the connection is reset (SO_LINGER 0, an RST) once the
        /// request has arrived, before any header; then a correct answer.
        ResetOnce => "reset_once",
        /// Accepts the request and never answers: no headers, the connection held open.
        Hang => "hang",
        /// The headers at once, then the first stream event (or the whole body, not streaming)
        /// only after `x-mock-first-token-ms` (default 2000); the rest as usual.
        SlowFirstToken => "slow_first_token",
        /// A stream of 5 content deltas (`x-mock-chunks`) cut after the first
        /// `x-mock-cut-after` (default 2): the connection closes with no finish reason, no
        /// terminator and no end of the chunked body. Not streaming: half the body, then the
        /// cut (as [`Drop`](Self::Drop)).
        StreamCut => "stream_cut",
        /// A stream of 5 content deltas (`x-mock-chunks`) that stops after the first
        /// `x-mock-cut-after` (default 2), the connection open and silent. Not streaming: half
        /// the body, then the silence.
        StreamStall => "stream_stall",
        /// A correct stream with one more `data:` line, right after the first content delta,
        /// whose JSON is cut short. Not streaming: a correct answer.
        StreamMalformedChunk => "stream_malformed_chunk",
        /// A stream complete but for its last event: Chat's `[DONE]` (the finish reason and
        /// usage came), Responses' `response.completed` (every `.done` event came); the body
        /// then ends cleanly. [`StreamTruncated`](Self::StreamTruncated) stops earlier, before
        /// the finish reason (Chat) or any `.done` event (Responses). Not streaming: a correct
        /// answer.
        StreamNoTerminator => "stream_no_terminator",
        /// 400 `context_length_exceeded` (`invalid_request_error`, param `messages`; Responses:
        /// `input`), as OpenAI words it.
        ContextLengthExceeded => "context_length_exceeded",
        /// 400 `content_policy_violation` (`invalid_request_error`): OpenAI's safety system
        /// refused the prompt.
        ContentPolicy => "content_policy",
        /// A model that takes no assistant prefill: 400 ("This model does not support assistant
        /// message prefill...") when the conversation (`messages`, or `input` as a list) ends
        /// with an assistant message; else a correct answer.
        PrefillRejected => "prefill_rejected",
        /// 503 (`overloaded`) for `x-mock-down-ms` (default 1000) from a session's first
        /// request, then correct answers.
        DownThenUp => "down_then_up",
    }
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .iter()
            .copied()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// A scenario name the mock gateway does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl std::fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown mock scenario {:?}", self.0)
    }
}

impl std::error::Error for UnknownScenario {}
