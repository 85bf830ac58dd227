//! What a checked body says: the verdict, the API error it carried, the facts it reported,
//! and the handle through which a stream's verdict arrives when it ends. The inspect layer
//! makes them; every layer, the decision and the evidence read them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ParseCheck, SkipReason, Violation, Warnings, str_enum};

str_enum! {
    /// The shape an error body came in, tried in this order.
    #[non_exhaustive]
    pub enum ErrorShape {
        /// OpenAI's envelope `{"error":{"message","type","param","code"}}`, and gateways'
        /// variants of it (OpenRouter's integer `code` and `metadata`, Groq's `status_code`).
        Envelope => "envelope",
        /// Gemini's OpenAI layer: `[{"error":{"code":400,"message","status"}}]`.
        Array => "array",
        /// `{"error":"Model not found"}`.
        StringError => "string_error",
        /// vLLM's older `{"object":"error","message","type","param","code"}`.
        ObjectError => "object_error",
        /// `{"type":"error","error":{…}}`: Anthropic's native errors, and the nested error
        /// event of OpenAI's Responses streams.
        TypedEnvelope => "typed_envelope",
        /// `{"type":"error","code","message","param"}`: the Responses spec's error event.
        Flat => "flat",
        /// FastAPI's `{"detail": …}`.
        Detail => "detail",
        /// A bare `{"message": …}`.
        Message => "message",
    }
}

/// An error's `code`: a string (OpenAI), an integer (OpenRouter, vLLM, Gemini).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `"invalid_api_key"`, `"rate_limit_exceeded"`, …
    Text(String),
    /// `429`, `400`, …
    Number(i64),
}

impl ErrorCode {
    /// The code as text: a text code as it is, a number in decimal.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ErrorCode::Text(s) => std::borrow::Cow::Borrowed(s),
            ErrorCode::Number(n) => std::borrow::Cow::Owned(n.to_string()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Text(s) => f.write_str(s),
            ErrorCode::Number(n) => write!(f, "{n}"),
        }
    }
}

/// An API error, normalised from any known shape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The provider's message. Free text that may quote the request or a key's prefix: show it
    /// to the caller, never put it in telemetry.
    pub message: String,
    /// `error.type` (`invalid_request_error`, `insufficient_quota`, …; Gemini's `status`).
    pub error_type: Option<String>,
    /// `error.code`, string or integer; `None` when null or absent.
    pub code: Option<ErrorCode>,
    /// `error.param`.
    pub param: Option<String>,
    /// A status the body itself states (`status_code`, Gemini's integer `code`).
    pub status: Option<u16>,
    /// Which shape the body came in.
    pub shape: ErrorShape,
}

/// Token counts reported by the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenUsage {
    /// `prompt_tokens` (Chat) or `input_tokens` (Responses).
    pub input_tokens: Option<u64>,
    /// `completion_tokens` (Chat) or `output_tokens` (Responses).
    pub output_tokens: Option<u64>,
    /// Input tokens served from the provider's prompt cache (part of `input_tokens`): Chat
    /// `prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`,
    /// DeepSeek `prompt_cache_hit_tokens`.
    pub cache_read_input_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (part of `input_tokens`):
    /// `cache_write_tokens` in the same details object, where the provider reports it.
    pub cache_write_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning (part of `output_tokens`): Chat
    /// `completion_tokens_details.reasoning_tokens`, Responses
    /// `output_tokens_details.reasoning_tokens`.
    pub reasoning_output_tokens: Option<u64>,
}

/// Facts a body reported, for telemetry. None of them is secret or free text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseFacts {
    /// The response's id (`chatcmpl-…`, `resp_…`).
    pub response_id: Option<String>,
    /// The model that answered.
    pub response_model: Option<String>,
    /// One finish reason per choice (Chat). For Responses: `stop` or `tool_calls` when
    /// `completed`, the `incomplete_details.reason` when `incomplete`, `error` when `failed`,
    /// `cancelled` when cancelled.
    pub finish_reasons: Vec<String>,
    /// Token usage, when the body reported it.
    pub usage: Option<TokenUsage>,
    /// SSE events seen (0 for a non-streaming body).
    pub events: u64,
    /// Choices returned (Chat): the array's length, or one more than the highest streamed
    /// index.
    pub choices: Option<u64>,
    /// Whether the answer called tools (Chat `tool_calls`, Responses `function_call` items).
    pub tool_calls: bool,
    /// The service tier that served the request (`service_tier`: `default`, `flex`, `priority`,
    /// …). For a Responses stream, the terminal event's, which reports the tier actually used.
    pub service_tier: Option<String>,
    /// The backend configuration that answered (Chat `system_fingerprint`).
    pub system_fingerprint: Option<String>,
    /// The completion's text, cut at the configured length: only when content capture is on
    /// ([`Telemetry::with_content_capture`](crate::telemetry::Telemetry::with_content_capture)).
    pub output_text: Option<String>,
}

