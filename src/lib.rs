//! # reqwest-llm-guard
//!
//! [`reqwest-middleware`](reqwest_middleware) layers for services that call OpenAI-compatible
//! LLM APIs (Chat Completions and Responses), directly or through gateways such as CometAPI,
//! OpenRouter, LiteLLM, Azure OpenAI, vLLM or Ollama. Every call leaves evidence: which API
//! surface it used, which status class came back, whether the body kept the response contract
//! (streams included), and what the fallback decision is.
//!
//! Failover goes wrong silently: a 200 that is really a WAF page, an error shape the retry logic
//! misreads, a stream that ends without its terminator. This crate makes each of those a
//! verdict you can read, count and act on.
//!
//! ## Quickstart
//!
//! Put the layers around the client you already have; call sites do not change. What each call
//! left behind is in its response's extensions, summed up by [`Evidence`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_llm_guard::evidence::FallbackDecision;
//! use reqwest_llm_guard::{Evidence, Guard};
//!
//! // Telemetry → retry → attempt spans → inspect, on the global OpenTelemetry providers.
//! let client = Guard::new().client(reqwest::Client::new());
//!
//! let response = client
//!     .post("https://api.openai.com/v1/chat/completions")
//!     .bearer_auth(std::env::var("OPENAI_API_KEY")?)
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say PASS"}]}"#)
//!     .send()
//!     .await?;
//!
//! let evidence = Evidence::of(&response);
//! println!(
//!     "{} {} parse_check={:?} retries={} decision={}",
//!     evidence.api_surface, evidence.status_class, evidence.parse_check,
//!     evidence.retry_count, evidence.fallback_decision,
//! );
//! if evidence.fallback_decision == FallbackDecision::Fallback {
//!     // send the call to the next endpoint, provider or surface
//! }
//! # Ok(()) }
//! ```
//!
//! The layers also stand alone, in any builder (the first `.with()` runs outermost):
//!
//! ```no_run
//! use reqwest_llm_guard::inspect::Inspect;
//! use reqwest_llm_guard::retry::Retry;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Retry::new()) // outer: bounded 429 retry
//!     .with(Inspect::new()) // inner: per attempt, WAF walls and the contract
//!     .build();
//! ```
//!
//! ## Layers and their order
//!
//! The first `.with()` runs outermost. [`Guard`] assembles them in this order; to assemble them
//! yourself, keep it: [`Telemetry`](telemetry::Telemetry) outside [`Retry`](retry::Retry), so
//! one call span covers every attempt; [`Retry`](retry::Retry) outside
//! [`Inspect`](inspect::Inspect), so every attempt is inspected and the retry layer sees each
//! attempt's WAF verdict; the attempt spans ([`Telemetry::attempts`](telemetry::Telemetry::attempts))
//! between them.
//!
//! | layer | per | does |
//! |---|---|---|
//! | [`telemetry::Telemetry`] | call | the call span `{operation} {model}`, its evidence, the metrics; injects `traceparent` |
//! | [`retry::Retry`] | call | retries 429 within bounds: `Retry-After` honoured and capped, a deadline, a shared [`RetryBudget`](retry::RetryBudget); never a wall or a 403 |
//! | [`telemetry::AttemptTelemetry`] | attempt | one child span per attempt with `http.request.resend_count` |
//! | [`inspect::Inspect`] | attempt | recognises WAF and bot walls ([`waf`]), checks the contract ([`contract`]), hands the response back byte-identical with the verdicts in its extensions |
//!
//! A streaming response (`text/event-stream`) is never buffered: its body is wrapped, each
//! chunk reaches the caller as it arrives, and the verdict arrives in a
//! [`StreamVerdict`](inspect::StreamVerdict) when the stream ends, fails or is dropped.
//!
//! ## What is checked
//!
//! | body | checked against |
//! |---|---|
//! | Chat Completions, 2xx | `chat.completion`: `choices[]`, each with a `message` and a finish reason |
//! | Chat Completions, SSE | `chat.completion.chunk`s, finish reasons, `data: [DONE]` |
//! | Responses, 2xx | `response` object: `output[]`, `status` (`failed`, `cancelled` fail; `incomplete` passes with its reason) |
//! | Responses, SSE | the event grammar: `response.created` first, items opened before their deltas, `sequence_number` increasing, one terminal event and nothing after it |
//! | any non-2xx | the error envelope `{"error":{"message","type","code","param"}}`; every other shape seen in the wild is normalised into one [`ApiError`](contract::ApiError) |
//! | anything | in-stream errors in every known shape (Groq's `event: error`, OpenRouter's `error` inside a chunk, Responses' flat and nested `error` events) |
//!
//! [`Mode::Compat`](contract::Mode::Compat), the default, tolerates the deviations that real
//! providers send and counts them as [`Warning`](evidence::Warning)s;
//! [`Mode::Strict`](contract::Mode::Strict) holds bodies to the OpenAI spec literally.
//!
//! ## Request lint and cross-checks
//!
//! The telemetry layer lints every request against the provider family behind its model
//! ([`lint`]: `temperature` above 1 for Claude, `n` above 8 for Gemini, `logprobs` off OpenAI,
//! `reasoning_effort` where it is ignored, `max_tokens` where `max_completion_tokens` is
//! expected, Chat for a model that prefers Responses) and cross-checks the answer (`n` asked vs
//! choices received, `stream` asked vs content type, model asked vs answered, tool calls asked vs
//! returned). Findings are span events and the `request_check` / `response_check` attributes;
//! the request is never blocked or changed.
//!
//! ## The evidence vocabulary
//!
//! The names of [`evidence::attr`] and the values of the [`evidence`] enums are stable: they are
//! the attributes of spans and the labels of metrics.
//!
//! | attribute | values |
//! |---|---|
//! | `api_surface` | `chat_completions`, `responses`, `other` ([`ApiSurface`](evidence::ApiSurface)) |
//! | `status_class` | `1xx` … `5xx`, `transport_error` ([`StatusClass`](evidence::StatusClass)) |
//! | `parse_check` | `pass`, `fail`, `skipped` ([`ParseCheck`](evidence::ParseCheck)) |
//! | `fallback_decision` | `none`, `retry`, `fallback`, `hold` ([`FallbackDecision`](evidence::FallbackDecision)) |
//! | `contract.violation` | the first hard [`Violation`](evidence::Violation): `not_json`, `html_body`, `error_in_2xx`, `stream_truncated`, … |
//! | `contract.warnings` | distinct tolerated deviations ([`Warnings::len`](evidence::Warnings::len)) |
//! | `contract.skip_reason` | [`SkipReason`](evidence::SkipReason): `other_surface`, `too_large`, `abandoned`, `no_body` |
//!
//! The default decision for a call is the table in [`DecisionTable`](evidence::DecisionTable)
//! (a WAF wall or a request error: `hold`; a broken 2xx, 429 after retries, 5xx or a transport
//! error: `fallback`); replace it with any [`DecisionPolicy`](evidence::DecisionPolicy).
//!
//! ## Defaults
//!
//! | setting | default |
//! |---|---|
//! | retried | 429 only ([`retry::On429`]); preset [`Retry::openai_sdk`](retry::Retry::openai_sdk): 408, 409, 429, 5xx, transport errors |
//! | retries, backoff | 2, full-jitter exponential 0.5 s → 8 s |
//! | largest server-requested wait (`retry-after`, `retry-after-ms`) | 60 s; longer: no retry, `fallback` |
//! | retry deadline | 60 s from the call's start (tokio's clock); the attempt in flight is never cut |
//! | retry budget | 10 retries/s reserve plus 20% of calls, over a 10 s window, shared by clones |
//! | contract mode | [`Mode::Compat`](contract::Mode::Compat) |
//! | telemetry | global tracer and meter providers, `gen_ai.provider.name=openai`, no content recorded |
//! | largest non-streaming body read to check | 8 MiB ([`inspect::DEFAULT_MAX_BODY_BYTES`]); larger: `skipped`, `too_large`, body untouched |
//! | wait for the next piece of a body being read | 30 s ([`inspect::DEFAULT_BODY_IDLE_TIMEOUT`]); then `fail` (`body_stalled`), the rest still reaches the caller |
//! | largest SSE event kept | 16 MiB ([`sse::DEFAULT_MAX_EVENT_BYTES`]); larger: `skipped`, `too_large`, bytes still flow |
//!
//! ## Errors
//!
//! The inspect layer never fails a request: a response that breaks its contract is still
//! handed back, byte-identical, with the verdict beside it. A connection that fails while the
//! layer reads a body is handed back as it came (the bytes that arrived, then the same error).
//!
//! The retry layer returns the last attempt's result as it came (`Ok(429)` when retries ran
//! out; a transport error unwrapped). Its one error of its own is an [`Error`] of kind
//! [`ErrorKind::RequestNotCloneable`], inside `reqwest_middleware::Error::Middleware`, for a
//! request whose streaming body cannot be resent: downcast to read it.
//!
//! ## Features
//!
//! | feature | what it adds | status |
//! |---|---|---|
//! | (none) | the contract checkers, the SSE decoder, the WAF classifier, the inspect, retry and telemetry layers | available |
//! | `otlp` | [`telemetry::otlp`]: OTLP export (gRPC, HTTP/protobuf) built from the `OTEL_*` environment variables, with a guard that flushes on drop | available |
//! | `mock` | [`mock`]: an OpenAI-compatible mock gateway on loopback that misbehaves on request | available |
//! | `cli` | the `llm-guard` command ([`drill`]: the evidence drill; the mock gateway); implies `mock` and `otlp`, and enables reqwest's default TLS for the command | available |
//!
//! The crate chooses no TLS backend: enable the one you want on your own `reqwest`.

pub mod contract;
#[cfg(feature = "cli")]
pub mod drill;
mod error;
pub mod evidence;
pub mod inspect;
pub mod lint;
#[cfg(feature = "mock")]
pub mod mock;
pub mod retry;
pub mod sse;
mod stack;
pub mod telemetry;
pub mod waf;

pub use error::{Error, ErrorKind};
pub use stack::{Evidence, Guard};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
