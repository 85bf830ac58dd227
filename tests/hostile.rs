//! Hostile bodies: a server that sends its body one byte per HTTP chunk gets the same bytes to
//! the caller and the same verdict as one that sends it whole, through the whole stack on a
//! real socket. What that costs is measured in `benches/hostile.rs`; nothing here is timed.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, StatusCode};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest_llm_guard::Guard;
use reqwest_llm_guard::contract::{self, ContractVerdict, Mode, StreamChecker};
use reqwest_llm_guard::evidence::{
    ApiSurface, ParseCheck, SkipReason, Violation, WafKind, WafVendor, WafVerdict, Warning,
};
use reqwest_llm_guard::inspect::{self, Inspect, VerdictHandle};
use reqwest_llm_guard::telemetry::Telemetry;
use reqwest_llm_guard::waf;
use reqwest_middleware::ClientWithMiddleware;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Every body's length, and so the number of one-byte chunks.
const BYTES: usize = 100_000;

const REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

/// How the server cuts the body into HTTP chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunking {
    Whole,
    OneBytePerChunk,
}

/// One response, as the server sends it.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: body.into(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| *name == "content-type")
            .map(|(_, value)| value.as_str())
    }
}

/// A raw HTTP/1.1 server on loopback: reads each request whole, then answers with `reply` in
/// chunked encoding, either in one chunk or one byte per chunk with a write (and flush) per
/// chunk and Nagle off, so the bytes leave as separately as TCP lets them.
async fn serve(reply: Reply, chunking: Chunking) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                socket.set_nodelay(true).unwrap();
                read_request(&mut socket).await;
                let mut head = format!("HTTP/1.1 {} Hostile\r\n", reply.status);
                for (name, value) in &reply.headers {
                    let _ = write!(head, "{name}: {value}\r\n");
                }
                head.push_str("transfer-encoding: chunked\r\n\r\n");
                socket.write_all(head.as_bytes()).await.unwrap();
                let pieces: Vec<&[u8]> = match chunking {
                    Chunking::Whole => vec![&reply.body[..]],
                    Chunking::OneBytePerChunk => reply.body.chunks(1).collect(),
                };
                for piece in pieces {
                    let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                    chunk.extend_from_slice(piece);
                    chunk.extend_from_slice(b"\r\n");
                    // The client may stop reading early; the test then fails on its own terms.
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    let _ = socket.flush().await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// Reads a request's head and its `content-length` body.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before its request ended");
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while seen.len() < end + 4 + length {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request ended");
                seen.extend_from_slice(&buf[..n]);
            }
            return;
        }
    }
}

/// What the caller got: every byte of the body, the contract verdict, the wall if any.
#[derive(PartialEq)]
struct Got {
    body: Bytes,
    verdict: ContractVerdict,
    wall: Option<WafVerdict>,
}

impl std::fmt::Debug for Got {
    // 100,000 bytes twice would bury the verdicts: the body's length says enough, and
    // `same_bytes` says where two bodies part.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Got")
            .field("body", &format_args!("{} bytes", self.body.len()))
            .field("verdict", &self.verdict)
            .field("wall", &self.wall)
            .finish()
    }
}

/// Asserts two bodies are the same bytes, naming the first offset where they are not.
fn same_bytes(got: &[u8], sent: &[u8]) {
    let parted = got.iter().zip(sent).position(|(a, b)| a != b);
    assert!(
        parted.is_none() && got.len() == sent.len(),
        "{} bytes received, {} sent, first difference at {parted:?}",
        got.len(),
        sent.len()
    );
}

async fn fetch(client: &ClientWithMiddleware, reply: &Reply, chunking: Chunking) -> Got {
    let addr = serve(reply.clone(), chunking).await;
    let response = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(REQUEST)
        .send()
        .await
        .unwrap();
    let wall = response.extensions().get::<WafVerdict>().cloned();
    let checked = inspect::verdict(&response);
    let stream = response.extensions().get::<VerdictHandle>().cloned();
    let mut body = Vec::new();
    let mut pieces = response.bytes_stream();
    while let Some(piece) = pieces.next().await {
        body.extend_from_slice(&piece.unwrap());
    }
    let verdict = checked
        .or_else(|| stream.and_then(|h| h.get()))
        .expect("a verdict once the body is read");
    Got {
        body: body.into(),
        verdict,
        wall,
    }
}

