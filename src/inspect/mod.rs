//! The inspect layer: per attempt, checks the response's contract and hands the response back
//! unchanged, with the verdict in its extensions.
//!
//! What it does with each response:
//!
//! Every attempt is first checked for a WAF or bot wall ([`waf::classify`]), at any status: from
//! the headers, then from the first 64 KiB of a body the layer reads (a body it does not read is
//! judged by its block headers alone, [`waf::classify_headers`]). A wall leaves a
//! [`WafVerdict`] in the response's extensions (the retry layer
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

pub use crate::evidence::VerdictHandle;

use std::future::{Future as _, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Extensions, Method};
use http_body::Body as _;
use reqwest::{Request, Response};

use crate::extensions::put;
use crate::judge;
use crate::redact::{join, split};
use crate::sse::Sniff;
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::contract::{Capture, ContractVerdict, Mode, StreamChecker};
use crate::evidence::{ApiSurface, Violation, WafVerdict, Warning};
use crate::extensions::CaptureContent;
use crate::sse::DEFAULT_MAX_EVENT_BYTES;
use crate::waf;
use body::{CheckedBody, Replay};

pub use crate::judge::DEFAULT_MAX_BODY_BYTES;

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
        put(response.extensions_mut(), surface);
        let status = response.status();
        let cap = self.config.max_body_bytes;
        let sniff = match judge::before_body(surface, method, status, response.headers(), cap) {
            judge::Before::Done(verdict, wall) => return with_verdict(response, verdict, wall),
            judge::Before::Stream => return self.wrap_stream(surface, response, capture),
            judge::Before::Read { sniff } => sniff,
        };
        let (mut parts, body, url) = split(response);
        // A 2xx without `text/event-stream` may still be a stream (a gateway that mislabels it):
        // the first bytes tell, before anything is buffered.
        let (verdict, body) = match read_capped(body, cap, sniff, self.config.body_idle_timeout)
            .await
        {
            Read::Whole(bytes) => {
                let (mut verdict, wall) =
                    judge::whole_body(surface, status, &parts.headers, &bytes, self.config.mode);
                if let Some(wall) = wall {
                    put(&mut parts.extensions, wall);
                }
                if let Some(max) = capture {
                    let mut text = Capture::new(surface, max);
                    text.body(&bytes);
                    verdict.facts.output_text = Some(text.into_text());
                }
                (verdict, reqwest::Body::from(bytes))
            }
            Read::TooLarge(prefix, rest) => {
                let (verdict, wall) = judge::body_too_large(status, &parts.headers, &prefix, cap);
                if let Some(wall) = wall {
                    put(&mut parts.extensions, wall);
                }
                (
                    verdict,
                    reqwest::Body::wrap(Replay::then_rest(prefix, rest)),
                )
            }
            Read::Stalled(prefix, rest) => (
                ContractVerdict::failed(Violation::BodyStalled),
                reqwest::Body::wrap(Replay::then_rest(prefix, rest)),
            ),
            Read::Failed(prefix, error) => {
                if let Some(wall) = waf::classify_headers(&parts.headers) {
                    put(&mut parts.extensions, wall);
                }
                let violation = if error.is_timeout() {
                    Violation::BodyTimeout
                } else {
                    Violation::BodyReadError
                };
                (
                    ContractVerdict::failed(violation),
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
        put(response.extensions_mut(), verdict);
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
            put(&mut parts.extensions, wall);
        }
        put(&mut parts.extensions, verdict.clone());
        let body = reqwest::Body::wrap(CheckedBody::new(body, checker, verdict));
        join(parts, body, url)
    }
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
    crate::evidence::verdict::of_response(response)
}

/// For a response whose body the layer does not read: the verdict, and a wall known from the
/// headers alone.
fn with_verdict(
    mut response: Response,
    verdict: ContractVerdict,
    wall: Option<WafVerdict>,
) -> Response {
    if let Some(wall) = wall {
        put(response.extensions_mut(), wall);
    }
    put(response.extensions_mut(), verdict);
    response
}

enum Read {
    Whole(Bytes),
    TooLarge(Bytes, reqwest::Body),
    Failed(Bytes, reqwest::Error),
    /// The first bytes are server-sent events: hand them on as a stream.
    Stream(Bytes, reqwest::Body),
    /// No byte came for the idle timeout: the rest is the caller's to wait for.
    Stalled(Bytes, reqwest::Body),
}

/// The bytes a body read has gathered: the first piece as it came (no copy for a body that
/// arrives whole), then every piece appended to one buffer. One buffer rather than a list of
/// pieces: a body sent one byte at a time would otherwise hold a 32-byte handle per byte (256
/// MiB of handles for an 8 MiB body), be copied once more when joined, and be replayed to the
/// caller one frame per byte.
#[derive(Debug, Default)]
enum Gathered {
    #[default]
    Nothing,
    One(Bytes),
    Many(BytesMut),
}

