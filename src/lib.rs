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
//! left behind is its [`Evidence`]: the same decision its span and metrics carry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_llm_guard::evidence::FallbackDecision;
//! use reqwest_llm_guard::{Evidence, Guard};
//!
//! // Call layer (decision, evidence, telemetry) → retry → attempt spans → inspect.
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
//! A stream's evidence is final when its body ends: take the [`EvidenceHandle`] first, read the
//! body, then await it. A call that returns an error hands back no response: attach a handle to
//! the request to get its evidence.
//!
//! ```no_run
//! # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use reqwest_llm_guard::{Evidence, EvidenceHandle};
//!
//! let response = client.post("http://127.0.0.1:8080/v1/chat/completions")
//!     .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
//!     .send()
//!     .await?;
//! let evidence = Evidence::handle(&response);
//! let mut chunks = response.bytes_stream();
//! while let Some(chunk) = chunks.next().await {
//!     let _bytes = chunk?; // exactly the bytes the server sent, as they arrive
//! }
//! println!("{:?}", evidence.settled().await);
//!
//! let evidence = EvidenceHandle::new();
//! if let Err(e) = client.post("http://127.0.0.1:1/v1/responses")
//!     .with_extension(evidence.clone())
//!     .body("{}")
//!     .send()
//!     .await
//! {
//!     println!("{e}: {:?}", evidence.get());
//! }
//! # Ok(()) }
//! ```
//!
//! The layers also stand alone, in any builder (the first `.with()` runs outermost); without
//! the call layer, [`Evidence`] decides with the default table:
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
//! one decision and one call span cover every attempt; [`Retry`](retry::Retry) outside
//! [`Inspect`](inspect::Inspect), so every attempt is inspected and the retry layer sees each
//! attempt's WAF verdict; the attempt spans
//! ([`Telemetry::attempt_layer`](telemetry::Telemetry::attempt_layer)) between them.
//!
//! Assembled by hand, the call layer starts each call with the defaults of its settings (60 s
//! deadline, a budget of its own, its decision policy): the deadline and budget of a call are
//! set on [`Guard`] ([`Guard::with_deadline`], [`Guard::with_budget`]), and a `Retry`'s own
//! apply only where no call layer runs above it. Add the failover layer with
//! [`Guard::with_failover`]: the guard then records `server.*` and the provider when the call
//! ends, for the upstream that answered.
//!
//! | layer | per | does |
//! |---|---|---|
//! | [`telemetry::Telemetry`] | call | starts the call: its deadline, budget and [`DecisionPolicy`](evidence::DecisionPolicy), written once for every layer below; decides the call (answers, streams at their end, transport errors, cancelled calls); leaves the [`Evidence`]; the call span `{operation} {model}` and the metrics; injects `traceparent` |
//! | [`failover::Failover`] (optional) | call | moves the call to the next eligible upstream on `fallback`, within the call's deadline and budget; a breaker per upstream |
//! | [`retry::Retry`] | upstream | retries 429 within the call's bounds: `Retry-After` honoured and capped, the deadline, the shared [`RetryBudget`](retry::RetryBudget); never a wall or a 403 |
//! | [`telemetry::AttemptTelemetry`] | attempt | one child span per attempt with `http.request.resend_count` |
//! | [`inspect::Inspect`] | attempt | recognises WAF and bot walls ([`waf`]), checks the contract ([`contract`]), hands the response back byte-identical with the verdicts in its extensions |
//!
//! A streaming response (`text/event-stream`) is never buffered: its body is wrapped, each
//! chunk reaches the caller as it arrives, and the verdict arrives in a
//! [`VerdictHandle`](inspect::VerdictHandle) when the stream ends, fails or is dropped. The
//! layers pass their findings to each other in the extensions: [`extensions`] lists them.
//!
//! A call the caller cancels (its future dropped, or its stream dropped before the end) still
//! ends its span with `parse_check=skipped`, `contract.skip_reason=cancelled` and a decision
//! (the default table says `none`), and is counted in the metrics.
//!
//! ## Already using reqwest-retry or reqwest-tracing?
//!
//! reqwest-tracing can stay where it is, outside the guard: its span becomes the parent of the
//! call span. Retrying twice can not: a retry layer outside the guard re-runs the whole stack.
//! The set-ups below are tested (`tests/adoption.rs`) with the upstream requests a persistent
//! 429 and a Cloudflare challenge on a 429 cost, for a service whose reqwest-retry policy makes
//! 3 retries:
//!
//! | set-up | persistent 429 | challenge on 429 |
//! |---|---|---|
//! | 1. the guard in place of reqwest-retry (recommended) | 3 (the guard's 2 retries) | 1 |
//! | 2. the service's policy and strategy moved into the guard | 4 | 1 |
//! | 3. reqwest-retry kept outside, with [`RefuseWalls`](retry::RefuseWalls), the guard's retry off | 4 | 1 |
//! | don't: reqwest-retry kept as it was, the guard's retry on | 6 | 4 |
//!
//! ```no_run
//! use reqwest_llm_guard::Guard;
//! use reqwest_llm_guard::retry::{RefuseWalls, Retry};
//! use reqwest_retry::{DefaultRetryableStrategy, RetryTransientMiddleware, policies::ExponentialBackoff};
//! use reqwest_tracing::TracingMiddleware;
//!
//! let service = || reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(TracingMiddleware::default());
//! let policy = ExponentialBackoff::builder().build_with_max_retries(3);
//!
//! // 1. The guard in place of reqwest-retry.
//! let one = Guard::new().layer(service()).build();
//! // 2. Your policy and reqwest-retry's strategy, in the guard's retry layer (bounded by its
//! //    deadline and budget, walls and 403s refused).
//! let two = Guard::new()
//!     .with_retry(Retry::new().with_policy(policy).with_strategy(DefaultRetryableStrategy))
//!     .layer(service())
//!     .build();
//! // 3. reqwest-retry where it is, refusing walls; the guard makes one attempt per run.
//! let three = Guard::new()
//!     .without_retry()
//!     .layer(service().with(RetryTransientMiddleware::new_with_policy_and_strategy(
//!         policy,
//!         RefuseWalls::default(),
//!     )))
//!     .build();
//! # let _ = (one, two, three);
//! ```
//!
//! In set-up 3 every attempt is a call of its own (a span, a decision, `retry_count` 0). In the
//! last one the guard notices that an outer retry layer re-runs it and makes one attempt from
//! then on (`retry.stop_reason=nested`), but reqwest-retry's own strategy still retries the
//! wall. A guard nested in another guard's call records and retries nothing of its own.
//!
//! ## Failover
//!
//! [`failover::Failover`] acts on the decision across an ordered list of upstreams (base URL,
//! key from an environment variable, model override, surfaces served, context window):
//! `fallback` moves to the next eligible upstream, `hold` stops where it is (a wall, an auth or
//! request error is never hidden behind a hop), `none` answers. Added with
//! [`Guard::with_failover`], it sits between the call layer and the retry layer, so one call
//! span, one decision policy, one retry budget and one deadline cover every hop.
//!
//! ```no_run
//! use reqwest_llm_guard::Guard;
//! use reqwest_llm_guard::failover::{CommitPoint, Credential, Failover, Upstream};
//!
//! let failover = Failover::builder([
//!     Upstream::new("openai", "https://api.openai.com/v1")?
//!         .with_credential(Credential::env("OPENAI_API_KEY")),
//!     Upstream::new("gateway", "https://gateway.example/v1")?
//!         .with_credential(Credential::env("GATEWAY_KEY")),
//! ])
//! .with_commit_point(CommitPoint::FirstContent)
//! .build();
//! let client = Guard::new().with_failover(failover).client(reqwest::Client::new());
//! # let _ = client; Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Streams fail over freely until their commit point ([`CommitPoint`](failover::CommitPoint):
//! the first byte by default, the first content event, or the end with a bounded buffer); after
//! it, a failure ends the caller's body with an error, never a clean end, and the call span's
//! `gen_ai.response.finish_reasons` holds `error`. Each upstream has a circuit breaker
//! ([`failover::Breaker`]) on tokio's clock. Requests that continue server-side state
//! (`previous_response_id`) stay with the upstream that minted it. The [failover module
//! docs](failover) have the rules, the defaults and the accounting.
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
//! | `status_class` | `1xx` … `5xx`, `transport_error`, `cancelled` ([`StatusClass`](evidence::StatusClass)) |
//! | `parse_check` | `pass`, `fail`, `skipped` ([`ParseCheck`](evidence::ParseCheck)) |
//! | `fallback_decision` | `none`, `retry`, `fallback`, `hold` ([`FallbackDecision`](evidence::FallbackDecision)) |
//! | `contract.violation` | the first hard [`Violation`](evidence::Violation): `not_json`, `html_body`, `error_in_2xx`, `stream_truncated`, … |
//! | `contract.warnings` | distinct tolerated deviations ([`Warnings::len`](evidence::Warnings::len)) |
//! | `contract.skip_reason` | [`SkipReason`](evidence::SkipReason): `other_surface`, `too_large`, `cancelled`, `no_body` |
//!
//! The default decision for a call is the table in [`DecisionTable`](evidence::DecisionTable)
//! (a WAF wall or a request error: `hold`; a broken 2xx, 429 after retries, 5xx or a transport
//! error: `fallback`; a cancelled call: `none`); replace it with any
//! [`DecisionPolicy`](evidence::DecisionPolicy) through
//! [`Guard::with_decision_policy`]. The policy sees the normalised API error (type, code,
//! status) and the WAF verdict, so it can route on `context_length_exceeded` or
//! `insufficient_quota`.
//!
//! ## Defaults
//!
//! | setting | default |
//! |---|---|
//! | retried | 429 only ([`retry::On429`]); preset [`Retry::openai_sdk`](retry::Retry::openai_sdk): 408, 409, 429, 5xx, transport errors |
//! | retries, backoff | 2, full-jitter exponential 0.5 s → 8 s, never under 100 ms ([`Retry::with_min_backoff`](retry::Retry::with_min_backoff)) |
//! | time to response headers, per attempt | no limit but the client's ([`Retry::with_time_to_headers`](retry::Retry::with_time_to_headers): past it, no retry) |
//! | failover ([`failover::Failover`], off unless added) | 2 hops, streams committed at their first byte (at most 1 MiB held waiting for a first content, [`failover::FIRST_CONTENT_MAX_HELD`]), 60 s to a stream's first byte and between its frames, a breaker per upstream: 5 failures in a row or 50% of ≥ 20 calls in 60 s, open 30 s doubling to 300 s ± 10%, the last 10,000 response ids (of at most 256 bytes) remembered for state affinity |
//! | largest server-requested wait (`retry-after`, `retry-after-ms`) | 60 s; longer: no retry, `fallback` |
//! | call deadline ([`Guard::with_deadline`]) | 60 s from the call's start (tokio's clock), every retry and hop included; the attempt in flight is never cut |
//! | call budget ([`Guard::with_budget`]) | 10 retries/s reserve plus 20% of calls, over a 10 s window, shared by clones; every retry and every hop draws on it |
//! | contract mode | [`Mode::Compat`](contract::Mode::Compat) |
//! | telemetry | the global tracer and meter providers, read at the first call; `gen_ai.provider.name` from the host (`openai` for hosts it does not know; [`Telemetry::with_provider_name`](telemetry::Telemetry::with_provider_name) overrides); the conventions' current metric names, the newer `gen_ai.client.inference.*` ones with `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`; no content recorded |
//! | OpenTelemetry | the `opentelemetry` API 0.33 (`opentelemetry_sdk` 0.33, `tracing-opentelemetry` 0.34) |
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
//! out; a transport error unwrapped, so `is_timeout()` and `is_connect()` still answer). Its
//! one error of its own is an [`Error`] of kind [`ErrorKind::RequestNotCloneable`], inside
//! `reqwest_middleware::Error::Middleware`, for a request whose streaming body cannot be
//! resent: downcast to read it.
//!
//! No error the layers hand back carries a credential: reqwest prints the request's URL in its
//! errors (those of the body too), so the URL of every error and of every response that went
//! through a layer loses its userinfo and has its query values replaced (`?key=redacted`).
//!
//! ## Features
//!
//! | feature | what it adds | status |
//! |---|---|---|
//! | (none) | the contract checkers, the SSE decoder, the WAF classifier, the inspect, retry and telemetry layers | available |
//! | `otlp` | [`telemetry::otlp`]: OTLP export (gRPC, HTTP/protobuf) built from the `OTEL_*` environment variables, with a guard that flushes on drop | available |
//! | `mock` | [`mock`]: an OpenAI-compatible mock gateway on loopback that misbehaves on request | available |
//! | `cli` | the `llm-guard` command: `smoke` (the evidence drill: a real call, checked, the key and prompt looked for in every span), `check` (judges a saved response offline: `curl -i` output, a body, an SSE dump), `proxy` (an OpenAI-compatible server on loopback sending every request through the stack with [`failover`], configured in TOML) and `mock` (the mock gateway); implies `mock` and `otlp`, and enables reqwest's default TLS for the command | available |
//!
//! The crate's own tests, examples and benchmarks need the `mock` and `otlp` features
//! (`cargo test --all-features`); the library needs none.
//!
//! The crate chooses no TLS backend: enable the one you want on your own `reqwest`.

mod budget;
mod call;
pub mod contract;
mod error;
pub mod evidence;
pub mod extensions;
pub mod failover;
mod guard;
pub mod inspect;
pub mod judge;
pub mod lint;
#[cfg(feature = "mock")]
pub mod mock;
mod redact;
pub mod retry;
pub mod sse;
pub mod telemetry;
pub mod waf;

pub use error::{Error, ErrorKind};
pub use evidence::{Evidence, EvidenceHandle};
pub use guard::Guard;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
