//! Opt-in continuation of a Chat stream cut after its commit point: the text so far goes as an
//! assistant prefill to the next upstream that declares prefill support, and its answer
//! continues the caller's stream.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;

use super::upstream::Upstream;
use crate::evidence::{ApiSurface, Violation};
use crate::inspect::{Inspect, VerdictHandle};
use crate::sse;

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What a continuation comes to: its checked body and verdict, or nothing.
type Started = Option<(reqwest::Body, VerdictHandle)>;

/// A continuation on its way. The mutex only makes the future `Sync` (the caller's body must
/// be); it is only ever reached through `&mut`, so never locked.
pub(crate) type Pending = Mutex<BoxFuture<Started>>;

/// The most assistant text a continuation carries: past it, the stream is not continued.
const MAX_PARTIAL_BYTES: usize = 1 << 20;

/// Everything needed to continue a stream elsewhere, fixed when it is committed.
pub(crate) struct Plan {
    pub(crate) client: reqwest::Client,
    pub(crate) target: Upstream,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
    /// Where the record learns that the answer was continued, and on which upstream.
    pub(crate) continued_on: Arc<OnceLock<Arc<str>>>,
}

/// The assistant text the caller has received so far, read from the frames handed on.
#[derive(Default)]
pub(crate) struct Partial {
    decoder: sse::Decoder,
    text: String,
    /// Tool calls, or too much text: not something a prefill can continue.
    unusable: bool,
}

impl Partial {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.unusable {
            return;
        }
        let (text, unusable) = (&mut self.text, &mut self.unusable);
        self.decoder.feed(data, &mut |frame| {
            let sse::Frame::Event(event) = frame else {
                *unusable = true;
                return;
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(event.data()) else {
                return;
            };
            let Some(choices) = value.get("choices").and_then(|c| c.as_array()) else {
                return;
            };
            for choice in choices {
                if choice
                    .get("index")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
                    != 0
                {
                    // Several choices cannot go back as one prefill.
                    *unusable = true;
                    return;
                }
                let delta = &choice["delta"];
                if delta.get("tool_calls").is_some_and(|t| !t.is_null()) {
                    *unusable = true;
                    return;
                }
                if let Some(s) = delta["content"].as_str() {
                    text.push_str(s);
                }
            }
        });
        if self.text.len() > MAX_PARTIAL_BYTES {
            self.unusable = true;
        }
    }

    /// The text to continue from, when there is one a prefill can carry.
    pub(crate) fn text(&self) -> Option<&str> {
        (!self.unusable && !self.text.is_empty()).then_some(self.text.as_str())
    }
}

/// Whether a stream that failed this way may be continued: it was cut, not refused.
pub(crate) fn continuable(violation: Option<Violation>) -> bool {
    violation.is_none_or(|v| v == Violation::StreamTruncated || v.is_cut_off())
}

/// The request that continues `partial` on the plan's upstream.
fn request(plan: &Plan, partial: &str) -> Option<reqwest::Request> {
    let mut body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&plan.body).ok()?;
    let messages = body.get_mut("messages")?.as_array_mut()?;
    messages.push(serde_json::json!({"role": "assistant", "content": partial}));
    body.insert("stream".to_owned(), serde_json::Value::Bool(true));
    if let Some(model) = plan.target.model() {
        body.insert("model".to_owned(), serde_json::Value::from(model));
    }
    let url = plan
        .target
        .url_for(&plan.url, ApiSurface::ChatCompletions)?;
    let mut headers = plan.headers.clone();
    headers.remove(http::header::CONTENT_LENGTH);
    let same_origin = plan.target.same_origin(&plan.url);
    // A target whose key cannot be resolved is not continued on.
    plan.target.authorize(&mut headers, same_origin).ok()?;
    plan.client
        .post(url)
        .headers(headers)
        .body(serde_json::to_vec(&body).ok()?)
        .build()
        .ok()
}

/// Sends the continuation and, when it answers with a stream, hands back its checked body and
/// verdict; `None` when it could not continue (the original failure then stands).
pub(crate) fn start(plan: &Plan, partial: &str) -> Option<Pending> {
    let request = request(plan, partial)?;
    let client = plan.client.clone();
    let continued_on = plan.continued_on.clone();
    let name = plan.target.name.clone();
    Some(Mutex::new(Box::pin(async move {
        let response = client.execute(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let response = Inspect::new()
            .inspect(ApiSurface::ChatCompletions, &http::Method::POST, response)
            .await;
        let verdict = response.extensions().get::<VerdictHandle>().cloned()?;
        let _ = continued_on.set(name);
        Some((
            http::Response::<reqwest::Body>::from(response).into_body(),
            verdict,
        ))
    })))
}

/// Polls the continuation's future, out of its mutex (only ever touched through `&mut`).
pub(crate) fn poll(
    future: &mut Pending,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Started> {
    future
        .get_mut()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .poll(cx)
}
