//! The inspect layer: per attempt, checks the response's contract and hands the response back
//! unchanged, with the verdict in its extensions.
//!
//! What it does with each response:
//!
//! Every attempt is first checked for a WAF or bot wall ([`waf::classify`]), at any status: from
//! the headers, then from the first 64 KiB of a body the layer reads (a body it does not read is
//! judged by its block headers alone, [`waf::classify_headers`]). A wall leaves a
//! [`WafVerdict`](crate::evidence::WafVerdict) in the response's extensions (the retry layer
//! never retries it).
//!
//! | response | body | verdict in the extensions |
//! |---|---|---|
//! | surface `other`, `HEAD`, 1xx, 204, 3xx | untouched | [`ContractVerdict`] `skipped` |
//! | `Content-Length` over the cap | untouched | [`ContractVerdict`] `skipped` (`too_large`) |
//! | 2xx `text/event-stream` | wrapped, never buffered: each chunk is passed on as it arrives and checked on the way | [`VerdictHandle`], filled when the stream ends, fails or is dropped |
//! | anything else | read once up to the cap, checked, handed back byte-identical | [`ContractVerdict`] |
//!
//! A body that turns out longer than the cap is handed back whole (the bytes read, then the
//! rest, streamed) with `skipped` (`too_large`). A body whose connection fails while the layer
//! reads it is handed back as it came: the bytes read, then the same error when the caller reads
//! on; its verdict is `fail` (`body_read_error`). The layer never fails a request itself: its
//! findings are evidence, the caller's code and the outer layers decide.
//!
//! The request's [`ApiSurface`] is classified from its path
//! ([`ApiSurface::classify`]), or taken from the request's extensions when the caller put one
//! there; it is copied into the response's extensions too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_llm_guard::contract::ContractVerdict;
//! use reqwest_llm_guard::inspect::Inspect;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Inspect::new())
//!     .build();
//! let response = client
//!     .post("http://127.0.0.1:8080/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
//!     .send()
//!     .await?;
//! if let Some(verdict) = response.extensions().get::<ContractVerdict>() {
//!     println!("parse_check={} violation={:?}", verdict.parse_check, verdict.violation);
//! }
//! let body = response.bytes().await?; // the server's bytes, unchanged
//! # let _ = body; Ok(()) }
//! ```

mod body;
mod verdict;

pub use verdict::VerdictHandle;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Extensions, Method};
use http_body_util::BodyExt;
use reqwest::{Request, Response, ResponseBuilderExt};
use reqwest_middleware::{Middleware, Next};

use crate::contract::{self, Capture, ContractVerdict, Mode, StreamChecker};
use crate::evidence::{ApiSurface, SkipReason, Violation, Warning};
use crate::extensions::CaptureContent;
use crate::sse::DEFAULT_MAX_EVENT_BYTES;
use crate::waf;
use body::{CheckedBody, Replay};

/// Default cap on a non-streaming body the layer reads: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Default wait for the next piece of a non-streaming body being read: 30 s.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The inspect middleware. See the [module docs](self).
///
/// Defaults: [`Mode::Compat`], bodies read up to [`DEFAULT_MAX_BODY_BYTES`], SSE events up to
/// [`DEFAULT_MAX_EVENT_BYTES`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inspect {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    mode: Mode,
    max_body_bytes: usize,
    max_event_bytes: usize,
    body_idle_timeout: Duration,
}

impl Default for Inspect {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspect {
    /// The layer with its defaults.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                mode: Mode::Compat,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
                body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Compat (default) or strict contracts.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.config_mut().mode = mode;
        self
    }

