//! The `in_flight` bench, run by `benches/in_flight.rs` (the system allocator) and
//! `benches/in_flight_mimalloc.rs` (mimalloc): see their documentation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use reqwest_llm_guard::failover::CommitPoint;

use super::{CHAT, Client, GuardTelemetry, Samples, ratio, us};

const HEADERS: &[(&str, &str)] = &[("x-mock-content-bytes", "2048")];
const IN_FLIGHT: u32 = 1_000;
const ROUNDS: usize = 25;

/// One round: `IN_FLIGHT` calls at once, all joined; the time it took.
async fn round(client: &Arc<Client>, url: &Arc<str>) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let response = client.post(&url, HEADERS, CHAT).await;
                response.bytes().await.expect("body").len()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("task") > 2048);
    }
    start.elapsed()
}

fn per_second(d: Duration) -> f64 {
    f64::from(IN_FLIGHT) / d.as_secs_f64()
}

/// The bench, its criterion group named `group`.
pub(crate) fn run(group: &str, allocator: &str) {
    super::serve_if_gateway();
    super::print_machine();
    println!("allocator: {allocator}");
    let steal = super::Steal::start();
    let (rt, gateway) = super::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let guard_telemetry = GuardTelemetry::new();
    let variants = [
        (
            "bare_reqwest",
            Arc::new(Client::Bare(reqwest::Client::new())),
        ),
        ("guard_full_stack", Arc::new(guard_telemetry.client())),
        (
            "guard_failover",
            Arc::new(guard_telemetry.client_with_failover(gateway.url(), CommitPoint::default())),
        ),
    ];
    // Warm up: the first round opens the connections the later ones reuse.
    rt.block_on(async {
        for (_, client) in &variants {
            for _ in 0..3 {
                round(client, &url).await;
            }
        }
    });

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut bench_group = c.benchmark_group(group);
    bench_group.throughput(Throughput::Elements(u64::from(IN_FLIGHT)));
    for (name, client) in &variants {
        bench_group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += round(client, &url).await;
                    }
                    total
                })
            });
        });
    }
    bench_group.finish();
    c.final_summary();
    if std::env::args().any(|a| a.starts_with("--profile-time")) {
        // Profiling one benchmark (`-- --profile-time N`): no other measurement.
        println!("profiled: {} requests served", gateway.stop());
        return;
    }

    let spans_before = guard_telemetry.exported();
    let mut times: Vec<Vec<Duration>> = variants.iter().map(|_| Vec::new()).collect();
    let mut cpu = vec![Duration::ZERO; variants.len()];
    rt.block_on(async {
        for _ in 0..ROUNDS {
            for (i, (_, client)) in variants.iter().enumerate() {
                let cpu_before = super::cpu_time();
                times[i].push(round(client, &url).await);
                cpu[i] += super::cpu_time().saturating_sub(cpu_before);
            }
        }
    });
    // Per call: this process's CPU time (client, runtime, exporters), not the gateway's.
    let calls = u32::try_from(ROUNDS).unwrap_or(u32::MAX) * IN_FLIGHT;
    let cpu: Vec<Duration> = cpu.into_iter().map(|c| c / calls).collect();
    let times: Vec<Samples> = times.into_iter().map(Samples::new).collect();
    println!(
        "\n{group}: {IN_FLIGHT} calls at once through one client, {ROUNDS} rounds per variant, interleaved"
    );
    println!(
        "{:<18} {:>10} {:>10} {:>16} {:>9} {:>16} {:>12}",
        "variant",
        "round ms",
        "calls/s",
        "worst round ms",
        "vs bare",
        "CPU µs per call",
        "CPU vs bare"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{:<18} {:>10.1} {:>10.0} {:>16.1} {:>8.3}x {:>16.1} {:>11.3}x",
            name,
            times[i].median().as_secs_f64() * 1e3,
            per_second(times[i].median()),
            times[i].percentile(100).as_secs_f64() * 1e3,
            ratio(times[0].median(), times[i].median()),
            us(cpu[i]),
            ratio(cpu[i], cpu[0]),
        );
    }
    // Spans dropped by a full batch queue would make the stack look cheaper than it is.
    println!(
        "spans exported during the interleaved rounds: guard_full_stack + guard_failover {} (2 per call: {})",
        guard_telemetry.exported() - spans_before,
        2 * 2 * ROUNDS * IN_FLIGHT as usize
    );
    steal.report();
}
