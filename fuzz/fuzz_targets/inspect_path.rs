//! The whole inspect path without a socket: a response made from the input (status,
//! content type, edge headers, a body cut into chunks at chosen points, maybe a connection error
//! after the last chunk) goes through `Inspect::inspect`, and through the guard's stack with
//! content capture on (a last layer answers in place of the network); its body is read back.
//!
//! Oracles: every byte comes back, in order, then the error if there was one; the verdict is the
//! direct check's (`check_body` for a body read whole, a `StreamChecker` fed the body whole for
//! a stream); verdict, wall and captured text are the same whole, cut at the chosen points and
//! cut into single bytes; capturing changes nothing but the captured text.
//!
//! Input: status, content type and edge headers, surface, mode, error, caps, number of cuts,
//! the cuts (two bytes each), then the body.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::contract::{self, ContractVerdict, Mode, StreamChecker};
use reqwest_llm_guard::evidence::{
    ApiSurface, ParseCheck, SkipReason, Violation, WafVerdict, Warning,
};
use reqwest_llm_guard::inspect::{self, Inspect, VerdictHandle};
use reqwest_llm_guard::telemetry::Telemetry;
use reqwest_llm_guard::{Guard, waf};
use reqwest_middleware::{ClientBuilder, Middleware, Next};

const STATUSES: &[u16] = &[
    200, 200, 200, 201, 204, 302, 400, 403, 404, 429, 500, 503, 101,
];
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("text/event-stream"),
    Some("Text/Event-Stream; charset=utf-8"),
    Some("text/html"),
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
];
const MAX_BODY: &[usize] = &[0, 16, 1024, inspect::DEFAULT_MAX_BODY_BYTES];
const MAX_EVENT: &[usize] = &[8, 64, 1024, reqwest_llm_guard::sse::DEFAULT_MAX_EVENT_BYTES];
const BOM: &[u8] = b"\xEF\xBB\xBF";
const SSE_FIELDS: [&[u8]; 5] = [b"data:", b"event:", b"id:", b"retry:", b":"];

#[derive(Debug, Clone)]
struct Case {
    status: StatusCode,
    headers: HeaderMap,
    surface: ApiSurface,
    mode: Mode,
    error: bool,
    max_body: usize,
    max_event: usize,
    cuts: Vec<usize>,
    body: Bytes,
}

fn parse(data: &[u8]) -> Option<Case> {
    let (&[status, kind, config, cuts], rest) = data.split_first_chunk::<4>()?;
    let mut headers = HeaderMap::new();
    if let Some(ct) = CONTENT_TYPES[usize::from(kind & 0x0F) % CONTENT_TYPES.len()] {
        headers.insert("content-type", HeaderValue::from_static(ct));
    }
    if kind & 0x10 != 0 {
        headers.insert("server", HeaderValue::from_static("cloudflare"));
        headers.insert("cf-ray", HeaderValue::from_static("8f1c2d3e4a5b6c7d-FRA"));
    }
    if kind & 0x20 != 0 {
        headers.insert("cf-mitigated", HeaderValue::from_static("challenge"));
    }
    let n = usize::from(cuts % 8);
    let (cuts, body) = rest.split_at_checked(2 * n)?;
    let mut cuts: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    Some(Case {
        status: StatusCode::from_u16(STATUSES[usize::from(status) % STATUSES.len()]).ok()?,
        headers,
        surface: match config & 0b11 {
            1 => ApiSurface::Responses,
            2 => ApiSurface::Other,
            _ => ApiSurface::ChatCompletions,
        },
        mode: if config & 0b100 == 0 {
            Mode::Compat
        } else {
            Mode::Strict
        },
        error: config & 0b1000 != 0,
        max_body: MAX_BODY[usize::from(config >> 4) & 0b11],
        max_event: MAX_EVENT[usize::from(config >> 6)],
        cuts,
        body: Bytes::copy_from_slice(body),
    })
}