    /// The largest non-streaming body the layer reads to check; larger ones pass unread with
    /// `parse_check=skipped`, `contract.skip_reason=too_large`.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.config_mut().max_body_bytes = max;
        self
    }

    /// How long the layer waits for the next piece of a non-streaming body it is reading before
    /// it stops reading (default 30 s): the response is then handed back with the bytes read
    /// and the rest still to come, and the verdict is `fail` (`body_stalled`). Streams are never
    /// read by the layer, so this never cuts one.
    #[must_use]
    pub fn with_body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().body_idle_timeout = timeout;
        self
    }

    /// The largest SSE event the stream checker keeps; a larger one ends the check with
    /// `skipped` (`too_large`) while the bytes keep flowing to the caller.
    #[must_use]
    pub fn with_max_event_bytes(mut self, max: usize) -> Self {
        self.config_mut().max_event_bytes = max;
        self
    }

    /// Checks one response and hands it back with the verdict in its extensions.
    pub async fn inspect(
        &self,
        surface: ApiSurface,
        method: &Method,
        response: Response,
    ) -> Response {
        self.inspect_capturing(surface, method, response, None)
            .await
    }

    async fn inspect_capturing(
        &self,
        surface: ApiSurface,
        method: &Method,
        response: Response,
        capture: Option<usize>,
    ) -> Response {
        let mut response = response;
        response.extensions_mut().insert(surface);
        let status = response.status();
        if surface == ApiSurface::Other {
            return with_verdict(response, ContractVerdict::skipped(SkipReason::OtherSurface));
        }
        if method == Method::HEAD
            || status.is_informational()
            || status.is_redirection()
            || status == http::StatusCode::NO_CONTENT
        {
            return with_verdict(response, ContractVerdict::skipped(SkipReason::NoBody));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status.is_success()
            && content_type
                .as_deref()
                .is_some_and(contract::is_event_stream)
        {
            return self.wrap_stream(surface, response, capture);
        }
        let cap = self.config.max_body_bytes;
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return with_verdict(response, ContractVerdict::skipped(SkipReason::TooLarge));
        }
        let (mut parts, body, url) = split(response);
        // A 2xx without `text/event-stream` may still be a stream (a gateway that mislabels it):
        // the first bytes tell, before anything is buffered.
        let sniff = status.is_success();
        let (verdict, body) =
            match read_capped(body, cap, sniff, self.config.body_idle_timeout).await {
                Read::Whole(bytes) => {
                    let mut verdict = contract::check_body(
                        surface,
                        status,
                        content_type.as_deref(),
                        &bytes,
                        self.config.mode,
                    );
                    // A body that keeps its contract, or an error the API recognisably sent, is the
                    // API speaking whatever the headers say ([`waf`] module docs); only an edge's own JSON
                    // error can still be a wall then.
                    let wall = if verdict.is_pass() || verdict.api_error.is_some() {
                        waf::classify_problem(&parts.headers, &bytes)
                    } else {
                        waf::classify(status, &parts.headers, &bytes)
                    };
                    if let Some(wall) = wall {
                        parts.extensions.insert(wall);
                    }
                    if let Some(max) = capture {
                        let mut text = Capture::new(surface, max);
                        text.body(&bytes);
                        verdict.facts.output_text = Some(text.into_text());
                    }
                    (verdict, reqwest::Body::from(bytes))
                }
                Read::TooLarge(prefix, rest) => {
                    let head = sniffed(&prefix);
                    if let Some(wall) = waf::classify(status, &parts.headers, &head) {
                        parts.extensions.insert(wall);
                    }
                    (
                        ContractVerdict::skipped(SkipReason::TooLarge),
                        reqwest::Body::wrap(Replay::then_rest(prefix, rest)),
                    )
                }
                Read::Stalled(prefix, rest) => (
                    ContractVerdict::failed(Violation::BodyStalled),
                    reqwest::Body::wrap(Replay::then_rest(prefix, rest)),
                ),
                Read::Failed(prefix, error) => {
                    if let Some(wall) = waf::classify_headers(&parts.headers) {
                        parts.extensions.insert(wall);
                    }
                    (
                        ContractVerdict::failed(Violation::BodyReadError),
                        reqwest::Body::wrap(Replay::then_error(
                            prefix,
                            crate::redact::reqwest_error(error),
                        )),
                    )
                }
                Read::Stream(prefix, rest) => {
                    let body = reqwest::Body::wrap(Replay::then_rest(prefix, rest));
                    let mut checker = self.checker(surface, capture);
                    checker.warn(Warning::NotEventStream);
                    return Self::wrap_parts(parts, body, url, checker);
                }
            };
        let mut response = join(parts, body, url);
        response.extensions_mut().insert(verdict);
        response
    }

    fn checker(&self, surface: ApiSurface, capture: Option<usize>) -> StreamChecker {
        let mut checker = StreamChecker::with_max_event_bytes(
            surface,
            self.config.mode,
            self.config.max_event_bytes,
        );
        if let Some(max) = capture {
            checker.capture(max);
        }
        checker
    }

    fn wrap_stream(
        &self,
        surface: ApiSurface,
        response: Response,
        capture: Option<usize>,
    ) -> Response {
        let (parts, body, url) = split(response);
        Self::wrap_parts(parts, body, url, self.checker(surface, capture))
    }

    fn wrap_parts(
        mut parts: http::response::Parts,
        body: reqwest::Body,
        url: reqwest::Url,
        checker: StreamChecker,
    ) -> Response {
        let verdict = VerdictHandle::new();
        if let Some(wall) = waf::classify_headers(&parts.headers) {
            parts.extensions.insert(wall);
        }
        parts.extensions.insert(verdict.clone());
        let body = reqwest::Body::wrap(CheckedBody::new(body, checker, verdict));
        join(parts, body, url)
    }
}