/// Fetches `reply` whole and one byte per chunk: the same bytes as sent, the same verdict and
/// wall both ways. Returns what the caller got.
async fn same_either_way(client: &ClientWithMiddleware, reply: &Reply) -> Got {
    let whole = fetch(client, reply, Chunking::Whole).await;
    let bytewise = fetch(client, reply, Chunking::OneBytePerChunk).await;
    same_bytes(&whole.body, &reply.body);
    same_bytes(&bytewise.body, &reply.body);
    assert_eq!(bytewise, whole, "one byte per chunk changes nothing");
    bytewise
}

fn guard() -> ClientWithMiddleware {
    Guard::new()
        .without_telemetry()
        .client(reqwest::Client::new())
}

/// `body` behind as many spaces as make it `BYTES` long.
fn behind_spaces(body: &str) -> String {
    " ".repeat(BYTES - body.len()) + body
}

/// One Chat stream chunk carrying `content`, or the finish chunk when `content` is `None`.
fn chat_chunk(content: Option<&str>) -> String {
    let (delta, finish) = match content {
        Some(text) => (format!(r#"{{"content":"{text}"}}"#), "null"),
        None => ("{}".to_owned(), r#""stop""#),
    };
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    )
}

/// A Chat stream of `BYTES` bytes: a comment line (OpenRouter's shape) padding it to the
/// byte, `events` (SSE text), the finish chunk and `[DONE]`.
fn chat_stream(events: &str) -> String {
    let tail = chat_chunk(None) + "data: [DONE]\n\n";
    let pad = BYTES - events.len() - tail.len();
    format!(":{}\n{events}{tail}", "p".repeat(pad - 2))
}

/// As many one-word content chunks as fit in about `room` bytes.
fn content_events(room: usize, word: &str) -> (String, usize) {
    let one = chat_chunk(Some(word));
    let n = room / one.len();
    (one.repeat(n), n)
}

#[tokio::test]
async fn a_completion_behind_spaces_sent_one_byte_per_chunk_passes_with_every_byte() {
    let reply = Reply::new(200, "application/json", behind_spaces(COMPLETION));
    let got = same_either_way(&guard(), &reply).await;
    assert_eq!(got.verdict.parse_check, ParseCheck::Pass);
    assert_eq!(got.verdict.facts.finish_reasons, ["stop"]);
    let direct = contract::check_body(
        ApiSurface::ChatCompletions,
        StatusCode::OK,
        reply.content_type(),
        &reply.body,
        Mode::Compat,
    );
    assert_eq!(got.verdict, direct);
    assert_eq!(got.wall, None);
}

#[tokio::test]
async fn a_body_of_nothing_but_spaces_sent_one_byte_per_chunk_is_an_empty_body() {
    let reply = Reply::new(200, "application/json", " ".repeat(BYTES));
    let got = same_either_way(&guard(), &reply).await;
    assert_eq!(got.verdict.violation, Some(Violation::EmptyBody));
    let direct = contract::check_body(
        ApiSurface::ChatCompletions,
        StatusCode::OK,
        reply.content_type(),
        &reply.body,
        Mode::Compat,
    );
    assert_eq!(got.verdict, direct);
}

#[tokio::test]
async fn a_stream_sent_one_byte_per_chunk_is_judged_as_the_checker_judges_it_whole() {
    let (events, n) = content_events(BYTES - 1024, "x");
    let reply = Reply::new(200, "text/event-stream", chat_stream(&events));
    let got = same_either_way(&guard(), &reply).await;
    assert_eq!(got.verdict.parse_check, ParseCheck::Pass);
    assert_eq!(got.verdict.facts.events, n as u64 + 2);
    let mut checker = StreamChecker::new(ApiSurface::ChatCompletions, Mode::Compat);
    checker.feed(&reply.body);
    assert_eq!(got.verdict, checker.finish());
}

#[tokio::test]
async fn a_mislabelled_stream_behind_spaces_sent_one_byte_per_chunk_is_still_found() {
    // Labelled JSON, and the first 1,000 bytes are whitespace before the padding comment: the
    // sniffer waits them out.
    let (events, n) = content_events(BYTES - 2048, "x");
    let stream = chat_stream(&events);
    let body = " \r\n".repeat(333) + " " + ":" + &stream[1001..];
    assert_eq!(body.len(), BYTES);
    let reply = Reply::new(200, "application/json", body);
    let got = same_either_way(&guard(), &reply).await;
    assert_eq!(
        got.verdict.parse_check,
        ParseCheck::Pass,
        "{:?}",
        got.verdict
    );
    assert!(got.verdict.warnings.contains(Warning::NotEventStream));
    assert_eq!(got.verdict.facts.events, n as u64 + 2);
}

#[tokio::test]
async fn a_wall_over_the_cap_sent_one_byte_per_chunk_is_found_and_handed_back_whole() {
    let head = "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head>\
        <body><h1>Sorry, you have been blocked</h1>";
    let tail = "</body></html>";
    let page = format!(
        "{head}{}{tail}",
        " ".repeat(BYTES - head.len() - tail.len())
    );
    let reply = Reply::new(403, "text/html", page)
        .header("server", "cloudflare")
        .header("cf-ray", "8f1c2d3e4a5b6c7d-FRA");
    let client = Guard::new()
        .without_telemetry()
        .with_inspect(Inspect::new().with_max_body_bytes(64 * 1024))
        .client(reqwest::Client::new());
    let got = same_either_way(&client, &reply).await;
    assert_eq!(got.verdict.skip_reason, Some(SkipReason::TooLarge));
    let wall = got.wall.expect("the block page is a wall");
    assert_eq!(
        (wall.vendor, wall.kind),
        (WafVendor::Cloudflare, WafKind::Block)
    );
    assert_eq!(wall.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
    let head = &reply.body[..waf::SNIFF_BYTES];
    assert_eq!(
        waf::classify(StatusCode::FORBIDDEN, &reply.header_map(), head),
        Some(wall)
    );
}

/// The call span's captured completion text.
fn captured(spans: &[SpanData]) -> Option<String> {
    let call = spans.iter().find(|s| {
        !spans
            .iter()
            .any(|p| p.span_context.span_id() == s.parent_span_id)
    })?;
    call.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "gen_ai.output.messages")
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test]
async fn captured_text_is_the_same_one_byte_per_chunk_and_stops_at_an_oversized_event() {
    // Early content, an event over the 1 KiB event cap, late content: the check stops at the
    // oversized event, and so does the capture, wherever the chunks fall.
    let (early, n) = content_events(20_000, "e");
    let oversized = format!("data: {}\n\n", "o".repeat(2048));
    let (late, _) = content_events(BYTES - 20_000 - 4096, "L");
    let reply = Reply::new(
        200,
        "text/event-stream",
        chat_stream(&(early + &oversized + &late)),
    );
    let mut seen = Vec::new();
    for chunking in [Chunking::Whole, Chunking::OneBytePerChunk] {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let client = Guard::new()
            .with_telemetry(
                Telemetry::new()
                    .with_tracer_provider(&provider)
                    .with_content_capture(100_000),
            )
            .with_inspect(Inspect::new().with_max_event_bytes(1024))
            .client(reqwest::Client::new());
        let got = fetch(&client, &reply, chunking).await;
        same_bytes(&got.body, &reply.body);
        assert_eq!(got.verdict.skip_reason, Some(SkipReason::TooLarge));
        assert_eq!(got.verdict.facts.events, n as u64);
        assert_eq!(
            got.verdict.facts.output_text,
            Some("e".repeat(n)),
            "{chunking:?}"
        );
        provider.force_flush().unwrap();
        // The span carries the text in the telemetry's own shape; what matters here is that
        // it holds the early text, never the late one, and the same however the body came.
        let recorded = captured(&spans.get_finished_spans().unwrap()).expect("text recorded");
        assert!(recorded.contains(&"e".repeat(n)) && !recorded.contains("LL"));
        seen.push((got.verdict, recorded));
    }
    assert_eq!(seen[0], seen[1]);
}

#[tokio::test]
async fn the_inspect_layer_alone_reads_a_body_of_one_byte_pieces_back_unchanged() {
    // No socket: the layer's own read of a body made of 100,000 one-byte pieces.
    let body = Bytes::from(behind_spaces(COMPLETION));
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        (0..body.len()).map(|i| Ok(body.slice(i..=i))).collect();
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .unwrap();
    let response = Inspect::new()
        .inspect(
            ApiSurface::ChatCompletions,
            &Method::POST,
            reqwest::Response::from(response),
        )
        .await;
    assert_eq!(
        inspect::verdict(&response).unwrap().parse_check,
        ParseCheck::Pass
    );
    assert_eq!(response.bytes().await.unwrap(), body);
}