impl Gathered {
    /// Appends a piece; `expected` is how long the body says it is (0 when it does not say),
    /// so that a body of known length is gathered in one allocation.
    fn push(&mut self, piece: Bytes, expected: usize) {
        if piece.is_empty() {
            return;
        }
        match self {
            Self::Nothing => *self = Self::One(piece),
            Self::One(first) => {
                let mut all = BytesMut::with_capacity(expected.max(first.len() + piece.len()));
                all.extend_from_slice(first);
                all.extend_from_slice(&piece);
                *self = Self::Many(all);
            }
            Self::Many(all) => all.extend_from_slice(&piece),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Nothing => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(all) => all.len(),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Nothing => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Many(all) => all.freeze(),
        }
    }
}

/// Reads a body to its end or until it passes `cap` bytes; with `sniff`, stops as soon as the
/// first bytes look like server-sent events. The cost is linear in the bytes read however they
/// are chunked: each byte is sniffed at most once and appended to one buffer. Trailers, if any,
/// are dropped with the frame that carried them (LLM APIs send none).
async fn read_capped(mut body: reqwest::Body, cap: usize, sniff: bool, idle: Duration) -> Read {
    let expected = usize::try_from(body.size_hint().lower())
        .unwrap_or(usize::MAX)
        .min(cap.saturating_add(1));
    let mut read = Gathered::default();
    let mut sniff = sniff.then(Sniff::default);
    // One timer for the whole read, moved on only when it fires: arming a timeout for every
    // piece cost more than the piece itself when a body came one byte at a time.
    let mut last_piece = Instant::now();
    let mut stall = pin!(tokio::time::sleep_until(idle_deadline(last_piece, idle)));
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => stall.as_mut().poll(cx).map(|()| None),
        })
        .await;
        let Some(frame) = next else {
            let deadline = idle_deadline(last_piece, idle);
            if deadline > Instant::now() {
                stall.as_mut().reset(deadline);
                continue;
            }
            return Read::Stalled(read.into_bytes(), body);
        };
        last_piece = Instant::now();
        match frame {
            None => break,
            Some(Err(e)) => return Read::Failed(read.into_bytes(), e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // Only the first `cap` bytes can make a stream: a chunk may run past the
                    // cap, and whether the body is a stream must not depend on where it does.
                    let room = cap.saturating_sub(read.len()).min(data.len());
                    let decided = sniff.as_mut().and_then(|s| s.feed(&data[..room]));
                    read.push(data, expected);
                    match decided {
                        Some(true) => return Read::Stream(read.into_bytes(), body),
                        Some(false) => sniff = None,
                        None => {}
                    }
                    if read.len() > cap {
                        return Read::TooLarge(read.into_bytes(), body);
                    }
                }
            }
        }
    }
    Read::Whole(read.into_bytes())
}

/// When a read that last received a piece at `last` has waited `idle` for the next one.
fn idle_deadline(last: Instant, idle: Duration) -> Instant {
    // An idle timeout too long to add (`Duration::MAX`) means no timeout: 30 years will do.
    last.checked_add(idle)
        .or_else(|| last.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_is_read_to_its_end_and_a_silent_one_stalls() {
        use futures_util::stream::{self, StreamExt as _};
        let idle = Duration::from_secs(5);
        // A piece every 3 s for 30 s: slower in all than the idle timeout, never idle that long.
        let slow = stream::unfold(0, |i| async move {
            if i == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        let read = read_capped(reqwest::Body::wrap_stream(slow), 1024, false, idle).await;
        assert!(matches!(read, Read::Whole(all) if all == "xxxxxxxxxx"));
        let silent = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))])
            .chain(stream::pending());
        let started = Instant::now();
        let read = read_capped(reqwest::Body::wrap_stream(silent), 1024, false, idle).await;
        assert!(matches!(read, Read::Stalled(prefix, _) if prefix == "ab"));
        assert_eq!(started.elapsed(), idle);
    }

    #[test]
    fn gathered_pieces_are_the_bytes_in_order() {
        assert!(Gathered::default().into_bytes().is_empty());
        let mut read = Gathered::default();
        read.push(Bytes::from_static(b"abc"), 0);
        assert!(
            matches!(read, Gathered::One(_)),
            "one piece is kept as it came"
        );
        read.push(Bytes::new(), 0);
        for b in b"defgh".chunks(1) {
            read.push(Bytes::copy_from_slice(b), 8);
        }
        assert_eq!(read.len(), 8);
        assert_eq!(read.into_bytes(), &b"abcdefgh"[..]);
    }
}