/// The first [`waf::SNIFF_BYTES`] of the chunks read.
fn sniffed(chunks: &[Bytes]) -> Vec<u8> {
    let mut head = Vec::with_capacity(waf::SNIFF_BYTES);
    for c in chunks {
        let room = waf::SNIFF_BYTES - head.len();
        head.extend_from_slice(&c[..c.len().min(room)]);
        if head.len() == waf::SNIFF_BYTES {
            break;
        }
    }
    head
}

#[async_trait::async_trait]
impl Middleware for Inspect {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let surface = extensions
            .get::<ApiSurface>()
            .copied()
            .unwrap_or_else(|| ApiSurface::of_request(&req));
        let method = req.method().clone();
        let capture = extensions.get::<CaptureContent>().map(|c| c.0);
        let response = next
            .run(req, extensions)
            .await
            .map_err(crate::redact::error)?;
        Ok(crate::redact::response(
            self.inspect_capturing(surface, &method, response, capture)
                .await,
        ))
    }
}

/// For a response whose body the layer does not read: the verdict, and a wall known from the
/// headers alone.
/// The verdict of a response that went through the inspect layer: the checked body's, or a
/// streaming body's once it has arrived (after the body was read to its end or dropped).
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// let response = client.post("http://127.0.0.1:8080/v1/responses").body("{}").send().await?;
/// if let Some(v) = reqwest_llm_guard::inspect::verdict(&response) {
///     println!("{} {:?}", v.parse_check, v.violation);
/// }
/// # Ok(()) }
/// ```
pub fn verdict(response: &Response) -> Option<ContractVerdict> {
    let ext = response.extensions();
    ext.get::<ContractVerdict>()
        .cloned()
        .or_else(|| ext.get::<VerdictHandle>().and_then(VerdictHandle::get))
}

fn with_verdict(mut response: Response, verdict: ContractVerdict) -> Response {
    if let Some(wall) = waf::classify_headers(response.headers()) {
        response.extensions_mut().insert(wall);
    }
    response.extensions_mut().insert(verdict);
    response
}

pub(crate) fn split(response: Response) -> (http::response::Parts, reqwest::Body, reqwest::Url) {
    let url = response.url().clone();
    let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    (parts, body, url)
}

pub(crate) fn join(
    parts: http::response::Parts,
    body: reqwest::Body,
    url: reqwest::Url,
) -> Response {
    // `url` travels in a private extension that only reqwest's builder can set.
    let mut response = http::Response::from_parts(parts, body);
    if let Ok(with_url) = http::Response::builder().url(url).body(()) {
        response
            .extensions_mut()
            .extend(with_url.into_parts().0.extensions);
    }
    Response::from(response)
}

enum Read {
    Whole(Bytes),
    TooLarge(Vec<Bytes>, reqwest::Body),
    Failed(Vec<Bytes>, reqwest::Error),
    /// The first bytes are server-sent events: hand them on as a stream.
    Stream(Vec<Bytes>, reqwest::Body),
    /// No byte came for the idle timeout: the rest is the caller's to wait for.
    Stalled(Vec<Bytes>, reqwest::Body),
}

/// Whether the body starts like server-sent events; `None` until enough bytes have arrived.
fn sse_start(head: &[u8]) -> Option<bool> {
    let head = head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .trim_ascii_start();
    if head.is_empty() {
        return None;
    }
    for field in [&b"data:"[..], b"event:", b"id:", b"retry:", b":"] {
        if head.starts_with(field) {
            return Some(true);
        }
        if field.starts_with(head) {
            return None;
        }
    }
    Some(false)
}

/// Reads a body to its end or until it passes `cap` bytes; with `sniff`, stops as soon as the
/// first bytes look like server-sent events. Trailers, if any, are dropped with the frame that
/// carried them (LLM APIs send none).
async fn read_capped(mut body: reqwest::Body, cap: usize, sniff: bool, idle: Duration) -> Read {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut sniffing = sniff;
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return Read::Stalled(chunks, body);
        };
        match frame {
            None => break,
            Some(Err(e)) => return Read::Failed(chunks, e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    chunks.push(data);
                    if sniffing {
                        let decided = match chunks.len() {
                            1 => sse_start(&chunks[0]),
                            _ => sse_start(&chunks.concat()),
                        };
                        match decided {
                            Some(true) => return Read::Stream(chunks, body),
                            Some(false) => sniffing = false,
                            None => {}
                        }
                    }
                    if len > cap {
                        return Read::TooLarge(chunks, body);
                    }
                }
            }
        }
    }
    Read::Whole(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(len);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    })
}