impl Case {
    fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }

    fn path(&self) -> &'static str {
        match self.surface {
            ApiSurface::ChatCompletions => "/v1/chat/completions",
            ApiSurface::Responses => "/v1/responses",
            ApiSurface::Other => "/v1/models",
        }
    }

    fn layer(&self) -> Inspect {
        Inspect::new()
            .with_mode(self.mode)
            .with_max_body_bytes(self.max_body)
            .with_max_event_bytes(self.max_event)
    }

    /// The body whole, at the chosen cuts, and byte by byte.
    fn chunkings(&self) -> [Vec<Bytes>; 3] {
        let mut at = vec![0];
        at.extend(&self.cuts);
        at.push(self.body.len());
        let cut = at.windows(2).map(|w| self.body.slice(w[0]..w[1])).collect();
        let bytes = (0..self.body.len())
            .map(|i| self.body.slice(i..=i))
            .collect();
        [vec![self.body.clone()], cut, bytes]
    }

    fn response(&self, pieces: Vec<Bytes>) -> reqwest::Response {
        let mut items: Vec<Result<Bytes, std::io::Error>> = pieces.into_iter().map(Ok).collect();
        if self.error {
            items.push(Err(std::io::Error::other("connection reset")));
        }
        let mut response = http::Response::new(reqwest::Body::wrap_stream(
            futures_util::stream::iter(items),
        ));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        reqwest::Response::from(response)
    }
}

/// The rule the layer sniffs a mislabelled stream by, on the whole prefix at once.
fn starts_like_sse(body: &[u8]) -> Option<bool> {
    if body.len() < BOM.len() && BOM.starts_with(body) {
        return None;
    }
    let head = body.strip_prefix(BOM).unwrap_or(body).trim_ascii_start();
    if head.is_empty() {
        None
    } else if SSE_FIELDS.iter().any(|f| head.starts_with(f)) {
        Some(true)
    } else if SSE_FIELDS.iter().any(|f| f.starts_with(head)) {
        None
    } else {
        Some(false)
    }
}

/// What the direct checks say the layer must find: the verdict and the wall.
fn expected(case: &Case) -> (ContractVerdict, Option<WafVerdict>) {
    let status = case.status;
    let headers = &case.headers;
    let body = &case.body[..];
    if case.surface == ApiSurface::Other {
        return (
            ContractVerdict::skipped(SkipReason::OtherSurface),
            waf::classify_headers(headers),
        );
    }
    if status.is_informational() || status.is_redirection() || status == StatusCode::NO_CONTENT {
        return (
            ContractVerdict::skipped(SkipReason::NoBody),
            waf::classify_headers(headers),
        );
    }
    let labelled = case.content_type().is_some_and(contract::is_event_stream);
    let sniffed = || {
        let head = &body[..body.len().min(case.max_body)];
        !labelled && starts_like_sse(head) == Some(true)
    };
    if status.is_success() && (labelled || sniffed()) {
        let mut checker =
            StreamChecker::with_max_event_bytes(case.surface, case.mode, case.max_event);
        checker.feed(body);
        let mut verdict = if case.error {
            checker.interrupted()
        } else {
            checker.finish()
        };
        if !labelled {
            verdict.warnings.add(Warning::NotEventStream);
        }
        return (verdict, waf::classify_headers(headers));
    }
    if body.len() > case.max_body {
        let head = &body[..body.len().min(waf::SNIFF_BYTES).min(case.max_body)];
        return (
            ContractVerdict::skipped(SkipReason::TooLarge),
            waf::classify(status, headers, head),
        );
    }
    if case.error {
        // `ContractVerdict::failed` is the crate's own: its fields are checked in `check`.
        let mut failed = ContractVerdict::skipped(SkipReason::NoBody);
        failed.parse_check = ParseCheck::Fail;
        failed.violation = Some(Violation::BodyReadError);
        failed.skip_reason = None;
        return (failed, waf::classify_headers(headers));
    }
    let verdict = contract::check_body(case.surface, status, case.content_type(), body, case.mode);
    let wall = if verdict.is_pass() || verdict.api_error.is_some() {
        waf::classify_problem(headers, body)
    } else {
        waf::classify(status, headers, body)
    };
    (verdict, wall)
}

