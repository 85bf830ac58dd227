//! `memory`: peak heap growth while a ~10 MB and then a ~100 MB Chat stream goes through the
//! whole guard stack (read with `bytes_stream()`, each chunk dropped), without and with the
//! failover layer, against bare reqwest. Checking a stream on the way through must cost a
//! constant amount of memory, not one proportional to the stream's length: the bench panics if
//! the 100 MB stream grows the heap by more than 1 MB at its peak (the least of three runs:
//! hyper's read buffer grows with what each read finds, up to ~408 KiB, so a peak varies by
//! about that much from run to run), or leaves more than 64 KiB more allocated after it than the
//! 10 MB one does.
//!
//! Then 10,000 streams held open at once through one client (each has sent its first events
//! and stays silent: the mock's `stream_stall`): the heap they hold, per stream.
//!
//! Every allocation of this process is counted (the `peak_alloc` global allocator); the mock
//! gateway runs in a process of its own, so none of its memory is.
//!
//! `cargo bench --features mock --bench memory`

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use peak_alloc::PeakAlloc;

#[allow(dead_code)]
mod common;

use common::{CHAT_STREAM, Client, GuardTelemetry, on_worker};
use reqwest_llm_guard::failover::CommitPoint;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

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

/// Streams held open at once.
const OPEN_STREAMS: usize = 10_000;
/// Streams being opened at once (connection and first events), so the gateway's accept queue
/// never overflows.
const OPENING: usize = 200;

/// Opens `OPEN_STREAMS` stalled streams through `client` (made inside the measurement), reads
/// each one's first chunk, and holds them all: the heap held per stream while they are open,
/// and the peak per stream while they were being opened.
fn open_streams(rt: &tokio::runtime::Runtime, client: Client, url: &Arc<str>) -> (usize, usize) {
    let base = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let (client, url) = (Arc::new(client), url.clone());
    let (held, peak) = on_worker(rt, async move {
        let opening = Arc::new(tokio::sync::Semaphore::new(OPENING));
        let release = Arc::new(tokio::sync::Notify::new());
        let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(OPEN_STREAMS);
        let tasks: Vec<_> = (0..OPEN_STREAMS)
            .map(|_| {
                let (client, url, opening, release, opened) = (
                    client.clone(),
                    url.clone(),
                    opening.clone(),
                    release.clone(),
                    opened_tx.clone(),
                );
                tokio::spawn(async move {
                    let permit = opening.acquire_owned().await.expect("semaphore");
                    let released = release.notified();
                    let response = client
                        .post(
                            &url,
                            &[
                                ("x-mock-scenario", "stream_stall"),
                                ("x-mock-cut-after", "1"),
                            ],
                            CHAT_STREAM,
                        )
                        .await;
                    let mut body = response.bytes_stream();
                    let first = body.next().await.expect("a first chunk").expect("chunk");
                    assert!(!first.is_empty());
                    drop(permit);
                    opened.send(()).await.expect("the bench waits");
                    released.await;
                    drop(body);
                })
            })
            .collect();
        for _ in 0..OPEN_STREAMS {
            opened_rx.recv().await.expect("every stream opens");
        }
        let held = HEAP.current_usage().saturating_sub(base);
        let peak = HEAP.peak_usage().saturating_sub(base);
        release.notify_waiters();
        for task in tasks {
            task.await.expect("stream task");
        }
        (held, peak)
    });
    (held / OPEN_STREAMS, peak / OPEN_STREAMS)
}

fn main() {
    common::serve_if_gateway();
    common::print_machine();
    let steal = common::Steal::start();
    let (rt, gateway) = common::runtime_with_gateway();
    let url: Arc<str> = format!("{}/v1/chat/completions", gateway.url()).into();
    let guard_telemetry = GuardTelemetry::new();
    let client = |variant: &str| match variant {
        "bare_reqwest" => Client::Bare(reqwest::Client::new()),
        "guard_full_stack" => guard_telemetry.client(),
        _ => guard_telemetry.client_with_failover(gateway.url(), CommitPoint::default()),
    };
    let variants = ["bare_reqwest", "guard_full_stack", "guard_failover"];
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
            // hyper's read buffer grows with what a read finds waiting (up to ~408 KiB), and
            // a fast stream sometimes holds one more of them at its peak: the least of three
            // runs is the stack's own figure.
            let g = (0..3)
                .map(|_| measure(&rt, client(name), &url, chunks))
                .min_by_key(|g| g.peak)
                .expect("three runs");
            println!(
                "{name:<18} {:>6.1} MB stream ({chunks} chunks, {:.2} s): peak heap growth {:>8.1} KiB, still allocated after {:>+8.1} KiB",
                f64::from(u32::try_from(g.bytes).unwrap_or(u32::MAX)) / 1e6,
                g.secs,
                kib(g.peak),
                f64::from(i32::try_from(g.kept).unwrap_or(i32::MAX)) / 1024.0,
            );
            growth.push((name, target, g.peak, g.kept));
        }
    }
    let of = |variant: &str, target: usize| {
        growth
            .iter()
            .find(|(name, t, _, _)| *name == variant && *t == target)
            .map_or((0, 0), |g| (g.2, g.3))
    };
    for name in &variants[1..] {
        for target in [SMALL, LARGE] {
            println!(
                "{name}: {:>3} MB: growth minus bare reqwest's {:+.1} KiB",
                target / 1_000_000,
                kib(of(name, target).0) - kib(of("bare_reqwest", target).0)
            );
        }
        let ((small, small_kept), (large, large_kept)) = (of(name, SMALL), of(name, LARGE));
        println!(
            "{name}: 100 MB growth {:.1} KiB, 10 MB growth {:.1} KiB; still allocated after: {:+.1} KiB, {:+.1} KiB",
            kib(large),
            kib(small),
            f64::from(i32::try_from(large_kept).unwrap_or(i32::MAX)) / 1024.0,
            f64::from(i32::try_from(small_kept).unwrap_or(i32::MAX)) / 1024.0,
        );
        // Held while streaming: a stream kept whole would be 100 MB here.
        assert!(
            large <= 1_000_000,
            "a 100 MB stream grew the heap by {:.1} KiB through {name} (limit 1 MB)",
            kib(large)
        );
        // Left behind: anything kept per event would be ten times more after 100 MB.
        assert!(
            large_kept <= small_kept + 64 * 1024,
            "{name} kept more after 100 MB than after 10 MB: {large_kept} against {small_kept} bytes",
        );
    }
    println!("memory: OK, constant");

    println!(
        "\nmemory: {OPEN_STREAMS} streams held open at once through one client (each past its first events)"
    );
    let mut per_stream = Vec::new();
    for name in variants {
        let (held, peak) = open_streams(&rt, client(name), &url);
        println!(
            "{name:<18} held per open stream {:>7.2} KiB (peak while opening {:>7.2} KiB)",
            kib(held),
            kib(peak)
        );
        per_stream.push(held);
    }
    for (name, held) in variants.iter().zip(&per_stream).skip(1) {
        println!(
            "{name}: its own share per open stream {:+.2} KiB ({:+.1} MiB for {OPEN_STREAMS})",
            kib(*held) - kib(per_stream[0]),
            (kib(*held) - kib(per_stream[0]))
                * f64::from(u32::try_from(OPEN_STREAMS).unwrap_or(u32::MAX))
                / 1024.0
        );
    }
    println!(
        "spans exported: {}; mock requests {}",
        guard_telemetry.exported(),
        gateway.stop()
    );
    steal.report();
}
