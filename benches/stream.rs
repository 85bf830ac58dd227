//! `stream`: a streaming Chat call of 1,000 content chunks from the mock gateway (in its own
//! process) on loopback, read with `bytes_stream()` to the end: bare reqwest against the whole
//! guard stack (whose inspect layer checks every event on the way through), without the
//! failover layer and with it at each commit point. Criterion on the total time, then, with
//! the variants taking turns: time to the first chunk, time to the first content delta, and
//! total time, as medians and ratios to bare reqwest.
//!
//! Then the same for a 10-chunk stream, which arrives in one piece: bare reqwest's first chunk
//! is the time its first event arrived, so each variant's first chunk minus bare's is what the
//! stack adds before the caller sees the first event (first-byte commit point) or the first
//! content delta (first-content point). (A 1,000-chunk stream arrives in batches, the first
//! chunk with many others; events sent apart with `x-mock-delay-ms` arrive on the gateway's
//! 1 ms timer ticks, which the variants' own timing then aliases.)
//!
//! `cargo bench --features mock --bench stream`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures_util::StreamExt as _;
use reqwest_llm_guard::failover::CommitPoint;

#[allow(dead_code)]
mod common;

use common::{CHAT_STREAM, Client, GuardTelemetry, Samples, on_worker, ratio, us};

const CHUNKS: &[(&str, &str)] = &[("x-mock-chunks", "1000")];
/// A short stream, in one piece.
const SHORT: &[(&str, &str)] = &[("x-mock-chunks", "10")];
const INTERLEAVED_CALLS: usize = 300;
const SHORT_CALLS: usize = 600;
/// What every content delta of the mock's Chat stream carries (its role chunk has `""`).
const CONTENT: &[u8] = br#""content":"PASS "#;

/// One streamed call, timed.
struct Timed {
    first_chunk: Duration,
    first_content: Duration,
    total: Duration,
    bytes: usize,
}

async fn stream(client: &Client, url: &str, headers: &[(&'static str, &str)]) -> Timed {
    let start = Instant::now();
    let response = client.post(url, headers, CHAT_STREAM).await;
    let mut body = response.bytes_stream();
    let (mut first_chunk, mut first_content) = (None, None);
    let mut bytes = 0;
    // The end of the previous chunk, so a marker split between two chunks is still found.
    let mut carry: Vec<u8> = Vec::with_capacity(2 * CONTENT.len());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        first_chunk.get_or_insert_with(|| start.elapsed());
        if first_content.is_none() {
            carry.extend_from_slice(&chunk[..chunk.len().min(CONTENT.len())]);
            if memchr::memmem::find(&carry, CONTENT).is_some()
                || memchr::memmem::find(&chunk, CONTENT).is_some()
            {
                first_content = Some(start.elapsed());
            }
            carry.clear();
            carry.extend_from_slice(&chunk[chunk.len().saturating_sub(CONTENT.len())..]);
        }
        bytes += chunk.len();
    }
    Timed {
        first_chunk: first_chunk.expect("a first chunk"),
        first_content: first_content.expect("a content delta"),
        total: start.elapsed(),
        bytes,
    }
}

type Variants = Arc<Vec<(&'static str, Client)>>;

/// The variants taking turns, `calls` streams each; a table of medians.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    variants: &Variants,
    url: &Arc<str>,
    headers: &'static [(&'static str, &'static str)],
    calls: usize,
) {
    let runs = on_worker(rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            let mut runs: Vec<Vec<Timed>> = variants.iter().map(|_| Vec::new()).collect();
            for _ in 0..calls {
                for (i, (_, client)) in variants.iter().enumerate() {
                    runs[i].push(stream(client, &url, headers).await);
                }
            }
            runs
        }
    });
    let column = |f: fn(&Timed) -> Duration| -> Vec<Samples> {
        runs.iter()
            .map(|r| Samples::new(r.iter().map(f).collect()))
            .collect()
    };
    let (first, content, total) = (
        column(|t| t.first_chunk),
        column(|t| t.first_content),
        column(|t| t.total),
    );
    println!("\nstream: {headers:?}, {calls} calls per variant, interleaved round robin");
    println!(
        "{:<24} {:>13} {:>12} {:>15} {:>13} {:>13} {:>11} {:>8}",
        "variant",
        "1st chunk µs",
        "- bare µs",
        "1st content µs",
        "- bare's µs",
        "p99 1st µs",
        "total µs",
        "total"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{:<24} {:>13.1} {:>12.1} {:>15.1} {:>13.1} {:>13.1} {:>11.1} {:>7.3}x",
            name,
            us(first[i].median()),
            us(first[i].median()) - us(first[0].median()),
            us(content[i].median()),
            us(content[i].median()) - us(content[0].median()),
            us(first[i].percentile(99)),
            us(total[i].median()),
            ratio(total[i].median(), total[0].median()),
        );
    }
}

fn main() {
    common::serve_if_gateway();
    common::print_machine();
    let steal = common::Steal::start();
    let (rt, gateway) = common::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let guard_telemetry = GuardTelemetry::new();
    let failover = |commit| guard_telemetry.client_with_failover(gateway.url(), commit);
    let variants: Variants = Arc::new(vec![
        ("bare_reqwest", Client::Bare(reqwest::Client::new())),
        ("guard_full_stack", guard_telemetry.client()),
        ("failover_first_byte", failover(CommitPoint::FirstByte)),
        (
            "failover_first_content",
            failover(CommitPoint::FirstContent),
        ),
        (
            "failover_end_1mib",
            failover(CommitPoint::End { max_bytes: 1 << 20 }),
        ),
    ]);
    let bytes = on_worker(&rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            let mut bytes = 0;
            for (name, client) in variants.iter() {
                if !common::warm("stream", name) {
                    continue;
                }
                for _ in 0..30 {
                    bytes = stream(client, &url, CHUNKS).await.bytes;
                }
            }
            bytes
        }
    });
    println!("stream: 1,000 content chunks, {bytes} bytes per call");

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("stream");
    for (i, (name, _)) in variants.iter().enumerate() {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let (variants, url) = (variants.clone(), url.clone());
                on_worker(&rt, async move {
                    let client = &variants[i].1;
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(stream(client, &url, CHUNKS).await.bytes);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
    c.final_summary();
    if std::env::args().any(|a| a.starts_with("--profile-time")) {
        // Profiling one benchmark (`-- --profile-time N`): no other measurement.
        println!("profiled: {} requests served", gateway.stop());
        return;
    }

    let spans_before = guard_telemetry.exported();
    interleaved(&rt, &variants, &url, CHUNKS, INTERLEAVED_CALLS);
    interleaved(&rt, &variants, &url, SHORT, SHORT_CALLS);
    // Spans dropped by a full batch queue would make the stack look cheaper than it is.
    let guarded = variants.len() - 1;
    println!(
        "\nspans exported during the interleaved calls: {} (2 per guarded call: {})",
        guard_telemetry.exported() - spans_before,
        2 * guarded * (INTERLEAVED_CALLS + SHORT_CALLS)
    );
    steal.report();
}
