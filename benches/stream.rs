//! `stream`: a streaming Chat call of 1,000 content chunks from the mock gateway on loopback,
//! read with `bytes_stream()` to the end, bare reqwest against the whole guard stack (whose
//! inspect layer checks every chunk on the way through). Criterion on the total time, then
//! time to first chunk and total time, interleaved, with medians and ratios; the same for a
//! 10-chunk stream, whose first chunk the mock gateway does not hold back behind the next ones
//! (it writes a long stream in batches, so the first chunk of 1,000 arrives with many others).
//!
//! `cargo bench --features mock --bench stream`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures_util::StreamExt as _;

#[allow(dead_code)]
mod common;

use common::{CHAT_STREAM, Client, GuardTelemetry, Samples, on_worker, ratio, us};

const CHUNKS: &str = "1000";
/// A short stream, for time to first chunk without the mock gateway batching its writes.
const SHORT: &str = "10";
const INTERLEAVED_CALLS: usize = 400;

/// Time to the first `bytes_stream()` item, total time, bytes read.
async fn stream(client: &Client, url: &str, chunks: &str) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let response = client
        .post(url, &[("x-mock-chunks", chunks)], CHAT_STREAM)
        .await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk");
    let first_at = start.elapsed();
    let mut len = first.len();
    while let Some(chunk) = body.next().await {
        len += chunk.expect("chunk").len();
    }
    (first_at, start.elapsed(), len)
}

/// Time to first chunk and total time of streams of `chunks` chunks, the variants taking turns.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    variants: &Arc<[(&'static str, Client); 2]>,
    url: &Arc<str>,
    chunks: &'static str,
) {
    let (first, total) = on_worker(rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            let mut first: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
            let mut total: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
            for _ in 0..INTERLEAVED_CALLS {
                for (i, (_, client)) in variants.iter().enumerate() {
                    let (f, t, _) = stream(client, &url, chunks).await;
                    first[i].push(f);
                    total[i].push(t);
                }
            }
            (first, total)
        }
    });
    let first: Vec<Samples> = first.into_iter().map(Samples::new).collect();
    let total: Vec<Samples> = total.into_iter().map(Samples::new).collect();
    println!(
        "\nstream: {chunks} chunks, {INTERLEAVED_CALLS} calls per variant, interleaved round robin"
    );
    println!(
        "{:<18} {:>16} {:>14} {:>16} {:>12} {:>13}",
        "variant", "first chunk µs", "p99 first µs", "first - bare µs", "total µs", "total ratio"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{:<18} {:>16.1} {:>14.1} {:>16.1} {:>12.1} {:>12.3}x",
            name,
            us(first[i].median()),
            us(first[i].percentile(99)),
            us(first[i].median()) - us(first[0].median()),
            us(total[i].median()),
            ratio(total[i].median(), total[0].median()),
        );
    }
}

fn main() {
    common::print_machine();
    let steal = common::Steal::start();
    let (rt, gateway) = common::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let guard_telemetry = GuardTelemetry::new();
    let variants = Arc::new([
        ("bare_reqwest", Client::Bare(reqwest::Client::new())),
        ("guard_full_stack", guard_telemetry.client()),
    ]);
    let bytes = on_worker(&rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            let mut bytes = 0;
            for (_, client) in variants.iter() {
                for _ in 0..30 {
                    bytes = stream(client, &url, CHUNKS).await.2;
                }
            }
            bytes
        }
    });
    println!("stream: 1,000 content chunks, {bytes} bytes per call");

    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
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
                        black_box(stream(client, &url, CHUNKS).await);
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
        println!("profiled: {} requests served", gateway.requests());
        return;
    }

    let spans_before = guard_telemetry.exported();
    for chunks in [CHUNKS, SHORT] {
        interleaved(&rt, &variants, &url, chunks);
    }
    // Spans dropped by a full batch queue would make the stack look cheaper than it is.
    println!(
        "\nspans exported during the interleaved calls: guard_full_stack {} (2 per call: {})",
        guard_telemetry.exported() - spans_before,
        2 * 2 * INTERLEAVED_CALLS
    );
    steal.report();
}
