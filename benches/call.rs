//! `call`: one non-streaming Chat call with a ~2 KB answer against the mock gateway (in its own
//! process) on loopback, body read to the end, through bare reqwest, reqwest-retry +
//! reqwest-tracing, the whole guard stack, and the whole stack with the failover layer
//! configured (two upstreams, no call failing over). Criterion's numbers, then 5,000 calls per variant, interleaved round
//! robin, with median and p99 as ratios to bare reqwest.
//!
//! `cargo bench --features mock --bench call`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use reqwest_llm_guard::failover::CommitPoint;

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
    common::serve_if_gateway();
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
        (
            "guard_failover",
            guard_telemetry.client_with_failover(gateway.url(), CommitPoint::default()),
        ),
    ]);
    // Warm up: connections, pools, lazily built state.
    on_worker(&rt, {
        let (variants, url) = (variants.clone(), url.clone());
        async move {
            for (name, client) in variants.iter() {
                if !common::warm("call", name) {
                    continue;
                }
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
        println!("profiled: {} requests served", gateway.stop());
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
            let mut cpu = vec![Duration::ZERO; variants.len()];
            for _ in 0..INTERLEAVED_CALLS {
                for (((_, client), times), cpu) in variants.iter().zip(&mut samples).zip(&mut cpu) {
                    let cpu_before = common::cpu_time();
                    let start = Instant::now();
                    black_box(call(client, &url).await);
                    times.push(start.elapsed());
                    *cpu += common::cpu_time().saturating_sub(cpu_before);
                }
            }
            (samples, cpu)
        }
    });
    let (samples, cpu) = samples;
    // This process's CPU time per call (the gateway's process is not counted; the exporters'
    // threads are, whenever they ran).
    let calls = u32::try_from(INTERLEAVED_CALLS).unwrap_or(u32::MAX);
    let cpu: Vec<Duration> = cpu.into_iter().map(|c| c / calls).collect();
    let samples: Vec<Samples> = samples.into_iter().map(Samples::new).collect();
    let (bare_median, bare_p99) = (samples[0].median(), samples[0].percentile(99));
    let cpu_bare = cpu[0];
    println!(
        "\ncall: {INTERLEAVED_CALLS} sequential calls per variant, interleaved round robin (2 KB answer, body read)"
    );
    println!(
        "{:<18} {:>11} {:>11} {:>14} {:>11} {:>13} {:>11}",
        "variant", "median µs", "p99 µs", "median ratio", "p99 ratio", "CPU µs/call", "CPU ratio"
    );
    for (((name, _), s), cpu) in variants.iter().zip(&samples).zip(&cpu) {
        println!(
            "{:<18} {:>11.1} {:>11.1} {:>13.3}x {:>10.3}x {:>13.1} {:>10.3}x",
            name,
            us(s.median()),
            us(s.percentile(99)),
            ratio(s.median(), bare_median),
            ratio(s.percentile(99), bare_p99),
            us(*cpu),
            ratio(*cpu, cpu_bare),
        );
    }
    // Spans dropped by a full batch queue would make a variant look cheaper than it is.
    println!(
        "spans exported during the interleaved calls: retry_tracing {} (1 per call expected: {INTERLEAVED_CALLS}), guard_full_stack + guard_failover {} (2 per call: {})",
        today_telemetry.exported() - spans_before.0,
        guard_telemetry.exported() - spans_before.1,
        2 * 2 * INTERLEAVED_CALLS
    );
    steal.report();
}
