//! `hostile`: what a body costs by its chunking. The same 100,000-byte bodies, in one chunk and
//! in 100,000 one-byte chunks:
//!
//! - `inspect`: handed to `Inspect::inspect` as a `reqwest::Body` made of a stream of chunks (no
//!   socket: the layer's own cost), body read back to its end;
//! - `loopback`: served by a raw HTTP/1.1 server on loopback in chunked encoding (one chunk, or
//!   100,000 chunks of one byte: hyper hands the client one frame per HTTP chunk), through bare
//!   reqwest and through the whole guard stack, body read to its end.
//!
//! The bodies: a Chat completion behind 99,7xx spaces, served 200 `application/json` (the layer
//! sniffs the first bytes for a mislabelled stream: spaces never decide it); a Chat stream served
//! as `application/json` (sniffed, then checked as a stream); the same stream labelled
//! `text/event-stream`. Criterion's numbers, then medians of interleaved runs with the ratio of
//! one-byte chunks to one chunk.
//!
//! `cargo bench --features mock --bench hostile`

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt as _;
use http::Method;
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck};
use reqwest_llm_guard::inspect::{self, Inspect};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[allow(dead_code)]
mod common;

use common::{CHAT, Client, GuardTelemetry, Samples, on_worker, ratio};

/// Every body's length, and so the number of one-byte chunks.
const BYTES: usize = 100_000;
const RUNS: usize = 10;

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

/// How the body is cut.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Whole,
    Bytewise,
}

impl Chunking {
    fn name(self) -> &'static str {
        match self {
            Chunking::Whole => "one_chunk",
            Chunking::Bytewise => "one_byte_chunks",
        }
    }
}

struct Case {
    name: &'static str,
    content_type: &'static str,
    body: Bytes,
}

/// A Chat completion behind spaces, `BYTES` long.
fn json_after_spaces() -> Bytes {
    let mut body = " ".repeat(BYTES - COMPLETION.len());
    body.push_str(COMPLETION);
    Bytes::from(body)
}

/// A Chat stream `BYTES` long: a comment line (OpenRouter's shape) pads it to the byte.
fn chat_stream() -> Bytes {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let tail = chunk("{}", "\"stop\"") + "data: [DONE]\n\n";
    let mut events = String::new();
    let one = chunk(r#"{"content":"x"}"#, "null");
    while events.len() + one.len() + tail.len() + 16 < BYTES {
        events.push_str(&one);
    }
    let pad = BYTES - events.len() - tail.len();
    let mut body = String::with_capacity(BYTES);
    let _ = writeln!(body, ":{}", "p".repeat(pad - 2));
    body.push_str(&events);
    body.push_str(&tail);
    assert_eq!(body.len(), BYTES);
    Bytes::from(body)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "json_after_spaces",
            content_type: "application/json",
            body: json_after_spaces(),
        },
        Case {
            name: "unlabelled_sse",
            content_type: "application/json",
            body: chat_stream(),
        },
        Case {
            name: "sse",
            content_type: "text/event-stream",
            body: chat_stream(),
        },
    ]
}

fn pieces(body: &Bytes, chunking: Chunking) -> Vec<Bytes> {
    match chunking {
        Chunking::Whole => vec![body.clone()],
        Chunking::Bytewise => (0..body.len()).map(|i| body.slice(i..=i)).collect(),
    }
}

/// The inspect layer alone: the body as a stream of chunks, inspected, read back.
async fn inspect_once(layer: &Inspect, case: &Case, chunks: Vec<Bytes>) -> (Bytes, ParseCheck) {
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ));
    let response = http::Response::builder()
        .status(200)
        .header("content-type", case.content_type)
        .body(body)
        .expect("a response");
    let response = layer
        .inspect(
            ApiSurface::ChatCompletions,
            &Method::POST,
            reqwest::Response::from(response),
        )
        .await;
    let handle = response
        .extensions()
        .get::<inspect::VerdictHandle>()
        .cloned();
    let immediate = inspect::verdict(&response);
    let bytes = response.bytes().await.expect("the body");
    let verdict = immediate
        .or_else(|| handle.and_then(|h| h.get()))
        .expect("a verdict once the body is read");
    (bytes, verdict.parse_check)
}

/// The HTTP/1.1 wire form of a 200 with this body in chunked encoding.
fn wire(case: &Case, chunking: Chunking) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        case.content_type
    )
    .into_bytes();
    for piece in pieces(&case.body, chunking) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(&piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    Bytes::from(out)
}

