//! `memory`: peak heap growth while a ~10 MB and then a ~100 MB Chat stream goes through the
//! whole guard stack (read with `bytes_stream()`, each chunk dropped), against bare reqwest on
//! the same in-process mock gateway. Checking a stream on the way through must cost a constant
//! amount of memory, not one proportional to the stream's length: the bench panics if the
//! 100 MB stream grows the heap by more than 4 MiB, or by more than 1 MiB over the 10 MB one.
//!
//! Every allocation of the process is counted (the `peak_alloc` global allocator), the mock
//! gateway's included; it makes its Chat chunks as it sends them, in constant memory, and the
//! bare reqwest line shows what the gateway and reqwest alone cost.
//!
//! `cargo bench --features mock --bench memory`

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use peak_alloc::PeakAlloc;

#[allow(dead_code)]
mod common;

use common::{CHAT_STREAM, Client, GuardTelemetry, on_worker};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1 << 20;
const SMALL: usize = 10_000_000;
const LARGE: usize = 100_000_000;

/// Streams `chunks` content chunks, dropping each as it arrives; the bytes read.
async fn stream(client: &Client, url: &str, chunks: usize) -> usize {
    let count = chunks.to_string();
    let response = client
        .post(url, &[("x-mock-chunks", count.as_str())], CHAT_STREAM)
        .await;
    let mut body = response.bytes_stream();
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        len += chunk.expect("chunk").len();
    }
    len
}

struct Growth {
    bytes: usize,
    peak: usize,
    kept: isize,
    secs: f64,
}

/// Streams `chunks` chunks through a new `client` (its connection is made inside the
/// measurement), returning the bytes read, the heap's peak growth over the level it had before,
/// and what stayed allocated after (the idle pooled connection among it).
fn measure(rt: &tokio::runtime::Runtime, client: Client, url: &Arc<str>, chunks: usize) -> Growth {
    let (client, url) = (Arc::new(client), url.clone());
    let task_client = client.clone();
    let base = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let start = Instant::now();
    let bytes = on_worker(rt, async move { stream(&task_client, &url, chunks).await });
    let secs = start.elapsed().as_secs_f64();
    let peak = HEAP.peak_usage().saturating_sub(base);
    let after = HEAP.current_usage();
    drop(client);
    let kept =
        isize::try_from(after).unwrap_or(isize::MAX) - isize::try_from(base).unwrap_or(isize::MAX);
    Growth {
        bytes,
        peak,
        kept,
        secs,
    }
}

fn kib(n: usize) -> f64 {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    f64::from(n) / 1024.0
}

fn main() {
    common::print_machine();
    let steal = common::Steal::start();
    let (rt, gateway) = common::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let guard_telemetry = GuardTelemetry::new();
    let client = |variant: &str| match variant {
        "bare_reqwest" => Client::Bare(reqwest::Client::new()),
        _ => guard_telemetry.client(),
    };
    let variants = ["bare_reqwest", "guard_full_stack"];
    // Warm up (lazily built state: the runtime's, the SDK's attribute sets), and measure one
    // chunk's size.
    let (one, two) = on_worker(&rt, {
        let clients: Vec<Client> = variants.iter().map(|v| client(v)).collect();
        let url = url.clone();
        async move {
            for client in &clients {
                for _ in 0..20 {
                    stream(client, &url, 1_000).await;
                }
            }
            (
                stream(&clients[0], &url, 1_000).await,
                stream(&clients[0], &url, 2_000).await,
            )
        }
    });
    let per_chunk = (two - one) / 1_000;
    println!(
        "memory: one content chunk is {per_chunk} bytes; each stream through a new client (its connection included)"
    );

    let mut growth = Vec::new();
    for target in [SMALL, LARGE] {
        let chunks = target / per_chunk;
        for name in variants {
            let g = measure(&rt, client(name), &url, chunks);
            println!(
                "{name:<18} {:>6.1} MB stream ({chunks} chunks, {:.2} s): peak heap growth {:>8.1} KiB, still allocated after {:>+8.1} KiB",
                f64::from(u32::try_from(g.bytes).unwrap_or(u32::MAX)) / 1e6,
                g.secs,
                kib(g.peak),
                f64::from(i32::try_from(g.kept).unwrap_or(i32::MAX)) / 1024.0,
            );
            growth.push((name, target, g.peak));
        }
    }
    let of = |variant: &str, target: usize| {
        growth
            .iter()
            .find(|(name, t, _)| *name == variant && *t == target)
            .map_or(0, |g| g.2)
    };
    let guard = |target| of("guard_full_stack", target);
    for target in [SMALL, LARGE] {
        println!(
            "{:>3} MB: the guard's growth minus bare reqwest's {:+.1} KiB",
            target / 1_000_000,
            kib(guard(target)) - kib(of("bare_reqwest", target))
        );
    }
    let (small, large) = (guard(SMALL), guard(LARGE));
    println!(
        "guard_full_stack: 100 MB growth {:.1} KiB, 10 MB growth {:.1} KiB, difference {:+.1} KiB",
        kib(large),
        kib(small),
        (kib(large) - kib(small))
    );
    println!(
        "spans exported: guard_full_stack {}; mock requests {}",
        guard_telemetry.exported(),
        gateway.requests()
    );
    assert!(
        large <= 4 * MIB,
        "a 100 MB stream grew the heap by {:.1} KiB through the guard (limit 4 MiB)",
        kib(large)
    );
    assert!(
        large <= small + MIB,
        "the heap grew with the stream's length: {:.1} KiB at 100 MB, {:.1} KiB at 10 MB",
        kib(large),
        kib(small)
    );
    println!("memory: OK, constant");
    steal.report();
}
