//! `call`: one non-streaming Chat call with a ~2 KB answer against the mock gateway on
//! loopback, body read to the end, through bare reqwest, reqwest-retry + reqwest-tracing, and
//! the whole guard stack. Criterion's numbers, then 5,000 calls per variant, interleaved round
//! robin, with median and p99 as ratios to bare reqwest.
//!
//! `cargo bench --features mock --bench call`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;

#[allow(dead_code)]
mod common;

use common::{CHAT, Client, GuardTelemetry, Samples, TodayTelemetry, on_worker, ratio, us};

const HEADERS: &[(&str, &str)] = &[("x-mock-content-bytes", "2048")];
const INTERLEAVED_CALLS: usize = 5_000;

async fn call(client: &Client, url: &str) -> usize {
    let response = client.post(url, HEADERS, CHAT).await;
    response.bytes().await.expect("body").len()
}

fn main() {
    common::print_machine();
    let steal = common::Steal::start();
    let (rt, gateway) = common::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let today_telemetry = TodayTelemetry::install();
    let guard_telemetry = GuardTelemetry::new();
    let variants = Arc::new([
        ("bare_reqwest", Client::Bare(reqwest::Client::new())),
        ("retry_tracing", today_telemetry.client()),
        ("guard_full_stack", guard_telemetry.client()),
    ]);
    // Warm up: connections, pools, lazily built state.
    on_worker(&rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            for (_, client) in variants.iter() {
                for _ in 0..200 {
                    let len = call(client, &url).await;
                    assert!(len > 2048, "a ~2 KB answer, got {len} bytes");
                }
            }
        }
    });

    let mut c = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("call");
    for (i, (name, _)) in variants.iter().enumerate() {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let (variants, url) = (variants.clone(), url.clone());
                on_worker(&rt, async move {
                    let client = &variants[i].1;
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(call(client, &url).await);
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

    // Criterion has no p99: time every call, the variants taking turns.
    let spans_before = (today_telemetry.exported(), guard_telemetry.exported());
    let samples = on_worker(&rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            let mut samples: Vec<Vec<Duration>> = variants
                .iter()
                .map(|_| Vec::with_capacity(INTERLEAVED_CALLS))
                .collect();
            for _ in 0..INTERLEAVED_CALLS {
                for ((_, client), times) in variants.iter().zip(&mut samples) {
                    let start = Instant::now();
                    black_box(call(client, &url).await);
                    times.push(start.elapsed());
                }
            }
            samples
        }
    });
    let samples: Vec<Samples> = samples.into_iter().map(Samples::new).collect();
    let (bare_median, bare_p99) = (samples[0].median(), samples[0].percentile(99));
    println!(
        "\ncall: {INTERLEAVED_CALLS} sequential calls per variant, interleaved round robin (2 KB answer, body read)"
    );
    println!(
        "{:<18} {:>11} {:>11} {:>14} {:>11}",
        "variant", "median µs", "p99 µs", "median ratio", "p99 ratio"
    );
    for ((name, _), s) in variants.iter().zip(&samples) {
        println!(
            "{:<18} {:>11.1} {:>11.1} {:>13.3}x {:>10.3}x",
            name,
            us(s.median()),
            us(s.percentile(99)),
            ratio(s.median(), bare_median),
            ratio(s.percentile(99), bare_p99),
        );
    }
    // Spans dropped by a full batch queue would make a variant look cheaper than it is.
    println!(
        "spans exported during the interleaved calls: retry_tracing {} (1 per call expected: {INTERLEAVED_CALLS}), guard_full_stack {} (2 per call: {})",
        today_telemetry.exported() - spans_before.0,
        guard_telemetry.exported() - spans_before.1,
        2 * INTERLEAVED_CALLS
    );
    steal.report();
}