/// What the caller got.
#[derive(PartialEq)]
struct Got {
    body: Vec<u8>,
    failed: bool,
    content_length: Option<u64>,
    verdict: ContractVerdict,
    wall: Option<WafVerdict>,
}

impl std::fmt::Debug for Got {
    // A body printed byte by byte would bury the verdicts: its length and hash say enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&self.body);
        f.debug_struct("Got")
            .field(
                "body",
                &format_args!("{} bytes, hash {hash:016x}", self.body.len()),
            )
            .field("failed", &self.failed)
            .field("content_length", &self.content_length)
            .field("verdict", &self.verdict)
            .field("wall", &self.wall)
            .finish()
    }
}

async fn read(response: reqwest::Response) -> Got {
    let wall = response.extensions().get::<WafVerdict>().cloned();
    let checked = inspect::verdict(&response);
    let stream = response.extensions().get::<VerdictHandle>().cloned();
    let content_length = response.content_length();
    let mut body = Vec::new();
    let mut failed = false;
    let mut pieces = response.bytes_stream();
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let verdict = checked
        .or_else(|| stream.and_then(|h| h.get()))
        .expect("a verdict once the body is read");
    Got {
        body,
        failed,
        content_length,
        verdict,
        wall,
    }
}

/// The last layer of the guard's stack: answers with the response the request carries.
#[derive(Clone)]
struct Answer(Arc<Mutex<Option<reqwest::Response>>>);

struct Answering;

#[async_trait::async_trait]
impl Middleware for Answering {
    async fn handle(
        &self,
        _req: reqwest::Request,
        extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let answer = extensions.get::<Answer>().expect("an answer to give");
        let response = answer.0.lock().expect("one user").take();
        Ok(response.expect("one answer per request"))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

async fn through_inspect(case: &Case, pieces: Vec<Bytes>) -> Got {
    let response = case
        .layer()
        .inspect(case.surface, &Method::POST, case.response(pieces))
        .await;
    read(response).await
}

async fn through_guard(case: &Case, pieces: Vec<Bytes>) -> Got {
    let guard = Guard::new()
        .without_retry()
        .with_telemetry(Telemetry::new().with_content_capture(usize::MAX))
        .with_inspect(case.layer());
    let stack = guard
        .layer(ClientBuilder::new(client().clone()))
        .with(Answering)
        .build();
    let answer = Answer(Arc::new(Mutex::new(Some(case.response(pieces)))));
    let response = stack
        .post(format!("http://fuzz.invalid{}", case.path()))
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .with_extension(answer)
        .send()
        .await
        .expect("the answer comes back");
    read(response).await
}

fn check(case: &Case) {
    let (verdict, wall) = expected(case);
    let rt = runtime();
    let plain: Vec<Got> = case
        .chunkings()
        .into_iter()
        .map(|pieces| rt.block_on(through_inspect(case, pieces)))
        .collect();
    let first = &plain[0];
    assert!(
        first.body == case.body,
        "every byte, in order: {} bytes back of {}",
        first.body.len(),
        case.body.len()
    );
    assert_eq!(first.failed, case.error, "the error after the bytes");
    assert_eq!(first.verdict, verdict, "the direct check's verdict");
    assert_eq!(first.wall, wall, "the direct check's wall");
    for (i, got) in plain.iter().enumerate().skip(1) {
        assert_eq!(got, first, "chunking {i}");
    }
    let captured: Vec<Got> = case
        .chunkings()
        .into_iter()
        .take(2)
        .map(|pieces| rt.block_on(through_guard(case, pieces)))
        .collect();
    assert_eq!(captured[1], captured[0], "captured, cut");
    if first.verdict.facts.events > 0 {
        // The stream was checked, so its text was captured (empty or not).
        assert!(captured[0].verdict.facts.output_text.is_some());
    }
    let mut without_text = captured.into_iter().next().expect("a capture");
    without_text.verdict.facts.output_text = None;
    assert_eq!(&without_text, first, "capture changes nothing else");
}

fuzz_target!(|data: &[u8]| {
    if let Some(case) = parse(data) {
        check(&case);
    }
});