/// A raw HTTP/1.1 server answering every request with `reply`, one connection per request.
async fn serve(reply: Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                // The whole request first: closing on unread bytes would reset the connection.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while seen.len() < head_end + length {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(&reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// One call through `client`: the body's length and how many pieces it came in.
async fn call(client: &Client, url: &str) -> (usize, usize) {
    let response = client.post(url, &[], CHAT).await;
    let mut body = response.bytes_stream();
    let (mut len, mut frames) = (0, 0);
    while let Some(piece) = body.next().await {
        len += piece.expect("a piece").len();
        frames += 1;
    }
    (len, frames)
}

fn main() {
    common::print_machine();
    let steal = common::Steal::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cases: Arc<Vec<Case>> = Arc::new(cases());
    let layer = Inspect::new();
    let chunkings = [Chunking::Whole, Chunking::Bytewise];

    // Same bytes and same verdict whatever the chunking, before anything is timed.
    for case in cases.iter() {
        for chunking in chunkings {
            let (bytes, check) =
                rt.block_on(inspect_once(&layer, case, pieces(&case.body, chunking)));
            assert_eq!(bytes, case.body, "{}/{}", case.name, chunking.name());
            assert_eq!(check, ParseCheck::Pass, "{}/{}", case.name, chunking.name());
        }
    }
    let guard_telemetry = GuardTelemetry::new();
    let variants = Arc::new([
        ("bare_reqwest", Client::Bare(reqwest::Client::new())),
        ("guard_full_stack", guard_telemetry.client()),
    ]);
    // One server per case and chunking, its URL by (case, chunking).
    let mut urls: Vec<Vec<Arc<str>>> = Vec::new();
    for case in cases.iter() {
        let mut by_chunking = Vec::new();
        for chunking in chunkings {
            let addr = rt.block_on(serve(wire(case, chunking)));
            let url: Arc<str> = format!("http://{addr}/v1/chat/completions").into();
            let (len, frames) = on_worker(&rt, {
                let (variants, url) = (variants.clone(), url.clone());
                async move { call(&variants[0].1, &url).await }
            });
            assert_eq!(len, BYTES);
            println!(
                "{}/{}: a bare client reads it in {frames} pieces",
                case.name,
                chunking.name()
            );
            by_chunking.push(url);
        }
        urls.push(by_chunking);
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("hostile");
    group.throughput(Throughput::Bytes(BYTES as u64));
    for case in cases.iter() {
        for chunking in chunkings {
            let id = BenchmarkId::new(format!("inspect/{}", case.name), chunking.name());
            group.bench_function(id, |b| {
                b.iter_batched(
                    || pieces(&case.body, chunking),
                    |chunks| black_box(rt.block_on(inspect_once(&layer, case, chunks))),
                    criterion::BatchSize::PerIteration,
                );
            });
        }
    }
    for (c_i, case) in cases.iter().enumerate() {
        for (k_i, chunking) in chunkings.into_iter().enumerate() {
            for (v_i, (variant, _)) in variants.iter().enumerate() {
                let id =
                    BenchmarkId::new(format!("loopback/{variant}/{}", case.name), chunking.name());
                let url = urls[c_i][k_i].clone();
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let (variants, url) = (variants.clone(), url.clone());
                        on_worker(&rt, async move {
                            let start = Instant::now();
                            for _ in 0..iters {
                                black_box(call(&variants[v_i].1, &url).await);
                            }
                            start.elapsed()
                        })
                    });
                });
            }
        }
    }
    group.finish();
    c.final_summary();
    if std::env::args().any(|a| a.starts_with("--profile-time")) {
        // Profiling one benchmark (`-- --profile-time N`): no other measurement.
        return;
    }

    println!(
        "\nhostile: medians of {RUNS} runs each, one chunk and 100,000 one-byte chunks taking turns"
    );
    println!(
        "{:<42} {:>14} {:>18} {:>10}",
        "body", "one chunk ms", "one-byte chunks ms", "ratio"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for case in cases.iter() {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            for (k, chunking) in chunkings.into_iter().enumerate() {
                let chunks = pieces(&case.body, chunking);
                let start = Instant::now();
                black_box(rt.block_on(inspect_once(&layer, case, chunks)));
                times[k].push(start.elapsed());
            }
        }
        let [one, bytewise] = times.map(|t| Samples::new(t).median());
        println!(
            "{:<42} {:>14.3} {:>18.3} {:>9.1}x",
            format!("inspect/{}", case.name),
            ms(one),
            ms(bytewise),
            ratio(bytewise, one)
        );
    }
    for (c_i, case) in cases.iter().enumerate() {
        for (v_i, (variant, _)) in variants.iter().enumerate() {
            let [one, bytewise] = on_worker(&rt, {
                let (variants, urls) = (variants.clone(), urls[c_i].clone());
                async move {
                    let mut times = [Vec::new(), Vec::new()];
                    for _ in 0..RUNS {
                        for (k, url) in urls.iter().enumerate() {
                            let start = Instant::now();
                            black_box(call(&variants[v_i].1, url).await);
                            times[k].push(start.elapsed());
                        }
                    }
                    times.map(|t| Samples::new(t).median())
                }
            });
            println!(
                "{:<42} {:>14.3} {:>18.3} {:>9.1}x",
                format!("loopback/{variant}/{}", case.name),
                ms(one),
                ms(bytewise),
                ratio(bytewise, one)
            );
        }
    }
    steal.report();
}