/// The result of checking one body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ContractVerdict {
    /// `pass`, `fail` or `skipped`.
    pub parse_check: ParseCheck,
    /// The first hard violation (set exactly when `parse_check` is `fail`).
    pub violation: Option<Violation>,
    /// Byte offset in the body where the violation was found, when it is known (the start of
    /// the offending SSE event, or the end of a truncated stream).
    pub violation_offset: Option<u64>,
    /// Why the body was not checked (set exactly when `parse_check` is `skipped`).
    pub skip_reason: Option<SkipReason>,
    /// Tolerated deviations.
    pub warnings: Warnings,
    /// The API's error, when the body carried one (a non-2xx envelope, an error payload in a
    /// 2xx, an in-stream error event, a `failed` Responses object). Its `message` is the
    /// provider's text and may quote the request: it is for the caller, never for telemetry.
    pub api_error: Option<ApiError>,
    /// What the body said about itself.
    pub facts: ResponseFacts,
}

impl ContractVerdict {
    /// A verdict for a body that was not checked.
    pub fn skipped(reason: SkipReason) -> Self {
        Self {
            parse_check: ParseCheck::Skipped,
            violation: None,
            violation_offset: None,
            skip_reason: Some(reason),
            warnings: Warnings::default(),
            api_error: None,
            facts: ResponseFacts::default(),
        }
    }

    /// A verdict for a body that kept its contract, with nothing else known.
    pub(crate) fn passed() -> Self {
        Self {
            parse_check: ParseCheck::Pass,
            skip_reason: None,
            ..Self::skipped(SkipReason::NoBody)
        }
    }

    /// `parse_check == pass`.
    pub fn is_pass(&self) -> bool {
        self.parse_check == ParseCheck::Pass
    }
}

type Callback = Box<dyn FnOnce(&ContractVerdict) + Send + 'static>;

/// The verdict of a streaming body, delivered when the stream ends, fails or is dropped.
///
/// The inspect layer puts one in the extensions of every response whose body it checks as a
/// stream. Clones share the same verdict. Read it with [`get`](Self::get) once the body is
/// consumed, await it with [`wait`](Self::wait), or register [`on_verdict`](Self::on_verdict)
/// (the telemetry layer does this to close its span when the stream does).
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use reqwest_llm_guard::inspect::VerdictHandle;
///
/// let response = client.post("http://127.0.0.1:8080/v1/chat/completions")
///     .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
///     .send()
///     .await?;
/// let verdict = response.extensions().get::<VerdictHandle>().cloned();
/// let mut chunks = response.bytes_stream();
/// while let Some(chunk) = chunks.next().await {
///     let _bytes = chunk?; // exactly the bytes the server sent
/// }
/// if let Some(verdict) = verdict {
///     println!("parse_check={}", verdict.wait().await.parse_check);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VerdictHandle {
    inner: Arc<Slot>,
}

struct Slot {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    verdict: Option<ContractVerdict>,
    callbacks: Vec<Callback>,
    first_chunk_at: Option<Instant>,
}

impl VerdictHandle {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Slot {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking callback must not take the verdict down with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict, once the stream has ended, failed or been dropped.
    pub fn get(&self) -> Option<ContractVerdict> {
        self.state().verdict.clone()
    }

    /// Whether the verdict has arrived.
    pub fn is_ready(&self) -> bool {
        self.state().verdict.is_some()
    }

    /// Waits for the verdict. It arrives when the caller reads the body to its end, the
    /// connection fails, or the body is dropped; awaiting it while holding the body unread
    /// waits forever.
    pub async fn wait(&self) -> ContractVerdict {
        loop {
            // Created before the check, so a verdict stored in between still wakes it.
            let notified = self.inner.ready.notified();
            if let Some(v) = self.get() {
                return v;
            }
            notified.await;
        }
    }

    /// Runs `f` with the verdict when it arrives, or now if it has. Callbacks run on the task
    /// that ends the stream (inside a poll or a drop): keep them short and non-blocking. A
    /// callback that panics is stopped there; the others still run.
    pub fn on_verdict(&self, f: impl FnOnce(&ContractVerdict) + Send + 'static) {
        let mut state = self.state();
        if let Some(v) = state.verdict.clone() {
            drop(state);
            f(&v);
        } else {
            state.callbacks.push(Box::new(f));
        }
    }

    /// When the first body bytes reached the caller (on tokio's clock).
    pub fn first_chunk_at(&self) -> Option<Instant> {
        self.state().first_chunk_at
    }

    pub(crate) fn mark_first_chunk(&self) {
        self.state().first_chunk_at.get_or_insert_with(Instant::now);
    }

    /// Stores the verdict (the first one wins) and runs the callbacks.
    pub(crate) fn complete(&self, verdict: ContractVerdict) {
        let callbacks = {
            let mut state = self.state();
            if state.verdict.is_some() {
                return;
            }
            let callbacks = std::mem::take(&mut state.callbacks);
            if callbacks.is_empty() {
                state.verdict = Some(verdict);
                drop(state);
                self.inner.ready.notify_waiters();
                return;
            }
            state.verdict = Some(verdict.clone());
            callbacks
        };
        self.inner.ready.notify_waiters();
        for f in callbacks {
            // Callbacks may run inside a drop, where a second panic would abort the process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&verdict)));
        }
    }
}

impl fmt::Debug for VerdictHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("VerdictHandle")
            .field("verdict", &state.verdict)
            .field("callbacks", &state.callbacks.len())
            .finish()
    }
}

/// The verdict of a response: its checked body's, or a streaming body's once it has arrived.
pub(crate) fn of_response(response: &reqwest::Response) -> Option<ContractVerdict> {
    let ext = response.extensions();
    ext.get::<ContractVerdict>()
        .cloned()
        .or_else(|| ext.get::<VerdictHandle>().and_then(VerdictHandle::get))
}
